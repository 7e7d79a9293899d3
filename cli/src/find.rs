//! Finding keys in a stream of bytes: where each is (line, column), read in bounded chunks.
//!
//! The one idea: a fast substring search for `lnx_` (memchr's SIMD `memmem`) skips everything
//! that cannot start a key, and each anchor is confirmed by `shared::scan::key_at` (boundary,
//! quote splits, checksum, encoding, version). Lines are counted only where a key is found, or
//! when a chunk is dropped, so a tree with no key costs a search and nothing else.

use std::io::{self, Read};

use memchr::memmem::Finder;
use shared::key;
use shared::scan::{self, Hit};

/// Bytes read at a time. A file up to this size is scanned from one buffer, and its lines are
/// counted only if a key is found in it.
pub const CHUNK: usize = 8 << 20;

/// Bytes at the start of a file looked at to tell it is binary: a NUL among them means binary,
/// the heuristic git uses (its first 8000 bytes). Minified text has no NUL and is scanned.
pub const BINARY_PROBE: usize = 8000;

/// A key found in a stream.
#[derive(Debug)]
pub struct Located {
    /// 1-based line of the key's first character.
    pub line: u64,
    /// 1-based byte column of its first character.
    pub column: u64,
    /// The key.
    pub hit: Hit,
}

/// How a stream was scanned.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// Read to the end.
    Whole,
    /// Skipped: a NUL in its first [`BINARY_PROBE`] bytes.
    Binary,
}

/// A reusable scanner: its buffer is kept between streams (one per worker thread).
pub struct Scanner {
    finder: Finder<'static>,
    buf: Vec<u8>,
    chunk: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::with_chunk(CHUNK)
    }
}

/// Line bookkeeping for a buffer that drops its front as it goes.
struct Lines {
    /// Line number at `counted_to`.
    line: u64,
    /// Buffer offset up to which newlines are counted.
    counted_to: usize,
    /// Buffer offset where the line containing `counted_to` starts; negative when it started
    /// in a dropped part.
    line_start: i64,
}

impl Lines {
    /// Counts newlines up to `to` (at or after `counted_to`).
    fn advance(&mut self, buf: &[u8], to: usize) {
        for nl in memchr::memchr_iter(b'\n', &buf[self.counted_to..to]) {
            self.line += 1;
            self.line_start = (self.counted_to + nl + 1) as i64;
        }
        self.counted_to = to;
    }
}

impl Scanner {
    /// A scanner reading `chunk` bytes at a time (at least what a key may span): tests make it
    /// small to cross many chunk boundaries.
    pub fn with_chunk(chunk: usize) -> Self {
        Self {
            finder: Finder::new(key::PREFIX.as_bytes()).into_owned(),
            buf: Vec::new(),
            chunk: chunk.max(2 * scan::MAX_SPAN),
        }
    }

    /// Scans `reader` to its end and calls `found` for each key, in order. With `skip_binary`,
    /// a stream with a NUL in its first [`BINARY_PROBE`] bytes is not scanned.
    pub fn scan(
        &mut self,
        mut reader: impl Read,
        skip_binary: bool,
        mut found: impl FnMut(Located),
    ) -> io::Result<Scanned> {
        self.buf.clear();
        let mut lines = Lines {
            line: 1,
            counted_to: 0,
            line_start: 0,
        };
        // Offset from which anchors are still to be looked for.
        let mut from = 0;
        let mut first = true;
        loop {
            let eof = fill(&mut reader, &mut self.buf, self.chunk)?;
            let buf = &self.buf[..];
            if first {
                first = false;
                if skip_binary && memchr::memchr(0, &buf[..buf.len().min(BINARY_PROBE)]).is_some() {
                    return Ok(Scanned::Binary);
                }
            }
            // An anchor is decided here only if the whole span `key_at` may look at is read.
            let limit = if eof {
                buf.len()
            } else {
                buf.len() - scan::MAX_SPAN
            };
            let window = &buf[from..buf.len().min(limit + key::PREFIX.len() - 1)];
            for at in self.finder.find_iter(window) {
                if let Some(hit) = scan::key_at(buf, from + at) {
                    lines.advance(buf, hit.start);
                    let column = hit.start as i64 - lines.line_start + 1;
                    found(Located {
                        line: lines.line,
                        column: column as u64,
                        hit,
                    });
                }
            }
            if eof {
                return Ok(Scanned::Whole);
            }
            // Keep the undecided tail, and the byte before it (a key's left boundary).
            let keep_from = limit - 1;
            lines.advance(buf, keep_from);
            self.buf.drain(..keep_from);
            lines.counted_to = 0;
            lines.line_start -= keep_from as i64;
            from = 1;
        }
    }
}

/// Appends to `buf` until it holds `chunk` bytes or the stream ends; `true` at the end. Reads
/// into the buffer's spare capacity: a small file costs its own size, not a zeroed chunk.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, chunk: usize) -> io::Result<bool> {
    let want = chunk.max(buf.len() + scan::MAX_SPAN + 1) - buf.len();
    let read = reader.take(want as u64).read_to_end(buf)?;
    Ok(read < want)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shared::key::{Claims, Environment, KeyId};
    use shared::mac::{Keyring, Secret};
    use shared::scope::Permission;

    pub(crate) fn key(n: u8) -> String {
        let ring = Keyring::new(1, &[(1, Secret::new(vec![1; 32]).unwrap())]).unwrap();
        let claims = Claims {
            kid: 1,
            account_id: 42,
            key_id: KeyId([n; 16]),
            environment: Environment::Development,
            scopes: Permission::ReadOnly.scopes(),
            issued_at: 1_700_000_000,
            expires_at: None,
        };
        shared::key::issue(&claims, &ring).unwrap().into_inner()
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn located(data: &[u8], chunk: usize) -> Vec<(u64, u64, usize)> {
        let mut got = Vec::new();
        let reader = Trickle { data, step: 777 };
        Scanner::with_chunk(chunk)
            .scan(reader, true, |l| got.push((l.line, l.column, l.hit.pieces)))
            .unwrap();
        got
    }

    #[test]
    fn lines_and_columns_hold_across_chunks() {
        let key = key(1);
        let (a, b) = key.split_at(30);
        // Keys at every offset around many chunk boundaries, whole and split over two lines.
        let mut text = Vec::new();
        let mut want = Vec::new();
        let mut line = 1;
        for pad in 0..600_u64 {
            text.extend(std::iter::repeat_n(b'.', pad as usize * 7));
            want.push((line, pad * 7 + 1, 1));
            text.extend_from_slice(key.as_bytes());
            text.extend_from_slice(b"\n\n");
            line += 2;
            text.extend(std::iter::repeat_n(b'x', pad as usize));
            want.push((line, pad + 3, 2));
            text.extend_from_slice(format!(" \"{a}\"\n  \"{b}\"\n").as_bytes());
            line += 2;
        }
        for chunk in [2 * scan::MAX_SPAN, 2 * scan::MAX_SPAN + 333, 100_000, CHUNK] {
            assert_eq!(located(&text, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn binary_streams_are_skipped_when_asked() {
        let data = format!("\0{}", key(2));
        let mut n = 0;
        let scanned = Scanner::default()
            .scan(data.as_bytes(), true, |_| n += 1)
            .unwrap();
        assert_eq!((scanned, n), (Scanned::Binary, 0));
        let scanned = Scanner::default()
            .scan(data.as_bytes(), false, |_| n += 1)
            .unwrap();
        assert_eq!((scanned, n), (Scanned::Whole, 1));
    }
}
