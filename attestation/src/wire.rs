//! Reading marshalled structures: TPM wire format (big-endian, TPM 2.0
//! Part 2) and the little-endian logs (TCG event log, IMA). Every read
//! names the field it reads, so a refusal says what and where:
//! `TPMS_ATTEST at byte 42: truncated: quote.pcrDigest needs 32 bytes, 7 left`.

use std::borrow::Cow;

/// A marshalled structure could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{structure} at byte {offset}: {kind}")]
pub struct ParseError {
    /// The structure being read (`TPMS_ATTEST`, `TCG_PCR_EVENT2 #12`).
    pub structure: Cow<'static, str>,
    /// Where in the input the offending field starts.
    pub offset: usize,
    /// What is wrong there.
    pub kind: ParseErrorKind,
}

/// What is wrong with a marshalled structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The input ends inside a field.
    #[error("truncated: {field} needs {needed} bytes, {left} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        left: usize,
    },
    /// A field holds a value the format does not allow (or this crate does
    /// not support).
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// Bytes follow the end of the structure.
    #[error("{count} trailing bytes after the end of the structure")]
    TrailingBytes { count: usize },
    /// The input is refused before parsing for its size.
    #[error("{what} of {size} is over the limit of {limit}")]
    OverLimit {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}

impl ParseError {
    /// The same error, naming a more precise structure (`TCG_PCR_EVENT2 #12`).
    pub(crate) fn within(mut self, structure: impl Into<Cow<'static, str>>) -> Self {
        self.structure = structure.into();
        self
    }
}

/// A cursor over marshalled bytes that names every field it reads.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Self {
            bytes,
            pos: 0,
            structure,
        }
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// An error of `kind` at byte `offset`.
    pub(crate) fn error_at(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            structure: Cow::Borrowed(self.structure),
            offset,
            kind,
        }
    }

    /// `field` at byte `offset` holds a value that is not allowed.
    pub(crate) fn invalid_at(
        &self,
        offset: usize,
        field: &'static str,
        problem: impl Into<String>,
    ) -> ParseError {
        self.error_at(
            offset,
            ParseErrorKind::Invalid {
                field,
                problem: problem.into(),
            },
        )
    }

    /// The next `n` bytes, as `field`.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let left = self.remaining();
        let start = self.pos;
        match start
            .checked_add(n)
            .and_then(|end| self.bytes.get(start..end))
        {
            Some(out) => {
                self.pos = start + n;
                Ok(out)
            }
            None => Err(self.error_at(
                start,
                ParseErrorKind::Truncated {
                    field,
                    needed: n,
                    left,
                },
            )),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16_be(&mut self, field: &'static str) -> Result<u16, ParseError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn u32_be(&mut self, field: &'static str) -> Result<u32, ParseError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn u64_be(&mut self, field: &'static str) -> Result<u64, ParseError> {
        self.array(field).map(u64::from_be_bytes)
    }

    pub(crate) fn u16_le(&mut self, field: &'static str) -> Result<u16, ParseError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32_le(&mut self, field: &'static str) -> Result<u32, ParseError> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// A TPM2B: a big-endian u16 size, then that many bytes, at most `max`
    /// (the size of the TPM2B's buffer in TPM 2.0 Part 2).
    pub(crate) fn tpm2b(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ParseError> {
        let at = self.pos;
        let size = usize::from(self.u16_be(field)?);
        if size > max {
            return Err(self.invalid_at(
                at,
                field,
                format!("size {size} is over the {max} bytes this TPM2B holds"),
            ));
        }
        self.take(size, field)
    }

    /// The structure must end here.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error_at(self.pos, ParseErrorKind::TrailingBytes { count })),
        }
    }
}

/// Big-endian TPM wire format, written.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every TPM2B this crate writes is far below 64 KiB; a longer one is
    // cut at the u16 and would be refused by whoever reads it.
    let size = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(bytes.get(..usize::from(size)).unwrap_or(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_names_the_field_and_offset() {
        let mut r = Reader::new(&[0, 1, 2], "TPMS_ATTEST");
        r.u16_be("magic").unwrap();
        let e = r.u32_be("type").unwrap_err();
        assert_eq!(
            e.to_string(),
            "TPMS_ATTEST at byte 2: truncated: type needs 4 bytes, 1 left"
        );
    }

    #[test]
    fn tpm2b_over_its_buffer_is_refused() {
        let mut r = Reader::new(&[0x01, 0x00, 0, 0], "TPM2B_DIGEST");
        let e = r.tpm2b("buffer", 64).unwrap_err();
        assert!(
            e.to_string().contains("size 256 is over the 64 bytes"),
            "{e}"
        );
    }

    #[test]
    fn huge_take_does_not_overflow() {
        let mut r = Reader::new(&[0; 4], "X");
        r.take(2, "a").unwrap();
        assert!(r.take(usize::MAX, "b").is_err());
    }

    #[test]
    fn trailing_bytes_are_counted() {
        let mut r = Reader::new(&[0; 4], "X");
        r.u16_be("a").unwrap();
        assert_eq!(
            r.finish().unwrap_err().to_string(),
            "X at byte 2: 2 trailing bytes after the end of the structure"
        );
    }
}
