//! The readiness pipe: how a spawning client learns, without guessing, that
//! the server is listening or why it failed.

use std::{
    fs::File,
    io::Write,
    os::fd::{FromRawFd, RawFd},
};

/// The write end handed to us with `--ready-fd`, if any. Each report closes it.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// Takes ownership of `fd` and marks it close-on-exec so module processes
    /// never inherit it (they would keep the client waiting for EOF).
    pub fn from_fd(fd: Option<RawFd>) -> Self {
        let Some(fd) = fd else { return Self(None) };
        // SAFETY: fcntl on an fd number has no memory effects; a bad fd just errors.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Self(None);
        }
        // SAFETY: the spawner handed this fd to us for our exclusive use.
        Self(Some(unsafe { File::from_raw_fd(fd) }))
    }

    /// Reports success: `ready <pid>`.
    pub fn ready(&mut self) {
        self.send(&format!("ready {}", std::process::id()));
    }

    /// Reports a failure; the message reaches the spawning client verbatim.
    pub fn fail(&mut self, message: &str) {
        self.send(&format!("error {}", message.replace('\n', " ")));
    }

    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            // The spawner may have given up already; nothing to do then.
            let _ = writeln!(f, "{line}");
        }
    }
}
