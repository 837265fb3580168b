//! A [`ChannelState`] in memory: for tests, and for a store that keeps nothing on disk.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ChannelState, KeyValue, StateError};

/// A [`ChannelState`] in memory; `sync` has nothing to wait for.
#[derive(Default)]
pub struct MemoryState {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    ids: AtomicU64,
}

impl MemoryState {
    /// Every pair, in key order.
    pub fn pairs(&self) -> Vec<KeyValue> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn insert(&self, key: &[u8], value: &[u8]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key.to_vec(), value.to_vec());
    }
}

#[async_trait::async_trait]
impl ChannelState for MemoryState {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned())
    }
    async fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> Result<(), StateError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in pairs {
            map.insert(k.to_vec(), v.to_vec());
        }
        Ok(())
    }
    async fn remove_all(&self, keys: &[&[u8]]) -> Result<(), StateError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(*k);
        }
        Ok(())
    }
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StateError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn next_id(&self) -> Result<u64, StateError> {
        Ok(self.ids.fetch_add(1, Ordering::SeqCst) + 1)
    }
    async fn sync(&self) -> Result<(), StateError> {
        Ok(())
    }
}
