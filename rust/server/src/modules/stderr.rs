//! Module stderr into the server log: line by line, prefixed with the
//! module name, with long lines cut and floods rate-limited. The pipe is
//! always drained, so a chatty module never blocks on a full pipe.

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, BufReader},
    process::ChildStderr,
    time::Instant,
};

/// Longest line logged; the rest of a longer one is dropped.
const MAX_LINE: usize = 4096;

/// Logs `stderr` of module `name`, at most `per_second` lines a second on
/// average (bursts of twice that pass); 0 means no limit.
pub async fn drain(name: String, stderr: ChildStderr, per_second: u32) {
    let mut reader = BufReader::new(stderr);
    let mut bucket = Bucket::new(per_second);
    let mut line = Vec::with_capacity(256);
    let mut dropped: u64 = 0;
    loop {
        line.clear();
        match read_line_capped(&mut reader, &mut line).await {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                tracing::debug!(module = %name, "stderr read failed: {e}");
                break;
            }
        }
        if !bucket.take() {
            if dropped == 0 {
                tracing::warn!(
                    module = %name,
                    "stderr flood: logging at most {per_second} lines a second, dropping the rest"
                );
            }
            dropped += 1;
            continue;
        }
        if dropped > 0 {
            tracing::warn!(module = %name, "{dropped} stderr lines dropped (rate limit)");
            dropped = 0;
        }
        tracing::info!("[{name}] {}", String::from_utf8_lossy(&line));
    }
    if dropped > 0 {
        tracing::warn!(module = %name, "{dropped} stderr lines dropped (rate limit)");
    }
}

/// Reads one line into `line` (without its newline), keeping at most
/// [`MAX_LINE`] bytes of it. False at end of input with nothing read.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut any = false;
    let mut cut = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, end) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.unwrap_or(available.len());
        reader.consume(used);
        if end.is_some() {
            if cut {
                line.extend_from_slice(" [line cut]".as_bytes());
            }
            return Ok(true);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn long_lines_are_cut_and_lines_split() {
        let mut text = vec![b'a'; MAX_LINE + 100];
        text.extend_from_slice(b"\nshort\nlast");
        let mut reader = BufReader::with_capacity(64, text.as_slice());
        let mut line = Vec::new();
        assert!(read_line_capped(&mut reader, &mut line).await.unwrap());
        assert!(line.starts_with(&[b'a'; MAX_LINE]));
        assert!(line.ends_with(b"[line cut]"));
        line.clear();
        assert!(read_line_capped(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"short");
        line.clear();
        assert!(read_line_capped(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"last");
        line.clear();
        assert!(!read_line_capped(&mut reader, &mut line).await.unwrap());
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
