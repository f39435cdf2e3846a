//! The index on disk, so that a restart re-reads only changed files.
//!
//! One file, `index.bin` in the cache dir: a versioned header, the
//! documents as flat records in chunks ([`docs`]), then the postings, then
//! the files links resolve to: a table of distinct paths, and per document
//! one table entry (or none) per link, so that a restart shares them again.
//! Everything is plain binary read without a generic decoder, since a
//! restart waits for it. Written to a temporary file and renamed over the
//! old one, so a crash leaves either. Anything unexpected on reading is an
//! error the caller answers by rebuilding from the files.

mod bytes;
mod docs;
mod mapped;
mod postings;

use bytes::{Put, Reader};

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::index::{Doc, Index};

/// First bytes of the file.
const MAGIC: &[u8; 8] = b"NPNOTES\0";
/// Bumped whenever the layout or what is stored changes.
pub const FORMAT_VERSION: u32 = 5;
/// Last bytes of a complete file.
const TRAILER: &[u8; 4] = b"END\0";

/// Why a cache file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not our file, another version, or damaged.
    #[error("unusable cache file: {0}")]
    Format(String),
}

/// The cache file inside `dir`.
pub fn file(dir: &Path) -> PathBuf {
    dir.join("index.bin")
}

/// Writes `index` to `path` (creating its folder), replacing it at once.
pub fn save(index: &Index, path: &Path) -> Result<(), CacheError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = Vec::with_capacity(2048 * index.docs.len() + 64 * index.terms.len());
    out.extend_from_slice(MAGIC);
    out.u32(FORMAT_VERSION);
    out.u64(index.docs.len() as u64);
    let mut docs = Vec::with_capacity(1024 * index.docs.len());
    docs::write(&index.docs, &mut docs);
    out.u64(docs.len() as u64);
    out.extend_from_slice(&docs);
    postings::write(&index.terms, &mut out);
    write_resolved(index, &mut out);
    out.extend_from_slice(TRAILER);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(&out));
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Reads the index saved at `path`.
pub fn load(path: &Path) -> Result<Index, CacheError> {
    let started = std::time::Instant::now();
    let bytes = mapped::Mapped::open(path)?;
    let read_at = started.elapsed();
    let mut r = Reader::new(&bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("not a notes cache"));
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this module reads {FORMAT_VERSION}"
        )));
    }
    let doc_count = r.u64()? as usize;
    let docs_len = r.u64()? as usize;
    let docs_bytes = r.take(docs_len)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Documents and postings are decoded side by side, each in chunks on
    // every core.
    let (docs, terms) = std::thread::scope(|s| {
        let docs = s.spawn(|| {
            let mut r = Reader::new(docs_bytes);
            let docs = docs::read(&mut r, threads)?;
            if !r.is_done() {
                return Err(bad("the documents do not end where they should"));
            }
            Ok(docs)
        });
        let terms = postings::read(&mut r, doc_count, threads);
        let docs = docs
            .join()
            .map_err(|_| bad("decoding the documents failed"))?;
        Ok::<_, CacheError>((docs?, terms?))
    })?;
    let decoded_at = started.elapsed();
    if docs.len() != doc_count {
        return Err(bad("the document count does not match"));
    }
    let mut docs = docs;
    let files = read_resolved(&mut r, &mut docs)?;
    if r.take(TRAILER.len())? != TRAILER || !r.is_done() {
        return Err(bad("the file does not end where it should"));
    }
    let mut by_path = HashMap::with_capacity(docs.len());
    let mut dead = 0;
    for (id, doc) in docs.iter().enumerate() {
        match doc {
            Some(d) => {
                by_path.insert(d.path.clone(), id as u32);
            }
            None => dead += 1,
        }
    }
    let index = Index {
        docs,
        by_path,
        // Sorted on disk, so this builds the tree in one pass.
        terms: terms.into_iter().collect::<BTreeMap<_, _>>(),
        dead,
        files,
    };
    tracing::debug!(
        "cache loaded: read {:?}, decoded {:?}, maps {:?}",
        read_at,
        decoded_at - read_at,
        started.elapsed() - decoded_at
    );
    Ok(index)
}

/// Entry of a link that resolves to no file.
const NO_FILE: u32 = u32::MAX;

/// The resolved files: the table, then per live document its links'
/// entries.
fn write_resolved(index: &Index, out: &mut Vec<u8>) {
    let mut table: Vec<&Path> = Vec::with_capacity(index.files.len());
    let mut ids: HashMap<&Path, u32> = HashMap::with_capacity(index.files.len());
    let mut entries = Vec::new();
    for doc in index.docs() {
        entries.extend_from_slice(&(doc.resolved.len() as u32).to_le_bytes());
        for file in &doc.resolved {
            let id = match file.as_deref() {
                None => NO_FILE,
                Some(f) => *ids.entry(f).or_insert_with(|| {
                    table.push(f);
                    table.len() as u32 - 1
                }),
            };
            entries.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    for f in table {
        let bytes = f.as_os_str().as_bytes();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&entries);
}

/// Reads what [`write_resolved`] wrote into `docs`; returns the table.
fn read_resolved(
    r: &mut Reader<'_>,
    docs: &mut [Option<Doc>],
) -> Result<std::collections::HashSet<Arc<Path>>, CacheError> {
    let count = r.u64()? as usize;
    let mut table: Vec<Arc<Path>> = Vec::with_capacity(count.min(r.left()));
    for _ in 0..count {
        let len = r.u32()? as usize;
        table.push(Arc::from(Path::new(OsStr::from_bytes(r.take(len)?))));
    }
    for doc in docs.iter_mut().flatten() {
        let n = r.u32()? as usize;
        if n != doc.links.len() {
            return Err(bad("a document's resolved links do not match its links"));
        }
        let raw = r.take(n.checked_mul(4).ok_or_else(|| bad("link count"))?)?;
        doc.resolved = raw
            .chunks_exact(4)
            .map(|c| match u32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
                NO_FILE => Ok(None),
                id => table
                    .get(id as usize)
                    .map(|f| Some(f.clone()))
                    .ok_or_else(|| bad("a link names no file")),
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(table.into_iter().collect())
}

fn bad(why: impl Into<String>) -> CacheError {
    CacheError::Format(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Workspace, scan::build_doc};

    fn sample() -> Index {
        let ws = Workspace {
            name: "n".into(),
            root: "/n".into(),
        };
        let mut ix = Index::default();
        for (i, text) in ["* One\n{:two:}\n", "* Two\n- ( ) task\n"]
            .iter()
            .enumerate()
        {
            let path = PathBuf::from(format!("/n/{i}.norg"));
            let (doc, terms) = build_doc(&ws, std::slice::from_ref(&ws), &path, (1, 2), text);
            ix.upsert(doc, terms);
        }
        ix
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(dir.path());
        let ix = sample();
        save(&ix, &path).expect("save");
        let back = load(&path).expect("load");
        assert_eq!(back.docs, ix.docs);
        assert_eq!(back.terms, ix.terms);
        assert_eq!(back.search("two", 5, None), ix.search("two", 5, None));
    }

    #[test]
    fn every_field_and_dead_slots_round_trip() {
        use crate::norg::{Link, LinkKind, Meta, TaskState};
        let mut ix = sample();
        // Replacing a document leaves a dead slot; ids must stay.
        let ws = Workspace {
            name: "n".into(),
            root: "/n".into(),
        };
        let path = PathBuf::from("/n/0.norg");
        let (doc, terms) = build_doc(&ws, std::slice::from_ref(&ws), &path, (3, 4), "* Again\n");
        ix.upsert(doc, terms);
        let mut full = ix.docs().next().cloned().expect("doc");
        full.path = "/n/full.norg".into();
        full.parsed.meta = Meta {
            title: Some("T".into()),
            description: Some("d".into()),
            categories: vec!["a".into(), "é".into()],
            created: Some("c".into()),
            updated: Some(String::new()),
        };
        full.parsed.links = LinkKind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| Link {
                line: i as u32 + 1,
                target: format!("t{i}"),
                kind,
                file: (i % 2 == 0).then(|| format!("f{i}")),
                level: (i % 3 == 0).then_some(i as u8),
                name: (i % 2 == 1).then(|| "n".into()),
                description: Some("x".into()),
            })
            .collect();
        full.parsed.tasks = TaskState::ALL
            .iter()
            .map(|&state| crate::norg::Task {
                line: u32::MAX,
                state,
                text: "t".into(),
            })
            .collect();
        full.mtime_ns = u64::MAX;
        full.size = u64::MAX;
        ix.upsert(full, crate::text::Terms::default());
        assert!(ix.docs.iter().any(Option::is_none));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = file(dir.path());
        save(&ix, &file).expect("save");
        let back = load(&file).expect("load");
        assert_eq!(back.docs, ix.docs);
        assert_eq!(back.terms, ix.terms);
        assert_eq!(back.len(), ix.len());
    }

    #[test]
    fn links_to_one_file_share_its_path_before_and_after_a_restart() {
        let ws = Workspace {
            name: "n".into(),
            root: "/n".into(),
        };
        let mut ix = Index::default();
        for i in 0..2 {
            let path = PathBuf::from(format!("/n/{i}.norg"));
            let text = "{:shared:} {:shared:* Heading} {https://example.org}\n";
            let (doc, terms) = build_doc(&ws, std::slice::from_ref(&ws), &path, (1, 2), text);
            ix.upsert(doc, terms);
        }
        let shared = |ix: &Index| {
            let files: Vec<Arc<Path>> = ix
                .docs()
                .flat_map(|d| d.resolved.iter().flatten().cloned())
                .collect();
            assert_eq!(files.len(), 4);
            assert_eq!(&*files[0], Path::new("/n/shared.norg"));
            files.iter().all(|f| Arc::ptr_eq(f, &files[0]))
        };
        assert!(shared(&ix));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(dir.path());
        save(&ix, &path).expect("save");
        let back = load(&path).expect("load");
        assert_eq!(back.docs, ix.docs);
        assert!(shared(&back));
    }

    #[test]
    fn damage_of_any_kind_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(dir.path());
        save(&sample(), &path).expect("save");
        let good = std::fs::read(&path).expect("read");
        // Cut at every length, and flip the version.
        for cut in [0, 4, 12, 20, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).expect("write");
            assert!(load(&path).is_err(), "cut at {cut}");
        }
        let mut other = good.clone();
        other[8] = 99;
        std::fs::write(&path, &other).expect("write");
        let e = load(&path).expect_err("old version refused").to_string();
        assert!(e.contains("format version 99"), "{e}");
        std::fs::write(&path, b"garbage").expect("write");
        assert!(load(&path).is_err());
    }
}
