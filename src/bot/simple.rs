//! The responder of this build: exact matching after normalisation, plus "ask for a person"
//! phrases. Deliberately simple and predictable; the hybrid matcher replaces it.

use std::collections::HashMap;

use switchboard_channel::Button;

use super::kb::Entry;
use super::{BotInput, Decision, EscalationReason, Responder};

pub struct SimpleResponder {
    /// Normalised question -> entry index.
    questions: HashMap<String, usize>,
    entries: Vec<Entry>,
    human_phrases: Vec<String>,
    max_misses: u32,
    clarify_message: String,
    human_button: String,
}

/// Lower-case; drop whitespace and punctuation (ASCII and CJK), so "Where is my order?" and
/// "where is my order" match, and "多少天能到货？" matches "多少天能到货".
pub fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `phrase` occurs in `text` (both lower-case). ASCII phrases must stand as whole
/// words, so "agent" does not match "agents'" inside "management".
fn contains_phrase(text: &str, phrase: &str) -> bool {
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

impl SimpleResponder {
    pub fn new(
        entries: Vec<Entry>,
        human_phrases: &[String],
        max_misses: u32,
        clarify_message: &str,
        human_button: &str,
    ) -> Self {
        let mut questions = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for q in &e.questions {
                questions.entry(normalise(q)).or_insert(i);
            }
        }
        SimpleResponder {
            questions,
            entries,
            human_phrases: human_phrases.iter().map(|p| p.to_lowercase()).collect(),
            max_misses,
            clarify_message: clarify_message.to_owned(),
            human_button: human_button.to_owned(),
        }
    }
}

impl Responder for SimpleResponder {
    fn decide(&self, input: &BotInput<'_>) -> Decision {
        let lower = input.text.to_lowercase();
        if let Some(p) = self
            .human_phrases
            .iter()
            .find(|p| contains_phrase(&lower, p))
        {
            return Decision::Escalate {
                reason: EscalationReason::AskedForHuman,
                detail: format!("customer wrote \"{p}\""),
            };
        }
        if let Some(&i) = self.questions.get(&normalise(input.text)) {
            let e = &self.entries[i];
            return Decision::Answer {
                entry: e.id.clone(),
                text: e.answer.clone(),
                score: 1.0,
                escalate_after: e.escalate,
            };
        }
        if input.misses + 1 >= self.max_misses {
            return Decision::Escalate {
                reason: EscalationReason::LowConfidence,
                detail: format!("no knowledge-base match x{}", input.misses + 1),
            };
        }
        Decision::Clarify {
            text: self.clarify_message.clone(),
            options: vec![Button {
                label: self.human_button.clone(),
                payload: self
                    .human_phrases
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "human".into()),
            }],
            score: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> SimpleResponder {
        let entries = crate::bot::kb::load_dir(std::path::Path::new("config/kb")).unwrap();
        let c = crate::config::BotConfig::default();
        SimpleResponder::new(entries, &c.human_phrases, 2, "?", "person")
    }

    fn decide(b: &SimpleResponder, text: &str, misses: u32) -> Decision {
        b.decide(&BotInput { text, misses })
    }

    #[test]
    fn answers_normalised_questions_in_both_languages() {
        let b = bot();
        for (q, id) in [
            ("where is my order", "order-tracking-en"),
            ("WHERE IS MY ORDER??", "order-tracking-en"),
            ("多少天能到货", "delivery-time-zh"),
            ("多少天 能到货！", "delivery-time-zh"),
        ] {
            match decide(&b, q, 0) {
                Decision::Answer { entry, .. } => assert_eq!(entry, id, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn asks_for_a_person_at_once() {
        let b = bot();
        for q in [
            "I want a human",
            "转人工",
            "can I talk to a real person please",
        ] {
            assert!(
                matches!(
                    decide(&b, q, 0),
                    Decision::Escalate {
                        reason: EscalationReason::AskedForHuman,
                        ..
                    }
                ),
                "{q}"
            );
        }
        // Whole words only for ASCII phrases.
        assert!(matches!(
            decide(&b, "Tell me about reagents", 0),
            Decision::Clarify { .. }
        ));
    }

    #[test]
    fn clarifies_then_escalates_after_max_misses() {
        let b = bot();
        assert!(
            matches!(decide(&b, "blue llamas", 0), Decision::Clarify { ref options, .. } if options.len() == 1)
        );
        assert!(matches!(
            decide(&b, "blue llamas", 1),
            Decision::Escalate {
                reason: EscalationReason::LowConfidence,
                ..
            }
        ));
    }

    #[test]
    fn sensitive_entries_answer_then_escalate() {
        match decide(&bot(), "I was charged twice", 0) {
            Decision::Answer { escalate_after, .. } => assert!(escalate_after),
            other => panic!("{other:?}"),
        }
    }
}
