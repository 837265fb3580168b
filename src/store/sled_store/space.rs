//! All records live in one sled tree, each kind under its own one-byte prefix. A [`Space`] is
//! the view of one kind: it reads like a tree of its own.
//!
//! Why one tree: a change touches many kinds of record at once (message, dedupe key, event,
//! conversation...) and must be applied atomically. Across trees that takes a sled
//! transaction, whose every insert first reads the old value and which stages writes in
//! per-tree maps. Within one tree, sled's `apply_batch` is atomic (the batch is sealed in the
//! log as one unit) and writes directly, and the single writer needs no transaction closure.

use std::ops::{Bound, RangeBounds};

use sled::{IVec, Tree};

/// `(key without prefix, value)`.
pub type Pair = sled::Result<(IVec, IVec)>;

#[derive(Clone, Copy)]
pub struct Space<'a> {
    pub tree: &'a Tree,
    pub prefix: u8,
}

impl<'a> Space<'a> {
    /// The full key of `key` in this space.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.prefix);
        k.extend_from_slice(key);
        k
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        self.tree.get(self.key(key.as_ref()))
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> sled::Result<bool> {
        self.tree.contains_key(self.key(key.as_ref()))
    }

    fn strip(pair: Pair) -> Pair {
        pair.map(|(k, v)| (IVec::from(&k[1..]), v))
    }

    /// Keys (without the prefix) starting with `prefix`, in order.
    pub fn keys(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = sled::Result<IVec>> + 'a {
        self.scan_prefix(prefix).map(|p| p.map(|(k, _)| k))
    }

    /// Pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = Pair> + 'a {
        self.tree
            .scan_prefix(self.key(prefix.as_ref()))
            .map(Self::strip)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Pair> + 'a {
        self.scan_prefix([])
    }

    /// Pairs with keys in `range` (keys without the prefix).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = Pair> + 'a {
        let start = match range.start_bound() {
            Bound::Included(k) => Bound::Included(self.key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(self.key(k.as_ref())),
            Bound::Unbounded => Bound::Included(vec![self.prefix]),
        };
        let end = match range.end_bound() {
            Bound::Included(k) => Bound::Included(self.key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(self.key(k.as_ref())),
            // Every key of this space is below the next prefix byte.
            Bound::Unbounded if self.prefix < u8::MAX => Bound::Excluded(vec![self.prefix + 1]),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.tree.range::<Vec<u8>, _>((start, end)).map(Self::strip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let a = Space {
            tree: &db,
            prefix: b'a',
        };
        let b = Space {
            tree: &db,
            prefix: b'b',
        };
        for (s, n) in [(a, 3u8), (b, 2)] {
            for i in 0..n {
                db.insert(s.key(&[i]), vec![i]).unwrap();
            }
        }
        let keys = |it: &mut dyn Iterator<Item = Pair>| -> Vec<Vec<u8>> {
            it.map(|p| p.unwrap().0.to_vec()).collect()
        };
        assert_eq!(keys(&mut a.iter()), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(keys(&mut b.iter().rev()), vec![vec![1], vec![0]]);
        assert_eq!(keys(&mut a.range(vec![1]..)), vec![vec![1], vec![2]]);
        assert_eq!(keys(&mut a.range(..vec![1])), vec![vec![0]]);
        assert_eq!(a.get([2]).unwrap().as_deref(), Some(&[2u8][..]));
        assert!(!b.contains_key([2]).unwrap());
    }
}
