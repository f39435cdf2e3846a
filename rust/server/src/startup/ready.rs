//! The readiness pipe: how a spawning client learns, without guessing, that
//! the server is listening or why it failed; and the panic hook, which logs
//! a panic and, before the server is ready, tells the spawning client.

use std::{
    fs::File,
    io::Write,
    os::fd::{FromRawFd, RawFd},
    sync::Mutex,
};

/// The write end handed to us with `--ready-fd`, until the one report is
/// sent. Process-wide because the panic hook, which may run on any thread
/// at any moment, must be able to send that report too.
static PIPE: Mutex<Option<File>> = Mutex::new(None);

/// Handle to the readiness report (one per process). Each report closes
/// the pipe; later ones are dropped.
pub struct ReadyPipe(());

impl ReadyPipe {
    /// Takes ownership of `fd` and marks it close-on-exec so module processes
    /// never inherit it (they would keep the client waiting for EOF).
    pub fn from_fd(fd: Option<RawFd>) -> Self {
        if let Some(fd) = fd {
            // SAFETY: fcntl on an fd number has no memory effects; a bad fd just errors.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != -1 {
                // SAFETY: the spawner handed this fd to us for our exclusive use.
                let file = unsafe { File::from_raw_fd(fd) };
                *PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
            }
        }
        Self(())
    }

    /// Reports success: `ready <pid>`.
    pub fn ready(&mut self) {
        send(&format!("ready {}", std::process::id()));
    }

    /// Reports a failure; the message reaches the spawning client verbatim.
    pub fn fail(&mut self, message: &str) {
        send(&failure_line(message));
    }
}

/// Closes this process's copy of the pipe without reporting (for a forked
/// helper process, which must not keep the client waiting).
pub fn close_without_report() {
    drop(PIPE.lock().unwrap_or_else(|p| p.into_inner()).take());
}

fn failure_line(message: &str) -> String {
    format!("error {}", message.replace('\n', " "))
}

fn send(line: &str) {
    let file = PIPE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut f) = file {
        // The spawner may have given up already; nothing to do then.
        let _ = writeln!(f, "{line}");
    }
}

/// Installs the hook that logs every panic (to the log file once tracing
/// is set up, else to stderr) and, while nobody has been told that the
/// server is ready, reports it on the readiness pipe instead of leaving
/// the client with "exited before becoming ready".
pub fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload(), info.location());
        let backtrace = std::backtrace::Backtrace::capture();
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{message}\n{backtrace}");
        } else {
            eprintln!("norgopolis-server: {message}\n{backtrace}");
        }
        // try_lock: a panic while the pipe is being written must not
        // deadlock the hook.
        if let Ok(mut pipe) = PIPE.try_lock() {
            if let Some(mut f) = pipe.take() {
                let _ = writeln!(f, "{}", failure_line(&message));
            }
        }
    }));
}

/// "panicked at FILE:LINE: MESSAGE" (the payload is text for every
/// `panic!`, `unwrap` and overflow panic).
fn panic_message(
    payload: &(dyn std::any::Any + Send),
    location: Option<&std::panic::Location<'_>>,
) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    match location {
        Some(at) => format!(
            "internal error: the server panicked at {}:{}: {what}",
            at.file(),
            at.line()
        ),
        None => format!("internal error: the server panicked: {what}"),
    }
}
