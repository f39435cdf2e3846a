//! Module stderr into the server log: line by line, prefixed with the
//! module name, with long lines cut and floods rate-limited. The pipe is
//! always drained, so a chatty module never blocks on a full pipe.

use std::time::Duration;

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, BufReader},
    process::ChildStderr,
    time::Instant,
};

/// Longest line logged; the rest of a longer one is dropped.
const MAX_LINE: usize = 4096;

/// Dropped lines are reported once per window, in one summary line.
const SUMMARY_WINDOW: Duration = Duration::from_secs(1);

/// Logs `stderr` of module `name`, at most `per_second` log lines a second
/// on average (bursts of twice that pass), its own flood summaries
/// included; 0 means no limit.
pub async fn drain(name: String, stderr: ChildStderr, per_second: u32) {
    let mut lines = Lines::new(BufReader::new(stderr));
    let mut limit = Limiter::new(per_second);
    loop {
        let due = limit.summary_due();
        let next = tokio::select! {
            // The timer first: a flood keeps the pipe always readable.
            biased;
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                limit.summarize(&name);
                continue;
            }
            next = lines.next() => next,
        };
        match next {
            Ok(Some(line)) => {
                if limit.admit() {
                    tracing::info!("[{name}] {}", String::from_utf8_lossy(&line));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(module = %name, "stderr read failed: {e}");
                break;
            }
        }
    }
    limit.summarize_at_end(&name);
}

/// Splits input into lines (without newlines), keeping at most
/// [`MAX_LINE`] bytes of each.
struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    cut: bool,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            line: Vec::with_capacity(256),
            cut: false,
        }
    }

    /// The next line; `None` at end of input. Cancel-safe: a line read in
    /// part is kept for the next call.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                let any = !self.line.is_empty() || self.cut;
                return Ok(any.then(|| self.take()));
            }
            let (chunk, end) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            if chunk.len() > room {
                self.cut = true;
            }
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = end.unwrap_or(available.len());
            self.reader.consume(used);
            if end.is_some() {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.cut) {
            self.line.extend_from_slice(" [line cut]".as_bytes());
        }
        std::mem::take(&mut self.line)
    }
}

/// The rate limit of one module's stderr: what it logs, summaries of what
/// it dropped included, stays within one token bucket.
struct Limiter {
    bucket: Bucket,
    per_second: u32,
    dropped: u64,
    /// When the pending summary is due (set by the first dropped line).
    due: Option<Instant>,
}

impl Limiter {
    fn new(per_second: u32) -> Self {
        Limiter {
            bucket: Bucket::new(per_second),
            per_second,
            dropped: 0,
            due: None,
        }
    }

    /// Whether to log the next line; counts it as dropped if not.
    fn admit(&mut self) -> bool {
        if self.bucket.take() {
            return true;
        }
        if self.dropped == 0 {
            self.due = Some(Instant::now() + SUMMARY_WINDOW);
        }
        self.dropped += 1;
        false
    }

    /// When a summary of dropped lines is due, if any is pending.
    fn summary_due(&self) -> Option<Instant> {
        self.due
    }

    /// Logs the pending summary if the bucket allows a line now, else
    /// tries again when it should.
    fn summarize(&mut self, name: &str) {
        if self.dropped == 0 {
            self.due = None;
        } else if self.bucket.take() {
            self.log_summary(name);
        } else {
            self.due = Some(Instant::now() + self.bucket.time_per_token());
        }
    }

    /// The last summary, whatever the bucket says: the module is gone.
    fn summarize_at_end(&mut self, name: &str) {
        if self.dropped > 0 {
            self.log_summary(name);
        }
    }

    fn log_summary(&mut self, name: &str) {
        tracing::warn!(
            module = %name,
            "stderr flood: {} lines dropped (logging at most {} lines a second)",
            self.dropped,
            self.per_second
        );
        self.dropped = 0;
        self.due = None;
    }
}

/// A token bucket: `rate` tokens a second, holding at most twice that.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_second: u32) -> Self {
        Bucket {
            rate: f64::from(per_second),
            tokens: f64::from(per_second) * 2.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long the bucket takes to earn one token.
    fn time_per_token(&self) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(1.0 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn long_lines_are_cut_and_lines_split() {
        let mut text = vec![b'a'; MAX_LINE + 100];
        text.extend_from_slice(b"\nshort\nlast");
        let mut lines = Lines::new(BufReader::with_capacity(64, text.as_slice()));
        let line = lines.next().await.unwrap().unwrap();
        assert!(line.starts_with(&[b'a'; MAX_LINE]));
        assert!(line.ends_with(b"[line cut]"));
        assert_eq!(lines.next().await.unwrap().unwrap(), b"short");
        assert_eq!(lines.next().await.unwrap().unwrap(), b"last");
        assert!(lines.next().await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn summaries_count_against_the_limit() {
        let mut limit = Limiter::new(10);
        let mut logged = 0;
        // A steady flood of 1000 lines a second for 10 s, summaries as due.
        for _ in 0..10_000 {
            tokio::time::advance(Duration::from_millis(1)).await;
            if limit.admit() {
                logged += 1;
            }
            if limit.summary_due().is_some_and(|d| d <= Instant::now()) {
                let before = limit.dropped;
                limit.summarize("m");
                if limit.dropped < before {
                    logged += 1;
                }
            }
        }
        // Burst of 20, then 10 a second, summaries included.
        assert!(logged <= 20 + 100 + 1, "{logged}");
        assert!(logged >= 100, "{logged}");
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(10);
        let burst_taken = (0..100).filter(|_| b.take()).count();
        assert_eq!(burst_taken, 20);
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = (0..100).filter(|_| b.take()).count();
        assert_eq!(later, 10);
        let mut unlimited = Bucket::new(0);
        assert!((0..10_000).all(|_| unlimited.take()));
    }
}
