//! `switchboard bench routing`: assignment with many agents and a long queue, in one run.
//!
//! A store with `--queued` escalated conversations (web hook customers, each asking for a
//! person; English and Chinese) and `--agents` online agents in four teams. Measured:
//! - the decision alone (team, candidates, choice) for every queued conversation, p50/p99;
//! - the first assignment when one agent comes online with the whole queue waiting (one
//!   routing pass: list the queue and the loads, decide, commit);
//! - draining the queue: one pass assigning every conversation, committed one by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use switchboard_channel::{
    Capabilities, Channel, ChannelError, ChannelId, ExternalMessageId, ExternalThread,
    ExternalUser, InboundEvent, InboundMessage, Outbound, Sender,
};
use tokio_util::sync::CancellationToken;

use super::tempdir;
use crate::bot::{BotInput, Decision, EscalationReason, Responder};
use crate::engine::outbox::OutboxConfig;
use crate::engine::router::Router;
use crate::engine::{Engine, EngineSettings};
use crate::model::lang::language_of;
use crate::model::{AgentId, Presence, Role, Status};
use crate::routing::assign::{
    Candidate, RoutingConfig, Strategy, TeamConfig, choose, resolve_teams,
};
use crate::store::{ConversationQuery, Order};

#[derive(clap::Args)]
pub struct RoutingArgs {
    #[arg(long, default_value_t = 500)]
    pub agents: usize,
    #[arg(long, default_value_t = 10_000)]
    pub queued: usize,
}

/// Hands every conversation to people.
struct EscalateAll;

impl Responder for EscalateAll {
    fn decide(&self, _: &BotInput<'_>) -> Decision {
        Decision::Escalate {
            reason: EscalationReason::AskedForHuman,
            detail: "bench".into(),
        }
    }
}

/// A network that accepts everything.
struct Sink(ChannelId);

#[async_trait::async_trait]
impl Channel for Sink {
    fn id(&self) -> &ChannelId {
        &self.0
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn run(&self, stop: CancellationToken) -> Result<(), ChannelError> {
        stop.cancelled().await;
        Ok(())
    }
    async fn send(
        &self,
        to: &ExternalThread,
        _: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        Ok(ExternalMessageId(to.0.clone()))
    }
}

/// Four teams over `n` agents, in the shares of the 500-agent run: Chinese a fifth, the web
/// channel the next 70%, billing the last tenth (a team with no members takes nobody).
fn teams(n: usize) -> Vec<TeamConfig> {
    let (chinese, web) = (n / 5, n * 9 / 10);
    let names = |range: std::ops::Range<usize>| range.map(|i| format!("agent-{i}")).collect();
    let team = |name: &str, members: Vec<String>| TeamConfig {
        name: name.into(),
        members,
        channels: vec![],
        languages: vec![],
        labels: vec![],
        reasons: vec![],
        tags: vec![],
        hours: None,
    };
    vec![
        TeamConfig {
            labels: vec!["billing".into()],
            ..team("billing", names(web..n))
        },
        TeamConfig {
            languages: vec!["zh".into()],
            ..team("chinese", names(0..chinese))
        },
        TeamConfig {
            channels: vec!["hook".into()],
            ..team("web", names(chinese..web))
        },
    ]
}

pub async fn routing(args: RoutingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.agents >= 5,
        "--agents must be at least 5 (one per team and more)"
    );
    let dir = tempdir()?;
    let store = crate::store::open(
        &dir,
        &crate::store::StoreConfig {
            cache_mb: 64,
            ..Default::default()
        },
    )?;
    let settings = EngineSettings {
        handoff_message: "a person will reply".into(),
        welcome_message: "hello".into(),
        offhours_message: "later".into(),
        handoff_wait_message: "you are number {position}, about {wait_minutes} min".into(),
        long_wait_minutes: 30,
        long_wait_message: "leave your email".into(),
        outbox: OutboxConfig::default(),
        bot_workers: 8,
    };
    let engine = Engine::new(store.clone(), Arc::new(EscalateAll), settings).await?;
    let channel = ChannelId::new("hook");
    engine.register_channel(Arc::new(Sink(channel.clone())));
    let stop = CancellationToken::new();
    let tasks = engine.start(stop.clone())?;

    let t = Instant::now();
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let (a, _) = engine
            .create_agent(&format!("agent-{i}"), Role::Agent, None, None)
            .await?;
        agents.push(a);
    }
    // Customers write and are escalated by the bot; 64 at a time.
    let queued = args.queued;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (engine, channel) = (engine.clone(), channel.clone());
        writers.spawn(async move {
            for i in (w..queued).step_by(64) {
                let text = if i % 5 == 0 {
                    "我要转人工，订单没收到"
                } else {
                    "I want to talk to a person"
                };
                let event = InboundEvent::Message(InboundMessage {
                    thread: ExternalThread(format!("c{i}")),
                    sender: Sender {
                        id: ExternalUser(format!("c{i}")),
                        name: None,
                    },
                    message_id: ExternalMessageId(format!("m{i}")),
                    text: text.into(),
                    attachments: vec![],
                    sent_at_ms: None,
                    automated: None,
                    earlier_id: None,
                    subject: None,
                    payload: None,
                });
                engine
                    .ingest(&channel, event)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r??;
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    while store.status_counts().await?[Status::Queued as usize] < queued as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bot did not escalate everything"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "setup: {} agents, {} queued conversations in {:.1} s",
        args.agents,
        queued,
        t.elapsed().as_secs_f64()
    );

    // 1. The decision alone, for each queued conversation.
    let config = RoutingConfig {
        strategy: Strategy::LeastLoaded,
        capacity: (queued / args.agents.max(1) + 1) as u32,
        teams: teams(args.agents),
        ..RoutingConfig::default()
    };
    let names: HashMap<String, AgentId> = agents.iter().map(|a| (a.name.clone(), a.id)).collect();
    let team_members = resolve_teams(&config.teams, &names);
    let mut load: HashMap<AgentId, u32> = agents.iter().map(|a| (a.id, 0)).collect();
    let mut list = Vec::new();
    let mut q = ConversationQuery {
        status: Some(Status::Queued),
        order: Order::OldestFirst,
        limit: 500,
        ..ConversationQuery::default()
    };
    loop {
        let page = store.list_conversations(&q).await?;
        list.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let mut took: Vec<std::time::Duration> = Vec::with_capacity(list.len());
    let mut last: HashMap<usize, AgentId> = HashMap::new();
    for conv in &list {
        let start = Instant::now();
        let text = store
            .message(conv.id, conv.last_seq)
            .await?
            .map(|m| m.text)
            .unwrap_or_default();
        let language = language_of(&text);
        let topic = crate::model::availability::Topic {
            language,
            tags: &[],
        };
        let team = config.teams.iter().position(|t| t.matches(conv, topic));
        let members = team.map(|t| &team_members[t]);
        let candidates: Vec<Candidate> = agents
            .iter()
            .filter(|a| members.is_none_or(|m| m.contains(&a.id)))
            .map(|a| Candidate {
                id: a.id,
                load: load[&a.id],
                capacity: config.capacity,
            })
            .collect();
        let key = team.unwrap_or(usize::MAX);
        let chosen = choose(config.strategy, &candidates, None, last.get(&key).copied());
        took.push(start.elapsed());
        if let Some(a) = chosen {
            *load.get_mut(&a).expect("candidate") += 1;
            last.insert(key, a);
        }
    }
    took.sort_unstable();
    let at = |p: f64| {
        took.get(((took.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "decision (team, candidates, least loaded among up to {} agents): p50 {:.1} µs, p99 {:.1} µs over {} conversations",
        args.agents,
        at(0.50),
        at(0.99),
        list.len()
    );

    // 2. One agent comes online with the whole queue waiting: one pass assigns up to capacity.
    let router = Router::new(engine.clone(), config.clone());
    let first = &agents[args.agents / 5]; // the first of the web team
    engine
        .set_presence(first.id, Presence::Online, Some(first.id))
        .await?;
    let _page = engine.attachments().attach(first.id);
    let t = Instant::now();
    let pass = router.pass().await?;
    let first_pass = t.elapsed();
    println!(
        "one agent online, {} queued: first pass assigned {} in {:.1} ms ({:.2} ms per assignment, listing included)",
        queued,
        pass.assigned,
        first_pass.as_secs_f64() * 1e3,
        first_pass.as_secs_f64() * 1e3 / pass.assigned.max(1) as f64
    );

    // 3. Everyone online: one pass drains the queue.
    let mut pages = Vec::new();
    for a in &agents {
        engine
            .set_presence(a.id, Presence::Online, Some(a.id))
            .await?;
        pages.push(engine.attachments().attach(a.id));
    }
    let t = Instant::now();
    let pass = router.pass().await?;
    let drain = t.elapsed();
    println!(
        "all {} agents online: one pass assigned {} in {:.2} s ({:.0} assignments/s, each committed durably); {} still queued",
        args.agents,
        pass.assigned,
        drain.as_secs_f64(),
        pass.assigned as f64 / drain.as_secs_f64(),
        store.status_counts().await?[Status::Queued as usize]
    );
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    drop(pages);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
