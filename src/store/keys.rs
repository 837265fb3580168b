//! Byte layouts of keys. Big-endian numbers so that byte order is numeric order.
//!
//! Conversation index keys (tree `conv_idx`) all end in `[status][updated_ms][id]`, so each
//! index can be walked per status in update order and several statuses merged:
//! - `S [status] [updated] [id]`                     every conversation
//! - `C [len] channel [status] [updated] [id]`       by channel
//! - `G [agent] [status] [updated] [id]`             by assignee (also while snoozed)
//! - `L [len] label [status] [updated] [id]`         by label, one key per label

use crate::model::{AgentId, Conversation, ConversationId, Status};

/// Length of the `[updated][id]` suffix of index keys.
pub const SORT_SUFFIX: usize = 16;

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// `len-prefixed a` + `len-prefixed b`: two strings without ambiguity.
pub fn two_strings(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 4);
    push_str(&mut k, a);
    push_str(&mut k, b);
    k
}

fn push_str(k: &mut Vec<u8>, s: &str) {
    k.extend_from_slice(&(s.len() as u16).to_be_bytes());
    k.extend_from_slice(s.as_bytes());
}

/// Which index a list query walks, and with which value.
#[derive(Debug, Clone)]
pub enum IndexKind<'a> {
    All,
    Channel(&'a str),
    Assignee(AgentId),
    Label(&'a str),
}

/// The prefix of one index, before `[status]`.
pub fn index_prefix(kind: &IndexKind<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    match kind {
        IndexKind::All => k.push(b'S'),
        IndexKind::Channel(c) => {
            k.push(b'C');
            push_str(&mut k, c);
        }
        IndexKind::Assignee(a) => {
            k.push(b'G');
            k.extend_from_slice(&a.to_be_bytes());
        }
        IndexKind::Label(l) => {
            k.push(b'L');
            push_str(&mut k, l);
        }
    }
    k
}

pub fn status_prefix(kind: &IndexKind<'_>, status: Status) -> Vec<u8> {
    let mut k = index_prefix(kind);
    k.push(status.code());
    k
}

pub fn sort_suffix(updated_ms: i64, id: ConversationId) -> [u8; SORT_SUFFIX] {
    pair(updated_ms.max(0) as u64, id.0)
}

/// Every index key a conversation record owns.
pub fn index_keys(c: &Conversation) -> Vec<Vec<u8>> {
    let suffix = sort_suffix(c.updated_at_ms, c.id);
    let mut kinds = vec![IndexKind::All, IndexKind::Channel(c.channel.as_str())];
    if let Some(a) = c.assignee {
        kinds.push(IndexKind::Assignee(a));
    }
    kinds.extend(c.labels.iter().map(|l| IndexKind::Label(l)));
    kinds
        .iter()
        .map(|kind| {
            let mut k = status_prefix(kind, c.status);
            k.extend_from_slice(&suffix);
            k
        })
        .collect()
}

/// `(updated_ms, id)` from the tail of an index key.
pub fn parse_suffix(key: &[u8]) -> (i64, ConversationId) {
    let tail = &key[key.len() - SORT_SUFFIX..];
    (read_u64(tail) as i64, ConversationId(read_u64(&tail[8..])))
}
