//! The in-memory index: documents by path, and term → postings for
//! full-text search.
//!
//! A changed or removed document gets a new id (or none); its old postings
//! stay until enough are dead to compact, and queries skip them. That keeps
//! an update at the cost of adding one document's terms.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::{
    norg::{Parsed, StoredLink},
    text,
};

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// Name of its workspace.
    pub workspace: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Modification time (ns since the epoch) when read.
    pub mtime_ns: u64,
    /// Size in bytes when read.
    pub size: u64,
    /// The metadata title, else the first heading, else the file name.
    pub title: String,
    /// What the parser found (its `links` moved to `links`).
    pub parsed: Parsed,
    /// The links, compact.
    pub links: Vec<StoredLink>,
    /// For each of `links`, the Norg file it points into, if any. Shared
    /// with every other link to that file (see [`Index::upsert`]); the
    /// cache stores them in a table of their own.
    #[serde(skip)]
    pub resolved: Vec<Option<Arc<Path>>>,
}

/// A term's occurrence in one document: 8 bytes, since there are millions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// Document id.
    pub doc: u32,
    /// Line of the strongest occurrence (high 28 bits) and its weight (low
    /// 4 bits, see [`crate::norg::weight`]).
    packed: u32,
}

impl Posting {
    /// Lines past this one are recorded as this one.
    const MAX_LINE: u32 = (1 << 28) - 1;

    /// An occurrence on `line` with `weight` (at most 15).
    pub fn new(doc: u32, line: u32, weight: u8) -> Posting {
        Posting {
            doc,
            packed: (line.min(Self::MAX_LINE) << 4) | u32::from(weight & 0xf),
        }
    }

    /// Rebuilds a posting from its stored form.
    pub fn from_parts(doc: u32, packed: u32) -> Posting {
        Posting { doc, packed }
    }

    /// The stored form of line and weight.
    pub fn packed(&self) -> u32 {
        self.packed
    }

    /// 1-based line.
    pub fn line(&self) -> u32 {
        self.packed >> 4
    }

    /// Weight.
    pub fn weight(&self) -> u8 {
        (self.packed & 0xf) as u8
    }
}

/// A search result before it is dressed for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Document id.
    pub doc: u32,
    /// Sum of the matched terms' weights.
    pub score: u32,
    /// Line of the strongest matched occurrence.
    pub line: u32,
}

/// Most terms one prefix expands to; a one-letter prefix would otherwise
/// touch most of the vocabulary.
const MAX_PREFIX_TERMS: usize = 2000;

/// Documents and postings.
#[derive(Debug, Default)]
pub struct Index {
    pub(crate) docs: Vec<Option<Doc>>,
    pub(crate) by_path: HashMap<PathBuf, u32>,
    pub(crate) terms: BTreeMap<String, Vec<Posting>>,
    pub(crate) dead: usize,
    /// One copy of each file links resolve to: most links of a workspace
    /// point into a few files, and the copies were a tenth of its memory.
    pub(crate) files: HashSet<Arc<Path>>,
}

impl Index {
    /// Adds or replaces the document at `doc.path`; true if it replaced one.
    pub fn upsert(&mut self, mut doc: Doc, terms: text::Terms) -> bool {
        let replaced = self.remove(&doc.path);
        for file in doc.resolved.iter_mut().flatten() {
            *file = self.intern(file);
        }
        let id = self.docs.len() as u32;
        for (term, weight, line) in terms.into_entries() {
            self.terms
                .entry(term)
                .or_default()
                .push(Posting::new(id, line, weight));
        }
        self.by_path.insert(doc.path.clone(), id);
        self.docs.push(Some(doc));
        replaced
    }

    /// The shared copy of `file`.
    pub(crate) fn intern(&mut self, file: &Arc<Path>) -> Arc<Path> {
        if let Some(shared) = self.files.get(file) {
            return shared.clone();
        }
        self.files.insert(file.clone());
        file.clone()
    }

    /// Removes the document at `path`; true if there was one.
    pub fn remove(&mut self, path: &Path) -> bool {
        let Some(id) = self.by_path.remove(path) else {
            return false;
        };
        self.docs[id as usize] = None;
        self.dead += 1;
        self.maybe_compact();
        true
    }

    /// Removes every document under directory `dir`; returns their paths.
    pub fn remove_under(&mut self, dir: &Path) -> Vec<(String, PathBuf)> {
        let gone: Vec<(String, PathBuf)> = self
            .docs()
            .filter(|d| d.path.starts_with(dir))
            .map(|d| (d.workspace.clone(), d.path.clone()))
            .collect();
        for (_, path) in &gone {
            self.remove(path);
        }
        gone
    }

    /// The document at `path`.
    pub fn get(&self, path: &Path) -> Option<&Doc> {
        self.by_path
            .get(path)
            .and_then(|&id| self.docs[id as usize].as_ref())
    }

    /// The document with id `id`, if it is still live.
    pub fn doc(&self, id: u32) -> Option<&Doc> {
        self.docs.get(id as usize).and_then(Option::as_ref)
    }

    /// Every live document.
    pub fn docs(&self) -> impl Iterator<Item = &Doc> {
        self.docs.iter().flatten()
    }

    /// Number of live documents.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no document is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Number of distinct terms (dead ones included until compaction).
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// Drops the postings of removed documents once they are a fair share.
    fn maybe_compact(&mut self) {
        if self.dead > 1024 && self.dead * 4 > self.docs.len() {
            self.compact();
        }
    }

    /// Gives back the room postings lists grew into (after a large index).
    pub fn shrink_to_fit(&mut self) {
        for postings in self.terms.values_mut() {
            postings.shrink_to_fit();
        }
        self.docs.shrink_to_fit();
    }

    /// Drops every posting of a removed document, and terms left empty.
    pub fn compact(&mut self) {
        let docs = &self.docs;
        self.terms.retain(|_, postings| {
            postings.retain(|p| docs[p.doc as usize].is_some());
            !postings.is_empty()
        });
        // A file only the table still holds is no link's any more.
        self.files.retain(|f| Arc::strong_count(f) > 1);
        self.dead = 0;
    }

    /// Documents containing every term of `query` (the last one as a
    /// prefix), best first: title above headings above body, then by path.
    pub fn search(&self, query: &str, limit: usize, workspace: Option<&str>) -> Vec<Hit> {
        let terms: Vec<String> = text::terms(query).collect();
        let Some((last, rest)) = terms.split_last() else {
            return Vec::new();
        };
        let mut matches: Vec<Vec<(u8, u32)>> = rest.iter().map(|t| self.exact(t)).collect();
        matches.push(self.prefixed(last));
        let mut hits = Vec::new();
        'docs: for id in 0..self.docs.len() {
            let (mut score, mut best) = (0u32, (0u8, 0u32));
            for m in &matches {
                let (weight, line) = m[id];
                if weight == 0 {
                    continue 'docs;
                }
                score += u32::from(weight);
                if weight > best.0 {
                    best = (weight, line);
                }
            }
            let Some(doc) = self.doc(id as u32) else {
                continue;
            };
            if workspace.is_some_and(|w| w != doc.workspace) {
                continue;
            }
            hits.push(Hit {
                doc: id as u32,
                score,
                line: best.1,
            });
        }
        let path = |h: &Hit| {
            self.doc(h.doc)
                .map_or(&[][..], |d| d.path.as_os_str().as_bytes())
        };
        let order = |a: &Hit, b: &Hit| {
            b.score
                .cmp(&a.score)
                .then_with(|| path_order(path(a), path(b)))
        };
        if hits.len() > limit && limit > 0 {
            hits.select_nth_unstable_by(limit - 1, order);
        }
        hits.truncate(limit);
        hits.sort_unstable_by(order);
        hits
    }

    /// For each document id, the term's (weight, line), weight 0 if absent.
    fn exact(&self, term: &str) -> Vec<(u8, u32)> {
        let mut out = vec![(0, 0); self.docs.len()];
        for p in self.terms.get(term).into_iter().flatten() {
            out[p.doc as usize] = (p.weight(), p.line());
        }
        out
    }

    /// Like [`Index::exact`] for every term starting with `prefix`, each
    /// document with its strongest such occurrence.
    fn prefixed(&self, prefix: &str) -> Vec<(u8, u32)> {
        let mut out = vec![(0, 0); self.docs.len()];
        let range = self
            .terms
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(t, _)| t.starts_with(prefix))
            .take(MAX_PREFIX_TERMS);
        for (_, postings) in range {
            for p in postings {
                let slot = &mut out[p.doc as usize];
                if p.weight() > slot.0 {
                    *slot = (p.weight(), p.line());
                }
            }
        }
        out
    }
}
/// The order of [`Path`]'s `Ord` for the clean absolute paths the index
/// holds, on their bytes: a separator sorts below every other byte, as the
/// end of a component does. Ranking compares paths of equal scores, often
/// thousands of times per query, and results are sorted by path; `Path`'s
/// comparison splits both into components each time.
pub fn path_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let rank = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norg::weight;

    #[test]
    fn path_order_is_the_order_of_paths() {
        let paths = [
            "/a",
            "/a/b",
            "/a-b",
            "/a/b/c",
            "/a.b/c",
            "/a/b-c",
            "/a/b/c-d",
            "/ab",
            "/a/bc",
            "/a0/b",
            "/A/b",
            "/a/é",
            "/a/e",
            "/topic1/note10.norg",
            "/topic1/note1.norg",
            "/topic10/note1.norg",
            "/topic1/note1/x.norg",
        ];
        for a in paths {
            for b in paths {
                assert_eq!(
                    path_order(a.as_bytes(), b.as_bytes()),
                    Path::new(a).cmp(Path::new(b)),
                    "{a} vs {b}"
                );
            }
        }
    }

    fn doc(path: &str, ws: &str) -> Doc {
        Doc {
            workspace: ws.into(),
            path: path.into(),
            mtime_ns: 0,
            size: 0,
            title: path.into(),
            parsed: Parsed::default(),
            links: Vec::new(),
            resolved: Vec::new(),
        }
    }

    fn add(index: &mut Index, path: &str, ws: &str, texts: &[(&str, u8, u32)]) {
        let mut terms = text::Terms::default();
        for (t, w, l) in texts {
            terms.add_text(t, *w, *l);
        }
        index.upsert(doc(path, ws), terms);
    }

    fn paths(index: &Index, hits: &[Hit]) -> Vec<String> {
        hits.iter()
            .map(|h| index.doc(h.doc).expect("live").path.display().to_string())
            .collect()
    }

    #[test]
    fn ranks_title_above_heading_above_body_and_ands_terms() {
        let mut ix = Index::default();
        add(&mut ix, "/b", "w", &[("rust notes", weight::BODY, 5)]);
        add(&mut ix, "/a", "w", &[("rust notes", weight::TITLE, 1)]);
        add(
            &mut ix,
            "/c",
            "w",
            &[("rust", weight::HEADING, 2), ("notes", 1, 3)],
        );
        add(&mut ix, "/d", "w", &[("rust only", weight::TITLE, 1)]);
        let hits = ix.search("Rust notes", 10, None);
        assert_eq!(paths(&ix, &hits), ["/a", "/c", "/b"]);
        assert_eq!(hits[1].line, 2);
    }

    #[test]
    fn last_term_matches_as_prefix_only() {
        let mut ix = Index::default();
        add(&mut ix, "/a", "w", &[("gardening tips", 1, 1)]);
        add(&mut ix, "/b", "w", &[("garden", 1, 1)]);
        assert_eq!(paths(&ix, &ix.search("gard", 10, None)), ["/a", "/b"]);
        assert!(ix.search("gard tips", 10, None).is_empty());
        assert_eq!(paths(&ix, &ix.search("tips gard", 10, None)), ["/a"]);
    }

    #[test]
    fn replaced_and_removed_documents_drop_out() {
        let mut ix = Index::default();
        add(&mut ix, "/a", "w", &[("old", 1, 1)]);
        add(&mut ix, "/a", "w", &[("new", 1, 1)]);
        assert!(ix.search("old", 10, None).is_empty());
        assert_eq!(paths(&ix, &ix.search("new", 10, None)), ["/a"]);
        ix.remove(Path::new("/a"));
        assert!(ix.search("new", 10, None).is_empty());
        ix.compact();
        assert_eq!(ix.term_count(), 0);
    }

    #[test]
    fn workspace_filter_and_limit() {
        let mut ix = Index::default();
        for i in 0..5 {
            add(&mut ix, &format!("/x{i}"), "x", &[("word", 1, 1)]);
            add(&mut ix, &format!("/y{i}"), "y", &[("word", 1, 1)]);
        }
        let hits = ix.search("word", 3, Some("y"));
        assert_eq!(paths(&ix, &hits), ["/y0", "/y1", "/y2"]);
    }
}
