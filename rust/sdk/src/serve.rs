//! Serving one HTTP/2 connection (the router's) over a reader and a writer.
//!
//! The public `norgopolis-module` crate hands tonic's server a one-item
//! stream of its stdio; we drive hyper's HTTP/2 server directly instead, so
//! that serving ends exactly when that one connection ends (stdin EOF)
//! rather than never. On the wire it is the same: HTTP/2 with prior
//! knowledge, gRPC framing, the same service path.

use std::{convert::Infallible, future::Future, sync::Arc};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use norgopolis_proto::module_communication::invoker_server::InvokerServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::codegen::Service as _;

use crate::{
    conn_probe::{ConnProbe, ProbedIo},
    service::{InvokerImpl, Registry},
    stream_probe::{StreamProbe, TrackedBody},
};

/// Serving the router's connection failed for a reason other than the
/// router closing it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The peer broke the HTTP/2 or gRPC protocol, or the transport failed.
    #[error("connection to the router failed: {0}")]
    Connection(#[source] hyper::Error),
    /// The router broke the lean transport's framing.
    #[error("lean connection to the router failed: {0}")]
    Lean(#[source] norgopolis_proto::lean_frame::FrameError),
    /// Taking over stdin/stdout failed (only from [`crate::Module::run`]).
    #[error("cannot use stdin/stdout as the router connection: {0}")]
    Stdio(#[source] std::io::Error),
}

/// Serves `registry` on one connection until the peer closes it (`Ok`),
/// `shutdown` resolves (`Ok`, in-flight calls are dropped) or the
/// connection fails.
pub(crate) async fn serve_connection<R, W, S>(
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
    let probe = ConnProbe::new();
    let io = TokioIo::new(ProbedIo::new(reader, writer, Arc::clone(&probe)));
    // The router decides how big a message may be; a module does not
    // second-guess it (tonic's default would refuse arguments over 4 MiB).
    let server = InvokerServer::new(InvokerImpl::new(registry, probe))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut server = server.clone();
        async move {
            let response = server.call(req).await?;
            let (mut parts, body) = response.into_parts();
            let stream = parts.extensions.remove::<Arc<StreamProbe>>();
            Ok::<_, Infallible>(http::Response::from_parts(
                parts,
                TrackedBody::new(body, stream),
            ))
        }
    });

    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // Like tonic's server: the router, not the module, limits concurrency.
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None);
    let connection = builder.serve_connection(io, service);

    tokio::select! {
        result = connection => match result {
            Ok(()) => Ok(()),
            Err(err) if peer_went_away(&err) => {
                tracing::debug!("router closed the connection: {err}");
                Ok(())
            }
            Err(err) => Err(ServeError::Connection(err)),
        },
        () = shutdown => Ok(()),
    }
}

/// Whether a connection error only means the router closed its end (stdin
/// EOF, possibly in the middle of a frame or with calls in flight, or a
/// broken stdout pipe): that is how the router asks a module to stop.
fn peer_went_away(err: &hyper::Error) -> bool {
    if err.is_closed() || err.is_incomplete_message() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::UnexpectedEof | K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted
            ) {
                return true;
            }
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if let Some(io) = h2.get_io() {
                use std::io::ErrorKind as K;
                if matches!(
                    io.kind(),
                    K::UnexpectedEof | K::BrokenPipe | K::ConnectionReset
                ) {
                    return true;
                }
            }
        }
        source = e.source();
    }
    false
}
