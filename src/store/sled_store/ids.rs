//! Ids for every kind of record, from one counter that never goes back.
//!
//! sled's `generate_id` takes sled's global lock (shared), and that lock queues behind the
//! writer's batches, which take it exclusively and wait for the flusher's fsync first. Every
//! message needs an id for its event, so request handlers stalled on it for most of each
//! round. Here an id is an atomic increment: the counter reserves ids in blocks of
//! [`BLOCK`], and a block is durable in `meta` before any id in it is handed out, so a
//! restart (or a crash) starts above everything handed out before.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::Tree;

use super::io;
use super::keys;
use crate::store::Result;

/// Meta key: the counter's durable high-water mark; ids below it may have been handed out.
pub(super) const ID_RESERVED: &str = "id_reserved";
/// Meta key: every id handed out from now on is above this (raised by imports and copies,
/// whose ids come from another database).
pub(super) const ID_FLOOR: &str = "id_floor";
/// Ids reserved per durable write.
const BLOCK: u64 = 100_000;

pub(super) struct Ids {
    db: sled::Db,
    meta: Tree,
    counter: AtomicU64,
    /// The counter stays below this without another reservation.
    reserved: AtomicU64,
    floor: AtomicU64,
    reserving: Mutex<()>,
}

fn read(meta: &Tree, key: &str) -> Result<u64> {
    Ok(meta
        .get(key)
        .map_err(io)?
        .filter(|v| v.len() == 8)
        .map_or(0, |v| keys::read_u64(&v)))
}

/// Where the counter starts: above every id handed out before. A store that never reserved
/// a block took its ids from sled's own generator, whose next value is above them.
fn start(db: &sled::Db, meta: &Tree) -> Result<u64> {
    match read(meta, ID_RESERVED)? {
        0 => db.generate_id().map_err(io),
        reserved => Ok(reserved),
    }
}

/// The first id a database hands out next, for a copy of it (its floor).
pub(super) fn next_unused(db: &sled::Db, meta: &Tree) -> Result<u64> {
    Ok(start(db, meta)? + 1 + read(meta, ID_FLOOR)?)
}

impl Ids {
    pub fn open(db: &sled::Db, meta: &Tree) -> Result<Ids> {
        let counter = start(db, meta)?;
        Ok(Ids {
            db: db.clone(),
            meta: meta.clone(),
            counter: AtomicU64::new(counter),
            // The first id reserves its block.
            reserved: AtomicU64::new(counter),
            floor: AtomicU64::new(read(meta, ID_FLOOR)?),
            reserving: Mutex::new(()),
        })
    }

    /// A new id (from 1, so that 0 can mean "none" in cursors).
    pub fn next(&self) -> Result<u64> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        if n >= self.reserved.load(Ordering::SeqCst) {
            self.reserve(n)?;
        }
        Ok(n + 1 + self.floor.load(Ordering::SeqCst))
    }

    /// Makes a block covering `n` durable. Callers past the block wait for the one writing.
    fn reserve(&self, n: u64) -> Result<()> {
        let _one = self.reserving.lock().expect("id reservation lock");
        if n < self.reserved.load(Ordering::SeqCst) {
            return Ok(());
        }
        let upto = n + BLOCK;
        self.meta
            .insert(ID_RESERVED, &upto.to_be_bytes())
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        self.reserved.store(upto, Ordering::SeqCst);
        Ok(())
    }

    /// The next id this store hands out (every id handed out is below it).
    pub fn peek(&self) -> u64 {
        self.counter.load(Ordering::SeqCst) + 1 + self.floor.load(Ordering::SeqCst)
    }

    /// Ids from now on are above `floor` (records imported with their ids).
    pub fn raise_floor(&self, floor: u64) -> Result<()> {
        if floor > self.floor.load(Ordering::SeqCst) {
            self.floor.fetch_max(floor, Ordering::SeqCst);
            self.meta
                .insert(ID_FLOOR, &floor.to_be_bytes())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_across_reopening_and_above_the_floor_and_sleds_own_ids() {
        let dir = tempfile::tempdir().unwrap();
        // A store from before this counter: its ids came from sled's generator.
        let mut last = {
            let db = sled::open(dir.path().join("db")).unwrap();
            for _ in 0..9 {
                db.generate_id().unwrap();
            }
            db.generate_id().unwrap() + 1
        };
        for round in 0..3 {
            let db = sled::open(dir.path().join("db")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            let ids = Ids::open(&db, &meta).unwrap();
            if round == 1 {
                ids.raise_floor(last + 5_000_000).unwrap();
            }
            for _ in 0..(BLOCK + 10) {
                let id = ids.next().unwrap();
                assert!(id > last, "{id} after {last}");
                last = id;
            }
            assert!(ids.peek() > last);
            assert!(next_unused(&db, &meta).unwrap() > last);
            // A crash now (the files as they are, the handle still open) starts above too.
            let image = dir.path().join(format!("crash-{round}"));
            super::super::tests::crash_image(&dir.path().join("db"), &image);
            let copy = sled::open(&image).unwrap();
            let after = Ids::open(&copy, &copy.open_tree("meta").unwrap()).unwrap();
            assert!(after.next().unwrap() > last);
            drop(ids);
            drop(meta);
            drop(db);
        }
    }
}
