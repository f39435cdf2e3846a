//! Which connections a listener keeps: at most `cap` open at once, each
//! given `first_call_timeout` to start a call or a session.
//!
//! A connection that has started nothing yet ("unstarted") costs a
//! descriptor and does nothing for anyone, so when a newcomer finds the
//! listener full the oldest unstarted connection is closed to make room;
//! only when every open connection has started something is the newcomer
//! refused. A flood of idle connections therefore never locks out a
//! client that goes on to call.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Quiet time that ends a burst of refusals (see [`BurstLog`]).
const BURST_QUIET: Duration = Duration::from_secs(10);

const UNSTARTED: u8 = 0;
const STARTED: u8 = 1;
const CLOSING: u8 = 2;

/// Whether one connection has started a call or session yet.
#[derive(Debug, Default)]
pub struct Setup {
    state: AtomicU8,
    closed: Notify,
}

impl Setup {
    /// Records that the connection started a call or a session: from now
    /// on it is neither evicted nor closed by the first-call deadline.
    pub fn mark_started(&self) {
        if self.state.load(Ordering::Relaxed) == UNSTARTED {
            let _ = self.close_if(UNSTARTED, STARTED);
        }
    }

    /// Moves an unstarted connection to closing; false if it has started.
    fn close_unstarted(&self) -> bool {
        self.close_if(UNSTARTED, CLOSING)
    }

    fn close_if(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Why an unstarted connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unstarted {
    /// A newcomer needed its place.
    Evicted,
    /// It started nothing within `first_call_timeout`.
    TimedOut,
}

/// The connections of one listener.
pub struct Admission {
    /// "unix" or "tcp", for logs and errors.
    transport: &'static str,
    /// The config key that sets `cap`, named in errors.
    cap_key: &'static str,
    cap: u32,
    open: Mutex<BTreeMap<u64, Arc<Setup>>>,
    next_id: AtomicU64,
    /// Newcomers refused because every open connection had started.
    pub refusals: BurstLog,
    /// Unstarted connections closed for newcomers.
    pub evictions: BurstLog,
}

/// A place held by an open connection; dropping it frees the place.
pub struct Admitted {
    admission: Arc<Admission>,
    id: u64,
    setup: Arc<Setup>,
}

impl Admission {
    /// A listener's admission with at most `cap` connections, `cap_key`
    /// being the config key that sets it.
    pub fn new(transport: &'static str, cap_key: &'static str, cap: u32) -> Arc<Self> {
        Arc::new(Admission {
            transport,
            cap_key,
            cap: cap.max(1),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            refusals: BurstLog::default(),
            evictions: BurstLog::default(),
        })
    }

    /// Connections open on this listener.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().len()
    }

    /// Admits a new connection, closing the oldest unstarted one if the
    /// listener is full; `None` if it is full of started connections.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.lock();
        if open.len() >= self.cap as usize {
            let victim = open
                .iter()
                .find(|(_, setup)| setup.close_unstarted())
                .map(|(id, _)| *id)?;
            if let Some(setup) = open.remove(&victim) {
                setup.closed.notify_one();
            }
            if let Some(previous) = self.evictions.note() {
                tracing::warn!(
                    transport = self.transport,
                    "{} connections are open ({} in config.toml): closing the oldest that \
                     started no call for each newcomer; this is logged once per burst{}",
                    self.cap,
                    self.cap_key,
                    previous.describe()
                );
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let setup = Arc::new(Setup::default());
        open.insert(id, setup.clone());
        Some(Admitted {
            admission: self.clone(),
            id,
            setup,
        })
    }

    /// Records a refused newcomer (logged once per burst) and returns the
    /// error its calls get.
    pub fn refused(&self) -> String {
        if let Some(previous) = self.refusals.note() {
            tracing::warn!(
                transport = self.transport,
                "refusing connections: {} are open ({} in config.toml) and all have started \
                 calls; this is logged once per burst{}",
                self.cap,
                self.cap_key,
                previous.describe()
            );
        }
        format!(
            "too many connections to the server's {} listener: {} are open and busy \
             ({} in the server's config.toml); try again later",
            self.transport, self.cap, self.cap_key
        )
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Setup>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Admitted {
    /// The connection's setup state, for marking it started.
    pub fn setup(&self) -> Arc<Setup> {
        self.setup.clone()
    }

    /// Resolves if the connection has started nothing by `deadline`, or
    /// is evicted before; never once it has started.
    pub async fn unstarted(&self, deadline: Instant) -> Unstarted {
        let evicted = self.setup.closed.notified();
        tokio::select! {
            _ = evicted => return Unstarted::Evicted,
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        if self.setup.close_unstarted() {
            return Unstarted::TimedOut;
        }
        if self.setup.state.load(Ordering::Acquire) == CLOSING {
            // Evicted while the deadline passed.
            return Unstarted::Evicted;
        }
        // Started: it stays. An eviction can no longer pick it.
        std::future::pending().await
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.lock().remove(&self.id);
    }
}

/// Counts events of one kind so that a burst of them is logged once: the
/// first event after a quiet spell starts a burst.
#[derive(Default)]
pub struct BurstLog(Mutex<Option<Burst>>);

/// A burst of events.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    last: Instant,
    count: u64,
}

/// The burst a new one follows, if any, for the log line.
pub struct Previous(Option<Burst>);

impl Previous {
    /// " (the previous burst had N)" or nothing.
    pub fn describe(&self) -> String {
        match self.0 {
            Some(b) => format!(" (the previous burst had {})", b.count),
            None => String::new(),
        }
    }
}

impl BurstLog {
    /// Counts one event; `Some` when it starts a new burst, which the
    /// caller then logs.
    pub fn note(&self) -> Option<Previous> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, now: Instant) -> Option<Previous> {
        let mut burst = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match burst.as_mut() {
            Some(b) if now.saturating_duration_since(b.last) < BURST_QUIET => {
                b.count += 1;
                b.last = now;
                None
            }
            _ => {
                let previous = burst.replace(Burst {
                    last: now,
                    count: 1,
                });
                Some(Previous(previous))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_evicts_the_oldest_unstarted_connection() {
        let admission = Admission::new("test", "max_test", 3);
        let a = admission.admit().unwrap();
        let b = admission.admit().unwrap();
        let c = admission.admit().unwrap();
        a.setup().mark_started();
        // Full: b is the oldest unstarted.
        let d = admission.admit().unwrap();
        assert_eq!(admission.open(), 3);
        let state = |a: &Admitted| a.setup.state.load(Ordering::Relaxed);
        assert_eq!(state(&b), CLOSING, "b was not evicted");
        assert_eq!(state(&c), UNSTARTED, "c was evicted instead of b");
        drop((b, c));
        let _e = admission.admit().unwrap();
        d.setup().mark_started();
        let _f = admission.admit().unwrap();
        // a and d started, e and f unstarted: f evicts e; then all started.
        let g = admission.admit().unwrap();
        g.setup().mark_started();
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn a_listener_full_of_started_connections_refuses() {
        let admission = Admission::new("tcp", "max_tcp_connections", 1);
        let a = admission.admit().unwrap();
        a.setup().mark_started();
        assert!(admission.admit().is_none());
        let message = admission.refused();
        assert!(message.contains("max_tcp_connections"), "{message}");
        drop(a);
        assert!(admission.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unstarted_connection_times_out_and_a_started_one_does_not() {
        let admission = Admission::new("test", "max_test", 4);
        let idle = admission.admit().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(idle.unstarted(deadline).await, Unstarted::TimedOut);

        let busy = admission.admit().unwrap();
        busy.setup().mark_started();
        let waited = tokio::time::timeout(Duration::from_secs(60), busy.unstarted(deadline)).await;
        assert!(waited.is_err(), "a started connection was closed");
    }

    #[tokio::test]
    async fn eviction_wakes_the_evicted_connection() {
        let admission = Admission::new("test", "max_test", 1);
        let old = admission.admit().unwrap();
        let _new = admission.admit().unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(old.unstarted(far).await, Unstarted::Evicted);
    }

    #[test]
    fn bursts_are_logged_once() {
        let log = BurstLog::default();
        let t = Instant::now();
        assert!(log.note_at(t).is_some());
        for i in 1..100 {
            assert!(log.note_at(t + Duration::from_millis(i * 50)).is_none());
        }
        let later = t + Duration::from_secs(60);
        let previous = log.note_at(later).expect("a new burst");
        assert_eq!(previous.describe(), " (the previous burst had 100)");
    }
}
