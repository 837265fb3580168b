//! The engine in-process with a scripted responder and a scripted channel: the bot's decisions
//! become replies, hand-overs and recorded reasons; the outbox honours a channel's retry-after
//! and keeps each conversation's order while another conversation's delivery is failing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::bot::{BotInput, Decision, EscalationReason, Responder};
use switchboard::config::OutboxConfig;
use switchboard::engine::clock::{Clock, SystemClock, TokioClock};
use switchboard::engine::{Engine, EngineSettings};
use switchboard::model::{Action, Actor, Author, ConversationId, DeliveryState, EventKind, Status};
use switchboard::store::memory::MemoryStore;
use switchboard::store::sled_store::SledOptions;
use switchboard::store::{SledStore, Store};
use switchboard_channel::*;
use tokio_util::sync::CancellationToken;

/// Answers with the next scripted decision; records what it was asked.
struct Scripted {
    decisions: Mutex<VecDeque<Decision>>,
    asked: Mutex<Vec<(String, u32)>>,
}

impl Responder for Scripted {
    fn decide(&self, input: &BotInput<'_>) -> Decision {
        self.asked
            .lock()
            .unwrap()
            .push((input.text.to_owned(), input.misses));
        self.decisions
            .lock()
            .unwrap()
            .pop_front()
            .expect("a decision was scripted for every message")
    }
}

/// A network that records what it delivered; each thread can be told to fail first.
struct Wire {
    id: ChannelId,
    sent: Mutex<Vec<(String, String, Instant)>>,
    /// Per thread: failures to return before succeeding.
    failures: Mutex<Vec<(String, ChannelError)>>,
}

#[async_trait::async_trait]
impl Channel for Wire {
    fn id(&self) -> &ChannelId {
        &self.id
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        shutdown.cancelled().await;
        Ok(())
    }
    async fn send(
        &self,
        to: &ExternalThread,
        out: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let mut failures = self.failures.lock().unwrap();
        if let Some(i) = failures.iter().position(|(t, _)| t == to.as_str()) {
            return Err(failures.remove(i).1);
        }
        self.sent
            .lock()
            .unwrap()
            .push((to.0.clone(), out.text.clone(), Instant::now()));
        Ok(ExternalMessageId(out.id.clone()))
    }
}

fn message(thread: &str, id: &str, text: &str) -> InboundEvent {
    InboundEvent::Message(InboundMessage {
        thread: ExternalThread::new(thread),
        sender: Sender {
            id: ExternalUser::new(thread),
            name: None,
        },
        message_id: ExternalMessageId::new(id),
        text: text.into(),
        attachments: vec![],
        sent_at_ms: None,
        automated: None,
        earlier_id: None,
        subject: None,
        payload: None,
    })
}

struct Rig {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    wire: Arc<Wire>,
    bot: Arc<Scripted>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// Where a rig keeps its state: the daemon's sled, or the in-memory backend (the engine
/// must not care).
#[derive(Clone, Copy)]
enum Backend {
    Sled,
    Memory,
}

async fn rig(decisions: Vec<Decision>) -> Rig {
    rig_on(Backend::Sled, decisions).await
}

async fn rig_on(backend: Backend, decisions: Vec<Decision>) -> Rig {
    rig_with_clock(backend, decisions, Arc::new(SystemClock)).await
}

async fn rig_with_clock(backend: Backend, decisions: Vec<Decision>, clock: Arc<dyn Clock>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = match backend {
        Backend::Sled => {
            Arc::new(SledStore::open(dir.path(), &SledOptions::with_cache_mb(8)).unwrap())
        }
        Backend::Memory => Arc::new(MemoryStore::new()),
    };
    let bot = Arc::new(Scripted {
        decisions: Mutex::new(decisions.into()),
        asked: Mutex::default(),
    });
    let settings = EngineSettings {
        handoff_message: "a person will take over".into(),
        welcome_message: "welcome".into(),
        offhours_message: "nobody is here; a person replies {when}".into(),
        handoff_wait_message: "you are number {position}, about {wait_minutes} min".into(),
        long_wait_minutes: 30,
        long_wait_message: "leave your email".into(),
        outbox: OutboxConfig {
            base_delay_ms: 20,
            max_delay_ms: 100,
            ..OutboxConfig::default()
        },
        bot_workers: 2,
    };
    let engine = Engine::with_clock(store.clone(), bot.clone(), settings, clock)
        .await
        .unwrap();
    let wire = Arc::new(Wire {
        id: ChannelId::new("wire"),
        sent: Mutex::default(),
        failures: Mutex::default(),
    });
    engine.register_channel(wire.clone());
    let stop = CancellationToken::new();
    engine.start(stop.clone()).unwrap();
    Rig {
        engine,
        store,
        wire,
        bot,
        stop,
        _dir: dir,
    }
}

impl Rig {
    async fn agent(&self, name: &str) -> switchboard::model::Agent {
        let role = switchboard::model::Role::Agent;
        self.engine
            .create_agent(name, role, None, None)
            .await
            .unwrap()
            .0
    }

    async fn say(&self, thread: &str, id: &str, text: &str) {
        let r = self
            .engine
            .ingest(&ChannelId::new("wire"), message(thread, id, text))
            .await;
        assert_eq!(r.unwrap(), Accepted::Stored);
    }

    /// Waits until `thread` has received `n` messages; returns their texts.
    async fn delivered(&self, thread: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<String> = self
                .wire
                .sent
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _, _)| t == thread)
                .map(|(_, text, _)| text.clone())
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{thread} got only {got:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn conversation(&self, thread: &str) -> switchboard::model::Conversation {
        let id = self
            .store
            .thread(&ChannelId::new("wire"), &ExternalThread::new(thread))
            .await
            .unwrap()
            .unwrap();
        self.store.conversation(id).await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_become_replies_handovers_and_recorded_reasons() {
    decisions_become_replies_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_become_replies_handovers_and_recorded_reasons_in_memory() {
    decisions_become_replies_on(Backend::Memory).await;
}

async fn decisions_become_replies_on(backend: Backend) {
    let answer = |text: &str| Decision::Answer {
        entry: "e1".into(),
        text: text.into(),
        score: 0.9,
        escalate_after: false,
        buttons: vec![],
        detail: "scripted".into(),
    };
    let rig = rig_on(
        backend,
        vec![
            answer("first answer"),
            Decision::Clarify {
                text: "which one?".into(),
                options: vec![],
                score: Some(0.4),
                detail: "scripted".into(),
            },
            Decision::Escalate {
                reason: EscalationReason::BotError,
                detail: "scripted failure".into(),
            },
        ],
    )
    .await;
    rig.say("t1", "m1", "q1").await;
    assert_eq!(rig.delivered("t1", 1).await, ["first answer"]);
    rig.say("t1", "m2", "q2").await;
    assert_eq!(rig.delivered("t1", 2).await[1], "which one?");
    rig.say("t1", "m3", "q3").await;
    assert_eq!(rig.delivered("t1", 3).await[2], "a person will take over");
    // The bot saw the misses count grow after the clarification.
    let asked = rig.bot.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [("q1".into(), 0), ("q2".into(), 0), ("q3".into(), 1)]
    );

    let conv = rig.conversation("t1").await;
    assert_eq!(conv.status, Status::Queued);
    let escalation = conv.escalation.clone().unwrap();
    assert_eq!(
        (escalation.reason.as_str(), escalation.detail.as_str()),
        ("bot_error", "scripted failure")
    );
    let events = rig.store.conversation_events(conv.id).await.unwrap();
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StatusChanged {
                to: Status::Queued,
                reason,
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["escalated: bot_error (scripted failure)"]);
    let verdicts = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BotDecided { .. }))
        .count();
    assert_eq!(verdicts, 3);

    // A person owns it: new messages reach nobody but the inbox (no decision is scripted).
    let agent = rig.agent("ana").await;
    rig.engine
        .act(
            conv.id,
            Actor::Agent(agent.id),
            Action::Assign(agent.id),
            "test",
        )
        .await
        .unwrap();
    rig.say("t1", "m4", "are you there?").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.wire.sent.lock().unwrap().len(), 3);
    assert!(
        rig.store.bot_queue(None, 10).await.unwrap().is_empty(),
        "the bot queue drained"
    );
    rig.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_waits_out_retry_after_and_keeps_each_conversation_in_order() {
    let escalate = || Decision::Escalate {
        reason: EscalationReason::AskedForHuman,
        detail: "test".into(),
    };
    let rig = rig(vec![escalate(), escalate()]).await;
    let agent = rig.agent("ana").await;
    for t in ["slow", "fast"] {
        rig.say(t, &format!("{t}-1"), "hello").await;
        rig.delivered(t, 1).await;
    }
    let ids: Vec<ConversationId> = vec![
        rig.conversation("slow").await.id,
        rig.conversation("fast").await.id,
    ];
    rig.wire.failures.lock().unwrap().push((
        "slow".into(),
        ChannelError::Retryable {
            reason: "429".into(),
            after: Some(Duration::from_millis(400)),
        },
    ));
    let started = Instant::now();
    for text in ["one", "two", "three"] {
        rig.engine
            .reply(ids[0], &agent, text, &[], None)
            .await
            .unwrap();
    }
    rig.engine
        .reply(ids[1], &agent, "quick", &[], None)
        .await
        .unwrap();
    // The other conversation is not held back by the failing one.
    assert_eq!(rig.delivered("fast", 2).await[1], "quick");
    let sent_at = |thread: &str, text: &str| {
        rig.wire
            .sent
            .lock()
            .unwrap()
            .iter()
            .find(|(t, x, _)| t == thread && x == text)
            .map(|(_, _, at)| at.duration_since(started))
            .unwrap()
    };

    // The failing one waits out retry-after, then delivers in order.
    assert_eq!(rig.delivered("slow", 4).await[1..], ["one", "two", "three"]);
    assert!(
        sent_at("fast", "quick") < sent_at("slow", "one"),
        "the waiting conversation held the other back"
    );
    assert!(
        sent_at("slow", "one") >= Duration::from_millis(400),
        "{:?}",
        sent_at("slow", "one")
    );
    let messages = rig.store.messages(ids[0], 0, 100).await.unwrap();
    let one = messages.iter().find(|m| m.text == "one").unwrap();
    let delivery = one.delivery.as_ref().unwrap();
    assert_eq!(
        (delivery.state, delivery.attempts),
        (DeliveryState::Sent, 2)
    );
    assert!(matches!(one.author, Author::Agent(a) if a == agent.id));
    // The reply made the agent the owner.
    assert_eq!(rig.conversation("slow").await.assignee, Some(agent.id));
    rig.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_to_one_conversation_are_all_stored_in_sequence() {
    concurrent_messages_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_to_one_conversation_are_all_stored_in_sequence_in_memory() {
    concurrent_messages_on(Backend::Memory).await;
}

async fn concurrent_messages_on(backend: Backend) {
    // The first message is escalated; the rest arrive while a person owns nothing yet, so the
    // bot stays silent after that (queued).
    let rig = rig_on(
        backend,
        vec![Decision::Escalate {
            reason: EscalationReason::AskedForHuman,
            detail: "test".into(),
        }],
    )
    .await;
    rig.say("busy", "b0", "first").await;
    rig.delivered("busy", 1).await;
    let engine = rig.engine.clone();
    let tasks: Vec<_> = (1..=64)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .ingest(
                        &ChannelId::new("wire"),
                        message("busy", &format!("b{i}"), &format!("m{i}")),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Accepted::Stored);
    }
    let conv = rig.conversation("busy").await;
    let messages = rig.store.messages(conv.id, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=messages.len() as u64).collect::<Vec<_>>(),
        "no gaps, no overwrites"
    );
    let customer = messages
        .iter()
        .filter(|m| m.author == Author::Customer)
        .count();
    assert_eq!(customer, 65);
    assert_eq!(conv.last_seq, messages.len() as u64);
    rig.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_overs_tell_the_place_in_line_and_the_recent_wait_once_known() {
    let escalate = || Decision::Escalate {
        reason: EscalationReason::AskedForHuman,
        detail: "scripted".into(),
    };
    let rig = rig((0..5).map(|_| escalate()).collect()).await;
    let ana = rig.agent("Ana").await;
    // Three customers wait about 1.2 s each for Ana's first reply.
    for t in ["w1", "w2", "w3"] {
        rig.say(t, &format!("{t}-m"), "a person please").await;
    }
    for t in ["w1", "w2", "w3"] {
        assert_eq!(rig.delivered(t, 1).await, ["a person will take over"]);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for t in ["w1", "w2", "w3"] {
        let id = rig.conversation(t).await.id;
        rig.engine
            .reply(id, &ana, "hello", &[], None)
            .await
            .unwrap();
    }
    // Two still waiting (w1 resolved, w2 and w3 stay assigned): the next is the first in line.
    rig.say("w4", "w4-m", "a person please").await;
    assert_eq!(
        rig.delivered("w4", 1).await,
        ["you are number 1, about 1 min"],
        "recent waits round up to a minute"
    );
    rig.say("w5", "w5-m", "a person please").await;
    assert_eq!(
        rig.delivered("w5", 1).await,
        ["you are number 2, about 1 min"]
    );
    rig.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_waiting_the_bot_answers_what_it_knows_and_is_silent_once_a_person_owns_it() {
    let answer = Decision::Answer {
        entry: "hours".into(),
        text: "We are open 9 to 5.".into(),
        score: 0.9,
        escalate_after: false,
        buttons: vec![],
        detail: "scripted".into(),
    };
    let rig = rig(vec![
        Decision::Escalate {
            reason: EscalationReason::AskedForHuman,
            detail: "scripted".into(),
        },
        answer.clone(),
        Decision::Clarify {
            text: "which one?".into(),
            options: vec![],
            score: Some(0.3),
            detail: "scripted".into(),
        },
        answer,
    ])
    .await;
    rig.say("q1", "m1", "a person please").await;
    assert_eq!(rig.delivered("q1", 1).await, ["a person will take over"]);
    rig.say("q1", "m2", "when are you open?").await;
    assert_eq!(rig.delivered("q1", 2).await[1], "We are open 9 to 5.");
    assert_eq!(
        rig.conversation("q1").await.status,
        Status::Queued,
        "still waiting"
    );
    // Not sure while waiting: no clarification, nothing sent. Asked the same again: the
    // answer is not repeated.
    rig.say("q1", "m3", "hmm").await;
    rig.say("q1", "m3b", "so when are you open?").await;
    let ana = rig.agent("Ana").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.delivered("q1", 2).await.len(), 2);
    // Ana owns it: the bot is not asked at all.
    let id = rig.conversation("q1").await.id;
    rig.engine
        .reply(id, &ana, "Hi, Ana here", &[], None)
        .await
        .unwrap();
    rig.say("q1", "m4", "when are you open?").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.delivered("q1", 3).await,
        [
            "a person will take over",
            "We are open 9 to 5.",
            "Hi, Ana here"
        ]
    );
    assert_eq!(
        rig.bot.asked.lock().unwrap().len(),
        4,
        "the fifth message went to Ana only"
    );
    rig.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_scoped_to_the_sender_keep_two_customers_apart_and_know_messages_from_before() {
    let escalate = || Decision::Escalate {
        reason: EscalationReason::AskedForHuman,
        detail: "scripted".into(),
    };
    let rig = rig(vec![escalate(), escalate()]).await;
    let wire = ChannelId::new("wire");
    let scoped = |thread: &str, id: &str, text: &str| {
        let InboundEvent::Message(mut m) = message(thread, &format!("{thread}/{id}"), text) else {
            unreachable!()
        };
        m.message_id = ExternalMessageId::scoped(thread, id);
        m.earlier_id = Some(ExternalMessageId::new(id));
        InboundEvent::Message(m)
    };
    // Stored before ids were scoped: under the client's id alone.
    rig.say("会话甲", "1", "我的退款还没到账").await;
    // Delivered again after the upgrade, now scoped: the same message.
    let again = rig
        .engine
        .ingest(&wire, scoped("会话甲", "1", "我的退款还没到账"));
    assert_eq!(again.await.unwrap(), Accepted::Duplicate);
    // Another customer who picked the same id: a message of their own.
    let other = rig
        .engine
        .ingest(&wire, scoped("会话乙", "1", "请给我回电话，很急"));
    assert_eq!(other.await.unwrap(), Accepted::Stored);
    let other_again = rig
        .engine
        .ingest(&wire, scoped("会话乙", "1", "请给我回电话，很急"));
    assert_eq!(other_again.await.unwrap(), Accepted::Duplicate);
    // Scoped ids can not collide however the parts are cut, and give back what was sent.
    assert_ne!(
        ExternalMessageId::scoped("a:b", "c"),
        ExternalMessageId::scoped("a", "b:c")
    );
    assert_eq!(ExternalMessageId::scoped("a", "b:c").as_sent(), "b:c");
    assert_eq!(
        ExternalMessageId::scoped("顾客:1", "<x@y>").as_sent(),
        "<x@y>"
    );
    assert_eq!(ExternalMessageId::new("123:456").as_sent(), "123:456");
    let second = rig.conversation("会话乙").await;
    assert_ne!(second.id, rig.conversation("会话甲").await.id);
    let texts: Vec<String> = rig
        .store
        .messages(second.id, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.author == Author::Customer)
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["请给我回电话，很急"]);
    rig.stop.cancel();
}

/// Timers run on the engine's clock: with tokio's time paused, a conversation snoozed for an
/// hour stays snoozed at 59 minutes and is back in the queue just after the hour, with no
/// real waiting.
#[tokio::test(start_paused = true)]
async fn a_snoozed_conversation_wakes_on_the_engines_clock() {
    let clock = TokioClock::new();
    let r = rig_with_clock(
        Backend::Memory,
        vec![Decision::Escalate {
            reason: EscalationReason::AskedForHuman,
            detail: "scripted".into(),
        }],
        Arc::new(clock),
    )
    .await;
    r.say("s1", "m1", "我要找人工").await;
    let mut conv = r.conversation("s1").await;
    for _ in 0..1000 {
        if conv.status == Status::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        conv = r.conversation("s1").await;
    }
    assert_eq!(conv.status, Status::Queued);
    let hour = 3_600_000;
    let until = clock.now_ms() + hour;
    r.engine
        .act(
            conv.id,
            Actor::System,
            Action::Snooze { until_ms: until },
            "later",
        )
        .await
        .unwrap();
    assert_eq!(r.conversation("s1").await.status, Status::Snoozed);

    tokio::time::advance(Duration::from_secs(59 * 60)).await;
    // Let the wake-up timer run a few ticks at this time.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_millis(1100)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        r.conversation("s1").await.status,
        Status::Snoozed,
        "59 minutes in"
    );

    tokio::time::advance(Duration::from_secs(60)).await;
    let mut status = Status::Snoozed;
    for _ in 0..50 {
        tokio::time::advance(Duration::from_millis(1100)).await;
        tokio::task::yield_now().await;
        status = r.conversation("s1").await.status;
        if status != Status::Snoozed {
            break;
        }
    }
    assert_eq!(status, Status::Queued, "woken just after the hour");
    let events = r.store.conversation_events(conv.id).await.unwrap();
    let woke = events
        .iter()
        .rev()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::StatusChanged {
                    from: Status::Snoozed,
                    ..
                }
            )
        })
        .unwrap();
    assert!(
        woke.at_ms >= until && woke.at_ms < until + 10 * 60_000,
        "stamped on the engine's clock: {} vs {until}",
        woke.at_ms
    );
    r.stop.cancel();
}
