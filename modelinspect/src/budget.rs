//! The bounded reader every parser reads through: it counts the bytes read
//! (skips by seek are free), watches a deadline, and knows where it is in
//! the file so an error can say "at byte N".

use std::io::{self, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use crate::error::InspectError;

/// Skips up to this long are read, not sought past.
const READ_THROUGH: u64 = 4096;
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

/// `Read + Seek` with the budget applied.
pub struct Bounded<R> {
    inner: R,
    budget: Budget,
    started: Instant,
    /// Reads since the clock was last read.
    unclocked: u32,
    /// Where short skips are read to (allocated and zeroed once).
    scratch: Vec<u8>,
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
            scratch: Vec::new(),
            read: 0,
            pos: 0,
            len,
        })
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
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
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

    pub fn u8(&mut self, what: &str) -> Result<u8, InspectError> {
        let mut b = [0; 1];
        self.read_exact_or(&mut b, what)?;
        Ok(b[0])
    }

    pub fn u16_le(&mut self, what: &str) -> Result<u16, InspectError> {
        let mut b = [0; 2];
        self.read_exact_or(&mut b, what)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn u32_le(&mut self, what: &str) -> Result<u32, InspectError> {
        let mut b = [0; 4];
        self.read_exact_or(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn u64_le(&mut self, what: &str) -> Result<u64, InspectError> {
        let mut b = [0; 8];
        self.read_exact_or(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
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
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.resize(READ_THROUGH as usize, 0);
            let read = self.read_exact_or(&mut scratch[..n as usize], what);
            self.scratch = scratch;
            return read;
        }
        self.seek_to(self.pos + n)
    }

    pub fn seek_to(&mut self, pos: u64) -> Result<(), InspectError> {
        self.inner.seek(SeekFrom::Start(pos))?;
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
        let n = self.inner.read(&mut buf[..take])?;
        self.read += n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Bounded<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}
