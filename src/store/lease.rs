//! Leases on queued work: who is doing a piece of work now, and until when.
//!
//! The work queues (the bot's turns on customer messages, each conversation's outbox head)
//! are durable in the store; a lease only says which worker holds an item for the moment.
//! A worker claims an item with a lease, does the work, and acknowledges it in the commit
//! that records the result (the bot's decision removes its queue entry; a delivery's outcome
//! moves the outbox). A worker that dies holds nothing once its lease runs out, and the item
//! can be claimed again.
//!
//! An embedded store serves one process, so its leases live in memory ([`Leases`]): a crash
//! loses them together with the worker that held them, which is the same as their running
//! out. A shared database keeps them in its rows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::ConversationId;

/// One worker (one engine in one process): random, so two daemons never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder(pub u64);

impl Holder {
    pub fn random() -> Holder {
        Holder(rand::random())
    }
}

/// A claimable item of a work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// The bot's turn on customer message `seq`.
    Bot(ConversationId, u64),
    /// The head of a conversation's outbox (only the head is ever sent, so order holds).
    Outbox(ConversationId),
}

/// Leases kept in memory, for the embedded stores.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<Work, (Holder, Instant)>>,
}

/// Leases kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 4096;

impl Leases {
    /// Takes `work` for `holder` until `lease` from now: when nobody holds it, the holder
    /// already does (the lease is renewed), or the last holder's lease ran out.
    pub fn take(&self, work: Work, holder: Holder, lease: Duration) -> bool {
        let now = Instant::now();
        let mut held = self.held.lock().expect("lease lock");
        if held.len() > SWEEP_ABOVE {
            held.retain(|_, (_, until)| *until > now);
        }
        match held.get(&work) {
            Some(&(other, until)) if other != holder && until > now => false,
            _ => {
                held.insert(work, (holder, now + lease));
                true
            }
        }
    }

    /// The work is done (acknowledged) or given up: anyone may take it at once.
    pub fn release(&self, work: Work) {
        self.held.lock().expect("lease lock").remove(&work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_the_lease_runs_out() {
        let leases = Leases::default();
        let (a, b) = (Holder(1), Holder(2));
        let w = Work::Bot(ConversationId(7), 3);
        let long = Duration::from_secs(60);
        assert!(leases.take(w, a, long));
        assert!(!leases.take(w, b, long), "held by a");
        assert!(leases.take(w, a, long), "a renews");
        assert!(
            leases.take(Work::Bot(ConversationId(7), 4), b, long),
            "another item is free"
        );
        leases.release(w);
        assert!(leases.take(w, b, Duration::ZERO), "released");
        assert!(leases.take(w, a, long), "b's lease ran out at once");
    }
}
