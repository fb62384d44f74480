//! Event ingestion: **every tracked event enters here.** The Segment-compatible HTTP
//! routes (`api::ingest`) parse messages with [`segment`], then [`Ingest::accept`] stores
//! them durably and hands them to the [`processor`], which resolves identities, updates
//! profiles and routes events to audiences and journeys.
//!
//! Keys in the tenant's space:
//! - `dd/<bucket:016x>/<messageId>` → the sequence number it was stored under: `messageId`
//!   dedup, remembered for one to two days ([`markers::MESSAGE_IDS`]);
//! - `q/<seq:016x>` → a [`Message`] waiting to be processed (deleted once processed).
//!
//! Acknowledged means durable: `accept` returns only after the group commit that covers
//! its writes, so an event answered with `{"success": true}` survives `kill -9`.

pub mod processor;
pub mod segment;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::store::group::Groups;
use crate::store::markers::{self, Expired};
use crate::store::{Backend, BatchOp, Db, Space, StoreError, UniqueInsert};
pub use segment::{Message, MessageType, Rejection};

/// Prefix of queued messages.
pub const QUEUE_PREFIX: &[u8] = b"q/";
/// How often expired guard markers are deleted: buckets are a day wide, so a sweep a few
/// minutes late keeps a bucket a few minutes longer, and an idle sweep is a few key reads
/// per tenant.
const MARKER_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The queue key of sequence number `seq` (hex keeps keys sorted by number).
pub fn queue_key(seq: u64) -> Vec<u8> {
    format!("q/{seq:016x}").into_bytes()
}

/// The write that queues `m` for processing under sequence number `seq`.
pub fn queue_op(seq: u64, m: &Message) -> Result<BatchOp, StoreError> {
    Ok(BatchOp::put(
        queue_key(seq),
        serde_json::to_vec(m).map_err(StoreError::Codec)?,
    ))
}

/// What became of a set of accepted messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// New messages, now durable and queued.
    pub stored: usize,
    /// Messages whose `messageId` this tenant had already sent (accepted and ignored).
    pub duplicates: usize,
}

/// Per tenant: requests' messages waiting to be stored, each answered with what was new.
type StoreGroups = Groups<AcceptJob, Result<Vec<bool>, StoreError>>;

/// One request's messages, waiting in its tenant's group to be stored.
struct AcceptJob {
    messages: Vec<Message>,
    /// When they were received, ms since the epoch (picks the dedup bucket).
    now: i64,
    /// Whether guards check the keys of before buckets existed too.
    legacy: bool,
}

impl AcceptJob {
    /// The guarded inserts that queue this request's messages, numbered in arrival order.
    fn items(&self, b: &dyn Backend) -> Result<Vec<UniqueInsert>, StoreError> {
        let mut items = Vec::with_capacity(self.messages.len());
        for m in &self.messages {
            let seq = b.next_id()?;
            let (guard, also) = markers::MESSAGE_IDS.guards(&m.message_id, self.now, self.legacy);
            items.push(UniqueInsert {
                guard,
                also,
                guard_value: seq.to_be_bytes().to_vec(),
                ops: vec![queue_op(seq, m)?],
            });
        }
        // Checked here, so that one request's oversized item fails only it.
        items.iter().try_for_each(UniqueInsert::check)?;
        Ok(items)
    }
}

/// Stores the messages of several requests: each request's items are built (a request
/// with a bad item fails alone), then stored together by [`store_group`].
fn store_jobs(
    b: &dyn Backend,
    tenant: &str,
    jobs: Vec<AcceptJob>,
) -> Vec<Result<Vec<bool>, StoreError>> {
    let built: Vec<Result<Vec<UniqueInsert>, StoreError>> =
        jobs.iter().map(|j| j.items(b)).collect();
    let mut group = Vec::with_capacity(built.len());
    let mut answers: Vec<Option<Result<Vec<bool>, StoreError>>> = Vec::with_capacity(built.len());
    for r in built {
        match r {
            Ok(items) => {
                group.push(items);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let mut stored = if group.is_empty() {
        Vec::new()
    } else {
        store_group(b, tenant, group)
    }
    .into_iter();
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                stored.next().unwrap_or_else(|| {
                    Err(StoreError::Backend("a stored request had no answer".into()))
                })
            })
        })
        .collect()
}

/// The ingestion service: durable accept plus the background processor.
pub struct Ingest {
    db: Db,
    clock: SharedClock,
    processor: Arc<processor::Processor>,
    /// Per tenant: requests waiting to be stored, one sled transaction per group.
    groups: Arc<StoreGroups>,
    /// Whether a tenant may still hold guard markers from before buckets existed: true
    /// until a sweep over every tenant has moved them ([`markers`]).
    legacy_markers: Arc<AtomicBool>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

impl Ingest {
    /// Starts the service; the processor picks up whatever was queued before a restart.
    pub fn start(db: Db, clock: SharedClock) -> Arc<Ingest> {
        let processor = processor::Processor::start(db.clone(), clock.clone());
        let ingest = Arc::new(Ingest {
            db,
            clock,
            processor,
            groups: Arc::default(),
            legacy_markers: Arc::new(AtomicBool::new(true)),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&ingest);
            handle.spawn(async move {
                loop {
                    let Some(me) = weak.upgrade() else { break };
                    if let Err(e) = me.expire_markers().await {
                        tracing::error!(error = %e, "expiring guard markers failed");
                    }
                    drop(me);
                    tokio::time::sleep(MARKER_SWEEP_EVERY).await;
                }
            });
        }
        ingest
    }

    /// Deletes every tenant's guard markers (`messageId` dedup, fired timers) older than
    /// the previous bucket and moves markers from before buckets existed into the current
    /// one (see [`markers`]). Runs at start and every `MARKER_SWEEP_EVERY` (10 minutes); tests call
    /// it after moving the clock.
    pub async fn expire_markers(&self) -> Result<Expired, StoreError> {
        let now = self.clock.now_ms();
        let mut total = Expired::default();
        for t in crate::tenants::list(&self.db).await? {
            total += self
                .db
                .run(move |b| {
                    let sp = Space::tenant(&t.id);
                    let mut done = Expired::default();
                    for m in &markers::ALL {
                        done += markers::expire(b, &sp, m, now)?;
                    }
                    Ok(done)
                })
                .await?;
        }
        // Every tenant's old markers are moved now, and none are written any more.
        self.legacy_markers.store(false, Ordering::Relaxed);
        Ok(total)
    }

    /// Whether guard markers from before buckets existed may remain (until the first
    /// [`expire_markers`](Self::expire_markers) over every tenant has moved them): guards
    /// then check their old keys too.
    pub fn legacy_markers_possible(&self) -> bool {
        self.legacy_markers.load(Ordering::Relaxed)
    }

    /// The host clock (for `receivedAt`).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The processor (tests wait on it).
    pub fn processor(&self) -> &Arc<processor::Processor> {
        &self.processor
    }

    /// Stores `messages` for `tenant` durably, skipping `messageId`s already seen, and
    /// wakes the processor. Returns after the commit covering the writes.
    pub async fn accept(&self, tenant: &str, messages: Vec<Message>) -> Result<Stored, StoreError> {
        if messages.is_empty() {
            return Ok(Stored::default());
        }
        let job = AcceptJob {
            messages,
            now: self.clock.now_ms(),
            legacy: self.legacy_markers_possible(),
        };
        let (backend, tenant_owned) = (self.db.backend().clone(), tenant.to_string());
        // Requests of one tenant that arrive while another's are being stored wait, without
        // a thread, and are stored together: one write of their records whatever they hold.
        let written = self
            .groups
            .of(tenant)
            .submit(job, move |jobs| store_jobs(&*backend, &tenant_owned, jobs))
            .await
            .unwrap_or_else(|lost| Err(lost.into()))?;
        let stored = written.iter().filter(|w| **w).count();
        let out = Stored {
            stored,
            duplicates: written.len() - stored,
        };
        // Commit even when every message was a duplicate: the first copy may still be in
        // flight in another request, and a duplicate must not be acknowledged before it.
        self.db.commit().await?;
        if stored > 0 {
            self.processor
                .counters(tenant)
                .accepted
                .fetch_add(stored as u64, std::sync::atomic::Ordering::Relaxed);
            self.processor.wake(tenant);
        }
        Ok(out)
    }
}

/// Stores the items of several requests as one transaction, each `messageId` once (a later
/// request in the group sees an earlier one's guards); answers each request with its own
/// part of the result. A failed transaction fails them all.
fn store_group(
    b: &dyn Backend,
    tenant: &str,
    group: Vec<Vec<UniqueInsert>>,
) -> Vec<Result<Vec<bool>, StoreError>> {
    let lens: Vec<usize> = group.iter().map(Vec::len).collect();
    let all: Vec<UniqueInsert> = group.into_iter().flatten().collect();
    match b.insert_unique(&Space::tenant(tenant), &all) {
        Ok(written) => {
            let mut rest = written.into_iter();
            lens.iter()
                .map(|n| Ok(rest.by_ref().take(*n).collect()))
                .collect()
        }
        Err(e) => lens.iter().map(|_| Err(e.shared())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn message(id: &str, padding: usize) -> Message {
        let mut properties = Map::new();
        properties.insert("padding".into(), Value::String("x".repeat(padding)));
        Message::internal(
            "p1",
            MessageType::Track,
            Some("Viewed".into()),
            properties,
            Map::new(),
            id.into(),
            crate::samples::NOW_MS,
        )
    }

    fn job(messages: Vec<Message>) -> AcceptJob {
        AcceptJob {
            messages,
            now: crate::samples::NOW_MS,
            legacy: false,
        }
    }

    #[test]
    fn a_request_with_an_oversized_message_fails_alone_and_the_rest_of_its_group_is_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = crate::store::SledBackend::open(&dir.path().join("sled")).expect("open sled");
        let answers = store_jobs(
            &b,
            "t1",
            vec![
                job(vec![message("a", 10), message("b", 10)]),
                job(vec![
                    message("c", 10),
                    message("huge", crate::store::MAX_VALUE_BYTES),
                ]),
                job(vec![message("a", 10), message("d", 10)]),
            ],
        );
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].as_ref().ok(), Some(&vec![true, true]));
        assert!(
            matches!(answers[1], Err(StoreError::ValueTooLarge { .. })),
            "the oversized request fails: {:?}",
            answers[1]
        );
        assert_eq!(
            answers[2].as_ref().ok(),
            Some(&vec![false, true]),
            "`a` was stored by the first request of the same group"
        );
        let queued = b
            .scan_prefix(&Space::tenant("t1"), QUEUE_PREFIX, 100)
            .expect("scan");
        let ids: Vec<String> = queued
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice::<Message>(v)
                    .expect("message")
                    .message_id
            })
            .collect();
        assert_eq!(
            ids,
            ["a", "b", "d"],
            "queued in arrival order; `c` was not stored"
        );
    }
}
