//! The store contract, as a suite any backend runs (garage's `db/test.rs` is the model):
//! commits and version conflicts, insert-if-absent dedupe, lists and pages, the event feed
//! (order, resume from any position, subscribe), the work queues, private spaces, erasure,
//! and export/import across backends. `contract_suite!` instantiates it for a backend; sled
//! and the in-memory store run it here, a shared database in its own module.

use std::collections::BTreeSet;
use std::time::Duration;

use switchboard_channel::{ChannelId, ExternalMessageId, ExternalThread, ExternalUser};

use super::lease::Holder;
use super::{Change, ConversationQuery, ConversationWrite, Order, Page, Result, Store, StoreError};
use crate::model::{
    Actor, AgentId, Contact, ContactId, Conversation, ConversationId, Event, EventId, EventKind,
    Identity, OutboxItem, Status,
};

pub(crate) fn conv(id: u64, channel: &str, status: Status, updated: i64) -> Conversation {
    let mut c = Conversation::new(
        ConversationId(id),
        ContactId(1000 + id),
        ChannelId::new(channel),
        ExternalThread::new(format!("t{id}")),
        updated,
    );
    c.status = status;
    c.assignee = (status == Status::Assigned).then_some(AgentId(7));
    c
}

async fn apply(store: &dyn Store, change: &Change) -> Result<()> {
    store.commit(change.clone()).await.map(|_| ())
}

async fn create(store: &dyn Store, c: &Conversation) {
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::new(c.clone())],
            ..Change::default()
        },
    )
    .await
    .unwrap();
}

/// Writes `next` over `previous`, the record as read.
async fn update(store: &dyn Store, previous: &Conversation, next: &Conversation) -> Result<()> {
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::update(previous.clone(), next.clone())],
            ..Change::default()
        },
    )
    .await
}

use super::sled_store::tests::customer_message;

fn ids(page: &Page) -> Vec<u64> {
    page.items.iter().map(|c| c.id.0).collect()
}

fn event(conv: u64, seq: u64) -> Event {
    Event::new(
        Some(ConversationId(conv)),
        Actor::Customer,
        seq as i64,
        EventKind::MessageReceived { seq },
    )
}

fn logged(conv: u64, text: &str) -> Event {
    Event::new(
        Some(ConversationId(conv)),
        Actor::System,
        0,
        EventKind::LabelsChanged {
            labels: [text.to_owned()].into(),
        },
    )
}

pub(super) async fn stale_writes_are_refused(store: &dyn Store) {
    let c = conv(1, "web", Status::Bot, 10);
    create(store, &c).await;
    assert!(matches!(
        apply(
            store,
            &Change {
                conversations: vec![ConversationWrite::new(c.clone())],
                ..Change::default()
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.conversation(c.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    let mut next = stored.clone();
    next.status = Status::Queued;
    update(store, &stored, &next).await.unwrap();
    // The same stale copy again: refused, nothing changes.
    assert!(matches!(
        update(store, &stored, &next).await,
        Err(StoreError::Conflict(_))
    ));
    let now = store.conversation(c.id).await.unwrap().unwrap();
    assert_eq!((now.version, now.status), (2, Status::Queued));
}

pub(super) async fn a_duplicate_key_aborts_the_whole_change(store: &dyn Store) {
    let ch = ChannelId::new("web");
    let ext = ExternalMessageId::new("m1");
    let first = Change {
        new_external_ids: vec![(ch.clone(), ext.clone(), ConversationId(1), 1)],
        ..Change::default()
    };
    apply(store, &first).await.unwrap();
    let c = conv(2, "web", Status::Bot, 10);
    let second = Change {
        conversations: vec![ConversationWrite::new(c.clone())],
        new_external_ids: vec![(ch.clone(), ext.clone(), ConversationId(2), 1)],
        ..Change::default()
    };
    assert!(matches!(
        apply(store, &second).await,
        Err(StoreError::Exists("message id"))
    ));
    assert_eq!(
        store.conversation(c.id).await.unwrap(),
        None,
        "nothing of the change was applied"
    );
    assert_eq!(
        store.external_message(&ch, &ext).await.unwrap(),
        Some((ConversationId(1), 1))
    );
    assert_eq!(store.status_counts().await.unwrap(), [0; 5]);
}

pub(super) async fn lists_filter_sort_and_paginate_through_indexes(store: &dyn Store) {
    // 30 conversations: status cycles, two channels, updated = id.
    for i in 1..=30u64 {
        let status = Status::ALL[(i % 5) as usize];
        let channel = if i % 2 == 0 { "even" } else { "odd" };
        create(store, &conv(i, channel, status, i as i64 * 100)).await;
    }
    let q = |status: Option<Status>, channel: Option<&str>, order: Order, limit: usize| {
        ConversationQuery {
            status,
            channel: channel.map(ChannelId::new),
            order,
            limit,
            ..ConversationQuery::default()
        }
    };
    // All statuses merged, newest first, in pages of 7.
    let mut seen = Vec::new();
    let mut query = q(None, None, Order::NewestFirst, 7);
    loop {
        let page = store.list_conversations(&query).await.unwrap();
        seen.extend(ids(&page));
        match page.next {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<_>>());

    let queued = store
        .list_conversations(&q(Some(Status::Queued), None, Order::OldestFirst, 50))
        .await
        .unwrap();
    assert_eq!(ids(&queued), vec![1, 6, 11, 16, 21, 26]);
    assert!(queued.next.is_none());

    let even_queued = store
        .list_conversations(&q(
            Some(Status::Queued),
            Some("even"),
            Order::NewestFirst,
            2,
        ))
        .await
        .unwrap();
    assert_eq!(ids(&even_queued), vec![26, 16]);
    let rest = store
        .list_conversations(&ConversationQuery {
            after: even_queued.next,
            ..q(Some(Status::Queued), Some("even"), Order::NewestFirst, 2)
        })
        .await
        .unwrap();
    assert_eq!(ids(&rest), vec![6]);

    let mine = store
        .list_conversations(&ConversationQuery {
            assignee: Some(AgentId(7)),
            limit: 50,
            ..ConversationQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&mine), vec![27, 22, 17, 12, 7, 2]);
    assert_eq!(store.status_counts().await.unwrap(), [6, 6, 6, 6, 6]);
}

pub(super) async fn channel_state_scans_by_prefix_and_resumes_after_a_key(store: &dyn Store) {
    let state = store.channel_state(&ChannelId::new("chat")).await.unwrap();
    state
        .put_all(&[
            (b"a/1", b"x"),
            (b"a/2", b"y"),
            (b"a/3", b"z"),
            (b"b/1", b"w"),
        ])
        .await
        .unwrap();
    state.sync().await.unwrap();
    let all = state.scan(b"a/", None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    let after = state.scan(b"a/", Some(b"a/1"), 10).await.unwrap();
    assert_eq!(
        after.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"a/2".to_vec(), b"a/3".to_vec()]
    );
    assert!(state.next_id().await.unwrap() < state.next_id().await.unwrap());
    // Another channel's space is separate.
    let other = store.channel_state(&ChannelId::new("other")).await.unwrap();
    assert!(other.scan(b"", None, 10).await.unwrap().is_empty());
}
/// Events get ids in commit order; a reader resuming after any id gets every later event
/// once, in order; a subscriber sees the same; commits answer with the ids they were given.
pub(super) async fn the_event_feed_is_in_commit_order_and_resumes_anywhere(store: &dyn Store) {
    let mut live = store.subscribe();
    let mut given = Vec::new();
    for i in 1..=40u64 {
        let events = (0..i % 3 + 1).map(|k| event(i, k)).collect();
        let committed = store
            .commit(Change {
                events,
                ..Change::default()
            })
            .await
            .unwrap();
        given.extend(committed.events);
    }
    assert!(given.windows(2).all(|w| w[0] < w[1]), "{given:?}");
    let all = store.events(None, 1_000).await.unwrap();
    let stored: Vec<EventId> = all.iter().map(|e| e.id).collect();
    assert_eq!(stored, given);
    for (k, from) in given.iter().enumerate() {
        let rest = store.events(Some(*from), 1_000).await.unwrap();
        assert_eq!(
            rest.iter().map(|e| e.id).collect::<Vec<_>>(),
            given[k + 1..]
        );
    }
    let page = store.events(Some(given[3]), 5).await.unwrap();
    assert_eq!(page.len(), 5);
    // Announced once durable, possibly just after the commit answered: wait (bounded).
    let mut heard = Vec::new();
    while heard.len() < given.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(10), live.recv()).await {
            Ok(Ok(e)) => heard.push(e.id),
            other => panic!("the feed stopped after {} events: {other:?}", heard.len()),
        }
    }
    assert!(live.try_recv().is_err(), "nothing more");
    assert_eq!(
        heard, given,
        "the subscriber heard every event once, in order"
    );
}

/// A conversation's log holds its own logged events only, oldest first.
pub(super) async fn a_conversation_log_holds_its_own_events(store: &dyn Store) {
    apply(
        store,
        &Change {
            events: vec![logged(1, "a"), event(1, 1), logged(2, "b"), logged(1, "c")],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    let log = store.conversation_events(ConversationId(1)).await.unwrap();
    let labels: Vec<String> = log
        .iter()
        .map(|e| match &e.kind {
            EventKind::LabelsChanged { labels } => labels.iter().cloned().collect(),
            other => other.name().to_owned(),
        })
        .collect();
    assert_eq!(labels, ["a", "c"]);
}

/// The bot queue keeps entries in key order until removed (in a change or by `bot_done`);
/// failed deliveries likewise.
pub(super) async fn queues_keep_their_entries_until_acknowledged(store: &dyn Store) {
    let (one, two) = (ConversationId(1), ConversationId(2));
    apply(
        store,
        &Change {
            bot_queue_put: vec![(two, 1), (one, 2), (one, 1)],
            failed_put: vec![(two, 5), (one, 9)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        store.bot_queue(None, 10).await.unwrap(),
        [(one, 1), (one, 2), (two, 1)]
    );
    assert_eq!(
        store.bot_queue(Some((one, 1)), 1).await.unwrap(),
        [(one, 2)]
    );
    apply(
        store,
        &Change {
            bot_queue_remove: vec![(one, 1)],
            failed_remove: vec![(one, 9)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    store.bot_done(one, 2);
    // `bot_done` needs no wait for the disk; the next commit is ordered after it.
    store.durable().await.unwrap();
    apply(store, &Change::default()).await.unwrap();
    assert_eq!(store.bot_queue(None, 10).await.unwrap(), [(two, 1)]);
    assert_eq!(store.failed_deliveries(10).await.unwrap(), [(two, 5)]);
}

fn outbox_item(conversation: ConversationId, seq: u64) -> OutboxItem {
    OutboxItem {
        conversation,
        seq,
        channel: ChannelId::new("tg"),
        thread: ExternalThread::new("t1"),
        outbound: switchboard_channel::Outbound {
            id: format!("o-{}-{seq}", conversation.0),
            author: switchboard_channel::OutboundAuthor::Bot,
            text: format!("回复 {seq}"),
            buttons: vec![],
            in_reply_to: None,
            format: Default::default(),
            attachments: vec![],
        },
        attempts: 0,
        flood_waits: 0,
        next_attempt_ms: 0,
    }
}

/// Work is claimed with a lease: one holder at a time, renewed by its holder, taken over
/// once the lease runs out, and gone once the commit recording the result acknowledges it.
/// The outbox hands out only each conversation's head, so replies keep their order.
pub(super) async fn work_is_claimed_with_leases_and_acknowledged_by_commits(store: &dyn Store) {
    let (one, two) = (ConversationId(1), ConversationId(2));
    let (a, b) = (Holder(1), Holder(2));
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(50);
    apply(
        store,
        &Change {
            bot_queue_put: vec![(one, 1), (one, 2)],
            outbox_put: vec![
                outbox_item(one, 4),
                outbox_item(one, 3),
                outbox_item(two, 1),
            ],
            ..Change::default()
        },
    )
    .await
    .unwrap();

    // The bot's turns.
    assert!(store.claim_bot(one, 1, a, long).await.unwrap());
    assert!(
        !store.claim_bot(one, 1, b, long).await.unwrap(),
        "a holds it"
    );
    assert!(store.claim_bot(one, 1, a, long).await.unwrap(), "a renews");
    assert!(
        !store.claim_bot(one, 9, a, long).await.unwrap(),
        "never queued"
    );
    assert!(store.claim_bot(one, 2, a, short).await.unwrap());
    tokio::time::sleep(short * 3).await;
    assert!(
        store.claim_bot(one, 2, b, long).await.unwrap(),
        "a's lease ran out: b takes it over"
    );
    apply(
        store,
        &Change {
            bot_queue_remove: vec![(one, 1)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert!(
        !store.claim_bot(one, 1, a, long).await.unwrap(),
        "acknowledged by the commit"
    );
    store.bot_done(one, 2);
    store.durable().await.unwrap();
    apply(store, &Change::default()).await.unwrap();
    assert!(!store.claim_bot(one, 2, b, long).await.unwrap(), "done");

    // The outbox: each conversation's head only.
    let head = store.claim_outbox_head(one, a, long).await.unwrap();
    assert_eq!(head.map(|i| i.seq), Some(3), "the oldest reply first");
    assert_eq!(
        store.claim_outbox_head(one, b, long).await.unwrap(),
        None,
        "a holds the head"
    );
    assert_eq!(
        store
            .claim_outbox_head(two, b, long)
            .await
            .unwrap()
            .map(|i| i.seq),
        Some(1),
        "another conversation is free"
    );
    apply(
        store,
        &Change {
            outbox_remove: vec![(one, 3)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    let next = store.claim_outbox_head(one, a, short).await.unwrap();
    assert_eq!(next.map(|i| i.seq), Some(4), "delivered: the next in order");
    tokio::time::sleep(short * 3).await;
    assert_eq!(
        store
            .claim_outbox_head(one, b, long)
            .await
            .unwrap()
            .map(|i| i.seq),
        Some(4),
        "taken over once a's lease ran out"
    );
    apply(
        store,
        &Change {
            outbox_remove: vec![(one, 4)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.claim_outbox_head(one, b, long).await.unwrap(), None);
    assert_eq!(store.outbox_conversations().await.unwrap(), [two]);
}

/// Point reads of what a change wrote: identities, threads, contacts, agents by token.
pub(super) async fn point_reads_find_what_was_written(store: &dyn Store) {
    let ch = ChannelId::new("tg");
    let user = ExternalUser::new("42");
    let c = conv(5, "tg", Status::Bot, 10);
    let contact = Contact {
        id: c.contact,
        name: Some("王小明".into()),
        identities: vec![Identity {
            channel: ch.clone(),
            user: user.clone(),
        }],
        merged_into: None,
        created_at_ms: 1,
        forgotten_at_ms: None,
    };
    let agent = crate::model::Agent {
        id: AgentId(9),
        name: "Ana".into(),
        role: crate::model::Role::Agent,
        disabled: false,
        created_at_ms: 1,
        presence: crate::model::Presence::Offline,
        presence_since_ms: 0,
        presence_auto: false,
        token_hash: "hash-of-ana".into(),
    };
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::new(c.clone())],
            contacts: vec![contact.clone()],
            new_identities: vec![(ch.clone(), user.clone(), c.contact)],
            new_threads: vec![(ch.clone(), c.thread.clone(), c.id)],
            agents: vec![agent.clone()],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.identity(&ch, &user).await.unwrap(), Some(c.contact));
    assert_eq!(store.thread(&ch, &c.thread).await.unwrap(), Some(c.id));
    assert_eq!(store.contact(c.contact).await.unwrap(), Some(contact));
    assert_eq!(
        store.contact_conversations(c.contact).await.unwrap(),
        [c.id]
    );
    assert_eq!(
        store.agent_by_token_hash("hash-of-ana").await.unwrap(),
        Some(agent.clone())
    );
    // A new token replaces the old one.
    let mut rotated = agent.clone();
    rotated.token_hash = "new-hash".into();
    apply(
        store,
        &Change {
            agents: vec![rotated.clone()],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        store.agent_by_token_hash("hash-of-ana").await.unwrap(),
        None
    );
    assert_eq!(store.agent(agent.id).await.unwrap(), Some(rotated));
    assert_eq!(
        store
            .thread(&ch, &ExternalThread::new("nope"))
            .await
            .unwrap(),
        None
    );
    assert!(store.next_id().await.unwrap() < store.next_id().await.unwrap());
}

/// Meta values and daemon spaces are private and durable once synced.
pub(super) async fn meta_and_daemon_spaces_keep_their_values(store: &dyn Store) {
    assert_eq!(store.meta("greeting").await.unwrap(), None);
    store.set_meta("greeting", "你好".as_bytes()).await.unwrap();
    store.durable().await.unwrap();
    assert_eq!(
        store.meta("greeting").await.unwrap().as_deref(),
        Some("你好".as_bytes())
    );
    let kb = store.kv("kb").await.unwrap();
    kb.put_all(&[(b"e/1", b"entry")]).await.unwrap();
    kb.remove_all(&[b"missing"]).await.unwrap();
    kb.sync().await.unwrap();
    let again = store.kv("kb").await.unwrap();
    assert_eq!(
        again.get(b"e/1").await.unwrap().as_deref(),
        Some(&b"entry"[..])
    );
    assert!(
        store
            .kv("other")
            .await
            .unwrap()
            .get(b"e/1")
            .await
            .unwrap()
            .is_none()
    );
}

/// Erasing a contact removes its conversations, messages, identities and logged events,
/// leaves a tombstone, and reports what went; other customers keep everything.
pub(super) async fn erasing_a_contact_removes_everything_of_theirs(store: &dyn Store) {
    let ch = ChannelId::new("web");
    let gone = conv(1, "web", Status::Queued, 10);
    let kept = conv(2, "web", Status::Queued, 20);
    let mut change = Change::default();
    for c in [&gone, &kept] {
        change.conversations.push(ConversationWrite::new(c.clone()));
        change.contacts.push(Contact {
            id: c.contact,
            name: Some(format!("customer {}", c.id)),
            identities: vec![],
            merged_into: None,
            created_at_ms: 1,
            forgotten_at_ms: None,
        });
        change.new_identities.push((
            ch.clone(),
            ExternalUser::new(format!("u{}", c.id)),
            c.contact,
        ));
        change
            .new_threads
            .push((ch.clone(), c.thread.clone(), c.id));
        change
            .messages
            .push(customer_message(c.id, 1, "我的订单在哪里", 10));
        change.new_external_ids.push((
            ch.clone(),
            ExternalMessageId::new(format!("m{}", c.id)),
            c.id,
            1,
        ));
        change.events.push(logged(c.id.0, "vip"));
        change.bot_queue_put.push((c.id, 1));
    }
    apply(store, &change).await.unwrap();
    let erased = store.erase_contact(gone.contact, 99).await.unwrap();
    assert_eq!(erased.contacts, [gone.contact]);
    assert_eq!(erased.conversations, [gone.id]);
    assert_eq!(erased.messages, 1);
    assert_eq!(store.conversation(gone.id).await.unwrap(), None);
    assert!(store.messages(gone.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.thread(&ch, &gone.thread).await.unwrap(), None);
    assert_eq!(
        store.identity(&ch, &ExternalUser::new("u1")).await.unwrap(),
        None
    );
    assert!(store.conversation_events(gone.id).await.unwrap().is_empty());
    assert!(
        !store
            .claim_bot(gone.id, 1, Holder(1), Duration::from_secs(1))
            .await
            .unwrap()
    );
    let tombstone = store.contact(gone.contact).await.unwrap().unwrap();
    assert_eq!(
        (tombstone.name, tombstone.forgotten_at_ms),
        (None, Some(99))
    );
    // The other customer is untouched.
    assert!(store.conversation(kept.id).await.unwrap().is_some());
    assert_eq!(store.messages(kept.id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.conversation_events(kept.id).await.unwrap().len(), 1);
    assert_eq!(
        store.status_counts().await.unwrap()[Status::Queued as usize],
        1
    );
}

/// What one backend exports, another imports into the same records.
pub(super) async fn an_export_restores_into_another_backend(store: &dyn Store) {
    let ch = ChannelId::new("web");
    let c = conv(3, "web", Status::Bot, 30);
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::new(c.clone())],
            new_threads: vec![(ch.clone(), c.thread.clone(), c.id)],
            messages: vec![customer_message(c.id, 1, "退款多久到账？", 30)],
            events: vec![logged(3, "refund")],
            bot_queue_put: vec![(c.id, 1)],
            ..Change::default()
        },
    )
    .await
    .unwrap();
    let space = store.channel_state(&ch).await.unwrap();
    space.put_all(&[(b"offset", b"7")]).await.unwrap();
    store.set_meta("setting", b"on").await.unwrap();
    store.durable().await.unwrap();
    let mut exported = Vec::new();
    store
        .records(&mut |r| {
            exported.push(r);
            Ok(())
        })
        .await
        .unwrap();
    let other = super::memory::MemoryStore::new();
    other.restore(exported.clone()).await.unwrap();
    let mut again = Vec::new();
    other
        .records(&mut |r| {
            again.push(r);
            Ok(())
        })
        .await
        .unwrap();
    let body = |rs: &[super::records::Record]| -> BTreeSet<String> {
        rs.iter()
            .filter(|r| {
                !matches!(
                    r,
                    super::records::Record::Header { .. } | super::records::Record::Agent { .. }
                )
            })
            .map(|r| serde_json::to_string(r).unwrap())
            .collect()
    };
    assert_eq!(body(&again), body(&exported));
    assert!(
        other.next_id().await.unwrap() > 3,
        "ids go on above the imported ones"
    );
}

/// Instantiates the suite for a backend: `$open` is an async expression giving a
/// `(store, guard)` pair (the guard keeps what the store needs, a temp dir, alive).
#[macro_export]
macro_rules! contract_suite {
    ($open:expr) => {
        $crate::contract_suite!(@tests $open;
            stale_writes_are_refused,
            a_duplicate_key_aborts_the_whole_change,
            lists_filter_sort_and_paginate_through_indexes,
            channel_state_scans_by_prefix_and_resumes_after_a_key,
            the_event_feed_is_in_commit_order_and_resumes_anywhere,
            a_conversation_log_holds_its_own_events,
            queues_keep_their_entries_until_acknowledged,
            work_is_claimed_with_leases_and_acknowledged_by_commits,
            point_reads_find_what_was_written,
            meta_and_daemon_spaces_keep_their_values,
            erasing_a_contact_removes_everything_of_theirs,
            an_export_restores_into_another_backend,
        );
    };
    (@tests $open:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $open;
                $crate::store::contract::$name(store.as_ref()).await;
            }
        )*
    };
}

mod sled {
    /// A store in a fresh directory.
    fn open() -> (std::sync::Arc<dyn super::Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(
            dir.path(),
            &crate::store::sled_store::SledOptions::with_cache_mb(8),
        )
        .unwrap();
        (std::sync::Arc::new(store), dir)
    }
    crate::contract_suite!(open());
}

mod memory {
    crate::contract_suite!((
        std::sync::Arc::new(crate::store::memory::MemoryStore::new())
            as std::sync::Arc<dyn crate::store::Store>,
        ()
    ));
}
