//! Serving the router over the lean transport (`norgopolis_proto::lean_frame`),
//! when it asks for it at spawn (`NORGOPOLIS_TRANSPORT=lean`).
//!
//! Calls run exactly as over gRPC (the same [`Registry::start_call`] and
//! response stream: own task, items first, then the outcome, panics as
//! `Internal`); each call's items go to one writer task that gathers what
//! is queued into one write. A `CANCEL` aborts the call's task, which drops
//! the handler, as a reset HTTP/2 stream does. A call sends no more items
//! than the router's `CREDIT` allows, so a caller that stops reading pauses
//! its own handler and no other call.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use norgopolis_proto::{
    lean_callee::{error_frame, within_deadline, CallTable},
    lean_frame::{self, Frame, FrameError, FrameReader, Incoming, Outgoing},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tonic::{codegen::tokio_stream::Stream, Code};

use crate::{emitter::ConnFlush, serve::ServeError, service::Registry};

/// Serves `registry` over lean frames until the router closes `reader`
/// (`Ok`), `shutdown` resolves (`Ok`) or the router breaks the protocol.
/// Calls still running are cancelled.
pub(crate) async fn serve_lean<R, W, S>(
    registry: Arc<Registry>,
    reader: R,
    writer: W,
    shutdown: S,
) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = ()>,
{
    // The router bounds what it sends by its own max_message_size.
    let frames = FrameReader::new(reader, u32::MAX as usize);
    serve_frames(registry, frames, writer, shutdown, Greet::Yes).await
}

/// Whether serving starts with the module's hello.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Greet {
    /// A spawned module: the router waits for the hello first.
    Yes,
    /// A provider: the greetings were exchanged before `PROVIDE`.
    No,
}

/// [`serve_lean`] over frames already being read (a provider's connection,
/// read past the router's answer to `PROVIDE`).
pub(crate) async fn serve_frames<R, W, S>(
    registry: Arc<Registry>,
    frames: FrameReader<R>,
    writer: W,
    shutdown: S,
    greet: Greet,
) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = ()>,
{
    let (out, rx) = mpsc::unbounded_channel();
    if greet == Greet::Yes {
        // The greeting goes first: the router checks it before anything else.
        let _ = out.send(Outgoing::Frame(Frame::Hello));
    }
    let mut writer = tokio::spawn(lean_frame::write_frames(rx, writer));
    let calls = CallTable::default();
    let served = read_calls(&registry, frames, &out, &calls);
    let result = tokio::select! {
        result = served => result,
        written = &mut writer => match written {
            Ok(Ok(())) => Ok(()),
            // A broken stdout pipe: the router went away.
            Ok(Err(FrameError::Io(err))) => {
                tracing::debug!("router stopped reading: {err}");
                Ok(())
            }
            Ok(Err(err)) => Err(ServeError::Lean(err)),
            Err(err) => Err(ServeError::Lean(FrameError::Io(std::io::Error::other(err)))),
        },
        () = shutdown => Ok(()),
    };
    calls.cancel_all();
    writer.abort();
    result
}

/// Reads the router's frames and acts on them until its end of the pipe
/// closes.
async fn read_calls<R: AsyncRead + Unpin>(
    registry: &Arc<Registry>,
    mut frames: FrameReader<R>,
    out: &mpsc::UnboundedSender<Outgoing>,
    calls: &CallTable,
) -> Result<(), ServeError> {
    loop {
        let frame = match frames.next().await {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(None) => return Ok(()),
            // Stdin closed in the middle of a frame: the router is gone.
            Err(FrameError::Truncated) => return Ok(()),
            Err(FrameError::Io(err)) => {
                tracing::debug!("router connection ended: {err}");
                return Ok(());
            }
            Ok(Some(Incoming::Oversized { len, .. })) => {
                return Err(ServeError::Lean(FrameError::Unencodable(len)))
            }
            Err(err) => return Err(ServeError::Lean(err)),
        };
        match frame {
            Frame::Call {
                id,
                function,
                args,
                deadline_ms,
            } => start(
                registry,
                id,
                function,
                &args,
                deadline_ms.map(Duration::from_millis),
                out,
                calls,
            ),
            Frame::Cancel { id } => {
                if calls.cancel(id) {
                    tracing::debug!(call = id, "caller went away; cancelling");
                }
            }
            Frame::Credit { id, items } => calls.grant(id, items),
            Frame::Ping { nonce } => {
                let _ = out.send(Outgoing::Frame(Frame::Pong { nonce }));
            }
            other => {
                return Err(ServeError::Lean(FrameError::Malformed {
                    what: "unexpected",
                    why: format!(
                        "the router sent a {} frame, which only modules send",
                        other.kind_name()
                    ),
                }))
            }
        }
    }
}

/// Starts call `id` in a task of its own, registered for cancellation.
fn start(
    registry: &Registry,
    id: u32,
    function: String,
    args: &[u8],
    deadline: Option<Duration>,
    out: &mpsc::UnboundedSender<Outgoing>,
    calls: &CallTable,
) {
    let name = function.clone();
    let (mut stream, probe) =
        match registry.start_call(function, args, ConnFlush::Lean(out.clone())) {
            Ok(started) => started,
            Err(err) => {
                let _ = out.send(error_frame(id, err.code(), err.message()));
                return;
            }
        };
    let items = out.clone();
    let out = out.clone();
    let registered = calls.clone();
    calls.start(id, |allowed| {
        let pump = async move {
            while let Some(next) = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
                let item = match next {
                    Ok(item) => item,
                    Err(status) => return error_frame(id, status.code(), status.message()),
                };
                // Wait until the router's caller has room for it: a slow
                // caller (or a router reading slowly) slows this call, not
                // the module's others, and bounds what it has queued
                // unwritten.
                match allowed.acquire().await {
                    Ok(permit) => permit.forget(),
                    // Never closed; were it, the call could not go on.
                    Err(_) => return error_frame(id, Code::Internal, "flow control closed"),
                }
                let _ = items.send(Outgoing::Frame(Frame::Item {
                    id,
                    data: item.data,
                }));
                probe.note_handed(probe.yielded());
            }
            Outgoing::Frame(Frame::End { id })
        };
        tokio::spawn(async move {
            let last = within_deadline(id, &name, deadline, pump).await;
            registered.finished(id);
            let _ = out.send(last);
        })
        .abort_handle()
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::{Emitter, Module};

    /// Sets its flag when dropped: the handler holding it was cancelled.
    struct DropFlag(Arc<AtomicBool>, Arc<tokio::sync::Notify>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            self.1.notify_one();
        }
    }

    async fn send<W: AsyncWrite + Unpin>(w: &mut W, frame: Frame) {
        let mut buf = Vec::new();
        lean_frame::encode(&frame, &mut buf).unwrap();
        w.write_all(&buf).await.unwrap();
    }

    async fn next<R: AsyncRead + Unpin>(r: &mut FrameReader<R>) -> Frame {
        match r.next().await.unwrap() {
            Some(Incoming::Frame(f)) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn calls_cancels_deadlines_pings_and_a_clean_end_at_eof() {
        let dropped = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (flag, woken) = (Arc::clone(&dropped), Arc::clone(&notify));
        let module = Module::new("t")
            .function("echo", |v: rmpv::Value| async move { Ok(v) })
            .function("wait", |(): ()| async move {
                std::future::pending::<()>().await;
                Ok(())
            })
            .stream("hold", move |(): (), out: Emitter| {
                let guard = DropFlag(Arc::clone(&flag), Arc::clone(&woken));
                async move {
                    let _guard = guard;
                    out.send(&1u8).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        let (router, io) = tokio::io::duplex(1 << 16);
        let (module_in, module_out) = tokio::io::split(io);
        let served =
            tokio::spawn(module.serve_lean_io_until(module_in, module_out, std::future::pending()));
        let (from_module, mut to_module) = tokio::io::split(router);
        let mut frames = FrameReader::new(from_module, 1 << 20);
        assert_eq!(next(&mut frames).await, Frame::Hello);

        send(
            &mut to_module,
            Frame::Call {
                id: 1,
                function: "echo".into(),
                args: vec![0x2a],
                deadline_ms: Some(60_000),
            },
        )
        .await;
        assert_eq!(
            next(&mut frames).await,
            Frame::Item {
                id: 1,
                data: vec![0x2a]
            }
        );
        assert_eq!(next(&mut frames).await, Frame::End { id: 1 });

        send(
            &mut to_module,
            Frame::Call {
                id: 2,
                function: "nope".into(),
                args: vec![],
                deadline_ms: None,
            },
        )
        .await;
        match next(&mut frames).await {
            Frame::Error {
                id: 2,
                code,
                message,
            } => {
                assert_eq!(code, Code::NotFound as i32);
                assert!(message.contains("has no function 'nope'"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        send(&mut to_module, Frame::Ping { nonce: 5 }).await;
        assert_eq!(next(&mut frames).await, Frame::Pong { nonce: 5 });

        send(
            &mut to_module,
            Frame::Call {
                id: 3,
                function: "hold".into(),
                args: vec![0xc0],
                deadline_ms: None,
            },
        )
        .await;
        assert_eq!(
            next(&mut frames).await,
            Frame::Item {
                id: 3,
                data: vec![1]
            }
        );
        let cancelled = notify.notified();
        send(&mut to_module, Frame::Cancel { id: 3 }).await;
        cancelled.await;
        assert!(dropped.load(Ordering::SeqCst));

        // The time the caller still waits bounds the call in the module too.
        send(
            &mut to_module,
            Frame::Call {
                id: 4,
                function: "wait".into(),
                args: vec![0xc0],
                deadline_ms: Some(1),
            },
        )
        .await;
        match next(&mut frames).await {
            Frame::Error { id: 4, code, .. } => assert_eq!(code, Code::DeadlineExceeded as i32),
            other => panic!("{other:?}"),
        }

        // The router closing its end is the module's cue to stop (both
        // halves: they share one stream).
        drop(to_module);
        drop(frames);
        served.await.unwrap().unwrap();
    }
}
