//! Serving each accepted connection, one task per peer: its opening bytes
//! tell gRPC (HTTP/2) from the lean transport, whose connections go to the
//! listener's [`LeanService`]; gRPC is served here.
//!
//! We drive hyper ourselves rather than through tonic's server so that
//! every request carries its connection's `Conn` (calls are limited per
//! connection), a peer that does not open with the HTTP/2 preface is
//! dropped at once (garbage, HTTP/1, port scanners) or after a short
//! silence, and the caller's `grpc-timeout` reaches the forwarder intact
//! (it enforces deadlines on the whole stream, not only on its first
//! response). Each listener admits connections through its
//! [`Admission`]: a capped number, each of which must start a call or a
//! session within `first_call_timeout`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tonic::service::Routes;

use crate::{
    accept::admission::{Admission, Admitted, Unstarted},
    accept::client_conn::{Conn, Connections},
    sessions::lifetime::ExitReason,
};

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A connection that has not sent the preface by then is dropped.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request header block accepted (gRPC headers are small).
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Connections refused over a listener's cap that are told why at once;
/// beyond these the refused are closed unanswered.
const REFUSALS_ANSWERED: usize = 8;
/// How long a refused connection is kept for telling it why.
const REFUSAL_TIME: Duration = Duration::from_secs(3);

/// Serves the connections that open with the lean transport's hello (the
/// lean calls service); given to [`serve`] so that accepting connections
/// does not depend on what is served on them.
pub trait LeanService<IO>: Clone + Send + Sync + 'static {
    /// Serves `io`, whose hello has been read, as `conn` until the client
    /// leaves or the exit is decided.
    fn serve(
        &self,
        io: IO,
        conn: Conn,
        shutdown: watch::Receiver<Option<ExitReason>>,
    ) -> impl Future<Output = ()> + Send;
}

/// How connections of one listener are served; `L` serves lean clients.
#[derive(Clone)]
pub struct ServeOptions<L> {
    /// "unix" or "tcp", for logs.
    pub transport: &'static str,
    /// HTTP/2 streams a peer may open at once. Above the per-connection call
    /// limit, so a caller over that limit gets a clear error rather than
    /// waiting silently for a stream.
    pub max_streams: u32,
    /// HTTP/2 ping interval; a peer silent for as long again is dropped.
    pub keepalive: Duration,
    /// Where clients may also speak the lean transport: what serves them.
    pub lean: Option<L>,
    /// Which connections this listener keeps.
    pub admission: Arc<Admission>,
    /// A connection that starts no call or session this long after it was
    /// accepted is closed.
    pub first_call_timeout: Duration,
}

/// An accepted connection and, where the transport tells, its peer's pid.
pub type Accepted<IO> = (IO, Option<u32>);

/// Serves `routes` on every connection `incoming` yields until `shutdown`
/// is decided, then lets open connections finish (the caller bounds that).
pub async fn serve<IO, I, L>(
    incoming: I,
    routes: Routes,
    options: ServeOptions<L>,
    connections: Arc<Connections>,
    mut shutdown: watch::Receiver<Option<ExitReason>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Stream<Item = Accepted<IO>>,
    L: LeanService<IO>,
{
    let options = Arc::new(options);
    let mut tasks = JoinSet::new();
    let mut incoming = Box::pin(incoming);
    let answering = Arc::new(Semaphore::new(REFUSALS_ANSWERED));
    loop {
        tokio::select! {
            _ = exiting(&mut shutdown) => break,
            io = incoming.next() => match io {
                Some((io, peer_pid)) => match options.admission.admit() {
                    Some(admitted) => {
                        tasks.spawn(connection(
                            io,
                            peer_pid,
                            admitted,
                            routes.clone(),
                            options.clone(),
                            connections.clone(),
                            shutdown.clone(),
                        ));
                    }
                    None => {
                        let why = options.admission.refused();
                        // Answering costs a task and the descriptor for a
                        // moment: only a few at a time, the rest are closed.
                        if let Ok(permit) = answering.clone().try_acquire_owned() {
                            let lean = options.lean.is_some();
                            tasks.spawn(async move {
                                refuse(io, why, lean).await;
                                drop(permit);
                            });
                        }
                    }
                },
                None => break,
            },
            // Reap finished connection tasks as we go.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Stop accepting now (the listener may own the socket file), then let
    // open connections finish.
    drop(incoming);
    while tasks.join_next().await.is_some() {}
}

/// Resolves once the exit has been decided (without holding the watch's lock).
async fn exiting(shutdown: &mut watch::Receiver<Option<ExitReason>>) {
    let _ = shutdown.wait_for(Option::is_some).await;
}

async fn connection<IO, L>(
    io: IO,
    peer_pid: Option<u32>,
    admitted: Admitted,
    routes: Routes,
    options: Arc<ServeOptions<L>>,
    connections: Arc<Connections>,
    mut shutdown: watch::Receiver<Option<ExitReason>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L: LeanService<IO>,
{
    let transport = options.transport;
    let first_call_by = Instant::now() + options.first_call_timeout;
    // Resolves only while the connection has started nothing: it is then
    // closed at once (no call can be lost).
    let unstarted = admitted.unstarted(first_call_by);
    tokio::pin!(unstarted);
    let opening = read_opening(io, options.lean.is_some());
    let opening = tokio::select! {
        why = &mut unstarted => return closed_unstarted(transport, why, &options),
        checked = tokio::time::timeout(PREFACE_TIMEOUT, opening) => match checked {
            Ok(Ok(opening)) => opening,
            Ok(Err(why)) => {
                tracing::debug!(transport, "dropped a connection: {why}");
                return;
            }
            Err(_) => {
                tracing::debug!(transport, "dropped a connection that sent nothing for {} s", PREFACE_TIMEOUT.as_secs());
                return;
            }
        },
        _ = exiting(&mut shutdown) => return,
    };
    let _open = connections.opened();
    let conn = Conn::new(connections.next_id(), peer_pid, admitted.setup());
    let id = conn.id;
    let io = match (opening, &options.lean) {
        (Opening::Http2(io), _) => io,
        (Opening::Lean(io), Some(lean)) => {
            tokio::select! {
                _ = lean.serve(io, conn, shutdown) => {}
                why = &mut unstarted => closed_unstarted(transport, why, &options),
            }
            return;
        }
        // Not accepted where lean is off: read_opening refused it.
        (Opening::Lean(_), None) => return,
    };
    let service = tower::ServiceBuilder::new()
        .map_request(move |request: http::Request<hyper::body::Incoming>| {
            // Any request counts: an Attach, a control call or a call.
            conn.mark_started();
            let mut request = request.map(tonic::body::boxed);
            request.extensions_mut().insert(conn.clone());
            request
        })
        .service(routes);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(options.keepalive)
        .keep_alive_timeout(options.keepalive)
        .max_concurrent_streams(options.max_streams)
        .max_header_list_size(MAX_HEADER_LIST);
    let served = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(transport, conn = id, "connection ended: {e}");
            }
        }
        why = &mut unstarted => closed_unstarted(transport, why, &options),
        _ = exiting(&mut shutdown) => {
            // GOAWAY: streams in flight finish, new ones are refused.
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}

/// Logs why a connection that started nothing is being closed.
fn closed_unstarted<L>(transport: &str, why: Unstarted, options: &ServeOptions<L>) {
    match why {
        Unstarted::Evicted => {
            tracing::debug!(
                transport,
                "closed an idle connection to make room for a new one"
            )
        }
        Unstarted::TimedOut => tracing::debug!(
            transport,
            "closed a connection that started no call within {} ms (first_call_timeout)",
            options.first_call_timeout.as_millis()
        ),
    }
}

/// Tells a connection refused over the listener's cap why: every gRPC call
/// it makes in the next moments fails with `ResourceExhausted` and `why`.
/// A lean client is simply closed (it then calls over its gRPC connection,
/// which is told).
async fn refuse<IO>(io: IO, why: String, lean: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(Ok(Opening::Http2(io))) =
        tokio::time::timeout(REFUSAL_TIME, read_opening(io, lean)).await
    else {
        return;
    };
    let answer = hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| {
        let status = tonic::Status::resource_exhausted(why.clone());
        async move { Ok::<_, std::convert::Infallible>(status.into_http()) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(4)
        .max_header_list_size(MAX_HEADER_LIST);
    let _ = tokio::time::timeout(
        REFUSAL_TIME,
        builder.serve_connection(TokioIo::new(io), answer),
    )
    .await;
}

/// How a client opened its connection.
enum Opening<IO> {
    /// With the HTTP/2 preface (gRPC); the stream replays it for hyper.
    Http2(Rewind<IO>),
    /// With the lean hello, which has been consumed.
    Lean(IO),
}

/// Reads and checks the opening bytes: the HTTP/2 preface, or the lean
/// transport's hello where `lean` is accepted. The two differ in their
/// first byte.
async fn read_opening<IO: AsyncRead + Unpin>(
    mut io: IO,
    lean: bool,
) -> Result<Opening<IO>, String> {
    let hello = norgopolis_proto::lean_frame::hello_bytes();
    let mut got = [0u8; PREFACE.len()];
    let mut expected: &[u8] = PREFACE;
    let mut filled = 0;
    while filled < expected.len() {
        // The first byte alone tells which opening to expect; no read goes
        // past its end (a lean client may send its first call right away).
        let want = if filled == 0 { 1 } else { expected.len() };
        let n = io
            .read(&mut got[filled..want])
            .await
            .map_err(|e| format!("read failed before the HTTP/2 preface: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed after {filled} bytes, before the HTTP/2 preface"
            ));
        }
        if filled == 0 && lean && got[0] == hello[0] {
            expected = &hello;
        }
        // Refuse as soon as the bytes differ: no need to wait for them all.
        if got[filled..filled + n] != expected[filled..filled + n] {
            return Err("not HTTP/2 (bad connection preface)".into());
        }
        filled += n;
    }
    if expected.len() == hello.len() {
        return Ok(Opening::Lean(io));
    }
    Ok(Opening::Http2(Rewind {
        replay: PREFACE.len(),
        io,
    }))
}

/// A stream whose first bytes (the already-read preface) are replayed.
struct Rewind<IO> {
    /// Bytes of the preface still to replay, counted from the end.
    replay: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.replay > 0 {
            let start = PREFACE.len() - self.replay;
            let n = self.replay.min(buf.remaining());
            buf.put_slice(&PREFACE[start..start + n]);
            self.replay -= n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn preface_is_checked_and_replayed() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(PREFACE).await.unwrap();
        a.write_all(b"rest").await.unwrap();
        let Ok(Opening::Http2(mut rewound)) = read_opening(b, true).await else {
            panic!("the preface was not recognised");
        };
        let mut out = vec![0u8; 28];
        rewound.read_exact(&mut out).await.unwrap();
        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..], b"rest");
    }

    #[tokio::test]
    async fn garbage_is_refused_at_the_first_bad_byte() {
        let (mut a, b) = tokio::io::duplex(64);
        // Not closed: the refusal must not wait for 24 bytes.
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let err = read_opening(b, true).await.err().unwrap();
        assert!(err.contains("not HTTP/2"), "{err}");
    }

    #[tokio::test]
    async fn truncated_preface_is_refused() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&PREFACE[..10]).await.unwrap();
        drop(a);
        let err = read_opening(b, true).await.err().unwrap();
        assert!(err.contains("closed after 10 bytes"), "{err}");
    }

    #[tokio::test]
    async fn the_lean_hello_is_recognised_and_nothing_after_it_is_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&norgopolis_proto::lean_frame::hello_bytes())
            .await
            .unwrap();
        a.write_all(b"next frame").await.unwrap();
        let Ok(Opening::Lean(mut rest)) = read_opening(b, true).await else {
            panic!("the lean hello was not recognised");
        };
        let mut out = vec![0u8; 10];
        rest.read_exact(&mut out).await.unwrap();
        assert_eq!(out, b"next frame");
    }

    #[tokio::test]
    async fn the_lean_hello_is_refused_where_lean_is_off() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&norgopolis_proto::lean_frame::hello_bytes())
            .await
            .unwrap();
        let err = read_opening(b, false).await.err().unwrap();
        assert!(err.contains("not HTTP/2"), "{err}");
    }
}
