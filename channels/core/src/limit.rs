//! Rate limits for public endpoints: a token bucket per key (a contact, an IP address).
//!
//! A key may make `per_minute` requests in a burst, then one every `60 / per_minute` seconds;
//! a refused request learns how long to wait (`Retry-After`). Memory stays bounded: past
//! [`MAX_KEYS`] keys, idle ones (full buckets) are dropped, and if every key is busy the table
//! starts over (briefly letting more through rather than refusing everyone).
//!
//! [`Slots`] limits what a key holds at once (open event streams per session or address)
//! rather than how often it asks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys remembered at most.
pub const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` requests per key and minute; 0 means no limit.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s allowance, or says how long until one is free.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
            b.at = now;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < capacity
            });
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// Whole seconds for a `Retry-After` header, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Seconds a request refused for want of a [`Slot`] is told to wait (`Retry-After`): a held
/// one must close first.
pub const SLOT_RETRY_SECS: u64 = 5;

/// At most `max` things held at once per key (0: no limit); a [`Slot`] gives its place back
/// when dropped. Only keys holding something are remembered.
pub struct Slots<K: Eq + Hash + Clone> {
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

/// One place taken in [`Slots`], for as long as it lives.
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `key`, or `None` when it already holds `max`.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut held = self.held();
        let n = held.entry(key.clone()).or_default();
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Places held, by every key.
    pub fn total(&self) -> usize {
        self.held().values().sum()
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.slots.held();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_minutes_worth_then_one_per_interval() {
        let l = RateLimiter::per_minute(6);
        let t0 = Instant::now();
        for _ in 0..6 {
            l.check_at("a", t0).unwrap();
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!((9.9..=10.1).contains(&wait.as_secs_f64()), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 10);
        // Another key has its own allowance.
        l.check_at("b", t0).unwrap();
        // One comes back every 10 s.
        l.check_at("a", t0 + Duration::from_secs(10)).unwrap();
        assert!(l.check_at("a", t0 + Duration::from_secs(11)).is_err());
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..6 {
            l.check_at("a", later).unwrap();
        }
        assert!(l.check_at("a", later).is_err());
    }

    #[test]
    fn zero_is_unlimited_and_memory_stays_bounded() {
        let free = RateLimiter::per_minute(0);
        for _ in 0..1000 {
            free.check("x").unwrap();
        }
        let l = RateLimiter::per_minute(2);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            l.check_at(&i.to_string(), t0).unwrap();
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
    }

    #[test]
    fn slots_hold_at_most_max_per_key_and_come_back_when_dropped() {
        let slots = Slots::new(2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert!(slots.take("a").is_none());
        let _b = slots.take("b").unwrap();
        assert_eq!(slots.total(), 3);
        drop(a1);
        let _a3 = slots.take("a").unwrap();
        assert!(slots.take("a").is_none());
        drop(_b);
        // A key holding nothing is forgotten.
        assert_eq!(slots.held().len(), 1);
        let free = Slots::new(0);
        let all: Vec<_> = (0..100).map(|_| free.take(1).unwrap()).collect();
        assert_eq!(free.total(), 100);
        drop(all);
        assert!(free.held().is_empty());
    }
}
