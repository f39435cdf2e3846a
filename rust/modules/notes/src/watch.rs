//! Following the workspaces on disk: filesystem events are gathered until
//! the disk has been quiet for a moment (so a burst of writes becomes one
//! update), applied to the index, and announced; the cache is written
//! once the disk has been quiet for a minute, and on exit.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use crate::notes::{Change, Notes};

/// Quiet time that ends a burst of events.
const QUIET: Duration = Duration::from_millis(15);
/// Longest a burst is held back, so a steady stream of writes still shows.
const MAX_HOLD: Duration = Duration::from_millis(100);
/// How long after the last change the cache is written: writing it costs
/// about as much as reading every file once more, and a restart re-reads
/// files changed since anyway (by mtime and size), so not after each edit.
const SAVE_AFTER: Duration = Duration::from_secs(60);

/// Watches every readable workspace (one that cannot be read yet is
/// watched once a call finds it readable) and calls `announce` with each
/// batch of changes, until [`Notes::stop_following`].
pub fn start(
    notes: Arc<Notes>,
    announce: impl Fn(Vec<Change>) + Send + 'static,
) -> notify::Result<()> {
    let (tx, rx) = mpsc::channel();
    notes.follow_with(notify::recommended_watcher(tx)?);
    std::thread::Builder::new()
        .name("notes-watch".into())
        .spawn(move || follow(&notes, &rx, &announce))?;
    Ok(())
}

fn follow(
    notes: &Notes,
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    announce: &dyn Fn(Vec<Change>),
) {
    let roots: Vec<PathBuf> = notes
        .config
        .workspaces
        .iter()
        .map(|w| w.root.clone())
        .collect();
    let mut burst = Burst::default();
    let mut last_change = Instant::now();
    loop {
        let wait = match burst.wait(Instant::now()) {
            Some(wait) => wait,
            None if notes.is_dirty() => SAVE_AFTER.saturating_sub(last_change.elapsed()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Ok(event)) => burst.add(Instant::now(), event, &roots),
            Ok(Err(e)) => tracing::warn!("watching the workspaces: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if burst.is_due(Instant::now()) {
            let changes = notes.apply_paths(burst.take());
            if !changes.is_empty() {
                last_change = Instant::now();
                announce(changes);
            }
        } else if burst.is_empty() && notes.is_dirty() && last_change.elapsed() >= SAVE_AFTER {
            notes.save_if_dirty();
        }
    }
}

/// Changed paths gathered until the disk has been quiet for [`QUIET`] (or
/// for at most [`MAX_HOLD`]).
#[derive(Default)]
struct Burst {
    pending: BTreeSet<PathBuf>,
    /// When the first pending path came.
    started: Option<Instant>,
    /// When the last change came. Reads do not count: a client reading
    /// files (snippets) while the disk changes would otherwise hold every
    /// update back until `MAX_HOLD`.
    last: Option<Instant>,
}

impl Burst {
    /// Takes in one event at `now`; `roots` are rescanned when the
    /// watcher lost events.
    fn add(&mut self, now: Instant, event: notify::Event, roots: &[PathBuf]) {
        // Reading a file (ours included: indexing, snippets) is no
        // change; re-reading on it would feed itself.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        self.started.get_or_insert(now);
        self.last = Some(now);
        if event.need_rescan() {
            self.pending.extend(roots.iter().cloned());
        }
        self.pending.extend(event.paths);
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How long until the burst is due, if there is one.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let (started, last) = (self.started?, self.last?);
        let quiet = (last + QUIET).saturating_duration_since(now);
        let held = (started + MAX_HOLD).saturating_duration_since(now);
        Some(quiet.min(held))
    }

    /// Whether the pending paths should be applied at `now`.
    fn is_due(&self, now: Instant) -> bool {
        !self.is_empty() && self.wait(now) == Some(Duration::ZERO)
    }

    /// The pending paths; the burst starts over.
    fn take(&mut self) -> BTreeSet<PathBuf> {
        self.started = None;
        self.last = None;
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use notify::{event::AccessKind, event::ModifyKind, Event, EventKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(path.into())
    }

    #[test]
    fn reads_do_not_hold_a_burst_back() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut burst = Burst::default();
        assert_eq!(burst.wait(t0), None);
        burst.add(
            t0,
            event(EventKind::Modify(ModifyKind::Any), "/w/a.norg"),
            &[],
        );
        // Someone reads files every 5 ms: the write is still due after
        // QUIET, not only after MAX_HOLD.
        for n in [5, 10, 15] {
            burst.add(
                ms(n),
                event(EventKind::Access(AccessKind::Any), "/w/b.norg"),
                &[],
            );
        }
        assert!(!burst.is_due(ms(10)));
        assert_eq!(burst.wait(ms(10)), Some(QUIET - Duration::from_millis(10)));
        assert!(burst.is_due(ms(15)));
        assert_eq!(burst.take().len(), 1);
        assert!(!burst.is_due(ms(50)));
    }

    #[test]
    fn a_steady_stream_of_writes_is_applied_after_max_hold() {
        let t0 = Instant::now();
        let mut burst = Burst::default();
        let mut n = 0;
        while n < MAX_HOLD.as_millis() as u64 {
            let now = t0 + Duration::from_millis(n);
            burst.add(
                now,
                event(EventKind::Modify(ModifyKind::Any), "/w/a.norg"),
                &[],
            );
            assert!(!burst.is_due(now), "due at {n} ms");
            n += 10;
        }
        assert!(burst.is_due(t0 + MAX_HOLD));
    }

    #[test]
    fn a_lost_event_rescans_every_root() {
        let mut burst = Burst::default();
        let lost = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        burst.add(Instant::now(), lost, &["/w".into(), "/x".into()]);
        assert_eq!(burst.take().len(), 2);
    }
}
