//! Read caches in front of sled, kept coherent by the single writer.
//!
//! Every inbound message looks up its thread, its sender's identity and its conversation.
//! Served from sled those reads cost more than the writes (materialising pages that the writer
//! keeps changing, and waiting on sled's global lock while a batch is applied). Here they are
//! hash lookups.
//!
//! Coherence: the writer inserts every record it commits, overwriting. A reader that missed and
//! read sled inserts only if the entry is still absent and no writer replaced or evicted
//! anything since it started reading (a per-cache epoch, checked under the same lock as the
//! insert). A stale entry can therefore never replace a newer one. Caches are bounded; when one
//! is full it is cleared (the working set refills it in a moment).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

pub struct Cache<K, V> {
    inner: RwLock<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    map: HashMap<K, V>,
    /// Bumped by every writer insert and every clear.
    epoch: u64,
}

/// What a reader must present to fill a missed entry.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Cache {
            inner: RwLock::new(Inner {
                map: HashMap::new(),
                epoch: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// The cached value, or a ticket to fill it after reading the source.
    pub fn get(&self, key: &K) -> Result<V, Ticket> {
        let inner = self.inner.read().expect("cache lock");
        match inner.map.get(key) {
            Some(v) => Ok(v.clone()),
            None => Err(Ticket(inner.epoch)),
        }
    }

    /// A reader's fill: kept only if no writer touched the cache since the ticket was issued.
    pub fn fill(&self, ticket: Ticket, key: K, value: V) {
        let mut inner = self.inner.write().expect("cache lock");
        if inner.epoch == ticket.0 && inner.map.len() < self.capacity {
            inner.map.entry(key).or_insert(value);
        }
    }

    /// The writer's insert of a committed value that replaces an older one.
    pub fn put(&self, key: K, value: V) {
        self.insert(key, value, true);
    }

    /// The writer's insert of a value no reader can have seen differently: a new key, or an
    /// immutable mapping. Fills in flight stay valid.
    pub fn put_new(&self, key: K, value: V) {
        self.insert(key, value, false);
    }

    fn insert(&self, key: K, value: V, replaces: bool) {
        let mut inner = self.inner.write().expect("cache lock");
        if replaces {
            inner.epoch += 1;
        }
        if inner.map.len() >= self.capacity {
            inner.epoch += 1;
            inner.map.clear();
        }
        inner.map.insert(key, value);
    }

    /// Forgets one entry (the writer found it stale).
    pub fn forget(&self, key: &K) {
        let mut inner = self.inner.write().expect("cache lock");
        inner.epoch += 1;
        inner.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_after_a_write_is_dropped() {
        let c: Cache<u32, &str> = Cache::new(10);
        let Err(ticket) = c.get(&1) else {
            panic!("empty cache hit")
        };
        // The writer commits a newer value while the reader is reading the old one.
        c.put(1, "new");
        c.fill(ticket, 1, "old");
        assert_eq!(c.get(&1).ok(), Some("new"));
        // Even when the newer value was evicted in between.
        let Err(ticket) = c.get(&2) else { panic!() };
        c.put(2, "new");
        c.forget(&2);
        c.fill(ticket, 2, "old");
        assert!(c.get(&2).is_err());
    }

    #[test]
    fn fills_without_interference_are_kept_and_capacity_is_bounded() {
        let c: Cache<u32, u32> = Cache::new(2);
        for k in 0..5 {
            let Err(t) = c.get(&k) else { panic!() };
            c.fill(t, k, k * 10);
        }
        assert_eq!(c.get(&0).ok(), Some(0));
        assert!(c.get(&4).is_err(), "full: further fills are not kept");
        c.put(9, 90);
        assert_eq!(
            c.get(&9).ok(),
            Some(90),
            "a writer insert clears a full cache"
        );
        assert!(c.get(&0).is_err());
    }
}
