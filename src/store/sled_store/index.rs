//! The conversation index, held in memory and derived from the `conversations` tree.
//!
//! Inbox lists are served from sorted runs keyed by `(index, value, status)` holding
//! `(updated_at, id)`: by status alone, by channel, by assignee and by label. A list walks the
//! runs of the wanted statuses and merges them, so no query scans all conversations.
//!
//! Why in memory: the conversations tree is the source of truth, and every customer message
//! moves its conversation's `updated_at`. Kept on disk, that was four extra sled writes per
//! message (a remove and an insert in two indexes), more than the message itself. In memory it
//! costs nothing to keep current and is rebuilt from the records when the store opens
//! (100,000 conversations: well under a second).

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use crate::model::{AgentId, Conversation, ConversationId, Status};
use crate::store::{Cursor, Order};

/// Which index a list walks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKind {
    All,
    Channel(String),
    Assignee(AgentId),
    Label(String),
}

/// `(updated_at_ms, id)` of the conversations in one `(index, status)` run.
type Run = BTreeSet<(i64, ConversationId)>;
type RunIter<'a> = std::iter::Peekable<Box<dyn Iterator<Item = &'a (i64, ConversationId)> + 'a>>;

#[derive(Default)]
pub struct ConvIndex {
    runs: RwLock<HashMap<(IndexKind, Status), Run>>,
}

/// The `(index, status)` runs a conversation belongs to, and its place in them.
fn entries(c: &Conversation) -> Vec<(IndexKind, Status)> {
    let mut kinds = vec![IndexKind::All, IndexKind::Channel(c.channel.0.clone())];
    if let Some(a) = c.assignee {
        kinds.push(IndexKind::Assignee(a));
    }
    kinds.extend(c.labels.iter().map(|l| IndexKind::Label(l.clone())));
    kinds.into_iter().map(|k| (k, c.status)).collect()
}

fn remove_from(runs: &mut HashMap<(IndexKind, Status), Run>, old: &Conversation) {
    let sort = (old.updated_at_ms, old.id);
    for key in entries(old) {
        if let Some(run) = runs.get_mut(&key) {
            run.remove(&sort);
            if run.is_empty() {
                runs.remove(&key);
            }
        }
    }
}

impl ConvIndex {
    /// Moves a conversation from its old place (if any) to its new one.
    pub fn update(&self, old: Option<&Conversation>, new: &Conversation) {
        let mut runs = self.runs.write().expect("index lock");
        if let Some(old) = old {
            remove_from(&mut runs, old);
        }
        let sort = (new.updated_at_ms, new.id);
        for key in entries(new) {
            runs.entry(key).or_default().insert(sort);
        }
    }

    /// Drops a conversation (erased).
    pub fn remove(&self, old: &Conversation) {
        remove_from(&mut self.runs.write().expect("index lock"), old);
    }

    /// Conversations per status, in [`Status::ALL`] order.
    pub fn counts(&self) -> [u64; 5] {
        let runs = self.runs.read().expect("index lock");
        Status::ALL.map(|s| runs.get(&(IndexKind::All, s)).map_or(0, |r| r.len() as u64))
    }

    /// Visits ids of `kind` in the given statuses, merged in `order`, after `after`, until
    /// `visit` returns false. `visit` runs under the index's read lock: keep it short.
    pub fn walk<E>(
        &self,
        kind: &IndexKind,
        statuses: &[Status],
        order: Order,
        after: Option<Cursor>,
        mut visit: impl FnMut(ConversationId) -> Result<bool, E>,
    ) -> Result<(), E> {
        let runs = self.runs.read().expect("index lock");
        let bound = after.map(|c| (c.updated_ms, c.id));
        let desc = order == Order::NewestFirst;
        let mut iters: Vec<RunIter<'_>> = statuses
            .iter()
            .filter_map(|s| runs.get(&(kind.clone(), *s)))
            .map(|run| {
                let it: Box<dyn Iterator<Item = &(i64, ConversationId)>> = match (desc, bound) {
                    (true, Some(b)) => Box::new(run.range(..b).rev()),
                    (true, None) => Box::new(run.iter().rev()),
                    (false, Some(b)) => Box::new(
                        run.range((std::ops::Bound::Excluded(b), std::ops::Bound::Unbounded)),
                    ),
                    (false, None) => Box::new(run.iter()),
                };
                it.peekable()
            })
            .collect();
        loop {
            let mut best: Option<(usize, (i64, ConversationId))> = None;
            for (i, it) in iters.iter_mut().enumerate() {
                if let Some(&&sort) = it.peek() {
                    let better = best.is_none_or(|(_, b)| if desc { sort > b } else { sort < b });
                    if better {
                        best = Some((i, sort));
                    }
                }
            }
            let Some((i, (_, id))) = best else {
                return Ok(());
            };
            iters[i].next();
            if !visit(id)? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_channel::{ChannelId, ExternalThread};

    use super::*;
    use crate::model::ContactId;

    fn conv(id: u64, status: Status, updated: i64) -> Conversation {
        let mut c = Conversation::new(
            ConversationId(id),
            ContactId(1),
            ChannelId::new("web"),
            ExternalThread::new("t"),
            updated,
        );
        c.status = status;
        c
    }

    fn list(ix: &ConvIndex, statuses: &[Status], order: Order, after: Option<Cursor>) -> Vec<u64> {
        let mut out = Vec::new();
        ix.walk::<()>(&IndexKind::All, statuses, order, after, |id| {
            out.push(id.0);
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn merges_statuses_in_order_and_resumes_after_a_cursor() {
        let ix = ConvIndex::default();
        ix.update(None, &conv(1, Status::Bot, 10));
        ix.update(None, &conv(2, Status::Queued, 20));
        ix.update(None, &conv(3, Status::Bot, 30));
        ix.update(None, &conv(4, Status::Queued, 20));
        assert_eq!(
            list(&ix, &Status::ALL, Order::NewestFirst, None),
            [3, 4, 2, 1]
        );
        assert_eq!(
            list(&ix, &Status::ALL, Order::OldestFirst, None),
            [1, 2, 4, 3]
        );
        let cursor = Cursor {
            updated_ms: 20,
            id: ConversationId(4),
        };
        assert_eq!(
            list(&ix, &Status::ALL, Order::NewestFirst, Some(cursor)),
            [2, 1]
        );
        assert_eq!(
            list(&ix, &Status::ALL, Order::OldestFirst, Some(cursor)),
            [3]
        );
        assert_eq!(
            list(&ix, &[Status::Queued], Order::NewestFirst, None),
            [4, 2]
        );
        assert_eq!(ix.counts(), [2, 2, 0, 0, 0]);
    }

    #[test]
    fn updates_move_entries_and_drop_empty_runs() {
        let ix = ConvIndex::default();
        let a = conv(1, Status::Bot, 10);
        ix.update(None, &a);
        let mut b = a.clone();
        b.status = Status::Queued;
        b.updated_at_ms = 50;
        b.labels.insert("vip".into());
        ix.update(Some(&a), &b);
        assert_eq!(
            list(&ix, &[Status::Bot], Order::NewestFirst, None),
            Vec::<u64>::new()
        );
        assert_eq!(ix.counts(), [0, 1, 0, 0, 0]);
        let runs = ix.runs.read().unwrap();
        assert_eq!(
            runs.len(),
            3,
            "all, channel and label runs of the queued status only"
        );
    }
}
