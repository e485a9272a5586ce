//! The server name (SNI) of a TLS ClientHello, read from the first bytes a
//! process wrote on a connection to port 443 (the kernel captures at most a
//! few KiB, and the capture may end anywhere).
//!
//! Only what attribution needs is parsed: the record layer (handshake
//! records, whose bytes are read as one stream, so a ClientHello fragmented
//! over several records is followed without copying), the ClientHello's
//! fixed fields, and the extensions, walked by length until `server_name`
//! (type 0). Extension order and GREASE values do not matter: anything
//! else is skipped by its length. Every length is checked against the one
//! that encloses it and against the capture; a declared length that
//! overflows its enclosure means the bytes are not TLS, one that runs past
//! the capture means the capture was cut short.

/// What the first bytes of a connection say about its server name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientHelloSni {
    /// The host name the client asked for: lowercase, without a trailing
    /// dot, validated as a DNS host name (never an IP literal).
    Name(String),
    /// Not the start of a TLS ClientHello (or a malformed one).
    NotTls,
    /// A ClientHello without a usable host name: no `server_name`
    /// extension, no `host_name` entry in it, or a name that is not a DNS
    /// host name (an IP literal, bad characters, bad label lengths).
    NoSni,
    /// A ClientHello started, but the capture ended before its server name
    /// (or before the ClientHello showed it has none).
    Truncated,
}

/// Record content type: handshake.
const HANDSHAKE: u8 = 22;
/// Handshake message type: ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension type: server_name (RFC 6066).
const SERVER_NAME: usize = 0;
/// server_name entry type: host_name.
const HOST_NAME: u8 = 0;
/// Largest record plaintext (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
/// Longest host name in text form (RFC 1035); a trailing dot may follow.
const NAME_MAX: usize = 253;
/// Longest label.
const LABEL_MAX: usize = 63;
/// Smallest ClientHello body: legacy_version, random, empty session id,
/// one cipher suite, one compression method.
const MIN_HELLO: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;

/// The server name of the ClientHello that `first_bytes` start with.
///
/// Never panics and allocates nothing but the returned name.
pub fn client_hello_server_name(first_bytes: &[u8]) -> ClientHelloSni {
    if first_bytes.is_empty() {
        return ClientHelloSni::NotTls;
    }
    let parsed = match parse(Handshake::new(first_bytes)) {
        // A ClientHello message whose record header went in a send of its
        // own (the kernel passes sends too short to hold a hello).
        Err(Stop::NotTls) if first_bytes[0] == CLIENT_HELLO => parse(Handshake::bare(first_bytes)),
        other => other,
    };
    match parsed {
        Ok(sni) => sni,
        Err(Stop::NotTls) => ClientHelloSni::NotTls,
        Err(Stop::Truncated) => ClientHelloSni::Truncated,
    }
}

/// Why parsing stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The bytes break the format.
    NotTls,
    /// The capture ended.
    Truncated,
}

/// The handshake bytes of consecutive handshake records, read as one
/// stream. `read` counts the handshake bytes consumed; `end` is the
/// offset (in that count) where the ClientHello ends, once known, and no
/// read may pass it.
struct Handshake<'a> {
    buf: &'a [u8],
    /// Next unread byte of `buf`.
    at: usize,
    /// Handshake bytes of the current record not yet read.
    left: usize,
    read: usize,
    end: usize,
    /// The bytes are one handshake message with no record header.
    bare: bool,
}

impl<'a> Handshake<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Handshake {
            buf,
            at: 0,
            left: 0,
            read: 0,
            end: usize::MAX,
            bare: false,
        }
    }

    /// A handshake message whose record header was sent apart.
    fn bare(buf: &'a [u8]) -> Self {
        Handshake {
            left: buf.len(),
            bare: true,
            ..Handshake::new(buf)
        }
    }

    /// Steps over the next record header. A cut header is checked as far
    /// as it goes, so a capture of a few bytes of something else is
    /// `NotTls`, not `Truncated`.
    fn next_record(&mut self) -> Result<(), Stop> {
        let header = self.buf.get(self.at..).unwrap_or_default();
        if self.bare {
            // A handshake message sent without its record header (the
            // header went out in an earlier, separate send).
            return Err(Stop::Truncated);
        }
        // The record version's minor byte is not checked: OpenSSL and
        // BoringSSL look at the major byte only (a hello whose record says
        // 03 00 completes a TLS 1.3 handshake).
        let checks: [fn(u8) -> bool; 2] = [|b| b == HANDSHAKE, |b| b == 3];
        for (byte, ok) in header.iter().zip(checks) {
            if !ok(*byte) {
                return Err(Stop::NotTls);
            }
        }
        let Some(&[_, _, _, hi, lo]) = header.get(..5) else {
            return Err(Stop::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        // Empty handshake records are forbidden (RFC 8446 §5.1).
        if len == 0 || len > MAX_RECORD {
            return Err(Stop::NotTls);
        }
        self.at += 5;
        self.left = len;
        Ok(())
    }

    /// Fails unless `n` more bytes fit in the ClientHello.
    fn fits(&self, n: usize) -> Result<(), Stop> {
        if self.end.saturating_sub(self.read) < n {
            return Err(Stop::NotTls);
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        self.fits(1)?;
        if self.left == 0 {
            self.next_record()?;
        }
        let b = *self.buf.get(self.at).ok_or(Stop::Truncated)?;
        self.at += 1;
        self.left -= 1;
        self.read += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<usize, Stop> {
        self.fits(2)?;
        Ok(usize::from(self.byte()?) << 8 | usize::from(self.byte()?))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        self.fits(3)?;
        Ok(usize::from(self.byte()?) << 16 | self.u16()?)
    }

    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        self.fits(n)?;
        while n > 0 {
            if self.left == 0 {
                self.next_record()?;
            }
            let available = self.buf.len().saturating_sub(self.at);
            let take = n.min(self.left).min(available);
            if take == 0 {
                return Err(Stop::Truncated);
            }
            self.at += take;
            self.left -= take;
            self.read += take;
            n -= take;
        }
        Ok(())
    }

    /// The stream offset `len` bytes on, if that stays within `within`.
    fn until(&self, len: usize, within: usize) -> Result<usize, Stop> {
        let end = self.read + len;
        if end > within {
            return Err(Stop::NotTls);
        }
        Ok(end)
    }
}

fn parse(mut hs: Handshake<'_>) -> Result<ClientHelloSni, Stop> {
    if hs.byte()? != CLIENT_HELLO {
        return Err(Stop::NotTls);
    }
    let body = hs.u24()?;
    if body < MIN_HELLO {
        return Err(Stop::NotTls);
    }
    hs.end = hs.read + body;
    let legacy_version = hs.u16()?;
    if !(0x0301..=0x0304).contains(&legacy_version) {
        return Err(Stop::NotTls);
    }
    hs.skip(32)?; // random
    let session_id = usize::from(hs.byte()?);
    if session_id > 32 {
        return Err(Stop::NotTls);
    }
    hs.skip(session_id)?;
    let cipher_suites = hs.u16()?;
    if cipher_suites == 0 || cipher_suites % 2 != 0 {
        return Err(Stop::NotTls);
    }
    hs.skip(cipher_suites)?;
    let compression_methods = usize::from(hs.byte()?);
    if compression_methods == 0 {
        return Err(Stop::NotTls);
    }
    hs.skip(compression_methods)?;
    // A hello without extensions (TLS 1.0 allowed it) names no server.
    if hs.read == hs.end {
        return Ok(ClientHelloSni::NoSni);
    }
    let len = hs.u16()?;
    let extensions_end = hs.until(len, hs.end)?;
    while hs.read < extensions_end {
        if extensions_end - hs.read < 4 {
            return Err(Stop::NotTls);
        }
        let kind = hs.u16()?;
        let len = hs.u16()?;
        let end = hs.until(len, extensions_end)?;
        if kind == SERVER_NAME {
            return server_name(&mut hs, end);
        }
        hs.skip(len)?;
    }
    Ok(ClientHelloSni::NoSni)
}

/// The `server_name` extension's data, which ends at `end`: a list of
/// (name_type, name) entries; the first `host_name` is the answer.
fn server_name(hs: &mut Handshake<'_>, end: usize) -> Result<ClientHelloSni, Stop> {
    // An empty extension is what servers answer with; no name in it.
    if hs.read == end {
        return Ok(ClientHelloSni::NoSni);
    }
    let len = hs.until(2, end).and_then(|_| hs.u16())?;
    let list_end = hs.until(len, end)?;
    while hs.read < list_end {
        if list_end - hs.read < 3 {
            return Err(Stop::NotTls);
        }
        let name_type = hs.byte()?;
        let len = hs.u16()?;
        hs.until(len, list_end)?;
        if name_type != HOST_NAME {
            hs.skip(len)?;
            continue;
        }
        if len == 0 || len > NAME_MAX + 1 {
            return Ok(ClientHelloSni::NoSni);
        }
        let mut name = [0u8; NAME_MAX + 1];
        let name = name.get_mut(..len).ok_or(Stop::NotTls)?;
        for b in name.iter_mut() {
            *b = hs.byte()?;
        }
        return Ok(host_name(name).map_or(ClientHelloSni::NoSni, ClientHelloSni::Name));
    }
    Ok(ClientHelloSni::NoSni)
}

/// `name` as a lowercase DNS host name without a trailing dot, if it is
/// one: 1 to 253 bytes of labels of 1 to 63 letters, digits, '-' or '_',
/// the last not all digits (which rules out IPv4 literals; IPv6 literals
/// fail on ':').
fn host_name(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > NAME_MAX {
        return None;
    }
    let mut last = name;
    for label in name.split(|b| *b == b'.') {
        let plain = label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if label.is_empty() || label.len() > LABEL_MAX || !plain {
            return None;
        }
        last = label;
    }
    if last.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut text = String::with_capacity(name.len());
    text.extend(name.iter().map(|b| char::from(b.to_ascii_lowercase())));
    Some(text)
}

#[cfg(test)]
#[path = "tls_client_hello_tests.rs"]
mod tests;
