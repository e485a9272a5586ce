use super::*;

#[test]
fn short_text_is_kept_and_long_text_is_cut_at_a_character_boundary() {
    assert_eq!(cut("abc", 3), "abc");
    assert_eq!(cut("abcd", 3), "abc…");
    // "é" is two bytes: a cut inside it moves back before it.
    assert_eq!(cut("aé", 2), "a…");
}
