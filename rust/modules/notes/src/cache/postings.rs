//! The postings section: per term its text, the number of its postings,
//! then each as 8 fixed bytes (document id, line and weight), in chunks of
//! terms that decode on separate threads. Fixed width, because decoding
//! millions of varints cost more than mapping the extra bytes.

use std::collections::BTreeMap;

use super::{
    bad,
    bytes::{read_chunks, write_chunks, Put, Reader},
    CacheError,
};
use crate::index::Posting;

/// Terms per chunk.
const CHUNK_TERMS: usize = 512;

/// Writes every term with its postings.
pub(crate) fn write(terms: &BTreeMap<String, Vec<Posting>>, out: &mut Vec<u8>) {
    let terms: Vec<(&String, &Vec<Posting>)> = terms.iter().collect();
    write_chunks(&terms, CHUNK_TERMS, out, |(term, postings), chunk| {
        chunk.bytes(term.as_bytes());
        chunk.var(postings.len() as u64);
        for p in postings.iter() {
            chunk.u32(p.doc);
            chunk.u32(p.packed());
        }
    });
}

/// Reads what [`write`] wrote on `threads` threads, in term order; every
/// posting must name one of `doc_count` documents.
pub(crate) fn read(
    r: &mut Reader<'_>,
    doc_count: usize,
    threads: usize,
) -> Result<Vec<(String, Vec<Posting>)>, CacheError> {
    read_chunks(r, threads, |r| {
        let term = r.str()?.to_owned();
        let n = r.count()?;
        let raw = r.take(n.checked_mul(8).ok_or_else(|| bad("posting count"))?)?;
        let mut postings = Vec::with_capacity(n);
        for p in raw.chunks_exact(8) {
            let doc = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            if doc as usize >= doc_count {
                return Err(bad("a posting names no document"));
            }
            postings.push(Posting::from_parts(
                doc,
                u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
            ));
        }
        Ok((term, postings))
    })
}
