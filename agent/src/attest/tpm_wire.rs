//! Framing of TPM structures as they travel (TPM 2.0 Part 2, big-endian):
//! a `TPM2B_*` is a u16 size and that many bytes; an EK certificate read
//! from NV is cut to its DER length (the NV area may be larger).

/// A structure that does not frame as it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct WireError {
    pub what: String,
    pub problem: String,
}

fn wire_error(what: &str, problem: String) -> WireError {
    WireError {
        what: what.to_string(),
        problem,
    }
}

/// `body` as a TPM2B: its size (u16, big-endian), then itself.
pub fn tpm2b(what: &str, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let size = u16::try_from(body.len()).map_err(|_| {
        wire_error(
            what,
            format!("{} bytes do not fit a TPM2B (at most 65535)", body.len()),
        )
    })?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The first TPM2B of `bytes` and what follows it.
pub fn split_tpm2b<'a>(what: &str, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let Some((size, rest)) = bytes.split_first_chunk::<2>() else {
        return Err(wire_error(
            what,
            format!("{} bytes, too short for a TPM2B size", bytes.len()),
        ));
    };
    let size = u16::from_be_bytes(*size) as usize;
    if rest.len() < size {
        return Err(wire_error(
            what,
            format!("TPM2B size {size} but {} bytes follow", rest.len()),
        ));
    }
    Ok(rest.split_at(size))
}

/// The body of the TPM2B that `bytes` is, exactly.
pub fn tpm2b_body<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], WireError> {
    let (body, rest) = split_tpm2b(what, bytes)?;
    if !rest.is_empty() {
        return Err(wire_error(
            what,
            format!(
                "TPM2B size {} but {} bytes follow",
                body.len(),
                body.len() + rest.len()
            ),
        ));
    }
    Ok(body)
}

/// The DER structure (a certificate) at the start of `bytes`, without what
/// pads it.
pub fn der_prefix<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], WireError> {
    let [tag, first, rest @ ..] = bytes else {
        return Err(wire_error(
            what,
            format!("{} bytes, too short for DER", bytes.len()),
        ));
    };
    if *tag != 0x30 {
        return Err(wire_error(
            what,
            format!("starts with 0x{tag:02x}, not a DER SEQUENCE (0x30)"),
        ));
    }
    let (header, length) = match *first {
        short @ 0..=0x7f => (2, short as usize),
        long @ 0x81..=0x84 => {
            let n = (long & 0x7f) as usize;
            let Some(digits) = rest.get(..n) else {
                return Err(wire_error(what, "its DER length is cut short".into()));
            };
            let length = digits
                .iter()
                .fold(0usize, |acc, d| (acc << 8) | *d as usize);
            (2 + n, length)
        }
        other => {
            return Err(wire_error(
                what,
                format!("DER length byte 0x{other:02x} is not a definite length"),
            ))
        }
    };
    let total = header.saturating_add(length);
    bytes.get(..total).ok_or_else(|| {
        wire_error(
            what,
            format!("DER says {total} bytes but only {} are there", bytes.len()),
        )
    })
}

#[cfg(test)]
#[path = "tpm_wire_tests.rs"]
mod tests;
