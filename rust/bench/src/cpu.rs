//! CPU time and context switches per call, per process.
//!
//! Latency on a shared 2-core machine moves with whatever else runs; the
//! CPU a call costs each process does not, so it is the figure to compare
//! before and after a change. Read from every thread's
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU) and `status`
//! (context switches).

use std::future::Future;

use serde::Serialize;

/// CPU used by one process so far (all live threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Nanoseconds on CPU.
    pub cpu_ns: u64,
    /// Voluntary plus involuntary context switches.
    pub switches: u64,
}

impl Usage {
    /// Sums the threads of `pid` (zero if it is gone).
    pub fn of(pid: u32) -> Usage {
        let mut total = Usage::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return total;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
                total.cpu_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
                total.switches += s
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        total
    }

    /// CPU microseconds per call spent between `before` and this reading,
    /// over `calls` calls.
    pub fn cpu_us_per_call_since(&self, before: &Usage, calls: u64) -> f64 {
        self.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e3 / calls.max(1) as f64
    }
}

/// Cost of one call in one process.
#[derive(Debug, Clone, Serialize)]
pub struct PerCall {
    /// Which process ("client", "server", "module").
    pub process: String,
    /// CPU microseconds per call.
    pub cpu_us: f64,
    /// Context switches per call.
    pub switches: f64,
}

/// Runs `work` (which makes `calls` calls) and reports what it cost each
/// of `procs` (name, pid).
pub async fn per_call<F, Fut>(
    procs: &[(&str, u32)],
    calls: usize,
    work: F,
) -> anyhow::Result<Vec<PerCall>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let before: Vec<Usage> = procs.iter().map(|(_, pid)| Usage::of(*pid)).collect();
    work().await?;
    let after: Vec<Usage> = procs.iter().map(|(_, pid)| Usage::of(*pid)).collect();
    let n = calls.max(1) as f64;
    Ok(procs
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((name, _), (b, a))| PerCall {
            process: name.to_string(),
            cpu_us: a.cpu_us_per_call_since(b, calls as u64),
            switches: a.switches.saturating_sub(b.switches) as f64 / n,
        })
        .collect())
}

/// [`per_call`] of `calls` calls made one after another by `call`.
pub async fn per_sequential_call<F, Fut, T>(
    procs: &[(&str, u32)],
    calls: usize,
    call: F,
) -> anyhow::Result<Vec<PerCall>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    per_call(procs, calls, || async {
        for _ in 0..calls {
            call().await?;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_cpu_time_grows_with_work() {
        let me = std::process::id();
        let before = Usage::of(me);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Usage::of(me);
        assert!(after.cpu_ns > before.cpu_ns, "{before:?} -> {after:?}");
        assert_eq!(Usage::of(u32::MAX).cpu_ns, 0);
    }
}
