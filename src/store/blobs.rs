//! File bytes (attachments in and out), outside sled: content-addressed files under
//! `data/blobs/`, named by their SHA-256. A blob is durable when `put` returns (written to a
//! temporary file, fsynced, renamed into place, directory fsynced), and writing the same bytes
//! twice stores them once.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use switchboard_channel::{BlobId, Blobs, StateError};

#[derive(Clone)]
pub struct FileBlobs {
    dir: PathBuf,
}

impl FileBlobs {
    pub fn open(dir: &Path) -> std::io::Result<FileBlobs> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(FileBlobs {
            dir: dir.to_owned(),
        })
    }

    /// Where a blob lives; `None` for anything that is not a SHA-256 in lower-case hex (so a
    /// name from a URL can never point outside the directory).
    fn path(&self, id: &BlobId) -> Option<PathBuf> {
        let s = id.as_str();
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| self.dir.join(&s[..2]).join(s))
    }

    /// A stored blob opened for reading, with its size (downloads stream from it, never
    /// holding the whole file in memory); `None` when there is none by that name.
    pub async fn open_file(&self, id: &BlobId) -> std::io::Result<Option<(tokio::fs::File, u64)>> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let size = file.metadata().await?.len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size of a stored blob, `None` when there is none by that name.
    pub fn size(&self, id: &BlobId) -> Option<u64> {
        let path = self.path(id)?;
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    /// Deletes a blob (its customer was forgotten). Absent is fine.
    pub fn remove(&self, id: &BlobId) -> std::io::Result<()> {
        let Some(path) = self.path(id) else {
            return Ok(());
        };
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Puts every blob into `dest` (a new directory): hard links where the file system allows
    /// (blobs never change once written), copies otherwise. Returns the number of files.
    pub fn copy_to(&self, dest: &Path) -> std::io::Result<u64> {
        let mut n = 0;
        for shard in std::fs::read_dir(&self.dir)? {
            let shard = shard?;
            if shard.file_name() == "tmp" || !shard.file_type()?.is_dir() {
                continue;
            }
            let to = dest.join(shard.file_name());
            std::fs::create_dir_all(&to)?;
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                let target = to.join(file.file_name());
                if std::fs::hard_link(file.path(), &target).is_err() {
                    std::fs::copy(file.path(), &target)?;
                }
                n += 1;
            }
        }
        std::fs::create_dir_all(dest.join("tmp"))?;
        Ok(n)
    }

    /// The directory the blobs live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn put_blocking(&self, bytes: &[u8]) -> std::io::Result<BlobId> {
        let id = BlobId(hex::encode(Sha256::digest(bytes)));
        let path = self.path(&id).expect("a digest is a valid id");
        if path.exists() {
            return Ok(id);
        }
        let parent = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent)?;
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}.{}", id, rand::random::<u64>()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(parent)?.sync_all()?;
        Ok(id)
    }
}

fn io(e: impl std::fmt::Display) -> StateError {
    StateError(format!("blob store: {e}"))
}

#[async_trait::async_trait]
impl Blobs for FileBlobs {
    async fn put(&self, bytes: &[u8]) -> Result<BlobId, StateError> {
        let this = self.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || this.put_blocking(&bytes))
            .await
            .map_err(io)?
            .map_err(io)
    }

    async fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>, StateError> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        match tokio::fs::read(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn stores_once_by_content_and_refuses_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FileBlobs::open(dir.path()).unwrap());
        let a = blobs.put(b"hello").await.unwrap();
        let b = blobs.put(b"hello").await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.as_str(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.get(&a).await.unwrap().unwrap(), b"hello");
        assert_eq!(blobs.size(&a), Some(5));
        for odd in ["../../etc/passwd", "", "2CF24DBA", &"a".repeat(63)] {
            assert_eq!(blobs.get(&BlobId::new(odd)).await.unwrap(), None);
            assert_eq!(blobs.size(&BlobId::new(odd)), None);
        }
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}
