//! Percentiles of one repetition and medians over repetitions.
//!
//! Every figure is computed per repetition first (p50, p99, rate) and then
//! the median of those is reported, so one disturbed repetition (another
//! build on this 2-core machine) moves nothing.

use std::time::Duration;

use serde::Serialize;

/// One repetition of a sequential latency run.
#[derive(Debug, Clone, Copy)]
pub struct Rep {
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Calls completed per second of wall time.
    pub per_s: f64,
}

impl Rep {
    /// Summarises one repetition's per-call latencies over `wall` time.
    pub fn from_samples(samples: &mut [Duration], wall: Duration) -> Rep {
        samples.sort_unstable();
        Rep {
            p50_us: micros(percentile(samples, 50.0)),
            p99_us: micros(percentile(samples, 99.0)),
            per_s: samples.len() as f64 / wall.as_secs_f64(),
        }
    }
}

/// Medians over repetitions of a latency run.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median over repetitions of each repetition's p50, microseconds.
    pub p50_us: f64,
    /// Median over repetitions of each repetition's p99, microseconds.
    pub p99_us: f64,
    /// Median over repetitions of calls per second.
    pub per_s: f64,
    /// Repetitions.
    pub reps: usize,
    /// Calls per repetition.
    pub calls_per_rep: usize,
}

impl Latency {
    /// Combines repetitions of `calls_per_rep` calls each.
    pub fn from_reps(reps: &[Rep], calls_per_rep: usize) -> Latency {
        Latency {
            p50_us: median(reps.iter().map(|r| r.p50_us)),
            p99_us: median(reps.iter().map(|r| r.p99_us)),
            per_s: median(reps.iter().map(|r| r.per_s)),
            reps: reps.len(),
            calls_per_rep,
        }
    }
}

/// Nearest-rank percentile of sorted samples (zero when empty).
pub fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (mean of the middle two for an even count; NaN if none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A duration in (fractional) microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A duration in (fractional) milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_micros(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn medians_ignore_one_outlier() {
        assert_eq!(median([3.0, 1.0, 1000.0]), 3.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn a_repetition_counts_its_rate_over_wall_time() {
        let mut samples = vec![Duration::from_micros(300), Duration::from_micros(100)];
        let rep = Rep::from_samples(&mut samples, Duration::from_millis(1));
        assert_eq!(rep.p50_us, 100.0);
        assert_eq!(rep.p99_us, 300.0);
        assert!((rep.per_s - 2000.0).abs() < 1e-6);
    }
}
