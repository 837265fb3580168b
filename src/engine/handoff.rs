//! What the customer is told when the bot hands over: off hours, or their place in line
//! and the recent wait.

use std::sync::Mutex;

use super::{Engine, EngineSettings};
use crate::model::availability::Topic;
use crate::model::{Conversation, Status};

/// The hand-over with a place in line and an expected wait (rounded up to whole minutes),
/// plus the long-wait offer from `long_wait_minutes` on.
fn handoff_text(settings: &EngineSettings, language: &str, position: u64, wait_ms: i64) -> String {
    let minutes = (wait_ms.max(0) as u64).div_ceil(60_000).max(1);
    let mut text = settings
        .handoff_wait_message
        .pick(language)
        .replace("{position}", &position.to_string())
        .replace("{wait_minutes}", &minutes.to_string());
    if minutes >= settings.long_wait_minutes {
        text.push_str("\n\n");
        text.push_str(settings.long_wait_message.pick(language));
    }
    text
}

/// The last few first-response waits, for what customers are told on hand-over.
#[derive(Default)]
pub(super) struct RecentWaits(Mutex<std::collections::VecDeque<i64>>);

impl RecentWaits {
    const KEEP: usize = 20;
    /// Fewer samples than this say nothing reliable.
    const ENOUGH: usize = 3;

    pub(super) fn record(&self, ms: i64) {
        let mut w = self.0.lock().expect("waits lock");
        if w.len() == Self::KEEP {
            w.pop_front();
        }
        w.push_back(ms);
    }

    /// The average of the recent waits, in ms.
    fn expected(&self) -> Option<i64> {
        let w = self.0.lock().expect("waits lock");
        (w.len() >= Self::ENOUGH).then(|| w.iter().sum::<i64>() / w.len() as i64)
    }
}

impl Engine {
    /// Tags of the knowledge-base entry the bot answered last (routing by topic).
    pub fn topic_tags(&self, conv: &Conversation) -> Vec<String> {
        conv.bot_last_entry
            .as_deref()
            .map(|e| self.responder().entry_tags(e))
            .unwrap_or_default()
    }

    /// Teams with their own hours, and when each opens next if closed now.
    pub fn team_openings(&self, now_ms: i64) -> Vec<(String, Option<String>)> {
        let availability = self.availability.read().expect("availability lock").clone();
        availability.team_openings(now_ms)
    }

    /// `None` when people are at work at `now_ms`; otherwise when they are next, in words.
    pub fn next_shift(&self, now_ms: i64) -> Option<String> {
        let availability = self.availability.read().expect("availability lock").clone();
        availability.next_shift(now_ms)
    }

    /// What the customer is told when the bot hands over: off hours, when people are back;
    /// otherwise their place in the queue and the recent wait, once waits are known.
    /// `language` (`en`, `zh`) picks among per-language texts.
    pub async fn handoff_message(
        &self,
        now_ms: i64,
        conv: &Conversation,
        language: &str,
    ) -> String {
        let availability = self.availability.read().expect("availability lock").clone();
        let tags = self.topic_tags(conv);
        let topic = Topic {
            language,
            tags: &tags,
        };
        if let Some(when) = availability.next_shift_for(now_ms, conv, topic) {
            return self
                .settings()
                .offhours_message
                .pick(language)
                .replace("{when}", &when);
        }
        let Some(wait_ms) = self.recent_waits.expected() else {
            return self.settings().handoff_message.pick(language).to_owned();
        };
        let counts = match self.store.status_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the queue; the hand-over text says no place");
                return self.settings().handoff_message.pick(language).to_owned();
            }
        };
        let position = counts[Status::Queued as usize] + 1;
        handoff_text(&self.settings(), language, position, wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::outbox::OutboxConfig;
    use crate::model::lang::Localized;

    #[test]
    fn waits_round_up_and_long_ones_offer_another_way() {
        let settings = EngineSettings {
            handoff_message: "".into(),
            welcome_message: String::new(),
            offhours_message: "".into(),
            handoff_wait_message: Localized::PerLanguage {
                en: "#{position}, {wait_minutes} min".into(),
                zh: "第 {position} 位，约 {wait_minutes} 分钟".into(),
            },
            long_wait_minutes: 30,
            long_wait_message: "leave your email".into(),
            outbox: OutboxConfig::default(),
            bot_workers: 1,
        };
        assert_eq!(handoff_text(&settings, "en", 3, 5_000), "#3, 1 min");
        assert_eq!(
            handoff_text(&settings, "zh", 1, 120_001),
            "第 1 位，约 3 分钟"
        );
        assert_eq!(
            handoff_text(&settings, "en", 12, 29 * 60_000 + 1),
            "#12, 30 min\n\nleave your email"
        );
    }
}
