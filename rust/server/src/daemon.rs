//! Detaching from the spawner: fork, new session, stdio to the log.
//!
//! The server must outlive the Neovim (or script) that started it: Neovim
//! kills its jobs' process groups on exit and a terminal hang-up signals
//! the session, so the server moves into a session of its own.

use std::{fs::OpenOptions, os::fd::AsRawFd, path::Path};

use anyhow::Context;
use nix::unistd::{dup2, fork, setsid, ForkResult};

/// Logs bigger than this are rotated to `<log>.1` when a server starts.
const LOG_ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// Forks; the parent exits at once (the spawner reaps it), the child goes on
/// in a new session with stdin on /dev/null and stdout/stderr on the log.
/// Must run before any thread is started.
pub fn detach(log: &Path) -> anyhow::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log dir {}", dir.display()))?;
    }
    rotate(log);
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let null = OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;

    // SAFETY: called from main before the runtime or any other thread exists.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid failed")?;
    dup2(null.as_raw_fd(), 0).context("cannot redirect stdin")?;
    dup2(log_file.as_raw_fd(), 1).context("cannot redirect stdout")?;
    dup2(log_file.as_raw_fd(), 2).context("cannot redirect stderr")?;
    Ok(())
}

fn rotate(log: &Path) {
    if std::fs::metadata(log)
        .map(|m| m.len() > LOG_ROTATE_BYTES)
        .unwrap_or(false)
    {
        let mut old = log.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(log, old);
    }
}
