//! When a call's items should be let out on their own.
//!
//! tonic gathers the items a stream has ready back to back into one write
//! of up to 32 KiB, and sends only when the stream has nothing ready. A
//! handler producing faster than the connection drains would thus hold its
//! first item back until some thousand small items had piled up (about
//! 5 ms for `count(10000)`), and later ones for as long. The response
//! stream therefore pauses (returns `Pending` and asks to be polled again
//! at once, which makes tonic send what it has) right after the first item
//! and then at least every [`FLUSH_EVERY`] while items keep coming. A
//! one-item answer never pauses, so its data and trailers still go out in
//! one write.

use std::time::{Duration, Instant};

/// Longest an item waits in tonic's buffer while more items keep coming.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(1);

/// Tracks items let out since the last time the stream had nothing ready.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// Items yielded over the call's life.
    yielded: u64,
    /// When the first item since the last pause (or empty poll) went out.
    batch_started: Option<Instant>,
}

impl Pacer {
    /// Whether the stream should pause before yielding another ready item.
    pub(crate) fn pause_due(&self) -> bool {
        match self.batch_started {
            None => false,
            Some(started) => self.yielded == 1 || started.elapsed() >= FLUSH_EVERY,
        }
    }

    /// An item is being yielded.
    pub(crate) fn yielded(&mut self) {
        self.yielded += 1;
        if self.batch_started.is_none() {
            self.batch_started = Some(Instant::now());
        }
    }

    /// The stream is returning `Pending`: tonic sends what it has.
    pub(crate) fn flushed(&mut self) {
        self.batch_started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_after_the_first_item_only_when_more_follow_at_once() {
        let mut p = Pacer::default();
        assert!(!p.pause_due(), "nothing went out yet");
        p.yielded();
        assert!(p.pause_due(), "the first item goes out alone");
        p.flushed();
        assert!(!p.pause_due());
        p.yielded();
        assert!(!p.pause_due(), "later items are batched");
        p.yielded();
        assert!(!p.pause_due());
    }

    #[test]
    fn a_long_batch_pauses_after_the_flush_interval() {
        let mut p = Pacer::default();
        p.yielded();
        p.flushed();
        p.yielded();
        p.yielded();
        p.batch_started = Some(Instant::now() - FLUSH_EVERY);
        assert!(p.pause_due());
        p.flushed();
        assert!(!p.pause_due());
    }
}
