//! What routing needs from the engine: which agents have the inbox open, and assignment
//! operations that act only if nothing changed meanwhile (an agent's own claim always wins).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::clock::{Clock, SystemClock};
use super::{Engine, EngineError};
use crate::model::{Action, Actor, AgentId, ConversationId, Status};

/// Agents' open event streams (the inbox page keeps one open while it is up).
pub struct Attachments {
    inner: Mutex<HashMap<AgentId, Attached>>,
    /// Streams one agent may hold at once; 0: no limit.
    max_per_agent: std::sync::atomic::AtomicUsize,
    /// The engine's clock, for when the last stream closed.
    clock: Arc<dyn Clock>,
}

impl Default for Attachments {
    fn default() -> Self {
        Attachments::with_clock(Arc::new(SystemClock))
    }
}

#[derive(Clone, Copy, Default)]
struct Attached {
    streams: u32,
    /// When the last stream closed.
    left_ms: i64,
}

/// Held while an agent's event stream is open.
pub struct AttachGuard {
    attachments: Arc<Attachments>,
    agent: AgentId,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        let mut map = self.attachments.inner.lock().expect("attachments lock");
        if let Some(a) = map.get_mut(&self.agent) {
            a.streams = a.streams.saturating_sub(1);
            if a.streams == 0 {
                a.left_ms = self.attachments.clock.now_ms();
            }
        }
    }
}

impl Attachments {
    pub(super) fn with_clock(clock: Arc<dyn Clock>) -> Attachments {
        Attachments {
            inner: Mutex::default(),
            max_per_agent: Default::default(),
            clock,
        }
    }

    /// Streams one agent may hold open at once (0: no limit).
    pub fn set_max_per_agent(&self, max: usize) {
        self.max_per_agent
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a new stream of `agent`; `None` when they already hold the most allowed.
    pub fn attach(self: &Arc<Self>, agent: AgentId) -> Option<AttachGuard> {
        let max = self
            .max_per_agent
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut map = self.inner.lock().expect("attachments lock");
        let a = map.entry(agent).or_default();
        if max > 0 && a.streams as usize >= max {
            return None;
        }
        a.streams += 1;
        Some(AttachGuard {
            attachments: self.clone(),
            agent,
        })
    }

    /// `None` while the agent has a stream open; otherwise since when they have had none
    /// (`since_ms` if never during this run).
    pub fn detached_since(&self, agent: AgentId, since_ms: i64) -> Option<i64> {
        match self.inner.lock().expect("attachments lock").get(&agent) {
            Some(a) if a.streams > 0 => None,
            Some(a) => Some(a.left_ms),
            None => Some(since_ms),
        }
    }
}

impl Engine {
    /// Agents' open event streams.
    pub fn attachments(&self) -> &Arc<Attachments> {
        &self.attachments
    }

    /// Assigns a conversation that is still queued; `false` when it no longer was.
    pub async fn assign_queued(
        &self,
        id: ConversationId,
        agent: AgentId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let (conv, ()) = self
            .update(id, Actor::System, |d| {
                if d.conv.status == Status::Queued {
                    d.transition(Action::Assign(agent), reason)?;
                }
                Ok(())
            })
            .await?;
        Ok(conv.status == Status::Assigned && conv.assignee == Some(agent))
    }

    /// Puts a conversation back in the queue if `agent` still holds it.
    pub async fn return_to_queue(
        &self,
        id: ConversationId,
        agent: AgentId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let (conv, ()) = self
            .update(id, Actor::System, |d| {
                if d.conv.status == Status::Assigned && d.conv.assignee == Some(agent) {
                    d.transition(Action::Unassign, reason)?;
                }
                Ok(())
            })
            .await?;
        Ok(conv.status == Status::Queued)
    }
}
