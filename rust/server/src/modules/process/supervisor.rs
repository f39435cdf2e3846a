//! A spawned module's supervisor: it drives the module's connection and
//! waits for its process; it stops the module gracefully when asked, fails
//! and kills it when the connection breaks or falls silent, and reports
//! how it ended.

use std::{sync::Arc, time::Duration};

use tokio::{
    process::Child,
    sync::{oneshot, watch, Semaphore},
};

use crate::modules::{
    failures::FailureLog,
    transport::{
        conn_end::{ConnEnd, ConnTask},
        stdio::CloseSignal,
    },
};

/// How a module process ended, in words ("exit status 3", "signal 9 (SIGKILL)").
pub type ExitInfo = String;

/// Everything the supervisor task owns.
pub struct Supervised {
    /// Module name, for logs and failures.
    pub name: String,
    /// Process id (and process group).
    pub pid: u32,
    /// The process, waited for here.
    pub child: Child,
    /// Drives the module connection; tells how it ended.
    pub conn: ConnTask,
    /// Fires when the server asks the module to stop.
    pub stop: oneshot::Receiver<()>,
    /// Raised to close the module's stdin and our end of its pipes.
    pub close: CloseSignal,
    /// Where how the module ended is reported.
    pub exit: watch::Sender<Option<ExitInfo>>,
    /// Where why the module failed is reported.
    pub failure: watch::Sender<Option<String>>,
    /// The instance's call slots, closed once the module is gone.
    pub slots: Arc<Semaphore>,
    /// Time given after stdin closes, and again after SIGTERM.
    pub grace: Duration,
    /// How long a ping may go unanswered (for the reason).
    pub ping_timeout: Duration,
    /// Where failures are remembered for `Status`.
    pub failures: Arc<FailureLog>,
}

impl Supervised {
    /// Marks the module failed: callers waiting in line and new ones are
    /// refused with the reason, and the process group is killed.
    fn fail(&self, reason: String) {
        self.failures.record(&self.name, self.pid, &reason);
        let _ = self.failure.send(Some(reason));
        self.slots.close();
        self.close.raise();
        signal_group(self.pid, libc::SIGKILL);
    }
}

/// Drives the connection and waits for the process; on a stop request
/// closes stdin, then escalates; on a broken or silent connection fails
/// the module and kills it.
pub async fn supervise(mut s: Supervised) {
    let mut asked = false;
    let status = tokio::select! {
        status = s.child.wait() => status,
        _ = &mut s.stop => {
            asked = true;
            stop_gracefully(&mut s).await
        }
        end = &mut s.conn => match end {
            ConnEnd::Asked => s.child.wait().await,
            ConnEnd::Closed(why) => {
                // Usually the module is exiting; give it the grace period.
                match tokio::time::timeout(s.grace, s.child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        s.fail(format!("closed its connection ({why}) but kept running"));
                        s.child.wait().await
                    }
                }
            }
            ConnEnd::Broken(why) => {
                s.fail(format!(
                    "wrote something that is not HTTP/2 to stdout ({why}); \
                     a stray print to stdout breaks the protocol"
                ));
                s.child.wait().await
            }
            ConnEnd::Garbled(why) => {
                s.fail(format!(
                    "wrote something that is not a lean frame to stdout ({why}); \
                     a stray print to stdout breaks the protocol"
                ));
                s.child.wait().await
            }
            ConnEnd::Flooded(why) => {
                s.fail(format!(
                    "sent more small result frames than its callers read ({why})"
                ));
                s.child.wait().await
            }
            ConnEnd::Unanswered => {
                s.fail(format!(
                    "stopped answering (no reply to a ping within {} ms)",
                    s.ping_timeout.as_millis()
                ));
                s.child.wait().await
            }
        },
    };
    // Whatever the module left behind in its group goes with it; the group
    // is then empty and its number free for reuse.
    signal_group(s.pid, libc::SIGKILL);
    super::guardian::forget(s.pid);
    let info = match &status {
        Ok(st) => describe(*st),
        Err(e) => format!("wait failed: {e}"),
    };
    let crashed =
        !asked && s.failure.borrow().is_none() && !matches!(&status, Ok(st) if st.success());
    if crashed {
        s.failures
            .record(&s.name, s.pid, &format!("exited ({info})"));
    }
    tracing::info!(module = %s.name, pid = s.pid, "module exited ({info})");
    s.close.raise();
    s.slots.close();
    let _ = s.exit.send(Some(info));
}

/// Stdin closed, then SIGTERM, then SIGKILL, each after the grace period.
async fn stop_gracefully(s: &mut Supervised) -> std::io::Result<std::process::ExitStatus> {
    s.close.raise();
    if let Ok(status) = tokio::time::timeout(s.grace, s.child.wait()).await {
        return status;
    }
    tracing::info!(module = %s.name, "did not exit after stdin closed; sending SIGTERM");
    signal_group(s.pid, libc::SIGTERM);
    if let Ok(status) = tokio::time::timeout(s.grace, s.child.wait()).await {
        return status;
    }
    tracing::warn!(module = %s.name, "ignored SIGTERM; sending SIGKILL");
    signal_group(s.pid, libc::SIGKILL);
    s.child.wait().await
}

/// Sends `signal` to the module's process group (its pid; 0 is no module).
pub fn signal_group(pid: u32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill has no memory effects; the group id is the module's pid
        // (process_group(0)), which we have not reaped yet or just reaped.
        unsafe { libc::kill(-(pid as libc::pid_t), signal) };
    }
}

/// How a process ended, in words (see [`ExitInfo`]).
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("?");
        format!("killed by signal {sig} ({name})")
    } else {
        status.to_string()
    }
}
