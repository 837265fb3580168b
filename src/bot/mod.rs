//! The bot: decides what to say to a customer message, or that a person should take over.
//!
//! - [`Responder`]: the seam the engine calls. It is pure CPU work (no I/O), called off the
//!   async runtime, and must be deterministic for a given knowledge base.
//! - [`kb`]: knowledge-base entries: TOML files, JSON Lines import/export; [`live`]: the
//!   live knowledge base in the store (imported and taught entries, proposals).
//! - [`rules`]: asking for a person, frustration and urgency cues.
//! - [`lexical`] (tantivy BM25, jieba), [`embed`] + [`bert`] (sentence
//!   embeddings, a BERT forward pass), [`matcher`] (hybrid scores
//!   and the decision policy), [`responder`]: the bot of the daemon, built from them.
//! - [`eval`]: measuring the matcher on labelled queries.

pub mod bert;
pub mod calibrate;
pub mod confidence;
pub mod config;
pub mod embed;
pub mod eval;
pub mod intent;
pub mod kb;
pub mod lexical;
pub mod live;
pub mod matcher;
pub mod q4;
pub mod responder;
pub mod rules;
pub mod text;
pub mod unigram;
pub mod zh;

use switchboard_channel::Button;

/// What the bot gets to see.
#[derive(Debug, Clone)]
pub struct BotInput<'a> {
    pub text: &'a str,
    /// Consecutive customer messages in this conversation the bot could not answer.
    pub misses: u32,
    /// The entry the bot answered this conversation with last.
    pub last_entry: Option<&'a str>,
}

pub use crate::model::EscalationReason;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer from the knowledge base; with `escalate_after`, then hand over (sensitive topics).
    Answer {
        entry: String,
        text: String,
        score: f32,
        escalate_after: bool,
        /// Follow-up questions offered as buttons.
        buttons: Vec<Button>,
        /// Why, with scores, for the agents.
        detail: String,
    },
    /// Not sure: ask the customer, offering choices where there are any. Counts as a miss.
    Clarify {
        text: String,
        options: Vec<Button>,
        score: Option<f32>,
        detail: String,
    },
    /// Small talk (a greeting, thanks, goodbye, "are you a bot?"): a short reply in the
    /// customer's language; no miss counted, nobody called.
    Reply { text: String, detail: String },
    /// A person should take over now.
    Escalate {
        reason: EscalationReason,
        detail: String,
    },
}

/// A knowledge-base entry suggested to an agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub entry: String,
    /// The entry's question closest to the customer's language.
    pub question: String,
    pub answer: String,
    pub score: f32,
}

pub trait Responder: Send + Sync + 'static {
    fn decide(&self, input: &BotInput<'_>) -> Decision;

    /// The decision for `input` if it is at hand without work (made recently for the same
    /// input), so the caller can skip handing the work to a blocking thread.
    fn recent(&self, _input: &BotInput<'_>) -> Option<Decision> {
        None
    }

    /// The `n` entries likeliest to answer `text`, best first (agent assist, teach-back).
    fn suggest(&self, _text: &str, _n: usize) -> Vec<Suggestion> {
        Vec::new()
    }

    /// The tags of a knowledge-base entry (routing by topic); none when unknown.
    fn entry_tags(&self, _entry: &str) -> Vec<String> {
        Vec::new()
    }

    /// The embedding model in use, if any.
    fn model(&self) -> Option<String> {
        None
    }
}
