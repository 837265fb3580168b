//! When people work: the seam between routing's schedules and the engine's hand-over texts
//! and SLA deadlines. A leaf: routing implements it, the engine asks it.

use super::Conversation;

/// What a conversation is about, for team rules beyond the conversation record.
#[derive(Clone, Copy, Debug, Default)]
pub struct Topic<'a> {
    /// `en` or `zh`: the customer's latest message.
    pub language: &'a str,
    /// Tags of the knowledge-base entry behind the hand-over.
    pub tags: &'a [String],
}

/// Whether people are at work. Routing provides the real schedule; without it, someone
/// always is.
pub trait Availability: Send + Sync + 'static {
    /// `None` when someone is on shift at `now_ms`; otherwise when the next shift starts,
    /// in words for the customer ("at 09:00 (UTC)").
    fn next_shift(&self, now_ms: i64) -> Option<String>;

    /// When `ms` of working time have passed since `from_ms` (SLA deadlines); always-staffed
    /// counts every millisecond.
    fn after_working(&self, from_ms: i64, ms: i64) -> i64 {
        from_ms.saturating_add(ms)
    }

    /// `next_shift` for one conversation: its team's hours where teams keep their own
    /// (`topic`: its customer's language and the KB tags behind it). By default the same
    /// for all.
    fn next_shift_for(
        &self,
        now_ms: i64,
        _conv: &Conversation,
        _topic: Topic<'_>,
    ) -> Option<String> {
        self.next_shift(now_ms)
    }

    /// `after_working` for one conversation (see `next_shift_for`).
    fn after_working_for(
        &self,
        from_ms: i64,
        ms: i64,
        _conv: &Conversation,
        _topic: Topic<'_>,
    ) -> i64 {
        self.after_working(from_ms, ms)
    }

    /// The team a conversation belongs to (routing's teams), if any.
    fn team_of(&self, _conv: &Conversation, _topic: Topic<'_>) -> Option<String> {
        None
    }

    /// Teams with hours of their own: name, and their next opening when closed now.
    fn team_openings(&self, _now_ms: i64) -> Vec<(String, Option<String>)> {
        Vec::new()
    }
}

pub struct AlwaysStaffed;

impl Availability for AlwaysStaffed {
    fn next_shift(&self, _: i64) -> Option<String> {
        None
    }
}
