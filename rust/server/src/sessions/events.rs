//! Delivery of events to attached sessions, and the server's own events.
//!
//! Every event gets the next sequence number and is queued to every
//! session while the table is locked, so all sessions see all events in
//! the same order (the order of `seq`).
//!
//! An event is built once and shared by every session's queue. A session
//! that does not read (a hung front end) holds at most
//! [`MAX_QUEUED_EVENT_BYTES`] of events (or one event, if that is larger)
//! and [`SESSION_QUEUE`] messages; events beyond that are dropped for it
//! alone, counted, and reported to it as an `events.dropped` event (`seq`
//! 0: outside the shared order) right before the next one it gets.
//!
//! The server itself publishes on reserved topics, as module
//! [`SERVER_MODULE`]; clients may not publish as that module. Payloads are
//! MessagePack maps:
//!
//! | topic             | payload |
//! |-------------------|---------|
//! | `module.loaded`   | `{name, pid, path, cause, restarts}`; cause is `call`, `load`, `autostart`, `dependency`, `restart` or `provide` (an external module registered itself) |
//! | `module.exited`   | `{name, pid, status, requested, cause}`: a clean exit, or any exit the server asked for; `cause` is `idle` (idle_unload), `stop` (unload, shutdown) or `exit` (it ended by itself) |
//! | `module.crashed`  | `{name, pid, status, reason, restarts, restart_in_ms}`: an unrequested unclean exit; `reason` says why the server killed it ("" if it died by itself); `restart_in_ms` is nil unless the restart policy will start it again |
//! | `module.failed`   | `{name, error}`: an autostart or restart that could not start the module, or a restart series that gave up |
//! | `server.shutdown` | `{reason}`: sent to each session just before its Goodbye |
//! | `events.dropped`  | `{dropped}`: to one session only, the number of events it missed because it did not read them (`seq` 0) |

// `Result<_, tonic::Status>` is what tonic's streams carry.
#![allow(clippy::result_large_err)]

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll},
};

use futures::Stream;
use norgopolis_proto::v1::{server_message::Kind, Event, ServerMessage};
use rmpv::Value;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages queued per session before events are dropped for it.
pub const SESSION_QUEUE: usize = 256;

/// Event bytes queued per session before events are dropped for it.
pub const MAX_QUEUED_EVENT_BYTES: usize = 16 << 20;

/// A message on its way to one session. Events are shared with every
/// other session's queue; their bytes count against this session's
/// bound until it takes them.
pub struct Queued {
    message: Arc<ServerMessage>,
    _charge: Option<Charge>,
}

impl Queued {
    /// A message for this session only (Welcome, Pong, Goodbye).
    pub fn own(message: ServerMessage) -> Self {
        Queued {
            message: Arc::new(message),
            _charge: None,
        }
    }
}

/// Bytes a queued event holds against its session's bound, given back
/// when the session takes it (or its queue goes away).
struct Charge {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Outgoing half of one session's Attach stream.
pub type SessionSender = mpsc::Sender<Queued>;

/// A new session's queue: the sender for [`EventHub::join`] and the
/// stream its Attach call returns.
pub fn session_queue() -> (SessionSender, SessionStream) {
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    (tx, SessionStream { rx })
}

/// The messages of one session's Attach stream, as tonic sends them.
pub struct SessionStream {
    rx: mpsc::Receiver<Queued>,
}

impl Stream for SessionStream {
    type Item = Result<ServerMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| {
            // Copied only as it leaves, so queues share one buffer; the
            // charge is given back when `queued` drops, after the copy.
            next.map(|Queued { message, _charge }| Ok(Arc::unwrap_or_clone(message)))
        })
    }
}

/// One session in the hub.
struct Session {
    tx: SessionSender,
    /// Event bytes in its queue.
    held: Arc<AtomicUsize>,
    /// Events it missed since it was last told.
    dropped: u64,
}

impl Session {
    /// Queues `message` (of `bytes`) unless the session is over its bounds;
    /// tells it first about events it missed. Returns whether it took it.
    fn offer(&mut self, message: &Arc<ServerMessage>, bytes: usize) -> bool {
        let held = self.held.load(Ordering::Relaxed);
        if held > 0 && held + bytes > MAX_QUEUED_EVENT_BYTES {
            self.dropped += 1;
            return false;
        }
        if self.dropped > 0 {
            let notice = event_message(
                SERVER_MODULE,
                topic::EVENTS_DROPPED,
                payload(vec![("dropped", self.dropped.into())]),
                0,
            );
            if self.tx.try_send(Queued::own(notice)).is_err() {
                self.dropped += 1;
                return false;
            }
            self.dropped = 0;
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        let queued = Queued {
            message: message.clone(),
            _charge: Some(Charge {
                bytes,
                held: self.held.clone(),
            }),
        };
        let taken = self.tx.try_send(queued).is_ok();
        if !taken {
            self.dropped += 1;
        }
        taken
    }
}

/// The `module` field of events the server publishes itself.
pub const SERVER_MODULE: &str = "norgopolis";

/// Reserved topics (published as [`SERVER_MODULE`]).
pub mod topic {
    /// A module process started.
    pub const MODULE_LOADED: &str = "module.loaded";
    /// A module exited cleanly or was stopped.
    pub const MODULE_EXITED: &str = "module.exited";
    /// A module exited uncleanly without being asked to.
    pub const MODULE_CRASHED: &str = "module.crashed";
    /// A module could not be (re)started.
    pub const MODULE_FAILED: &str = "module.failed";
    /// The server is exiting.
    pub const SERVER_SHUTDOWN: &str = "server.shutdown";
    /// A session missed events because it did not read them.
    pub const EVENTS_DROPPED: &str = "events.dropped";
}

#[derive(Default)]
struct Table {
    sessions: HashMap<u64, Session>,
    seq: u64,
}

/// Every attached session's sender, by session id.
#[derive(Default)]
pub struct EventHub {
    table: Mutex<Table>,
    shutdown: OnceLock<ServerMessage>,
}

/// Encodes `{key: value, …}` as a MessagePack map.
pub fn payload(pairs: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect());
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, &map);
    buf
}

fn event_message(module: &str, topic: &str, payload: Vec<u8>, seq: u64) -> ServerMessage {
    ServerMessage {
        kind: Some(Kind::Event(Event {
            module: module.into(),
            topic: topic.into(),
            payload,
            seq,
        })),
    }
}

impl EventHub {
    /// Adds a session.
    pub fn join(&self, id: u64, tx: SessionSender) {
        if let Ok(mut t) = self.table.lock() {
            let session = Session {
                tx,
                held: Arc::default(),
                dropped: 0,
            };
            t.sessions.insert(id, session);
        }
    }

    /// Removes a session.
    pub fn leave(&self, id: u64) {
        if let Ok(mut t) = self.table.lock() {
            t.sessions.remove(&id);
        }
    }

    /// Sends an event to every session; returns how many took it. A session
    /// whose queue is full misses the event rather than stalling the others.
    pub fn publish(&self, module: &str, topic: &str, payload: Vec<u8>) -> u32 {
        let Ok(mut t) = self.table.lock() else {
            return 0;
        };
        t.seq += 1;
        let bytes = payload.len() + module.len() + topic.len();
        let message = Arc::new(event_message(module, topic, payload, t.seq));
        // try_send never blocks, so holding the lock here is cheap; it is
        // what keeps every session's events in `seq` order.
        let mut taken = 0;
        for session in t.sessions.values_mut() {
            taken += u32::from(session.offer(&message, bytes));
        }
        taken
    }

    /// Publishes one of the server's own events.
    pub fn announce(&self, topic: &str, pairs: Vec<(&str, Value)>) -> u32 {
        tracing::debug!(topic, "server event");
        self.publish(SERVER_MODULE, topic, payload(pairs))
    }

    /// The `server.shutdown` event, built once so every session gets the
    /// same one (same `seq`) right before its Goodbye.
    pub fn shutdown_event(&self, reason: &str) -> ServerMessage {
        self.shutdown
            .get_or_init(|| {
                let seq = self
                    .table
                    .lock()
                    .map(|mut t| {
                        t.seq += 1;
                        t.seq
                    })
                    .unwrap_or_default();
                event_message(
                    SERVER_MODULE,
                    topic::SERVER_SHUTDOWN,
                    payload(vec![("reason", reason.into())]),
                    seq,
                )
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(m: Option<Result<ServerMessage, Status>>) -> Event {
        match m {
            Some(Ok(ServerMessage {
                kind: Some(Kind::Event(e)),
            })) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn queued(m: Option<Queued>) -> Event {
        event(m.map(|q| Ok(Arc::unwrap_or_clone(q.message))))
    }

    #[tokio::test]
    async fn sessions_see_events_in_seq_order() {
        let hub = EventHub::default();
        let (tx1, mut rx1) = mpsc::channel(16);
        let (tx2, mut rx2) = mpsc::channel(16);
        hub.join(1, tx1);
        hub.join(2, tx2);
        for i in 0..5u8 {
            assert_eq!(hub.publish("m", "t", vec![i]), 2);
        }
        for rx in [&mut rx1, &mut rx2] {
            let seqs: Vec<u64> = (0..5).map(|_| queued(rx.try_recv().ok()).seq).collect();
            assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        }
        hub.leave(1);
        assert_eq!(hub.publish("m", "t", vec![]), 1);
    }

    #[tokio::test]
    async fn a_session_that_does_not_read_misses_events_over_its_bound_and_is_told() {
        use futures::StreamExt;
        let hub = EventHub::default();
        let (tx, mut stream) = session_queue();
        hub.join(1, tx);
        let big = MAX_QUEUED_EVENT_BYTES / 2;
        // Two fit; the third and fourth would pass the bound.
        for _ in 0..4 {
            hub.publish("m", "t", vec![0; big - 2]);
        }
        let mut seqs = vec![];
        for _ in 0..2 {
            seqs.push(event(stream.next().await).seq);
        }
        assert_eq!(seqs, vec![1, 2]);
        // Read, the queue takes events again, after the notice.
        assert_eq!(hub.publish("m", "t", vec![1]), 1);
        let notice = event(stream.next().await);
        assert_eq!(
            (notice.topic.as_str(), notice.seq),
            (topic::EVENTS_DROPPED, 0)
        );
        let v = rmpv::decode::read_value(&mut notice.payload.as_slice()).unwrap();
        assert_eq!(v["dropped"].as_u64(), Some(2));
        assert_eq!(event(stream.next().await).seq, 5);
        // One event larger than the bound still reaches an empty queue.
        assert_eq!(
            hub.publish("m", "t", vec![0; MAX_QUEUED_EVENT_BYTES + 1]),
            1
        );
    }

    #[tokio::test]
    async fn shutdown_event_is_the_same_for_everyone() {
        let hub = EventHub::default();
        let a = hub.shutdown_event("bye");
        let b = hub.shutdown_event("other reason");
        assert_eq!(a, b);
        let e = event(Some(Ok(a)));
        assert_eq!(e.module, SERVER_MODULE);
        assert_eq!(e.topic, topic::SERVER_SHUTDOWN);
        let v = rmpv::decode::read_value(&mut e.payload.as_slice()).unwrap();
        assert_eq!(v["reason"].as_str(), Some("bye"));
    }
}
