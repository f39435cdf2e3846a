//! Serving a client that speaks the lean transport on the server's socket
//! (`norgopolis_proto::lean_frame`; our client crate and Neovim plugin do).
//!
//! It exists for speed: a call over it costs the client and the server a
//! fraction of the CPU of a gRPC call over HTTP/2, which is most of a
//! routed call's time. It carries calls only; the session (Attach) and
//! control calls stay on gRPC. The client greets first; we answer with our
//! own hello, then serve `ROUTE` frames as [`Router`] calls, each in a task
//! of its own, with the same limits, deadlines and cancellation as
//! `communication.Forwarder`, and the same per-call credit the router
//! gives lean modules (a client that stops reading pauses its own call).

use std::{future::Future, sync::Arc, time::Duration};

use norgopolis_proto::{
    lean_callee::{error_frame, CallTable},
    lean_frame::{self as lean, Frame, FrameError, FrameReader, Incoming, Outgoing},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, watch, Semaphore},
    task::{JoinHandle, JoinSet},
};
use tonic::{Code, Status};

use crate::{
    accept::{client_conn::Conn, connection::LeanService},
    modules::external::{self, Offer},
    services::router::{oversized_arguments, unless_panicked, Router},
    sessions::lifetime::ExitReason,
};

/// Serves one lean client whose hello has been read, until it closes the
/// connection, breaks the protocol, or the server exits (then calls in
/// flight finish first; new ones are refused by the lifetime).
pub async fn serve<IO>(
    io: IO,
    conn: Conn,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<Option<ExitReason>>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let (out, rx) = mpsc::unbounded_channel();
    let _ = out.send(Outgoing::Frame(Frame::Hello));
    let mut writer = tokio::spawn(lean::write_frames(rx, writer));
    let calls = CallTable::default();
    let mut tasks = JoinSet::new();
    let limit = router.max_message_size;
    // Clients send calls and credit, mostly small: a small buffer, as
    // thousands of connections may be open.
    let mut frames = FrameReader::with_buffer(reader, limit, 8 * 1024);
    let mut writer_done = false;
    let ended = loop {
        let incoming = tokio::select! {
            incoming = frames.next() => incoming,
            _ = shutdown.wait_for(Option::is_some) => break Ending::Closed("the server is exiting".to_string()),
            written = &mut writer => {
                writer_done = true;
                break Ending::Closed(writer_ended(written));
            }
        };
        // Reap finished calls as we go (not in the select above: a frame
        // half read must not be abandoned).
        while tasks.try_join_next().is_some() {}
        let frame = match received(incoming, &out, limit) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(ended) => break ended,
        };
        if let Some(ended) = dispatch(frame, &conn, &router, &out, &calls, &mut tasks) {
            break ended;
        }
    };
    let ended = match ended {
        Ending::Closed(why) => why,
        Ending::Provide {
            id: call,
            module,
            functions,
        } => {
            let offer = Offer {
                name: module,
                functions,
                pid: conn.peer_pid,
                frames,
                out,
                writer,
            };
            return provide(offer, call, &conn, &router, shutdown).await;
        }
    };
    tracing::debug!(conn = conn.id, "lean client connection ends: {ended}");
    let calls_finish = shutdown.borrow().is_some();
    close(calls_finish, calls, tasks, out, writer, writer_done).await;
}

impl<IO> LeanService<IO> for Arc<Router>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    fn serve(
        &self,
        io: IO,
        conn: Conn,
        shutdown: watch::Receiver<Option<ExitReason>>,
    ) -> impl Future<Output = ()> + Send {
        serve(io, conn, self.clone(), shutdown)
    }
}

/// Why the connection's writer stopped, in words.
fn writer_ended(written: Result<Result<(), FrameError>, tokio::task::JoinError>) -> String {
    match written {
        Ok(Ok(())) => "its writer stopped".to_string(),
        Ok(Err(e)) => format!("writing to it failed: {e}"),
        Err(e) => format!("writer task: {e}"),
    }
}

/// What one read from the client gives: a frame, nothing to act on (an
/// oversized call, answered here; the connection goes on), or the end.
fn received(
    incoming: Result<Option<Incoming>, FrameError>,
    out: &mpsc::UnboundedSender<Outgoing>,
    limit: usize,
) -> Result<Option<Frame>, Ending> {
    match incoming {
        Ok(Some(Incoming::Frame(frame))) => Ok(Some(frame)),
        Ok(Some(Incoming::Oversized { id, len })) => {
            // Its arguments were skipped unread.
            let _ = out.send(error_frame(
                id,
                Code::ResourceExhausted,
                oversized_arguments(Some(len), limit),
            ));
            Ok(None)
        }
        Ok(None) => Err(Ending::Closed("it closed the connection".to_string())),
        Err(FrameError::Io(e)) => Err(Ending::Closed(format!("reading failed: {e}"))),
        Err(FrameError::Truncated) => Err(Ending::Closed(
            "it closed the connection mid-frame".to_string(),
        )),
        Err(e) => Err(Ending::Closed(format!("it broke the lean protocol: {e}"))),
    }
}

/// Acts on one frame from the client; `Some` ends the connection's loop.
fn dispatch(
    frame: Frame,
    conn: &Conn,
    router: &Arc<Router>,
    out: &mpsc::UnboundedSender<Outgoing>,
    calls: &CallTable,
    tasks: &mut JoinSet<()>,
) -> Option<Ending> {
    match frame {
        // Its results could not be told from the running call's.
        Frame::Route { id, .. } if calls.is_running(id) => Some(Ending::Closed(format!(
            "it reused call id {id} while that call was running"
        ))),
        Frame::Route {
            id,
            module,
            function,
            args,
            deadline_ms,
        } => {
            let call = Requested {
                id,
                module,
                function,
                args,
                timeout: deadline_ms.map(Duration::from_millis),
            };
            start(call, conn, router, out, calls, tasks);
            None
        }
        Frame::Cancel { id } => {
            calls.cancel(id);
            None
        }
        Frame::Credit { id, items } => {
            calls.grant(id, items);
            None
        }
        Frame::Ping { nonce } => {
            let _ = out.send(Outgoing::Frame(Frame::Pong { nonce }));
            None
        }
        // Its calls' results would share the connection with its
        // module's frames.
        Frame::Provide { .. } if !tasks.is_empty() => Some(Ending::Closed(
            "it sent PROVIDE while its calls ran".to_string(),
        )),
        Frame::Provide {
            id,
            module,
            functions,
        } => Some(Ending::Provide {
            id,
            module,
            functions,
        }),
        other => Some(Ending::Closed(format!(
            "it sent a {} frame, which clients do not send",
            other.kind_name()
        ))),
    }
}

/// Ends a client connection: its calls finish first when the server is
/// exiting (`calls_finish`; the server bounds how long it waits), else
/// they are cancelled; what they queued is written before the socket
/// closes, within a second.
async fn close(
    calls_finish: bool,
    calls: CallTable,
    mut tasks: JoinSet<()>,
    out: mpsc::UnboundedSender<Outgoing>,
    mut writer: JoinHandle<Result<(), FrameError>>,
    writer_done: bool,
) {
    if calls_finish {
        while tasks.join_next().await.is_some() {}
    }
    calls.cancel_all();
    tasks.shutdown().await;
    drop(out);
    // A finished writer must not be polled again.
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
    }
    // A writer stuck on a client that stopped reading goes now, with
    // everything still queued for it.
    writer.abort();
    crate::services::memory::trim_soon();
}

/// Why the loop over a client's frames ended.
enum Ending {
    /// The connection is over, for this reason.
    Closed(String),
    /// The client asked to serve as a module.
    Provide {
        id: u32,
        module: String,
        functions: Vec<String>,
    },
}

/// Serves a client that sent `PROVIDE` (answered with call `id`): the
/// connection becomes an external module's until it ends, the module is
/// unloaded, or the server exits (its module stop closes the connection).
/// A refusal is answered with an `ERROR`, and the connection closes.
async fn provide<R>(
    offer: Offer<R>,
    id: u32,
    conn: &Conn,
    router: &Router,
    mut shutdown: watch::Receiver<Option<ExitReason>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    // Serving is use enough: not closed as idle.
    conn.mark_started();
    let out = offer.out.clone();
    let name = offer.name.clone();
    match external::register(&router.host, offer, Outgoing::Frame(Frame::End { id })).await {
        Ok(module) => {
            tokio::select! {
                _ = module.wait_exit() => {}
                _ = shutdown.wait_for(Option::is_some) => {}
            }
        }
        Err(status) => {
            tracing::debug!(conn = conn.id, module = %name, "refused a provider: {}", status.message());
            let (flushed, done) = tokio::sync::oneshot::channel();
            let _ = out.send(status_frame(id, &status));
            let _ = out.send(Outgoing::Flushed(flushed));
            // Told before the connection closes (bounded: it may not read).
            let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        }
    }
}

/// A call a `ROUTE` frame asks for, not yet started.
struct Requested {
    id: u32,
    module: String,
    function: String,
    args: Vec<u8>,
    timeout: Option<Duration>,
}

fn status_frame(id: u32, status: &Status) -> Outgoing {
    error_frame(id, status.code(), status.message().to_string())
}

/// Starts `call` in a task of its own, registered for cancellation.
fn start(
    call: Requested,
    conn: &Conn,
    router: &Arc<Router>,
    out: &mpsc::UnboundedSender<Outgoing>,
    calls: &CallTable,
    tasks: &mut JoinSet<()>,
) {
    let id = call.id;
    let conn = conn.clone();
    let router = router.clone();
    let out = out.clone();
    let registered = calls.clone();
    calls.start(id, |allowed| {
        tasks.spawn(async move {
            // Boxed: the call's state machine is kilobytes, and tokio moves
            // a task's future (and its stage) several times per call.
            let running = Box::pin(run(call, &conn, &router, &allowed, &out));
            let last = unless_panicked(running, |status| status_frame(id, &status)).await;
            registered.finished(id);
            let _ = out.send(last);
        })
    });
}

/// Runs one call, sending its items; returns its last frame.
async fn run(
    call: Requested,
    conn: &Conn,
    router: &Router,
    allowed: &Semaphore,
    out: &mpsc::UnboundedSender<Outgoing>,
) -> Outgoing {
    let id = call.id;
    let started = router
        .start(
            Some(conn),
            &call.module,
            call.function,
            call.args,
            call.timeout,
        )
        .await;
    let mut routed = match started {
        Ok(routed) => routed,
        Err(status) => return status_frame(id, &status),
    };
    while let Some(next) = routed.next().await {
        let data = match next {
            Ok(data) => data,
            Err(status) => return status_frame(id, &status),
        };
        // Wait until the client has room for it: a client that stops
        // reading pauses this call, not its others, and meanwhile holds no
        // module slot.
        match routed.wait_for_room(allowed.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            Ok(Err(_)) => return error_frame(id, Code::Internal, "flow control closed"),
            Err(status) => return status_frame(id, &status),
        }
        let _ = out.send(Outgoing::Frame(Frame::Item { id, data }));
    }
    Outgoing::Frame(Frame::End { id })
}
