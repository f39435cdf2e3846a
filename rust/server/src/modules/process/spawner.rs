//! Starting module processes from one long-lived thread.
//!
//! Linux's parent-death signal fires when the *thread* that forked the child
//! exits, not the process; tokio's worker and blocking threads come and go,
//! so every module is forked from this dedicated thread, which lives as long
//! as the server. With PR_SET_PDEATHSIG (Linux only) a module dies with
//! the server even when the server is SIGKILLed and cannot clean up; what
//! the module itself started (and, on macOS, the module too) is left to the
//! group guardian (guardian.rs), told here of each module's process group.

use std::{path::PathBuf, sync::mpsc as std_mpsc};

use tokio::{process::Child, sync::oneshot};

use norgopolis_catalog::manifest::Transport;

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
    /// Its configuration, a JSON object (for NORGOPOLIS_MODULE_CONFIG).
    pub config: String,
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
    let mut cmd = tokio::process::Command::new(&req.exec);
    cmd.args(&req.args)
        .env(norgopolis_common::places::MODULE_ENV, &req.name)
        .env(norgopolis_common::places::SOCKET_ENV, &req.socket)
        .env(
            norgopolis_common::places::TRANSPORT_ENV,
            req.transport.as_str(),
        )
        .env(norgopolis_common::places::MODULE_CONFIG_ENV, &req.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Own process group: shutdown signals reach the module's children too.
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    die_with_the_spawner(&mut cmd);
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        super::guardian::watch(pid);
    }
    Ok(child)
}

/// Linux: the module gets SIGKILL the moment the server (this thread) dies.
#[cfg(target_os = "linux")]
fn die_with_the_spawner(cmd: &mut tokio::process::Command) {
    let server_pid = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The server may have died between fork and prctl.
            if libc::getppid() != server_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Elsewhere (macOS has no parent-death signal): the group guardian, which
/// kills the module's whole process group once the server is gone, is
/// what takes the module down with a killed server.
#[cfg(not(target_os = "linux"))]
fn die_with_the_spawner(_cmd: &mut tokio::process::Command) {}
