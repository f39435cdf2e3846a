//! The lean transport's connection to one module (frames from
//! `norgopolis_proto::lean_frame` on the module's stdin/stdout).
//!
//! One writer task gathers queued frames into single writes; one reader
//! task hands the module's results to the calling end shared with our
//! client (`norgopolis_proto::lean_caller`: per-call queues and credit, so
//! a caller that stops reading pushes back on its own call only) and
//! answers pings' pongs. A ping is not judged unanswered while the reader
//! waits for a slow caller: the pong may be waiting in the pipe behind it.

use std::time::Duration;

use norgopolis_proto::{
    lean_caller::{CallStream, Caller, KeepAlive},
    lean_frame::{self as lean, Frame, FrameError, FrameReader, Incoming, Outgoing},
};
use tokio::{
    io::AsyncRead,
    process::{ChildStdin, ChildStdout},
    sync::mpsc,
    task::JoinHandle,
};
use tonic::Status;

use super::{
    conn_end::{ConnEnd, ConnTask, Ping},
    stdio::CloseSignal,
};

pub use norgopolis_proto::lean_caller::ConnectionClosed;

/// One call's results; dropping it before the end cancels the call in the
/// module.
pub type LeanStream = CallStream;

/// Starts calls on a lean module connection; cheap to clone.
#[derive(Clone)]
pub struct LeanClient {
    caller: Caller,
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
    let writer = tokio::spawn(lean::write_frames(rx, stdin));
    Ok(drive(
        name,
        reader,
        out,
        writer,
        close,
        ping,
        max_message_size,
        &PIPES,
    ))
}

/// What the module's two ends are called in reasons a connection ended.
pub struct Ends {
    /// The end we read from.
    pub reads: &'static str,
    /// The end we write to.
    pub writes: &'static str,
}

/// A spawned module's ends: its stdout and stdin.
const PIPES: Ends = Ends {
    reads: "its stdout",
    writes: "its stdin",
};

/// Drives a module connection whose greeting is done: `reader` yields the
/// module's frames, `out` queues ours for the `writer` task. Raising
/// `close` ends the connection from our side (the writer is stopped,
/// which closes our end). The returned task (polled by the supervisor)
/// tells how the connection ended.
#[allow(clippy::too_many_arguments)]
pub fn drive<R>(
    name: &str,
    reader: FrameReader<R>,
    out: mpsc::UnboundedSender<Outgoing>,
    writer: JoinHandle<Result<(), FrameError>>,
    close: CloseSignal,
    ping: Ping,
    max_message_size: usize,
    ends: &'static Ends,
) -> (LeanClient, ConnTask)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let caller = Caller::new(out, "the module");
    let writer = {
        let close = close.clone();
        tokio::spawn(async move {
            // The writer holds our end: it goes with this task, however
            // the connection ends.
            let mut writer = AbortOnDrop(writer);
            tokio::select! {
                written = &mut writer.0 => match written {
                    Ok(Ok(())) => ConnEnd::Asked,
                    Ok(Err(FrameError::Io(e))) => ConnEnd::Closed(format!("writing {} failed: {e}", ends.writes)),
                    Ok(Err(e)) => ConnEnd::Garbled(format!("cannot encode a frame: {e}")),
                    Err(e) => ConnEnd::Closed(format!("writer task: {e}")),
                },
                // Stopping the writer drops our end: how the module is
                // asked to stop.
                () = close.raised() => ConnEnd::Asked,
            }
        })
    };
    let reader = tokio::spawn(read_and_ping(
        name.to_string(),
        reader,
        caller.clone(),
        close.clone(),
        ping,
        max_message_size,
        ends,
    ));
    let tasks = Tasks { reader, writer };
    let conn = caller.clone();
    let task: ConnTask = Box::pin(async move {
        let mut tasks = tasks;
        let end = tokio::select! {
            end = &mut tasks.reader => end.unwrap_or_else(|e| ConnEnd::Closed(format!("reader task: {e}"))),
            end = &mut tasks.writer => end.unwrap_or_else(|e| ConnEnd::Closed(format!("writer task: {e}"))),
        };
        conn.close();
        if close.is_raised() {
            ConnEnd::Asked
        } else {
            end
        }
    });
    (LeanClient { caller }, task)
}

/// Stops a task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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

async fn read_and_ping<R: AsyncRead + Unpin>(
    name: String,
    reader: FrameReader<R>,
    caller: Caller,
    close: CloseSignal,
    ping: Ping,
    limit: usize,
    ends: &'static Ends,
) -> ConnEnd {
    let keep_alive = KeepAlive {
        interval: ping.interval,
        timeout: ping.timeout,
        when_idle: true,
    };
    let end = tokio::select! {
        end = read(&name, reader, &caller, limit, ends) => end,
        // A ping unanswered: the module hangs.
        () = caller.keep_alive(keep_alive) => ConnEnd::Unanswered,
        () = close.raised() => ConnEnd::Asked,
    };
    caller.close();
    end
}

/// Routes the module's frames to their calls until the stream ends.
async fn read<R: AsyncRead + Unpin>(
    name: &str,
    mut reader: FrameReader<R>,
    caller: &Caller,
    limit: usize,
    ends: &Ends,
) -> ConnEnd {
    loop {
        let frame = match reader.next().await {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::Oversized { id, len })) => {
                tracing::warn!(module = %name, call = id, len, "result over max_message_size");
                let status = Status::resource_exhausted(format!(
                    "module '{name}' sent a result larger than the message size \
                     limit of {limit} bytes (max_message_size in config.toml)"
                ));
                caller.fail(id, status).await;
                continue;
            }
            Ok(None) => return ConnEnd::Closed(format!("it closed {}", ends.reads)),
            Err(FrameError::Io(e)) => return ConnEnd::Closed(e.to_string()),
            Err(FrameError::Truncated) => {
                return ConnEnd::Closed(format!("{} ended in the middle of a frame", ends.reads))
            }
            Err(e) => return ConnEnd::Garbled(e.to_string()),
        };
        match caller.dispatch(frame).await {
            None => {}
            Some(other) => {
                return ConnEnd::Garbled(format!(
                    "a {} frame, which only the router sends",
                    match other {
                        Frame::Hello => "second HELLO",
                        other => other.kind_name(),
                    }
                ))
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
        self.caller.start(|id| Frame::Call {
            id,
            function,
            args,
            deadline_ms: deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}
