//! The one task that decides when the server exits.
//!
//! Sessions opening and closing and the linger and idle timers are
//! serialised through this task, so "the last client leaves" and "a new
//! client arrives" can never race: every attach or call is either counted
//! before the exit decision (and cancels it) or refused after it (and the
//! client starts a fresh server).
//!
//! Calls are the hot path, so they do not wait for the task: they are
//! counted in one atomic word that also holds the "closing" bit. A call
//! starts only if that bit is clear, and the task decides to exit only by
//! setting it while the count is zero (one compare-and-swap), so a call
//! and the exit decision still cannot both win. The task hears of the
//! count going from zero to one and back (fire and forget) to run its
//! timers.
//!
//! Retiring (the upgrade handover, see `control.rs`) is an exit in two
//! steps: first new sessions and calls are refused with the retiring
//! message (so their clients know they were not run and take them to the
//! successor), while calls in flight go on and sessions are told; the exit
//! itself is decided when the last of those calls has ended and the last
//! session has left (its client saw the goodbye, so none of its calls can
//! arrive after the exit and be cut off unanswered), or when
//! [`RETIRE_DRAIN`] has passed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

/// Longest a retiring server waits for its calls in flight and its
/// sessions to leave before it exits anyway (a stuck call or client must
/// not hold the upgrade); such calls then end with the exit's usual drain
/// and the stop of their modules.
pub const RETIRE_DRAIN: Duration = Duration::from_secs(5);

/// Why the server is going away; sent to every session before it is dropped.
pub type ExitReason = String;

enum Msg {
    Open {
        keeps_alive: bool,
        reply: oneshot::Sender<Result<u64, Refused>>,
    },
    Close {
        id: u64,
        keeps_alive: bool,
    },
    /// The call count left zero or went back to it: look again.
    CallsChanged,
    Shutdown {
        reason: ExitReason,
    },
    /// Refuse sessions now; exit once calls in flight are done.
    Retire,
    Counts {
        reply: oneshot::Sender<Counts>,
    },
}

/// Current numbers, for `Status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Attached sessions (all kinds).
    pub sessions: u32,
    /// Calls in flight.
    pub calls: u32,
}

/// Calls in flight (low bits) and the closing flag, in one word so that
/// starting a call and deciding to exit are decided by one atomic each.
struct CallCount(AtomicU64);

const CLOSING: u64 = 1 << 63;

impl CallCount {
    /// Counts a call unless the exit has been decided; true if it was the
    /// first in flight.
    fn start(&self) -> Result<bool, ShuttingDown> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & CLOSING == 0).then_some(w + 1)
            })
            .map(|before| before == 0)
            .map_err(|_| ShuttingDown(None))
    }

    /// Uncounts a call; true if it was the last in flight.
    fn end(&self) -> bool {
        self.0.fetch_sub(1, Ordering::AcqRel) & !CLOSING == 1
    }

    /// Calls in flight.
    fn calls(&self) -> u32 {
        u32::try_from(self.0.load(Ordering::Acquire) & !CLOSING).unwrap_or(u32::MAX)
    }

    /// Decides to exit if no call is in flight (an idle exit).
    fn close_if_idle(&self) -> bool {
        self.0
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Decides to exit whatever runs (a requested shutdown).
    fn close(&self) {
        self.0.fetch_or(CLOSING, Ordering::AcqRel);
    }
}

/// Handle to the lifetime task; cheap to clone.
#[derive(Clone)]
pub struct Lifetime {
    tx: mpsc::UnboundedSender<Msg>,
    calls: Arc<CallCount>,
    exit: watch::Receiver<Option<ExitReason>>,
    /// The successor's version once retiring; set before calls are closed,
    /// so every refusal after that names it.
    retiring: Arc<watch::Sender<Option<String>>>,
}

/// An attached session; dropping it tells the lifetime task it left.
pub struct SessionGuard {
    id: u64,
    keeps_alive: bool,
    tx: mpsc::UnboundedSender<Msg>,
}

impl SessionGuard {
    /// The session's id, unique for this server's life.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Close {
            id: self.id,
            keeps_alive: self.keeps_alive,
        });
    }
}

/// A call in flight; dropping it marks the call finished.
pub struct CallGuard {
    calls: Arc<CallCount>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.calls.end() {
            let _ = self.tx.send(Msg::CallsChanged);
        }
    }
}

/// The server is exiting and takes no new sessions or calls; when it
/// retires for a newer version, that version.
#[derive(Debug, thiserror::Error)]
#[error("{}", match .0 {
    Some(successor) => norgopolis_common::version::retiring_message(successor),
    None => "server is shutting down".to_string(),
})]
pub struct ShuttingDown(Option<String>);

/// Why a session was not opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The server is exiting.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The server is retiring for the given (newer) version.
    #[error("{}", norgopolis_common::version::retiring_message(.0))]
    Retiring(String),
    /// `max_sessions` sessions are attached already.
    #[error("too many sessions: the limit of {0} (max_sessions in config.toml) is reached")]
    TooManySessions(u32),
}

impl Lifetime {
    /// Starts the lifetime task. `linger` applies once a session has been
    /// seen; `idle_timeout` to a server that never had one; at most
    /// `max_sessions` sessions are attached at once.
    pub fn start(linger: Duration, idle_timeout: Duration, max_sessions: u32) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        let calls = Arc::new(CallCount(AtomicU64::new(0)));
        let retiring = Arc::new(watch::channel(None).0);
        tokio::spawn(run(
            rx,
            calls.clone(),
            exit_tx,
            Timing {
                linger,
                idle_timeout,
                retire_drain: RETIRE_DRAIN,
            },
            max_sessions,
        ));
        Lifetime {
            tx,
            calls,
            exit,
            retiring,
        }
    }

    /// Registers a session; refused once the exit has been decided or
    /// when the session limit is reached.
    pub async fn open_session(&self, keeps_alive: bool) -> Result<SessionGuard, Refused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Open { keeps_alive, reply })
            .map_err(|_| Refused::ShuttingDown)?;
        let id = rx.await.map_err(|_| Refused::ShuttingDown)?.map_err(|e| {
            match (e, self.successor()) {
                (Refused::ShuttingDown, Some(successor)) => Refused::Retiring(successor),
                (e, _) => e,
            }
        })?;
        Ok(SessionGuard {
            id,
            keeps_alive,
            tx: self.tx.clone(),
        })
    }

    /// Registers a call; refused once the exit has been decided. Never
    /// waits for the lifetime task.
    pub async fn begin_call(&self) -> Result<CallGuard, ShuttingDown> {
        if self
            .calls
            .start()
            .map_err(|_| ShuttingDown(self.successor()))?
        {
            // Out of idleness: the task stops its timer.
            let _ = self.tx.send(Msg::CallsChanged);
        }
        Ok(CallGuard {
            calls: self.calls.clone(),
            tx: self.tx.clone(),
        })
    }

    /// Decides to exit now (the `Shutdown` call, a signal).
    pub fn shutdown(&self, reason: impl Into<ExitReason>) {
        // At once, so no call starts after this returns.
        self.calls.close();
        let _ = self.tx.send(Msg::Shutdown {
            reason: reason.into(),
        });
    }

    /// Starts retiring for `successor` (a newer version): from now on
    /// sessions and calls are refused with the retiring message, and the
    /// exit follows once the calls in flight are done (at most
    /// [`RETIRE_DRAIN`]). False if the server was already exiting or
    /// retiring.
    pub fn retire(&self, successor: &str) -> bool {
        if self.exit.borrow().is_some() {
            return false;
        }
        // The successor first, then the closing bit: a refused call always
        // finds the successor to name.
        let first = self.retiring.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(successor.to_string());
            }
            first
        });
        if !first {
            return false;
        }
        self.calls.close();
        let _ = self.tx.send(Msg::Retire);
        true
    }

    /// The version we retire for, once retiring.
    pub fn successor(&self) -> Option<String> {
        self.retiring.borrow().clone()
    }

    /// Watches for retirement: `Some(successor)` once it has begun.
    pub fn retire_watch(&self) -> watch::Receiver<Option<String>> {
        self.retiring.subscribe()
    }

    /// Current session and call counts.
    pub async fn counts(&self) -> Counts {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Counts { reply }).is_err() {
            return Counts::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Watches for the exit decision: `Some(reason)` once made.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit.clone()
    }
}

/// The lifetime task's timers.
struct Timing {
    linger: Duration,
    idle_timeout: Duration,
    retire_drain: Duration,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    call_count: Arc<CallCount>,
    exit: watch::Sender<Option<ExitReason>>,
    timing: Timing,
    max_sessions: u32,
) {
    let mut decider = Decider {
        deadline: Some(Instant::now() + timing.idle_timeout),
        call_count,
        exit,
        timing,
        max_sessions,
        retire_by: None,
        next_id: 1,
        sessions: 0,
        keeping_sessions: 0,
        had_session: false,
        closing: false,
    };
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = sleep_until(decider.retire_by) => {
                decider.retire_drain_passed();
                continue;
            }
            _ = sleep_until(decider.deadline) => {
                decider.deadline_passed();
                continue;
            }
        };
        let Some(msg) = msg else { return };
        if decider.handle(msg) {
            decider.settle();
        }
    }
}

/// The lifetime task's state: sessions, timers and whether the exit (or
/// retirement) has begun.
struct Decider {
    call_count: Arc<CallCount>,
    exit: watch::Sender<Option<ExitReason>>,
    timing: Timing,
    max_sessions: u32,
    /// Set while retiring: when to exit even with calls still running.
    retire_by: Option<Instant>,
    next_id: u64,
    sessions: u32,
    keeping_sessions: u32,
    had_session: bool,
    closing: bool,
    /// When the linger or idle timeout runs out, if it runs.
    deadline: Option<Instant>,
}

impl Decider {
    /// Retiring took too long: exit with the calls still running.
    fn retire_drain_passed(&mut self) {
        self.retire_by = None;
        let reason = format!(
            "retired for a newer norgopolis with {} calls still running after {} ms",
            self.call_count.calls(),
            self.timing.retire_drain.as_millis()
        );
        tracing::warn!("exiting: {reason}");
        let _ = self.exit.send(Some(reason));
    }

    /// The linger or idle timeout ran out: exit unless a call just started.
    fn deadline_passed(&mut self) {
        if !self.call_count.close_if_idle() {
            // A call started just now; its CallsChanged is on the way and
            // will set the timer again when it ends.
            self.deadline = None;
            return;
        }
        let reason = if self.had_session {
            format!("last client left {} ms ago", self.timing.linger.as_millis())
        } else {
            format!("no client for {} s", self.timing.idle_timeout.as_secs())
        };
        tracing::info!("exiting: {reason}");
        self.closing = true;
        self.deadline = None;
        let _ = self.exit.send(Some(reason));
    }

    /// Acts on one message; true when sessions or calls may have changed,
    /// so that the retirement and the timers must be looked at again.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Open { keeps_alive, reply } => return self.open(keeps_alive, reply),
            Msg::Close { id, keeps_alive } => {
                self.sessions = self.sessions.saturating_sub(1);
                if keeps_alive {
                    self.keeping_sessions = self.keeping_sessions.saturating_sub(1);
                }
                tracing::debug!(session = id, "session closed");
            }
            Msg::CallsChanged => {}
            Msg::Retire => {
                if !self.closing {
                    self.closing = true;
                    self.deadline = None;
                    self.retire_by = Some(Instant::now() + self.timing.retire_drain);
                    tracing::info!(
                        calls = self.call_count.calls(),
                        "retiring for a newer norgopolis: refusing new sessions and calls"
                    );
                }
            }
            Msg::Shutdown { reason } => {
                if !self.closing || self.retire_by.is_some() {
                    tracing::info!("exiting: {reason}");
                    self.closing = true;
                    self.deadline = None;
                    self.retire_by = None;
                    let _ = self.exit.send(Some(reason));
                }
                return false;
            }
            Msg::Counts { reply } => {
                let calls = self.call_count.calls();
                let _ = reply.send(Counts {
                    sessions: self.sessions,
                    calls,
                });
                return false;
            }
        }
        true
    }

    /// Opens a session unless exiting or full; true if one was counted.
    fn open(&mut self, keeps_alive: bool, reply: oneshot::Sender<Result<u64, Refused>>) -> bool {
        if self.closing {
            let _ = reply.send(Err(Refused::ShuttingDown));
            return false;
        }
        if self.sessions >= self.max_sessions {
            let _ = reply.send(Err(Refused::TooManySessions(self.max_sessions)));
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sessions += 1;
        if keeps_alive {
            self.keeping_sessions += 1;
            self.had_session = true;
        }
        if reply.send(Ok(id)).is_err() {
            // The attach gave up before hearing back; its guard was never
            // built, so undo the count here.
            self.sessions -= 1;
            self.keeping_sessions -= u32::from(keeps_alive);
        }
        true
    }

    /// Completes a retirement whose calls and sessions are all gone, and
    /// (unless exiting) starts, keeps or stops the linger/idle timer.
    fn settle(&mut self) {
        if self.retire_by.is_some() && self.call_count.calls() == 0 && self.sessions == 0 {
            // The last call in flight is done and every client has seen the
            // goodbye (see attach.rs): the retirement is complete.
            self.retire_by = None;
            let reason = "retired for a newer norgopolis".to_string();
            tracing::info!("exiting: {reason}");
            let _ = self.exit.send(Some(reason));
        }
        if self.closing {
            return;
        }
        let idle = self.keeping_sessions == 0 && self.call_count.calls() == 0;
        let Timing {
            linger,
            idle_timeout,
            ..
        } = self.timing;
        self.deadline = match (idle, self.deadline) {
            // Still idle: keep the running timer, except that a finished call
            // restarts the idle timeout of a server that never had a session.
            (true, Some(d)) if self.had_session => Some(d),
            (true, _) => Some(
                Instant::now()
                    + if self.had_session {
                        linger
                    } else {
                        idle_timeout
                    },
            ),
            (false, _) => None,
        };
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn linger_starts_when_last_session_leaves() {
        let life = Lifetime::start(Duration::from_secs(3), Duration::from_secs(300), 8);
        let mut exit = life.exit_watch();
        let s = life.open_session(true).await.unwrap();
        tokio::time::sleep(Duration::from_secs(400)).await;
        assert!(exit.borrow().is_none(), "exited with a session attached");
        drop(s);
        exit.changed().await.unwrap();
        assert!(exit
            .borrow()
            .as_deref()
            .unwrap()
            .contains("last client left"));
    }

    #[tokio::test(start_paused = true)]
    async fn attach_during_linger_cancels_it() {
        let life = Lifetime::start(Duration::from_secs(3), Duration::from_secs(300), 8);
        drop(life.open_session(true).await.unwrap());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = life.open_session(true).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(life.exit_watch().borrow().is_none());
        drop(s);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_hold_the_server() {
        let life = Lifetime::start(Duration::from_secs(1), Duration::from_secs(300), 8);
        let s = life.open_session(true).await.unwrap();
        let call = life.begin_call().await.unwrap();
        drop(s);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(life.exit_watch().borrow().is_none());
        drop(call);
        life.exit_watch().changed().await.unwrap();
    }

    #[test]
    fn the_exit_decision_and_a_call_start_cannot_both_win() {
        let count = CallCount(AtomicU64::new(0));
        assert!(count.start().unwrap(), "first call in flight");
        assert!(!count.close_if_idle(), "closed with a call in flight");
        assert!(!count.start().unwrap());
        assert!(!count.end());
        assert!(count.end(), "last call out");
        assert!(count.close_if_idle());
        assert!(count.start().is_err(), "call started after the decision");
        assert_eq!(count.calls(), 0);
        // A requested shutdown closes with calls in flight; they still end.
        let count = CallCount(AtomicU64::new(0));
        count.start().unwrap();
        count.close();
        assert!(count.start().is_err());
        assert_eq!(count.calls(), 1);
        assert!(count.end());
        assert_eq!(count.calls(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_racing_the_linger_are_either_counted_or_refused() {
        let life = Lifetime::start(Duration::from_micros(50), Duration::from_secs(300), 8);
        drop(life.open_session(true).await.unwrap());
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let life = life.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20_000 {
                    let Ok(call) = life.begin_call().await else {
                        return;
                    };
                    // An idle exit decided while a call is counted would
                    // abandon that call.
                    tokio::task::yield_now().await;
                    assert!(
                        life.exit_watch().borrow().is_none(),
                        "idle exit decided with a call in flight"
                    );
                    drop(call);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Whether or not the linger ran out between calls, it runs out now.
        let mut exit = life.exit_watch();
        exit.wait_for(Option::is_some).await.unwrap();
        assert!(life.begin_call().await.is_err());
        assert_eq!(life.counts().await.calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_over_the_limit_are_refused_until_one_leaves() {
        let life = Lifetime::start(Duration::from_secs(1), Duration::from_secs(300), 2);
        let a = life.open_session(true).await.unwrap();
        let _b = life.open_session(false).await.unwrap();
        assert!(matches!(
            life.open_session(true).await,
            Err(Refused::TooManySessions(2))
        ));
        drop(a);
        life.open_session(true).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn non_keeping_sessions_do_not_hold_the_server() {
        let life = Lifetime::start(Duration::from_secs(1), Duration::from_secs(5), 8);
        let _module_session = life.open_session(false).await.unwrap();
        life.exit_watch().changed().await.unwrap();
        assert!(
            life.open_session(true).await.is_err(),
            "attach accepted after exit decision"
        );
        assert!(
            life.begin_call().await.is_err(),
            "call accepted after exit decision"
        );
    }

    /// Waits for the exit decision and returns its reason.
    async fn exit_reason(life: &Lifetime) -> ExitReason {
        let mut exit = life.exit_watch();
        let reason = exit.wait_for(Option::is_some).await.unwrap();
        reason.clone().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retiring_refuses_newcomers_and_exits_when_calls_and_sessions_have_left() {
        let life = Lifetime::start(Duration::from_secs(3), Duration::from_secs(300), 8);
        let session = life.open_session(true).await.unwrap();
        let call = life.begin_call().await.unwrap();
        let started = Instant::now();
        assert!(life.retire("9.0.0"));
        assert!(!life.retire("9.0.1"), "retired twice");
        let refused = life.begin_call().await.err().unwrap().to_string();
        assert!(
            norgopolis_common::version::is_retiring(&refused),
            "{refused}"
        );
        assert!(refused.contains("9.0.0"), "{refused}");
        assert!(matches!(
            life.open_session(true).await,
            Err(Refused::Retiring(s)) if s == "9.0.0"
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            life.exit_watch().borrow().is_none(),
            "exited with a call in flight"
        );
        drop(call);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            life.exit_watch().borrow().is_none(),
            "exited before the session's client had seen the goodbye"
        );
        drop(session);
        let reason = exit_reason(&life).await;
        assert_eq!(reason, "retired for a newer norgopolis");
        assert!(Instant::now() < started + RETIRE_DRAIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_call_holds_a_retirement_for_the_drain_limit_only() {
        let life = Lifetime::start(Duration::from_secs(3), Duration::from_secs(300), 8);
        let _stuck = life.begin_call().await.unwrap();
        let started = Instant::now();
        assert!(life.retire("9.0.0"));
        let reason = exit_reason(&life).await;
        assert_eq!(started.elapsed(), RETIRE_DRAIN);
        assert!(reason.contains("1 calls still running"), "{reason}");
    }
}
