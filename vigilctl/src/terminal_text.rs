//! Text from hosts made safe to print on a terminal.
//!
//! Process names, argv, paths and hostnames come from monitored hosts, so an
//! attacker chooses them: a process whose argv holds `ESC ]0;…BEL` or `CR`
//! would otherwise rewrite the operator's terminal or hide a line. Every
//! host-supplied string vigilctl prints as text goes through [`escape_controls`].
//! JSON output needs nothing: serde_json escapes control characters.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as an escape:
/// `\x1b` for ESC, `\r` `\n` `\t` for those, `\u{9b}` for a C1 character.
/// Other text (printable ASCII, other Unicode) is unchanged.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] over each item, joined by `sep`.
pub fn escape_joined(items: &[String], sep: &str) -> String {
    items
        .iter()
        .map(|s| escape_controls(s))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "python3 /models/llama 3.gguf — ünïcode";
        assert!(matches!(escape_controls(s), Cow::Borrowed(_)));
        assert_eq!(escape_controls(s), s);
    }

    #[test]
    fn terminal_escapes_and_carriage_returns_are_shown_not_obeyed() {
        assert_eq!(
            escape_controls("a\x1b]0;pwned\x07b\rc"),
            "a\\x1b]0;pwned\\x07b\\rc"
        );
        assert_eq!(escape_controls("\x1b[2J\x7f\0"), "\\x1b[2J\\x7f\\x00");
        assert_eq!(escape_controls("x\ny\tz"), "x\\ny\\tz");
    }

    #[test]
    fn c1_controls_are_escaped_too() {
        // U+009B is the one-character CSI on terminals that honour C1.
        assert_eq!(escape_controls("a\u{9b}31mb\u{85}"), "a\\u{9b}31mb\\u{85}");
    }

    #[test]
    fn no_control_character_survives() {
        let all: String = (0u32..0x100).filter_map(char::from_u32).collect();
        let escaped = escape_controls(&all);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
    }
}
