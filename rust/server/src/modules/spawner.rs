//! Starting module processes from one long-lived thread.
//!
//! Linux's parent-death signal fires when the *thread* that forked the child
//! exits, not the process; tokio's worker and blocking threads come and go,
//! so every module is forked from this dedicated thread, which lives as long
//! as the server. With PR_SET_PDEATHSIG a module dies with the server even
//! when the server is SIGKILLed and cannot clean up (on macOS a kqueue
//! watcher does that job, see `die_with_server`).

use std::{path::PathBuf, sync::mpsc as std_mpsc};

use tokio::{process::Child, sync::oneshot};

use super::manifest::Transport;

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// Module name (for NORGOPOLIS_MODULE).
    pub name: String,
    /// Executable.
    pub exec: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// The server's socket (for NORGOPOLIS_SOCKET).
    pub socket: PathBuf,
    /// The transport the module must speak (for NORGOPOLIS_TRANSPORT).
    pub transport: Transport,
}

type Job = (SpawnRequest, oneshot::Sender<std::io::Result<Child>>);

/// Handle to the spawner thread.
#[derive(Clone)]
pub struct Spawner {
    tx: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread; it enters the current tokio runtime so the children
    /// it creates are reaped by that runtime.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("module-spawner".into())
            .spawn(move || {
                let _guard = handle.enter();
                while let Ok((req, reply)) = rx.recv() {
                    let _ = reply.send(spawn(&req));
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Starts a module process with piped stdio.
    pub async fn spawn(&self, req: SpawnRequest) -> std::io::Result<Child> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((req, reply))
            .map_err(|_| std::io::Error::other("module spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("module spawner thread is gone"))?
    }
}

fn spawn(req: &SpawnRequest) -> std::io::Result<Child> {
    let server_pid = std::process::id() as libc::pid_t;
    let mut cmd = tokio::process::Command::new(&req.exec);
    cmd.args(&req.args)
        .env(norgopolis_common::places::MODULE_ENV, &req.name)
        .env(norgopolis_common::places::SOCKET_ENV, &req.socket)
        .env(
            norgopolis_common::places::TRANSPORT_ENV,
            req.transport.as_str(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Own process group: shutdown signals reach the module's children too.
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: only async-signal-safe calls (see die_with_server; getppid,
    // _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            die_with_server(server_pid)?;
            // The server may have died before the watch was set.
            if libc::getppid() != server_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Linux: the parent-death signal, from this long-lived thread (see the
/// module docs).
#[cfg(target_os = "linux")]
unsafe fn die_with_server(_server_pid: libc::pid_t) -> std::io::Result<()> {
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// macOS has no parent-death signal: a watcher process forked beside the
/// module waits (kqueue) for the server or the module to exit, and when the
/// server goes first it SIGKILLs the module's process group (itself
/// included).
#[cfg(target_os = "macos")]
unsafe fn die_with_server(server_pid: libc::pid_t) -> std::io::Result<()> {
    let module = libc::getpid();
    match libc::fork() {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            // Hold none of the module's descriptors: its pipes must close
            // when it exits, and std's exec-status pipe when it execs.
            for fd in 0..libc::getdtablesize() {
                libc::close(fd);
            }
            let watch = |pid: libc::pid_t| libc::kevent {
                ident: pid as libc::uintptr_t,
                filter: libc::EVFILT_PROC,
                flags: libc::EV_ADD | libc::EV_ONESHOT,
                fflags: libc::NOTE_EXIT,
                data: 0,
                udata: std::ptr::null_mut(),
            };
            let changes = [watch(server_pid), watch(module)];
            let mut fired = std::mem::zeroed::<libc::kevent>();
            let kq = libc::kqueue();
            let watching = kq >= 0
                && libc::kevent(
                    kq,
                    changes.as_ptr(),
                    2,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null(),
                ) == 0;
            let server_gone = if watching {
                libc::kevent(kq, std::ptr::null(), 0, &mut fired, 1, std::ptr::null()) == 1
                    && fired.ident == server_pid as libc::uintptr_t
            } else {
                libc::kill(server_pid, 0) == -1
            };
            if server_gone {
                libc::kill(-module, libc::SIGKILL);
            }
            libc::_exit(0)
        }
        _ => Ok(()),
    }
}

/// Elsewhere modules rely on their stdin closing when the server dies.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
unsafe fn die_with_server(_server_pid: libc::pid_t) -> std::io::Result<()> {
    Ok(())
}
