//! The question name of a DNS query, read from the first bytes of a message
//! a process sent to port 53 (the kernel captures at most a few hundred).
//!
//! Only what attribution needs is parsed: the header must say "standard
//! query" and the first question's name must be made of plain labels
//! (questions never use compression). Anything else is not a question.

/// DNS header length.
const HEADER: usize = 12;
/// Longest name in text form (RFC 1035).
const NAME_MAX: usize = 253;

/// The first question's name, lowercase without the trailing dot, if
/// `message` is a standard DNS query. TCP messages (a two-byte length
/// first) are recognised too.
pub fn question_name(message: &[u8]) -> Option<String> {
    parse(message).or_else(|| {
        let len = u16::from_be_bytes(message.get(..2)?.try_into().ok()?) as usize;
        // The TCP length prefix counts the message that follows.
        (len >= HEADER && len + 2 >= message.len()).then(|| parse(&message[2..]))?
    })
}

fn parse(m: &[u8]) -> Option<String> {
    let header = m.get(..HEADER)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    if is_response || opcode != 0 || questions == 0 || answers != 0 {
        return None;
    }
    let mut name = String::new();
    let mut at = HEADER;
    loop {
        let len = *m.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Labels are at most 63 bytes; larger values are compression.
        if len > 63 {
            return None;
        }
        let label = m.get(at..at + len)?;
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        if name.len() > NAME_MAX {
            return None;
        }
        at += len;
    }
    // QTYPE and QCLASS follow the name.
    m.get(at..at + 4)?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as a resolver sends it: id, flags RD, one question, type A.
    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn reads_the_question_of_udp_and_tcp_queries() {
        assert_eq!(
            question_name(&query("API.OpenAI.com")).as_deref(),
            Some("api.openai.com")
        );
        let q = query("huggingface.co");
        let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&q);
        assert_eq!(question_name(&tcp).as_deref(), Some("huggingface.co"));
    }

    #[test]
    fn responses_garbage_and_truncated_messages_are_not_questions() {
        let mut response = query("api.openai.com");
        response[2] |= 0x80;
        assert_eq!(question_name(&response), None);
        let q = query("api.openai.com");
        assert_eq!(question_name(&q[..q.len() - 3]), None);
        assert_eq!(question_name(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(question_name(&[]), None);
        let mut pointer = q[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(question_name(&pointer), None);
        let mut odd = query("a b.com");
        odd[13] = b' ';
        assert_eq!(question_name(&odd), None);
    }
}
