//! Text that comes from outside (commit messages, hook messages, reasons) made fit for records
//! and one-line output.

/// `text` on one line and at most `bytes_max` bytes: control characters become spaces, the ends
/// are trimmed, and what is too long ends in `…`.
pub fn one_line(text: &str, bytes_max: usize) -> String {
    // Taking `bytes_max + 1` characters bounds the work on a huge input and still leaves more
    // than `bytes_max` bytes whenever the input was too long, so the ellipsis shows.
    let text: String =
        text.chars().take(bytes_max + 1).map(|c| if c.is_control() { ' ' } else { c }).collect();
    truncate(text.trim().to_string(), bytes_max)
}

/// `text` cut to at most `bytes_max` bytes on a character boundary, ending in `…` when cut.
pub fn truncate(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_spaces_and_the_ends_are_trimmed() {
        assert_eq!(one_line("  fix\r\nthe\tbuild\u{7} ", 100), "fix  the build");
    }

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_so() {
        let cut = one_line(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut:?} is {} bytes", cut.len());
        assert_eq!(cut, "éééé…");
        assert_eq!(truncate("short".to_string(), 5), "short");
        assert_eq!(truncate("longer".to_string(), 5), "lo…");
    }
}
