//! The documents section: every document as a flat record of varints and
//! length-prefixed strings (no field names, no per-value type tags), in
//! chunks that decode on separate threads.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf};

use super::{
    bad,
    bytes::{read_chunks, write_chunks, Put, Reader},
    CacheError,
};
use crate::{
    index::Doc,
    norg::{Heading, Link, LinkKind, Meta, Parsed, StoredLink, Task, TaskState},
};

/// Documents per chunk: enough that a chunk is worth a thread's time,
/// few enough that the chunks share out evenly.
const CHUNK_DOCS: usize = 256;

/// Writes `docs` (dead slots included, so ids stay), in chunks.
pub(crate) fn write(docs: &[Option<Doc>], out: &mut Vec<u8>) {
    write_chunks(docs, CHUNK_DOCS, out, |slot, chunk| match slot {
        None => chunk.push(0),
        Some(doc) => {
            chunk.push(1);
            put_doc(doc, chunk);
        }
    });
}

/// Reads what [`write`] wrote, on `threads` threads.
pub(crate) fn read(r: &mut Reader<'_>, threads: usize) -> Result<Vec<Option<Doc>>, CacheError> {
    read_chunks(r, threads, |r| match r.u8()? {
        0 => Ok(None),
        1 => get_doc(r).map(Some),
        _ => Err(bad("a document slot is neither live nor dead")),
    })
}

fn put_doc(d: &Doc, out: &mut Vec<u8>) {
    out.bytes(d.workspace.as_bytes());
    out.bytes(d.path.as_os_str().as_bytes());
    out.u64(d.mtime_ns);
    out.var(d.size);
    out.bytes(d.title.as_bytes());
    put_meta(&d.parsed.meta, out);
    out.var(d.parsed.headings.len() as u64);
    for h in &d.parsed.headings {
        out.var(u64::from(h.line));
        out.push(h.level);
        out.bytes(h.text.as_bytes());
    }
    out.var(d.parsed.links.len() as u64);
    for l in &d.parsed.links {
        put_link(l, out);
    }
    out.var(d.parsed.tasks.len() as u64);
    for t in &d.parsed.tasks {
        out.var(u64::from(t.line));
        out.push(t.state as u8);
        out.bytes(t.text.as_bytes());
    }
    out.var(d.links.len() as u64);
    for l in &d.links {
        out.var(u64::from(l.line));
        out.bytes(l.target.as_bytes());
        out.opt_str(l.description.as_deref());
    }
}

fn get_doc(r: &mut Reader<'_>) -> Result<Doc, CacheError> {
    let workspace = r.str()?.to_owned();
    let path = PathBuf::from(OsStr::from_bytes(r.bytes()?));
    let mtime_ns = r.u64()?;
    let size = r.var()?;
    let title = r.str()?.to_owned();
    let meta = get_meta(r)?;
    let headings = list(r, |r| {
        Ok(Heading {
            line: r.var32()?,
            level: r.u8()?,
            text: r.str()?.to_owned(),
        })
    })?;
    let full_links = list(r, get_link)?;
    let tasks = list(r, |r| {
        Ok(Task {
            line: r.var32()?,
            state: *TaskState::ALL
                .get(usize::from(r.u8()?))
                .ok_or_else(|| bad("unknown task state"))?,
            text: r.str()?.to_owned(),
        })
    })?;
    let links = list(r, |r| {
        Ok(StoredLink {
            line: r.var32()?,
            target: r.str()?.into(),
            description: r.opt_str()?.map(Into::into),
        })
    })?;
    Ok(Doc {
        workspace,
        path,
        mtime_ns,
        size,
        title,
        parsed: Parsed {
            meta,
            headings,
            links: full_links,
            tasks,
        },
        links,
        resolved: Vec::new(),
    })
}

fn put_meta(m: &Meta, out: &mut Vec<u8>) {
    out.opt_str(m.title.as_deref());
    out.opt_str(m.description.as_deref());
    out.var(m.categories.len() as u64);
    for c in &m.categories {
        out.bytes(c.as_bytes());
    }
    out.opt_str(m.created.as_deref());
    out.opt_str(m.updated.as_deref());
}

fn get_meta(r: &mut Reader<'_>) -> Result<Meta, CacheError> {
    Ok(Meta {
        title: opt_string(r)?,
        description: opt_string(r)?,
        categories: list(r, |r| Ok(r.str()?.to_owned()))?,
        created: opt_string(r)?,
        updated: opt_string(r)?,
    })
}

fn put_link(l: &Link, out: &mut Vec<u8>) {
    out.var(u64::from(l.line));
    out.bytes(l.target.as_bytes());
    out.push(l.kind as u8);
    out.opt_str(l.file.as_deref());
    out.push(l.level.map_or(0, |v| v.saturating_add(1)));
    out.opt_str(l.name.as_deref());
    out.opt_str(l.description.as_deref());
}

fn get_link(r: &mut Reader<'_>) -> Result<Link, CacheError> {
    Ok(Link {
        line: r.var32()?,
        target: r.str()?.to_owned(),
        kind: *LinkKind::ALL
            .get(usize::from(r.u8()?))
            .ok_or_else(|| bad("unknown link kind"))?,
        file: opt_string(r)?,
        level: r.u8()?.checked_sub(1),
        name: opt_string(r)?,
        description: opt_string(r)?,
    })
}

fn opt_string(r: &mut Reader<'_>) -> Result<Option<String>, CacheError> {
    Ok(r.opt_str()?.map(str::to_owned))
}

/// A count, then that many items read by `item`, in a vector of exactly
/// that size.
fn list<'a, T>(
    r: &mut Reader<'a>,
    item: impl Fn(&mut Reader<'a>) -> Result<T, CacheError>,
) -> Result<Vec<T>, CacheError> {
    let n = r.count()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(item(r)?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache stores kinds and states by their position in `ALL`.
    #[test]
    fn kinds_and_states_are_stored_by_their_place_in_all() {
        for (i, kind) in LinkKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, state) in TaskState::ALL.iter().enumerate() {
            assert_eq!(*state as usize, i);
        }
    }
}
