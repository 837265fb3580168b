//! Languages of customers' text, and texts we send in more than one.
//!
//! A leaf of the crate: the bot, routing, the engine and the config all speak of languages,
//! and none of them owns the vocabulary.

/// The language of a customer's text, as far as replies and routing care: Chinese or not.
pub fn language_of(text: &str) -> &'static str {
    let han = text
        .chars()
        .filter(|c| matches!(*c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF))
        .count();
    if han > 0 && han * 4 >= text.chars().filter(|c| !c.is_whitespace()).count() {
        "zh"
    } else {
        "en"
    }
}

/// A message for customers: one text for everyone, or one per language (`en`, `zh`), picked
/// by the language of the customer's latest message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum Localized {
    One(String),
    PerLanguage { en: String, zh: String },
}

impl Localized {
    pub fn pick(&self, language: &str) -> &str {
        match self {
            Localized::One(t) => t,
            Localized::PerLanguage { zh, .. } if language == "zh" => zh,
            Localized::PerLanguage { en, .. } => en,
        }
    }
}

impl From<&str> for Localized {
    fn from(s: &str) -> Self {
        Localized::One(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_is_chinese_when_han_characters_carry_the_text() {
        assert_eq!(language_of("我的退款什么时候到？"), "zh");
        assert_eq!(language_of("订单 12345 没收到"), "zh");
        assert_eq!(language_of("Where is my order?"), "en");
        assert_eq!(
            language_of("My order from 京东 is late, can you check please"),
            "en"
        );
    }
}
