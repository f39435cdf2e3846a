//! Reading files into documents, and finding a workspace's `.norg` files.

use std::{
    fs::Metadata,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use crate::{
    config::Workspace,
    index::{path_order, Doc},
    norg::{self, weight},
    resolve, text,
};

/// What tells a changed file from an unchanged one: modification time in
/// nanoseconds and size.
pub fn stamp(meta: &Metadata) -> (u64, u64) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (mtime, meta.len())
}

/// The current stamp of the file at `path`, if it can be stat'ed.
pub fn stamp_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| stamp(&m))
}

/// Whether `path` names a Norg file.
pub fn is_norg(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "norg")
}

/// Whether `path` lies in a hidden folder (or is hidden) below `root`:
/// such files are not part of the workspace.
pub fn is_hidden(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|rel| {
        rel.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    })
}

/// Reads and parses `path`, a file of `workspace`.
pub fn read_doc(
    workspace: &Workspace,
    all: &[Workspace],
    path: &Path,
) -> io::Result<(Doc, text::Terms)> {
    let meta = std::fs::metadata(path)?;
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(build_doc(workspace, all, path, stamp(&meta), &text))
}

/// A document from its text.
pub fn build_doc(
    workspace: &Workspace,
    all: &[Workspace],
    path: &Path,
    (mtime_ns, size): (u64, u64),
    text: &str,
) -> (Doc, text::Terms) {
    let norg::Document {
        mut parsed,
        mut terms,
    } = norg::parse(text);
    let (title, title_line) = match (&parsed.meta.title, parsed.headings.first()) {
        (Some(t), _) => (t.clone(), None),
        (None, Some(h)) => (h.text.clone(), Some(h.line)),
        (None, None) => (file_stem(path), Some(1)),
    };
    if let Some(line) = title_line {
        terms.add_text(&title, weight::TITLE, line);
    }
    let full_links = std::mem::take(&mut parsed.links);
    let resolved = full_links
        .iter()
        .map(|l| resolve::link_file(l, path, workspace, all).map(std::sync::Arc::from))
        .collect();
    // Exact sizes: a large workspace keeps hundreds of thousands of these.
    parsed.headings.shrink_to_fit();
    parsed.tasks.shrink_to_fit();
    let links = full_links.iter().map(norg::StoredLink::from_link).collect();
    let doc = Doc {
        workspace: workspace.name.clone(),
        path: path.to_path_buf(),
        mtime_ns,
        size,
        title,
        parsed,
        links,
        resolved,
    };
    (doc, terms)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file found by [`walk_stamped`] with its stamp then (`None`: it could
/// not be stat'ed, so it counts as changed).
pub type Stamped = (PathBuf, Option<(u64, u64)>);

/// Like [`walk`], with each file's stamp: done before the index is at
/// hand, this lets a restart stat the files while it decodes its cache.
pub fn walk_stamped(root: &Path) -> io::Result<Vec<Stamped>> {
    Ok(walk(root)?
        .into_iter()
        .map(|p| {
            let stamp = stamp_of(&p);
            (p, stamp)
        })
        .collect())
}

/// Every `.norg` file under `root`, skipping hidden folders (`.git`).
/// Fails only when `root` itself cannot be read; unreadable subfolders are
/// logged and skipped.
pub fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!("skipping {}: {e}", dir.display());
                continue;
            }
        };
        first = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(_) if is_norg(&path) => files.push(path),
                _ => {}
            }
        }
    }
    // Path order, on bytes (see `path_order`): sorting 10,000 paths with
    // `Path`'s comparison was a tenth of a restart's walk.
    files.sort_unstable_by(|a, b| path_order(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
    Ok(files)
}
