//! Bounding text that came from outside (bodies, error messages) before it is logged, put in
//! an attribute or quoted in an error: the one place strings are cut, always on a character
//! boundary. A leaf: it imports nothing of the crate.

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// `s` cut to at most `max` bytes on a character boundary, a cut marked with `…` (after the
/// `max` bytes).
pub(crate) fn shortened(s: &str, max: usize) -> String {
    let kept = prefix(s, max);
    if kept.len() == s.len() {
        s.to_owned()
    } else {
        format!("{kept}…")
    }
}

/// `s` cut to at most `max_chars` characters, a cut marked with `…`: for text quoted in an
/// error, where a reader counts characters.
pub(crate) fn shortened_chars(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(prefix("abc", 5), "abc");
        assert_eq!(prefix("abcd", 3), "abc");
        // 'é' is two bytes: a cut in its middle keeps it out.
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(shortened("aéb", 2), "a…");
        assert_eq!(shortened("ab", 2), "ab");
        assert_eq!(shortened_chars("abc", 3), "abc");
        assert_eq!(shortened_chars("abcd", 3), "abc…");
        assert_eq!(shortened_chars("ééééé", 2), "éé…");
        assert_eq!(shortened_chars("", 0), "");
    }
}
