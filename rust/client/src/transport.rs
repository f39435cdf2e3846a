//! One HTTP/2 connection over the Unix socket.
//!
//! The connector hands out the stream we connected up front exactly once: a
//! `Client` is one connection and one session, so if the server goes away
//! calls fail with `Unavailable` instead of silently reconnecting to some
//! later server on which we hold no session.

use std::{
    io,
    path::Path,
    sync::{Arc, Mutex},
};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why a connection could not be made.
pub(crate) enum ConnectFailure {
    /// Nothing (usable) is listening: worth starting a server.
    NoServer(io::Error),
    /// Something is wrong that a new server would not fix.
    Fatal(io::Error),
}

/// Connects to `socket` and sets up the HTTP/2 channel.
pub(crate) async fn connect(socket: &Path) -> Result<Channel, ConnectFailure> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        if no_server(&e) {
            ConnectFailure::NoServer(e)
        } else {
            ConnectFailure::Fatal(e)
        }
    })?;
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_| {
        let stream = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            stream.map(TokioIo::new).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the connection to the norgopolis server was lost",
                )
            })
        }
    });
    Endpoint::from_static("http://norgopolis.local")
        .connect_with_connector(connector)
        .await
        // The socket accepted but HTTP/2 did not come up: a server on its
        // way out. Starting another is the cure.
        .map_err(|e| ConnectFailure::NoServer(io::Error::other(e)))
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
