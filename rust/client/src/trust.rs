//! Deciding whether the server at a socket path is ours, before a byte is
//! sent: every connection this crate opens (the gRPC one, the lean one,
//! and so those of modules' `router()`) comes from [`open_trusted`].
//!
//! Two checks, because either alone can be dodged: the socket's directory
//! must be private to us (a directory others can write to lets them put any
//! socket there, a symlink points wherever its owner likes), and the
//! process listening must run as our uid (the directory check cannot see
//! who bound a socket inside it, e.g. root acting for someone else).

use std::{io, path::Path};

use norgopolis_common::{
    peer::{my_uid, peer_uid},
    places::check_private_dir,
    PlacesError,
};
use tokio::net::UnixStream;

use crate::ClientError;

/// Why a connection could not be made.
pub(crate) enum ConnectFailure {
    /// Nothing (usable) is listening: worth starting a server.
    NoServer(io::Error),
    /// Something is wrong that a new server would not fix (including a
    /// server we do not trust).
    Fatal(ClientError),
}

/// Connects to `socket` if its directory is private to us and its
/// listener runs as our uid; nothing is written to the connection here.
pub(crate) async fn open_trusted(socket: &Path) -> Result<UnixStream, ConnectFailure> {
    check_socket_dir(socket)?;
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        if no_server(&e) {
            ConnectFailure::NoServer(e)
        } else {
            ConnectFailure::Fatal(ClientError::Connect {
                socket: socket.to_path_buf(),
                source: e,
            })
        }
    })?;
    check_peer(&stream, socket)?;
    Ok(stream)
}

/// Opens a connection to the server at `options`' socket (`socket()`,
/// else `$NORGOPOLIS_SOCKET`, else the runtime dir's), checked as every
/// connection of this crate is, without starting a server or writing
/// anything: for peers that speak the lean transport themselves (an
/// external module's provider). Returns the socket path with it.
pub async fn open_socket(
    options: &crate::ConnectOptions,
) -> Result<(std::path::PathBuf, UnixStream), ClientError> {
    let socket = match &options.socket {
        Some(s) => s.clone(),
        None => norgopolis_common::Places::from_env()?.socket,
    };
    match open_trusted(&socket).await {
        Ok(stream) => Ok((socket, stream)),
        Err(ConnectFailure::NoServer(source)) => Err(ClientError::Connect { socket, source }),
        Err(ConnectFailure::Fatal(e)) => Err(e),
    }
}

/// A missing directory only means no server has run there yet; any other
/// flaw is the caller's to fix, and is fatal.
fn check_socket_dir(socket: &Path) -> Result<(), ConnectFailure> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    match check_private_dir(dir) {
        Ok(()) => Ok(()),
        Err(PlacesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Err(ConnectFailure::NoServer(source))
        }
        Err(e) => Err(ConnectFailure::Fatal(e.into())),
    }
}

fn check_peer(stream: &UnixStream, socket: &Path) -> Result<(), ConnectFailure> {
    let me = my_uid();
    match peer_uid(stream) {
        Ok(uid) if uid == me => Ok(()),
        Ok(uid) => {
            tracing::warn!(
                socket = %socket.display(),
                uid,
                "refused a norgopolis server of another user"
            );
            Err(ConnectFailure::Fatal(ClientError::ForeignServer {
                socket: socket.to_path_buf(),
                uid,
                me,
            }))
        }
        Err(e) => Err(ConnectFailure::Fatal(ClientError::Connect {
            socket: socket.to_path_buf(),
            source: io::Error::new(
                e.kind(),
                format!("cannot tell who runs the server (peer credentials): {e}"),
            ),
        })),
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn private_dir() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    fn refusal(r: Result<UnixStream, ConnectFailure>) -> ClientError {
        match r {
            Err(ConnectFailure::Fatal(e)) => e,
            Err(ConnectFailure::NoServer(e)) => panic!("expected a refusal, got no server: {e}"),
            Ok(_) => panic!("expected a refusal, got a connection"),
        }
    }

    #[tokio::test]
    async fn our_own_listener_in_a_private_dir_is_trusted() {
        let t = private_dir();
        let socket = t.path().join("s.sock");
        let _l = tokio::net::UnixListener::bind(&socket).unwrap();
        assert!(open_trusted(&socket).await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_dir_or_socket_is_no_server() {
        let t = private_dir();
        for socket in [t.path().join("s.sock"), t.path().join("gone/s.sock")] {
            assert!(matches!(
                open_trusted(&socket).await,
                Err(ConnectFailure::NoServer(_))
            ));
        }
    }

    #[tokio::test]
    async fn an_open_dir_is_refused_before_connecting() {
        let t = private_dir();
        let socket = t.path().join("s.sock");
        let _l = tokio::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = refusal(open_trusted(&socket).await);
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert_eq!(err.code_name(), "FailedPrecondition");
    }

    #[tokio::test]
    async fn a_symlinked_dir_is_refused() {
        let t = private_dir();
        let real = t.path().join("real");
        norgopolis_common::places::ensure_private_dir(&real).unwrap();
        let _l = tokio::net::UnixListener::bind(real.join("s.sock")).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = refusal(open_trusted(&link.join("s.sock")).await);
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
