//! The routing loop: keeps presence honest and hands queued conversations to agents.
//!
//! A pass runs when something that matters happens (a conversation is queued or released, an
//! agent's presence changes) and every few seconds regardless, so decisions missed while the
//! daemon was down, or lost to a lagging event subscription, are made on the next tick. Each
//! pass:
//! 1. sets agents outside their shift offline (and back online when it starts with their
//!    inbox open, if routing had set them offline), and online agents whose inbox page has
//!    been closed for `away_after_secs` away;
//! 2. gives the conversations of agents who went away or offline `return_after_secs` ago back
//!    to the queue (agents that never set a presence, such as scripts, keep theirs);
//! 3. marks SLA clocks of queued and assigned conversations due soon or missed (events
//!    `sla_due_soon`, `sla_breached`; once each);
//! 4. assigns queued conversations, oldest first, to online agents of the matching team with
//!    room under their capacity (round robin or least loaded; a reopened conversation goes
//!    back to its previous agent when they are free).
//!
//! Everything it changes goes through the engine, with `system` as the actor and the reason
//! in the event log; an assignment only lands if the conversation is still queued, so a
//! claim made by hand in the meantime always wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, SlaMark};
use crate::model::availability::Topic;
use crate::model::lang::language_of;
use crate::model::{Actor, Agent, AgentId, Author, Conversation, EventKind, Presence, Status};
use crate::routing::assign::{Candidate, RoutingConfig, Strategy, choose, resolve_teams};
use crate::routing::hours::BusinessHours;
use crate::store::{ConversationQuery, Order};

/// How often a pass runs when nothing happens.
const TICK: Duration = Duration::from_secs(5);
/// Events arriving together are handled in one pass after this pause.
const SETTLE: Duration = Duration::from_millis(30);
/// Queued conversations looked at per pass (oldest first).
const MAX_QUEUED_PER_PASS: usize = 20_000;

pub struct Router {
    engine: Arc<Engine>,
    config: RoutingConfig,
    /// Shifts by lower-case agent name.
    shifts: HashMap<String, BusinessHours>,
    /// Per team (index; `teams.len()` for "no team"), the agent who got the last one.
    last: std::sync::Mutex<HashMap<usize, AgentId>>,
    started_ms: i64,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub assigned: usize,
    pub returned: usize,
    pub set_away: usize,
    /// Agents set offline at the end of their shift.
    pub set_offline: usize,
    /// Agents set online when their shift began with their inbox open.
    pub set_online: usize,
    /// SLA clocks marked due soon or missed.
    pub sla_marked: usize,
    /// When a timer comes due next (someone to set away, conversations to return, an SLA
    /// clock due soon or missed).
    pub next_due_ms: Option<i64>,
}

impl Router {
    pub fn new(engine: Arc<Engine>, config: RoutingConfig) -> Arc<Router> {
        let shifts = config
            .shifts
            .iter()
            .filter_map(|(name, c)| match BusinessHours::from_config(c) {
                Ok(h) => Some((name.to_lowercase(), h)),
                Err(e) => {
                    tracing::error!(agent = %name, error = %e, "shift ignored");
                    None
                }
            })
            .collect();
        Arc::new(Router {
            started_ms: engine.now_ms(),
            engine,
            config,
            shifts,
            last: Default::default(),
        })
    }

    /// Runs passes until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut events = self.engine.subscribe();
        // At start: whatever came due while the daemon was down happens now, once.
        let mut due = self.logged_pass().await;
        let mut last_pass = tokio::time::Instant::now();
        loop {
            // The next tick, or the next timer if sooner. Fixed instants, so a stream of
            // events that do not matter cannot keep postponing either.
            let tick = last_pass + TICK;
            let wake_at = due.map_or(tick, |at| {
                let wait = Duration::from_millis((at - self.engine.now_ms()).max(0) as u64);
                tick.min(tokio::time::Instant::now() + wait)
            });
            let wake = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(wake_at) => true,
                e = events.recv() => match e {
                    Ok(e) => matters(&e.kind),
                    // Lagged: a pass catches up with whatever was missed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if !wake {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                events.try_recv()
            {}
            due = self.logged_pass().await;
            last_pass = tokio::time::Instant::now();
        }
    }

    async fn logged_pass(&self) -> Option<i64> {
        match self.pass().await {
            Ok(p) => p.next_due_ms,
            Err(e) => {
                tracing::warn!(error = %e, "routing pass failed; trying again on the next tick");
                None
            }
        }
    }

    /// One pass (see the module comment).
    pub async fn pass(&self) -> Result<Pass, EngineError> {
        let mut done = Pass::default();
        let now = self.engine.now_ms();
        let agents: Vec<Agent> = self
            .engine
            .store()
            .agents()
            .await?
            .into_iter()
            .filter(|a| !a.disabled)
            .collect();
        let mut online = Vec::new();
        let (away_after, return_after) = (
            secs_ms(self.config.away_after_secs),
            secs_ms(self.config.return_after_secs),
        );
        let mut next_due: Option<i64> = None;
        let mut due = |at: i64| next_due = Some(next_due.map_or(at, |d: i64| d.min(at)));
        let mut set_away = 0;
        let mut leavers = Vec::new();
        for agent in agents {
            let mut agent = agent;
            let detached = self
                .engine
                .attachments()
                .detached_since(agent.id, self.started_ms);
            match self.on_shift(&agent.name, now) {
                Some(false) if agent.presence != Presence::Offline => {
                    agent = self
                        .engine
                        .set_presence(agent.id, Presence::Offline, None)
                        .await?;
                    done.set_offline += 1;
                }
                // The shift starts with the inbox open: back online (only if routing, not the
                // agent, had set them offline).
                Some(true)
                    if agent.presence == Presence::Offline
                        && agent.presence_auto
                        && detached.is_none() =>
                {
                    agent = self
                        .engine
                        .set_presence(agent.id, Presence::Online, None)
                        .await?;
                    done.set_online += 1;
                }
                _ => {}
            }
            if agent.presence == Presence::Online
                && let Some(since) = detached
            {
                if now - since >= away_after {
                    agent = self
                        .engine
                        .set_presence(agent.id, Presence::Away, None)
                        .await?;
                    set_away += 1;
                } else {
                    due(since + away_after);
                }
            }
            if agent.presence == Presence::Online {
                online.push(agent);
            } else if agent.presence_since_ms > 0 {
                // Only agents who went away or offline (not ones who never set a presence:
                // scripts and integrations keep what they hold).
                if now - agent.presence_since_ms >= return_after {
                    leavers.push(agent);
                } else {
                    due(agent.presence_since_ms + return_after);
                }
            }
        }
        done.set_away = set_away;
        for agent in &leavers {
            done.returned += self.give_back(agent).await?;
        }
        let queued = self.list(Status::Queued, None, MAX_QUEUED_PER_PASS).await?;
        let assigned = self.list(Status::Assigned, None, usize::MAX).await?;
        for conv in queued.iter().chain(&assigned) {
            let Some(clock) = &conv.sla else { continue };
            let mark = if !clock.breached && now >= clock.due_ms {
                Some(SlaMark::Breached)
            } else if !clock.warned && now >= clock.warn_ms {
                Some(SlaMark::DueSoon)
            } else {
                None
            };
            match mark {
                Some(mark) => {
                    self.engine.mark_sla(conv.id, mark).await?;
                    done.sla_marked += 1;
                    if mark == SlaMark::DueSoon {
                        due(clock.due_ms);
                    }
                }
                None if !clock.warned => due(clock.warn_ms),
                None if !clock.breached => due(clock.due_ms),
                None => {}
            }
        }
        done.next_due_ms = next_due;
        if self.config.auto_assign && !online.is_empty() {
            done.assigned = self.assign_queued(&online, &queued, &assigned).await?;
        }
        if done != Pass::default() {
            tracing::debug!(?done, "routing pass");
        }
        Ok(done)
    }

    /// Whether `name` is on shift at `now`; `None` without a shift.
    fn on_shift(&self, name: &str, now: i64) -> Option<bool> {
        let shift = self.shifts.get(&name.to_lowercase())?;
        jiff::Timestamp::from_millisecond(now)
            .ok()
            .map(|t| shift.is_open(t))
    }

    /// Returns an absent agent's assigned conversations to the queue: those they held when
    /// they left. One a colleague gave them while they were away stays (it was deliberate).
    async fn give_back(&self, agent: &Agent) -> Result<usize, EngineError> {
        let held = self
            .list(Status::Assigned, Some(agent.id), usize::MAX)
            .await?;
        let reason = format!(
            "returned to the queue: {} is {}",
            agent.name,
            agent.presence.name()
        );
        let mut n = 0;
        for conv in held {
            let events = self.engine.store().conversation_events(conv.id).await?;
            let assigned_at = events
                .iter()
                .rev()
                .find(|e| matches!(e.kind, EventKind::AssigneeChanged { to: Some(a), .. } if a == agent.id))
                .map_or(0, |e| e.at_ms);
            if assigned_at > agent.presence_since_ms {
                continue;
            }
            if self
                .engine
                .return_to_queue(conv.id, agent.id, &reason)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn assign_queued(
        &self,
        online: &[Agent],
        queued: &[Conversation],
        assigned: &[Conversation],
    ) -> Result<usize, EngineError> {
        let mut load: HashMap<AgentId, u32> = online.iter().map(|a| (a.id, 0)).collect();
        for conv in assigned {
            if let Some(n) = conv.assignee.and_then(|a| load.get_mut(&a)) {
                *n += 1;
            }
        }
        let capacity = |a: &Agent| {
            self.config
                .capacities
                .get(&a.name.to_lowercase())
                .copied()
                .unwrap_or(self.config.capacity)
        };
        let names: HashMap<String, AgentId> = online
            .iter()
            .map(|a| (a.name.to_lowercase(), a.id))
            .collect();
        let teams = resolve_teams(&self.config.teams, &names);
        let mut assigned = 0;
        for conv in queued {
            if load
                .iter()
                .all(|(id, n)| online.iter().any(|a| a.id == *id && *n >= capacity(a)))
            {
                break; // everyone is full
            }
            let language = self.language(conv).await?;
            let tags = self.engine.topic_tags(conv);
            let team = self.config.teams.iter().position(|t| {
                t.matches(
                    conv,
                    Topic {
                        language,
                        tags: &tags,
                    },
                )
            });
            let members: Vec<&Agent> = match team {
                Some(t) => online.iter().filter(|a| teams[t].contains(&a.id)).collect(),
                None => online.iter().collect(),
            };
            let candidates: Vec<Candidate> = members
                .iter()
                .map(|a| Candidate {
                    id: a.id,
                    load: load[&a.id],
                    capacity: capacity(a),
                })
                .collect();
            if !candidates.iter().any(|c| c.load < c.capacity) {
                continue;
            }
            let key = team.unwrap_or(self.config.teams.len());
            let last = self.last.lock().expect("router lock").get(&key).copied();
            let preferred = self.previous_agent(conv).await?;
            let Some(agent) = choose(self.config.strategy, &candidates, preferred, last) else {
                continue;
            };
            let name = &online
                .iter()
                .find(|a| a.id == agent)
                .expect("a candidate")
                .name;
            let how = match (preferred == Some(agent), self.config.strategy) {
                (true, _) => "their earlier conversation",
                (false, Strategy::RoundRobin) => "round robin",
                (false, Strategy::LeastLoaded) => "least loaded",
            };
            let team_name = team.map(|t| self.config.teams[t].name.as_str());
            let reason = match team_name {
                Some(t) => format!("auto-assigned to {name} ({how}, team {t})"),
                None => format!("auto-assigned to {name} ({how})"),
            };
            if self.engine.assign_queued(conv.id, agent, &reason).await? {
                *load.get_mut(&agent).expect("a candidate") += 1;
                self.last.lock().expect("router lock").insert(key, agent);
                assigned += 1;
            }
        }
        Ok(assigned)
    }

    /// Conversations in `status` (of `assignee`), oldest activity first, at most `max`.
    async fn list(
        &self,
        status: Status,
        assignee: Option<AgentId>,
        max: usize,
    ) -> Result<Vec<Conversation>, EngineError> {
        let mut out = Vec::new();
        let mut query = ConversationQuery {
            status: Some(status),
            assignee,
            order: Order::OldestFirst,
            limit: 500,
            ..ConversationQuery::default()
        };
        loop {
            let page = self.engine.store().list_conversations(&query).await?;
            out.extend(page.items);
            match page.next {
                Some(next) if out.len() < max => query.after = Some(next),
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// The language of the customer's latest message.
    async fn language(&self, conv: &Conversation) -> Result<&'static str, EngineError> {
        let store = self.engine.store();
        for seq in (conv.last_seq.saturating_sub(20).max(1)..=conv.last_seq).rev() {
            if let Some(m) = store.message(conv.id, seq).await?
                && m.author == Author::Customer
            {
                return Ok(language_of(&m.text));
            }
        }
        Ok("en")
    }

    /// The agent who last held this conversation, unless they handed it back to the queue
    /// themselves.
    async fn previous_agent(&self, conv: &Conversation) -> Result<Option<AgentId>, EngineError> {
        let events = self.engine.store().conversation_events(conv.id).await?;
        let Some(p) = events
            .iter()
            .rposition(|e| matches!(e.kind, EventKind::AssigneeChanged { .. }))
        else {
            return Ok(None);
        };
        let EventKind::AssigneeChanged { from, to, .. } = events[p].kind else {
            return Ok(None);
        };
        if to.is_some() {
            return Ok(to);
        }
        // The status change made by the same action sits right beside it.
        let released_by_hand = [p.checked_sub(1), Some(p + 1)]
            .into_iter()
            .flatten()
            .filter_map(|i| events.get(i))
            .any(|e| {
                e.at_ms == events[p].at_ms
                    && matches!(e.actor, Actor::Agent(_))
                    && matches!(
                        e.kind,
                        EventKind::StatusChanged {
                            to: Status::Queued,
                            ..
                        }
                    )
            });
        Ok(if released_by_hand { None } else { from })
    }
}

/// Whether an event can change what routing should do.
fn matters(kind: &EventKind) -> bool {
    match kind {
        EventKind::StatusChanged { to, .. } => *to == Status::Queued,
        EventKind::AssigneeChanged { to, .. } => to.is_none(),
        EventKind::AgentChanged { .. } => true,
        _ => false,
    }
}

fn secs_ms(secs: u64) -> i64 {
    (secs as i64).saturating_mul(1000)
}
