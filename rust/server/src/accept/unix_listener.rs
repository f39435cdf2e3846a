//! Owning the socket: the server lock, stale-socket removal, binding, the
//! pid file, re-creating a deleted socket, and refusing peers of other users.
//!
//! A socket file deleted while we run (a cleanup script, `rm -r` of the
//! runtime dir's contents) would leave us unreachable while the lock keeps
//! any new server from starting. So we look at the path every
//! [`SOCKET_CHECK_INTERVAL`] and bind it again if it is gone, as long as the
//! lock file there is still the one we hold (if that went too, a new server
//! may rightly start; we then only serve the sessions we have, and exit
//! when they end).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::Stream;
use norgopolis_common::{
    peer::{my_uid, peer_uid},
    Places,
};
use tokio::net::{UnixListener, UnixStream};

/// How often we check that our socket file is still there.
pub const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long we wait for a socket found at our path to accept a connection
/// (to learn whether it is live, and whose).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A file's identity on disk, to tell our socket from one put in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The socket we listen on, and which file at the path is it.
struct Listening {
    listener: Arc<UnixListener>,
    file: FileId,
}

/// The bound socket plus the lock that makes us its only owner. Dropping it
/// removes the socket (if it is still ours) and the pid file.
pub struct Bound {
    listening: Mutex<Listening>,
    places: Places,
    lock: File,
}

impl Bound {
    /// Takes the server lock (waiting for an exiting server), removes a stale
    /// socket, binds, and writes the pid file.
    pub async fn acquire(places: &Places, lock_wait: Duration) -> anyhow::Result<Self> {
        places.ensure_dir()?;
        let lock = take_lock(places, lock_wait).await?;
        remove_stale_socket(&places.socket).await?;
        // The pid file first: if it is squatted we refuse before a socket
        // exists that nobody would remove.
        write_pid_file(&places.pid_file)?;
        let listening = match bind(&places.socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&places.pid_file);
                return Err(e);
            }
        };
        Ok(Bound {
            listening: Mutex::new(listening),
            places: places.clone(),
            lock,
        })
    }

    /// Accepted connections from our own user; others are logged and dropped.
    /// Re-creates the socket if it is deleted meanwhile (see the module docs).
    pub fn incoming(
        self: &Arc<Self>,
    ) -> impl Stream<Item = crate::accept::connection::Accepted<UnixStream>> {
        let me = my_uid();
        let mut check = tokio::time::interval(SOCKET_CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        futures::stream::unfold(
            (self.clone(), check, Watch::default()),
            move |(bound, mut check, mut watch)| async move {
                loop {
                    let listener = bound.listener();
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = check.tick() => {
                            bound.keep_socket(&mut watch);
                            continue;
                        }
                    };
                    match accepted {
                        Ok((stream, _)) => match stream.peer_cred() {
                            Ok(cred) if cred.uid() == me => {
                                let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
                                return Some(((stream, pid), (bound, check, watch)));
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
            },
        )
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.places.socket
    }

    fn listener(&self) -> Arc<UnixListener> {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .listener
            .clone()
    }

    /// Binds the socket again if its file is gone and the lock file is
    /// still ours; says once (per change) when it cannot.
    fn keep_socket(&self, watch: &mut Watch) {
        let socket = &self.places.socket;
        let ours = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file;
        let seen = match std::fs::symlink_metadata(socket) {
            Ok(meta) if FileId::of(&meta) == ours => Seen::Ours,
            Ok(_) => Seen::Replaced,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        let outcome = match seen {
            Seen::Missing if !self.lock_is_at_its_path() => Seen::LockGone,
            Seen::Missing => match self.rebind() {
                Ok(()) => {
                    tracing::warn!("socket {} was deleted; bound it again", socket.display());
                    Seen::Ours
                }
                Err(e) => Seen::Unreadable(format!("{e:#}")),
            },
            other => other,
        };
        if outcome != watch.last {
            match &outcome {
                Seen::Ours | Seen::Missing => {}
                Seen::Replaced => tracing::warn!(
                    "socket {} was replaced by another file; leaving it alone (this server \
                     exits when its sessions end)",
                    socket.display()
                ),
                Seen::LockGone => tracing::warn!(
                    "socket {} and lock {} were deleted; a new server may start there, so this \
                     one will not bind again (it exits when its sessions end)",
                    socket.display(),
                    self.places.server_lock.display()
                ),
                Seen::Unreadable(e) => {
                    tracing::warn!("cannot keep socket {} in place: {e}", socket.display())
                }
            }
            watch.last = outcome;
        }
    }

    fn lock_is_at_its_path(&self) -> bool {
        let held = self.lock.metadata().map(|m| FileId::of(&m));
        let there = std::fs::symlink_metadata(&self.places.server_lock).map(|m| FileId::of(&m));
        matches!((held, there), (Ok(a), Ok(b)) if a == b)
    }

    fn rebind(&self) -> anyhow::Result<()> {
        let fresh = bind(&self.places.socket)?;
        // Clients that know us by the pid file (shutdown) find us again too.
        if !self.places.pid_file.exists() {
            write_pid_file(&self.places.pid_file)?;
        }
        *self.listening.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// What the last socket check found, so each change is logged once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Seen {
    #[default]
    Ours,
    Missing,
    Replaced,
    LockGone,
    Unreadable(String),
}

#[derive(Default)]
struct Watch {
    last: Seen,
}

impl Bound {
    /// Removes our socket (never one put in its place) and the pid file,
    /// keeping the lock: new clients stop finding us, while no new server
    /// can start until we are gone (our modules included). Idempotent.
    pub fn unlink(&self) {
        let ours = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file;
        let still_ours = std::fs::symlink_metadata(&self.places.socket)
            .map(|m| FileId::of(&m) == ours)
            .unwrap_or(false);
        if still_ours {
            let _ = std::fs::remove_file(&self.places.socket);
        }
        let pid_is_ours = std::fs::read_to_string(&self.places.pid_file)
            .is_ok_and(|p| p.trim() == std::process::id().to_string());
        if pid_is_ours {
            let _ = std::fs::remove_file(&self.places.pid_file);
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // The lock (a field) is released after this.
        self.unlink();
    }
}

/// Binds `socket` (mode 0600) and notes which file it made.
fn bind(socket: &Path) -> anyhow::Result<Listening> {
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", socket.display()))?;
    let meta = std::fs::symlink_metadata(socket)
        .with_context(|| format!("cannot inspect {}", socket.display()))?;
    Ok(Listening {
        listener: Arc::new(listener),
        file: FileId::of(&meta),
    })
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
    let mut socket_was_missing = false;
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
        // A holder on its way out removes its socket and then lets go of the
        // lock; one that binds its socket again (it was deleted) is staying,
        // and the client that started us is better off with it at once.
        let socket_exists = std::fs::symlink_metadata(&places.socket).is_ok();
        let rebound = socket_was_missing && socket_exists;
        socket_was_missing |= !socket_exists;
        if rebound || start.elapsed() > lock_wait {
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

/// With the lock held, an existing socket file of ours is a dead server's:
/// remove it. Anything that is not a socket, a socket file of another user,
/// and a socket another user's process listens on are refused, never
/// followed or removed.
async fn remove_stale_socket(socket: &Path) -> anyhow::Result<()> {
    let me = my_uid();
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if meta.uid() != me {
                bail!(
                    "{} belongs to uid {}, not to you (uid {me}); refusing to remove it \
                     (remove it yourself if it is stale)",
                    socket.display(),
                    meta.uid()
                );
            }
            if let Some(uid) = listener_uid(socket).await.filter(|&uid| uid != me) {
                bail!(
                    "{} is served by a process of uid {uid}, not by you (uid {me}); refusing to \
                     remove it (stop that process, or use another socket)",
                    socket.display()
                );
            }
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

/// The uid of whoever listens on `socket`, if anyone does. Nothing is sent.
async fn listener_uid(socket: &Path) -> Option<u32> {
    let stream = tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(socket))
        .await
        .ok()?
        .ok()?;
    peer_uid(&stream).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn places() -> (tempfile::TempDir, Places) {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tmp.path().join("rt");
        norgopolis_common::places::ensure_private_dir(&rt).unwrap();
        let places = Places::for_socket(rt.join("s.sock"));
        (tmp, places)
    }

    #[tokio::test]
    async fn a_deleted_socket_is_bound_again_and_a_replaced_one_left_alone() {
        let (_tmp, places) = places();
        let bound = Bound::acquire(&places, Duration::from_secs(1))
            .await
            .unwrap();
        let mut watch = Watch::default();
        std::fs::remove_file(&places.socket).unwrap();
        std::fs::remove_file(&places.pid_file).unwrap();
        bound.keep_socket(&mut watch);
        assert_eq!(watch.last, Seen::Ours);
        let _client = std::os::unix::net::UnixStream::connect(&places.socket).unwrap();
        assert!(places.pid_file.exists(), "pid file not written again");

        // Something else in its place is neither replaced nor removed.
        std::fs::remove_file(&places.socket).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&places.socket).unwrap();
        bound.keep_socket(&mut watch);
        assert_eq!(watch.last, Seen::Replaced);
        drop(bound);
        assert!(places.socket.exists(), "a socket not ours was removed");
    }

    #[tokio::test]
    async fn unlinking_keeps_the_lock_until_the_bound_socket_is_dropped() {
        let (_tmp, places) = places();
        let bound = Bound::acquire(&places, Duration::from_secs(1))
            .await
            .unwrap();
        bound.unlink();
        assert!(!places.socket.exists(), "socket left in place");
        assert!(!places.pid_file.exists(), "pid file left in place");
        // A successor waits for us (our modules stop in between).
        let err = Bound::acquire(&places, Duration::from_millis(100))
            .await
            .err()
            .expect("a second server started while the first held its lock");
        assert!(
            err.to_string().contains("another norgopolis server"),
            "{err}"
        );
        drop(bound);
        Bound::acquire(&places, Duration::from_secs(1))
            .await
            .expect("the lock is free once the first is gone");
    }

    #[tokio::test]
    async fn without_its_lock_file_the_socket_is_not_bound_again() {
        let (_tmp, places) = places();
        let bound = Bound::acquire(&places, Duration::from_secs(1))
            .await
            .unwrap();
        std::fs::remove_file(&places.socket).unwrap();
        std::fs::remove_file(&places.server_lock).unwrap();
        let mut watch = Watch::default();
        bound.keep_socket(&mut watch);
        assert_eq!(watch.last, Seen::LockGone);
        assert!(!places.socket.exists());
    }

    #[tokio::test]
    async fn a_dead_socket_of_ours_is_removed_one_of_another_user_kept() {
        let (_tmp, places) = places();
        drop(std::os::unix::net::UnixListener::bind(&places.socket).unwrap());
        remove_stale_socket(&places.socket).await.unwrap();
        assert!(!places.socket.exists());

        if !nix::unistd::geteuid().is_root() {
            return;
        }
        drop(std::os::unix::net::UnixListener::bind(&places.socket).unwrap());
        nix::unistd::chown(&places.socket, Some(65534.into()), None).unwrap();
        let err = remove_stale_socket(&places.socket).await.unwrap_err();
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
        assert!(places.socket.exists());
    }
}
