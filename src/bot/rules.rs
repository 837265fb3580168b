//! Rules that come before matching: a customer who asks for a person gets one at once, and a
//! customer who is upset or urgent gets a person's care instead of another canned answer.

use super::text::{contains_phrase, similarity};

pub struct Rules {
    human: Vec<String>,
    complaint: Vec<String>,
    urgency: Vec<String>,
}

/// Signs that a customer is upset or in a hurry, in words an agent can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    Complaint(String),
    Urgency(String),
    Shouting,
    RepeatedPunctuation,
    /// Asked again what the bot just answered: the answer did not help.
    AskedAgain(String),
}

impl Cue {
    /// Complaints and repeated questions are enough on their own; the rest only together.
    fn weight(&self) -> u32 {
        match self {
            Cue::Complaint(_) | Cue::AskedAgain(_) => 2,
            Cue::Urgency(_) | Cue::Shouting | Cue::RepeatedPunctuation => 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Cue::Complaint(w) => format!("complaint word \"{w}\""),
            Cue::Urgency(w) => format!("urgency word \"{w}\""),
            Cue::Shouting => "shouting (capitals)".into(),
            Cue::RepeatedPunctuation => "repeated !/?".into(),
            Cue::AskedAgain(entry) => format!("asked again after the bot answered ({entry})"),
        }
    }
}

/// Frustration is called when the cues weigh this much.
const FRUSTRATED: u32 = 2;

fn lower_all(v: &[String]) -> Vec<String> {
    v.iter().map(|p| p.to_lowercase()).collect()
}

impl Rules {
    pub fn new(human: &[String], complaint: &[String], urgency: &[String]) -> Rules {
        Rules {
            human: lower_all(human),
            complaint: lower_all(complaint),
            urgency: lower_all(urgency),
        }
    }

    /// The phrase with which the customer asked for a person, if they did.
    pub fn asks_for_human(&self, text: &str) -> Option<&str> {
        let lower = text.to_lowercase();
        self.human
            .iter()
            .find(|p| contains_phrase(&lower, p))
            .map(String::as_str)
    }

    /// The first configured phrase, used as the payload of "talk to a person" buttons.
    pub fn human_payload(&self) -> &str {
        self.human.first().map_or("human", String::as_str)
    }

    /// Cues of frustration or urgency in `text` alone.
    pub fn cues(&self, text: &str) -> Vec<Cue> {
        let lower = text.to_lowercase();
        let mut cues = Vec::new();
        if let Some(w) = self.complaint.iter().find(|p| contains_phrase(&lower, p)) {
            cues.push(Cue::Complaint(w.clone()));
        }
        if let Some(w) = self.urgency.iter().find(|p| contains_phrase(&lower, p)) {
            cues.push(Cue::Urgency(w.clone()));
        }
        if shouting(text) {
            cues.push(Cue::Shouting);
        }
        if repeated_punctuation(text) {
            cues.push(Cue::RepeatedPunctuation);
        }
        cues
    }

    /// Whether the cues (plus a repeated question, if any) call for a person.
    pub fn frustrated(cues: &[Cue]) -> bool {
        cues.iter().map(Cue::weight).sum::<u32>() >= FRUSTRATED
    }
}

/// At least two words of capitals and most letters capitals: "WHERE IS MY ORDER".
fn shouting(text: &str) -> bool {
    let letters: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphabetic() && c.is_ascii())
        .collect();
    let upper = letters.iter().filter(|c| c.is_uppercase()).count();
    let loud_words = text
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_ascii_uppercase()).count() >= 2)
        .filter(|w| !w.chars().any(|c| c.is_ascii_lowercase()))
        .count();
    letters.len() >= 8 && upper * 10 >= letters.len() * 7 && loud_words >= 2
}

/// Three or more ! or ? in a row (ASCII or full-width): "???", "!!!", "？！！".
fn repeated_punctuation(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if matches!(c, '!' | '?' | '！' | '？') {
            run += 1;
            if run >= 3 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Whether a new message repeats the question the bot just answered: the bot would answer
/// it with the same entry again.
pub fn asked_again(previous_entry: Option<&str>, top_entry: Option<&str>) -> bool {
    matches!((previous_entry, top_entry), (Some(a), Some(b)) if a == b)
}

/// Near-duplicate texts (for teach-back and `kb check`).
pub fn near_duplicate(a: &str, b: &str) -> bool {
    similarity(a, b) >= 0.8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::config::BotConfig;

    fn rules() -> Rules {
        let c = BotConfig::default();
        Rules::new(&c.human_phrases, &c.complaint_phrases, &c.urgency_phrases)
    }

    #[test]
    fn asking_for_a_person_in_both_languages() {
        let r = rules();
        for q in [
            "I want to talk to a human",
            "can I speak to a real person?",
            "Representative please",
            "转人工",
            "我要人工客服",
            "找真人",
        ] {
            assert!(r.asks_for_human(q).is_some(), "{q}");
        }
        for q in ["where is my order", "management fees", "怎么退货"] {
            assert!(r.asks_for_human(q).is_none(), "{q}");
        }
    }

    #[test]
    fn frustration_in_both_languages() {
        let r = rules();
        for q in [
            "This is ridiculous, my order is two weeks late",
            "unacceptable service",
            "我要投诉",
            "太差了，什么破服务",
            "气死了！",
            "WHERE IS MY ORDER???",
            "urgent!!! I need my parcel today",
            "马上给我处理！！！",
        ] {
            let cues = r.cues(q);
            assert!(Rules::frustrated(&cues), "{q}: {cues:?}");
        }
    }

    #[test]
    fn no_false_alarm_on_ordinary_questions() {
        let r = rules();
        for q in [
            "Where is my order?",
            "How long does delivery take??",
            "Do you ship to the UK",
            "What sizes do you have? I am usually an M",
            "Can I pay with PayPal",
            "I ordered from the USA",
            "多少天能到货？",
            "怎么退货",
            "支持支付宝吗？",
            "Hi! Is the blue jacket back in stock?",
        ] {
            let cues = r.cues(q);
            assert!(!Rules::frustrated(&cues), "{q}: {cues:?}");
        }
    }

    #[test]
    fn asking_again_is_a_strong_cue() {
        assert!(asked_again(Some("returns-en"), Some("returns-en")));
        assert!(!asked_again(Some("returns-en"), Some("sizes-en")));
        assert!(!asked_again(None, Some("sizes-en")));
        assert!(Rules::frustrated(&[Cue::AskedAgain("returns-en".into())]));
        assert!(!Rules::frustrated(&[Cue::RepeatedPunctuation]));
    }
}
