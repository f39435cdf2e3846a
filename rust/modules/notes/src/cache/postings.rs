//! The postings section: per term its text, then its postings as varints,
//! each document id as the step from the one before (postings are in id
//! order, so steps are small) and line and weight packed in one number.
//! That is less than half the bytes of fixed-width postings, and the file
//! is read whole at every restart.

use std::collections::BTreeMap;

use super::{
    bad,
    bytes::{Put, Reader},
    CacheError,
};
use crate::index::Posting;

/// Writes every term with its postings.
pub(crate) fn write(terms: &BTreeMap<String, Vec<Posting>>, out: &mut Vec<u8>) {
    out.u64(terms.len() as u64);
    for (term, postings) in terms {
        out.bytes(term.as_bytes());
        out.var(postings.len() as u64);
        let mut prev = 0u32;
        for p in postings {
            // Wrapping, so that an order other than ascending still
            // round-trips (in more bytes).
            out.var(u64::from(p.doc.wrapping_sub(prev)));
            out.var(u64::from(p.packed()));
            prev = p.doc;
        }
    }
}

/// Reads what [`write`] wrote, in term order; every posting must name one
/// of `doc_count` documents.
pub(crate) fn read(
    r: &mut Reader<'_>,
    doc_count: usize,
) -> Result<Vec<(String, Vec<Posting>)>, CacheError> {
    let term_count = r.u64()? as usize;
    let mut terms = Vec::with_capacity(term_count.min(r.left()));
    for _ in 0..term_count {
        let term = r.str()?.to_owned();
        // At most one posting per byte left: a damaged count fails below.
        let n = r.count()?;
        let mut postings = Vec::with_capacity(n);
        let mut doc = 0u32;
        for _ in 0..n {
            doc = doc.wrapping_add(r.var32()?);
            if doc as usize >= doc_count {
                return Err(bad("a posting names no document"));
            }
            postings.push(Posting::from_parts(doc, r.var32()?));
        }
        terms.push((term, postings));
    }
    Ok(terms)
}
