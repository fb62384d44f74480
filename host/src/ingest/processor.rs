//! The event processor: takes queued messages of a tenant in order and, for each one, in a
//! single atomic batch, resolves its identities to one profile (creating or merging
//! profiles under the [`crate::identity`] rules, with a merge log), applies identify's
//! traits, updates computed traits, appends the event to the profile's history and
//! removes the message from the queue.
//!
//! One tenant's messages are processed by one task at a time (identity merges need a
//! single writer); tenants run in parallel. A crash mid-way loses nothing: a message
//! leaves the queue in the same batch that records its effects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::segment::{Message, MessageType};
use super::QUEUE_PREFIX;
use crate::clock::SharedClock;
use crate::identity;
use crate::profiles::{self, EventStats, IdentityRecord, ProfileRecord};
use crate::store::{Backend, BatchOp, Db, Space, Staged, StoreError};

/// How often time-sensitive audiences are re-evaluated: windows are counted in whole
/// days, so a few minutes of lateness is invisible.
const AUDIENCE_SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Messages taken from the queue per pass: bounds the time a pass holds the tenant lock.
const CHUNK: usize = 256;

/// Messages per atomic write. An atomic write has a fixed cost (a redo record), so one
/// per message cost more than the message; but applying it holds every other reader and
/// writer of the tenant's tree, ingestion's accept path included. 8 messages (about
/// 14 KB of writes with a journey rule installed) keep that hold short: at 10,000
/// events/s, accept p99 fell from 9.0-11.0 ms with 32 to 7.4-9.7 ms (BENCHMARKS.md,
/// session 14); the drain measured within 4% of it (inside the noise).
const BATCH_MESSAGES: u64 = 8;

/// One merge, kept in the winner's merge log (`mergelog/<winner>/<at:020>/<seq:016x>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergeRecord {
    /// When, Unix ms.
    pub at: i64,
    /// The profile that remains.
    pub into: String,
    /// The profiles merged into it (now gone; their ids redirect).
    pub merged: Vec<String>,
    /// The identities that moved.
    pub identities: Vec<IdentityRecord>,
    /// The message that caused it.
    pub message_id: String,
}

/// A message that could not be processed, kept at `dead/<seq:016x>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadLetter {
    error: String,
    message: Value,
}

/// Counters of one tenant since the process started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages stored by `accept` (duplicates excluded).
    pub accepted: std::sync::atomic::AtomicU64,
    /// Messages processed (including those dead-lettered).
    pub processed: std::sync::atomic::AtomicU64,
    /// Messages moved to the dead-letter list.
    pub dead_lettered: std::sync::atomic::AtomicU64,
    /// Journey work items the journey runner ran (entries, waits ended, timers).
    pub journey_items_run: std::sync::atomic::AtomicU64,
}

/// The background processor.
pub struct Processor {
    db: Db,
    clock: SharedClock,
    loops: Arc<crate::worker::TenantLoops>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    counters: std::sync::RwLock<HashMap<String, Arc<Counters>>>,
    /// Weak: the journey engine holds ingestion, not the other way round.
    journeys: std::sync::OnceLock<std::sync::Weak<crate::journeys::Journeys>>,
    conversations: std::sync::OnceLock<std::sync::Weak<crate::conversations::Conversations>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor").finish_non_exhaustive()
    }
}

impl Processor {
    /// Starts the processor, and a scan that resumes every tenant's leftover queue.
    pub fn start(db: Db, clock: SharedClock) -> Arc<Processor> {
        let p = Arc::new(Processor {
            db,
            clock,
            loops: crate::worker::TenantLoops::background("event processor"),
            locks: Mutex::new(HashMap::new()),
            counters: std::sync::RwLock::new(HashMap::new()),
            journeys: std::sync::OnceLock::new(),
            conversations: std::sync::OnceLock::new(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&p);
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(AUDIENCE_SWEEP_EVERY).await;
                    let Some(me) = weak.upgrade() else { break };
                    let Ok(tenants) = crate::tenants::list(&me.db).await else {
                        continue;
                    };
                    for t in tenants {
                        let me = me.clone();
                        let r =
                            tokio::task::spawn_blocking(move || me.sweep_audiences(&t.id)).await;
                        if let Ok(Err(e)) = r {
                            tracing::error!(error = %e, "audience sweep failed");
                        }
                    }
                }
            });
            let me = p.clone();
            handle.spawn(async move {
                match crate::tenants::list(&me.db).await {
                    Ok(tenants) => {
                        for t in tenants {
                            me.wake(&t.id);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "listing tenants to resume queued events")
                    }
                }
            });
        }
        p
    }

    /// The lock that serialises writes to `tenant`'s profiles (the processor holds it per
    /// pass; erasure takes it too).
    pub fn tenant_lock(&self, tenant: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// `tenant`'s counters since start.
    pub fn counters(&self, tenant: &str) -> Arc<Counters> {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return c.clone();
        }
        self.counters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// Makes sure a task is processing `tenant`'s queue.
    pub fn wake(self: &Arc<Self>, tenant: &str) {
        let me = self.clone();
        self.loops
            .wake(tenant, Arc::new(move |t: &str| me.process_pass(t)));
    }

    /// Waits until `tenant`'s queue is empty and no pass is running (tests and tools).
    pub async fn drain(&self, tenant: &str) -> Result<(), StoreError> {
        let sp = Space::tenant(tenant);
        loop {
            let running = self.loops.busy(tenant);
            if !running && self.db.scan_prefix(&sp, QUEUE_PREFIX, 1).await?.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Processes up to [`CHUNK`] queued messages; returns how many it took.
    fn process_pass(&self, tenant: &str) -> Result<usize, StoreError> {
        let lock = self.tenant_lock(tenant);
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let backend = self.db.backend();
        let b = backend.as_ref();
        let sp = Space::tenant(tenant);
        let entries = b.scan_prefix(&sp, QUEUE_PREFIX, CHUNK)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let counters = self.counters(tenant);
        let journeys = self.journeys.get().and_then(std::sync::Weak::upgrade);
        let routes = journeys
            .as_ref()
            .map(|j| j.routes(tenant))
            .unwrap_or_default();
        let mut journey_lanes = std::collections::BTreeSet::new();
        let chat_starts = self
            .conversations
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map(|c| c.start_events(tenant))
            .unwrap_or_default();
        // Audience definitions change only under the tenant lock, which this pass holds.
        let view = TenantView {
            routes,
            audiences: crate::audience::engine::load_all(b, &sp)?,
        };
        // Messages are applied in order, each reading what the earlier ones wrote, and
        // committed together every `BATCH_MESSAGES`.
        let staged = Staged::new(backend.clone(), sp.clone());
        let mut in_batch = 0u64;
        for (key, value) in &entries {
            let seq = std::str::from_utf8(&key[QUEUE_PREFIX.len()..])
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            let result = serde_json::from_slice::<Message>(value)
                .map_err(|e| ApplyError::Invalid(format!("undecodable queued message: {e}")))
                .and_then(|m| {
                    let mut next_seq = || b.next_id();
                    let mut ops = apply(
                        &staged,
                        &sp,
                        &m,
                        seq,
                        self.clock.now_ms(),
                        &view,
                        &mut next_seq,
                    )?;
                    // A `Payment Failed` that starts a chatbot flow: queued for the
                    // conversation engine with the event, in the same batch.
                    if m.kind == MessageType::Track
                        && m.event.as_ref().is_some_and(|e| chat_starts.contains(e))
                    {
                        ops.push(BatchOp::put(format!("cvs/{seq:016x}"), value.clone()));
                    }
                    Ok(ops)
                });
            let mut ops = match result {
                Ok(ops) => ops,
                Err(ApplyError::Store(e)) => return Err(e),
                Err(ApplyError::Invalid(error)) => {
                    counters
                        .dead_lettered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(tenant, seq, %error, "event moved to the dead-letter list");
                    let dead = DeadLetter {
                        error,
                        message: serde_json::from_slice(value).unwrap_or(Value::Null),
                    };
                    let bytes = serde_json::to_vec(&dead).map_err(StoreError::Codec)?;
                    vec![BatchOp::put(format!("dead/{seq:016x}"), bytes)]
                }
            };
            journey_lanes.extend(ops.iter().filter_map(|op| match op {
                BatchOp::Put { key, .. } => crate::journeys::engine::lane_of_key(key),
                BatchOp::Delete { .. } => None,
            }));
            ops.push(BatchOp::delete(key.clone()));
            staged.stage(ops)?;
            in_batch += 1;
            if in_batch == BATCH_MESSAGES {
                staged.commit()?;
                counters
                    .processed
                    .fetch_add(in_batch, std::sync::atomic::Ordering::Relaxed);
                in_batch = 0;
            }
        }
        staged.commit()?;
        counters
            .processed
            .fetch_add(in_batch, std::sync::atomic::Ordering::Relaxed);
        if !journey_lanes.is_empty() {
            if let Some(j) = journeys {
                j.wake_lanes(tenant, journey_lanes);
            }
        }
        Ok(entries.len())
    }

    /// Re-evaluates `tenant`'s time-sensitive audiences (event windows, "not in 30 days")
    /// for every profile, queues `Audience Entered`/`Exited` events for the changes and
    /// wakes processing. Returns how many profiles changed.
    pub fn sweep_audiences(self: &Arc<Self>, tenant: &str) -> Result<usize, StoreError> {
        let lock = self.tenant_lock(tenant);
        let changed = {
            let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let b = self.db.backend().as_ref();
            let sp = Space::tenant(tenant);
            let audiences: Vec<_> = crate::audience::engine::load_all(b, &sp)?
                .into_iter()
                .filter(|a| a.predicate.time_sensitive())
                .collect();
            if audiences.is_empty() {
                return Ok(0);
            }
            let now = self.clock.now_ms();
            let changes = crate::audience::engine::sweep(b, &sp, &audiences, now)?;
            let mut ops = Vec::new();
            for (pid, cs) in &changes {
                for (n, c) in cs.iter().enumerate() {
                    let e = audience_event(pid, c, &format!("sweep:{now}:{n}"), now);
                    ops.push(super::queue_op(b.next_id()?, &e)?);
                }
            }
            b.apply_batch(&sp, &ops)?;
            changes.len()
        };
        if changed > 0 {
            self.wake(tenant);
        }
        Ok(changed)
    }

    /// Hooks the conversation engine in (once, at start): track events that start a
    /// chatbot flow are queued for it in the same batch that applies them.
    pub fn set_conversations(&self, c: &Arc<crate::conversations::Conversations>) {
        let _ = self.conversations.set(Arc::downgrade(c));
    }

    /// Hooks the journey engine in (once, at start).
    pub fn set_journeys(&self, journeys: &Arc<crate::journeys::Journeys>) {
        let _ = self.journeys.set(Arc::downgrade(journeys));
    }
}

/// What one pass knows about the tenant: its journeys and audience definitions.
struct TenantView {
    routes: crate::journeys::engine::Routes,
    audiences: Vec<crate::audience::engine::AudienceDef>,
}

/// Why a message could not be applied.
#[derive(Debug)]
enum ApplyError {
    /// Storage failed: retry later.
    Store(StoreError),
    /// The message cannot be applied: dead-letter it.
    Invalid(String),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

impl From<profiles::ProfileError> for ApplyError {
    fn from(e: profiles::ProfileError) -> Self {
        match e {
            profiles::ProfileError::Store(e) => ApplyError::Store(e),
            other => ApplyError::Invalid(other.to_string()),
        }
    }
}

/// The profile ids owning `ids`, first-seen order, deduplicated.
fn owners(b: &dyn Backend, sp: &Space, ids: &[IdentityRecord]) -> Result<Vec<String>, ApplyError> {
    let mut out: Vec<String> = Vec::new();
    for i in ids {
        if let Some(pid) = profiles::owner(b, sp, &i.kind, &i.value)? {
            if !out.contains(&pid) {
                out.push(pid);
            }
        }
    }
    Ok(out)
}

/// The winner's stats for `name` in `overlay`, loaded from the store on first use (not
/// for a `fresh` profile, created by this message: nothing is stored under its new id).
fn stats_for<'a>(
    b: &dyn Backend,
    sp: &Space,
    pid: &str,
    name: &str,
    fresh: bool,
    overlay: &'a mut HashMap<String, EventStats>,
) -> Result<&'a mut EventStats, ApplyError> {
    if !overlay.contains_key(name) {
        let stored = if fresh {
            None
        } else {
            b.get(sp, &profiles::stats_key(pid, name))?
        };
        let st = match stored {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => EventStats::default(),
        };
        overlay.insert(name.to_string(), st);
    }
    Ok(overlay.entry(name.to_string()).or_default())
}

/// The event name a message counts under in computed traits, if any.
fn stats_name(m: &Message) -> Option<String> {
    match m.kind {
        MessageType::Track => m.event.clone(),
        MessageType::Page => Some("Page Viewed".into()),
        MessageType::Screen => Some("Screen Viewed".into()),
        _ => None,
    }
}

/// Revenue of an `Order Completed` event: `revenue`, else `total` (numbers or numeric
/// strings; VND has no minor unit, so whole numbers are common).
fn revenue(m: &Message) -> Option<f64> {
    if m.event.as_deref() != Some("Order Completed") {
        return None;
    }
    ["revenue", "total"]
        .iter()
        .find_map(|k| match m.properties.get(*k) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
}

/// Resolves, merges and updates; returns the batch that records the message's effects.
fn apply(
    b: &dyn Backend,
    sp: &Space,
    m: &Message,
    seq: u64,
    now: i64,
    tenant: &TenantView,
    next_seq: &mut dyn FnMut() -> Result<u64, StoreError>,
) -> Result<Vec<BatchOp>, ApplyError> {
    let (routes, audiences) = (&tenant.routes, tenant.audiences.as_slice());
    let mut ids = identity::from_message(m);
    // Alias links `previousId` (an old user id or an anonymous id) to `userId`: it joins
    // the event's identities last, so it is the first given up if a merge would break a limit.
    if m.kind == MessageType::Alias {
        if let Some(prev) = &m.previous_id {
            let linked = [identity::USER_ID, identity::ANONYMOUS_ID]
                .iter()
                .filter_map(|k| identity::normalize(k, prev))
                .find(|i| matches!(profiles::owner(b, sp, &i.kind, &i.value), Ok(Some(_))))
                .or_else(|| identity::normalize(identity::ANONYMOUS_ID, prev));
            if let Some(l) = linked {
                if !ids.contains(&l) {
                    ids.push(l);
                }
            }
        }
    }
    let mut matched = Vec::new();
    if let Some(pid) = &m.profile_id {
        // Weft's own event for a known profile (a journey's traits or emit): no resolution.
        let pid = profiles::current_id(b, sp, pid)?;
        match profiles::get(b, sp, &pid)? {
            Some(p) => matched.push(p),
            None => {
                return Err(ApplyError::Invalid(format!(
                    "profile {pid} no longer exists (erased)"
                )))
            }
        }
    } else if ids.is_empty() {
        return Err(ApplyError::Invalid(
            "the event carries no usable identity (every id is a placeholder)".into(),
        ));
    } else {
        matched = resolve(b, sp, &mut ids)?;
    }

    apply_resolved(
        b, sp, m, seq, now, ids, matched, routes, audiences, next_seq,
    )
}

/// The `Audience Entered` / `Audience Exited` event of a membership change.
pub fn audience_event(
    profile_id: &str,
    c: &crate::audience::engine::Change,
    cause: &str,
    now: i64,
) -> Message {
    let name = if c.entered {
        "Audience Entered"
    } else {
        "Audience Exited"
    };
    let props = serde_json::json!({"audience": c.audience, "audience_name": c.name});
    Message::internal(
        profile_id,
        MessageType::Track,
        Some(name.into()),
        props.as_object().cloned().unwrap_or_default(),
        serde_json::Map::new(),
        format!(
            "aud:{}:{}:{cause}",
            c.audience,
            if c.entered { "in" } else { "out" }
        ),
        now,
    )
}

/// Most consent entries read per object of one event: keeps a profile's ledger small.
const MAX_CONSENT_ENTRIES: usize = 32;

/// Matches `ids` to profiles, giving up the weakest incoming identity while the merge would
/// exceed a per-kind limit (Segment Unify's rule); with one identity left, it attaches
/// without merging.
fn resolve(
    b: &dyn Backend,
    sp: &Space,
    ids: &mut Vec<IdentityRecord>,
) -> Result<Vec<ProfileRecord>, ApplyError> {
    let mut matched;
    loop {
        matched = Vec::new();
        for pid in owners(b, sp, ids)? {
            if let Some(p) = profiles::get(b, sp, &pid)? {
                matched.push(p);
            }
        }
        let mut union: Vec<IdentityRecord> = Vec::new();
        for i in matched
            .iter()
            .flat_map(|p| p.identities.iter())
            .chain(ids.iter())
        {
            if !union.contains(i) {
                union.push(i.clone());
            }
        }
        if identity::over_limit(&union).is_none() {
            break;
        }
        if ids.len() == 1 {
            // The one identity owns a profile; keep just that profile, add nothing.
            matched.truncate(1);
            ids.clear();
            break;
        }
        ids.pop();
    }
    Ok(matched)
}

/// The profile-index entry (`cvp/`) for the conversation a track event names in
/// `properties.conversation_id`, when that conversation's address is one of `rec`'s
/// identities and the entry is missing. A conversation stored before its visitor had a
/// profile (the events that create the profile were still queued) is otherwise linked only
/// at its next turn, and erasure, which finds a profile's conversations through that index,
/// would leave it behind. Checking the address keeps an event from claiming another
/// visitor's conversation.
fn conversation_link(
    b: &dyn Backend,
    sp: &Space,
    m: &Message,
    rec: &ProfileRecord,
    fresh: bool,
) -> Result<Option<BatchOp>, StoreError> {
    let named = (m.kind == MessageType::Track)
        .then(|| m.properties.get("conversation_id").and_then(Value::as_str))
        .flatten();
    let Some(conv) = named else {
        return Ok(None);
    };
    let Some(c) = crate::conversations::store::get(b, sp, conv)? else {
        return Ok(None);
    };
    let ours = rec
        .identities
        .iter()
        .any(|i| i.kind == c.address.kind && i.value == c.address.value);
    let key = crate::conversations::store::profile_index_key(&rec.id, conv);
    // A profile created by this event has no entries yet.
    if !ours || (!fresh && b.get(sp, &key)?.is_some()) {
        return Ok(None);
    }
    Ok(Some(BatchOp::put(key, Vec::new())))
}

/// Applies `m` to the `matched` profiles (merging them) with the new identities `ids`.
#[allow(clippy::too_many_arguments)]
fn apply_resolved(
    b: &dyn Backend,
    sp: &Space,
    m: &Message,
    seq: u64,
    now: i64,
    ids: Vec<IdentityRecord>,
    mut matched: Vec<ProfileRecord>,
    routes: &crate::journeys::engine::Routes,
    audiences: &[crate::audience::engine::AudienceDef],
    next_seq: &mut dyn FnMut() -> Result<u64, StoreError>,
) -> Result<Vec<BatchOp>, ApplyError> {
    let mut ops = Vec::new();
    // Event stats changed by this message, by name (merges and the event itself).
    let mut stats: HashMap<String, EventStats> = HashMap::new();
    // The winner: the profile holding a user id, else the oldest.
    matched.sort_by_key(|p| {
        let has_user = p.identities.iter().any(|i| i.kind == identity::USER_ID);
        (!has_user, p.created_at, p.id.clone())
    });
    // A profile created by this message has a new random id: no key holds it yet, so
    // reads of its stats, audiences and journeys are skipped (most of a first event's reads).
    let fresh = matched.is_empty();
    let mut rec = if fresh {
        ProfileRecord::new(profiles::new_id(), m.timestamp.min(now))
    } else {
        matched.remove(0)
    };
    let winner = rec.id.clone();
    // Identity links already pointing at the winner need no rewrite.
    let linked: Vec<IdentityRecord> = rec.identities.clone();

    // Merge the others into the winner.
    if !matched.is_empty() {
        let mut moved = Vec::new();
        for loser in &matched {
            for i in &loser.identities {
                if !rec.identities.contains(i) {
                    rec.identities.push(i.clone());
                    moved.push(i.clone());
                }
            }
            for (k, v) in &loser.traits {
                rec.traits.entry(k.clone()).or_insert_with(|| v.clone());
            }
            rec.timezone = rec.timezone.take().or_else(|| loser.timezone.clone());
            rec.locale = rec.locale.take().or_else(|| loser.locale.clone());
            rec.created_at = rec.created_at.min(loser.created_at);
            rec.computed.merge(&loser.computed);
            ops.extend(profiles::move_data_ops(b, sp, &loser.id, &winner)?);
            ops.extend(crate::journeys::engine::rehome_ops(
                b, sp, &loser.id, &winner, next_seq,
            )?);
            for (key, value) in b.scan_prefix(sp, &profiles::stats_prefix(&loser.id), usize::MAX)? {
                let name = String::from_utf8_lossy(&key[profiles::stats_prefix(&loser.id).len()..])
                    .into_owned();
                let theirs: EventStats = serde_json::from_slice(&value).unwrap_or_default();
                stats_for(b, sp, &winner, &name, fresh, &mut stats)?.merge(&theirs);
                ops.push(BatchOp::delete(key));
            }
        }
        let record = MergeRecord {
            at: now,
            into: winner.clone(),
            merged: matched.iter().map(|p| p.id.clone()).collect(),
            identities: moved,
            message_id: m.message_id.clone(),
        };
        ops.push(BatchOp::put(
            format!("mergelog/{winner}/{now:020}/{seq:016x}"),
            serde_json::to_vec(&record).map_err(StoreError::Codec)?,
        ));
    }

    // New identities.
    for i in &ids {
        if !rec.identities.contains(i) {
            rec.identities.push(i.clone());
        }
    }
    identity::sort_by_priority(&mut rec.identities);
    for i in rec.identities.iter().filter(|i| !linked.contains(i)) {
        ops.push(BatchOp::put(
            profiles::ident_key(&i.kind, &i.value),
            winner.as_bytes().to_vec(),
        ));
    }
    ops.extend(conversation_link(b, sp, m, &rec, fresh)?);

    // Identify merges traits (a `null` removes one); only identify does.
    if m.kind == MessageType::Identify {
        for (k, v) in &m.traits {
            if v.is_null() {
                rec.traits.remove(k);
            } else {
                rec.traits.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(tz) = m.context.get("timezone").and_then(Value::as_str) {
        if tz.parse::<chrono_tz::Tz>().is_ok() {
            rec.timezone = Some(tz.to_string());
        }
    }
    if let Some(l) = m.context.get("locale").and_then(Value::as_str) {
        rec.locale = Some(l.to_string());
    }
    // Segment's consent object: `context.consent.categoryPreferences` (category → bool)
    // records the decision for every channel; `context.consent.channels` (Weft's
    // extension: channel → {purpose → bool}) for one channel.
    if let Some(consent) = m.context.get("consent") {
        let mut set = |channel: &str, purpose: &str, granted: bool| {
            rec.consents
                .retain(|c| !(c.channel == channel && c.purpose == purpose));
            rec.consents.push(profiles::ConsentRecord {
                channel: channel.to_string(),
                purpose: purpose.to_string(),
                granted,
                source: "context.consent".into(),
                at: m.timestamp,
            });
        };
        if let Some(Value::Object(prefs)) = consent.get("categoryPreferences") {
            for (purpose, v) in prefs.iter().take(MAX_CONSENT_ENTRIES) {
                if let Some(granted) = v.as_bool() {
                    set("*", purpose, granted);
                }
            }
        }
        if let Some(Value::Object(channels)) = consent.get("channels") {
            for (channel, purposes) in channels.iter().take(MAX_CONSENT_ENTRIES) {
                if let Value::Object(ps) = purposes {
                    for (purpose, v) in ps.iter().take(MAX_CONSENT_ENTRIES) {
                        if let Some(granted) = v.as_bool() {
                            set(channel, purpose, granted);
                        }
                    }
                }
            }
        }
    }

    // Computed traits.
    rec.computed.seen(m.timestamp);
    if let Some(r) = revenue(m) {
        rec.computed.lifetime_revenue += r;
        rec.computed.orders += 1;
    }
    if let Some(name) = stats_name(m) {
        stats_for(b, sp, &winner, &name, fresh, &mut stats)?.record(m.timestamp);
    }
    for (name, st) in &stats {
        ops.push(BatchOp::put(
            profiles::stats_key(&winner, name),
            serde_json::to_vec(st).map_err(StoreError::Codec)?,
        ));
    }
    rec.updated_at = now;

    // Audiences: re-evaluated with this event's effects (and a merge's) in view.
    if !audiences.is_empty() || !matched.is_empty() {
        let mut known = if fresh {
            Default::default()
        } else {
            crate::audience::engine::load_stats(b, sp, &winner, audiences)?
        };
        for (name, st) in &stats {
            known.insert(name.clone(), st.clone());
        }
        let lookup = |name: &str| known.get(name).cloned();
        let facts = crate::audience::engine::ProfileFacts {
            profile: &rec,
            stats: &lookup,
        };
        let losers: Vec<String> = matched.iter().map(|p| p.id.clone()).collect();
        let (audience_ops, changes) =
            crate::audience::engine::reevaluate_merged(b, sp, audiences, &facts, &losers, now)?;
        ops.extend(audience_ops);
        for (n, c) in changes.iter().enumerate() {
            let e = audience_event(&winner, c, &format!("{}:{n}", m.message_id), now);
            ops.push(super::queue_op(next_seq()?, &e)?);
        }
    }

    // History.
    ops.push(BatchOp::put(
        profiles::event_key(&winner, m.timestamp, seq),
        serde_json::to_vec(m).map_err(StoreError::Codec)?,
    ));
    let bytes = serde_json::to_vec(&rec).map_err(StoreError::Codec)?;
    if bytes.len() > profiles::MAX_PROFILE_BYTES {
        return Err(ApplyError::Invalid(format!(
            "the profile would be {} bytes; the limit is {} (too many or too large traits)",
            bytes.len(),
            profiles::MAX_PROFILE_BYTES
        )));
    }
    ops.push(BatchOp::put(profiles::profile_key(&winner), bytes));
    ops.extend(crate::journeys::route(
        b, sp, routes, &winner, fresh, m, next_seq,
    )?);
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, SledBackend, UniqueInsert, UpdateFn, WriteObserver};

    /// A backend that records the keys and prefixes it is asked to read.
    struct Reads {
        inner: SledBackend,
        read: Mutex<Vec<Vec<u8>>>,
    }

    impl Reads {
        fn saw(&self, key: &[u8]) {
            self.read.lock().unwrap().push(key.to_vec());
        }
        /// Whether any read named `text`, and forgets the reads.
        fn took(&self, text: &str) -> bool {
            std::mem::take(&mut *self.read.lock().unwrap())
                .iter()
                .any(|k| String::from_utf8_lossy(k).contains(text))
        }
    }

    impl Backend for Reads {
        fn get(&self, s: &Space, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.saw(k);
            self.inner.get(s, k)
        }
        fn put(&self, s: &Space, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
            self.inner.put(s, k, v)
        }
        fn delete(&self, s: &Space, k: &[u8]) -> Result<(), StoreError> {
            self.inner.delete(s, k)
        }
        fn scan_prefix(&self, s: &Space, p: &[u8], n: usize) -> Result<Vec<Entry>, StoreError> {
            self.saw(p);
            self.inner.scan_prefix(s, p, n)
        }
        fn scan_range(
            &self,
            s: &Space,
            a: &[u8],
            z: &[u8],
            n: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.saw(a);
            self.inner.scan_range(s, a, z, n)
        }
        fn scan_prefix_rev(&self, s: &Space, p: &[u8], n: usize) -> Result<Vec<Entry>, StoreError> {
            self.saw(p);
            self.inner.scan_prefix_rev(s, p, n)
        }
        fn scan_prefix_rev_before(
            &self,
            s: &Space,
            p: &[u8],
            before: &[u8],
            n: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.saw(p);
            self.inner.scan_prefix_rev_before(s, p, before, n)
        }
        fn compare_and_swap(
            &self,
            s: &Space,
            k: &[u8],
            old: Option<&[u8]>,
            new: Option<&[u8]>,
        ) -> Result<bool, StoreError> {
            self.saw(k);
            self.inner.compare_and_swap(s, k, old, new)
        }
        fn update(
            &self,
            s: &Space,
            k: &[u8],
            f: &mut UpdateFn<'_>,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.saw(k);
            self.inner.update(s, k, f)
        }
        fn apply_batch(&self, s: &Space, ops: &[BatchOp]) -> Result<(), StoreError> {
            self.inner.apply_batch(s, ops)
        }
        fn insert_unique(
            &self,
            s: &Space,
            items: &[UniqueInsert],
        ) -> Result<Vec<bool>, StoreError> {
            self.inner.insert_unique(s, items)
        }
        fn next_id(&self) -> Result<u64, StoreError> {
            self.inner.next_id()
        }
        fn drop_space(&self, s: &Space) -> Result<(), StoreError> {
            self.inner.drop_space(s)
        }
        fn commit_blocking(&self) -> Result<(), StoreError> {
            self.inner.commit_blocking()
        }
        fn observe(&self, o: Arc<dyn WriteObserver>) {
            self.inner.observe(o)
        }
    }

    fn product_added(user: &str, n: u64) -> Message {
        let v = serde_json::json!({"type": "track", "event": "Product Added", "userId": user,
            "messageId": format!("m{n}"), "properties": {"cart_id": "c1"}});
        let len = v.to_string().len();
        super::super::segment::parse_message(
            &v,
            len,
            None,
            &Default::default(),
            1_790_000_000_000,
            || "gen".into(),
        )
        .expect("a valid track call")
    }

    #[test]
    fn a_new_profiles_first_event_reads_nothing_under_its_id_and_its_second_does() {
        let dir = tempfile::tempdir().unwrap();
        let b = Reads {
            inner: SledBackend::open(&dir.path().join("sled")).unwrap(),
            read: Mutex::new(Vec::new()),
        };
        let sp = Space::tenant("t1");
        let view = TenantView {
            routes: Vec::new(),
            audiences: Vec::new(),
        };
        let mut seq = 0;
        let mut next_seq = || {
            seq += 1;
            Ok(seq)
        };
        let now = 1_790_000_000_000;

        let ops = apply(
            &b,
            &sp,
            &product_added("42", 1),
            1,
            now,
            &view,
            &mut next_seq,
        )
        .unwrap();
        b.apply_batch(&sp, &ops).unwrap();
        let pid = profiles::owner(&b.inner, &sp, identity::USER_ID, "42")
            .unwrap()
            .expect("the event made a profile");
        assert!(
            !b.took(&pid),
            "a new profile's first event read keys of its new id"
        );

        let ops = apply(
            &b,
            &sp,
            &product_added("42", 2),
            2,
            now,
            &view,
            &mut next_seq,
        )
        .unwrap();
        assert!(
            b.took(&pid),
            "a returning profile's event must read its stats and journey waits"
        );
        b.apply_batch(&sp, &ops).unwrap();
        let stats: EventStats = serde_json::from_slice(
            &b.inner
                .get(&sp, &profiles::stats_key(&pid, "Product Added"))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(stats.total, 2, "both events are counted");
    }
}
