//! The group guardian: a tiny process, forked at start, that kills every
//! module's process group once the server is gone, however it went.
//!
//! `PR_SET_PDEATHSIG` (spawner.rs) kills a module when a SIGKILLed server
//! cannot, but not what the module started: a helper it forked before
//! `exec`ing the real module lives on with ppid 1. The guardian holds the
//! read end of a pipe whose write end only the server has; the server
//! tells it each module's process group as it starts and ends. When the
//! pipe reaches EOF (the server exited or was killed, the kernel closes the
//! write end either way) the guardian SIGKILLs every group still listed.
//!
//! Fork, pipes and `kill` are POSIX: this works the same on Linux and
//! macOS. The guardian is a grandchild, reparented at once, so it is never
//! among the server's children (nor a zombie of it).

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader, Write},
    os::fd::{AsRawFd, OwnedFd},
    sync::{Mutex, OnceLock},
};

use nix::{
    sys::wait::waitpid,
    unistd::{fork, ForkResult},
};

/// The guardian's process name (`comm`), so that `ps` and `pgrep` tell it
/// from the server it watches.
#[cfg(target_os = "linux")]
const GUARDIAN_NAME: &str = "np-guardian";

/// The server's end of the pipe, once the guardian runs.
static TO_GUARDIAN: OnceLock<Mutex<File>> = OnceLock::new();

/// Forks the guardian. Must run while the process has one thread (a
/// forked child of a threaded process may not allocate). Without a
/// guardian modules still die with the server; only their helpers may not.
/// `in_child` runs first thing in the forked child, to let go of what the
/// guardian must not hold (the readiness pipe).
pub fn start(in_child: fn()) -> std::io::Result<()> {
    let (read, write) = nix::unistd::pipe()?;
    // Modules must not inherit the write end: the guardian would never see
    // EOF while one of them lives.
    set_cloexec(&write)?;
    // SAFETY: single-threaded here (see above), so the child may run any code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(write);
            in_child();
            // SAFETY: still single-threaded in this child.
            if let Ok(ForkResult::Parent { .. }) = unsafe { fork() } {
                // The middle process: its exit reparents the guardian.
                // SAFETY: _exit ends the process without running anything
                // of the server's (no destructors, no atexit handlers).
                unsafe { libc::_exit(0) };
            }
            guard(read);
        }
        ForkResult::Parent { child } => {
            drop(read);
            // The middle process exits at once; reap it.
            let _ = waitpid(child, None);
            let _ = TO_GUARDIAN.set(Mutex::new(File::from(write)));
            Ok(())
        }
    }
}

/// Tells the guardian that process group `pgid` (a module's) exists.
pub fn watch(pgid: u32) {
    tell('+', pgid);
}

/// Tells the guardian that group `pgid` is gone (killed and reaped), so
/// the number, which may be reused, is no longer killed.
pub fn forget(pgid: u32) {
    tell('-', pgid);
}

fn tell(op: char, pgid: u32) {
    if let Some(pipe) = TO_GUARDIAN.get() {
        let mut pipe = pipe.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(pipe, "{op}{pgid}") {
            tracing::warn!("cannot tell the group guardian about group {pgid}: {e}");
        }
    }
}

fn set_cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own has no memory effects.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The guardian's whole life: follow the list until EOF, then kill it.
fn guard(read: OwnedFd) -> ! {
    name_self();
    // Signals meant for the server's terminal or session are not for us:
    // we leave only when the server has.
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
        // SAFETY: setting a signal to SIG_IGN has no memory effects.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut groups = HashSet::new();
    for line in BufReader::new(File::from(read)).lines() {
        let Ok(line) = line else { break };
        apply(&mut groups, &line);
    }
    for pgid in groups {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // SAFETY: see above.
    unsafe { libc::_exit(0) }
}

/// Applies one "+PGID" or "-PGID" line to the list.
fn apply(groups: &mut HashSet<libc::pid_t>, line: &str) {
    let (op, number) = line.split_at(line.len().min(1));
    match (op, number.parse::<libc::pid_t>()) {
        // 0 and 1 would address our own group or everything we may signal.
        (_, Ok(pgid)) if pgid <= 1 => {}
        ("+", Ok(pgid)) => {
            groups.insert(pgid);
        }
        ("-", Ok(pgid)) => {
            groups.remove(&pgid);
        }
        _ => {}
    }
}

/// Renames this process to [`GUARDIAN_NAME`] where the OS allows it.
fn name_self() {
    #[cfg(target_os = "linux")]
    {
        let Ok(name) = std::ffi::CString::new(GUARDIAN_NAME) else {
            return;
        };
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated at
        // 16 bytes), which `name` is, and keeps no pointer to it.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_follows_the_lines() {
        let mut groups = HashSet::new();
        for line in [
            "+100", "+200", "-100", "+1", "+0", "+-5", "junk", "", "+300",
        ] {
            apply(&mut groups, line);
        }
        assert_eq!(groups, HashSet::from([200, 300]));
    }
}
