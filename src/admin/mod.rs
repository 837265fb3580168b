//! Operations on a whole installation, shared by the admin API and the `switchboard` admin
//! commands: forgetting a customer, consistent backups, export and import.

pub mod transfer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bot::live::LiveKb;
use crate::engine::{Engine, EngineError};
use crate::model::{AgentId, ContactId};
use crate::store::Store;
use crate::store::blobs::FileBlobs;

/// What forgetting a contact removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ForgetReport {
    /// The contact and any contacts merged into it; they remain as empty tombstones.
    pub contacts: Vec<u64>,
    pub conversations: u64,
    pub messages: u64,
    pub notes: u64,
    /// Attachment files deleted (files other customers also sent stay).
    pub files: u64,
    /// Knowledge-base proposals taken from their conversations, deleted.
    pub proposals: u64,
}

/// Forgets a contact everywhere: the store, the channels' own copies, the bot's proposals and
/// the attachment files. The store's files are rewritten at the next start (see
/// [`Store::erase_contact`]).
pub async fn forget_contact(
    engine: &Engine,
    kb: &LiveKb,
    blobs: &FileBlobs,
    contact: ContactId,
    by: Option<AgentId>,
) -> Result<ForgetReport, EngineError> {
    let erased = engine.forget_contact(contact, by).await?;
    let ids: Vec<u64> = erased.conversations.iter().map(|c| c.0).collect();
    let proposals = kb
        .forget_conversations(&ids)
        .await
        .map_err(|e| EngineError::Invalid(format!("knowledge base: {e}")))?;
    let mut files = 0;
    for blob in &erased.orphan_blobs {
        match blobs.remove(blob) {
            Ok(()) => files += 1,
            Err(e) => tracing::warn!(error = %e, "could not delete a forgotten contact's file"),
        }
    }
    Ok(ForgetReport {
        contacts: erased.contacts.iter().map(|c| c.0).collect(),
        conversations: erased.conversations.len() as u64,
        messages: erased.messages,
        notes: erased.notes,
        files,
        proposals: proposals as u64,
    })
}

/// The store's file in a backup directory.
pub const SNAPSHOT_FILE: &str = "store.snapshot";

/// What a backup wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupReport {
    /// The backup directory: `store.snapshot` and `blobs/`; `switchboard restore` makes a data
    /// directory of it.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Key-value pairs in the snapshot.
    pub pairs: u64,
    /// Attachment files.
    pub files: u64,
    pub millis: u64,
}

/// Writes a consistent copy of the store (`dest/store.snapshot`) and the attachment files
/// (`dest/blobs`) into `dest` (absent or empty).
pub async fn backup(
    store: &dyn Store,
    blobs: &FileBlobs,
    dest: &Path,
) -> Result<BackupReport, BackupError> {
    let started = std::time::Instant::now();
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(|e| dest_error(dest, e))?
            .next()
            .is_some()
    {
        return Err(dest_error(dest, "exists and is not empty"));
    }
    std::fs::create_dir_all(dest).map_err(|e| dest_error(dest, e))?;
    // The database first: every file it refers to was written before (blobs are durable
    // before the message that names them), so copying the files afterwards covers them all.
    let maintenance = store.maintenance().ok_or(BackupError::NotEmbedded)?;
    let pairs = maintenance.snapshot(&dest.join(SNAPSHOT_FILE)).await?;
    let (from, to) = (blobs.clone(), dest.join("blobs"));
    let files = tokio::task::spawn_blocking(move || from.copy_to(&to))
        .await
        .map_err(|e| BackupError::Files(e.to_string()))?
        .map_err(|e| BackupError::Files(e.to_string()))?;
    Ok(BackupReport {
        path: dest.to_owned(),
        pairs,
        files,
        millis: started.elapsed().as_millis() as u64,
    })
}

fn dest_error(path: &Path, reason: impl std::fmt::Display) -> BackupError {
    BackupError::Dest {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Makes `data_dir` (without a database yet) the data directory of backup `from`.
pub fn restore(from: &Path, data_dir: &Path) -> Result<u64, BackupError> {
    let db = data_dir.join("db");
    let pairs = crate::store::sled_store::restore_snapshot(&from.join(SNAPSHOT_FILE), &db)?;
    let files = from.join("blobs");
    if files.exists() {
        FileBlobs::open(&files)
            .and_then(|b| b.copy_to(&data_dir.join("blobs")))
            .map_err(|e| BackupError::Files(e.to_string()))?;
    }
    Ok(pairs)
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup destination {}: {reason}", .path.display())]
    Dest { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("copying attachment files: {0}")]
    Files(String),
    /// The store is a shared database, backed up with its own tools.
    #[error("this store is not embedded in the daemon; back it up with its own tools")]
    NotEmbedded,
}
