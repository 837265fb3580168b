use crate::store::Maintenance;
use switchboard_channel::{ChannelId, ExternalMessageId, ExternalUser};

use super::*;
use crate::model::{Actor, EventKind, Identity, NoteId, Status};
use crate::store::{Change, ConversationQuery, ConversationWrite};

/// Opens the store; a reopen in the same process can find the dropped handle's background
/// thread still holding sled's file lock for a moment, so that is retried (bounded).
fn open(dir: &Path) -> SledStore {
    open_with(dir, &SledOptions::with_cache_mb(8))
}

fn open_with(dir: &Path, options: &SledOptions) -> SledStore {
    let mut last = None;
    for _ in 0..100 {
        match SledStore::open(dir, options) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot open the store: {last:?}")
}

use crate::store::contract::conv;

/// Commits and waits.
fn apply(store: &SledStore, change: &Change) -> Result<()> {
    futures::executor::block_on(store.commit(change.clone())).map(|_| ())
}

fn create(store: &SledStore, c: &Conversation) {
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::new(c.clone())],
            ..Change::default()
        },
    )
    .unwrap();
}

/// Writes `next` over `previous`, the record as read.
fn update(store: &SledStore, previous: &Conversation, next: &Conversation) -> Result<()> {
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::update(previous.clone(), next.clone())],
            ..Change::default()
        },
    )
}

/// The conversation record as written in the tree (not the fresher one readers get).
fn record_on_disk(store: &SledStore, id: ConversationId) -> Conversation {
    store
        .get(CONVERSATIONS, &id.to_be_bytes())
        .unwrap()
        .unwrap()
}

fn ids(page: &Page) -> Vec<u64> {
    page.items.iter().map(|c| c.id.0).collect()
}

#[tokio::test]
async fn moving_a_conversation_moves_its_index_keys_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, &conv(1, "web", Status::Bot, 100));
    create(&store, &conv(2, "web", Status::Bot, 200));
    let stored = store
        .conversation(ConversationId(1))
        .await
        .unwrap()
        .unwrap();
    let mut c = stored.clone();
    c.status = Status::Queued;
    c.updated_at_ms = 300;
    c.labels.insert("vip".into());
    update(&store, &stored, &c).unwrap();
    let bot = store
        .list_conversations(&ConversationQuery {
            status: Some(Status::Bot),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&bot), vec![2]);
    let vip = store
        .list_conversations(&ConversationQuery {
            label: Some("vip".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&vip), vec![1]);
    assert_eq!(store.status_counts().await.unwrap(), [1, 1, 0, 0, 0]);
    // The index follows the store across reopening.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.status_counts().await.unwrap(), [1, 1, 0, 0, 0]);
    let vip = store
        .list_conversations(&ConversationQuery {
            label: Some("vip".into()),
            status: Some(Status::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&vip), vec![1]);
}

#[tokio::test]
async fn data_and_counts_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        create(&store, &conv(1, "web", Status::Queued, 100));
        futures::executor::block_on(store.durable()).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store
            .conversation(ConversationId(1))
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Queued
    );
    assert_eq!(store.status_counts().await.unwrap(), [0, 1, 0, 0, 0]);
}

#[test]
fn a_different_schema_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .meta
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        store.db.flush().unwrap();
    }
    match SledStore::open(dir.path(), &SledOptions::with_cache_mb(8)) {
        Err(e @ StoreError::Schema { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                    && text.contains("newer"),
                "{text}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_durability_waits_complete() {
    // sled's own flush_async deadlocks with 8+ concurrent callers; our committer must not.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                store.set_meta(&format!("k{i}-{j}"), b"v").await.unwrap();
                store.durable().await.unwrap();
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("no deadlock");
}

#[tokio::test]
async fn new_messages_do_not_rewrite_the_record_and_a_crash_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let id = ConversationId(1);
    {
        let store = open(dir.path());
        create(&store, &conv(1, "web", Status::Queued, 100));
        let mut previous = store.conversation(id).await.unwrap().unwrap();
        for seq in 1..=3u64 {
            let mut next = previous.clone();
            next.last_seq = seq;
            next.updated_at_ms = 100 + seq as i64;
            next.preview = format!("text {seq}");
            apply(
                &store,
                &Change {
                    conversations: vec![ConversationWrite::update(previous.clone(), next.clone())],
                    messages: vec![customer_message(id, seq, &next.preview, next.updated_at_ms)],
                    // As the engine stores them: for the bot (see `adds_unqueued_customer_message`).
                    bot_queue_put: vec![(id, seq)],
                    ..Change::default()
                },
            )
            .unwrap();
            previous = store.conversation(id).await.unwrap().unwrap();
        }
        assert_eq!((previous.last_seq, previous.version), (3, 4));
        // Only activity changed: the record on disk is the first one, marked as lagging.
        let on_disk = record_on_disk(&store, id);
        assert_eq!((on_disk.last_seq, on_disk.version), (0, 1));
        assert!(store.tree(ACTIVE).contains_key(id.to_be_bytes()).unwrap());
        // A state change writes the whole record and clears the mark.
        let mut next = previous.clone();
        next.status = Status::Resolved;
        update(&store, &previous, &next).unwrap();
        let on_disk = record_on_disk(&store, id);
        assert_eq!(
            (on_disk.last_seq, on_disk.status, on_disk.version),
            (3, Status::Resolved, 5)
        );
        assert!(!store.tree(ACTIVE).contains_key(id.to_be_bytes()).unwrap());
    }
    // Simulate a crash after two more messages: the record lags, the mark is there.
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let data = db.open_tree("data").unwrap();
        let messages = Space {
            tree: &data,
            prefix: PREFIXES[MESSAGES],
        };
        for seq in 4..=5u64 {
            let m = customer_message(id, seq, &format!("late {seq}"), 200 + seq as i64);
            data.insert(messages.key(&crate::store::keys::pair(1, seq)), encode(&m))
                .unwrap();
        }
        let active = Space {
            tree: &data,
            prefix: PREFIXES[ACTIVE],
        };
        data.insert(active.key(&id.to_be_bytes()), &[]).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let c = store.conversation(id).await.unwrap().unwrap();
    assert_eq!(
        (c.last_seq, c.updated_at_ms, c.preview.as_str()),
        (5, 205, "late 5")
    );
    let newest = store
        .list_conversations(&ConversationQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.items[0].updated_at_ms, 205,
        "the index uses the repaired time"
    );
}

/// A contact with one conversation: an identity, a thread, two messages (one with a network
/// id), a note, an event in the conversation's log and a bot queue entry.
fn populated(store: &SledStore, id: u64, text: &str) -> Conversation {
    let c = conv(id, "web", Status::Queued, 10);
    let channel = ChannelId::new("web");
    let note = Note {
        id: NoteId(id + 500),
        conversation: c.id,
        author: AgentId(7),
        text: format!("note about {text}"),
        created_at_ms: 11,
    };
    let mut first = customer_message(c.id, 1, text, 10);
    first.external_id = Some(ExternalMessageId::new(format!("ext-{id}")));
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::new(c.clone())],
            contacts: vec![Contact {
                id: c.contact,
                name: Some(format!("Name {id}")),
                identities: vec![Identity {
                    channel: channel.clone(),
                    user: ExternalUser::new(format!("user-{id}")),
                }],
                merged_into: None,
                created_at_ms: 1,
                forgotten_at_ms: None,
            }],
            new_identities: vec![(
                channel.clone(),
                ExternalUser::new(format!("user-{id}")),
                c.contact,
            )],
            new_threads: vec![(channel.clone(), c.thread.clone(), c.id)],
            new_external_ids: vec![(
                channel,
                ExternalMessageId::new(format!("ext-{id}")),
                c.id,
                1,
            )],
            messages: vec![first, customer_message(c.id, 2, text, 12)],
            notes: vec![note.clone()],
            events: vec![Event {
                id: EventId(id + 600),
                conversation: Some(c.id),
                actor: Actor::System,
                at_ms: 12,
                kind: EventKind::MessageEdited {
                    seq: 1,
                    previous: text.to_owned(),
                },
            }],
            bot_queue_put: vec![(c.id, 2)],
            ..Change::default()
        },
    )
    .unwrap();
    c
}

async fn all_records(store: &SledStore) -> Vec<crate::store::records::Record> {
    use crate::store::records::Record;
    let mut out = Vec::new();
    store
        .records(&mut |r| {
            if !matches!(r, Record::Header { .. }) {
                out.push(r);
            }
            Ok(())
        })
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn records_restore_into_an_empty_store_and_read_back_the_same() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open(a.path());
    populated(&source, 1, "first words");
    populated(&source, 2, "second words");
    source
        .kv("canned")
        .await
        .unwrap()
        .put_all(&[(b"k", &[0xff, 0x00][..])])
        .await
        .unwrap();
    source
        .kv("sessions")
        .await
        .unwrap()
        .put_all(&[(b"s", b"secret")])
        .await
        .unwrap();
    let mut exported = Vec::new();
    source
        .records(&mut |r| {
            exported.push(r);
            Ok(())
        })
        .await
        .unwrap();
    let last_id = source.next_id().await.unwrap();

    let target = open(b.path());
    futures::executor::block_on(target.restore(exported)).unwrap();
    assert_eq!(all_records(&target).await, all_records(&source).await);
    assert!(
        target.next_id().await.unwrap() > last_id,
        "ids never collide"
    );
    assert!(
        target
            .kv("sessions")
            .await
            .unwrap()
            .get(b"s")
            .await
            .unwrap()
            .is_none(),
        "sign-in sessions are secrets: not exported"
    );
    // Indexes came back too.
    let c = target
        .conversation(ConversationId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        target.contact_conversations(c.contact).await.unwrap(),
        [c.id]
    );
    assert_eq!(
        target.status_counts().await.unwrap()[Status::Queued as usize],
        2
    );
    assert_eq!(
        target
            .external_message(&ChannelId::new("web"), &ExternalMessageId::new("ext-2"))
            .await
            .unwrap(),
        Some((ConversationId(2), 1))
    );
    assert_eq!(target.conversation_events(c.id).await.unwrap().len(), 1);
    assert_eq!(target.stats().await.unwrap().records["messages"], 4);
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(needle);
    walk(dir).iter().any(|f| {
        std::fs::read(f)
            .map(|bytes| finder.find(&bytes).is_some())
            .unwrap_or(false)
    })
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn an_erased_contact_leaves_no_bytes_in_the_files_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = open(&path);
    let gone = populated(&store, 1, "ZEBRA-PRIVATE-4411");
    let kept = populated(&store, 2, "kept words");
    // Logged events of both, stored in one segment: erasing one keeps the other.
    let edited = |c: &Conversation, id: u64, previous: &str| Event {
        id: EventId(id),
        conversation: Some(c.id),
        actor: Actor::System,
        at_ms: 13,
        kind: EventKind::MessageEdited {
            seq: 2,
            previous: previous.to_owned(),
        },
    };
    apply(
        &store,
        &Change {
            events: vec![
                edited(&kept, 700, "kept edit"),
                edited(&gone, 701, "ZEBRA-PRIVATE-4411 again"),
            ],
            ..Change::default()
        },
    )
    .unwrap();
    let erased = futures::executor::block_on(store.erase_contact(gone.contact, 99)).unwrap();
    assert_eq!(erased.conversations, [gone.id]);
    assert_eq!((erased.messages, erased.notes), (2, 1));
    // Gone from reads at once.
    assert!(store.conversation(gone.id).await.unwrap().is_none());
    assert!(store.messages(gone.id, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .identity(&ChannelId::new("web"), &ExternalUser::new("user-1"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .thread(&ChannelId::new("web"), &gone.thread)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.status_counts().await.unwrap()[Status::Queued as usize],
        1
    );
    assert!(store.conversation_events(gone.id).await.unwrap().is_empty());
    let kept_log: Vec<u64> = store
        .conversation_events(kept.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id.0)
        .collect();
    assert_eq!(kept_log, [602, 700]);
    assert!(
        store
            .events(None, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.conversation != Some(gone.id))
    );
    let tomb = store.contact(gone.contact).await.unwrap().unwrap();
    assert_eq!((tomb.name, tomb.forgotten_at_ms), (None, Some(99)));
    drop(store);
    assert!(
        files_contain(&path, b"ZEBRA-PRIVATE-4411"),
        "sled keeps removed values in its log until the files are rewritten"
    );

    // The next open rewrites the files; the other contact is intact.
    let store = open(&path);
    drop(store);
    assert!(!files_contain(&path, b"ZEBRA-PRIVATE-4411"));
    assert!(!files_contain(&path, b"Name 1"));
    let store = open(&path);
    assert_eq!(store.messages(kept.id, 0, 10).await.unwrap().len(), 2);
    assert!(
        store.next_id().await.unwrap() > 600,
        "ids keep growing across the rewrite"
    );
}

/// An event of conversation 1 (`message_received` is not in its log; the others are).
fn event(id: u64, logged: bool) -> Event {
    Event {
        id: EventId(id),
        conversation: Some(ConversationId(1)),
        actor: Actor::System,
        at_ms: id as i64,
        kind: if logged {
            EventKind::NoteAdded { note: NoteId(id) }
        } else {
            EventKind::MessageReceived { seq: id }
        },
    }
}

fn event_ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id.0).collect()
}

#[tokio::test]
async fn events_replay_after_any_id_across_segments_in_the_order_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // 300 events in rounds of various sizes, ids slightly out of order within a round (as
    // ids allocated before commit arrive); every third one in the conversation's log.
    let mut stored = Vec::new();
    let mut next = 1;
    for round in 0..12 {
        let mut ids: Vec<u64> = (next..next + 25).collect();
        next += 25;
        ids.swap(0, round % 25);
        let events: Vec<Event> = ids.iter().map(|&id| event(id, id % 3 == 0)).collect();
        apply(
            &store,
            &Change {
                events,
                ..Change::default()
            },
        )
        .unwrap();
        stored.extend(ids);
    }
    for after in [0, 1, 7, 24, 25, 26, 150, 299, 300] {
        let want: Vec<u64> = stored.iter().copied().filter(|&id| id > after).collect();
        assert_eq!(
            event_ids(&store.events(Some(EventId(after)), 1000).await.unwrap()),
            want
        );
        assert_eq!(
            event_ids(&store.events(Some(EventId(after)), 10).await.unwrap()),
            want[..want.len().min(10)]
        );
    }
    let logged: Vec<u64> = (1..=300).filter(|id| id % 3 == 0).collect();
    assert_eq!(
        event_ids(&store.conversation_events(ConversationId(1)).await.unwrap()),
        logged
    );
    assert_eq!(store.stats().await.unwrap().records["events"], 300);
    // Fewer keys than events: that is the point.
    assert!(store.tree(EVENTS).iter().count() < 50);
    drop(store);
    let store = open(dir.path());
    assert_eq!(event_ids(&store.events(None, 1000).await.unwrap()), stored);
}

/// Concurrent commits interleave (several writers, rounds of several changes); a reader that
/// resumes after the last id it saw, again and again while they run, must see every event
/// exactly once, in the order of their ids; so must a subscriber to the live feed.
#[test]
fn events_get_their_ids_in_commit_order_so_resuming_never_skips_one() {
    const WRITERS: u64 = 6;
    const CHANGES: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut live = store.subscribe();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (read, all) = rt.block_on(async {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..CHANGES {
                        let events = (0..1 + i % 3)
                            .map(|k| {
                                let mut e = event(0, k == 0);
                                e.id = EventId::UNASSIGNED;
                                e.at_ms = (w * 1000 + i) as i64;
                                e
                            })
                            .collect();
                        store
                            .commit(Change {
                                events,
                                ..Change::default()
                            })
                            .await
                            .unwrap();
                        if i % 7 == w {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                // Bounded by time, not by turns: under load the writers may
                // take far longer than any fixed number of empty reads.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                let mut seen: Vec<Event> = Vec::new();
                while std::time::Instant::now() < deadline {
                    let after = seen.last().map(|e| e.id);
                    let page = store.events(after, 7).await.unwrap();
                    if page.is_empty() {
                        if seen.len() as u64 == WRITERS * CHANGES * 2 {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    seen.extend(page);
                }
                seen
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        (
            reader.await.unwrap(),
            store.events(None, 100_000).await.unwrap(),
        )
    });
    // 60 changes of 1, 2 or 3 events each: 120 per writer.
    assert_eq!(all.len() as u64, WRITERS * CHANGES * 2);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "ids rise in the log"
    );
    assert_eq!(
        event_ids(&read),
        event_ids(&all),
        "the resuming reader saw every event once"
    );
    let mut announced = Vec::new();
    while let Ok(e) = live.try_recv() {
        announced.push(e);
    }
    assert_eq!(
        event_ids(&announced),
        event_ids(&all),
        "announced in id order"
    );
    // Each writer's own events keep the order it committed them in.
    for w in 0..WRITERS as i64 {
        let mine: Vec<i64> = all
            .iter()
            .map(|e| e.at_ms)
            .filter(|t| t / 1000 == w)
            .collect();
        assert!(mine.windows(2).all(|p| p[0] <= p[1]));
    }
}

#[tokio::test]
async fn a_schema_one_store_opens_and_reads_its_events_with_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        // Schema 1: one event per key, empty conversation log entries.
        let db = sled::open(dir.path()).unwrap();
        let data = db.open_tree("data").unwrap();
        for id in [10, 11, 12] {
            let key = Space {
                tree: &data,
                prefix: PREFIXES[EVENTS],
            }
            .key(&keys::u64_key(id));
            data.insert(key, encode(&event(id, id != 11))).unwrap();
        }
        for id in [10, 12] {
            let log = Space {
                tree: &data,
                prefix: PREFIXES[CONV_EVENTS],
            };
            data.insert(log.key(&keys::pair(1, id)), &[]).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .insert(SCHEMA_KEY, &1u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        event_ids(&store.events(None, 10).await.unwrap()),
        [10, 11, 12]
    );
    // New events get keys above the old ones, whatever their ids.
    apply(
        &store,
        &Change {
            events: vec![event(9, true), event(13, false)],
            ..Change::default()
        },
    )
    .unwrap();
    assert_eq!(
        event_ids(&store.events(None, 10).await.unwrap()),
        [10, 11, 12, 9, 13]
    );
    assert_eq!(
        event_ids(&store.events(Some(EventId(11)), 10).await.unwrap()),
        [12, 13]
    );
    assert_eq!(
        event_ids(&store.conversation_events(ConversationId(1)).await.unwrap()),
        [9, 10, 12]
    );
    assert_eq!(store.stats().await.unwrap().records["events"], 5);
    drop(store);
    let meta = sled::open(dir.path()).unwrap().open_tree("meta").unwrap();
    assert_eq!(
        meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
        SCHEMA_VERSION.to_be_bytes()
    );
}

#[tokio::test]
async fn a_snapshot_restores_into_a_store_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db"));
    let c = populated(&store, 1, "snap words");
    let file = dir.path().join("store.snapshot");
    let pairs = futures::executor::block_on(store.snapshot(&file)).unwrap();
    assert!(pairs >= 10, "{pairs}");
    let last = store.next_id().await.unwrap();
    // Writes go on after the snapshot; the copy is the state at its moment.
    populated(&store, 2, "later");
    assert_eq!(
        restore_snapshot(&file, &dir.path().join("copy")).unwrap(),
        pairs
    );
    let copy = open(&dir.path().join("copy"));
    assert_eq!(copy.messages(c.id, 0, 10).await.unwrap().len(), 2);
    assert!(
        copy.conversation(ConversationId(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(copy.next_id().await.unwrap() > last);
    assert!(
        futures::executor::block_on(store.snapshot(&file)).is_err(),
        "never over an existing file"
    );
    assert!(
        restore_snapshot(&file, &dir.path().join("copy")).is_err(),
        "never into an existing database"
    );
    // A cut-off copy is refused, not half-loaded silently.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.snapshot");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let err = restore_snapshot(&cut, &dir.path().join("cut")).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// What a SIGKILL would leave: the store's files as they are now (everything it acknowledged
/// is flushed), copied to `dest`.
pub(super) fn crash_image(from: &Path, dest: &Path) {
    for file in walk(from) {
        let to = dest.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
}

/// Opens a crash image and returns its bot queue.
async fn queue_after_crash(
    dir: &Path,
    name: &str,
) -> std::collections::BTreeSet<(ConversationId, u64)> {
    let image = dir.join(name);
    crash_image(&dir.join("db"), &image);
    let store = open(&image);
    store
        .bot_queue(None, 100)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A customer message stored the way the engine stores one: the record's activity changes,
/// the message is written, the bot gets an entry.
async fn ingest(store: &SledStore, id: ConversationId, seq: u64) {
    let previous = store.conversation(id).await.unwrap().unwrap();
    let mut next = previous.clone();
    next.last_seq = seq;
    next.preview = format!("text {seq}");
    apply(
        store,
        &Change {
            conversations: vec![ConversationWrite::update(previous, next)],
            messages: vec![customer_message(id, seq, "text", 100 + seq as i64)],
            bot_queue_put: vec![(id, seq)],
            ..Change::default()
        },
    )
    .unwrap();
}

fn queued_on_disk(store: &SledStore, id: ConversationId, seq: u64) -> bool {
    store
        .tree(BOT_QUEUE)
        .contains_key(crate::store::keys::pair(id.0, seq))
        .unwrap()
}

#[tokio::test]
async fn bot_queue_entries_kept_in_memory_come_back_after_a_crash() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (one, two) = (ConversationId(1), ConversationId(2));
    let options = SledOptions {
        // No checkpoint unless the test makes one.
        checkpoint_every: std::time::Duration::from_secs(3600),
        ..SledOptions::with_cache_mb(8)
    };
    let set = |items: &[(ConversationId, u64)]| items.iter().copied().collect::<BTreeSet<_>>();
    {
        let store = open_with(&db, &options);
        create(&store, &conv(1, "web", Status::Queued, 100));
        // A conversation created with its first message: written in full, entry on disk.
        let mut c2 = conv(2, "web", Status::Bot, 100);
        c2.last_seq = 1;
        apply(
            &store,
            &Change {
                conversations: vec![ConversationWrite::new(c2)],
                messages: vec![customer_message(two, 1, "hello", 101)],
                bot_queue_put: vec![(two, 1)],
                ..Change::default()
            },
        )
        .unwrap();
        assert!(queued_on_disk(&store, two, 1));
        // New messages change only activity: their entries live in memory.
        ingest(&store, one, 1).await;
        ingest(&store, one, 2).await;
        assert_eq!(
            set(&store.bot_queue(None, 100).await.unwrap()),
            set(&[(one, 1), (one, 2), (two, 1)])
        );
        assert!(!queued_on_disk(&store, one, 1) && !queued_on_disk(&store, one, 2));
        // A silent decision takes its entry away without a write to wait for.
        store.bot_done(one, 1);
        futures::executor::block_on(store.durable()).unwrap();
        assert_eq!(
            set(&store.bot_queue(None, 100).await.unwrap()),
            set(&[(one, 2), (two, 1)])
        );

        // Crash now: the marked conversation's newer customer messages are queued again. The
        // silently decided one may be among them (deciding it again changes nothing).
        let queue = queue_after_crash(dir.path(), "crash-1").await;
        assert!(queue.is_superset(&set(&[(one, 2), (two, 1)])), "{queue:?}");
        assert!(
            queue.is_subset(&set(&[(one, 1), (one, 2), (two, 1)])),
            "{queue:?}"
        );

        // The bot answers message 2 after message 3 arrived: the decision writes the record in
        // full, and the entry of message 3, which lived in memory, is written with it.
        ingest(&store, one, 3).await;
        let previous = store.conversation(one).await.unwrap().unwrap();
        let mut next = previous.clone();
        next.last_seq = 4;
        let mut answer = customer_message(one, 4, "the answer", 105);
        answer.author = crate::model::Author::Bot;
        apply(
            &store,
            &Change {
                conversations: vec![ConversationWrite::update(previous, next)],
                messages: vec![answer],
                bot_queue_remove: vec![(one, 2)],
                ..Change::default()
            },
        )
        .unwrap();
        let on_disk = record_on_disk(&store, one);
        assert_eq!(on_disk.last_seq, 4);
        assert!(!store.tree(ACTIVE).contains_key(one.to_be_bytes()).unwrap());
        assert!(queued_on_disk(&store, one, 3) && !queued_on_disk(&store, one, 2));
        // The answered message is never decided again.
        assert_eq!(
            queue_after_crash(dir.path(), "crash-2").await,
            set(&[(one, 3), (two, 1)])
        );

        // One more message, then a clean stop: the final checkpoint writes its entry.
        ingest(&store, one, 5).await;
        assert!(!queued_on_disk(&store, one, 5));
    }
    let store = open_with(&db, &options);
    assert!(queued_on_disk(&store, one, 5));
    assert_eq!(
        set(&store.bot_queue(None, 100).await.unwrap()),
        set(&[(one, 3), (one, 5), (two, 1)])
    );
    // Stats and exports see the same queue.
    assert_eq!(store.stats().await.unwrap().records["bot_queue"], 3);
}

#[tokio::test]
async fn a_message_the_bot_must_not_answer_is_never_queued_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let id = ConversationId(3);
    let store = open_with(
        &dir.path().join("db"),
        &SledOptions {
            checkpoint_every: std::time::Duration::from_secs(3600),
            ..SledOptions::with_cache_mb(8)
        },
    );
    create(&store, &conv(3, "mail", Status::Queued, 100));
    ingest(&store, id, 1).await;
    assert!(!queued_on_disk(&store, id, 1));
    // An auto-reply: stored for people, without a bot queue entry.
    let previous = store.conversation(id).await.unwrap().unwrap();
    let mut next = previous.clone();
    next.last_seq = 2;
    apply(
        &store,
        &Change {
            conversations: vec![ConversationWrite::update(previous, next)],
            messages: vec![customer_message(id, 2, "I am out of office", 102)],
            ..Change::default()
        },
    )
    .unwrap();
    let on_disk = record_on_disk(&store, id);
    assert_eq!(on_disk.last_seq, 2, "written in full");
    assert!(
        queued_on_disk(&store, id, 1),
        "the waiting entry went to disk with it"
    );
    assert_eq!(
        queue_after_crash(dir.path(), "crash")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(id, 1)]
    );
}

pub(crate) fn customer_message(conv: ConversationId, seq: u64, text: &str, at: i64) -> Message {
    Message {
        edited_at_ms: None,
        deleted_at_ms: None,
        idempotency_key: None,
        subject: None,
        payload: None,
        member: None,
        buttons: vec![],
        conversation: conv,
        seq,
        author: crate::model::Author::Customer,
        text: text.into(),
        attachments: vec![],
        external_id: None,
        delivery: None,
        verdict: None,
        created_at_ms: at,
    }
}
