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
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut burst_start = Instant::now();
    let mut last_change = Instant::now();
    loop {
        let wait = if !pending.is_empty() {
            QUIET
        } else if notes.is_dirty() {
            SAVE_AFTER.saturating_sub(last_change.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        let quiet = match rx.recv_timeout(wait) {
            // Reading a file (ours included: indexing, snippets) is no
            // change; re-reading on it would feed itself.
            Ok(Ok(event)) if matches!(event.kind, notify::EventKind::Access(_)) => false,
            Ok(Ok(event)) => {
                if pending.is_empty() {
                    burst_start = Instant::now();
                }
                if event.need_rescan() {
                    pending.extend(notes.config.workspaces.iter().map(|w| w.root.clone()));
                }
                pending.extend(event.paths);
                false
            }
            Ok(Err(e)) => {
                tracing::warn!("watching the workspaces: {e}");
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if !pending.is_empty() && (quiet || burst_start.elapsed() >= MAX_HOLD) {
            let changes = notes.apply_paths(std::mem::take(&mut pending));
            if !changes.is_empty() {
                last_change = Instant::now();
                announce(changes);
            }
        } else if pending.is_empty() && notes.is_dirty() && last_change.elapsed() >= SAVE_AFTER {
            notes.save_if_dirty();
        }
    }
}
