//! The recent module failures that `Status` reports: crashes, protocol
//! breakage and hangs, newest last, a bounded number of them.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use norgopolis_proto::v1::ModuleFailure;

/// How many failures are kept.
const KEEP: usize = 32;

/// A bounded log of module failures.
#[derive(Default)]
pub struct FailureLog {
    entries: Mutex<VecDeque<ModuleFailure>>,
}

impl FailureLog {
    /// Remembers a failure (and logs it), dropping the oldest beyond the bound.
    pub fn record(&self, module: &str, pid: u32, reason: &str) {
        tracing::warn!(module, pid, "module failed: {reason}");
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == KEEP {
            entries.pop_front();
        }
        entries.push_back(ModuleFailure {
            module: module.to_string(),
            pid,
            reason: reason.to_string(),
            at_unix_ms,
        });
    }

    /// The remembered failures, oldest first.
    pub fn recent(&self) -> Vec<ModuleFailure> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let log = FailureLog::default();
        for i in 0..(KEEP as u32 + 5) {
            log.record("m", i, "crashed");
        }
        let recent = log.recent();
        assert_eq!(recent.len(), KEEP);
        assert_eq!(recent[0].pid, 5);
        assert_eq!(recent[KEEP - 1].pid, KEEP as u32 + 4);
    }
}
