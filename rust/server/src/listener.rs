//! Owning the socket: the server lock, stale-socket removal, binding, the
//! pid file, and refusing peers of other users.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::Stream;
use norgopolis_common::Places;
use tokio::net::{UnixListener, UnixStream};

/// The bound socket plus the lock that makes us its only owner. Dropping it
/// removes the socket and pid file.
pub struct Bound {
    /// The listening socket.
    pub listener: UnixListener,
    places: Places,
    _lock: File,
}

impl Bound {
    /// Takes the server lock (waiting for an exiting server), removes a stale
    /// socket, binds, and writes the pid file.
    pub async fn acquire(places: &Places, lock_wait: Duration) -> anyhow::Result<Self> {
        places.ensure_dir()?;
        let lock = take_lock(places, lock_wait).await?;
        remove_stale_socket(&places.socket)?;
        // The pid file first: if it is squatted we refuse before a socket
        // exists that nobody would remove.
        write_pid_file(&places.pid_file)?;
        let listener = match UnixListener::bind(&places.socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&places.pid_file);
                return Err(e).with_context(|| format!("cannot bind {}", places.socket.display()));
            }
        };
        std::fs::set_permissions(&places.socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", places.socket.display()))?;
        Ok(Bound {
            listener,
            places: places.clone(),
            _lock: lock,
        })
    }

    /// Accepted connections from our own user; others are logged and dropped.
    pub fn incoming(
        self: &std::sync::Arc<Self>,
    ) -> impl Stream<Item = crate::serve::Accepted<UnixStream>> {
        let me = nix::unistd::geteuid().as_raw();
        futures::stream::unfold(self.clone(), move |bound| async move {
            loop {
                match bound.listener.accept().await {
                    Ok((stream, _)) => match stream.peer_cred() {
                        Ok(cred) if cred.uid() == me => {
                            let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
                            return Some(((stream, pid), bound));
                        }
                        Ok(cred) => {
                            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused connection from another user");
                        }
                        Err(e) => {
                            tracing::warn!("refused connection without peer credentials: {e}")
                        }
                    },
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.places.socket
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.places.socket);
        let _ = std::fs::remove_file(&self.places.pid_file);
    }
}

async fn take_lock(places: &Places, lock_wait: Duration) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&places.server_lock)
        .with_context(|| format!("cannot open {}", places.server_lock.display()))?;
    let start = Instant::now();
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err)
                .with_context(|| format!("cannot lock {}", places.server_lock.display()));
        }
        if start.elapsed() > lock_wait {
            let pid = std::fs::read_to_string(&places.pid_file).unwrap_or_default();
            bail!(
                "another norgopolis server (pid {}) is running on {}",
                pid.trim(),
                places.socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the lock held, an existing socket file is a dead server's: remove
/// it. Anything that is not a socket is refused, never followed or removed.
fn remove_stale_socket(socket: &PathBuf) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!("removing stale socket {}", socket.display());
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove {}", socket.display()))
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to touch it",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", socket.display())),
    }
}

fn write_pid_file(path: &Path) -> anyhow::Result<()> {
    // A squatted pid file (say, a symlink) is replaced, never followed.
    if std::fs::symlink_metadata(path)
        .map(|m| !m.is_file())
        .unwrap_or(false)
    {
        bail!(
            "{} exists and is not a regular file; refusing to touch it",
            path.display()
        );
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", std::process::id())?;
    Ok(())
}
