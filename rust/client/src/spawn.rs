//! Starting a detached server and waiting for its readiness line, under the
//! spawn lock so that concurrent clients start exactly one.
//!
//! Blocking waits (`flock`, reaping the server's short-lived parent) run on
//! plain detached threads rather than `spawn_blocking`: if we give up on one
//! at the deadline, a stuck blocking-pool thread would hold up the tokio
//! runtime's shutdown (and so the exit of a CLI), a detached thread does not.

use std::{
    ffi::OsString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, RawFd},
        unix::{fs::OpenOptionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::oneshot,
    time::{timeout_at, Instant},
};

use crate::{
    readiness::{parse_line, Readiness},
    ClientError,
};

/// The fd the server reads its `--ready-fd` from.
const READY_FD: RawFd = 3;
/// Longest readiness line we read; a real one is a few dozen bytes.
const MAX_READY_LINE: u64 = 64 * 1024;

/// Holds `flock(spawn.lock)` until dropped.
#[derive(Debug)]
pub(crate) struct SpawnLock {
    _file: File,
}

/// Takes the exclusive spawn lock, waiting at most until `deadline`.
pub(crate) async fn lock_spawn(path: &Path, deadline: Instant) -> Result<SpawnLock, ClientError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| spawn_error(format!("cannot open {}: {e}", path.display())))?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("norgopolis-spawn-lock".into())
        .spawn(move || {
            let res = flock_blocking(&file, libc::LOCK_EX).map(|()| file);
            // If the waiter gave up, the send fails and the file (and with
            // it the lock) is dropped right here.
            let _ = tx.send(res);
        })
        .map_err(|e| spawn_error(format!("cannot start a thread: {e}")))?;
    match timeout_at(deadline, rx).await {
        Ok(Ok(Ok(file))) => Ok(SpawnLock { _file: file }),
        Ok(Ok(Err(e))) => Err(spawn_error(format!("cannot lock {}: {e}", path.display()))),
        Ok(Err(_)) => Err(spawn_error(format!("cannot lock {}", path.display()))),
        Err(_) => Err(spawn_error(format!(
            "timed out waiting for {} (another client is starting the server)",
            path.display()
        ))),
    }
}

/// `flock(op)`, waiting as long as it takes (callers run it on a thread of
/// its own).
pub(crate) fn flock_blocking(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Longest `norgopolis-server --version` may take.
const VERSION_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The version `binary --version` reports (`norgopolis-server X`), or
/// `None` if it cannot be run or says something else. Run on a thread of
/// its own, so no SIGCHLD handler is installed (see the module docs).
pub(crate) async fn binary_version(binary: &Path) -> Option<String> {
    let mut cmd = Command::new(binary);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("norgopolis-version".into())
        .spawn(move || {
            let _ = tx.send(cmd.output());
        })
        .ok()?;
    let output = tokio::time::timeout(VERSION_PROBE_TIMEOUT, rx)
        .await
        .ok()?
        .ok()?
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.trim().strip_prefix("norgopolis-server ")?;
    Some(version.to_string())
}

/// What to start and how.
pub(crate) struct SpawnRequest<'a> {
    pub binary: &'a Path,
    /// Passed as `--socket` when set.
    pub socket: Option<&'a Path>,
    pub extra_args: &'a [OsString],
    pub deadline: Instant,
}

/// Starts the server (it daemonizes itself), reaps its short-lived parent
/// and waits for its readiness line. Returns the daemon's pid.
pub(crate) async fn spawn_server(req: SpawnRequest<'_>) -> Result<u32, ClientError> {
    let log_path = log_path_for(req.extra_args);
    let fail = |message: String| ClientError::Spawn {
        message,
        log_path: log_path.clone(),
    };
    let (read_end, write_end) =
        pipe_cloexec().map_err(|e| fail(format!("cannot create a pipe: {e}")))?;

    let mut cmd = Command::new(req.binary);
    cmd.arg("--ready-fd").arg(READY_FD.to_string());
    if let Some(socket) = req.socket {
        cmd.arg("--socket").arg(socket);
    }
    cmd.args(req.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let write_fd = write_end.as_raw_fd();
    let fd_limit = fd_limit();
    // SAFETY: the closure only makes async-signal-safe system calls
    // (setsid, dup2, fcntl, close_range) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || child_setup(write_fd, fd_limit));
    }
    tracing::debug!(binary = %req.binary.display(), "starting norgopolis server");
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", req.binary.display())))?;
    // Only the server may hold the write end now, so EOF means it is gone.
    drop(write_end);
    let parent = reap(child);

    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| fail(format!("cannot read the readiness pipe: {e}")))?;
    let mut reader = BufReader::new(receiver.take(MAX_READY_LINE));
    let mut line = String::new();
    let read = timeout_at(req.deadline, reader.read_line(&mut line)).await;
    match read {
        Err(_) => Err(fail(format!(
            "{} did not report ready in time",
            req.binary.display()
        ))),
        Ok(Err(e)) => Err(fail(format!("cannot read the readiness line: {e}"))),
        Ok(Ok(0)) => {
            // Say how the parent ended if it already has: a bad argument
            // or an exec failure shows up there.
            let how = match timeout_at(req.deadline, parent).await {
                Ok(Ok(Ok(status))) if !status.success() => format!(" ({status})"),
                _ => String::new(),
            };
            Err(fail(format!(
                "{} exited before becoming ready{how}",
                req.binary.display()
            )))
        }
        Ok(Ok(_)) => match parse_line(&line) {
            Readiness::Ready(pid) => Ok(pid),
            Readiness::Failed(msg) => Err(fail(msg)),
            Readiness::Garbled(l) => Err(fail(format!(
                "{} sent an unexpected readiness line: {l:?}",
                req.binary.display()
            ))),
        },
    }
}

/// Waits for the daemonizing parent on a detached thread, so it never stays
/// a zombie even if we stop listening.
fn reap(mut child: std::process::Child) -> oneshot::Receiver<io::Result<ExitStatus>> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("norgopolis-reap".into())
        .spawn(move || {
            let _ = tx.send(child.wait());
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to reap the server's parent: {e}");
    }
    rx
}

/// Runs in the forked child before exec: own session, the readiness pipe on
/// fd 3, and every other inherited fd closed on exec.
fn child_setup(write_fd: RawFd, fd_limit: RawFd) -> io::Result<()> {
    // SAFETY (all calls): plain system calls on fds of this process.
    unsafe {
        // The server daemonizes itself; a session of our own already closes
        // the window in which a terminal hang-up could reach it.
        libc::setsid();
        if write_fd == READY_FD {
            let flags = libc::fcntl(READY_FD, libc::F_GETFD);
            if flags == -1 || libc::fcntl(READY_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1
            {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(write_fd, READY_FD) == -1 {
            return Err(io::Error::last_os_error());
        }
        mark_cloexec_from(READY_FD + 1, fd_limit);
    }
    Ok(())
}

/// A pipe whose ends are closed on exec.
#[cfg(target_os = "linux")]
fn pipe_cloexec() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// A pipe whose ends are closed on exec (no pipe2 on macOS: set after).
#[cfg(not(target_os = "linux"))]
fn pipe_cloexec() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let (read_end, write_end) = nix::unistd::pipe()?;
    for fd in [&read_end, &write_end] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((read_end, write_end))
}

/// Marks every fd from `first` on close-on-exec (not closed: std's own
/// exec-error pipe must stay usable until exec).
unsafe fn mark_cloexec_from(first: RawFd, fd_limit: RawFd) {
    #[cfg(target_os = "linux")]
    {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
    }
    for fd in first..fd_limit {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags != -1 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Upper bound for the fd sweep fallback, computed before fork.
fn fd_limit() -> RawFd {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 0 {
        1024
    } else {
        n.min(65_536) as RawFd
    }
}

/// The log a spawned server writes to: its `--log` argument if we pass one,
/// otherwise the default.
fn log_path_for(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--log" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--log=")) {
            return Some(PathBuf::from(v));
        }
    }
    norgopolis_common::places::log_path().ok()
}

fn spawn_error(message: String) -> ClientError {
    ClientError::Spawn {
        message,
        log_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::PermissionsExt, time::Duration};

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("fake-server");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn request<'a>(bin: &'a Path, args: &'a [OsString]) -> SpawnRequest<'a> {
        SpawnRequest {
            binary: bin,
            socket: None,
            extra_args: args,
            deadline: Instant::now() + Duration::from_secs(20),
        }
    }

    #[test]
    fn log_arg_is_found() {
        let args: Vec<OsString> = vec![
            "--linger".into(),
            "1s".into(),
            "--log".into(),
            "/x/l".into(),
        ];
        assert_eq!(log_path_for(&args), Some(PathBuf::from("/x/l")));
        let args: Vec<OsString> = vec!["--log=/y/l".into()];
        assert_eq!(log_path_for(&args), Some(PathBuf::from("/y/l")));
    }

    #[tokio::test]
    async fn ready_line_on_fd_3_gives_the_pid() {
        let tmp = tempfile::tempdir().unwrap();
        // Checks the arguments, that fd 3 is the only extra fd, and stdio.
        let bin = script(
            tmp.path(),
            r#"[ "$1" = --ready-fd ] && [ "$2" = 3 ] || { echo "error bad args $*" >&3; exit 1; }
extra=$(ls /proc/self/fd | grep -v -x -e 0 -e 1 -e 2 -e 3 | wc -l)
# ls itself opens one fd for the directory listing.
[ "$extra" -le 1 ] || { echo "error leaked fds: $(ls -l /proc/$$/fd | tr '\n' ' ')" >&3; exit 1; }
echo "ready 4242" >&3"#,
        );
        // An fd opened without close-on-exec, as a host program might have
        // (above 3, which the child's readiness pipe takes).
        // SAFETY: duplicates stderr; closed below.
        let leaky = unsafe { libc::fcntl(2, libc::F_DUPFD, 10) };
        assert!(leaky >= 10);
        let args: Vec<OsString> = vec!["--log".into(), tmp.path().join("l").into()];
        let got = spawn_server(request(&bin, &args)).await;
        // SAFETY: our own dup.
        unsafe { libc::close(leaky) };
        assert_eq!(got.unwrap(), 4242);
    }

    #[tokio::test]
    async fn error_line_is_reported_with_the_log_path() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = script(tmp.path(), r#"echo "error cannot bind: denied" >&3"#);
        let log = tmp.path().join("server.log");
        let args: Vec<OsString> = vec!["--log".into(), log.clone().into()];
        let err = spawn_server(request(&bin, &args)).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot bind: denied"), "{msg}");
        assert!(msg.contains(&log.display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn death_before_ready_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = script(tmp.path(), "exit 3");
        let err = spawn_server(request(&bin, &[])).await.unwrap_err();
        assert!(
            err.to_string().contains("exited before becoming ready"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn spawn_lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("spawn.lock");
        let far = Instant::now() + Duration::from_secs(20);
        let first = lock_spawn(&path, far).await.unwrap();
        let waiter = {
            let path = path.clone();
            tokio::spawn(async move { lock_spawn(&path, far).await })
        };
        // The lock is held: a waiter with a deadline already passed fails.
        let err = lock_spawn(&path, Instant::now()).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
    }
}
