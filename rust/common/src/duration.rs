//! Durations as users write them ("250ms", "3s", "2m", "1h", "1d" or a
//! number of seconds), with the one range check every duration setting
//! shares: the server's flags and `config.toml`, and `module.toml`
//! (through `norgopolis-catalog`), so all of them accept the same text.

use std::time::Duration;

/// Longest duration any setting accepts: a year. It means "never" in
/// practice, and longer ones overflow the arithmetic of deadlines and
/// timers (a panic instead of an error).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses "20ms", "3s", "1.5s", "2m", "1h", "1d" or a bare number of
/// seconds, from zero up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86400.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try \"250ms\", \"3s\" or \"2m\")"))?;
    duration_from_secs(value * scale, text)
}

/// [`parse_duration`] for settings where zero makes no sense (intervals,
/// timeouts): at least a millisecond.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    positive(parse_duration(text)?, text)
}

/// The one range check of every duration setting: `seconds` (written as
/// `text` by the user) must lie in 0..=[`MAX_DURATION`].
pub fn duration_from_secs(seconds: f64, text: &str) -> Result<Duration, String> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!("{text:?} is not a non-negative duration"));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "{text:?} is too long: at most {} s (365 days)",
            MAX_DURATION.as_secs()
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Refuses durations under a millisecond, for settings that need time to pass.
pub fn positive(value: Duration, text: &str) -> Result<Duration, String> {
    if value < Duration::from_millis(1) {
        return Err(format!("{text:?} is too short: at least 1ms"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("366d").unwrap_err().contains("too long"));
    }

    #[test]
    fn absurd_durations_are_errors_not_panics() {
        for text in [
            "1e20",
            "1e300",
            "inf",
            "NaN",
            "1e15s",
            "99999999999999999999ms",
            "525601m",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(text), "{text}: {e}");
        }
        assert_eq!(parse_duration("31536000"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0")
            .unwrap_err()
            .contains("at least 1ms"));
        assert!(parse_positive_duration("0.1ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }
}
