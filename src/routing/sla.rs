//! Service-level targets: how soon a person answers a customer who was handed over (first
//! response) and each later customer message (next response), counted in business hours.
//!
//! A clock starts on the conversation when the customer starts waiting for a person and stops
//! when a person replies (or the conversation goes back to the bot or is resolved). Its
//! deadline is fixed when it starts, through the business hours, so nothing has to be
//! recomputed later; routing raises `sla_due_soon` and `sla_breached` events when their time
//! comes (also for times that passed while the daemon was down).

use serde::Deserialize;

use crate::model::{Author, Conversation, Priority, Status};
pub use crate::model::{SlaClock, SlaKind};

/// `[routing.sla]` in the config. Times are durations like `"1h"`, `"90m"`, `"4h 30m"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Business time until a person first answers a handed-over customer.
    #[serde(deserialize_with = "duration_ms")]
    pub first_response: i64,
    /// Business time until a person answers each later customer message.
    #[serde(deserialize_with = "duration_ms")]
    pub next_response: i64,
    /// `sla_due_soon` is raised when this share of the time is used.
    #[serde(default = "default_due_soon")]
    pub due_soon_percent: u8,
    /// Tighter or looser targets per priority (`urgent`, `high`, `normal`, `low`).
    #[serde(default)]
    pub priorities: std::collections::BTreeMap<String, Targets>,
    /// Targets per team (by `[[routing.teams]]` name); a priority's targets still win.
    #[serde(default)]
    pub teams: std::collections::BTreeMap<String, Targets>,
}

fn default_due_soon() -> u8 {
    80
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(deserialize_with = "duration_ms")]
    pub first_response: i64,
    #[serde(deserialize_with = "duration_ms")]
    pub next_response: i64,
}

/// `"1h 30m"` as milliseconds; at least a second.
fn duration_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    let parsed: jiff::SignedDuration = text.parse().map_err(|_| {
        serde::de::Error::custom(format!("`{text}` is not a duration like \"1h\" or \"90m\""))
    })?;
    let ms = parsed.as_millis();
    if ms < 1000 {
        return Err(serde::de::Error::custom(format!(
            "`{text}`: a target must be at least a second"
        )));
    }
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl SlaConfig {
    /// Business time in ms for `kind` at `priority`, for a conversation of `team`.
    pub fn target_ms(&self, kind: SlaKind, priority: Priority, team: Option<&str>) -> i64 {
        let name = serde_json::to_value(priority)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let t = self
            .priorities
            .get(&name)
            .or_else(|| team.and_then(|t| self.teams.get(t)))
            .copied()
            .unwrap_or(Targets {
                first_response: self.first_response,
                next_response: self.next_response,
            });
        match kind {
            SlaKind::FirstResponse => t.first_response,
            SlaKind::NextResponse => t.next_response,
        }
    }
}

/// What a change does to the clock: start one (of this kind), stop it, or leave it.
#[derive(Debug, PartialEq, Eq)]
pub enum ClockChange {
    Start(SlaKind),
    Stop,
    Keep,
}

/// Decides the clock after a change from `before` (None: a new conversation) to `after`,
/// which added messages by `added` (their authors). Pure.
pub fn clock_change(before: Option<Status>, after: &Conversation, added: &[Author]) -> ClockChange {
    let running = after.sla.is_some();
    if added.iter().any(|a| matches!(a, Author::Agent(_))) {
        return if running {
            ClockChange::Stop
        } else {
            ClockChange::Keep
        };
    }
    match after.status {
        Status::Bot | Status::Resolved => {
            if running {
                ClockChange::Stop
            } else {
                ClockChange::Keep
            }
        }
        _ if running => ClockChange::Keep,
        Status::Queued if matches!(before, None | Some(Status::Bot | Status::Resolved)) => {
            ClockChange::Start(SlaKind::FirstResponse)
        }
        Status::Queued | Status::Assigned if added.contains(&Author::Customer) => {
            ClockChange::Start(SlaKind::NextResponse)
        }
        _ => ClockChange::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, ContactId, ConversationId};
    use switchboard_channel::{ChannelId, ExternalThread};

    fn conv(status: Status, running: bool) -> Conversation {
        let mut c = Conversation::new(
            ConversationId(1),
            ContactId(1),
            ChannelId("web".into()),
            ExternalThread("t".into()),
            0,
        );
        c.status = status;
        c.sla = running.then_some(SlaClock {
            kind: SlaKind::FirstResponse,
            started_ms: 0,
            due_ms: 10,
            warn_ms: 8,
            warned: false,
            breached: false,
        });
        c
    }

    #[test]
    fn clocks_start_when_customers_wait_and_stop_when_people_answer() {
        use ClockChange::*;
        use SlaKind::*;
        use Status::*;
        let customer = [Author::Customer];
        let agent = [Author::Agent(AgentId(7))];
        let bot = [Author::Bot];
        // Handed over (by the bot's answer or a reopen): the first response is due.
        assert_eq!(
            clock_change(Some(Bot), &conv(Queued, false), &bot),
            Start(FirstResponse)
        );
        assert_eq!(
            clock_change(Some(Resolved), &conv(Queued, false), &[]),
            Start(FirstResponse)
        );
        // A person answers: stopped; the customer writes again: the next response is due.
        assert_eq!(
            clock_change(Some(Assigned), &conv(Assigned, true), &agent),
            Stop
        );
        assert_eq!(
            clock_change(Some(Assigned), &conv(Assigned, false), &customer),
            Start(NextResponse)
        );
        assert_eq!(
            clock_change(Some(Queued), &conv(Queued, false), &customer),
            Start(NextResponse)
        );
        // Already running: more customer messages change nothing; assignment changes nothing.
        assert_eq!(
            clock_change(Some(Queued), &conv(Queued, true), &customer),
            Keep
        );
        assert_eq!(clock_change(Some(Queued), &conv(Assigned, true), &[]), Keep);
        // Back to the bot, or resolved: stopped. The bot's own conversations have no clock.
        assert_eq!(clock_change(Some(Assigned), &conv(Bot, true), &[]), Stop);
        assert_eq!(
            clock_change(Some(Assigned), &conv(Resolved, true), &[]),
            Stop
        );
        assert_eq!(clock_change(Some(Bot), &conv(Bot, false), &customer), Keep);
        assert_eq!(clock_change(None, &conv(Bot, false), &customer), Keep);
        // Snoozed: left as it is (routing does not judge snoozed conversations).
        assert_eq!(
            clock_change(Some(Assigned), &conv(Snoozed, true), &[]),
            Keep
        );
        assert_eq!(
            clock_change(Some(Snoozed), &conv(Snoozed, false), &customer),
            Keep
        );
    }

    #[test]
    fn priorities_override_the_targets() {
        let c: SlaConfig = toml::from_str(
            r#"first_response = "1h"
               next_response = "4h"
               [priorities.urgent]
               first_response = "10m"
               next_response = "30m""#,
        )
        .unwrap();
        let min = 60_000;
        let (first, next) = (SlaKind::FirstResponse, SlaKind::NextResponse);
        assert_eq!(c.target_ms(first, Priority::Normal, None), 60 * min);
        assert_eq!(c.target_ms(next, Priority::Low, None), 240 * min);
        assert_eq!(c.target_ms(first, Priority::Urgent, None), 10 * min);
        assert_eq!(c.target_ms(next, Priority::Urgent, Some("vip")), 30 * min);
        let with_team: SlaConfig = toml::from_str(
            r#"first_response = "1h"
               next_response = "4h"
               [teams.vip]
               first_response = "5m"
               next_response = "20m""#,
        )
        .unwrap();
        assert_eq!(
            with_team.target_ms(first, Priority::Normal, Some("vip")),
            5 * min
        );
        assert_eq!(
            with_team.target_ms(first, Priority::Normal, Some("other")),
            60 * min
        );
        assert_eq!(c.due_soon_percent, 80);
        for bad in ["soon", "10ms", "-5m"] {
            let text = format!("first_response = \"{bad}\"\nnext_response = \"1h\"");
            let e = toml::from_str::<SlaConfig>(&text).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
