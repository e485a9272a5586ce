//! Text from a peer (names in a request, ONNX Runtime's messages) echoed
//! in an error or a log line, bounded.

/// `text` cut to at most `max` bytes at a character boundary, with "…"
/// appended when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[path = "bounded_text_tests.rs"]
mod tests;
