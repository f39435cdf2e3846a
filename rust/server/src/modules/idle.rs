//! Idle unload: a module whose manifest says `idle_unload = "10m"` is
//! stopped after that long without calls, and the next call starts it
//! again.
//!
//! Every call holds a [`Busy`] from before it waits for a module slot
//! until its last result (a stream open is a call in flight), so a module
//! is never stopped under a call. Retiring and starting a call decide
//! under one lock: a call that finds its instance retired looks the module
//! up again, which starts a fresh process.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

/// A module instance's calls, as far as idleness is concerned.
pub struct Activity {
    state: Mutex<State>,
}

struct State {
    /// Calls begun and not yet ended.
    calls: u32,
    /// When the last call ended (or the instance started).
    last: Instant,
    /// Stopped for idleness: no call may begin.
    retired: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            state: Mutex::new(State {
                calls: 0,
                last: Instant::now(),
                retired: false,
            }),
        }
    }
}

/// One call counted as activity; dropping it ends the call.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.calls = state.calls.saturating_sub(1);
        state.last = Instant::now();
    }
}

impl Activity {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call, unless the instance was retired for idleness (then
    /// the caller must look the module up again).
    pub fn begin(self: &Arc<Self>) -> Option<Busy> {
        let mut state = self.state();
        if state.retired {
            return None;
        }
        state.calls += 1;
        Some(Busy(self.clone()))
    }

    /// Whether the instance was retired for idleness.
    pub fn retired(&self) -> bool {
        self.state().retired
    }

    /// Retires the instance if no call ran for `after`; otherwise the
    /// earliest moment that may have changed.
    fn try_retire(&self, after: Duration) -> Result<(), Instant> {
        let mut state = self.state();
        let now = Instant::now();
        if state.calls > 0 {
            return Err(now + after);
        }
        let due = state.last + after;
        if now < due {
            return Err(due);
        }
        state.retired = true;
        Ok(())
    }
}

/// Waits until `activity` has been idle for `after` and retires it, then
/// runs `stop`; returns early, doing nothing, when `ended` completes (the
/// process exited some other way).
pub async fn unload_when_idle<S, E>(
    activity: Arc<Activity>,
    after: Duration,
    ended: E,
    stop: impl FnOnce() -> S,
) where
    S: std::future::Future<Output = ()>,
    E: std::future::Future<Output = ()>,
{
    let mut ended = std::pin::pin!(ended);
    loop {
        match activity.try_retire(after) {
            Ok(()) => return stop().await,
            Err(next) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = &mut ended => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retires_only_after_a_quiet_period_without_calls() {
        let activity = Arc::new(Activity::default());
        let after = Duration::from_secs(10);
        assert!(activity.try_retire(after).is_err(), "just started");
        let busy = activity.begin().unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(activity.try_retire(after).is_err(), "a call is open");
        drop(busy);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(activity.try_retire(after).is_err(), "quiet for 9 s only");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(activity.try_retire(after).is_ok());
        assert!(activity.retired());
        assert!(
            activity.begin().is_none(),
            "no call begins on a retired instance"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_stops_once_and_not_after_an_exit() {
        let activity = Arc::new(Activity::default());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stopped.clone();
        unload_when_idle(
            activity.clone(),
            Duration::from_secs(5),
            std::future::pending(),
            || async move {
                s.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        )
        .await;
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));

        let activity = Arc::new(Activity::default());
        let _busy = activity.begin();
        unload_when_idle(
            activity.clone(),
            Duration::from_secs(5),
            async {},
            || async {
                panic!("stopped an instance that had exited");
            },
        )
        .await;
        assert!(!activity.retired());
    }
}
