//! Detaching from the spawner: fork, new session, stdio to the log.
//!
//! The server must outlive the Neovim (or script) that started it: Neovim
//! kills its jobs' process groups on exit and a terminal hang-up signals
//! the session, so the server moves into a session of its own.

use std::{fs::OpenOptions, os::fd::AsRawFd, path::Path};

use anyhow::Context;
use nix::unistd::{dup2, fork, setsid, ForkResult};

use crate::startup::logfile::RotatingLog;

/// Opens the log (rotated at `max_log` bytes), forks; the parent exits at
/// once (the spawner reaps it), the child goes on in a new session with
/// stdin on /dev/null and stdout/stderr on the log, and gets the log to
/// write its records to. Must run before any thread is started.
pub fn detach(log: &Path, max_log: u64) -> anyhow::Result<RotatingLog> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log dir {}", dir.display()))?;
    }
    let log_file = RotatingLog::open(log, max_log)
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
    log_file
        .capture_stdio()
        .context("cannot redirect stdout and stderr to the log")?;
    Ok(log_file)
}
