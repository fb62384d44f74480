//! Durability primitives: the group-commit engine and durable file writes.
//!
//! # Group commit
//!
//! Every mutating backend call bumps a *write sequence* counter after it
//! returns from the storage engine. A commit records the counter value it saw
//! on entry (`seq`); its writes are exactly the first `seq` increments.
//!
//! A dedicated committer thread owns the expensive part (engine flush +
//! `fsync`). Commits that are not already covered send a waiter to it over a
//! channel. The committer blocks for the first waiter, then drains every
//! waiter already queued, reads the write counter (`covering`, which is
//! `>= seq` of every drained waiter, since each waiter read its `seq` before
//! sending), runs one flush + fsync, and on success publishes
//! `durable_seq = covering` and releases the whole batch. Waiters that arrive
//! while a round is running stay in the channel and form the next round, so a
//! waiter is only ever released by a round whose flush began after its call.
//!
//! A commit whose `seq` is already `<= durable_seq` returns at once: a round
//! that read the counter after all of its writes had returned (so its flush
//! began after them) has already completed.
//!
//! If a round fails, the committer *poisons* itself: every later commit fails
//! with the same error. After a failed `fsync` Linux may drop the dirty pages
//! and a later `fsync` can report success without the data being on disk, so
//! the only safe recovery is to restart the process (sled replays its log on
//! open).

use std::error::Error as StdError;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::StoreError;

/// The future returned by [`Backend::commit_async`](super::Backend::commit_async).
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// The flush + fsync step run once per group-commit round.
pub(crate) trait Syncer: Send + 'static {
    /// Make every write that returned before this call durable. Returns how long its
    /// first step (the flush) took, so a slow round's warning can say which step stalled.
    fn sync(&mut self) -> Result<Duration, StoreError>;
}

/// Counters shared between the callers and the committer thread.
#[derive(Default)]
struct Shared {
    /// Incremented after every mutating call returns.
    write_seq: AtomicU64,
    /// Highest `write_seq` value covered by a completed, successful round.
    durable_seq: AtomicU64,
    /// Rounds whose flush + fsync has begun.
    started: AtomicU64,
    /// Rounds completed (successfully or not); one fsync of the data file each.
    completed: AtomicU64,
    /// Rounds that took [`SLOW_ROUND`] or longer.
    slow_rounds: AtomicU64,
    /// The longest round so far, in microseconds.
    slowest_round_us: AtomicU64,
    /// Test hook: extra sleep inside each round, in microseconds.
    test_delay_us: AtomicU64,
}

/// A round (flush + fsync) this long or longer is a disk stall, logged and counted: every
/// write acknowledged in the round waited for it, while an fsync on a healthy SSD takes
/// well under a millisecond (0.1-0.3 ms on the benchmark machine).
pub const SLOW_ROUND: Duration = Duration::from_millis(100);

/// What the committer has done since the store was opened (`GET /healthz`, `storage`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CommitStats {
    /// Rounds run: one flush and one fsync each.
    pub rounds: u64,
    /// Rounds that took [`SLOW_ROUND`] or longer.
    pub slow_rounds: u64,
    /// The longest round, in milliseconds.
    pub slowest_round_ms: f64,
}

/// Where a waiter wants its result delivered.
enum Reply {
    Blocking(mpsc::SyncSender<Result<(), StoreError>>),
    Async(oneshot::Sender<Result<(), StoreError>>),
}

struct Waiter {
    seq: u64,
    reply: Reply,
}

impl Waiter {
    fn release(self, result: Result<(), Arc<dyn StdError + Send + Sync>>) {
        let result = result.map_err(StoreError::CommitFailed);
        // A waiter that gave up (dropped future) is not an error.
        match self.reply {
            Reply::Blocking(tx) => drop(tx.send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
        }
    }
}

/// The group-commit engine: a committer thread plus the shared counters.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
}

fn committer_gone() -> StoreError {
    StoreError::CommitFailed(Arc::from(Box::<dyn StdError + Send + Sync>::from(
        "the storage committer thread has stopped",
    )))
}

impl GroupCommit {
    /// Start the committer thread.
    pub(crate) fn start(name: &str, syncer: impl Syncer) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("{name}-commit"))
            .spawn(move || run_committer(rx, syncer, &thread_shared))?;
        Ok(Self {
            shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Record that a mutating call has returned from the engine.
    pub(crate) fn note_write(&self) {
        self.shared.write_seq.fetch_add(1, SeqCst);
    }

    /// The write sequence a commit issued now must cover, or `None` if it is
    /// already covered by a completed round.
    fn needed(&self) -> Option<u64> {
        let seq = self.shared.write_seq.load(SeqCst);
        (self.shared.durable_seq.load(SeqCst) < seq).then_some(seq)
    }

    fn send(&self, waiter: Waiter) -> Result<(), StoreError> {
        let tx = self.tx.as_ref().ok_or_else(committer_gone)?;
        tx.send(waiter).map_err(|_| committer_gone())
    }

    /// Block until every write that returned before this call is durable.
    pub(crate) fn commit_blocking(&self) -> Result<(), StoreError> {
        let Some(seq) = self.needed() else {
            return Ok(());
        };
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Waiter {
            seq,
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().unwrap_or_else(|_| Err(committer_gone()))
    }

    /// Like [`commit_blocking`](Self::commit_blocking), but waits without
    /// occupying a thread. The covered writes are fixed when this is called,
    /// not when the future is first polled.
    pub(crate) fn commit_future(&self) -> CommitFuture {
        let Some(seq) = self.needed() else {
            return Box::pin(std::future::ready(Ok(())));
        };
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.send(Waiter {
            seq,
            reply: Reply::Async(tx),
        }) {
            return Box::pin(std::future::ready(Err(e)));
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(committer_gone())) })
    }

    /// Completed rounds (each one flush + one fsync of the data file).
    pub(crate) fn rounds(&self) -> u64 {
        self.shared.completed.load(SeqCst)
    }

    /// Rounds run, slow rounds, and the longest round.
    pub(crate) fn stats(&self) -> CommitStats {
        CommitStats {
            rounds: self.rounds(),
            slow_rounds: self.shared.slow_rounds.load(SeqCst),
            slowest_round_ms: self.shared.slowest_round_us.load(SeqCst) as f64 / 1000.0,
        }
    }

    /// Rounds that have begun.
    #[cfg(test)]
    pub(crate) fn rounds_started(&self) -> u64 {
        self.shared.started.load(SeqCst)
    }

    /// Test hook: sleep this long inside every round, after the batch is
    /// fixed and before the flush (simulates a slow disk).
    #[cfg(test)]
    pub(crate) fn set_test_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.test_delay_us.store(us, SeqCst);
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the channel lets the committer finish queued waiters and exit.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("storage committer thread panicked");
            }
        }
    }
}

fn run_committer(rx: mpsc::Receiver<Waiter>, mut syncer: impl Syncer, shared: &Shared) {
    let mut poisoned: Option<Arc<dyn StdError + Send + Sync>> = None;
    let mut batch: Vec<Waiter> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());

        let durable = shared.durable_seq.load(SeqCst);
        if batch.iter().all(|w| w.seq <= durable) {
            // Covered by a round that finished after these waiters queued.
            batch.drain(..).for_each(|w| w.release(Ok(())));
            continue;
        }
        if let Some(err) = &poisoned {
            batch
                .drain(..)
                .for_each(|w| w.release(Err(Arc::clone(err))));
            continue;
        }

        // Every drained waiter read `write_seq` before sending, so this value
        // covers all of them; the flush below starts after all their calls.
        let covering = shared.write_seq.load(SeqCst);
        shared.started.fetch_add(1, SeqCst);
        let began = Instant::now();
        let delay = shared.test_delay_us.load(SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
        let result = syncer.sync();
        let took = began.elapsed();
        shared
            .slowest_round_us
            .fetch_max(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), SeqCst);
        if took >= SLOW_ROUND {
            shared.slow_rounds.fetch_add(1, SeqCst);
            let flush = result.as_ref().copied().unwrap_or_default();
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                flush_ms = flush.as_millis() as u64,
                fsync_ms = took.saturating_sub(flush).as_millis() as u64,
                waiters = batch.len(),
                "slow storage commit: every write acknowledged in this round waited for its flush and fsync (is the disk stalling?)"
            );
        }
        shared.completed.fetch_add(1, SeqCst);
        tracing::trace!(
            waiters = batch.len(),
            ok = result.is_ok(),
            "group commit round"
        );

        let result = match result {
            Ok(_) => {
                shared.durable_seq.fetch_max(covering, SeqCst);
                Ok(())
            }
            // Out of file descriptors: a file or directory could not be *opened* to be
            // synced, so no fsync failed and no dirty page was dropped. These waiters
            // fail (nothing is acknowledged) and the next round tries again.
            Err(e) if out_of_descriptors(&e) => {
                tracing::error!(error = %e, "storage commit could not open a file (out of descriptors); commit refused, later commits retry");
                Err(Arc::new(e) as Arc<dyn StdError + Send + Sync>)
            }
            Err(e) => {
                tracing::error!(error = %e, "storage fsync failed; refusing further commits until restart");
                let err: Arc<dyn StdError + Send + Sync> = Arc::new(e);
                poisoned = Some(Arc::clone(&err));
                Err(err)
            }
        };
        batch.drain(..).for_each(|w| w.release(result.clone()));
    }
}

/// Whether `e` is the process or the system running out of file descriptors (`EMFILE`,
/// `ENFILE` on Linux).
fn out_of_descriptors(e: &StoreError) -> bool {
    /// Linux errno values: too many open files in the process / in the system.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    matches!(e, StoreError::Io(io) if matches!(io.raw_os_error(), Some(EMFILE | ENFILE)))
}

/// `fsync` a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_or_cwd(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `dir` and any missing ancestors, fsyncing each parent whose entries
/// changed so the new directories survive a power loss.
pub(crate) fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_or_cwd(dir);
    if parent != dir && !parent.is_dir() {
        create_dir_all_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Someone else created it concurrently; they may not have fsynced the
        // parent yet, and our caller may acknowledge before they do.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => sync_dir(parent),
        Err(e) => Err(e),
    }
}

/// Marker in the names of temporary files made by [`write_file_durably`].
pub(crate) const TEMP_MARKER: &str = ".tmp-";

/// Whether `name` looks like a temporary file left by [`write_file_durably`].
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(TEMP_MARKER).is_some_and(|(_, suffix)| {
            suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Durably replace the file at `path` with `bytes`.
///
/// Writes a temporary file in the same directory, fsyncs it, renames it over
/// `path` and fsyncs the directory (creating missing directories durably
/// first). Readers see either the old or the new contents, never a mix, and
/// once this returns the new contents survive a crash or power loss.
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .ok_or_else(|| StoreError::InvalidPath(path.display().to_string()))?;
    let dir = parent_or_cwd(path);
    create_dir_all_durably(dir)?;
    let tmp = dir.join(format!(
        ".{}{TEMP_MARKER}{:016x}",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    sync_dir(dir)?;
    Ok(())
}
