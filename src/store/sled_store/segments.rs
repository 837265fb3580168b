//! The event log on disk: events stored in segments, several to a key.
//!
//! Every message adds an event (`message_received`), and an event appended under a key of its
//! own was a third of what a message cost to store: appended keys fill sled's rightmost leaf,
//! which splits every few inserts and rewrites its parent each time. The writer instead packs
//! the events of a round into segments (a JSON array, at most [`MAX_EVENTS`] events or about
//! [`MAX_BYTES`]) and writes one key per segment.
//!
//! A segment's key is at least the largest event id in it and larger than every earlier
//! segment's key. So every event with an id above `x` is in a segment whose key is above `x`:
//! replaying "events after `x`" reads from key `x + 1` on, in the order they were stored.
//! An entry of a conversation's log (`conv_events`) holds the key of its event's segment.
//!
//! Schema 1 stored one event per key (key = its id, value = the event as a JSON object) and
//! empty log entries. Both read as segments of one, so a store written by schema 1 needs no
//! rewrite.

use std::collections::BTreeMap;

use sled::Batch;

use super::space::Space;
use super::{EVENTS, TREES, decode, encode, io};
use crate::model::{ConversationId, Event};
use crate::store::{Result, keys};

/// Most events in one segment.
const MAX_EVENTS: usize = 64;
/// A segment takes no event that would carry it past this many bytes. sled keeps up to 16
/// entries in a leaf and writes a node over 128 KiB to a file of its own, so segments of
/// several events stay near 4 KiB. An event larger than this is a segment of its own, as
/// every event was before segments.
const MAX_BYTES: usize = 4096;

/// The segments of one writer round, built as its changes are staged.
#[derive(Default)]
pub(super) struct Segments {
    /// The open segment: encoded events joined with commas, without the brackets.
    open: Vec<u8>,
    ids: Vec<u64>,
    /// Its events that belong to a conversation's log.
    logged: Vec<(ConversationId, u64)>,
}

/// A closed segment, ready to be written.
pub(super) struct Closed {
    pub key: u64,
    pub value: Vec<u8>,
    /// `(conversation, event id)` log entries pointing at it.
    pub logged: Vec<(ConversationId, u64)>,
}

impl Segments {
    /// Adds an event (encoded); returns the segment it closed, if it closed one.
    pub fn push(
        &mut self,
        id: u64,
        logged: Option<ConversationId>,
        bytes: &[u8],
        last_key: &mut u64,
    ) -> Option<Closed> {
        let closed = (!self.ids.is_empty()
            && (self.ids.len() >= MAX_EVENTS || self.open.len() + bytes.len() > MAX_BYTES))
            .then(|| self.close(last_key))
            .flatten();
        if !self.open.is_empty() {
            self.open.push(b',');
        }
        self.open.extend_from_slice(bytes);
        self.ids.push(id);
        if let Some(conv) = logged {
            self.logged.push((conv, id));
        }
        closed
    }

    /// Closes the open segment, if it holds anything; `last_key` is the key of the last
    /// segment written.
    pub fn close(&mut self, last_key: &mut u64) -> Option<Closed> {
        let max = *self.ids.iter().max()?;
        let key = max.max(last_key.saturating_add(1));
        *last_key = key;
        let mut value = Vec::with_capacity(self.open.len() + 2);
        value.push(b'[');
        value.append(&mut self.open);
        value.push(b']');
        self.ids.clear();
        Some(Closed {
            key,
            value,
            logged: std::mem::take(&mut self.logged),
        })
    }
}

/// The events of a segment, in the order they were stored.
pub(super) fn decode_segment(value: &[u8]) -> Result<Vec<Event>> {
    match value.first() {
        Some(b'[') => decode(TREES[EVENTS], value),
        // Schema 1: one event per key.
        _ => Ok(vec![decode(TREES[EVENTS], value)?]),
    }
}

/// How many events a segment holds, without decoding them.
pub(super) fn count(value: &[u8]) -> Result<u64> {
    match value.first() {
        Some(b'[') => {
            let all: Vec<serde::de::IgnoredAny> = decode(TREES[EVENTS], value)?;
            Ok(all.len() as u64)
        }
        _ => Ok(1),
    }
}

/// The segment key held by a conversation log entry for event `id`.
pub(super) fn segment_of(entry: &[u8], id: u64) -> u64 {
    if entry.is_empty() {
        // Schema 1: the event's own key.
        id
    } else {
        keys::read_u64(entry)
    }
}

/// Stored events with ids above `after`, in the order they were stored, at most `limit`.
pub(super) fn after(events: Space<'_>, after: u64, limit: usize) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for kv in events.range(keys::u64_key(after.saturating_add(1))..) {
        if out.len() >= limit {
            break;
        }
        let (_, v) = kv.map_err(io)?;
        out.extend(
            decode_segment(&v)?
                .into_iter()
                .filter(|e| e.id.0 > after)
                .take(limit - out.len()),
        );
    }
    Ok(out)
}

/// The events `(segment key, id)`, in the order asked; missing ones are left out.
pub(super) fn by_id(events: Space<'_>, wanted: &[(u64, u64)]) -> Result<Vec<Event>> {
    let mut segments: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    for &(key, _) in wanted {
        if let std::collections::btree_map::Entry::Vacant(slot) = segments.entry(key) {
            slot.insert(match events.get(keys::u64_key(key)).map_err(io)? {
                Some(v) => decode_segment(&v)?,
                None => Vec::new(),
            });
        }
    }
    Ok(wanted
        .iter()
        .filter_map(|(key, id)| segments[key].iter().find(|e| e.id.0 == *id).cloned())
        .collect())
}

/// Stages the removal of events `(segment key, id)`: segments left empty go, the others are
/// written again without them.
pub(super) fn remove(events: Space<'_>, batch: &mut Batch, gone: &[(u64, u64)]) -> Result<()> {
    let mut by_segment: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(key, id) in gone {
        by_segment.entry(key).or_default().push(id);
    }
    for (key, ids) in by_segment {
        let full_key = events.key(&keys::u64_key(key));
        let Some(v) = events.get(keys::u64_key(key)).map_err(io)? else {
            continue;
        };
        let kept: Vec<Event> = decode_segment(&v)?
            .into_iter()
            .filter(|e| !ids.contains(&e.id.0))
            .collect();
        if kept.is_empty() {
            batch.remove(full_key);
        } else {
            batch.insert(full_key, encode(&kept));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(id: u64) -> Vec<u8> {
        encode(&Event {
            id: crate::model::EventId(id),
            at_ms: 0,
            conversation: Some(ConversationId(1)),
            actor: crate::model::Actor::System,
            kind: crate::model::EventKind::MessageReceived { seq: id },
        })
    }

    #[test]
    fn segments_close_by_count_and_size_with_rising_keys() {
        let mut s = Segments::default();
        let mut last = 100;
        let mut closed = Vec::new();
        // Ids out of order, and below the last key: keys still rise and cover every id.
        for id in (1..=200).rev() {
            closed.extend(s.push(
                id,
                (id % 2 == 0).then_some(ConversationId(7)),
                &encoded(id),
                &mut last,
            ));
        }
        closed.extend(s.close(&mut last));
        assert!(closed.len() > 200 / MAX_EVENTS, "{} segments", closed.len());
        let mut seen = Vec::new();
        let mut prev = 100;
        for c in &closed {
            assert!(c.key > prev);
            prev = c.key;
            assert!(c.value.len() <= MAX_BYTES + 512);
            let events = decode_segment(&c.value).unwrap();
            assert!(events.iter().all(|e| e.id.0 <= c.key));
            assert_eq!(count(&c.value).unwrap(), events.len() as u64);
            assert!(
                c.logged
                    .iter()
                    .all(|(_, id)| id % 2 == 0 && events.iter().any(|e| e.id.0 == *id))
            );
            seen.extend(events.iter().map(|e| e.id.0));
        }
        assert_eq!(seen, (1..=200).rev().collect::<Vec<_>>());
        assert!(s.close(&mut last).is_none());
    }

    #[test]
    fn schema_one_events_read_as_segments_of_one() {
        let one = encoded(5);
        assert_eq!(decode_segment(&one).unwrap()[0].id.0, 5);
        assert_eq!(count(&one).unwrap(), 1);
        assert_eq!(segment_of(&[], 5), 5);
        assert_eq!(segment_of(&keys::u64_key(9), 5), 9);
    }
}
