//! Delivery of events to attached sessions, and the server's own events.
//!
//! Every event gets the next sequence number and is queued to every
//! session while the table is locked, so all sessions see all events in
//! the same order (the order of `seq`).
//!
//! The server itself publishes on reserved topics, as module
//! [`SERVER_MODULE`]; clients may not publish as that module. Payloads are
//! MessagePack maps:
//!
//! | topic             | payload |
//! |-------------------|---------|
//! | `module.loaded`   | `{name, pid, path, cause, restarts}`; cause is `call`, `load`, `autostart`, `dependency` or `restart` |
//! | `module.exited`   | `{name, pid, status, requested}`: a clean exit, or any exit the server asked for (unload, shutdown) |
//! | `module.crashed`  | `{name, pid, status, reason, restarts, restart_in_ms}`: an unrequested unclean exit; `reason` says why the server killed it ("" if it died by itself); `restart_in_ms` is nil unless the restart policy will start it again |
//! | `module.failed`   | `{name, error}`: an autostart or restart that could not start the module, or a restart series that gave up |
//! | `server.shutdown` | `{reason}`: sent to each session just before its Goodbye |

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use norgopolis_proto::v1::{server_message::Kind, Event, ServerMessage};
use rmpv::Value;
use tokio::sync::mpsc;
use tonic::Status;

/// Outgoing half of one session's Attach stream.
pub type SessionSender = mpsc::Sender<Result<ServerMessage, Status>>;

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
}

#[derive(Default)]
struct Table {
    sessions: HashMap<u64, SessionSender>,
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
            t.sessions.insert(id, tx);
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
        let message = event_message(module, topic, payload, t.seq);
        // try_send never blocks, so holding the lock here is cheap; it is
        // what keeps every session's events in `seq` order.
        t.sessions
            .values()
            .filter(|tx| tx.try_send(Ok(message.clone())).is_ok())
            .count() as u32
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
            let seqs: Vec<u64> = (0..5).map(|_| event(rx.try_recv().ok()).seq).collect();
            assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        }
        hub.leave(1);
        assert_eq!(hub.publish("m", "t", vec![]), 1);
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
