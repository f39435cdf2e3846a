//! One HTTP/2 connection over the Unix socket.
//!
//! A `Client` is one connection and one session, so if the server goes
//! away calls fail with `Unavailable` instead of silently reconnecting to
//! some later server on which we hold no session.
//!
//! The generated gRPC clients drive hyper's HTTP/2 connection directly
//! ([`Connection`]) rather than through tonic's `Channel`: a `Channel`
//! queues every request through a buffer task (it exists for reconnecting
//! and load balancing, neither of which a single Unix socket needs), which
//! costs a task hand-off per call and about a tenth of the client's CPU per
//! call (`make bench`, CPU per call).

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;
use tonic::{
    body::BoxBody,
    codegen::http::{uri::PathAndQuery, Request, Response, Uri},
    Status,
};

/// Why a connection could not be made.
pub(crate) enum ConnectFailure {
    /// Nothing (usable) is listening: worth starting a server.
    NoServer(io::Error),
    /// Something is wrong that a new server would not fix.
    Fatal(io::Error),
}

/// The HTTP/2 connection to the server, as a service for the generated
/// gRPC clients. Cheap to clone; the connection closes when the last clone
/// is dropped and no call is running.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    send: SendRequest<BoxBody>,
}

/// Connects to `socket` and sets up the HTTP/2 connection.
pub(crate) async fn connect(socket: &Path) -> Result<Connection, ConnectFailure> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        if no_server(&e) {
            ConnectFailure::NoServer(e)
        } else {
            ConnectFailure::Fatal(e)
        }
    })?;
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        // The socket accepted but HTTP/2 did not come up: a server on its
        // way out. Starting another is the cure.
        .map_err(|e| ConnectFailure::NoServer(io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection to the norgopolis server ended: {e}");
        }
    });
    Ok(Connection { send })
}

/// A lost connection, as the status every call on it fails with.
fn lost(e: hyper::Error) -> Status {
    Status::unavailable(format!(
        "the connection to the norgopolis server was lost: {e}"
    ))
}

impl tower::Service<Request<BoxBody>> for Connection {
    type Response = Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.send.poll_ready(cx).map_err(lost)
    }

    fn call(&mut self, mut request: Request<BoxBody>) -> Self::Future {
        // HTTP/2 wants a scheme and an authority; the generated clients
        // give only the path (tonic's `Endpoint` would add the rest).
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority("norgopolis.local")
            .path_and_query(path)
            .build();
        match uri {
            Ok(uri) => *request.uri_mut() = uri,
            Err(e) => {
                let status = Status::internal(format!("bad request path: {e}"));
                return Box::pin(async move { Err(status) });
            }
        }
        let response = self.send.send_request(request);
        Box::pin(async move { response.await.map_err(lost) })
    }
}

/// Errors meaning "no server is listening there".
fn no_server(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof
    )
}
