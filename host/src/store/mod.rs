//! Durable storage: a key-value [`Backend`] with one keyspace per tenant,
//! group-committed fsync, and a content-addressed [`BlobStore`] for large
//! binaries.
//!
//! # Durability contract
//!
//! Writes (`put`, `delete`, `compare_and_swap`, `update`, `apply_batch`,
//! `drop_space`) are atomic and immediately visible to readers, but not yet
//! durable. Before acknowledging anything to a client, call
//! [`Db::commit`] (async) or [`Backend::commit_blocking`]: it returns only
//! after one flush + fsync that began after every write which had returned
//! before the call, so acknowledged data survives `kill -9` and power loss.
//! Concurrent commits share one fsync (group commit); a commit with no new
//! writes since the last fsync returns immediately. If an fsync fails, every
//! later commit fails too ([`StoreError::CommitFailed`]) until restart.
//!
//! # Keyspaces
//!
//! A [`Space`] is either a named global keyspace ([`Space::TENANTS`],
//! [`Space::KEYS`], [`Space::META`], …) or one tenant's (sled tree
//! `t/<tenant-id>`). Keys never cross spaces, so a tenant can only reach
//! another's data by naming its space. Values are limited to
//! [`MAX_VALUE_BYTES`] and keys to [`MAX_KEY_BYTES`]; store anything larger
//! in the [`BlobStore`] and keep its digest in the key-value store.
//!
//! # Batches cost more than their writes
//!
//! A multi-key [`Backend::apply_batch`] is made atomic by a redo record: one more insert
//! and one removal carrying all its writes, and the tree's readers wait while it applies
//! (the sled backend's `redo` module; sled's own batches, which it uses only for lists too
//! large for one record, cost two synchronous log-buffer writes and stall every tree).
//! So: write one key with `put`/`delete` (a one-op [`Backend::apply_batch`] does that by
//! itself); let concurrent callers' batches be combined (the sled backend applies the
//! batches queued on a tree while one is applied as one); and when work applies many items
//! in order, stage them in a [`Staged`] view, which reads through its own writes, and
//! commit them together.
//!
//! # Layout
//!
//! [`open`] uses `<data>/sled` for the database and `<data>/blobs` for files.

mod blob;
mod combine;
mod durability;
pub mod group;
pub mod markers;
mod redo;
mod sled_backend;
mod staged;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use blob::{sha256_hex, BlobStore};
pub use durability::{write_file_durably, CommitFuture, CommitStats, SLOW_ROUND};
pub use sled_backend::SledBackend;
pub use staged::Staged;

/// Largest value the store accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Largest key the store accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;

/// Largest tenant id usable in a [`Space`], in bytes.
pub const MAX_TENANT_ID_BYTES: usize = 256;

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The read-modify-write function of [`Backend::update`]: current value in
/// (`None` if absent), new value out (`None` to delete).
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// Errors from the storage layer.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A value was larger than [`MAX_VALUE_BYTES`].
    #[error("value of {size} bytes exceeds the {max}-byte limit")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A key was larger than [`MAX_KEY_BYTES`].
    #[error("key of {size} bytes exceeds the {max}-byte limit")]
    KeyTooLarge {
        /// Size of the rejected key.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A [`Space`] had an empty, oversized or reserved name.
    #[error("invalid keyspace {0:?}")]
    InvalidSpace(String),
    /// A blob digest was not 64 lowercase hex digits.
    #[error("invalid blob digest {0:?}")]
    InvalidDigest(String),
    /// A file path was absolute, escaped its root, or named a reserved entry.
    #[error("invalid storage path {0:?}")]
    InvalidPath(String),
    /// A stored blob no longer matches its content address.
    #[error("blob {} is corrupt: contents do not match its digest", path.display())]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
    },
    /// A stored value could not be decoded, or a value encoded, as JSON.
    #[error("stored value is not valid JSON for the requested type")]
    Codec(#[source] serde_json::Error),
    /// File-system I/O failed.
    #[error("storage I/O failed")]
    Io(#[from] std::io::Error),
    /// A flush or fsync failed (or the committer stopped). The writes it
    /// covered may not be durable, and this backend refuses all later
    /// commits until the process restarts. (When the round could not even
    /// open its files for lack of descriptors, only that commit fails.)
    #[error("storage commit failed; writes since the last successful commit may not be durable")]
    CommitFailed(#[source] Arc<dyn StdError + Send + Sync>),
    /// The storage engine failed in some other way.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

/// A group's leader panicked before answering: its writes may or may not have landed, so
/// every caller in the group reports a store failure.
impl From<group::LeaderLost> for StoreError {
    fn from(lost: group::LeaderLost) -> Self {
        StoreError::Backend(Box::new(lost))
    }
}

impl StoreError {
    /// This failure, for one of several callers whose writes it failed together (a group
    /// batch): the message is kept, the source is not (it cannot be cloned).
    pub fn shared(&self) -> StoreError {
        StoreError::Backend(Box::new(std::io::Error::other(self.to_string())))
    }
}

/// Which keyspace: a named global one or one tenant's.
///
/// Construct with [`Space::global`] / [`Space::tenant`] or use the constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// A global keyspace shared by the whole host, by name.
    Global(&'static str),
    /// One tenant's private keyspace, by tenant id.
    Tenant(String),
}

impl Space {
    /// Tenant records.
    pub const TENANTS: Space = Space::Global("tenants");
    /// API keys: key hash → key record.
    pub const KEYS: Space = Space::Global("keys");
    /// Host metadata (schema version and the like).
    pub const META: Space = Space::Global("meta");

    /// A global keyspace. `name` must be non-empty and not start with `t/`.
    pub const fn global(name: &'static str) -> Self {
        Space::Global(name)
    }

    /// The keyspace of tenant `id` (non-empty, at most
    /// [`MAX_TENANT_ID_BYTES`] bytes).
    pub fn tenant(id: impl Into<String>) -> Self {
        Space::Tenant(id.into())
    }

    /// The backend name of this keyspace (`<name>` or `t/<tenant-id>`),
    /// after validating it.
    pub fn tree_name(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            Space::Global(name) => {
                let reserved =
                    name.is_empty() || name.starts_with("t/") || name.starts_with("__sled");
                if reserved {
                    return Err(StoreError::InvalidSpace((*name).to_owned()));
                }
                Ok(name.as_bytes().to_vec())
            }
            Space::Tenant(id) => {
                if id.is_empty() || id.len() > MAX_TENANT_ID_BYTES {
                    return Err(StoreError::InvalidSpace(format!("t/{id}")));
                }
                Ok(format!("t/{id}").into_bytes())
            }
        }
    }
}

/// One item of [`Backend::insert_unique`]: its ops are written only if `guard` and every
/// key of `also` are absent, and then `guard` is set to `guard_value` in the same
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueInsert {
    /// The key whose absence admits the item (for example a message id).
    pub guard: Vec<u8>,
    /// Other keys whose presence also refuses the item (the same id's marker in an older
    /// time bucket, say); they are only read.
    pub also: Vec<Vec<u8>>,
    /// What the guard key holds afterwards.
    pub guard_value: Vec<u8>,
    /// The item's writes.
    pub ops: Vec<BatchOp>,
}

impl UniqueInsert {
    /// Refuses the item if a key or value is over its limit (as `insert_unique` would).
    pub fn check(&self) -> Result<(), StoreError> {
        check_key(&self.guard)?;
        self.also.iter().try_for_each(|k| check_key(k))?;
        check_value(&self.guard_value)?;
        self.ops.iter().try_for_each(BatchOp::check)
    }
}

/// One write in an atomic [`Backend::apply_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value (at most [`MAX_VALUE_BYTES`]).
        value: Vec<u8>,
    },
    /// Remove `key` (no error if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// A [`BatchOp::Put`].
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        BatchOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`BatchOp::Put`] of `value` encoded as JSON.
    pub fn put_json<T: Serialize + ?Sized>(
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<Self, StoreError> {
        Ok(BatchOp::Put {
            key: key.into(),
            value: serde_json::to_vec(value).map_err(StoreError::Codec)?,
        })
    }

    /// A [`BatchOp::Delete`].
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        BatchOp::Delete { key: key.into() }
    }

    /// Whether the key, and a put's value, are within the store's limits.
    pub fn check(&self) -> Result<(), StoreError> {
        match self {
            BatchOp::Put { key, value } => {
                check_key(key)?;
                check_value(value)
            }
            BatchOp::Delete { key } => check_key(key),
        }
    }

    /// The key this op writes or deletes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

pub(crate) fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::KeyTooLarge {
            size: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Told about every key a backend wrote or deleted, right after the write became visible.
/// In-memory copies of stored data (the personalization profile cache) drop their entries
/// here, so no write path can forget to invalidate them.
pub trait WriteObserver: Send + Sync + 'static {
    /// `key` in `space` was written or deleted.
    fn written(&self, space: &Space, key: &[u8]);
    /// All of `space` was dropped.
    fn dropped(&self, space: &Space);
}

/// A key-value storage engine. All methods block; async code goes through [`Db`].
///
/// Every operation is confined to one [`Space`]. Writes are atomic and
/// visible at once, and durable after [`commit_blocking`](Self::commit_blocking).
pub trait Backend: Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Set `key` to `value` (at most [`MAX_VALUE_BYTES`]).
    fn put(&self, space: &Space, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Remove `key`; no error if absent.
    fn delete(&self, space: &Space, key: &[u8]) -> Result<(), StoreError>;

    /// Up to `limit` entries whose keys start with `prefix`, in ascending
    /// key order (`usize::MAX` for all).
    fn scan_prefix(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Up to `limit` entries with `start <= key < end`, in ascending key order: the due
    /// part of a queue keyed by time, without reading what is not due.
    fn scan_range(
        &self,
        space: &Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Like [`scan_prefix`](Self::scan_prefix) but in descending key order,
    /// e.g. newest first for keys with a big-endian timestamp.
    fn scan_prefix_rev(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Up to `limit` entries whose keys start with `prefix` and sort strictly before
    /// `before`, in descending key order: the next page after `before` when paging
    /// newest first.
    fn scan_prefix_rev_before(
        &self,
        space: &Space,
        prefix: &[u8],
        before: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Atomically set `key` to `new` (`None` removes it) if its current value
    /// is `old` (`None` meaning absent). Returns whether it swapped.
    fn compare_and_swap(
        &self,
        space: &Space,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;

    /// Atomic read-modify-write: replace the value at `key` with `f(current)`
    /// (`None` in or out meaning absent) and return the new value. `f` may
    /// run more than once under contention, so it must not have side
    /// effects or call back into the backend; if it returns an oversized
    /// value nothing is written.
    fn update(
        &self,
        space: &Space,
        key: &[u8],
        f: &mut UpdateFn<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Apply all of `ops` atomically within `space`: readers and crash
    /// recovery see all or none of them. Sizes are checked before anything
    /// is written.
    fn apply_batch(&self, space: &Space, ops: &[BatchOp]) -> Result<(), StoreError>;

    /// In one atomic transaction, for each item in order: if its guard key is absent, write
    /// the guard and the item's ops; otherwise skip the item. Returns, per item, whether it
    /// was written. A guard repeated within `items` admits only its first item.
    fn insert_unique(&self, space: &Space, items: &[UniqueInsert])
        -> Result<Vec<bool>, StoreError>;

    /// A number greater than every one returned before, across restarts too.
    fn next_id(&self) -> Result<u64, StoreError>;

    /// Delete a whole keyspace (tenant erasure). Writing to it afterwards
    /// starts an empty one. Note that with sled the old bytes stay in the
    /// data file until its segments are reused.
    fn drop_space(&self, space: &Space) -> Result<(), StoreError>;

    /// Return after a (shared) flush + fsync covering every write that
    /// returned before this call.
    fn commit_blocking(&self) -> Result<(), StoreError>;

    /// Registers `observer` for every later write, from any path.
    fn observe(&self, observer: Arc<dyn WriteObserver>);

    /// What the group committer has done, for a backend that has one.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }

    /// [`commit_blocking`](Self::commit_blocking) as a future. The covered
    /// writes are those that returned before this *call* (not the first
    /// poll). The default runs `commit_blocking` on the blocking pool;
    /// backends should override it to wait without holding a thread.
    fn commit_async(self: Arc<Self>) -> CommitFuture {
        // Spawned now (not on first poll): `commit_blocking` then starts no
        // earlier than this call, so it covers at least the required writes.
        let task = tokio::task::spawn_blocking(move || self.commit_blocking());
        Box::pin(async move { task.await.map_err(|e| StoreError::Backend(Box::new(e)))? })
    }
}

impl dyn Backend {
    /// [`get`](Backend::get) and decode as JSON.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        space: &Space,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(space, key)?
            .map(|v| serde_json::from_slice(&v).map_err(StoreError::Codec))
            .transpose()
    }

    /// Encode as JSON and [`put`](Backend::put).
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        space: &Space,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Codec)?;
        self.put(space, key, &bytes)
    }
}

/// Run `f` on tokio's blocking pool.
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Backend(Box::new(e))),
    }
}

/// Async facade over a [`Backend`], used by HTTP handlers: cheap to clone,
/// runs each call on `tokio::task::spawn_blocking` so sled never blocks the
/// runtime. Sync code (e.g. wasm host calls on blocking threads) can use
/// [`backend`](Self::backend) directly.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Wrap a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The backend, for synchronous callers already on a blocking thread.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        run_blocking(move || f(&*backend)).await
    }

    /// Async [`Backend::get`].
    pub async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (space, key) = (space.clone(), key.to_vec());
        self.run(move |b| b.get(&space, &key)).await
    }

    /// Async [`Backend::put`]. The size limit is checked before spawning.
    pub async fn put(&self, space: &Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        let (space, key, value) = (space.clone(), key.to_vec(), value.to_vec());
        self.run(move |b| b.put(&space, &key, &value)).await
    }

    /// Async [`Backend::delete`].
    pub async fn delete(&self, space: &Space, key: &[u8]) -> Result<(), StoreError> {
        let (space, key) = (space.clone(), key.to_vec());
        self.run(move |b| b.delete(&space, &key)).await
    }

    /// Async [`Backend::scan_prefix`] (ascending).
    pub async fn scan_prefix(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let (space, prefix) = (space.clone(), prefix.to_vec());
        self.run(move |b| b.scan_prefix(&space, &prefix, limit))
            .await
    }

    /// Async [`Backend::scan_prefix_rev`] (descending).
    pub async fn scan_prefix_rev(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let (space, prefix) = (space.clone(), prefix.to_vec());
        self.run(move |b| b.scan_prefix_rev(&space, &prefix, limit))
            .await
    }

    /// Async [`Backend::compare_and_swap`].
    pub async fn compare_and_swap(
        &self,
        space: &Space,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let (space, key) = (space.clone(), key.to_vec());
        let (old, new) = (old.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.run(move |b| b.compare_and_swap(&space, &key, old.as_deref(), new.as_deref()))
            .await
    }

    /// Async [`Backend::update`]; `f` runs on a blocking thread, possibly
    /// more than once.
    pub async fn update<F>(
        &self,
        space: &Space,
        key: &[u8],
        mut f: F,
    ) -> Result<Option<Vec<u8>>, StoreError>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send + 'static,
    {
        let (space, key) = (space.clone(), key.to_vec());
        self.run(move |b| b.update(&space, &key, &mut f)).await
    }

    /// Async [`Backend::apply_batch`].
    pub async fn apply_batch(&self, space: &Space, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        let space = space.clone();
        self.run(move |b| b.apply_batch(&space, &ops)).await
    }

    /// Async [`Backend::insert_unique`].
    pub async fn insert_unique(
        &self,
        space: &Space,
        items: Vec<UniqueInsert>,
    ) -> Result<Vec<bool>, StoreError> {
        let space = space.clone();
        self.run(move |b| b.insert_unique(&space, &items)).await
    }

    /// Async [`Backend::drop_space`].
    pub async fn drop_space(&self, space: &Space) -> Result<(), StoreError> {
        let space = space.clone();
        self.run(move |b| b.drop_space(&space)).await
    }

    /// Wait until every write that returned before this call is durable
    /// (see [`Backend::commit_blocking`]). Call before acknowledging.
    pub async fn commit(&self) -> Result<(), StoreError> {
        Arc::clone(&self.backend).commit_async().await
    }

    /// [`get`](Self::get) and decode as JSON.
    pub async fn get_json<T: DeserializeOwned + Send + 'static>(
        &self,
        space: &Space,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let (space, key) = (space.clone(), key.to_vec());
        self.run(move |b| {
            b.get(&space, &key)?
                .map(|v| serde_json::from_slice(&v).map_err(StoreError::Codec))
                .transpose()
        })
        .await
    }

    /// Encode as JSON and [`put`](Self::put).
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        space: &Space,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Codec)?;
        self.put(space, key, &bytes).await
    }
}

/// Open the storage under `data_dir` (created durably if missing): sled in
/// `<data_dir>/sled`, blobs in `<data_dir>/blobs`. Also removes temporary
/// files left in the blob store by a crash.
///
/// Only one process (and one `open` per process) may hold a data directory;
/// a second `open` fails because sled locks its data file.
pub fn open(data_dir: &Path) -> Result<(Db, BlobStore), StoreError> {
    durability::create_dir_all_durably(data_dir)?;
    // Opening sled first takes its lock, so no one else is writing blobs
    // while stale temp files are removed.
    let backend = SledBackend::open(&data_dir.join("sled"))?;
    let blobs = BlobStore::open(&data_dir.join("blobs"))?;
    blobs.remove_stale_temp_files()?;
    Ok((Db::new(Arc::new(backend)), blobs))
}
