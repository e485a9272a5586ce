//! Text from hosts made safe to print on a terminal.
//!
//! Process names, argv, paths and hostnames come from monitored hosts, so an
//! attacker chooses them: a process whose argv holds `ESC ]0;…BEL` or `CR`
//! would otherwise rewrite the operator's terminal or hide a line. Every
//! host-supplied string vigilctl prints as text goes through [`escape_controls`].
//! Unicode format characters that reorder or hide text (bidi overrides such
//! as U+202E, zero-width characters, the BOM) are escaped too: with them a
//! hostname or path can show as something else, or hide what follows.
//! JSON output needs nothing for control characters: serde_json escapes them.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as an escape:
/// `\x1b` for ESC, `\r` `\n` `\t` for those, `\u{9b}` for a C1 character;
/// an invisible or reordering format character as `\u{202e}`.
/// Other text (printable ASCII, other Unicode) is unchanged.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
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
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (a diff, an error with the file it quotes) with each
/// line escaped and the line breaks kept.
pub fn escape_lines(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            format!("{}{end}", escape_controls(body))
        })
        .collect()
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Format characters (Unicode category Cf and the like) that change how
/// the text around them is shown, or show as nothing: bidi embeddings,
/// overrides, isolates and marks, zero-width characters, word joiner and
/// invisible operators, the BOM, the soft hyphen and the invisible fillers.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
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
    fn bidi_overrides_and_invisible_characters_are_shown() {
        // "exe=/usr/bin/\u{202e}fdp.exe" would show as "exe.pdf"; a
        // zero-width space makes "vigil" and "vig\u{200b}il" look alike.
        assert_eq!(
            escape_controls("/tmp/\u{202e}fdp.sh"),
            "/tmp/\\u{202e}fdp.sh"
        );
        assert_eq!(
            escape_controls("vig\u{200b}il\u{2066}x\u{2069}\u{feff}\u{ad}"),
            "vig\\u{200b}il\\u{2066}x\\u{2069}\\u{feff}\\u{ad}"
        );
        assert_eq!(escape_controls("line\u{2028}sep"), "line\\u{2028}sep");
        // Visible non-ASCII text is left alone.
        assert!(matches!(escape_controls("нода-1 ✓ 日本"), Cow::Borrowed(_)));
    }

    #[test]
    fn lines_are_escaped_one_by_one_and_their_breaks_kept() {
        assert_eq!(
            escape_lines("-a\x1b[2J\n+b\r\n\u{202e}c"),
            "-a\\x1b[2J\n+b\\r\n\\u{202e}c"
        );
        assert_eq!(escape_lines(""), "");
    }

    #[test]
    fn no_control_character_survives() {
        let all: String = (0u32..0x100).filter_map(char::from_u32).collect();
        let escaped = escape_controls(&all);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
    }
}
