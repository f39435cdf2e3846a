//! The cache's primitives: little-endian integers, LEB128 varints and
//! length-prefixed strings, written to a `Vec<u8>` and read back with every
//! length checked against what is left.

use super::{bad, CacheError};

/// Appends the primitives to a byte buffer.
pub(crate) trait Put {
    /// `v` as 4 little-endian bytes.
    fn u32(&mut self, v: u32);
    /// `v` as 8 little-endian bytes.
    fn u64(&mut self, v: u64);
    /// `v` in LEB128: one byte below 128.
    fn var(&mut self, v: u64);
    /// Length, then the bytes.
    fn bytes(&mut self, b: &[u8]);
    /// `None` as 0, else length + 1 and the bytes.
    fn opt_str(&mut self, s: Option<&str>);
}

impl Put for Vec<u8> {
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.extend_from_slice(b);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.var(0),
            Some(s) => {
                self.var(s.len() as u64 + 1);
                self.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Reads the primitives from a slice; running past its end is an error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// Bytes not read yet: an upper bound for any count read next.
    pub(crate) fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CacheError> {
        if n > self.left() {
            return Err(bad("truncated"));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    /// A byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, CacheError> {
        let b = *self.bytes.get(self.at).ok_or_else(|| bad("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    /// 4 little-endian bytes.
    pub(crate) fn u32(&mut self) -> Result<u32, CacheError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// 8 little-endian bytes.
    pub(crate) fn u64(&mut self) -> Result<u64, CacheError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A LEB128 varint of at most 64 bits.
    #[inline]
    pub(crate) fn var(&mut self) -> Result<u64, CacheError> {
        // Most numbers (lengths, lines, steps between ids) are one byte.
        if let Some(&b) = self.bytes.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(u64::from(b));
            }
        }
        self.var_long()
    }

    fn var_long(&mut self) -> Result<u64, CacheError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("a number is too long"))
    }

    /// A varint that must fit a `u32`.
    #[inline]
    pub(crate) fn var32(&mut self) -> Result<u32, CacheError> {
        u32::try_from(self.var()?).map_err(|_| bad("a number is too large"))
    }

    /// A count of things each at least one byte long, so never more than
    /// the bytes left (a damaged count cannot ask for a huge allocation).
    #[inline]
    pub(crate) fn count(&mut self) -> Result<usize, CacheError> {
        let n = self.var()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.left())
            .ok_or_else(|| bad("a count is larger than the file"))
    }

    /// Length-prefixed bytes.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CacheError> {
        let n = self.count()?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, CacheError> {
        utf8(self.bytes()?)
    }

    /// What [`Put::opt_str`] wrote.
    #[inline]
    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, CacheError> {
        // Not `count`: length + 1 may be one more than the bytes left.
        match self.var()? {
            0 => Ok(None),
            n => {
                let len = usize::try_from(n - 1).map_err(|_| bad("truncated"))?;
                self.take(len).and_then(utf8).map(Some)
            }
        }
    }
}

/// Writes `items` in chunks of `per_chunk`: the count of chunks, each
/// chunk's length, then the chunks, so that a reader can hand them to
/// separate threads.
pub(crate) fn write_chunks<T>(
    items: &[T],
    per_chunk: usize,
    out: &mut Vec<u8>,
    put: impl Fn(&T, &mut Vec<u8>),
) {
    let chunks: Vec<Vec<u8>> = items
        .chunks(per_chunk.max(1))
        .map(|part| {
            let mut chunk = Vec::new();
            for item in part {
                put(item, &mut chunk);
            }
            chunk
        })
        .collect();
    out.u64(chunks.len() as u64);
    for chunk in &chunks {
        out.u64(chunk.len() as u64);
    }
    for chunk in &chunks {
        out.extend_from_slice(chunk);
    }
}

/// Decodes what [`write_chunks`] wrote, each item with `get`, the chunks
/// shared out over `threads` threads; the items come back in order.
pub(crate) fn read_chunks<'a, T: Send>(
    r: &mut Reader<'a>,
    threads: usize,
    get: impl Fn(&mut Reader<'a>) -> Result<T, CacheError> + Sync,
) -> Result<Vec<T>, CacheError> {
    let count = r.u64()? as usize;
    if count > r.left() / 8 {
        return Err(bad("the chunk count is larger than the file"));
    }
    let lengths = (0..count)
        .map(|_| r.u64().map(|n| n as usize))
        .collect::<Result<Vec<_>, _>>()?;
    let chunks = lengths
        .into_iter()
        .map(|n| r.take(n))
        .collect::<Result<Vec<_>, _>>()?;
    let per_thread = chunks.len().div_ceil(threads.max(1)).max(1);
    let get = &get;
    let parts: Vec<Result<Vec<T>, CacheError>> = std::thread::scope(|s| {
        let workers: Vec<_> = chunks
            .chunks(per_thread)
            .map(|group| {
                s.spawn(move || {
                    let mut items = Vec::new();
                    for chunk in group {
                        let mut r = Reader::new(chunk);
                        while !r.is_done() {
                            items.push(get(&mut r)?);
                        }
                    }
                    Ok(items)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(bad("decoding failed"))))
            .collect()
    });
    let mut items = Vec::new();
    for part in parts {
        items.append(&mut part?);
    }
    Ok(items)
}

fn utf8(b: &[u8]) -> Result<&str, CacheError> {
    std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_primitive_reads_back_and_nothing_reads_past_the_end() {
        let mut out = Vec::new();
        out.u32(7);
        out.u64(u64::MAX);
        for v in [0, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            out.var(v);
        }
        out.bytes(b"abc");
        out.opt_str(None);
        out.opt_str(Some(""));
        out.opt_str(Some("é"));
        let mut r = Reader::new(&out);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        for v in [0, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(r.var().unwrap(), v);
        }
        assert_eq!(r.str().unwrap(), "abc");
        assert_eq!(r.opt_str().unwrap(), None);
        assert_eq!(r.opt_str().unwrap(), Some(""));
        assert_eq!(r.opt_str().unwrap(), Some("é"));
        assert!(r.is_done());
        assert!(r.u8().is_err());
        // A length beyond the end, and a varint that never ends.
        assert!(Reader::new(&[5, b'a']).str().is_err());
        assert!(Reader::new(&[0xff; 11]).var().is_err());
        assert!(Reader::new(&[2, 0xc3, 0x28]).str().is_err());
    }
}
