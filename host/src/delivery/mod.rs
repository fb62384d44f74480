//! The send pipeline: **every message to a customer leaves here.** A send intent cleared by
//! the messaging policy ([`crate::messaging::outbox`]) becomes due; the worker finds the
//! channel adapter for its channel, degrades the content to what the channel shows, calls
//! the adapter's `send`, and records the outcome in the delivery log ([`log`]).
//!
//! - Fallback: an adapter answering `outside-window` or `quota-exceeded`, a channel with no
//!   adapter, and a profile with no address there move the intent to its next preferred
//!   channel (the policy runs again for that channel's consent).
//! - Retries: `retryable` and `rate-limited` answers, and an adapter that traps before any
//!   request got an answer, retry with exponential backoff and jitter (honouring the
//!   provider's retry-after) up to [`MAX_ATTEMPTS`], then the intent is dead-lettered.
//! - Never twice: an `ambiguous` answer, or a trap after a request may have reached the
//!   provider, is recorded as `ambiguous` and not retried.
//! - `auth-expired`: the host calls the adapter's `refresh-credentials` once (one refresh
//!   per installation at a time; a send that finds the secrets already rotated just
//!   retries) and sends again.
//!
//! A tenant with no channel adapter at all keeps the built-in outbox behaviour: intents stay
//! `queued` for API readers. Provider webhooks come in through [`webhook`].

pub mod content;
pub mod intake;
pub mod links;
pub mod log;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::clock::SharedClock;
use crate::ingest::{Ingest, Message, MessageType};
use crate::kind::PluginKind;
use crate::messaging::outbox::{self, OutboxRecord, OutboxStatus};
use crate::messaging::policy::{self, Decision};
use crate::profiles::{self, IdentityRecord, ProfileRecord};
use crate::registry::{Active, Registry};
use crate::runtime::bindings::exports::adapter::{
    ChannelCapabilities, OutboundMessage, Recipient, SendError, SendOk, StatusGranularity,
};
use crate::runtime::bindings::types::{ChannelKind, Identity, MessageCategory};
use crate::runtime::invoke::block_on;
use crate::runtime::{Call, Output};
use crate::store::group::Groups;
use crate::store::{Backend, BatchOp, CommitFuture, Db, Space, StoreError};
use crate::worker::TenantLoops;

/// Tries on one channel before the intent is dead-lettered (first try plus five retries:
/// about a minute of backoff, enough for a provider blip, short of a stale message).
pub const MAX_ATTEMPTS: u32 = 6;
/// First retry delay; doubles per attempt (1, 2, 4, 8, 16 s) before jitter.
const RETRY_BASE_MS: i64 = 1_000;
/// Longest wait between tries, whatever a provider's retry-after says: a message an hour
/// late is worse than a dead letter an operator can replay.
const RETRY_CAP_MS: i64 = 15 * 60 * 1000;
/// Attempts taken per pass: bounds one pass's time; the loop runs again while work is left.
const PASS_CHUNK: usize = 1024;
/// Sends one tenant has in the air at once. A send mostly waits for its provider (tens to
/// hundreds of ms), so throughput is this many per provider round trip: 256 sustain 5,000
/// sends/s against a provider answering in 50 ms. A waiting send holds no thread, only
/// its instance's slot and fiber stack.
const SEND_CONCURRENCY: usize = 256;
/// Share of the instance pool that sends of all tenants may hold at once (1 in 4): the
/// rest stays free for webhooks, journeys, chat and personalization, which a burst of
/// sends to a slow provider would otherwise starve.
const SEND_POOL_SHARE: usize = 4;
/// How often the scheduler looks for due attempts (retries wait a second or more).
const SCHEDULER_TICK: Duration = Duration::from_millis(20);

/// Prefix of sends in flight: `dlvflight/<intent>` → the pass that took it. A pass writes
/// the markers of the attempts it takes durably (one fsync per batch taken) before calling
/// any adapter, and each outcome removes its marker. A marker from another pass means the
/// server stopped mid-send: the outcome is unknown, so the intent becomes `ambiguous`,
/// never sent twice (a crash can so mark at most the attempts one pass had taken and not
/// written, [`SEND_CONCURRENCY`] and the answers being written, that had not gone out).
const FLIGHT_PREFIX: &str = "dlvflight/";

/// Where a message's recipient last wrote on a channel: `lastin/<kind>:<value>` → Unix ms.
pub fn last_inbound_key(kind: &str, value: &str) -> Vec<u8> {
    format!("lastin/{kind}:{value}").into_bytes()
}

/// (tenant, plugin name).
type Installation = (String, String);

/// The delivery service.
pub struct Deliveries {
    db: Db,
    clock: SharedClock,
    registry: Arc<Registry>,
    ingest: Arc<Ingest>,
    loops: Arc<TenantLoops>,
    /// Adapter capabilities by (tenant, plugin, digest): asked once per version.
    caps: Mutex<HashMap<(String, String, String), ChannelCapabilities>>,
    /// Sends in the air, all tenants together: a [`SEND_POOL_SHARE`] of the instance pool.
    send_slots: tokio::sync::Semaphore,
    /// One credentials refresh per installation at a time (an async lock: the sends that
    /// wait for it share one thread).
    refreshing: Mutex<HashMap<Installation, Arc<tokio::sync::Mutex<()>>>>,
    /// Per tenant: serialises the delivery log's writes after a send and webhook events
    /// (storage work only; sends run outside it).
    log_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Per tenant: webhooks whose events wait to be applied, one group per sled batch.
    webhook_groups: Groups<webhook::WebhookJob, Result<(bool, bool), StoreError>>,
    /// Per tenant: messages from `POST /v1/messages` waiting to be recorded.
    intake_groups: Groups<intake::Intake, Result<Option<(bool, OutboxRecord)>, StoreError>>,
    /// This process's id in in-flight markers, and the pass counter.
    boot: u64,
    passes: std::sync::atomic::AtomicU64,
    /// Signs tracked links, when the server has a public URL.
    links: Option<links::LinkSigner>,
    me: OnceLock<Weak<Deliveries>>,
    /// The conversation engine, which new inbound messages are handed to.
    chat: OnceLock<Weak<crate::conversations::Conversations>>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").finish_non_exhaustive()
    }
}

/// What an attempt decided, before it is written.
struct Attempt {
    ops: Vec<BatchOp>,
    events: bool,
}

/// One attempt's outcome, written with the rest of its pass.
struct Decided {
    out: Attempt,
    /// The record to store (none when the attempt only dropped its due key).
    rec: Option<OutboxRecord>,
    /// The adapter and provider id of an accepted send.
    sent_through: Option<(String, String)>,
}

/// An attempt that found its record, profile and first channel.
struct Begun {
    out: Attempt,
    rec: OutboxRecord,
    profile: ProfileRecord,
}

/// An attempt with a message for an adapter.
struct Sending {
    begun: Begun,
    /// Index of the adapter in the pass's list.
    adapter: usize,
    /// The recipient's identity on the channel.
    address: IdentityRecord,
    /// The message, until it is handed to the adapter.
    msg: Option<OutboundMessage>,
}

/// Where an attempt stands.
enum Step {
    /// Decided; written with the rest of the pass.
    Done(Box<Decided>),
    /// Waiting for its adapter's answer.
    Send(Box<Sending>),
}

/// Attempts written per sled batch: one batch per attempt made the store's write lock
/// the pipeline's bottleneck; 64 keeps a batch around a few hundred KB.
const WRITE_CHUNK: usize = 64;

impl Deliveries {
    /// Starts the service and its scheduler (which also resumes work left by a restart).
    pub fn start(
        db: Db,
        clock: SharedClock,
        registry: Arc<Registry>,
        ingest: Arc<Ingest>,
        public_url: Option<&str>,
    ) -> Arc<Deliveries> {
        let links =
            public_url.map(|u| links::LinkSigner::new(u, registry.derive_key("click-links")));
        let pool = registry.runtime().config().pool_instances as usize;
        let send_slots = tokio::sync::Semaphore::new((pool / SEND_POOL_SHARE).max(1));
        let d = Arc::new(Deliveries {
            db,
            clock,
            registry,
            ingest,
            loops: TenantLoops::new("delivery worker"),
            caps: Mutex::new(HashMap::new()),
            send_slots,
            refreshing: Mutex::new(HashMap::new()),
            log_locks: Mutex::new(HashMap::new()),
            webhook_groups: Groups::default(),
            intake_groups: Groups::default(),
            boot: rand::random(),
            passes: std::sync::atomic::AtomicU64::new(0),
            links,
            me: OnceLock::new(),
            chat: OnceLock::new(),
        });
        let _ = d.me.set(Arc::downgrade(&d));
        let weak = Arc::downgrade(&d);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEDULER_TICK).await;
                let Some(d) = weak.upgrade() else { break };
                if let Err(e) = d.wake_due().await {
                    tracing::error!(error = %e, "delivery scheduler");
                }
            }
        });
        d
    }

    /// Wakes the worker of every tenant with an adapter and an attempt due now. Returns how
    /// many tenants it woke.
    pub async fn wake_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let mut woke = 0;
        for tenant in self.registry.tenants_with(PluginKind::ChannelAdapter) {
            if self.loops.busy(&tenant) {
                continue;
            }
            let first = self
                .db
                .scan_prefix(&Space::tenant(&tenant), log::DUE_PREFIX, 1)
                .await?;
            if let Some((at, _)) = first.first().and_then(|(k, _)| log::parse_due(k)) {
                if at <= now {
                    self.wake(&tenant);
                    woke += 1;
                }
            }
        }
        Ok(woke)
    }

    /// Hooks the conversation engine in (once, at start): inbound messages from adapters
    /// become conversation turns.
    pub fn set_conversations(&self, c: &Arc<crate::conversations::Conversations>) {
        let _ = self.chat.set(Arc::downgrade(c));
    }

    /// Makes sure the worker runs `tenant`'s due attempts.
    pub fn wake(&self, tenant: &str) {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        self.loops
            .wake(tenant, Arc::new(move |t: &str| me.run_pass(t)));
    }

    /// Puts a dead-lettered (or ambiguous) intent back in the queue, due now, with its tries
    /// reset: an operator's decision after fixing the cause (or checking the provider for
    /// an ambiguous send). Returns the record, or why not.
    pub async fn retry(&self, tenant: &str, intent: &str) -> Result<RetryOutcome, StoreError> {
        let me = self
            .me
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| StoreError::Backend("the delivery service has stopped".into()))?;
        let (tenant_owned, intent) = (tenant.to_string(), intent.to_string());
        let outcome = tokio::task::spawn_blocking(move || -> Result<RetryOutcome, StoreError> {
            let b = me.db.backend().as_ref();
            let sp = Space::tenant(&tenant_owned);
            let lock = me.log_lock(&tenant_owned);
            let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(mut rec) = log::get(b, &sp, &intent)? else {
                return Ok(RetryOutcome::NotFound);
            };
            if !matches!(
                rec.status,
                OutboxStatus::DeadLettered { .. } | OutboxStatus::Ambiguous { .. }
            ) {
                return Ok(RetryOutcome::NotRetryable(log::code(&rec.status)));
            }
            let now = me.clock.now_ms();
            let was = format!("was {}", log::code(&rec.status));
            log::note(&mut rec, "requeued", now, Some(was), true);
            rec.status = OutboxStatus::Queued;
            rec.delivery.attempts = 0;
            rec.delivery.next_attempt_at = None;
            b.apply_batch(
                &sp,
                &[
                    log::put_op(&rec)?,
                    log::due_op(now, &intent),
                    BatchOp::delete(flight_key(&intent)),
                ],
            )?;
            Ok(RetryOutcome::Queued(Box::new(rec)))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))??;
        if matches!(outcome, RetryOutcome::Queued(_)) {
            self.db.commit().await?;
            self.wake(tenant);
        }
        Ok(outcome)
    }

    /// Whether `tenant` has an attempt running or due now (tests and tools).
    pub async fn busy(&self, tenant: &str) -> Result<bool, StoreError> {
        if self.loops.busy(tenant) {
            return Ok(true);
        }
        if self
            .registry
            .actives(tenant)
            .iter()
            .all(|(_, a)| a.kind != PluginKind::ChannelAdapter)
        {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        let first = self
            .db
            .scan_prefix(&Space::tenant(tenant), log::DUE_PREFIX, 1)
            .await?;
        Ok(due_now(&first, now))
    }

    /// The lock serialising `tenant`'s delivery-log writes (see the field).
    pub(crate) fn log_lock(&self, tenant: &str) -> Arc<Mutex<()>> {
        self.log_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// Runs the attempts due now, up to [`PASS_CHUNK`] of them, as a stream: up to
    /// [`SEND_CONCURRENCY`] sends in the air (within the sends' share of the pool), and each
    /// answer's slot refilled with newly due work while the rest wait. Everything runs on
    /// this (blocking) thread: an adapter waiting for its provider is a pending future, not
    /// a thread.
    fn run_pass(&self, tenant: &str) -> Result<usize, StoreError> {
        let b = self.db.backend().as_ref();
        let sp = Space::tenant(tenant);
        // Nothing due: no adapters looked up, no pass started (the loop asks often).
        if !due_now(
            &b.scan_prefix(&sp, log::DUE_PREFIX, 1)?,
            self.clock.now_ms(),
        ) {
            return Ok(0);
        }
        let adapters = self.adapters(tenant);
        let pass = self
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{:016x}.{pass}", self.boot).into_bytes();
        // The adapters' HTTP client runs on the server's runtime.
        let _runtime = self.registry.runtime().services().rt.enter();
        block_on(self.stream(b, &sp, tenant, &adapters, &token))
    }

    /// The body of [`run_pass`](Self::run_pass).
    ///
    /// Taken attempts wait for their in-flight markers to be durable before any adapter
    /// runs, but the pass does not: while a batch of markers is being committed, it goes on
    /// driving the sends in the air and recording their answers (a blocking commit here
    /// held every send of the pass, about a quarter of its time at 5,000 sends/s).
    async fn stream(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        adapters: &[(String, Arc<Active>, ChannelCapabilities)],
        token: &[u8],
    ) -> Result<usize, StoreError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        use futures_util::FutureExt;
        let mut running = FuturesUnordered::new();
        // Intents taken and not yet written: their due keys are still in the store.
        let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Attempts taken whose markers are being committed (at most one batch at a time).
        let mut marking: Option<Marking> = None;
        let mut total = 0;
        // A storage error stops the taking of new attempts, not the sends in the air (their
        // markers make them `ambiguous` if their outcomes cannot be written); the first is
        // returned at the end.
        let mut failed: Option<StoreError> = None;
        loop {
            let mut decided: Vec<Decided> = Vec::new();
            let mut sending: Vec<Box<Sending>> = Vec::new();
            let room = SEND_CONCURRENCY
                .saturating_sub(running.len())
                .min(PASS_CHUNK - total);
            if room > 0 && failed.is_none() && marking.is_none() {
                // After a storage error nothing new is taken; sends in the air still end.
                match self.take_due(b, sp, adapters, &taken, room, token) {
                    Ok((due, commit)) if !due.is_empty() => {
                        total += due.len();
                        taken.extend(due.iter().map(|(_, intent)| intent.clone()));
                        marking = Some((due, commit));
                    }
                    Ok(_) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if running.is_empty() && marking.is_none() {
                break;
            }
            // Wait for the markers or the first answer, then take every answer already in.
            loop {
                for mut s in sending.drain(..) {
                    let msg = s.msg.take();
                    let (name, active, _) = &adapters[s.adapter];
                    let send = self.spawn_send(tenant, name, active, msg);
                    running.push(async move { (s, send.await) });
                }
                if !decided.is_empty() || (running.is_empty() && marking.is_none()) {
                    break;
                }
                let next = std::future::poll_fn(|cx| {
                    if let Some((_, commit)) = &mut marking {
                        if let std::task::Poll::Ready(r) = commit.as_mut().poll(cx) {
                            return std::task::Poll::Ready(Next::Marked(r));
                        }
                    }
                    match running.poll_next_unpin(cx) {
                        std::task::Poll::Ready(Some(a)) => std::task::Poll::Ready(Next::Answer(a)),
                        // Empty: only the markers are awaited.
                        std::task::Poll::Ready(None) | std::task::Poll::Pending => {
                            std::task::Poll::Pending
                        }
                    }
                })
                .await;
                let (s, answer) = match next {
                    Next::Marked(durable) => {
                        let Some((due, _)) = marking.take() else {
                            continue;
                        };
                        if let Err(e) = durable {
                            // Not attempted: their due keys stay for a later pass.
                            failed.get_or_insert(e);
                            for (_, intent) in &due {
                                taken.remove(intent);
                            }
                            continue;
                        }
                        for (key, intent) in &due {
                            match self.attempt(b, sp, tenant, adapters, (key, token), intent) {
                                Ok(Step::Done(d)) => decided.push(*d),
                                Ok(Step::Send(s)) => sending.push(s),
                                Err(e) => {
                                    failed.get_or_insert(e);
                                }
                            }
                        }
                        continue;
                    }
                    Next::Answer(a) => a,
                };
                let mut answers = vec![(s, answer)];
                while let Some(Some(more)) = running.next().now_or_never() {
                    answers.push(more);
                }
                for (s, answer) in answers {
                    // An answer that moves an intent to another channel sends again.
                    match self.answered(b, sp, tenant, adapters, *s, answer) {
                        Ok(Step::Done(d)) => decided.push(*d),
                        Ok(Step::Send(s)) => sending.push(s),
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
            // Outcomes decided before a storage error are still written: their sends went out.
            for d in &decided {
                if let Some(rec) = &d.rec {
                    taken.remove(&rec.intent_id);
                }
            }
            match self.write(b, sp, tenant, decided) {
                Ok(true) => self.ingest.processor().wake(tenant),
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Up to `room` attempts due now that this pass has not taken yet, with their
    /// in-flight markers written, and the commit that makes those markers durable (no
    /// adapter may run before it completes).
    fn take_due(
        &self,
        b: &dyn Backend,
        sp: &Space,
        adapters: &[(String, Arc<Active>, ChannelCapabilities)],
        taken: &std::collections::HashSet<String>,
        room: usize,
        token: &[u8],
    ) -> Result<Marking, StoreError> {
        let now = self.clock.now_ms();
        // Taken attempts keep their due keys until written: look past them.
        let due: Vec<(Vec<u8>, String)> = b
            .scan_prefix(sp, log::DUE_PREFIX, room + taken.len())?
            .into_iter()
            .filter_map(|(k, _)| {
                let (at, intent) = log::parse_due(&k)?;
                (at <= now && !taken.contains(&intent)).then_some((k, intent))
            })
            .take(room)
            .collect();
        let mut marks = Vec::new();
        for (_, intent) in &due {
            let key = flight_key(intent);
            if b.get(sp, &key)?.is_none() {
                marks.push(BatchOp::put(key, token.to_vec()));
            }
        }
        if marks.is_empty() || adapters.is_empty() {
            return Ok((due, Box::pin(std::future::ready(Ok(())))));
        }
        b.apply_batch(sp, &marks)?;
        Ok((due, self.db.backend().clone().commit_async()))
    }

    /// The tenant's active adapters with their capabilities.
    fn adapters(&self, tenant: &str) -> Vec<(String, Arc<Active>, ChannelCapabilities)> {
        let mut out: Vec<_> = self
            .registry
            .actives(tenant)
            .into_iter()
            .filter(|(_, a)| a.kind == PluginKind::ChannelAdapter)
            .filter_map(|(name, active)| {
                let caps = self.capabilities(tenant, &name, &active)?;
                Some((name, active, caps))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// One adapter's capabilities: asked once per version (a `capabilities` call), then
    /// cached. `None` when the call fails (the adapter is then not used).
    fn capabilities(
        &self,
        tenant: &str,
        name: &str,
        active: &Arc<Active>,
    ) -> Option<ChannelCapabilities> {
        let key = (tenant.to_string(), name.to_string(), active.digest.clone());
        if let Some(c) = self
            .caps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Some(c.clone());
        }
        match self
            .registry
            .invoke_blocking(active, Call::AdapterCapabilities)
            .output
        {
            Some(Output::AdapterCapabilities(c)) => {
                self.caps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, c.clone());
                Some(c)
            }
            other => {
                tracing::warn!(tenant, adapter = %name, ?other, "adapter capabilities failed; not sending through it");
                None
            }
        }
    }

    /// One due attempt of `intent` (due key `due_key`), written when decided. Returns
    /// whether it queued track events.
    /// Starts the attempt of `intent`: what it decided without sending, or the send it
    /// makes.
    fn attempt(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        adapters: &[(String, Arc<Active>, ChannelCapabilities)],
        (due_key, pass): (&[u8], &[u8]),
        intent: &str,
    ) -> Result<Step, StoreError> {
        let flight = flight_key(intent);
        let mut out = Attempt {
            ops: vec![
                BatchOp::delete(due_key.to_vec()),
                BatchOp::delete(flight.clone()),
            ],
            events: false,
        };
        let rec = log::get(b, sp, intent)?;
        if let Some(OutboxStatus::Held { until }) = rec.as_ref().map(|r| &r.status) {
            if *until <= self.clock.now_ms() {
                // Quiet hours are over: the policy looks again (and queues it if clear).
                let (mut ops, hold) = outbox::release(b, sp, intent, self.clock.now_ms())?;
                if let Some(next) = hold {
                    ops.push(log::due_op(next, intent));
                }
                out.ops.extend(ops);
            }
            return Ok(Step::Done(Box::new(Decided {
                out,
                rec: None,
                sent_through: None,
            })));
        }
        let mut rec = match rec {
            Some(r) if r.status == OutboxStatus::Queued && !adapters.is_empty() => r,
            // Gone, already decided, or the built-in outbox (no adapter): drop the due key.
            _ => {
                return Ok(Step::Done(Box::new(Decided {
                    out,
                    rec: None,
                    sent_through: None,
                })))
            }
        };
        let now = self.clock.now_ms();
        rec.delivery.next_attempt_at = None;
        if b.get(sp, &flight)?.is_some_and(|t| t != pass) {
            let reason = "the server stopped during a send; its outcome is unknown";
            ambiguous(&mut rec, reason.to_string(), now);
            return Ok(Step::Done(Box::new(Decided {
                out,
                rec: Some(rec),
                sent_through: None,
            })));
        }
        let Some(profile) = profiles::get_current(b, sp, &rec.profile_id)? else {
            log::report(
                &mut rec,
                OutboxStatus::Skipped {
                    reason: "profile_erased".into(),
                },
                now,
                None,
            );
            return Ok(Step::Done(Box::new(Decided {
                out,
                rec: Some(rec),
                sent_through: None,
            })));
        };
        self.next_channel(b, sp, tenant, adapters, Begun { out, rec, profile })
    }

    /// Walks `begun`'s channels, the current one and then fallbacks, to the first it can
    /// send on: the send, or what it decided when no channel is left.
    fn next_channel(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        adapters: &[(String, Arc<Active>, ChannelCapabilities)],
        begun: Begun,
    ) -> Result<Step, StoreError> {
        let Begun {
            mut out,
            mut rec,
            profile,
        } = begun;
        let now = self.clock.now_ms();
        loop {
            let Some(kind) = rec.channel.as_deref().and_then(policy::channel_kind) else {
                self.fail(&mut rec, "no_channel", None, now, &mut out, b)?;
                break;
            };
            let Some(adapter) = adapters
                .iter()
                .position(|(_, _, c)| c.channel == kind || c.extra_channels.contains(&kind))
            else {
                if self.fall_back(b, sp, &mut rec, &profile, "no_adapter", now)? {
                    continue;
                }
                self.fail(&mut rec, "no_adapter", None, now, &mut out, b)?;
                break;
            };
            let (name, _, caps) = &adapters[adapter];
            let Some(address) = outbox::address_identity(&profile, kind) else {
                if self.fall_back(b, sp, &mut rec, &profile, "no_address", now)? {
                    continue;
                }
                self.fail(&mut rec, "no_address", None, now, &mut out, b)?;
                break;
            };
            let mut content = content::degrade(&rec.content, caps, kind);
            if let Some(signer) = &self.links {
                let tracked = links::rewrite(&mut content, signer, tenant, &rec.intent_id);
                if !tracked.is_empty() {
                    rec.delivery.links = tracked;
                }
            }
            if content.is_empty() {
                if self.fall_back(b, sp, &mut rec, &profile, "content_unsupported", now)? {
                    continue;
                }
                self.fail(&mut rec, "content_unsupported", None, now, &mut out, b)?;
                break;
            }
            let msg = outbound(b, sp, &rec, &profile, kind, &address, content)?;
            rec.delivery.attempts += 1;
            rec.delivery.installation = Some(name.clone());
            return Ok(Step::Send(Box::new(Sending {
                begun: Begun { out, rec, profile },
                adapter,
                address,
                msg: Some(msg),
            })));
        }
        Ok(Step::Done(Box::new(Decided {
            out,
            rec: Some(rec),
            sent_through: None,
        })))
    }

    /// Records the adapter's answer to `sending`: what the attempt decided, or its send on
    /// the next channel.
    fn answered(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        adapters: &[(String, Arc<Active>, ChannelCapabilities)],
        sending: Sending,
        outcome: SendOutcome,
    ) -> Result<Step, StoreError> {
        let Sending {
            begun:
                Begun {
                    mut out,
                    mut rec,
                    profile,
                },
            adapter,
            address,
            ..
        } = sending;
        let (name, _, caps) = &adapters[adapter];
        let now = self.clock.now_ms();
        let mut sent_through: Option<(String, String)> = None;
        match outcome {
            SendOutcome::Sent(ok) => {
                sent_through = Some((name.clone(), ok.provider_message_id.clone()));
                let silent = caps.status == StatusGranularity::None;
                self.sent(b, &mut rec, (name, &address, silent), ok, now, &mut out)?;
            }
            SendOutcome::Retry { after_ms, reason } => {
                if rec.delivery.attempts >= MAX_ATTEMPTS {
                    log::report(
                        &mut rec,
                        OutboxStatus::DeadLettered {
                            reason: reason.clone(),
                        },
                        now,
                        Some(reason),
                    );
                    out.ops.push(BatchOp::put(
                        format!("dlvdead/{now:020}/{}", rec.intent_id).into_bytes(),
                        Vec::new(),
                    ));
                    self.status_event(b, &rec, "Message Failed", None, now, &mut out)?;
                } else {
                    let at = now + backoff(&rec.intent_id, rec.delivery.attempts, after_ms);
                    log::note(&mut rec, "retry", now, Some(reason), false);
                    rec.delivery.next_attempt_at = Some(at);
                    out.ops.push(log::due_op(at, &rec.intent_id));
                }
            }
            SendOutcome::FallBack(reason) => {
                if self.fall_back(b, sp, &mut rec, &profile, &reason, now)? {
                    let begun = Begun { out, rec, profile };
                    return self.next_channel(b, sp, tenant, adapters, begun);
                }
                self.fail(&mut rec, &reason, None, now, &mut out, b)?;
            }
            SendOutcome::Failed(reason, detail) => {
                self.fail(&mut rec, &reason, detail, now, &mut out, b)?;
            }
            // `send` resolves it (refresh and retry), so it does not reach here.
            SendOutcome::AuthExpired => {
                self.fail(&mut rec, "auth_expired", None, now, &mut out, b)?;
            }
            SendOutcome::Ambiguous(reason) => ambiguous(&mut rec, reason, now),
        }
        Ok(Step::Done(Box::new(Decided {
            out,
            rec: Some(rec),
            sent_through,
        })))
    }

    /// Writes a pass's outcomes under the tenant's log lock, [`WRITE_CHUNK`] attempts per
    /// batch; after a send, status reports that arrived before it was recorded are applied
    /// with it. Returns whether track events were queued.
    fn write(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        decided: Vec<Decided>,
    ) -> Result<bool, StoreError> {
        let lock = self.log_lock(tenant);
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut events = false;
        let mut ops = Vec::new();
        for (n, mut d) in decided.into_iter().enumerate() {
            if let (Some(rec), Some((plugin, provider_id))) = (&mut d.rec, &d.sent_through) {
                let early = webhook::orphan_prefix(plugin, provider_id);
                for (key, value) in b.scan_prefix(sp, early.as_bytes(), usize::MAX)? {
                    if let Ok(o) = serde_json::from_slice::<webhook::Orphan>(&value) {
                        self.apply_status(b, rec, o.status, o.at, o.detail, &mut d.out)?;
                    }
                    d.out.ops.push(BatchOp::delete(key));
                }
            }
            if let Some(rec) = &d.rec {
                d.out.ops.push(log::put_op(rec)?);
            }
            events |= d.out.events;
            ops.append(&mut d.out.ops);
            if (n + 1) % WRITE_CHUNK == 0 {
                b.apply_batch(sp, &ops)?;
                ops.clear();
            }
        }
        if !ops.is_empty() {
            b.apply_batch(sp, &ops)?;
        }
        Ok(events)
    }

    /// Records a final failure and its `Message Failed` event.
    fn fail(
        &self,
        rec: &mut OutboxRecord,
        reason: &str,
        detail: Option<String>,
        now: i64,
        out: &mut Attempt,
        b: &dyn Backend,
    ) -> Result<(), StoreError> {
        let reason = match &detail {
            Some(d) => format!("{reason}: {d}"),
            None => reason.to_string(),
        };
        if log::report(
            rec,
            OutboxStatus::Failed {
                reason: reason.clone(),
            },
            now,
            detail,
        ) {
            self.status_event(b, rec, "Message Failed", None, now, out)?;
        }
        Ok(())
    }

    /// Moves `rec` to its next preferred channel that the profile has an address on and
    /// the policy clears. False when none is left.
    fn fall_back(
        &self,
        b: &dyn Backend,
        sp: &Space,
        rec: &mut OutboxRecord,
        profile: &ProfileRecord,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let current = rec.channel.clone().unwrap_or_default();
        rec.delivery.fallbacks.push(format!("{current}: {reason}"));
        let start = rec
            .preference
            .iter()
            .position(|c| *c == current)
            .map_or(0, |i| i + 1);
        let cfg = outbox::tenant_policy(b, sp)?;
        for name in rec.preference.clone().iter().skip(start) {
            let Some(kind) = policy::channel_kind(name) else {
                continue;
            };
            let Some(addr) = outbox::address_identity(profile, kind) else {
                rec.delivery.fallbacks.push(format!("{name}: no_address"));
                continue;
            };
            let decision = policy::decide(
                &cfg,
                &policy::SendContext {
                    category: rec.category,
                    channel: name,
                    profile,
                    // The intent already counted toward the cap when it was cleared.
                    marketing_sent_at: &[],
                    now_ms: now,
                },
            );
            match decision {
                Decision::Skip { reason } => {
                    rec.delivery
                        .fallbacks
                        .push(format!("{name}: {}", reason.code()));
                }
                Decision::Send | Decision::Hold { .. } => {
                    rec.channel = Some(name.clone());
                    rec.address = Some(addr.value);
                    rec.delivery.attempts = 0;
                    log::note(
                        rec,
                        "fallback",
                        now,
                        Some(format!("{current} → {name}: {reason}")),
                        false,
                    );
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Runs one send as a task on the send threads ([`crate::worker::send_threads`]), so
    /// that adapters run beside this pass (which goes on taking and recording attempts)
    /// rather than on the pass's own thread, one after another.
    fn spawn_send(
        &self,
        tenant: &str,
        name: &str,
        active: &Arc<Active>,
        msg: Option<OutboundMessage>,
    ) -> impl std::future::Future<Output = SendOutcome> {
        let task = match (self.me.get().and_then(Weak::upgrade), msg) {
            (Some(me), Some(msg)) => {
                let (tenant, name, active) = (tenant.to_string(), name.to_string(), active.clone());
                let threads = crate::worker::send_threads().map_or_else(
                    || self.registry.runtime().services().rt.clone(),
                    |t| t.handle().clone(),
                );
                Some(threads.spawn(async move {
                    // Never closed, so a permit always comes.
                    let _slot = me.send_slots.acquire().await;
                    me.send(&tenant, &name, &active, msg).await
                }))
            }
            // Not reached: a message is handed to its adapter once, and the service is
            // alive while a pass runs.
            _ => None,
        };
        async move {
            match task {
                Some(task) => task.await.unwrap_or_else(|e| {
                    // A send that panicked may have reached the provider: never twice.
                    tracing::error!(error = %e, "a send task failed");
                    SendOutcome::Ambiguous("the send failed inside the host".into())
                }),
                None => SendOutcome::Failed("no_message".into(), None),
            }
        }
    }

    /// Calls `send`, refreshing credentials once on `auth-expired`.
    async fn send(
        &self,
        tenant: &str,
        name: &str,
        active: &Arc<Active>,
        msg: OutboundMessage,
    ) -> SendOutcome {
        let before = active.installation.settings();
        let first = self.invoke_send(active, msg.clone()).await;
        if !matches!(first, SendOutcome::AuthExpired) {
            return first;
        }
        let lock = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((tenant.to_string(), name.to_string()))
            .or_default()
            .clone();
        {
            let _one = lock.lock().await;
            // Another send may have rotated the secrets while this one waited.
            if Arc::ptr_eq(&before, &active.installation.settings()) {
                let r = self
                    .registry
                    .invoke_async(active, Call::AdapterRefreshCredentials)
                    .await;
                match r.output {
                    Some(Output::AdapterRefreshCredentials(Ok(()))) => {}
                    Some(Output::AdapterRefreshCredentials(Err(e))) => {
                        return SendOutcome::Failed(
                            "auth_expired".into(),
                            Some(format!("refreshing credentials failed: {e:?}")),
                        );
                    }
                    _ => {
                        return SendOutcome::Failed(
                            "auth_expired".into(),
                            Some(format!(
                                "refreshing credentials failed: {}",
                                r.error.map(|e| e.to_string()).unwrap_or_default()
                            )),
                        );
                    }
                }
            }
        }
        match self.invoke_send(active, msg).await {
            SendOutcome::AuthExpired => SendOutcome::Failed(
                "auth_expired".into(),
                Some("still expired after a credentials refresh".into()),
            ),
            other => other,
        }
    }

    async fn invoke_send(&self, active: &Arc<Active>, msg: OutboundMessage) -> SendOutcome {
        let r = self
            .registry
            .invoke_async(active, Call::AdapterSend(msg))
            .await;
        match (r.output, r.error) {
            (Some(Output::AdapterSend(Ok(ok))), _) => SendOutcome::Sent(ok),
            (Some(Output::AdapterSend(Err(e))), _) => interpret(e),
            (_, Some(e)) => {
                // A request answered (or timed out) may have sent the message.
                let reached = r
                    .report
                    .http_calls
                    .iter()
                    .any(|c| c.status.is_some() || c.error.as_deref() == Some("timeout"));
                if reached {
                    SendOutcome::Ambiguous(format!(
                        "the adapter failed ({}) after a request reached the provider: {e}",
                        e.code()
                    ))
                } else {
                    SendOutcome::Retry {
                        after_ms: 0,
                        reason: format!("adapter {}: {e}", e.code()),
                    }
                }
            }
            (other, None) => SendOutcome::Failed(
                "adapter_error".into(),
                Some(format!("unexpected output {other:?}")),
            ),
        }
    }

    /// Records an accepted send. `Message Sent` becomes an event only on channels that
    /// report no delivery statuses (`silent`): elsewhere `Message Delivered` follows, and an
    /// event per send would double the profile processor's work for little.
    fn sent(
        &self,
        b: &dyn Backend,
        rec: &mut OutboxRecord,
        (plugin, address, silent): (&str, &IdentityRecord, bool),
        ok: SendOk,
        now: i64,
        out: &mut Attempt,
    ) -> Result<(), StoreError> {
        rec.delivery.provider_message_id = Some(ok.provider_message_id.clone());
        rec.delivery.sent_at = Some(now);
        log::report(rec, OutboxStatus::Sent, now, None);
        out.ops.push(BatchOp::put(
            log::provider_key(plugin, &ok.provider_message_id),
            rec.intent_id.as_bytes().to_vec(),
        ));
        out.ops.push(BatchOp::put(
            log::recipient_key(plugin, &address.kind, &address.value, now, &rec.intent_id),
            Vec::new(),
        ));
        if silent {
            self.status_event(b, rec, "Message Sent", None, now, out)
        } else {
            Ok(())
        }
    }

    /// Applies one status to `rec`, with its track event when it changed the status.
    fn apply_status(
        &self,
        b: &dyn Backend,
        rec: &mut OutboxRecord,
        status: OutboxStatus,
        at: i64,
        detail: Option<String>,
        out: &mut Attempt,
    ) -> Result<bool, StoreError> {
        let event = match &status {
            OutboxStatus::Delivered => Some("Message Delivered"),
            OutboxStatus::Read | OutboxStatus::Opened => Some("Message Opened"),
            OutboxStatus::Clicked => Some("Message Clicked"),
            OutboxStatus::Replied => Some("Message Replied"),
            OutboxStatus::Failed { .. }
            | OutboxStatus::Undelivered { .. }
            | OutboxStatus::Bounced { .. } => Some("Message Failed"),
            _ => None,
        };
        let url = match &status {
            OutboxStatus::Clicked => detail.clone(),
            _ => None,
        };
        let applied = log::report(rec, status, at, detail);
        if applied {
            if let Some(name) = event {
                self.status_event(b, rec, name, url, at, out)?;
            }
        }
        Ok(applied)
    }

    /// Queues the track event `name` about `rec` on its profile.
    fn status_event(
        &self,
        b: &dyn Backend,
        rec: &OutboxRecord,
        name: &str,
        url: Option<String>,
        now: i64,
        out: &mut Attempt,
    ) -> Result<(), StoreError> {
        let mut props = Map::new();
        props.insert("intent_id".into(), json!(rec.intent_id));
        props.insert("journey".into(), json!(rec.journey));
        props.insert("instance".into(), json!(rec.instance));
        props.insert("channel".into(), json!(rec.channel));
        props.insert("status".into(), json!(log::code(&rec.status)));
        if let Some(id) = &rec.delivery.provider_message_id {
            props.insert("provider_message_id".into(), json!(id));
        }
        if let Some(u) = url {
            props.insert("url".into(), json!(u));
        }
        if let OutboxStatus::Failed { reason }
        | OutboxStatus::Undelivered { reason }
        | OutboxStatus::Bounced { reason }
        | OutboxStatus::DeadLettered { reason } = &rec.status
        {
            props.insert("reason".into(), json!(reason));
        }
        let m = Message::internal(
            &rec.profile_id,
            MessageType::Track,
            Some(name.to_string()),
            props,
            Map::new(),
            format!("dlv:{}:{name}:{now}", rec.intent_id),
            now,
        );
        out.ops.push(crate::ingest::queue_op(b.next_id()?, &m)?);
        out.events = true;
        Ok(())
    }
}

/// What [`Deliveries::retry`] did.
#[derive(Debug)]
pub enum RetryOutcome {
    /// Back in the queue.
    Queued(Box<OutboxRecord>),
    /// No such intent.
    NotFound,
    /// Its status (the code) is not one an operator retries.
    NotRetryable(&'static str),
}

/// What one `send` came to.
enum SendOutcome {
    Sent(SendOk),
    Retry { after_ms: u64, reason: String },
    FallBack(String),
    Failed(String, Option<String>),
    Ambiguous(String),
    AuthExpired,
}

/// Attempts taken by a pass, (due key, intent) in due order, and the commit that makes
/// their in-flight markers durable.
type Marking = (Vec<(Vec<u8>, String)>, CommitFuture);

/// What a pass waited for: its taken attempts' markers made durable, or a send's answer.
enum Next<A> {
    /// The commit of the markers ended (an error means they may not be durable).
    Marked(Result<(), StoreError>),
    /// A send in the air answered.
    Answer(A),
}

/// The pipeline's reading of an adapter's `send-error`.
fn interpret(e: SendError) -> SendOutcome {
    match e {
        SendError::RateLimited(ms) => SendOutcome::Retry {
            after_ms: ms,
            reason: format!("rate limited; retry after {ms} ms"),
        },
        SendError::Retryable(m) => SendOutcome::Retry {
            after_ms: 0,
            reason: m,
        },
        SendError::OutsideWindow => SendOutcome::FallBack("outside_window".into()),
        SendError::QuotaExceeded => SendOutcome::FallBack("quota_exceeded".into()),
        SendError::RecipientInvalid(m) => SendOutcome::Failed("recipient_invalid".into(), Some(m)),
        SendError::RecipientUnreachable(m) => {
            SendOutcome::Failed("recipient_unreachable".into(), Some(m))
        }
        SendError::AuthExpired => SendOutcome::AuthExpired,
        SendError::ContentRejected(m) => SendOutcome::Failed("content_rejected".into(), Some(m)),
        SendError::Ambiguous(m) => SendOutcome::Ambiguous(m),
        SendError::Permanent(m) => SendOutcome::Failed("permanent".into(), Some(m)),
    }
}

/// Delay before try `attempts + 1`: exponential from `RETRY_BASE_MS` (1 s) plus up to 50%
/// jitter (derived from the intent, so retries of many intents spread out), at least the
/// provider's `retry_after_ms`, at most `RETRY_CAP_MS` (15 minutes).
pub fn backoff(intent: &str, attempts: u32, retry_after_ms: u64) -> i64 {
    use std::hash::{Hash, Hasher};
    let exp = RETRY_BASE_MS.saturating_mul(1i64 << attempts.saturating_sub(1).min(20));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (intent, attempts).hash(&mut h);
    let jitter = (h.finish() % 1000) as i64 * exp / 2000;
    let after = i64::try_from(retry_after_ms).unwrap_or(i64::MAX);
    (exp + jitter).max(after).min(RETRY_CAP_MS)
}

/// Whether the first of `due` (rows of the due index, earliest first) is due by `now`.
fn due_now(due: &[(Vec<u8>, Vec<u8>)], now: i64) -> bool {
    due.first()
        .and_then(|(k, _)| log::parse_due(k))
        .is_some_and(|(at, _)| at <= now)
}

/// Records that `rec`'s send may or may not have reached the provider: never retried.
fn ambiguous(rec: &mut OutboxRecord, reason: String, now: i64) {
    log::report(
        rec,
        OutboxStatus::Ambiguous {
            reason: reason.clone(),
        },
        now,
        Some(reason),
    );
}

/// Key of an intent's in-flight marker.
fn flight_key(intent: &str) -> Vec<u8> {
    format!("{FLIGHT_PREFIX}{intent}").into_bytes()
}

/// The adapter's input for `rec` on `kind`.
fn outbound(
    b: &dyn Backend,
    sp: &Space,
    rec: &OutboxRecord,
    profile: &ProfileRecord,
    kind: ChannelKind,
    address: &IdentityRecord,
    content: Vec<crate::runtime::bindings::types::Content>,
) -> Result<OutboundMessage, StoreError> {
    let last_inbound_at = b
        .get(sp, &last_inbound_key(&address.kind, &address.value))?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
    let display_name = ["name", "first_name", "firstName"]
        .iter()
        .find_map(|k| profile.traits.get(*k).and_then(Value::as_str))
        .map(str::to_owned);
    Ok(OutboundMessage {
        idempotency_key: rec.intent_id.clone(),
        tracking_id: rec.intent_id.clone(),
        channel: kind,
        recipient: Recipient {
            profile_id: profile.id.clone(),
            address: Identity {
                kind: address.kind.clone(),
                value: address.value.clone(),
            },
            display_name,
            last_inbound_at,
        },
        category: match rec.category {
            policy::Category::Marketing => MessageCategory::Marketing,
            policy::Category::Transactional => MessageCategory::Transactional,
        },
        content,
        tag: None,
        metadata: json!({"journey": rec.journey, "instance": rec.instance}).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_honours_retry_after_and_is_capped() {
        let d1 = backoff("i", 1, 0);
        let d2 = backoff("i", 2, 0);
        let d5 = backoff("i", 5, 0);
        assert!((1_000..=1_500).contains(&d1), "{d1}");
        assert!((2_000..=3_000).contains(&d2), "{d2}");
        assert!((16_000..=24_000).contains(&d5), "{d5}");
        assert_eq!(
            backoff("i", 1, 60_000),
            60_000,
            "the provider's retry-after wins"
        );
        assert_eq!(backoff("i", 30, 0), RETRY_CAP_MS);
        assert_eq!(backoff("i", 1, u64::MAX), RETRY_CAP_MS);
        let spread: std::collections::HashSet<i64> =
            (0..20).map(|n| backoff(&format!("i{n}"), 3, 0)).collect();
        assert!(spread.len() > 10, "jitter spreads intents: {spread:?}");
    }

    #[test]
    fn send_errors_map_to_pipeline_decisions() {
        assert!(matches!(
            interpret(SendError::RateLimited(5_000)),
            SendOutcome::Retry {
                after_ms: 5_000,
                ..
            }
        ));
        assert!(matches!(
            interpret(SendError::Retryable("503".into())),
            SendOutcome::Retry { after_ms: 0, .. }
        ));
        assert!(
            matches!(interpret(SendError::OutsideWindow), SendOutcome::FallBack(r) if r == "outside_window")
        );
        assert!(matches!(
            interpret(SendError::QuotaExceeded),
            SendOutcome::FallBack(_)
        ));
        assert!(matches!(
            interpret(SendError::AuthExpired),
            SendOutcome::AuthExpired
        ));
        assert!(matches!(
            interpret(SendError::Ambiguous("t".into())),
            SendOutcome::Ambiguous(_)
        ));
        assert!(matches!(
            interpret(SendError::RecipientInvalid("x".into())),
            SendOutcome::Failed(r, _) if r == "recipient_invalid"
        ));
        assert!(matches!(
            interpret(SendError::ContentRejected("x".into())),
            SendOutcome::Failed(r, _) if r == "content_rejected"
        ));
    }
}
