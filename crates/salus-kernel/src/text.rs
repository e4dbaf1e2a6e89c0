//! Folding text for search: Unicode compatibility decomposition, combining marks dropped,
//! lower case, white space collapsed. "Zoë  MÜLLER" and "zoe muller" fold alike.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn accents_case_and_spacing_fold_away() {
        assert_eq!(fold("  Zoë   MÜLLER "), "zoe muller");
        assert_eq!(fold("José"), "jose");
        assert_eq!(fold("Ａｎｎａ"), "anna");
    }
}
