//! Calls over the lean transport: a second connection to the server that
//! carries calls as lean frames (`norgopolis_proto::lean_frame`) instead of
//! gRPC over HTTP/2, which costs both ends far less CPU per call. The
//! session and control calls stay on the HTTP/2 connection.
//!
//! We greet first; the server answers with its own hello. A server that
//! does not (an older one, or another implementation) is left to gRPC.

use std::{
    path::Path,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use norgopolis_proto::{
    lean_caller::{CallStream, Caller, KeepAlive},
    lean_frame::{self, Frame, FrameError, FrameReader, Incoming},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    task::JoinHandle,
};
use tonic::Status;

use crate::{
    lean_writer::DirectWriter,
    limits::MAX_MESSAGE_SIZE,
    trust::{open_trusted, ConnectFailure},
    ClientError,
};

/// The lean connection; calls hold it too, so it stays open while any
/// runs, and closes when the last holder goes.
pub(crate) struct LeanConn {
    caller: Caller,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl LeanConn {
    /// Whether calls can still start here (else the client uses gRPC).
    pub(crate) fn is_open(&self) -> bool {
        self.caller.is_open()
    }
}

impl Drop for LeanConn {
    fn drop(&mut self) {
        self.caller.close();
        self.reader.abort();
        self.writer.abort();
    }
}

/// Why no lean connection was made (the client then calls over gRPC).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeanRefused {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The socket's directory or listener failed the trust checks (the
    /// socket changed hands after the session was made): nothing was sent.
    #[error("{0}")]
    Untrusted(ClientError),
    #[error("the server did not answer the lean hello within {} ms", .0.as_millis())]
    Silent(Duration),
    #[error("the server answered the lean hello with {0:?}")]
    Wrong(Vec<u8>),
}

/// Opens a lean connection to the server at `socket`. While calls wait on
/// it, the server is pinged; one silent for `server_timeout` fails them.
pub(crate) async fn connect(
    socket: &Path,
    patience: Duration,
    server_timeout: Duration,
) -> Result<LeanConn, LeanRefused> {
    let mut stream = open_trusted(socket).await.map_err(|e| match e {
        ConnectFailure::NoServer(e) => LeanRefused::Io(e),
        ConnectFailure::Fatal(e) => LeanRefused::Untrusted(e),
    })?;
    let hello = lean_frame::hello_bytes();
    stream.write_all(&hello).await?;
    let mut answer = vec![0u8; hello.len()];
    tokio::time::timeout(patience, stream.read_exact(&mut answer))
        .await
        .map_err(|_| LeanRefused::Silent(patience))??;
    if answer != hello {
        return Err(LeanRefused::Wrong(answer));
    }
    // Reading stays with tokio; writing goes straight from the sending
    // thread through a second handle on the socket (see `lean_writer`).
    let stream = stream.into_std()?;
    let (out, writer) = DirectWriter::start(stream.try_clone()?)?;
    let frames = FrameReader::new(UnixStream::from_std(stream)?, MAX_MESSAGE_SIZE);
    let caller = Caller::new(out.clone(), "the norgopolis server");
    let keep_alive = KeepAlive {
        interval: server_timeout / 2,
        timeout: server_timeout,
        when_idle: false,
    };
    let watched = caller.clone();
    let reader = tokio::spawn(async move {
        tokio::select! {
            () = dispatch(frames, watched.clone()) => {}
            () = watched.keep_alive(keep_alive) => {
                let why = format!(
                    "the norgopolis server did not answer for {} ms while calls waited on it \
                     (is it stopped or stuck? its log may tell)",
                    server_timeout.as_millis()
                );
                tracing::warn!("{why}");
                watched.close_because(why);
            }
        }
        // The server learns we are gone, and stops what it ran for us.
        out.shutdown();
    });
    Ok(LeanConn {
        caller,
        reader,
        writer,
    })
}

/// Hands the server's frames to their calls until the connection ends,
/// then fails the calls still open.
async fn dispatch(mut frames: FrameReader<UnixStream>, caller: Caller) {
    let ended = loop {
        let frame = match frames.next().await {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::Oversized { id, len })) => {
                let status = Status::resource_exhausted(format!(
                    "the server sent a result of {len} bytes, over this client's limit of \
                     {MAX_MESSAGE_SIZE} bytes"
                ));
                caller.fail(id, status).await;
                continue;
            }
            Ok(None) => break "the server closed it".to_string(),
            Err(FrameError::Io(e)) => break e.to_string(),
            Err(e) => break e.to_string(),
        };
        match caller.dispatch(frame).await {
            None => {}
            Some(other) => {
                break format!(
                    "the server sent a {} frame, which servers do not send",
                    other.kind_name()
                )
            }
        }
    };
    tracing::debug!("lean connection to the server ended: {ended}");
    caller.close();
}

/// Starts a call of `module.function` on `conn`.
pub(crate) fn invoke(
    conn: &Arc<LeanConn>,
    module: &str,
    function: &str,
    args: Vec<u8>,
) -> Result<LeanCall, ClientError> {
    let stream = conn
        .caller
        .start(|id| Frame::Route {
            id,
            module: module.to_string(),
            function: function.to_string(),
            args,
            deadline_ms: None,
        })
        .map_err(|_| {
            ClientError::from(Status::unavailable(
                "the connection to the norgopolis server is closed",
            ))
        })?;
    Ok(LeanCall {
        stream,
        _conn: conn.clone(),
    })
}

/// One call's results; keeps the connection open while it runs. Dropping
/// it before the end cancels the call.
pub(crate) struct LeanCall {
    stream: CallStream,
    _conn: Arc<LeanConn>,
}

impl LeanCall {
    /// The next result, `None` after the last.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Vec<u8>, Status>>> {
        self.stream.poll_message(cx).map(Result::transpose)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn an_untrusted_socket_gets_no_lean_hello() {
        let t = tempfile::tempdir().unwrap();
        let socket = t.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let second = Duration::from_secs(1);
        let refused = connect(&socket, second, second).await.err();
        assert!(
            matches!(refused, Some(LeanRefused::Untrusted(_))),
            "{refused:?}"
        );
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "the client connected");
    }
}
