//! The lean transport's connection to one module (frames from
//! `norgopolis_proto::lean` on the module's stdin/stdout).
//!
//! One writer task gathers queued frames into single writes; one reader
//! task routes the module's frames to the call they belong to (by id) and
//! answers pings' pongs. Each call gets a small bounded queue: a caller
//! that stops reading holds the reader up once its queue is full, which
//! pushes back on the module through the pipe (as HTTP/2's connection
//! window does on the gRPC transport) instead of buffering without limit.
//! Meanwhile the module's pongs wait in the pipe too, so a ping is not
//! judged unanswered while the reader waits for a caller.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use norgopolis_proto::{
    lean::{self, Frame, FrameError, FrameReader, Incoming, Outgoing},
    module_communication as mc,
};
use tokio::{
    process::{ChildStdin, ChildStdout},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tonic::{Code, Status};

use super::{
    conn::{ConnEnd, ConnTask, Ping},
    stdio::CloseSignal,
};

/// Results a call may have queued: what its credit allows, and its end.
/// Only a module ignoring the credit fills it, and then the reader waits
/// for that call's caller.
const CALL_QUEUE: usize = lean::INITIAL_CREDIT as usize + 1;

/// Results a caller takes before the module is granted as many more.
const CREDIT_BATCH: u32 = lean::INITIAL_CREDIT / 2;

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

struct Shared {
    out: mpsc::UnboundedSender<Outgoing>,
    calls: Mutex<Calls>,
    next_id: AtomicU32,
    /// Times the reader began waiting for a slow caller (odd while it waits).
    stalls: AtomicU64,
}

impl Shared {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        // Plain map operations cannot leave it inconsistent on a panic.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        self.calls().by_id.get(&id).cloned()
    }

    fn remove(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        self.calls().by_id.remove(&id)
    }

    /// Ends every call: their streams see the connection go away.
    fn close_all(&self) {
        let mut calls = self.calls();
        calls.open = false;
        calls.by_id.clear();
    }

    fn send(&self, frame: Frame) -> bool {
        self.out.send(Outgoing::Frame(frame)).is_ok()
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

/// Starts calls on a lean module connection; cheap to clone.
#[derive(Clone)]
pub struct LeanClient {
    shared: Arc<Shared>,
}

/// Why a module declared lean did not greet as a lean module.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// Its first bytes were not the lean hello.
    #[error("wrote {} instead of the lean hello", describe_bytes(.0))]
    Wrong(Vec<u8>),
    /// Its stdout ended first (usually it exited).
    #[error("closed its stdout before greeting")]
    Ended,
    /// It wrote nothing for this long.
    #[error("said nothing within {} ms (a module built with norgopolis-sdk greets at once)", .0.as_millis())]
    Silent(Duration),
    /// Reading its stdout failed.
    #[error("cannot be read from: {0}")]
    Io(#[from] std::io::Error),
}

/// The first bytes of a module in words: an HTTP/2 frame (what a gRPC-only
/// module writes first) is named as such.
fn describe_bytes(bytes: &[u8]) -> String {
    // Every HTTP/2 frame has a 9-byte header; a server's first is SETTINGS
    // (type 4) on stream 0.
    if bytes.len() >= 9 && bytes[3] == 0x04 && bytes[5..9] == [0, 0, 0, 0] {
        return "an HTTP/2 SETTINGS frame: it speaks gRPC only (not built with \
                norgopolis-sdk, or with a version without the lean transport)"
            .into();
    }
    format!("{:?}", bytes.escape_ascii().to_string())
}

/// Waits for the module's hello, then starts the reader and writer tasks.
/// The returned task (polled by the supervisor) tells how the connection
/// ended.
pub async fn connect(
    name: &str,
    stdin: ChildStdin,
    stdout: ChildStdout,
    close: CloseSignal,
    ping: Ping,
    max_message_size: usize,
) -> Result<(LeanClient, ConnTask), HelloError> {
    let mut reader = FrameReader::new(stdout, max_message_size);
    let hello = lean::hello_bytes();
    // As long as a silent gRPC module would take to be judged unanswered.
    let patience = ping.interval + ping.timeout;
    let first = tokio::time::timeout(patience, reader.read_prefix(hello.len()))
        .await
        .map_err(|_| HelloError::Silent(patience))??;
    if first != hello {
        if first.is_empty() {
            return Err(HelloError::Ended);
        }
        return Err(HelloError::Wrong(first));
    }

    let (out, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        out,
        calls: Mutex::new(Calls {
            open: true,
            by_id: HashMap::new(),
        }),
        next_id: AtomicU32::new(1),
        stalls: AtomicU64::new(0),
    });
    let writer = {
        let close = close.clone();
        tokio::spawn(async move {
            tokio::select! {
                written = lean::write_frames(rx, stdin) => match written {
                    Ok(()) => ConnEnd::Asked,
                    Err(FrameError::Io(e)) => ConnEnd::Closed(format!("writing its stdin failed: {e}")),
                    Err(e) => ConnEnd::Garbled(format!("cannot encode a frame: {e}")),
                },
                // Dropping stdin here is how the module is asked to stop.
                () = close.raised() => ConnEnd::Asked,
            }
        })
    };
    let reader = tokio::spawn(read_and_ping(
        name.to_string(),
        reader,
        shared.clone(),
        close.clone(),
        ping,
        max_message_size,
    ));
    let tasks = Tasks { reader, writer };
    let conn = shared.clone();
    let task: ConnTask = Box::pin(async move {
        let mut tasks = tasks;
        let end = tokio::select! {
            end = &mut tasks.reader => end.unwrap_or_else(|e| ConnEnd::Closed(format!("reader task: {e}"))),
            end = &mut tasks.writer => end.unwrap_or_else(|e| ConnEnd::Closed(format!("writer task: {e}"))),
        };
        conn.close_all();
        if close.is_raised() {
            ConnEnd::Asked
        } else {
            end
        }
    });
    Ok((LeanClient { shared }, task))
}

/// The connection's tasks, stopped when the connection is dropped.
struct Tasks {
    reader: JoinHandle<ConnEnd>,
    writer: JoinHandle<ConnEnd>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

async fn read_and_ping(
    name: String,
    reader: FrameReader<ChildStdout>,
    shared: Arc<Shared>,
    close: CloseSignal,
    ping: Ping,
    limit: usize,
) -> ConnEnd {
    let (pongs_tx, pongs) = watch::channel(0u64);
    let end = tokio::select! {
        end = read(&name, reader, &shared, pongs_tx, limit) => end,
        end = pinger(&shared, pongs, ping) => end,
        () = close.raised() => ConnEnd::Asked,
    };
    shared.close_all();
    end
}

/// Routes the module's frames to their calls until the stream ends.
async fn read(
    name: &str,
    mut reader: FrameReader<ChildStdout>,
    shared: &Shared,
    pongs: watch::Sender<u64>,
    limit: usize,
) -> ConnEnd {
    loop {
        let frame = match reader.next().await {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::Oversized { id, len })) => {
                tracing::warn!(module = %name, call = id, len, "result over max_message_size");
                if let Some(tx) = shared.remove(id) {
                    let status = Status::resource_exhausted(format!(
                        "module '{name}' sent a result larger than the message size \
                         limit of {limit} bytes (max_message_size in config.toml)"
                    ));
                    shared.deliver(&tx, Event::Done(Some(status))).await;
                    shared.send(Frame::Cancel { id });
                }
                continue;
            }
            Ok(None) => return ConnEnd::Closed("it closed its stdout".into()),
            Err(FrameError::Io(e)) => return ConnEnd::Closed(e.to_string()),
            Err(FrameError::Truncated) => {
                return ConnEnd::Closed("its stdout ended in the middle of a frame".into())
            }
            Err(e) => return ConnEnd::Garbled(e.to_string()),
        };
        match frame {
            Frame::Item { id, data } => {
                // No sender: the call was cancelled and its items are moot.
                if let Some(tx) = shared.sender(id) {
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
                    let status = Status::new(code, message);
                    shared.deliver(&tx, Event::Done(Some(status))).await;
                }
            }
            Frame::Pong { nonce } => {
                pongs.send_replace(nonce);
            }
            other => {
                return ConnEnd::Garbled(format!(
                    "a {} frame, which only the router sends",
                    frame_name(&other)
                ))
            }
        }
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello => "second HELLO",
        Frame::Call { .. } => "CALL",
        Frame::Item { .. } => "ITEM",
        Frame::End { .. } => "END",
        Frame::Error { .. } => "ERROR",
        Frame::Cancel { .. } => "CANCEL",
        Frame::Ping { .. } => "PING",
        Frame::Pong { .. } => "PONG",
        Frame::Credit { .. } => "CREDIT",
    }
}

/// Pings every `interval`; a ping unanswered for `timeout` ends the
/// connection as [`ConnEnd::Unanswered`] (the module hangs), unless the
/// reader waited for a slow caller meanwhile (the pong may be in the pipe).
async fn pinger(shared: &Shared, mut pongs: watch::Receiver<u64>, ping: Ping) -> ConnEnd {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(ping.interval).await;
        nonce += 1;
        if !shared.send(Frame::Ping { nonce }) {
            return std::future::pending().await;
        }
        loop {
            let stalls = shared.stalls.load(Ordering::SeqCst);
            let answered = async { pongs.wait_for(|n| *n >= nonce).await.map(drop) };
            match tokio::time::timeout(ping.timeout, answered).await {
                Ok(Ok(())) => break,
                // The reader ended; it reports why.
                Ok(Err(_)) => return std::future::pending().await,
                Err(_) => {
                    let now = shared.stalls.load(Ordering::SeqCst);
                    if now == stalls && now.is_multiple_of(2) {
                        return ConnEnd::Unanswered;
                    }
                }
            }
        }
    }
}

impl LeanClient {
    /// Starts a call; its items, end or error arrive on the stream.
    /// `deadline` is the time the caller still waits, told to the module.
    pub fn invoke(
        &self,
        function: String,
        args: Vec<u8>,
        deadline: Option<Duration>,
    ) -> Result<LeanStream, ConnectionClosed> {
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
        let sent = self.shared.send(Frame::Call {
            id,
            function,
            args,
            deadline_ms: deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        if !sent {
            self.shared.remove(id);
            return Err(ConnectionClosed);
        }
        Ok(LeanStream {
            id,
            rx,
            shared: self.shared.clone(),
            done: false,
            taken: 0,
        })
    }
}

/// A call could not start: the connection has ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection to the module is closed")]
pub struct ConnectionClosed;

/// One call's results; dropping it before the end cancels the call in the
/// module.
pub struct LeanStream {
    id: u32,
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    done: bool,
    /// Results taken since the last credit was granted.
    taken: u32,
}

impl LeanStream {
    /// The next result; `None` after the last; an error ends the call.
    pub async fn message(&mut self) -> Result<Option<mc::MessagePack>, Status> {
        if self.done {
            return Ok(None);
        }
        let event = self.rx.recv().await;
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
                Ok(Some(mc::MessagePack { data }))
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
                Err(Status::unavailable(
                    "the connection to the module ended during the call",
                ))
            }
        }
    }
}

impl Drop for LeanStream {
    fn drop(&mut self) {
        if !self.done {
            self.shared.remove(self.id);
            self.shared.send(Frame::Cancel { id: self.id });
        }
    }
}
