//! Byte layouts of keys. Big-endian numbers so that byte order is numeric order; strings
//! length-prefixed so that two of them never run together.

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

/// The two strings of a [`two_strings`] key.
pub fn read_two_strings(k: &[u8]) -> Option<(String, String)> {
    let (a, rest) = read_str(k)?;
    let (b, rest) = read_str(rest)?;
    rest.is_empty().then_some((a, b))
}

fn read_str(k: &[u8]) -> Option<(String, &[u8])> {
    let len = u16::from_be_bytes([*k.first()?, *k.get(1)?]) as usize;
    let s = k.get(2..2 + len)?;
    Some((String::from_utf8(s.to_vec()).ok()?, &k[2 + len..]))
}

/// `(conversation, seq)` from a `pair` key.
pub fn conversation_seq(key: &[u8]) -> (crate::model::ConversationId, u64) {
    (
        crate::model::ConversationId(read_u64(key)),
        read_u64(&key[8..]),
    )
}
