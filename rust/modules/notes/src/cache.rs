//! The index on disk, so that a restart re-reads only changed files.
//!
//! One file, `index.bin` in the cache dir: a versioned header, the
//! documents as MessagePack, then the postings in a plain binary layout
//! (they are most of the bytes, and reading them must be fast), then the
//! files links resolve to: a table of distinct paths, and per document one
//! table entry (or none) per link, so that a restart shares them again. Written to
//! a temporary file and renamed over the old one, so a crash leaves either.
//! Anything unexpected on reading is an error the caller answers by
//! rebuilding from the files.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::index::{Doc, Index, Posting};

/// First bytes of the file.
const MAGIC: &[u8; 8] = b"NPNOTES\0";
/// Bumped whenever the layout or what is stored changes.
pub const FORMAT_VERSION: u32 = 4;
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
    let docs =
        rmp_serde::to_vec(&index.docs).map_err(|e| CacheError::Format(format!("encode: {e}")))?;
    let mut out = Vec::with_capacity(docs.len() + 64 * index.terms.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    out.extend_from_slice(&(index.docs.len() as u64).to_le_bytes());
    out.extend_from_slice(&docs);
    out.extend_from_slice(&(index.terms.len() as u64).to_le_bytes());
    for (term, postings) in &index.terms {
        out.extend_from_slice(&(term.len() as u32).to_le_bytes());
        out.extend_from_slice(term.as_bytes());
        out.extend_from_slice(&(postings.len() as u32).to_le_bytes());
        for p in postings {
            out.extend_from_slice(&p.doc.to_le_bytes());
            out.extend_from_slice(&p.packed().to_le_bytes());
        }
    }
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
    let bytes = std::fs::read(path)?;
    let read_at = started.elapsed();
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("not a notes cache"));
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this module reads {FORMAT_VERSION}"
        )));
    }
    let docs_len = r.u64()? as usize;
    let doc_count = r.u64()? as usize;
    let docs_bytes = r.take(docs_len)?;
    // Documents and postings are decoded side by side: they are about
    // half of the work each.
    let (docs, terms) = std::thread::scope(|s| {
        let docs = s.spawn(|| {
            rmp_serde::from_slice::<Vec<Option<Doc>>>(docs_bytes)
                .map_err(|e| bad(format!("documents: {e}")))
        });
        let terms = read_postings(&mut r, doc_count);
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
    if r.take(TRAILER.len())? != TRAILER || r.at != bytes.len() {
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

/// The term → postings section, checked against the number of documents.
fn read_postings(
    r: &mut Reader<'_>,
    doc_count: usize,
) -> Result<Vec<(String, Vec<Posting>)>, CacheError> {
    let term_count = r.u64()? as usize;
    let mut terms = Vec::with_capacity(term_count.min(r.bytes.len()));
    for _ in 0..term_count {
        let len = r.u32()? as usize;
        let term = std::str::from_utf8(r.take(len)?)
            .map_err(|_| bad("a term is not UTF-8"))?
            .to_owned();
        let n = r.u32()? as usize;
        let raw = r.take(n.checked_mul(8).ok_or_else(|| bad("posting count"))?)?;
        let mut postings = Vec::with_capacity(n);
        for chunk in raw.chunks_exact(8) {
            let doc = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if doc as usize >= doc_count {
                return Err(bad("a posting names no document"));
            }
            let packed = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            postings.push(Posting::from_parts(doc, packed));
        }
        terms.push((term, postings));
    }
    Ok(terms)
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
    let mut table: Vec<Arc<Path>> = Vec::with_capacity(count.min(r.bytes.len()));
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

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CacheError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, CacheError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, CacheError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
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
