//! The sled 0.34.7 implementation of [`Backend`].
//!
//! On-disk layout of a sled 0.34.7 database directory (from its source):
//!
//! * `db` — the log-structured data file holding every tree. sled writes it
//!   with `pwrite` + `sync_file_range`, which persists neither the file size
//!   nor the drive's write cache, so `flush()` alone is not durable: we
//!   `fdatasync` it after every flush.
//! * `conf` — storage parameters, written once at creation without an fsync;
//!   we fsync it on open.
//! * `blobs/<lsn>` — log entries larger than a quarter segment (~128 KiB)
//!   spill into separate files, written without fsync. Values are capped at
//!   64 KiB, but a consolidated leaf holding several large values can still
//!   spill, so each round fsyncs blob files that are new or have grown, and
//!   the `blobs` directory when its entries change.
//! * `snap.<lsn>` — snapshots, fsynced by sled but renamed into place
//!   without a directory fsync; we fsync the directory when its entries change.
//!
//! Besides one tree per space, `db` holds the tree `__sled_weft_redo`: the records that
//! make multi-key writes atomic (see [`redo`](super::redo)); it is empty except while a
//! write is being applied, or after a crash until the next open completes it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::combine::Combiner;
use super::durability::{create_dir_all_durably, sync_dir, CommitFuture, GroupCommit, Syncer};
use super::redo::{self, Redo, TreeSlot, REDO_TREE};
use super::{
    check_key, check_value, Backend, BatchOp, Entry as KvEntry, Space, StoreError, UniqueInsert,
    UpdateFn, WriteObserver,
};

/// A [`Backend`] on an embedded sled database, one sled `Tree` per [`Space`].
pub struct SledBackend {
    db: sled::Db,
    /// Every tree that exists, by name. Reads and deletes on a missing tree
    /// see it as empty instead of creating it (so stray reads cannot bring a
    /// dropped tenant back or create trees without bound). Data operations
    /// hold the read lock while they run and `drop_space` takes the write
    /// lock, so no operation ever runs on a tree that is being dropped. Each tree has its
    /// isolation lock (see [`redo`]).
    trees: RwLock<HashMap<Vec<u8>, Arc<TreeSlot>>>,
    commit: GroupCommit,
    /// Told of every write; registered once at start-up, so the read lock is uncontended.
    observers: RwLock<Vec<Arc<dyn WriteObserver>>>,
    /// Concurrent batches, applied as one per tree.
    combiner: Combiner,
    /// Where multi-key writes are made atomic (shared with the combiner's thread).
    redo: Arc<Redo>,
}

pub(crate) fn sled_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Io(io),
        other => StoreError::Backend(Box::new(other)),
    }
}

/// sled's built-in tree, which we never use for data.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// How long [`SledBackend::open`] waits for the database lock held by a previous owner
/// that is shutting down: a process exit or a background tick takes well under this.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the sled database in `dir`, waiting up to [`LOCK_WAIT`] for the lock of a
/// previous owner that is still closing.
pub(crate) fn open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` error naming it (config.rs).
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl SledBackend {
    /// Open (or create) the sled database in `dir` and start its committer.
    ///
    /// Fails if another process (or another `SledBackend` in this process)
    /// still has the database open after `LOCK_WAIT`: a restart may find
    /// the previous owner still closing (a process exiting, or an in-process
    /// host whose background tasks finish their current tick).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_dir_all_durably(dir)?;
        let db = open_sled(dir).map_err(sled_err)?;

        // sled writes `conf` and creates `db` and `blobs/` without fsyncing
        // them or the directory.
        for file in ["conf", "db"] {
            let path = dir.join(file);
            if path.exists() {
                File::open(&path)?.sync_all()?;
            }
        }
        let blobs_dir = dir.join("blobs");
        let blob_files = list_files(&blobs_dir)?;
        for name in blob_files.keys() {
            sync_file_if_present(&blobs_dir.join(name))?;
        }
        if blobs_dir.is_dir() {
            sync_dir(&blobs_dir)?;
        }
        sync_dir(dir)?;

        // Complete the multi-key writes a crash cut short, before anything reads.
        let replayed = redo::recover(&db).map_err(|e| match e {
            redo::RecoverError::Sled(e) => sled_err(e),
            other => StoreError::Backend(Box::new(other)),
        })?;
        if replayed > 0 {
            db.flush().map_err(sled_err)?;
            File::open(dir.join("db"))?.sync_data()?;
            tracing::info!(
                batches = replayed,
                "completed write batches interrupted by the last shutdown"
            );
        }
        let redo = Arc::new(Redo::open(&db).map_err(sled_err)?);

        let mut trees = HashMap::new();
        for name in db.tree_names() {
            if &*name != SLED_DEFAULT_TREE && &*name != REDO_TREE {
                let tree = db.open_tree(&name).map_err(sled_err)?;
                trees.insert(name.to_vec(), Arc::new(TreeSlot::new(tree)));
            }
        }

        let syncer = SledSyncer {
            db: db.clone(),
            db_file: File::open(dir.join("db"))?,
            top_entries: list_files(dir)?,
            blob_files,
            dir: dir.to_path_buf(),
        };
        let commit = GroupCommit::start("sled", syncer)?;
        Ok(Self {
            db,
            trees: RwLock::new(trees),
            commit,
            observers: RwLock::new(Vec::new()),
            combiner: Combiner::with_helper(redo.clone())?,
            redo,
        })
    }

    /// Tells the observers that `keys` of `space` were written.
    fn notify<'k>(&self, space: &Space, keys: impl IntoIterator<Item = &'k [u8]>) {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if observers.is_empty() {
            return;
        }
        for key in keys {
            for o in observers.iter() {
                o.written(space, key);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn group_commit(&self) -> &GroupCommit {
        &self.commit
    }

    /// Names of the sled trees that exist (excluding sled's default tree).
    #[cfg(test)]
    pub(crate) fn tree_names(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<_> = self
            .db
            .tree_names()
            .into_iter()
            .filter(|n| &**n != SLED_DEFAULT_TREE && &**n != REDO_TREE)
            .map(|n| n.to_vec())
            .collect();
        names.sort();
        names
    }

    /// Run `op` on the tree for `space` (`None` if it does not exist and
    /// `create` is false), holding the tree map's lock and the tree's isolation lock
    /// (for reading) for the duration.
    fn with_tree<T>(
        &self,
        space: &Space,
        create: bool,
        op: impl FnOnce(Option<&sled::Tree>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_slot(space, create, |slot| match slot {
            Some(slot) => slot.shared(|t| op(Some(t))),
            None => op(None),
        })
    }

    /// [`with_tree`](Self::with_tree) without the isolation lock: for [`Redo::apply`],
    /// which takes it for writing.
    fn with_slot<T>(
        &self,
        space: &Space,
        create: bool,
        op: impl FnOnce(Option<&Arc<TreeSlot>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let name = space.tree_name()?;
        {
            let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = trees.get(&name) {
                return op(Some(slot));
            }
            if !create {
                return op(None);
            }
        }
        // First write to a new space: create it under the write lock (rare).
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        let slot = match trees.entry(name) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let tree = self.db.open_tree(e.key()).map_err(sled_err)?;
                e.insert(Arc::new(TreeSlot::new(tree)))
            }
        };
        op(Some(slot))
    }

    fn read<T: Default>(
        &self,
        space: &Space,
        op: impl FnOnce(&sled::Tree) -> sled::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_tree(space, false, |tree| match tree {
            Some(tree) => op(tree).map_err(sled_err),
            None => Ok(T::default()),
        })
    }

    fn write<T>(
        &self,
        space: &Space,
        op: impl FnOnce(&sled::Tree) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.with_tree(space, true, |tree| op(tree.expect("created")));
        // Counted even on error: a failed call may still have changed state.
        self.commit.note_write();
        result
    }
}

impl Backend for SledBackend {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(space, |t| t.get(key))
            .map(|v| v.map(|v| v.to_vec()))
    }

    fn put(&self, space: &Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.write(space, |t| t.insert(key, value).map(drop).map_err(sled_err))?;
        self.notify(space, [key]);
        Ok(())
    }

    fn delete(&self, space: &Space, key: &[u8]) -> Result<(), StoreError> {
        let result = self.with_tree(space, false, |tree| match tree {
            Some(t) => t.remove(key).map(drop).map_err(sled_err),
            None => Ok(()),
        });
        self.commit.note_write();
        self.notify(space, [key]);
        result
    }

    fn scan_prefix(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        self.read(space, |t| collect(t.scan_prefix(prefix), limit))
    }

    fn scan_range(
        &self,
        space: &Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        if end <= start {
            return Ok(Vec::new());
        }
        self.read(space, |t| collect(t.range(start..end), limit))
    }

    fn scan_prefix_rev(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        self.read(space, |t| collect(t.scan_prefix(prefix).rev(), limit))
    }

    fn scan_prefix_rev_before(
        &self,
        space: &Space,
        prefix: &[u8],
        before: &[u8],
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        if before <= prefix {
            return Ok(Vec::new());
        }
        self.read(space, |t| {
            collect(
                t.range(prefix..before)
                    .rev()
                    .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))),
                limit,
            )
        })
    }

    fn compare_and_swap(
        &self,
        space: &Space,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        check_key(key)?;
        if let Some(new) = new {
            check_value(new)?;
        }
        // Only "create if absent" can succeed on a space that does not exist.
        let create = old.is_none() && new.is_some();
        let result = self.with_tree(space, create, |tree| match tree {
            Some(t) => t
                .compare_and_swap(key, old, new)
                .map(|r| r.is_ok())
                .map_err(sled_err),
            None => Ok(old.is_none()),
        });
        self.commit.note_write();
        if matches!(result, Ok(true)) {
            self.notify(space, [key]);
        }
        result
    }

    fn update(
        &self,
        space: &Space,
        key: &[u8],
        f: &mut UpdateFn<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let result = self.write(space, |t| loop {
            let current = t.get(key).map_err(sled_err)?;
            let new = f(current.as_deref());
            if let Some(new) = &new {
                check_value(new)?;
            }
            let swapped = t
                .compare_and_swap(key, current.as_deref(), new.as_deref())
                .map_err(sled_err)?;
            if swapped.is_ok() {
                return Ok(new);
            }
        });
        self.notify(space, [key]);
        result
    }

    fn apply_batch(&self, space: &Space, ops: &[BatchOp]) -> Result<(), StoreError> {
        // One write is atomic by itself: skip the redo record, which costs two more writes
        // and holds the tree's readers while it applies.
        if let [op] = ops {
            return match op {
                BatchOp::Put { key, value } => self.put(space, key, value),
                BatchOp::Delete { key } => self.delete(space, key),
            };
        }
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            op.check()?;
            writes.push(redo_write(op));
        }
        let result = self.with_slot(space, true, |slot| {
            let slot = slot.expect("created");
            self.combiner
                .apply(&self.redo, slot, writes)
                .map_err(sled_err)
        });
        // Counted even on error: a failed call may still have changed state.
        self.commit.note_write();
        result?;
        self.notify(space, ops.iter().map(BatchOp::key));
        Ok(())
    }

    fn insert_unique(
        &self,
        space: &Space,
        items: &[UniqueInsert],
    ) -> Result<Vec<bool>, StoreError> {
        items.iter().try_for_each(UniqueInsert::check)?;
        // Check-then-write under the tree's exclusive lock (no other operation on the tree
        // runs meanwhile), made atomic by one redo record.
        let result = self.with_slot(space, true, |slot| {
            let slot = slot.expect("created");
            let exclusive = slot.iso.write().unwrap_or_else(PoisonError::into_inner);
            // Keys written by earlier items of this call: later items see them.
            let mut mine: HashMap<&[u8], bool> = HashMap::new();
            let present = |k: &[u8], mine: &HashMap<&[u8], bool>| -> sled::Result<bool> {
                match mine.get(k) {
                    Some(put) => Ok(*put),
                    None => Ok(slot.tree.get(k)?.is_some()),
                }
            };
            let mut written = Vec::with_capacity(items.len());
            let mut writes = Vec::new();
            for item in items {
                let mut seen = present(&item.guard, &mine).map_err(sled_err)?;
                for k in &item.also {
                    seen = seen || present(k, &mine).map_err(sled_err)?;
                }
                if seen {
                    written.push(false);
                    continue;
                }
                mine.insert(&item.guard, true);
                writes.push((
                    item.guard.as_slice().into(),
                    Some(item.guard_value.as_slice().into()),
                ));
                for op in &item.ops {
                    let write = redo_write(op);
                    mine.insert(op.key(), write.1.is_some());
                    writes.push(write);
                }
                written.push(true);
            }
            if !writes.is_empty() {
                self.redo
                    .apply_locked(&exclusive, slot, &writes)
                    .map_err(sled_err)?;
            }
            Ok(written)
        });
        // Counted even on error: a failed call may still have changed state.
        self.commit.note_write();
        let written = result?;
        let keys = items
            .iter()
            .zip(&written)
            .filter(|(_, w)| **w)
            .flat_map(|(item, _)| item.ops.iter().map(BatchOp::key));
        self.notify(space, keys);
        Ok(written)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(sled_err)
    }

    fn drop_space(&self, space: &Space) -> Result<(), StoreError> {
        let name = space.tree_name()?;
        let result = {
            let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
            match trees.remove(&name) {
                Some(_) => self.db.drop_tree(&name).map(drop).map_err(sled_err),
                None => Ok(()),
            }
        };
        self.commit.note_write();
        for o in self
            .observers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            o.dropped(space);
        }
        result
    }

    fn commit_blocking(&self) -> Result<(), StoreError> {
        self.commit.commit_blocking()
    }

    fn commit_async(self: Arc<Self>) -> CommitFuture {
        self.commit.commit_future()
    }

    fn commit_stats(&self) -> Option<super::CommitStats> {
        Some(self.commit.stats())
    }

    fn observe(&self, observer: Arc<dyn WriteObserver>) {
        self.observers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observer);
    }
}

fn collect(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> sled::Result<Vec<KvEntry>> {
    iter.take(limit)
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

/// `op` as one write of a redo record: the key, and the new value (`None` removes it).
fn redo_write(op: &BatchOp) -> (sled::IVec, Option<sled::IVec>) {
    match op {
        BatchOp::Put { key, value } => (key.as_slice().into(), Some(value.as_slice().into())),
        BatchOp::Delete { key } => (key.as_slice().into(), None),
    }
}

/// The per-round flush + fsync for a sled directory.
struct SledSyncer {
    db: sled::Db,
    dir: PathBuf,
    /// A second handle on `<dir>/db`; fsync works on a read-only descriptor.
    db_file: File,
    /// Entries of `<dir>` at the last directory fsync.
    top_entries: BTreeMap<OsString, u64>,
    /// Files in `<dir>/blobs` and their sizes at the last fsync.
    blob_files: BTreeMap<OsString, u64>,
}

impl Syncer for SledSyncer {
    fn sync(&mut self) -> Result<Duration, StoreError> {
        let began = Instant::now();
        self.db.flush().map_err(sled_err)?;
        let flush = began.elapsed();
        self.db_file.sync_data()?;

        // Blob files are complete before the log entry that points at them
        // is written, so after the flush every referenced blob is listed here.
        // One still being written for a later write is fsynced again in a
        // later round because its size will have changed.
        let blobs_dir = self.dir.join("blobs");
        let blobs = list_files(&blobs_dir)?;
        if blobs != self.blob_files {
            for (name, len) in &blobs {
                if self.blob_files.get(name) != Some(len) {
                    sync_file_if_present(&blobs_dir.join(name))?;
                }
            }
            sync_dir(&blobs_dir)?;
            self.blob_files = blobs;
        }

        let top: BTreeMap<OsString, u64> = list_files(&self.dir)?
            .into_iter()
            .filter(|(name, _)| name != "db")
            .collect();
        if top.keys().ne(self.top_entries.keys()) {
            sync_dir(&self.dir)?;
        }
        self.top_entries = top;
        Ok(flush)
    }
}

/// Regular files in `dir` with their sizes; empty if `dir` does not exist.
fn list_files(dir: &Path) -> io::Result<BTreeMap<OsString, u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        match entry.metadata() {
            Ok(meta) if meta.is_file() => {
                files.insert(entry.file_name(), meta.len());
            }
            Ok(_) => {}
            // Removed between listing and stat (sled garbage-collects blobs).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

fn sync_file_if_present(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
