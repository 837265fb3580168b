//! The bot: decides what to say to a customer message, or that a person should take over.
//!
//! - [`Responder`]: the seam the engine calls. It is pure CPU work (no I/O), called off the
//!   async runtime, and must be deterministic for a given knowledge base.
//! - [`kb`]: the knowledge base files.
//! - [`simple`]: the responder of this build: normalised exact matching plus rules for asking
//!   for a person. The hybrid matcher replaces it behind the same trait.

pub mod kb;
pub mod simple;

use switchboard_channel::Button;

/// What the bot gets to see.
#[derive(Debug, Clone)]
pub struct BotInput<'a> {
    pub text: &'a str,
    /// Consecutive customer messages in this conversation the bot could not answer.
    pub misses: u32,
}

/// Why the bot hands a conversation to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationReason {
    AskedForHuman,
    LowConfidence,
    Sensitive,
    Frustrated,
    BotError,
}

impl EscalationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AskedForHuman => "asked_for_human",
            Self::LowConfidence => "low_confidence",
            Self::Sensitive => "sensitive",
            Self::Frustrated => "frustrated",
            Self::BotError => "bot_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer from the knowledge base; with `escalate_after`, then hand over (sensitive topics).
    Answer {
        entry: String,
        text: String,
        score: f32,
        escalate_after: bool,
    },
    /// Not sure: ask the customer, offering choices where there are any. Counts as a miss.
    Clarify {
        text: String,
        options: Vec<Button>,
        score: Option<f32>,
    },
    /// A person should take over now.
    Escalate {
        reason: EscalationReason,
        detail: String,
    },
}

pub trait Responder: Send + Sync + 'static {
    fn decide(&self, input: &BotInput<'_>) -> Decision;
}
