//! The `on-failure` restart policy: when to try again, and when to stop.

use std::time::Duration;

/// Backoff and limits for restarting crashed modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart; each further one doubles it.
    pub base: Duration,
    /// The longest delay between two restarts.
    pub max_delay: Duration,
    /// Restarts in a row (without a stable run between them) before giving up.
    pub max_attempts: u32,
    /// A run this long counts as stable: the next crash starts a fresh series.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::with_base(Duration::from_millis(250))
    }
}

impl RestartPolicy {
    /// The default limits around a given first delay (tests shorten it).
    pub fn with_base(base: Duration) -> Self {
        RestartPolicy {
            base,
            max_delay: (base * 32).min(Duration::from_secs(30)).max(base),
            max_attempts: 5,
            stable_after: Duration::from_secs(30),
        }
    }

    /// Delay before restart number `attempt` (1-based) of a series.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Whether an exit (as described by the instance: "exit status N",
/// "killed by signal …") is a failure; a clean exit is the module's choice
/// and is never restarted.
pub fn is_failure(exit: &str) -> bool {
    exit != "exit status 0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RestartPolicy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_attempts: 10,
            stable_after: Duration::from_secs(1),
        };
        let ms: Vec<u128> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 500, 500, 500]);
        assert_eq!(p.delay(u32::MAX), p.max_delay);
    }

    #[test]
    fn default_series_is_bounded() {
        let p = RestartPolicy::default();
        let total: Duration = (1..=p.max_attempts).map(|a| p.delay(a)).sum();
        assert!(total <= Duration::from_secs(30), "{total:?}");
        assert!(p.max_delay >= p.base);
    }

    #[test]
    fn only_unclean_exits_are_failures() {
        assert!(!is_failure("exit status 0"));
        assert!(is_failure("exit status 1"));
        assert!(is_failure("killed by signal 9 (SIGKILL)"));
    }
}
