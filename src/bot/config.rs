//! `[bot]`: the knowledge base, the model, the decision thresholds and what the bot says.

use std::path::PathBuf;

use serde::Deserialize;

use super::matcher::Policy;
use crate::model::lang::Localized;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Directory of knowledge-base files (`*.toml`).
    #[serde(default = "default_kb_dir")]
    pub kb_dir: PathBuf,
    /// Consecutive unanswered customer messages before the bot hands over.
    #[serde(default = "default_max_misses")]
    pub max_misses: u32,
    /// Phrases that ask for a person; matched case-insensitively anywhere in the message.
    #[serde(default = "default_human_phrases")]
    pub human_phrases: Vec<String>,
    /// Sent when the bot could not answer and asks the customer to rephrase.
    #[serde(default = "default_clarify")]
    pub clarify_message: Localized,
    /// Asked when several entries could be meant; the entries follow as buttons.
    #[serde(default = "default_suggest")]
    pub suggest_message: Localized,
    /// Label of the "none of these" button under suggestions.
    #[serde(default = "default_none_button")]
    pub none_button: Localized,
    /// Label of the "talk to a person" button where the channel has buttons.
    #[serde(default = "default_human_button")]
    pub human_button: Localized,
    /// Sent when the conversation is handed to people.
    #[serde(default = "default_handoff")]
    pub handoff_message: Localized,
    /// Sent when a customer opens a conversation on purpose (Telegram `/start`).
    #[serde(default = "default_welcome")]
    pub welcome_message: String,
    /// A sentence-transformers directory (config.json, tokenizer.json, model.safetensors)
    /// for semantic matching. Without one the bot matches words only and hands off more.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Languages the model understands (`en`, `zh`); messages in others are matched by
    /// words only. all-MiniLM-L6-v2: `["en"]`; a multilingual model: `["en", "zh"]`.
    #[serde(default = "default_model_languages")]
    pub model_languages: Vec<String>,
    /// Words and examples of intents (asking for a person, sensitive, upset, small talk)
    /// added to the shipped `config/intents.toml`.
    #[serde(default)]
    pub intents_file: Option<PathBuf>,
    /// Choose the decision thresholds from the knowledge base itself at every build (see
    /// `bot::calibrate`) instead of using `semantic` / `lexical` as written.
    #[serde(default)]
    pub calibrate: bool,
    /// The estimated wrong-answer rate a calibration keeps under (0..1).
    #[serde(default = "default_max_wrong_rate")]
    pub max_wrong_rate: f64,
    /// Decision thresholds with a model.
    #[serde(default = "default_semantic")]
    pub semantic: Policy,
    /// Decision thresholds without a model.
    #[serde(default = "default_lexical")]
    pub lexical: Policy,
    /// Words of an upset customer; one of them hands the conversation to a person.
    #[serde(default = "default_complaint_phrases")]
    pub complaint_phrases: Vec<String>,
    /// Words of urgency; with another cue (shouting, !!!), a person takes over.
    #[serde(default = "default_urgency_phrases")]
    pub urgency_phrases: Vec<String>,
    /// Said instead of `handoff_message` when nobody is on shift; `{when}` is replaced by
    /// when the next person starts.
    #[serde(default = "default_offhours")]
    pub offhours_message: Localized,
    /// Said instead of `handoff_message` once recent waits are known: `{position}` is the
    /// customer's place in the queue, `{wait_minutes}` the recent average wait for a person.
    #[serde(default = "default_handoff_wait")]
    pub handoff_wait_message: Localized,
    /// From this expected wait on, `long_wait_message` is added.
    #[serde(default = "default_long_wait_minutes")]
    pub long_wait_minutes: u64,
    /// Offers the customer another way when the wait is long.
    #[serde(default = "default_long_wait")]
    pub long_wait_message: Localized,
}

fn default_max_wrong_rate() -> f64 {
    0.03
}

fn default_model_languages() -> Vec<String> {
    vec!["en".into()]
}
fn default_semantic() -> Policy {
    Policy::SEMANTIC
}
fn default_lexical() -> Policy {
    Policy::LEXICAL
}
fn default_complaint_phrases() -> Vec<String> {
    [
        "complaint",
        "complain",
        "ridiculous",
        "unacceptable",
        "terrible",
        "worst",
        "scam",
        "disgusting",
        "furious",
        "fed up",
        "waste of time",
        "投诉",
        "太差了",
        "气死了",
        "垃圾",
        "骗子",
        "差评",
        "受不了",
    ]
    .map(String::from)
    .to_vec()
}
fn default_urgency_phrases() -> Vec<String> {
    [
        "urgent",
        "asap",
        "immediately",
        "right now",
        "emergency",
        "紧急",
        "马上",
        "立刻",
        "急",
    ]
    .map(String::from)
    .to_vec()
}
fn default_handoff_wait() -> Localized {
    Localized::PerLanguage {
        en: "I am passing you to a colleague. You are number {position} in line; people are answering in about {wait_minutes} min.".into(),
        zh: "已为您转接人工客服，您排在第 {position} 位，预计等待约 {wait_minutes} 分钟。".into(),
    }
}
fn default_long_wait_minutes() -> u64 {
    30
}
fn default_long_wait() -> Localized {
    Localized::PerLanguage {
        en: "It is busy right now: you can leave your question and your email address here, and we will answer you by email.".into(),
        zh: "当前咨询较多：您可以在此留下问题和邮箱，我们会通过邮件回复您。".into(),
    }
}
fn default_offhours() -> Localized {
    Localized::PerLanguage {
        en: "Our team is offline right now; a person will reply here after {when}.".into(),
        zh: "人工客服目前不在线，{when} 之后会有专人回复您。".into(),
    }
}

fn default_kb_dir() -> PathBuf {
    "config/kb".into()
}
fn default_max_misses() -> u32 {
    2
}
fn default_human_phrases() -> Vec<String> {
    [
        "human",
        "agent",
        "real person",
        "representative",
        "talk to a person",
        "转人工",
        "人工客服",
        "找真人",
    ]
    .map(String::from)
    .to_vec()
}
fn per_language(en: &str, zh: &str) -> Localized {
    Localized::PerLanguage {
        en: en.into(),
        zh: zh.into(),
    }
}
fn default_clarify() -> Localized {
    per_language(
        "Sorry, I did not understand that. Could you say it another way?",
        "抱歉，我没有理解，可以换个说法吗？",
    )
}
fn default_suggest() -> Localized {
    per_language("Did you mean one of these?", "您是想问以下哪个问题？")
}
fn default_none_button() -> Localized {
    per_language("None of these", "都不是")
}
fn default_human_button() -> Localized {
    per_language("Talk to a person", "转人工")
}
fn default_welcome() -> String {
    "Hello! Ask me anything; type /human to talk to a person. / 您好！请直接提问，输入 /human 转人工。".into()
}

fn default_handoff() -> Localized {
    Localized::PerLanguage {
        en: "I am passing you to a colleague; a person will reply here soon.".into(),
        zh: "已为您转接人工客服，请稍候。".into(),
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            kb_dir: default_kb_dir(),
            max_misses: default_max_misses(),
            human_phrases: default_human_phrases(),
            clarify_message: default_clarify(),
            suggest_message: default_suggest(),
            none_button: default_none_button(),
            human_button: default_human_button(),
            handoff_message: default_handoff(),
            welcome_message: default_welcome(),
            model_dir: None,
            model_languages: default_model_languages(),
            intents_file: None,
            calibrate: false,
            max_wrong_rate: default_max_wrong_rate(),
            semantic: Policy::SEMANTIC,
            lexical: Policy::LEXICAL,
            complaint_phrases: default_complaint_phrases(),
            urgency_phrases: default_urgency_phrases(),
            offhours_message: default_offhours(),
            handoff_wait_message: default_handoff_wait(),
            long_wait_minutes: default_long_wait_minutes(),
            long_wait_message: default_long_wait(),
        }
    }
}
