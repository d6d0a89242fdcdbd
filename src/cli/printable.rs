//! Text from outside (commit messages, authors, build output, delivery ids) as the
//! command line prints it for people: control characters and the characters that
//! reorder text on screen (bidirectional overrides and isolates) are written as
//! `\u{..}` escapes, so that no commit message can move the cursor, clear the
//! screen, retitle the terminal or make a line read other than it is stored.
//! `--json` output is left alone (JSON escapes control characters itself).

use std::borrow::Cow;

/// `text` with every character a terminal would act on, or that reorders the line,
/// written as an escape; tabs stay.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hazard) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if is_hazard(character) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(character)));
        } else {
            shown.push(character);
        }
    }
    Cow::Owned(shown)
}

/// Control characters but tab; the marks, embeddings, overrides and isolates that
/// reorder text (and the Arabic letter mark); zero-width characters and the line and
/// paragraph separators, which hide or break what a line shows.
fn is_hazard(character: char) -> bool {
    (character.is_control() && character != '\t')
        || matches!(
            character,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_reordering_are_shown_not_acted_on() {
        assert_eq!(printable("fix: a\tb"), "fix: a\tb");
        assert_eq!(printable("ünïcødé ✓"), "ünïcødé ✓");
        assert_eq!(printable("\u{1b}[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(printable("a\r\nb"), "a\\u{d}\\u{a}b");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("admin\u{202e}gnp.exe"), "admin\\u{202e}gnp.exe");
        assert_eq!(printable("x\u{2066}y\u{2069}"), "x\\u{2066}y\\u{2069}");
        for hidden in [
            '\u{061c}', '\u{200b}', '\u{200d}', '\u{2028}', '\u{2029}', '\u{feff}',
        ] {
            assert!(
                printable(&format!("a{hidden}b")).contains("\\u{"),
                "{hidden:?}"
            );
        }
    }
}
