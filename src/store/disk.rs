//! Free space under the data directory, checked before the disk is full.
//!
//! sled turns a failed write (`ENOSPC`) into an error that sticks: every later operation fails
//! until the database is opened again, even once space is freed (measured with sled 0.34.7 on
//! a full tmpfs). So the store must not get there. Below a reserve (`[store] min_free_mb`) new
//! customer messages, replies and notes are refused with 503, and the reserve is left for the
//! bookkeeping already under way (deliveries recorded, the bot's answers to messages already
//! accepted). When space comes back, so does service, with nothing to restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// How long a reading is trusted: one `statvfs` per this interval at most.
const RECHECK_MS: i64 = 250;

/// Free space against the reserve, as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer can still use on the data directory's filesystem.
    pub free_bytes: u64,
    /// Below this much free space new messages are refused.
    pub reserve_bytes: u64,
}

impl DiskSpace {
    /// Space without a limit (stores that are not on a disk).
    pub const UNLIMITED: DiskSpace = DiskSpace {
        free_bytes: u64::MAX,
        reserve_bytes: 0,
    };

    pub fn low(&self) -> bool {
        self.free_bytes < self.reserve_bytes
    }

    /// Why new messages are refused, for errors and logs.
    pub fn explain(&self) -> String {
        format!(
            "the disk is almost full ({:.1} MB free, {:.1} MB kept in reserve); try again later",
            self.free_bytes as f64 / 1e6,
            self.reserve_bytes as f64 / 1e6
        )
    }
}

/// Watches one directory's filesystem.
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    free: AtomicU64,
    checked_ms: AtomicI64,
    low: AtomicBool,
}

impl DiskGuard {
    pub fn new(path: &Path, reserve_bytes: u64) -> Self {
        let guard = DiskGuard {
            path: path.to_owned(),
            reserve: reserve_bytes,
            free: AtomicU64::new(u64::MAX),
            checked_ms: AtomicI64::new(i64::MIN),
            low: AtomicBool::new(false),
        };
        guard.space();
        guard
    }

    /// The current reading, refreshed when older than 250 ms.
    pub fn space(&self) -> DiskSpace {
        let now = switchboard_channel::now_ms();
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(checked) >= RECHECK_MS
            && self
                .checked_ms
                .compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            match free_bytes(&self.path) {
                Ok(free) => self.free.store(free, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the free disk space")
                }
            }
        }
        let space = DiskSpace {
            free_bytes: self.free.load(Ordering::Relaxed),
            reserve_bytes: self.reserve,
        };
        let low = space.low();
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    free_mb = space.free_bytes / 1_000_000,
                    reserve_mb = space.reserve_bytes / 1_000_000,
                    "disk almost full: refusing new messages until space is freed"
                );
            } else {
                tracing::warn!(
                    free_mb = space.free_bytes / 1_000_000,
                    "disk space is back: accepting messages again"
                );
            }
        }
        space
    }
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    sizes(path).map(|(free, _)| free)
}

/// The whole size of the file system holding `path`, bytes.
pub fn total_bytes(path: &Path) -> std::io::Result<u64> {
    sizes(path).map(|(_, total)| total)
}

/// Bytes available to us, and the file system's size.
fn sizes(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `s` is written by statvfs on success.
    let r = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_filesystem_and_compares_with_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskGuard::new(dir.path(), 1).space();
        assert!(
            roomy.free_bytes > 1 && roomy.free_bytes < u64::MAX,
            "{roomy:?}"
        );
        assert!(!roomy.low());
        let greedy = DiskGuard::new(dir.path(), u64::MAX).space();
        assert!(greedy.low());
        assert!(greedy.explain().contains("MB free"), "{}", greedy.explain());
        assert!(!DiskSpace::UNLIMITED.low());
    }
}
