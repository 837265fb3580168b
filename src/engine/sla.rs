//! SLA clocks on conversations: started and stopped with every change (`clock_sla`, called
//! just before a draft is finished), marked due-soon or missed by routing (`mark_sla`).

use std::sync::Arc;

use super::draft::Draft;
use super::{Engine, EngineError};
use crate::model::{Actor, ConversationId, EventKind, SlaClock};
use crate::routing::sla::{ClockChange, SlaConfig, clock_change};

/// What routing found about a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlaMark {
    DueSoon,
    Breached,
}

impl Engine {
    /// Sets (or clears) the service-level targets.
    pub fn set_sla(&self, sla: Option<SlaConfig>) {
        *self.sla.write().expect("sla lock") = sla.map(Arc::new);
    }

    /// Starts or stops the conversation's clock as this change requires.
    pub(super) fn clock_sla(&self, d: &mut Draft) {
        let Some(sla) = self.sla.read().expect("sla lock").clone() else {
            return;
        };
        let added: Vec<crate::model::Author> =
            d.added_messages().map(|m| m.author.clone()).collect();
        match clock_change(d.status_before(), &d.conv, &added) {
            ClockChange::Keep => {}
            ClockChange::Stop => d.conv.sla = None,
            ClockChange::Start(kind) => {
                let availability = self.availability.read().expect("availability lock").clone();
                // The preview is the customer's latest message: its language picks the team.
                let language = crate::model::lang::language_of(&d.conv.preview);
                let tags = self.topic_tags(&d.conv);
                let topic = crate::model::availability::Topic {
                    language,
                    tags: &tags,
                };
                let team = availability.team_of(&d.conv, topic);
                let ms = sla.target_ms(kind, d.conv.priority, team.as_deref());
                let warn = ms / 100 * i64::from(sla.due_soon_percent.min(100));
                let at = |ms| availability.after_working_for(d.now, ms, &d.conv, topic);
                let (due_ms, warn_ms) = (at(ms), at(warn));
                d.conv.sla = Some(SlaClock {
                    kind,
                    started_ms: d.now,
                    due_ms,
                    warn_ms,
                    warned: false,
                    breached: false,
                });
            }
        }
    }

    /// Records that the conversation's clock came due soon or was missed (once each).
    pub async fn mark_sla(&self, id: ConversationId, mark: SlaMark) -> Result<(), EngineError> {
        let (_, raised) = self
            .update(id, Actor::System, |d| {
                let Some(clock) = d.conv.sla.as_mut() else {
                    return Ok(None);
                };
                let (target, due_ms) = (clock.kind, clock.due_ms);
                let kind = match mark {
                    SlaMark::Breached if !clock.breached => {
                        clock.breached = true;
                        clock.warned = true;
                        EventKind::SlaBreached { target, due_ms }
                    }
                    SlaMark::DueSoon if !clock.warned => {
                        clock.warned = true;
                        EventKind::SlaDueSoon { target, due_ms }
                    }
                    _ => return Ok(None),
                };
                d.event(kind);
                Ok(Some((target, mark)))
            })
            .await?;
        if let Some((target, mark)) = raised {
            let event = match mark {
                SlaMark::DueSoon => "due_soon",
                SlaMark::Breached => "breached",
            };
            self.metrics.sla(target.name(), event);
        }
        Ok(())
    }
}
