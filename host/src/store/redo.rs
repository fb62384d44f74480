//! Atomic multi-key writes without sled batches: a redo record, then plain writes.
//!
//! A sled batch (and a sled transaction) rolls sled's log buffer before and after its
//! manifest. Each roll seals a buffer that sled's thread pool then writes with `pwrite` and
//! a waiting `sync_file_range`, and handing it to the pool wakes every idle pool thread
//! (`notify_all`). The batch also holds sled's process-wide write lock, which stalls every
//! reader of every tree. At 2,000 chat messages/s that was half of sled's I/O threads' CPU
//! and 40% of a bot turn's median latency (BENCHMARKS.md, session 13).
//!
//! Here the writes of one tree are made atomic another way:
//!
//! 1. the whole list of writes is inserted as one value, a *redo record*, into a tree of
//!    its own (one sled insert: atomic by itself);
//! 2. each write is applied with a plain insert or remove;
//! 3. the record is removed.
//!
//! sled recovers a prefix of its log, in the order space in it was reserved: it stops at
//! the first message that is torn or missing. A record is reserved before its writes, and
//! its removal after them, all on one thread. So after a crash, if any of the writes
//! survived, the record did too, and [`recover`] (run by `open` before anything reads)
//! applies it again and removes it; if the removal survived, every write did. Applying
//! a record twice is harmless: it holds the final values.
//!
//! While the writes are applied the tree's isolation lock is held for writing; every
//! other operation on the tree (reads, scans, single writes) holds it for reading.
//! `insert_unique` holds it for writing while it reads its guards and applies its record,
//! which makes its check-then-write atomic without a sled transaction. So readers never
//! see half of a record's writes, and no other write can land between a record's writes
//! and its removal, which a replay would then undo. Unlike sled's own lock, this one is
//! per tree: one tenant's batch stalls no other tenant.
//!
//! A list of writes too large for one record (over [`MAX_RECORD_BYTES`]) is applied as
//! one sled batch instead, under the same lock.
//!
//! If sled fails in the middle of a list (an I/O error, after which it refuses every
//! write), the caller gets the error, which was never acknowledged, and the record stays:
//! the next open completes the list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockWriteGuard};

use sled::IVec;

/// One caller's writes: key → new value, `None` to remove.
pub(crate) type Writes = Vec<(IVec, Option<IVec>)>;

/// Name of the sled tree holding redo records. Names starting with `__sled` are
/// reserved: no [`Space`](super::Space) can be given it.
pub(crate) const REDO_TREE: &[u8] = b"__sled_weft_redo";

/// Largest redo record, in bytes: values are kept well under sled's 128 KiB blob
/// threshold (a quarter segment), as every other value is (`MAX_VALUE_BYTES`).
pub(crate) const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Format version, the record's first byte.
const VERSION: u8 = 1;

/// A tree and the lock that makes a record's writes appear at once (see the module
/// documentation).
pub(crate) struct TreeSlot {
    /// The tree.
    pub(crate) tree: sled::Tree,
    /// Held for writing while a record's writes are applied; for reading by everything
    /// else.
    pub(crate) iso: RwLock<()>,
}

impl TreeSlot {
    /// A slot for `tree`.
    pub(crate) fn new(tree: sled::Tree) -> TreeSlot {
        TreeSlot {
            tree,
            iso: RwLock::new(()),
        }
    }

    /// Runs `op` holding the isolation lock for reading.
    pub(crate) fn shared<T>(&self, op: impl FnOnce(&sled::Tree) -> T) -> T {
        let _shared = self.iso.read().unwrap_or_else(PoisonError::into_inner);
        op(&self.tree)
    }
}

/// How a list of writes was applied (for tests and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Through a redo record and plain writes.
    Redo,
    /// As one sled batch: the record would have been too large.
    SledBatch,
}

/// The redo-record tree of one database.
pub(crate) struct Redo {
    tree: sled::Tree,
    /// Key of the next record. Records are removed as soon as their writes are applied,
    /// and [`recover`] empties the tree at open, so numbering may restart at every open.
    next: AtomicU64,
    /// Lists applied through a record, and as a sled batch.
    counts: [AtomicU64; 2],
}

impl Redo {
    /// The redo tree of `db`.
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Redo> {
        let tree = db.open_tree(REDO_TREE)?;
        let next = match tree.last()? {
            Some((k, _)) => decode_id(&k).map_or(0, |id| id + 1),
            None => 0,
        };
        Ok(Redo {
            tree,
            next: AtomicU64::new(next),
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// Applies `writes` to `slot`'s tree atomically (in order: a later write of a key
    /// wins). Blocking.
    pub(crate) fn apply(&self, slot: &TreeSlot, writes: &Writes) -> sled::Result<Applied> {
        let exclusive = slot.iso.write().unwrap_or_else(PoisonError::into_inner);
        self.apply_locked(&exclusive, slot, writes)
    }

    /// [`apply`](Self::apply) for a caller that holds `slot`'s isolation lock for writing
    /// (`_exclusive`, its guard), to read before it writes.
    pub(crate) fn apply_locked(
        &self,
        _exclusive: &RwLockWriteGuard<'_, ()>,
        slot: &TreeSlot,
        writes: &Writes,
    ) -> sled::Result<Applied> {
        let record = encode(&slot.tree.name(), writes);
        let how = match record {
            Some(record) => {
                let id = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                self.tree.insert(id, record)?;
                apply_plain(&slot.tree, writes)?;
                self.tree.remove(id)?;
                Applied::Redo
            }
            None => {
                let mut batch = sled::Batch::default();
                for (k, v) in writes {
                    match v {
                        Some(v) => batch.insert(k.clone(), v.clone()),
                        None => batch.remove(k.clone()),
                    }
                }
                slot.tree.apply_batch(batch)?;
                Applied::SledBatch
            }
        };
        self.counts[how as usize].fetch_add(1, Ordering::Relaxed);
        Ok(how)
    }

    /// How many lists were applied through a record, and as a sled batch.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        )
    }

    /// Writes the record of `writes` and only the first `applied` of them, then stops, as a
    /// crash would. For recovery tests.
    #[cfg(test)]
    pub(crate) fn interrupt(
        &self,
        slot: &TreeSlot,
        writes: &Writes,
        applied: usize,
    ) -> sled::Result<()> {
        let record = encode(&slot.tree.name(), writes).expect("a small test record");
        let id = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        self.tree.insert(id, record)?;
        apply_plain(&slot.tree, &writes[..applied])
    }
}

fn apply_plain(tree: &sled::Tree, writes: &[(IVec, Option<IVec>)]) -> sled::Result<()> {
    for (k, v) in writes {
        match v {
            Some(v) => tree.insert(k, v.clone()).map(drop)?,
            None => tree.remove(k).map(drop)?,
        }
    }
    Ok(())
}

/// Applies again every record left in `db`'s redo tree by a crash, in the order they
/// were written, and removes them. Returns how many there were. Run at open, before
/// anything reads; the caller makes the result durable.
pub(crate) fn recover(db: &sled::Db) -> Result<usize, RecoverError> {
    let redo = db.open_tree(REDO_TREE)?;
    let mut n = 0;
    for entry in redo.iter() {
        let (id, record) = entry?;
        let (name, writes) = decode(&record).ok_or(RecoverError::Undecodable {
            id: decode_id(&id).unwrap_or(u64::MAX),
        })?;
        apply_plain(&db.open_tree(name)?, &writes)?;
        redo.remove(id)?;
        n += 1;
    }
    Ok(n)
}

/// Why interrupted writes could not be completed at open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoverError {
    /// sled failed.
    #[error(transparent)]
    Sled(#[from] sled::Error),
    /// A record is not in the format this version writes.
    #[error("redo record {id} is undecodable (written by another version of Weft?)")]
    Undecodable {
        /// The record's number.
        id: u64,
    },
}

fn decode_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// `version, len(tree) tree, then per write: 1 key value | 0 key`, lengths as u32 LE.
/// `None` when the record would exceed [`MAX_RECORD_BYTES`].
fn encode(tree: &[u8], writes: &[(IVec, Option<IVec>)]) -> Option<Vec<u8>> {
    let size = 5
        + tree.len()
        + writes
            .iter()
            .map(|(k, v)| 5 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum::<usize>();
    if size > MAX_RECORD_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.push(VERSION);
    put_bytes(&mut out, tree);
    for (k, v) in writes {
        out.push(u8::from(v.is_some()));
        put_bytes(&mut out, k);
        if let Some(v) = v {
            put_bytes(&mut out, v);
        }
    }
    Some(out)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys and values are at most 64 KiB (`MAX_VALUE_BYTES`), tree names a few bytes.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn decode(mut r: &[u8]) -> Option<(IVec, Writes)> {
    fn bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = r.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (b, rest) = (rest.get(..len)?, rest.get(len..)?);
        *r = rest;
        Some(b)
    }
    let (&version, rest) = r.split_first()?;
    if version != VERSION {
        return None;
    }
    r = rest;
    let tree = IVec::from(bytes(&mut r)?);
    let mut writes = Vec::new();
    while let Some((&tag, rest)) = r.split_first() {
        r = rest;
        let key = IVec::from(bytes(&mut r)?);
        let value = match tag {
            0 => None,
            1 => Some(IVec::from(bytes(&mut r)?)),
            _ => return None,
        };
        writes.push((key, value));
    }
    Some((tree, writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(pairs: &[(&str, Option<&str>)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    IVec::from(k.as_bytes()),
                    v.map(|v| IVec::from(v.as_bytes())),
                )
            })
            .collect()
    }

    /// A database in `dir` with its redo tree and the tree `t/a`.
    fn open_in(dir: &std::path::Path) -> (sled::Db, Redo, TreeSlot) {
        let db = sled::open(dir).unwrap();
        let redo = Redo::open(&db).unwrap();
        let slot = TreeSlot::new(db.open_tree("t/a").unwrap());
        (db, redo, slot)
    }

    #[test]
    fn a_record_decodes_to_the_writes_it_was_made_of() {
        let w = writes(&[("a", Some("1")), ("b", None), ("", Some(""))]);
        let record = encode(b"t/x", &w).unwrap();
        let (tree, back) = decode(&record).unwrap();
        assert_eq!(&*tree, b"t/x");
        assert_eq!(back, w);
        assert!(decode(&record[..record.len() - 1]).is_none(), "truncated");
        let mut other = record.clone();
        other[0] = 9;
        assert!(decode(&other).is_none(), "unknown version");
    }

    #[test]
    fn writes_over_the_record_cap_go_as_one_sled_batch_and_under_it_through_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, redo, slot) = open_in(dir.path());
        let small = writes(&[("k1", Some("v")), ("k2", Some("v"))]);
        assert_eq!(redo.apply(&slot, &small).unwrap(), Applied::Redo);
        let big_value = "x".repeat(40 * 1024);
        let big = writes(&[("b1", Some(&big_value)), ("b2", Some(&big_value))]);
        assert_eq!(redo.apply(&slot, &big).unwrap(), Applied::SledBatch);
        assert_eq!(redo.counts(), (1, 1));
        for k in ["k1", "k2", "b1", "b2"] {
            assert!(slot.tree.get(k).unwrap().is_some(), "{k} landed");
        }
        assert!(redo.tree.is_empty(), "no record is left behind");
    }

    #[test]
    fn writes_cut_short_after_their_record_are_completed_by_recovery() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, redo, slot) = open_in(dir.path());
            slot.tree.insert("gone", "old").unwrap();
            let w = writes(&[("k1", Some("new")), ("gone", None), ("k2", Some("new"))]);
            redo.interrupt(&slot, &w, 1).unwrap();
            db.flush().unwrap();
        }
        // sled's threads of the first open may still hold the lock for a moment.
        let db = crate::store::sled_backend::open_sled(dir.path()).unwrap();
        assert_eq!(recover(&db).unwrap(), 1);
        let t = db.open_tree("t/a").unwrap();
        assert_eq!(t.get("k1").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(t.get("k2").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(t.get("gone").unwrap(), None);
        assert!(db.open_tree(REDO_TREE).unwrap().is_empty());
        assert_eq!(recover(&db).unwrap(), 0, "nothing is applied twice");
    }

    #[test]
    fn a_scan_never_sees_half_of_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, redo, slot) = open_in(dir.path());
        let (redo, slot) = (std::sync::Arc::new(redo), std::sync::Arc::new(slot));
        let (r2, s2) = (redo.clone(), slot.clone());
        let writer = std::thread::spawn(move || {
            for i in 0..2_000u32 {
                let v = i.to_string();
                let w = writes(&[("p/1", Some(&v)), ("p/2", Some(&v)), ("p/3", Some(&v))]);
                r2.apply(&s2, &w).unwrap();
            }
        });
        let mut scans = 0;
        while !writer.is_finished() || scans == 0 {
            let values: Vec<IVec> = slot.shared(|t| {
                t.scan_prefix("p/")
                    .map(|r| r.unwrap().1)
                    .collect::<Vec<_>>()
            });
            assert!(
                values.windows(2).all(|w| w[0] == w[1]),
                "a scan saw {values:?}"
            );
            scans += 1;
        }
        writer.join().unwrap();
    }
}
