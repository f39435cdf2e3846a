//! How the report writes figures: times, rates, sizes, verdicts. Shared by
//! the report and the measurements that print their own tables.

use crate::{cpu::PerCall, stats::Latency};

/// Microseconds, as µs or ms.
pub(crate) fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// A count or rate with thousands separators.
pub(crate) fn rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// KiB as MB (10^6 bytes).
pub(crate) fn mib(kib: f64) -> String {
    format!("{:.1} MB", kib * 1024.0 / 1e6)
}

/// ✅ or ❌.
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

/// p50, p99 and rate of a latency run.
pub(crate) fn latency(l: &Latency) -> String {
    format!(
        "p50 {} · p99 {} · {} calls/s",
        us(l.p50_us),
        us(l.p99_us),
        rate(l.per_s)
    )
}

/// CPU per call of each process, and the total.
pub(crate) fn cpu(costs: &[PerCall]) -> String {
    let parts: Vec<String> = costs
        .iter()
        .map(|c| format!("{} {:.0} µs ({:.1})", c.process, c.cpu_us, c.switches))
        .collect();
    let total: f64 = costs.iter().map(|c| c.cpu_us).sum();
    format!("{} · total {total:.0} µs", parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(us(85.4), "85 µs");
        assert_eq!(us(1240.0), "1.24 ms");
        assert_eq!(mib(5175.78), "5.3 MB");
    }
}
