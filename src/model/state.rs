//! The conversation state machine as one pure function.
//!
//! ```text
//!   new inbound -> [bot] --escalate--> [queued] --assign--> [assigned(agent)]
//!   any open state --resolve--> [resolved] --customer writes--> [bot] (reopened)
//!   queued/assigned --snooze--> [snoozed] --wake or customer writes--> assigned(agent)/queued
//!   queued/assigned/snoozed/resolved --hand back--> [bot]
//! ```
//! A transition that changes nothing returns the same state; the engine then records no event.
//! Illegal transitions are errors with a message the API passes on.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AgentId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The bot is handling it.
    Bot,
    /// Waiting for a person.
    Queued,
    /// A person owns it.
    Assigned,
    /// Put aside until a time or until the customer writes.
    Snoozed,
    /// Done.
    Resolved,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Bot,
        Status::Queued,
        Status::Assigned,
        Status::Snoozed,
        Status::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Bot => "bot",
            Status::Queued => "queued",
            Status::Assigned => "assigned",
            Status::Snoozed => "snoozed",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Stable one-byte code, used in index keys.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The part of a conversation the state machine governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvState {
    pub status: Status,
    /// Owner while assigned; the owner to return to while snoozed.
    pub assignee: Option<AgentId>,
    pub snoozed_until_ms: Option<i64>,
}

impl ConvState {
    pub const NEW: ConvState = ConvState {
        status: Status::Bot,
        assignee: None,
        snoozed_until_ms: None,
    };

    fn with(status: Status, assignee: Option<AgentId>) -> ConvState {
        ConvState {
            status,
            assignee,
            snoozed_until_ms: None,
        }
    }

    /// Where a snoozed conversation goes when it wakes.
    fn woken(self) -> ConvState {
        match self.assignee {
            Some(a) => ConvState::with(Status::Assigned, Some(a)),
            None => ConvState::with(Status::Queued, None),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The customer wrote.
    CustomerMessage,
    /// The bot (or a rule) asks for a person.
    Escalate,
    /// Give it to an agent (assign, claim, reassign).
    Assign(AgentId),
    /// Take it from its agent back to the queue.
    Unassign,
    Resolve,
    /// An agent reopens a resolved conversation: it waits for a person again.
    Reopen,
    Snooze {
        until_ms: i64,
    },
    /// The snooze time has come.
    Wake,
    /// Let the bot handle it again.
    HandBack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the conversation is not assigned to anyone")]
    NotAssigned,
    #[error("only a resolved conversation can be reopened")]
    NotResolved,
    #[error("the conversation is not snoozed")]
    NotSnoozed,
    #[error("a conversation in status {0:?} cannot be snoozed")]
    CannotSnooze(Status),
}

/// Applies `action` to `s`. Pure: no clock, no I/O.
pub fn transition(s: ConvState, action: Action) -> Result<ConvState, TransitionError> {
    use Status::*;
    use TransitionError::*;
    let next = match (s.status, action) {
        (Bot | Queued | Assigned, Action::CustomerMessage) => s,
        (Snoozed, Action::CustomerMessage) => s.woken(),
        (Resolved, Action::CustomerMessage) => ConvState::NEW,

        (Bot | Resolved, Action::Escalate) => ConvState::with(Queued, None),
        (Queued | Assigned, Action::Escalate) => s,
        (Snoozed, Action::Escalate) => s.woken(),

        (_, Action::Assign(agent)) => ConvState::with(Assigned, Some(agent)),

        (Assigned, Action::Unassign) => ConvState::with(Queued, None),
        (Snoozed, Action::Unassign) if s.assignee.is_some() => ConvState {
            assignee: None,
            ..s
        },
        (_, Action::Unassign) => return Err(NotAssigned),

        (Resolved, Action::Resolve) => s,
        (_, Action::Resolve) => ConvState::with(Resolved, None),

        (Resolved, Action::Reopen) => ConvState::with(Queued, None),
        (_, Action::Reopen) => return Err(NotResolved),

        (Queued | Assigned | Snoozed, Action::Snooze { until_ms }) => ConvState {
            status: Snoozed,
            assignee: s.assignee,
            snoozed_until_ms: Some(until_ms),
        },
        (status, Action::Snooze { .. }) => return Err(CannotSnooze(status)),

        (Snoozed, Action::Wake) => s.woken(),
        (_, Action::Wake) => return Err(NotSnoozed),

        (Bot, Action::HandBack) => s,
        (_, Action::HandBack) => ConvState::NEW,
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const A: AgentId = AgentId(1);
    const B: AgentId = AgentId(2);

    fn st(status: Status, assignee: Option<AgentId>) -> ConvState {
        ConvState {
            status,
            assignee,
            snoozed_until_ms: (status == Snoozed).then_some(1_000),
        }
    }

    fn ok(status: Status, assignee: Option<AgentId>) -> Result<ConvState, TransitionError> {
        Ok(st(status, assignee))
    }

    /// Every (state, action) pair, with the expected outcome.
    #[test]
    fn every_edge() {
        let states = [
            st(Bot, None),
            st(Queued, None),
            st(Assigned, Some(A)),
            st(Snoozed, Some(A)),
            st(Snoozed, None),
            st(Resolved, None),
        ];
        let snooze = Action::Snooze { until_ms: 5_000 };
        for s in states {
            let expect = |action: Action| -> Result<ConvState, TransitionError> {
                use Action::*;
                match (s.status, s.assignee, action) {
                    (Bot | Queued | Assigned, _, CustomerMessage) => Ok(s),
                    (Snoozed, Some(a), CustomerMessage | Escalate | Wake) => ok(Assigned, Some(a)),
                    (Snoozed, None, CustomerMessage | Escalate | Wake) => ok(Queued, None),
                    (Resolved, _, CustomerMessage) => ok(Bot, None),
                    (Bot | Resolved, _, Escalate) => ok(Queued, None),
                    (Queued | Assigned, _, Escalate) => Ok(s),
                    (_, _, Assign(x)) => ok(Assigned, Some(x)),
                    (Assigned, _, Unassign) => ok(Queued, None),
                    (Snoozed, Some(_), Unassign) => Ok(ConvState {
                        assignee: None,
                        ..s
                    }),
                    (_, _, Unassign) => Err(TransitionError::NotAssigned),
                    (Resolved, _, Resolve) => Ok(s),
                    (_, _, Resolve) => ok(Resolved, None),
                    (Resolved, _, Reopen) => ok(Queued, None),
                    (_, _, Reopen) => Err(TransitionError::NotResolved),
                    (Queued | Assigned | Snoozed, a, Snooze { until_ms }) => Ok(ConvState {
                        status: Snoozed,
                        assignee: a,
                        snoozed_until_ms: Some(until_ms),
                    }),
                    (other, _, Snooze { .. }) => Err(TransitionError::CannotSnooze(other)),
                    (_, _, Wake) => Err(TransitionError::NotSnoozed),
                    (Bot, _, HandBack) => Ok(s),
                    (_, _, HandBack) => ok(Bot, None),
                }
            };
            for action in [
                Action::CustomerMessage,
                Action::Escalate,
                Action::Assign(B),
                Action::Unassign,
                Action::Resolve,
                Action::Reopen,
                snooze,
                Action::Wake,
                Action::HandBack,
            ] {
                assert_eq!(transition(s, action), expect(action), "{s:?} + {action:?}");
            }
        }
    }

    #[test]
    fn concrete_paths() {
        // The main path of the architecture picture, spelled out.
        let s = ConvState::NEW;
        let s = transition(s, Action::Escalate).unwrap();
        assert_eq!(s, st(Queued, None));
        let s = transition(s, Action::Assign(A)).unwrap();
        assert_eq!(s, st(Assigned, Some(A)));
        let s = transition(s, Action::Snooze { until_ms: 9 }).unwrap();
        assert_eq!(
            (s.status, s.assignee, s.snoozed_until_ms),
            (Snoozed, Some(A), Some(9))
        );
        let s = transition(s, Action::CustomerMessage).unwrap();
        assert_eq!(s, st(Assigned, Some(A)));
        let s = transition(s, Action::Resolve).unwrap();
        assert_eq!(s, st(Resolved, None));
        let s = transition(s, Action::CustomerMessage).unwrap();
        assert_eq!(s, ConvState::NEW);
        assert_eq!(
            transition(s, Action::Snooze { until_ms: 1 }),
            Err(TransitionError::CannotSnooze(Bot))
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("open"), None);
    }
}
