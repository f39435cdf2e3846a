//! File descriptors as a budget: the open-file limit raised as far as it
//! goes at start, and how much of it each listener may take, so that peers
//! of the TCP listener can never use up the descriptors the owner's Unix
//! socket connections need.

use std::{fs::File, io};

/// Descriptors set aside for everything that is not a client connection:
/// the listeners, the log, lock and pid files, module pipes.
const OTHER_FDS: u64 = 64;

/// Smallest Unix-socket connection budget, however low the limit is: the
/// owner's own tools need a few connections to get in at all.
const MIN_UNIX_CONNECTIONS: u64 = 16;

/// Raises the soft `RLIMIT_NOFILE` to its hard limit (servers need many
/// descriptors; the default soft limit of 1,024 is for `select()`-era
/// programs). Returns the limit in force afterwards.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            let e = io::Error::last_os_error();
            tracing::warn!("cannot raise the open-file limit above {before}: {e}");
            return Ok(before);
        }
        tracing::info!(
            "raised the open-file limit from {before} to {}",
            limit.rlim_max
        );
    }
    Ok(limit.rlim_cur)
}

/// How the descriptors under the open-file limit are shared out.
#[derive(Clone, Copy, Debug)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` in force.
    pub limit: u64,
}

impl FdBudget {
    /// Most connections the Unix socket may hold: `configured`, but never
    /// more than half the limit minus what the server needs besides (the
    /// TCP listener stops at the other half, so the two together cannot
    /// run the server out of descriptors).
    pub fn unix_connections(&self, configured: u32) -> u32 {
        let budget = (self.limit / 2)
            .saturating_sub(OTHER_FDS)
            .max(MIN_UNIX_CONNECTIONS);
        u32::try_from(budget).map_or(configured, |b| configured.min(b))
    }

    /// Whether the TCP listener may take one more connection: only while
    /// the server uses less than half its descriptors, the rest being kept
    /// for the owner.
    pub fn tcp_may_accept(&self) -> bool {
        (open_fds() as u64) < self.limit / 2
    }
}

/// Descriptors this process has open now (it reads `/proc/self/fd`, so it
/// costs a directory listing: for rare events, such as TCP accepts).
pub fn open_fds() -> usize {
    // The listing's own descriptor is not counted.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// A descriptor held in reserve for accepting once the limit is reached:
/// closing it makes room to accept the waiting connection and drop it, so
/// the listener's queue drains instead of the accept loop spinning on
/// `EMFILE`.
pub struct SpareFd(Option<File>);

impl SpareFd {
    /// Opens the spare (`/dev/null`).
    pub fn new() -> Self {
        SpareFd(File::open("/dev/null").ok())
    }

    /// Frees the spare for one accept; [`SpareFd::restore`] takes it back.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes the spare descriptor again (after the accepted one is closed).
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

/// Whether an accept error means this process (or the system) is out of
/// descriptors.
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_budget_keeps_half_the_limit_and_a_margin() {
        let budget = FdBudget { limit: 1024 };
        assert_eq!(budget.unix_connections(1024), 448);
        assert_eq!(budget.unix_connections(100), 100);
        let tiny = FdBudget { limit: 64 };
        assert_eq!(tiny.unix_connections(1024), 16);
        let huge = FdBudget { limit: 1 << 40 };
        assert_eq!(huge.unix_connections(1024), 1024);
    }
}
