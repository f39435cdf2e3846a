//! The calling end of a lean connection: the router towards a lean module,
//! and a client towards the router. Both start calls, route the results
//! that come back to the call they belong to (by id), grant credit as
//! their callers take results, and cancel calls whose callers went away;
//! this module is that part, so the two cannot drift apart.
//!
//! Each call gets a small bounded queue. Within its credit a well-behaved
//! peer never fills it; a peer ignoring the credit fills it and then the
//! connection's reader waits for that call's caller, which pushes back on
//! the peer through the socket or pipe instead of buffering without limit.

// Results carry `tonic::Status` as it is, as everything else on the call
// path does; errors are the rare case, so its size costs nothing per item.
#![allow(clippy::result_large_err)]

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};

use crate::lean_frame::{Frame, Outgoing, INITIAL_CREDIT};

/// Results a call may have queued: what its credit allows, and its end.
const CALL_QUEUE: usize = INITIAL_CREDIT as usize + 1;

/// Results a caller takes before the peer is granted as many more.
const CREDIT_BATCH: u32 = INITIAL_CREDIT / 2;

/// What the reader hands a call.
enum Event {
    Item(Vec<u8>),
    /// The call ended: `None` on success, else its error.
    Done(Option<Status>),
}

/// The calls in flight, by id; closed when the connection ends.
struct Calls {
    open: bool,
    by_id: HashMap<u32, mpsc::Sender<Event>>,
}

/// Where a caller's frames go: its connection's writer.
pub trait FrameSink: Send + Sync + 'static {
    /// Writes or queues `frame`, keeping the order of sends; `false` once
    /// the connection takes no more.
    fn send_frame(&self, frame: Frame) -> bool;
}

/// A writer task's queue (see [`crate::lean_frame::write_frames`]).
impl FrameSink for mpsc::UnboundedSender<Outgoing> {
    fn send_frame(&self, frame: Frame) -> bool {
        self.send(Outgoing::Frame(frame)).is_ok()
    }
}

struct Shared {
    out: Box<dyn FrameSink>,
    calls: Mutex<Calls>,
    next_id: AtomicU32,
    /// Times the reader began or stopped waiting for a slow caller (odd
    /// while it waits).
    stalls: AtomicU64,
    /// Who answers the calls, for errors ("module 'x'", "the norgopolis server").
    peer: String,
    /// The nonce of the latest pong.
    pongs: watch::Sender<u64>,
    /// Why the connection was closed, if we closed it for a reason.
    closed_because: Mutex<Option<String>>,
}

impl Shared {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        // Plain map operations cannot leave it inconsistent on a panic.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        self.calls().by_id.remove(&id)
    }

    fn send(&self, frame: Frame) -> bool {
        self.out.send_frame(frame)
    }

    /// Hands `event` to its call, waiting while the call's queue is full
    /// (its caller is slow); `false` if the call is gone.
    async fn deliver(&self, tx: &mpsc::Sender<Event>, event: Event) -> bool {
        match tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.stalls.fetch_add(1, Ordering::SeqCst);
                let sent = tx.send(event).await.is_ok();
                self.stalls.fetch_add(1, Ordering::SeqCst);
                sent
            }
        }
    }
}

/// Starts calls on one lean connection and routes their results; cheap to
/// clone. The connection's reader hands it every frame it reads
/// ([`Caller::dispatch`]); its writer sends what the caller queues.
#[derive(Clone)]
pub struct Caller {
    shared: Arc<Shared>,
}

/// A call could not start: the connection has ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection is closed")]
pub struct ConnectionClosed;

impl Caller {
    /// A caller whose frames go to `out` (the connection's writer);
    /// `peer` names the other end in errors.
    pub fn new(out: impl FrameSink, peer: impl Into<String>) -> Self {
        Caller {
            shared: Arc::new(Shared {
                out: Box::new(out),
                calls: Mutex::new(Calls {
                    open: true,
                    by_id: HashMap::new(),
                }),
                next_id: AtomicU32::new(1),
                stalls: AtomicU64::new(0),
                peer: peer.into(),
                pongs: watch::channel(0).0,
                closed_because: Mutex::new(None),
            }),
        }
    }

    /// Starts a call: `start` builds its opening frame (`CALL` or `ROUTE`)
    /// for the id chosen here. Results arrive on the returned stream.
    pub fn start(&self, start: impl FnOnce(u32) -> Frame) -> Result<CallStream, ConnectionClosed> {
        let id = loop {
            // Id 0 is for connection frames (pings); wrapping after four
            // billion calls is harmless while ids in flight stay unique.
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        {
            let mut calls = self.shared.calls();
            if !calls.open {
                return Err(ConnectionClosed);
            }
            calls.by_id.insert(id, tx);
        }
        if !self.shared.send(start(id)) {
            self.shared.remove(id);
            return Err(ConnectionClosed);
        }
        Ok(CallStream {
            id,
            rx,
            shared: self.shared.clone(),
            done: false,
            taken: 0,
        })
    }

    /// Hands a result frame (`ITEM`, `END`, `ERROR`) to its call, waiting
    /// while that call's caller is behind, and notes a `PONG`; any other
    /// frame is given back for the connection to handle. Frames of calls no longer wanted
    /// (cancelled) are dropped.
    pub async fn dispatch(&self, frame: Frame) -> Option<Frame> {
        let shared = &self.shared;
        match frame {
            Frame::Item { id, data } => {
                let tx = shared.calls().by_id.get(&id).cloned();
                if let Some(tx) = tx {
                    shared.deliver(&tx, Event::Item(data)).await;
                }
            }
            Frame::End { id } => {
                if let Some(tx) = shared.remove(id) {
                    shared.deliver(&tx, Event::Done(None)).await;
                }
            }
            Frame::Error { id, code, message } => {
                if let Some(tx) = shared.remove(id) {
                    let code = match Code::from_i32(code) {
                        // "failed successfully" is not something to pass on.
                        Code::Ok => Code::Unknown,
                        code => code,
                    };
                    shared
                        .deliver(&tx, Event::Done(Some(Status::new(code, message))))
                        .await;
                }
            }
            Frame::Pong { nonce } => {
                shared.pongs.send_replace(nonce);
            }
            other => return Some(other),
        }
        None
    }

    /// Fails call `id` with `status` (a result the reader could not take,
    /// such as one over the size limit) and asks the peer to stop it.
    pub async fn fail(&self, id: u32, status: Status) {
        if let Some(tx) = self.shared.remove(id) {
            self.shared.deliver(&tx, Event::Done(Some(status))).await;
            self.shared.send(Frame::Cancel { id });
        }
    }

    /// Queues a connection frame (a ping); `false` once the writer is gone.
    pub fn send(&self, frame: Frame) -> bool {
        self.shared.send(frame)
    }

    /// Whether calls can still start.
    pub fn is_open(&self) -> bool {
        self.shared.calls().open
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.calls().by_id.len()
    }

    /// As [`Caller::close`], telling the calls why (their error's message).
    pub fn close_because(&self, reason: String) {
        *self
            .shared
            .closed_because
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.close();
    }

    /// Ends every call (their streams report the connection lost) and
    /// refuses new ones.
    pub fn close(&self) {
        let mut calls = self.shared.calls();
        calls.open = false;
        calls.by_id.clear();
    }

    /// Counts the reader's waits for slow callers: odd while it waits.
    /// A liveness check must not blame the peer for an answer stuck behind
    /// such a wait.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::SeqCst)
    }
}

/// How a connection's liveness is checked (see [`Caller::keep_alive`]).
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// How often a ping is sent.
    pub interval: std::time::Duration,
    /// How long a ping may go unanswered.
    pub timeout: std::time::Duration,
    /// Whether to ping while no call is in flight (a module is checked
    /// always; a client checks its server only while it waits on it).
    pub when_idle: bool,
}

impl Caller {
    /// Pings the peer as `settings` say; returns (only) when a ping went
    /// unanswered for `timeout` while the reader was not waiting on a slow
    /// caller (the pong may be queued behind that). Never returns once the
    /// connection's writer is gone: the reader reports that end.
    pub async fn keep_alive(&self, settings: KeepAlive) {
        let mut pongs = self.shared.pongs.subscribe();
        let mut nonce = 0u64;
        loop {
            tokio::time::sleep(settings.interval).await;
            if !settings.when_idle && self.in_flight() == 0 {
                continue;
            }
            nonce += 1;
            if !self.send(Frame::Ping { nonce }) {
                return std::future::pending().await;
            }
            loop {
                let stalls = self.stalls();
                let answered = async { pongs.wait_for(|n| *n >= nonce).await.map(drop) };
                match tokio::time::timeout(settings.timeout, answered).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return std::future::pending().await,
                    Err(_) => {
                        let now = self.stalls();
                        if now == stalls && now.is_multiple_of(2) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// One call's results; dropping it before the end cancels the call at the
/// peer.
pub struct CallStream {
    id: u32,
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    done: bool,
    /// Results taken since the last credit was granted.
    taken: u32,
}

impl CallStream {
    /// The next result; `None` after the last; an error ends the call.
    pub async fn message(&mut self) -> Result<Option<Vec<u8>>, Status> {
        if self.done {
            return Ok(None);
        }
        let event = self.rx.recv().await;
        self.take(event)
    }

    /// As [`CallStream::message`], for `poll`-based streams.
    pub fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Option<Vec<u8>>, Status>> {
        if self.done {
            return std::task::Poll::Ready(Ok(None));
        }
        self.rx.poll_recv(cx).map(|event| self.take(event))
    }

    fn take(&mut self, event: Option<Event>) -> Result<Option<Vec<u8>>, Status> {
        match event {
            Some(Event::Item(data)) => {
                self.taken += 1;
                if self.taken == CREDIT_BATCH {
                    self.taken = 0;
                    self.shared.send(Frame::Credit {
                        id: self.id,
                        items: CREDIT_BATCH,
                    });
                }
                Ok(Some(data))
            }
            Some(Event::Done(None)) => {
                self.done = true;
                Ok(None)
            }
            Some(Event::Done(Some(status))) => {
                self.done = true;
                Err(status)
            }
            None => {
                self.done = true;
                let because = self
                    .shared
                    .closed_because
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Err(Status::unavailable(because.unwrap_or_else(|| {
                    format!(
                        "the connection to {} ended during the call",
                        self.shared.peer
                    )
                })))
            }
        }
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if !self.done {
            self.shared.remove(self.id);
            self.shared.send(Frame::Cancel { id: self.id });
        }
    }
}
