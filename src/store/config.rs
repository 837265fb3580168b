//! `[store]`: where and how state is kept, and [`open`], the one place a backend is chosen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::StoreError;
use super::sled_store::{SledOptions, SledStore};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sled's page cache in MiB. The daemon's memory follows it; sled's own default is 1 GiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Decoded conversations kept in memory for the hot path.
    #[serde(default = "default_cached_conversations")]
    pub cached_conversations: usize,
    /// Under load, how long the store waits for more changes before it flushes (group
    /// commit). Fewer, fuller flushes; a lone change at low load is never delayed.
    #[serde(default = "default_commit_linger")]
    pub commit_linger_us: u64,
    /// Free disk space (MiB) kept in reserve under `data_dir`: below it, new customer
    /// messages, replies and notes are refused with 503 until space is freed. 0 turns it off.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// Where `POST /admin/backup` (and `switchboard backup` while the daemon runs) may write;
    /// default `<data_dir>/backups`.
    #[serde(default)]
    pub backups_dir: Option<PathBuf>,
}

/// sled's page cache unless configured, MiB. sled reads what is not cached through the kernel's
/// page cache; the daemon's resident memory follows this (`bench inbox`: 241 MB at 16 MiB,
/// 271 MB at 64 MiB on 1,000,000 messages, with no measured change in list or ingest speed).
pub const DEFAULT_CACHE_MB: u64 = 16;

fn default_cache_mb() -> u64 {
    DEFAULT_CACHE_MB
}
fn default_cached_conversations() -> usize {
    20_000
}
fn default_commit_linger() -> u64 {
    250
}
fn default_min_free_mb() -> u64 {
    128
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mb: default_cache_mb(),
            cached_conversations: default_cached_conversations(),
            commit_linger_us: default_commit_linger(),
            min_free_mb: default_min_free_mb(),
            backups_dir: None,
        }
    }
}

/// Opens the store of `data_dir` as `config` says (creating the directory). Every command that
/// reads or writes the daemon's state opens it here.
pub fn open(data_dir: &Path, config: &StoreConfig) -> Result<Arc<dyn super::Store>, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Io(format!("creating data dir {}: {e}", data_dir.display())))?;
    let db = data_dir.join("db");
    let store = SledStore::open(
        &db,
        &SledOptions {
            cached_conversations: config.cached_conversations,
            commit_linger: Duration::from_micros(config.commit_linger_us),
            min_free_bytes: config.min_free_mb * 1024 * 1024,
            ..SledOptions::with_cache_mb(config.cache_mb)
        },
    )?;
    Ok(Arc::new(store))
}
