//! Waiting for a server to be gone, by its lock rather than by polling: the
//! server holds `flock(server.lock)` for its whole life, so the lock comes
//! free exactly when it has exited.

use std::{io, os::fd::AsRawFd, path::Path, time::Duration};

use norgopolis_common::Places;
use tokio::{sync::oneshot, time::timeout};

use crate::{spawn::flock_blocking, ClientError};

/// Whether a server holds the lock of `places` right now.
pub(crate) fn lock_is_held(places: &Places) -> bool {
    let Ok(file) = std::fs::File::open(&places.server_lock) else {
        return false;
    };
    // SAFETY: flock on an fd we own; the lock goes away with `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Waits until no server holds the lock of `socket`, at most `limit`.
/// Returns false if one still does when time is up.
pub async fn wait_for_server_exit(socket: &Path, limit: Duration) -> Result<bool, ClientError> {
    let lock_path = Places::for_socket(socket.to_path_buf()).server_lock;
    let file = match std::fs::File::open(&lock_path) {
        Ok(f) => f,
        // No lock file: no server ever ran there.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(ClientError::Connect {
                socket: lock_path,
                source,
            })
        }
    };
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("norgopolis-exit-wait".into())
        .spawn(move || {
            // Shared is enough to know no server holds it exclusively; the
            // lock goes away with `file` right after.
            let _ = tx.send(flock_blocking(&file, libc::LOCK_SH));
        })
        .map_err(|source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    match timeout(limit, rx).await {
        Ok(Ok(Ok(()))) => Ok(true),
        Ok(Ok(Err(source))) => Err(ClientError::Connect {
            socket: lock_path,
            source,
        }),
        Ok(Err(_)) | Err(_) => Ok(false),
    }
}
