//! Text helpers shared by the matcher and the rules.

/// Lower-case; drop whitespace and punctuation (ASCII and CJK), so "Where is my order?" and
/// "where is my order" match, and "多少天能到货？" matches "多少天能到货".
pub fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether the text has Han characters (then the Chinese fields are queried).
pub fn has_cjk(text: &str) -> bool {
    text.chars().any(is_han)
}

pub fn is_han(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{f900}'..='\u{faff}')
}

/// Whether `phrase` occurs in `text` (both lower-case). ASCII phrases must stand as whole
/// words, so "agent" does not match inside "reagents".
pub fn contains_phrase(text: &str, phrase: &str) -> bool {
    if !phrase.is_ascii() {
        return text.contains(phrase);
    }
    let bytes = text.as_bytes();
    text.match_indices(phrase).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + phrase.len()).copied();
        let boundary = |b: Option<u8>| b.is_none_or(|b| !b.is_ascii_alphanumeric());
        boundary(before) && boundary(after)
    })
}

/// Character bigrams of the normalised text (single characters for one-character texts).
fn bigrams(text: &str) -> std::collections::HashSet<(char, char)> {
    let chars: Vec<char> = normalise(text).chars().collect();
    if chars.len() == 1 {
        return [(chars[0], '\0')].into();
    }
    chars.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Jaccard similarity of character bigrams: 1.0 for texts equal after normalisation.
/// Cheap, language-neutral; used for "asked the same again" and near-duplicate checks.
pub fn similarity(a: &str, b: &str) -> f32 {
    let (x, y) = (bigrams(a), bigrams(b));
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    let common = x.intersection(&y).count();
    common as f32 / (x.len() + y.len() - common) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_compares() {
        assert_eq!(normalise("Where is my ORDER?"), "whereismyorder");
        assert_eq!(normalise("多少天 能到货！"), "多少天能到货");
        assert!(has_cjk("我想退货") && !has_cjk("returns"));
        assert!(contains_phrase("i want a human now", "human"));
        assert!(!contains_phrase("tell me about reagents", "agent"));
        assert!(contains_phrase("我要转人工", "转人工"));
        assert_eq!(similarity("Where is my order?", "where is my order"), 1.0);
        assert!(similarity("where is my order", "where is my parcel") > 0.4);
        assert!(similarity("where is my order", "do you ship abroad") < 0.2);
    }
}
