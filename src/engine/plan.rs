//! The two rules on the message path a newcomer most needs to read, as pure functions: what
//! the bot's decision does to a conversation in its status ([`bot_plan`]), and what one send's
//! result means for a queued reply ([`delivery_plan`]). The engine applies each plan in one
//! commit; both are tested as tables, like [`crate::model::transition`].

use std::borrow::Cow;
use std::time::Duration;

use switchboard_channel::{Button, ChannelError, ExternalMessageId};

use super::outbox::OutboxConfig;
use crate::bot::{Decision, EscalationReason};
use crate::model::{OutboxItem, Status};

/// What the bot sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Say<'d> {
    /// The decision's own text, with these buttons.
    Text {
        text: &'d str,
        buttons: &'d [Button],
    },
    /// The hand-over notice (its wording depends on who is on shift, which the caller knows).
    HandOff,
}

/// What happens to the count of clarifications in a row (too many and the bot hands over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misses {
    Keep,
    Reset,
    Add,
}

/// What happens to the entry the bot answered last (a customer who waits for a person is not
/// given the same answer twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastEntry<'d> {
    Keep,
    Set(&'d str),
    Clear,
}

/// What the bot does with one decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BotPlan<'d> {
    /// Nothing is said and nothing changes: the message only leaves the bot's queue.
    Silent,
    /// The decision is recorded and said; then, with `escalate`, a person takes over.
    Speak {
        say: Say<'d>,
        misses: Misses,
        last_entry: LastEntry<'d>,
        escalate: Option<(EscalationReason, Cow<'d, str>)>,
    },
}

/// Whether the bot may say anything in `status`: once a person has the conversation
/// (assigned, snoozed, resolved), it is silent whatever it would decide.
pub(crate) fn bot_may_speak(status: Status) -> bool {
    matches!(status, Status::Bot | Status::Queued)
}

/// What `decision` does to a conversation in `status` whose bot last answered `last_entry`.
pub(crate) fn bot_plan<'d>(
    status: Status,
    last_entry: Option<&str>,
    decision: &'d Decision,
) -> BotPlan<'d> {
    let speak = |say, misses, last_entry, escalate| BotPlan::Speak {
        say,
        misses,
        last_entry,
        escalate,
    };
    match (status, decision) {
        (
            Status::Bot,
            Decision::Answer {
                entry,
                text,
                escalate_after,
                buttons,
                ..
            },
        ) => speak(
            Say::Text { text, buttons },
            Misses::Reset,
            LastEntry::Set(entry),
            escalate_after.then(|| {
                (
                    EscalationReason::Sensitive,
                    Cow::Owned(format!("sensitive, answered with {entry} first")),
                )
            }),
        ),
        // Small talk: said, and nothing else changes.
        (Status::Bot, Decision::Reply { text, .. }) => speak(
            Say::Text { text, buttons: &[] },
            Misses::Keep,
            LastEntry::Keep,
            None,
        ),
        (Status::Bot, Decision::Clarify { text, options, .. }) => speak(
            Say::Text {
                text,
                buttons: options,
            },
            Misses::Add,
            LastEntry::Keep,
            None,
        ),
        (Status::Bot, Decision::Escalate { reason, detail }) => speak(
            Say::HandOff,
            Misses::Reset,
            LastEntry::Clear,
            Some((*reason, Cow::Borrowed(detail))),
        ),
        // Waiting for a person: the bot answers what it knows well (not sensitive topics),
        // each entry once (a customer repeating themselves while they wait is not answered
        // the same way again), without follow-up buttons, and is otherwise silent; the
        // conversation stays in the queue.
        (
            Status::Queued,
            Decision::Answer {
                entry,
                text,
                escalate_after: false,
                ..
            },
        ) if last_entry != Some(entry.as_str()) => speak(
            Say::Text { text, buttons: &[] },
            Misses::Keep,
            LastEntry::Set(entry),
            None,
        ),
        _ => BotPlan::Silent,
    }
}

/// What one send's result means for its queued reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeliveryPlan {
    /// Delivered: the reply leaves the outbox.
    Sent(ExternalMessageId),
    /// Tried again at `at_ms`, with these counts (flood waits do not use up attempts).
    Retry {
        at_ms: i64,
        attempts: u32,
        flood_waits: u32,
        reason: String,
    },
    /// Given up: the message is marked failed (an agent may retry it). `unreachable`: the
    /// network says the customer cannot be reached on this thread, shown on the conversation.
    Failed {
        error: String,
        unreachable: Option<String>,
    },
}

impl DeliveryPlan {
    /// The metrics label.
    pub fn outcome(&self) -> &'static str {
        match self {
            DeliveryPlan::Sent(_) => "sent",
            DeliveryPlan::Retry { .. } => "retry",
            DeliveryPlan::Failed { .. } => "failed",
        }
    }
}

/// What `result`, the outcome of sending `item` at `now`, means. `jitter` in `[0, 1)` spreads
/// retries over the upper half of the backoff (see [`OutboxConfig::backoff_ms`]).
pub(crate) fn delivery_plan(
    item: &OutboxItem,
    result: Result<ExternalMessageId, ChannelError>,
    config: &OutboxConfig,
    now: i64,
    jitter: f64,
) -> DeliveryPlan {
    let attempts = item.attempts + 1;
    match result {
        Ok(id) => DeliveryPlan::Sent(id),
        // Flood control (the network named its own wait) is waited out as often as it
        // comes: it says "later", not "failed", so it does not use up attempts.
        Err(ChannelError::Retryable {
            reason,
            after: Some(after),
        }) => {
            let delay = after.max(Duration::from_millis(config.base_delay_ms));
            DeliveryPlan::Retry {
                at_ms: now.saturating_add(delay.as_millis() as i64),
                attempts: item.attempts,
                flood_waits: item.flood_waits + 1,
                reason,
            }
        }
        Err(ChannelError::Retryable {
            reason,
            after: None,
        }) if attempts < config.max_attempts => DeliveryPlan::Retry {
            at_ms: now.saturating_add(config.backoff_ms(item.attempts, jitter) as i64),
            attempts,
            flood_waits: item.flood_waits,
            reason,
        },
        Err(e) => DeliveryPlan::Failed {
            unreachable: match &e {
                ChannelError::Unreachable(reason) => Some(reason.clone()),
                _ => None,
            },
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConversationId;
    use switchboard_channel::{ChannelId, ExternalThread, Outbound, OutboundAuthor, TextFormat};

    fn button(label: &str, payload: &str) -> Button {
        Button {
            label: label.into(),
            payload: payload.into(),
        }
    }

    fn answer(entry: &str, escalate_after: bool) -> Decision {
        Decision::Answer {
            entry: entry.into(),
            text: format!("answer of {entry}"),
            score: 0.9,
            escalate_after,
            buttons: vec![button("更多", "more")],
            detail: String::new(),
        }
    }

    #[test]
    fn the_bot_speaks_by_status_and_decision() {
        use LastEntry::{Clear, Keep as Same, Set};
        use Misses::{Add, Keep, Reset};
        let refund = answer("refund", false);
        let hacked = answer("hacked", true);
        let reply = Decision::Reply {
            text: "您好！".into(),
            detail: String::new(),
        };
        let clarify = Decision::Clarify {
            text: "您是想问以下哪个问题？".into(),
            options: vec![button("退款", "refund")],
            score: Some(0.5),
            detail: String::new(),
        };
        let person = Decision::Escalate {
            reason: EscalationReason::AskedForHuman,
            detail: "人工".into(),
        };
        let text = |d: &'static Decision, with_buttons: bool| match d {
            Decision::Answer { text, buttons, .. } => Say::Text {
                text,
                buttons: if with_buttons { buttons } else { &[] },
            },
            Decision::Clarify { text, options, .. } => Say::Text {
                text,
                buttons: options,
            },
            Decision::Reply { text, .. } => Say::Text { text, buttons: &[] },
            Decision::Escalate { .. } => Say::HandOff,
        };
        let leak = |d: Decision| -> &'static Decision { Box::leak(Box::new(d)) };
        let (refund, hacked, reply, clarify, person) = (
            leak(refund),
            leak(hacked),
            leak(reply),
            leak(clarify),
            leak(person),
        );
        let speak =
            |say, misses, last_entry, escalate: Option<(EscalationReason, &str)>| BotPlan::Speak {
                say,
                misses,
                last_entry,
                escalate: escalate.map(|(r, d)| (r, Cow::Owned(d.to_owned()))),
            };
        let sensitive = Some((
            EscalationReason::Sensitive,
            "sensitive, answered with hacked first",
        ));
        #[rustfmt::skip]
        let table: Vec<(Status, Option<&str>, &Decision, BotPlan)> = vec![
            // The bot has the conversation: everything it decides is said.
            (Status::Bot, None, refund, speak(text(refund, true), Reset, Set("refund"), None)),
            (Status::Bot, Some("refund"), refund, speak(text(refund, true), Reset, Set("refund"), None)),
            (Status::Bot, None, hacked, speak(text(hacked, true), Reset, Set("hacked"), sensitive)),
            (Status::Bot, None, reply, speak(text(reply, false), Keep, Same, None)),
            (Status::Bot, None, clarify, speak(text(clarify, true), Add, Same, None)),
            (Status::Bot, Some("refund"), person, speak(Say::HandOff, Reset, Clear,
                Some((EscalationReason::AskedForHuman, "人工")))),
            // Waiting for a person: a plain answer, once per entry, without buttons.
            (Status::Queued, None, refund, speak(text(refund, false), Keep, Set("refund"), None)),
            (Status::Queued, Some("other"), refund, speak(text(refund, false), Keep, Set("refund"), None)),
            (Status::Queued, Some("refund"), refund, BotPlan::Silent),
            (Status::Queued, None, hacked, BotPlan::Silent),
            (Status::Queued, None, reply, BotPlan::Silent),
            (Status::Queued, None, clarify, BotPlan::Silent),
            (Status::Queued, None, person, BotPlan::Silent),
        ];
        for (status, last, decision, want) in table {
            assert_eq!(
                bot_plan(status, last, decision),
                want,
                "{status:?} {last:?} {decision:?}"
            );
        }
        // A person has it: silent, whatever the decision.
        for status in [Status::Assigned, Status::Snoozed, Status::Resolved] {
            assert!(!bot_may_speak(status));
            for decision in [refund, hacked, reply, clarify, person] {
                assert_eq!(bot_plan(status, None, decision), BotPlan::Silent);
            }
        }
        assert!(bot_may_speak(Status::Bot) && bot_may_speak(Status::Queued));
    }

    fn item(attempts: u32, flood_waits: u32) -> OutboxItem {
        OutboxItem {
            conversation: ConversationId(1),
            seq: 2,
            channel: ChannelId::new("web"),
            thread: ExternalThread("t".into()),
            outbound: Outbound {
                id: "sb-1-2".into(),
                author: OutboundAuthor::Bot,
                text: "好的".into(),
                buttons: vec![],
                in_reply_to: None,
                format: TextFormat::Plain,
                attachments: vec![],
            },
            attempts,
            flood_waits,
            next_attempt_ms: 0,
        }
    }

    #[test]
    fn a_send_result_means_sent_retry_or_failed() {
        let config = OutboxConfig {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 10_000,
            ..OutboxConfig::default()
        };
        let now = 1_000_000;
        let retry = |at_ms, attempts, flood_waits, reason: &str| DeliveryPlan::Retry {
            at_ms,
            attempts,
            flood_waits,
            reason: reason.into(),
        };
        let flood = |secs| {
            Err(ChannelError::Retryable {
                reason: "429".into(),
                after: Some(Duration::from_secs(secs)),
            })
        };
        let failed = |e: ChannelError, unreachable: Option<&str>| DeliveryPlan::Failed {
            error: e.to_string(),
            unreachable: unreachable.map(str::to_owned),
        };
        let blocked = || ChannelError::Unreachable("bot was blocked by the user".into());
        let bad = || ChannelError::Permanent("400 bad request".into());
        let table: Vec<(
            OutboxItem,
            Result<ExternalMessageId, ChannelError>,
            f64,
            DeliveryPlan,
        )> = vec![
            (
                item(0, 0),
                Ok(ExternalMessageId("m1".into())),
                0.0,
                DeliveryPlan::Sent(ExternalMessageId("m1".into())),
            ),
            // Backoff doubles from the base, jitter in its upper half.
            (
                item(0, 0),
                Err(ChannelError::retryable("timeout")),
                0.0,
                retry(now + 500, 1, 0, "timeout"),
            ),
            (
                item(1, 0),
                Err(ChannelError::retryable("timeout")),
                0.0,
                retry(now + 1_000, 2, 0, "timeout"),
            ),
            (
                item(1, 4),
                Err(ChannelError::retryable("timeout")),
                0.999_999,
                retry(now + 1_999, 2, 4, "timeout"),
            ),
            // The last attempt fails for good.
            (
                item(2, 0),
                Err(ChannelError::retryable("timeout")),
                0.0,
                failed(ChannelError::retryable("timeout"), None),
            ),
            // Flood control is waited out, at least the base delay, without using attempts,
            // even past `max_attempts`.
            (item(2, 7), flood(30), 0.0, retry(now + 30_000, 2, 8, "429")),
            (item(0, 0), flood(0), 0.0, retry(now + 1_000, 0, 1, "429")),
            (item(0, 0), Err(bad()), 0.0, failed(bad(), None)),
            (
                item(0, 0),
                Err(blocked()),
                0.0,
                failed(blocked(), Some("bot was blocked by the user")),
            ),
        ];
        for (item, result, jitter, want) in table {
            let what = format!("{item:?} {result:?}");
            assert_eq!(
                delivery_plan(&item, result, &config, now, jitter),
                want,
                "{what}"
            );
        }
        // Capped at the longest delay.
        assert_eq!(config.backoff_ms(20, 0.999_999), 9_999);
        assert_eq!(config.backoff_ms(20, 0.0), 5_000);
    }
}
