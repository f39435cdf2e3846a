//! One HTTP/2 connection over the Unix socket.
//!
//! A `Client` is one connection and one session, so if the server goes
//! away calls fail with `Unavailable` instead of silently reconnecting to
//! some later server on which we hold no session. The one exception is a
//! server that retires for a newer norgopolis: it says so, and the client
//! attaches to the successor (see `client.rs`).
//!
//! The generated gRPC clients run on the `h2` crate directly
//! ([`Connection`]), not on tonic's `Channel` or hyper's client: those queue
//! each request through a buffer task and then start one or two more tasks
//! per call, and send a call's headers and its arguments in separate writes
//! (so the server wakes twice). Here a call's headers and arguments are
//! queued together from the caller's own task and leave in one write.

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    task::{Context, Poll},
};

use h2::client::SendRequest;
use tonic::{
    body::BoxBody,
    codegen::{
        http::{uri::PathAndQuery, Request, Response, Uri},
        Bytes,
    },
    Status,
};

use crate::{
    body::{send_body, status_of, RecvBody},
    trust::{open_trusted, ConnectFailure},
};

/// Flow-control windows we grant the server (as hyper's client does), so
/// that large results stream without waiting for window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest frame the server may send us: a big result in few frames.
const MAX_FRAME: u32 = 1024 * 1024;

/// The HTTP/2 connection to the server, as a service for the generated
/// gRPC clients. Cheap to clone; the connection closes when the last clone
/// is dropped and no call is running.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    send: SendRequest<Bytes>,
}

/// Connects to `socket`, once it is known to be ours (see `trust`), and
/// sets up the HTTP/2 connection.
pub(crate) async fn connect(socket: &Path) -> Result<Connection, ConnectFailure> {
    let stream = open_trusted(socket).await?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .handshake::<_, Bytes>(stream)
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

impl tower_service::Service<Request<BoxBody>> for Connection {
    type Response = Response<RecvBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Every call readies its own handle (below): tonic reports a
        // failure here as "service was not ready" (Unknown), while one from
        // the call keeps our status (a lost connection is Unavailable).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<BoxBody>) -> Self::Future {
        let mut send = self.send.clone();
        let (mut head, body) = request.into_parts();
        // HTTP/2 wants a scheme and an authority; the generated clients
        // give only the path (tonic's `Endpoint` would add the rest).
        let path = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority("norgopolis.local")
            .path_and_query(path)
            .build();
        Box::pin(async move {
            head.uri = uri.map_err(|e| Status::internal(format!("bad request path: {e}")))?;
            std::future::poll_fn(|cx| send.poll_ready(cx))
                .await
                .map_err(status_of)?;
            let end = http_body::Body::is_end_stream(&body);
            let (response, stream) = send
                .send_request(Request::from_parts(head, ()), end)
                .map_err(status_of)?;
            let gone = if end {
                None
            } else {
                send_body(body, stream).await
            };
            let (head, recv) = response.await.map_err(status_of)?.into_parts();
            Ok(Response::from_parts(head, RecvBody::new(recv, gone)))
        })
    }
}
