//! The module's state: the configured workspaces, the index over them, and
//! keeping it in step with the disk (first index, cache, reindex, changed
//! paths).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, RwLock, RwLockReadGuard,
    },
    time::Instant,
};

use norgopolis_sdk::Error;
use serde::Serialize;

use crate::{
    cache,
    config::{Config, Workspace},
    index::{Doc, Index},
    scan, text,
};

/// What happened to a file, as published in `notes.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Its workspace.
    pub workspace: String,
    /// Absolute path.
    pub path: String,
    /// `created`, `modified` or `deleted`.
    pub kind: &'static str,
}

/// What a (re)index of one workspace did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The workspace.
    pub workspace: String,
    /// Its root.
    pub path: String,
    /// `.norg` files found.
    pub files: usize,
    /// Files read and parsed (the others were unchanged).
    pub parsed: usize,
    /// Documents dropped because their file is gone.
    pub removed: usize,
    /// Time taken.
    pub ms: f64,
}

/// Figures for `stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    /// Milliseconds the first index took (cache load included).
    pub index_ms: f64,
    /// `loaded`, `rebuilt` (unusable file) or `absent`.
    pub cache: String,
    /// Why the cache was rebuilt, when it was.
    pub cache_error: Option<String>,
    /// Files parsed by the first index.
    pub parsed: usize,
}

/// The module's state, shared by every call and the watcher.
pub struct Notes {
    /// The configuration.
    pub config: Config,
    index: RwLock<Index>,
    /// Workspaces whose root could not be read, with the reason.
    broken: Mutex<HashMap<String, String>>,
    timing: Mutex<Timing>,
    dirty: AtomicBool,
    /// Following the workspaces on disk, once started.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl Notes {
    /// State for `config`, with an empty index.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            index: RwLock::new(Index::default()),
            broken: Mutex::new(HashMap::new()),
            timing: Mutex::new(Timing::default()),
            dirty: AtomicBool::new(false),
            watcher: Mutex::new(None),
        }
    }

    /// Keeps `watcher` and points it at every workspace that can be read.
    pub fn follow_with(&self, watcher: notify::RecommendedWatcher) {
        *lock(&self.watcher) = Some(watcher);
        for ws in &self.config.workspaces {
            self.watch(ws);
        }
    }

    /// Stops following the disk (the watcher thread then saves and ends).
    pub fn stop_following(&self) {
        lock(&self.watcher).take();
    }

    fn watch(&self, ws: &Workspace) {
        use notify::Watcher;
        if let Some(w) = lock(&self.watcher).as_mut() {
            if let Err(e) = w.watch(&ws.root, notify::RecursiveMode::Recursive) {
                tracing::warn!("not watching workspace '{}' yet: {e}", ws.name);
            }
        }
    }

    /// Read access to the index.
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The figures of the first index.
    pub fn timing(&self) -> Timing {
        lock(&self.timing).clone()
    }

    /// Workspaces that could not be read, with the reason.
    pub fn broken(&self) -> HashMap<String, String> {
        lock(&self.broken).clone()
    }

    fn cache_file(&self) -> PathBuf {
        cache::file(&self.config.cache_dir)
    }

    /// Loads the cache (if usable), brings every workspace up to date with
    /// the disk, and saves the cache when anything changed.
    pub fn initial_index(&self) {
        let started = Instant::now();
        // The workspaces are walked and stat'ed while the cache decodes: a
        // restart needs both, and the walk waits on the kernel, not the CPU.
        // A file changed after its stat reaches the index through the
        // watcher, started before this.
        let (loaded, walks) = std::thread::scope(|s| {
            let walks: Vec<_> = self
                .config
                .workspaces
                .iter()
                .map(|ws| s.spawn(|| scan::walk_stamped(&ws.root)))
                .collect();
            let loaded = cache::load(&self.cache_file());
            let walks: Vec<_> = walks
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("walking failed")))
                })
                .collect();
            (loaded, walks)
        });
        let (cache, cache_error) = match loaded {
            Ok(index) => {
                *self.index_mut() = index;
                ("loaded", None)
            }
            Err(cache::CacheError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                ("absent", None)
            }
            Err(e) => {
                tracing::warn!("rebuilding the notes index: {e}");
                ("rebuilt", Some(e.to_string()))
            }
        };
        self.drop_unconfigured();
        let mut parsed = 0;
        for (ws, walked) in self.config.workspaces.iter().zip(walks) {
            if let Ok(report) = self.sync_walked(ws, false, walked, started) {
                parsed += report.parsed;
            }
        }
        *lock(&self.timing) = Timing {
            index_ms: ms_since(started),
            cache: cache.to_owned(),
            cache_error,
            parsed,
        };
        if parsed > PARSE_BATCH {
            self.save_and_reload();
        } else if cache != "loaded" || parsed > 0 || self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
            self.save_if_dirty();
        }
        tracing::info!(
            "first index: {:.1} ms (cache {cache}, {parsed} parsed), {:.1} ms with saving",
            lock(&self.timing).index_ms,
            ms_since(started)
        );
    }

    /// Drops cached documents of workspaces no longer configured (or moved).
    fn drop_unconfigured(&self) {
        let stale: Vec<PathBuf> = self
            .index()
            .docs()
            .filter(|d| {
                !self
                    .config
                    .workspaces
                    .iter()
                    .any(|w| w.name == d.workspace && d.path.starts_with(&w.root))
            })
            .map(|d| d.path.clone())
            .collect();
        if !stale.is_empty() {
            let mut index = self.index_mut();
            for p in &stale {
                index.remove(p);
            }
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Brings one workspace in step with its files: new and changed ones
    /// (all of them with `force`) are parsed, vanished ones dropped. An
    /// unreadable root marks the workspace broken and is the error.
    pub fn sync_workspace(&self, ws: &Workspace, force: bool) -> Result<SyncReport, String> {
        let started = Instant::now();
        self.sync_walked(ws, force, scan::walk_stamped(&ws.root), started)
    }

    /// [`Notes::sync_workspace`] with the files already walked.
    fn sync_walked(
        &self,
        ws: &Workspace,
        force: bool,
        walked: std::io::Result<Vec<scan::Stamped>>,
        started: Instant,
    ) -> Result<SyncReport, String> {
        let files = match walked {
            Ok(f) => {
                lock(&self.broken).remove(&ws.name);
                f
            }
            Err(e) => {
                let why = format!(
                    "workspace '{}' ({}) cannot be read: {e}",
                    ws.name,
                    ws.root.display()
                );
                lock(&self.broken).insert(ws.name.clone(), why.clone());
                return Err(why);
            }
        };
        let stale: Vec<PathBuf> = {
            let index = self.index();
            files
                .iter()
                .filter(|(p, stamp)| force || !has_stamp(&index, p, *stamp))
                .map(|(p, _)| p.clone())
                .collect()
        };
        tracing::debug!(
            "workspace '{}': {} files walked and compared in {:.1} ms",
            ws.name,
            files.len(),
            ms_since(started)
        );
        let on_disk: std::collections::HashSet<&Path> =
            files.iter().map(|(p, _)| p.as_path()).collect();
        let gone: Vec<PathBuf> = self
            .index()
            .docs()
            .filter(|d| d.workspace == ws.name && !on_disk.contains(d.path.as_path()))
            .map(|d| d.path.clone())
            .collect();
        {
            let mut index = self.index_mut();
            for p in &gone {
                index.remove(p);
            }
        }
        // In batches, so that parsed documents and their words never pile
        // up beyond one batch before they are in the index.
        let mut parsed = 0;
        for batch in stale.chunks(PARSE_BATCH) {
            let docs = parse_all(ws, &self.config.workspaces, batch);
            parsed += docs.len();
            let mut index = self.index_mut();
            for (doc, terms) in docs {
                index.upsert(doc, terms);
            }
        }
        if parsed > PARSE_BATCH {
            self.index_mut().shrink_to_fit();
            release_free_memory();
        }
        if parsed + gone.len() > 0 {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(SyncReport {
            workspace: ws.name.clone(),
            path: ws.root.display().to_string(),
            files: files.len(),
            parsed,
            removed: gone.len(),
            ms: ms_since(started),
        })
    }

    /// The workspaces a call is about (`None`: all of them), checked to be
    /// readable; a broken one is tried again first, so fixing the disk
    /// fixes the calls.
    pub fn scope(&self, workspace: Option<&str>) -> Result<Vec<&Workspace>, Error> {
        if self.config.workspaces.is_empty() {
            return Err(Error::failed_precondition(
                "no workspaces configured: set workspaces = { name = \"path\" } under [modules.notes] in config.toml",
            ));
        }
        let chosen: Vec<&Workspace> = match workspace {
            None => self.config.workspaces.iter().collect(),
            Some(name) => {
                let ws = self
                    .config
                    .workspaces
                    .iter()
                    .find(|w| w.name == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = self
                            .config
                            .workspaces
                            .iter()
                            .map(|w| w.name.as_str())
                            .collect();
                        Error::not_found(format!(
                            "no workspace '{name}' (configured: {})",
                            names.join(", ")
                        ))
                    })?;
                vec![ws]
            }
        };
        for ws in &chosen {
            let was_broken = lock(&self.broken).contains_key(&ws.name);
            if was_broken {
                self.sync_workspace(ws, false)
                    .map_err(Error::failed_precondition)?;
                self.watch(ws);
            }
        }
        Ok(chosen)
    }

    /// Brings the given changed paths (files or folders, existing or not)
    /// into the index; returns what changed.
    pub fn apply_paths(&self, paths: impl IntoIterator<Item = PathBuf>) -> Vec<Change> {
        let mut changes = Vec::new();
        for path in paths {
            let Some(ws) = self.workspace_of(&path) else {
                continue;
            };
            if scan::is_hidden(&ws.root, &path) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    for file in scan::walk(&path).unwrap_or_default() {
                        changes.extend(self.refresh_file(ws, &file, false));
                    }
                }
                // The event says the file changed: a write within the
                // same mtime tick and of the same size must not be missed.
                Ok(_) if scan::is_norg(&path) => changes.extend(self.refresh_file(ws, &path, true)),
                Ok(_) => {}
                Err(_) => {
                    let mut index = self.index_mut();
                    if index.remove(&path) {
                        changes.push(change(&ws.name, &path, "deleted"));
                    }
                    for (w, p) in index.remove_under(&path) {
                        changes.push(change(&w, &p, "deleted"));
                    }
                }
            }
        }
        if !changes.is_empty() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        changes
    }

    /// Re-reads one file (with `force`, or if its stamp changed).
    fn refresh_file(&self, ws: &Workspace, path: &Path, force: bool) -> Option<Change> {
        if !force && unchanged(&self.index(), path) {
            return None;
        }
        match scan::read_doc(ws, &self.config.workspaces, path) {
            Ok((doc, terms)) => {
                let replaced = self.index_mut().upsert(doc, terms);
                let kind = if replaced { "modified" } else { "created" };
                Some(change(&ws.name, path, kind))
            }
            Err(e) => {
                tracing::debug!("cannot read {}: {e}", path.display());
                self.index_mut()
                    .remove(path)
                    .then(|| change(&ws.name, path, "deleted"))
            }
        }
    }

    /// The configured workspace whose root holds `path`.
    pub fn workspace_of(&self, path: &Path) -> Option<&Workspace> {
        self.config
            .workspaces
            .iter()
            .filter(|w| path.starts_with(&w.root))
            .max_by_key(|w| w.root.components().count())
    }

    /// Writes the cache if anything changed since the last write.
    pub fn save_if_dirty(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let result = {
            let mut index = self.index_mut();
            index.compact();
            drop(index);
            cache::save(&self.index(), &self.cache_file())
        };
        match result {
            Ok(()) => tracing::debug!("notes cache saved in {:.1} ms", ms_since(started)),
            Err(e) => tracing::warn!(
                "cannot save the notes cache {}: {e}",
                self.cache_file().display()
            ),
        }
    }

    /// Saves the cache after a large build, then replaces the index with
    /// the one read back from it. A build leaves the heap fragmented (tens
    /// of megabytes that `malloc_trim` cannot return: live documents are
    /// strewn over the pages of every parsing thread); the same index read
    /// in one go is packed. The write lock is held throughout, so no change
    /// falls between the save and the reload.
    fn save_and_reload(&self) {
        let started = Instant::now();
        let file = self.cache_file();
        let mut index = self.index_mut();
        self.dirty.store(false, Ordering::Relaxed);
        index.compact();
        if let Err(e) = cache::save(&index, &file) {
            tracing::warn!("cannot save the notes cache {}: {e}", file.display());
            return;
        }
        drop(std::mem::take(&mut *index));
        release_free_memory();
        match cache::load(&file) {
            Ok(packed) => *index = packed,
            Err(e) => {
                // Not expected (it was just written); the files still are.
                tracing::warn!("cannot read back the notes cache, indexing again: {e}");
                drop(index);
                for ws in &self.config.workspaces {
                    let _ = self.sync_workspace(ws, false);
                }
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            "notes cache saved and read back in {:.1} ms",
            ms_since(started)
        );
    }

    /// Whether there are changes the cache does not have yet.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }
}

fn change(workspace: &str, path: &Path, kind: &'static str) -> Change {
    Change {
        workspace: workspace.to_owned(),
        path: path.display().to_string(),
        kind,
    }
}

/// Whether the indexed copy of `path` has the file's current stamp.
fn unchanged(index: &Index, path: &Path) -> bool {
    has_stamp(index, path, scan::stamp_of(path))
}

/// Whether `path` is indexed with `stamp` (`None`: unknown, so no).
fn has_stamp(index: &Index, path: &Path, stamp: Option<(u64, u64)>) -> bool {
    stamp.is_some() && index.get(path).map(|d| (d.mtime_ns, d.size)) == stamp
}

/// Reads and parses `paths` on every core; unreadable files are skipped.
fn parse_all(ws: &Workspace, all: &[Workspace], paths: &[PathBuf]) -> Vec<(Doc, text::Terms)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|p| match scan::read_doc(ws, all, p) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                tracing::warn!("skipping {}: {e}", p.display());
                                None
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Files parsed before their documents go into the index.
const PARSE_BATCH: usize = 256;

/// Hands freed heap pages back to the system: parsing many files leaves
/// the allocator's per-thread heaps large, and that would count as the
/// module's memory for good.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it
    // takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache written by the previous format (4, MessagePack documents)
    /// is rebuilt from the files, and replaced by one this format reads.
    #[test]
    fn a_format_4_cache_is_rebuilt_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("one.norg"), "* One\n  {:two:} words\n").expect("write");
        let config = Config {
            workspaces: vec![Workspace {
                name: "w".into(),
                root: root.clone(),
            }],
            cache_dir: dir.path().join("cache"),
        };
        let file = cache::file(&config.cache_dir);
        std::fs::create_dir_all(&config.cache_dir).expect("mkdir");
        std::fs::write(&file, include_bytes!("../tests/fixtures/index-v4.bin")).expect("write");
        let notes = Notes::new(config.clone());
        notes.initial_index();
        let timing = notes.timing();
        assert_eq!((timing.cache.as_str(), timing.parsed), ("rebuilt", 1));
        let why = timing.cache_error.unwrap_or_default();
        assert!(why.contains("format version 4"), "{why}");
        assert_eq!(notes.index().search("words", 5, None).len(), 1);
        let again = Notes::new(config);
        again.initial_index();
        assert_eq!(
            (again.timing().cache.as_str(), again.timing().parsed),
            ("loaded", 0)
        );
    }

    /// A first build large enough to be saved and read back answers as
    /// the build did, and keeps taking changes.
    #[test]
    fn a_large_first_build_is_read_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).expect("mkdir");
        let count = PARSE_BATCH + 44;
        for i in 0..count {
            let text = format!("* Note {i}\n  {{:note0:}} word{i}\n");
            std::fs::write(root.join(format!("note{i}.norg")), text).expect("write");
        }
        let notes = Notes::new(Config {
            workspaces: vec![Workspace {
                name: "w".into(),
                root: root.clone(),
            }],
            cache_dir: dir.path().join("cache"),
        });
        notes.initial_index();
        assert_eq!(notes.timing().parsed, count);
        assert!(!notes.is_dirty());
        assert!(cache::file(&notes.config.cache_dir).exists());
        {
            let index = notes.index();
            assert_eq!(index.len(), count);
            let hits = index.search(&format!("word{}", count - 1), 5, None);
            assert_eq!(hits.len(), 1);
            let target = root.join("note0.norg");
            let linking = index
                .docs()
                .filter(|d| d.resolved.iter().flatten().any(|f| **f == *target))
                .count();
            assert_eq!(linking, count);
        }
        let new = root.join("new.norg");
        std::fs::write(&new, "* New\n  fresh\n").expect("write");
        let changes = notes.apply_paths([new]);
        assert_eq!(changes.len(), 1);
        assert_eq!(notes.index().search("fresh", 5, None).len(), 1);
    }
}
