//! The bounded reader every parser reads through: it counts the bytes read
//! (skips by seek are free), watches a deadline, and knows where it is in
//! the file so an error can say "at byte N".

use std::io::{self, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use crate::error::InspectError;

/// Skips up to this long are read, not sought past.
const READ_THROUGH: u64 = 4096;
/// Bytes read ahead from the inner reader at a time, so the parsers' many
/// one- to eight-byte reads are a copy from memory each.
const AHEAD: usize = 8192;
/// The clock is read once per this many reads (reading it costs more than
/// a buffered read of a few bytes on some VMs), and on every read larger
/// than `READ_THROUGH`.
const READS_PER_CLOCK: u32 = 256;

/// How much one inspection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes read (not skipped) from the file, in all.
    pub max_bytes: u64,
    /// Wall-clock time, checked at every read.
    pub max_time: Duration,
    /// Entries of any one table: GGUF tensors and metadata keys,
    /// safetensors tensors, ONNX initializers, zip entries, pickle memo.
    pub max_items: u64,
    /// Nesting: GGUF arrays, pickle stack and marks, protobuf messages.
    pub max_depth: usize,
}

impl Default for Budget {
    /// Headers only: 64 MiB covers a GGUF with a 256k-token vocabulary and
    /// the largest safetensors header the format allows (100 MB is its
    /// own cap, but real ones are under 10 MB).
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_time: Duration::from_secs(2),
            max_items: 1 << 20,
            max_depth: 256,
        }
    }
}

impl Budget {
    /// `TooMany` once a table (`what`) would hold `count` entries, past
    /// `max_items`.
    pub fn check_items(&self, count: u64, what: &str) -> Result<(), InspectError> {
        if count > self.max_items {
            return Err(InspectError::TooMany {
                what: what.to_string(),
                count,
                max: self.max_items,
            });
        }
        Ok(())
    }
}

/// `Read + Seek` with the budget applied. It reads ahead by itself
/// (`AHEAD` bytes at a time): give it an unbuffered reader, or every seek
/// refills a buffer underneath.
pub struct Bounded<R> {
    inner: R,
    budget: Budget,
    started: Instant,
    /// Reads since the clock was last read.
    unclocked: u32,
    /// Bytes read from `inner` and not yet consumed: `ahead[at..end]` are
    /// the file's bytes from `pos` on, and `inner` stands at `pos + (end -
    /// at)`. Allocated at the first read.
    ahead: Vec<u8>,
    at: usize,
    end: usize,
    /// Whether to read ahead (not where `inner` is itself a budgeted
    /// reader, which would charge the read-ahead to its own budget).
    read_ahead: bool,
    /// Bytes consumed (read or skipped through), against `max_bytes`.
    read: u64,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Bounded<R> {
    pub fn new(mut inner: R, budget: Budget) -> Result<Self, InspectError> {
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        Ok(Self {
            inner,
            budget,
            started: Instant::now(),
            unclocked: 0,
            ahead: Vec::new(),
            at: 0,
            end: 0,
            read_ahead: true,
            read: 0,
            pos: 0,
            len,
        })
    }

    /// Reads only what is asked for: for a reader over part of another
    /// `Bounded` (a nested pickle's bytes), whose budget counts every byte
    /// handed over, so that both count the same bytes.
    pub(crate) fn without_read_ahead(mut self) -> Self {
        self.read_ahead = false;
        self
    }

    /// Takes back `n` bytes from the count: bytes read a second time (a
    /// zip's central directory, read once to compare and once by the zip
    /// reader) count once.
    pub(crate) fn uncount(&mut self, n: u64) {
        self.read = self.read.saturating_sub(n);
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the next read starts.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Time left of the budget.
    pub fn time_left(&self) -> Duration {
        self.budget.max_time.saturating_sub(self.started.elapsed())
    }

    pub fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Out of time? Asked before every read; the clock is read every
    /// `READS_PER_CLOCK` small reads and before every large one.
    fn check_time_for(&mut self, len: u64) -> Result<(), InspectError> {
        self.unclocked += 1;
        if len <= READ_THROUGH && self.unclocked < READS_PER_CLOCK {
            return Ok(());
        }
        self.unclocked = 0;
        self.check_time()
    }

    fn check_time(&self) -> Result<(), InspectError> {
        if self.started.elapsed() > self.budget.max_time {
            return Err(InspectError::OutOfTime(self.budget.max_time));
        }
        Ok(())
    }

    /// Exactly `buf.len()` bytes, or `Truncated` naming `what`.
    pub fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> Result<(), InspectError> {
        self.check_time_for(buf.len() as u64)?;
        let want = buf.len() as u64;
        if self.read + want > self.budget.max_bytes {
            return Err(InspectError::OverBytes {
                max: self.budget.max_bytes,
            });
        }
        if want > self.remaining() {
            return Err(InspectError::Truncated {
                offset: self.pos,
                what: what.to_string(),
            });
        }
        self.fill_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => InspectError::Truncated {
                offset: self.pos,
                what: what.to_string(),
            },
            _ => InspectError::Io(e),
        })?;
        self.read += want;
        self.pos += want;
        Ok(())
    }

    /// Bytes consumed from the read-ahead buffer, then from `inner`
    /// (through the buffer when `buf` is short). Leaves `pos` and `read`
    /// to the caller.
    fn fill_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.at).min(buf.len());
        buf[..buffered].copy_from_slice(&self.ahead[self.at..self.at + buffered]);
        self.at += buffered;
        let rest = &mut buf[buffered..];
        if rest.is_empty() {
            return Ok(());
        }
        if rest.len() >= AHEAD || !self.read_ahead {
            // Read past the buffer, which holds nothing of where `inner`
            // will stand: empty it, so no seek back takes its bytes.
            (self.at, self.end) = (0, 0);
            return self.inner.read_exact(rest);
        }
        // Refill: at least what is wanted, up to a buffer or the end.
        if self.ahead.is_empty() {
            self.ahead = vec![0; AHEAD];
        }
        let logical = self.pos + buffered as u64;
        let file_left = usize::try_from(self.len.saturating_sub(logical)).unwrap_or(usize::MAX);
        let target = AHEAD.min(file_left).max(rest.len());
        let mut got = 0;
        while got < rest.len() {
            match self.inner.read(&mut self.ahead[got..target]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    (self.at, self.end) = (0, got);
                    return Err(e);
                }
            }
        }
        (self.at, self.end) = (0, got);
        if got < rest.len() {
            self.at = got;
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        rest.copy_from_slice(&self.ahead[..rest.len()]);
        self.at = rest.len();
        Ok(())
    }

    /// `n` bytes into a new buffer: `n` is checked against what the file
    /// holds and the budget before anything is allocated.
    pub fn read_vec(&mut self, n: u64, what: &str) -> Result<Vec<u8>, InspectError> {
        if self.read.saturating_add(n) > self.budget.max_bytes {
            return Err(InspectError::OverBytes {
                max: self.budget.max_bytes,
            });
        }
        if n > self.remaining() {
            return Err(InspectError::Truncated {
                offset: self.pos,
                what: format!("{what} ({n} bytes claimed, {} left)", self.remaining()),
            });
        }
        let mut v = vec![0; n as usize];
        self.read_exact_or(&mut v, what)?;
        Ok(v)
    }

    /// `N` bytes from the buffer, when it holds them, the budget has room
    /// and the clock is not due (the checks `read_exact_or` makes); else
    /// `None`, for the caller to read the slow way.
    #[inline]
    fn buffered<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.end - self.at < N
            || self.read + N as u64 > self.budget.max_bytes
            || self.unclocked + 1 >= READS_PER_CLOCK
        {
            return None;
        }
        let bytes: [u8; N] = self.ahead[self.at..self.at + N].try_into().ok()?;
        self.unclocked += 1;
        self.at += N;
        self.read += N as u64;
        self.pos += N as u64;
        Some(bytes)
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], InspectError> {
        if let Some(b) = self.buffered::<N>() {
            return Ok(b);
        }
        let mut b = [0; N];
        self.read_exact_or(&mut b, what)?;
        Ok(b)
    }

    #[inline]
    pub fn u8(&mut self, what: &str) -> Result<u8, InspectError> {
        Ok(self.array::<1>(what)?[0])
    }

    #[inline]
    pub fn u16_le(&mut self, what: &str) -> Result<u16, InspectError> {
        self.array(what).map(u16::from_le_bytes)
    }

    #[inline]
    pub fn u32_le(&mut self, what: &str) -> Result<u32, InspectError> {
        self.array(what).map(u32::from_le_bytes)
    }

    #[inline]
    pub fn u64_le(&mut self, what: &str) -> Result<u64, InspectError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Moves `n` bytes on, failing if that passes the end. A short skip
    /// is read through (and counted), so a buffered reader keeps its
    /// buffer; a long one seeks and is free against the byte budget.
    pub fn skip(&mut self, n: u64, what: &str) -> Result<(), InspectError> {
        self.check_time_for(n)?;
        if n > self.remaining() {
            return Err(InspectError::Truncated {
                offset: self.pos,
                what: format!("{what} ({n} bytes claimed, {} left)", self.remaining()),
            });
        }
        if n <= READ_THROUGH {
            // Read through (and counted), so the reader underneath keeps
            // its place: from the buffer where it holds them.
            let n = n as usize;
            if n <= self.end - self.at && self.read + n as u64 <= self.budget.max_bytes {
                self.at += n;
                self.pos += n as u64;
                self.read += n as u64;
                return Ok(());
            }
            let mut through = [0u8; READ_THROUGH as usize];
            return self.read_exact_or(&mut through[..n], what);
        }
        self.seek_to(self.pos + n)
    }

    pub fn seek_to(&mut self, pos: u64) -> Result<(), InspectError> {
        // Within what the buffer holds (behind or ahead): no seek.
        let buffer_start = self.pos - self.at as u64;
        if pos >= buffer_start && pos <= buffer_start + self.end as u64 {
            self.at = (pos - buffer_start) as usize;
            self.pos = pos;
            return Ok(());
        }
        self.inner.seek(SeekFrom::Start(pos))?;
        (self.at, self.end) = (0, 0);
        self.pos = pos;
        Ok(())
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// As `io::Read + io::Seek`, for libraries that take those (the zip
/// reader): the same accounting, errors folded into `io::Error`.
impl<R: Read + Seek> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.started.elapsed() > self.budget.max_time {
            return Err(io::Error::other(InspectError::OutOfTime(
                self.budget.max_time,
            )));
        }
        let left = self.budget.max_bytes.saturating_sub(self.read);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other(InspectError::OverBytes {
                max: self.budget.max_bytes,
            }));
        }
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = if self.at < self.end {
            let n = take.min(self.end - self.at);
            buf[..n].copy_from_slice(&self.ahead[self.at..self.at + n]);
            self.at += n;
            n
        } else {
            (self.at, self.end) = (0, 0);
            self.inner.read(&mut buf[..take])?
        };
        self.read += n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Bounded<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        // `inner` stands past what is buffered: a relative seek is from
        // where the reader is, `pos`.
        let to = match to {
            SeekFrom::Current(d) => SeekFrom::Start(
                self.pos
                    .checked_add_signed(d)
                    .ok_or_else(|| io::Error::other("seek before the start"))?,
            ),
            other => other,
        };
        self.pos = self.inner.seek(to)?;
        (self.at, self.end) = (0, 0);
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn patterned(n: usize) -> Bounded<Cursor<Vec<u8>>> {
        let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        Bounded::new(Cursor::new(bytes), Budget::default()).unwrap()
    }

    fn at(i: u64) -> u8 {
        (i % 251) as u8
    }

    #[test]
    fn a_seek_back_after_a_large_read_reads_the_file_not_an_old_buffer() {
        // A large read goes past the read-ahead buffer; a seek back then
        // must not take the buffer's old bytes for the file's (helper-32).
        let mut r = patterned(40_000);
        let mut small = [0u8; 100];
        r.read_exact_or(&mut small, "head").unwrap();
        r.read_vec(20_000, "block").unwrap();
        let back = r.pos() - 50;
        r.seek_to(back).unwrap();
        let mut ten = [0u8; 10];
        r.read_exact_or(&mut ten, "again").unwrap();
        assert_eq!(ten.to_vec(), (back..back + 10).map(at).collect::<Vec<_>>());

        // The same through `Read`, as the zip reader reads.
        let mut r = patterned(40_000);
        r.u8("first").unwrap();
        let mut big = vec![0u8; 9_000];
        let n = Read::read(&mut r, &mut big).unwrap();
        assert!(n > 0);
        let back = r.pos() - 50;
        r.seek_to(back).unwrap();
        r.read_exact_or(&mut ten, "again").unwrap();
        assert_eq!(ten.to_vec(), (back..back + 10).map(at).collect::<Vec<_>>());
    }

    #[test]
    fn seeks_within_the_buffer_and_short_skips_keep_the_bytes_right() {
        let mut r = patterned(30_000);
        r.skip(10, "start").unwrap();
        for step in [1u64, 7, 300, 4_000, 5_000] {
            r.skip(step, "skip").unwrap();
            let here = r.pos();
            assert_eq!(r.u8("byte").unwrap(), at(here));
            r.seek_to(here.saturating_sub(3)).unwrap();
            assert_eq!(
                r.u32_le("word").unwrap(),
                u32::from_le_bytes([at(here - 3), at(here - 2), at(here - 1), at(here),])
            );
        }
    }
}
