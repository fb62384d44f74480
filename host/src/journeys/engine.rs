//! Journey instances, routing, the per-tenant runner and the timer scheduler.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{Datelike, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::ingest::segment::{Message, MessageType};
use crate::ingest::{queue_op, Ingest};
use crate::kind::PluginKind;
use crate::messaging::outbox;
use crate::profiles::{self, ProfileRecord};
use crate::registry::{Active, Registry};
use crate::runtime::bindings::exports::journey as wit;
use crate::runtime::bindings::types;
use crate::runtime::{Call, Output};
use crate::store::markers::FIRED_TIMERS;
use crate::store::{Backend, BatchOp, Db, Space, Staged, StoreError, UniqueInsert};
use crate::worker::TenantLoops;

/// The global space of timers, keyed `<due:020>/<tenant>/<token>`; each holds the work
/// item it becomes when due.
pub const TIMERS: Space = Space::Global("timers");
/// Tries of a failing step before the instance is parked (first try plus four retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubles per attempt (1 s, 2 s, 4 s, 8 s).
const RETRY_BASE_MS: i64 = 1_000;
/// Steps an instance may run back to back without waiting: catches `goto` loops.
const MAX_CHAIN: u32 = 50;
/// Largest journey context (JSON), as the WIT contract promises.
const MAX_CONTEXT_BYTES: usize = 32 * 1024;
/// Work items taken per runner pass, written as one atomic batch: small, because the
/// batch holds the tenant's tree while it applies (see the processor's `BATCH_MESSAGES`).
const RUNNER_CHUNK: usize = 4;
/// Work queues (lanes) per tenant. A profile's work always lands in the same lane
/// ([`lane_of`]), so one instance never runs two steps at once, and each lane has its own
/// runner loop: lanes of different profiles run side by side on the cores a single loop
/// left idle (BENCHMARKS.md, session 21). Part of the stored key layout: changing it
/// needs a migration like [`LEGACY_WORK_PREFIX`]'s.
pub const WORK_LANES: usize = 4;
/// Where work items lived before lanes (`jq/<seq>`); a runner pass moves any it finds into
/// their lanes first, keeping their sequence numbers and so their order.
const LEGACY_WORK_PREFIX: &[u8] = b"jq/";
/// Prefix of every lane's work items, `jl/<lane>/<seq>`.
const WORK_PREFIX: &[u8] = b"jl/";
/// Timers fired per scheduler round.
const TIMER_CHUNK: usize = 512;
/// How often the scheduler looks for due timers: waits are minutes to days; 20 ms keeps
/// the lateness invisible without measurable idle cost.
const SCHEDULER_TICK: Duration = Duration::from_millis(20);

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// A step is due (queued work item).
    Running,
    /// Sleeping until a timer or an event.
    Waiting,
    /// Finished.
    Exited,
    /// Stopped after repeated failures; see `last_error`.
    Parked,
}

/// What an instance waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitState {
    /// Matches the timer or work item that may end the wait; anything else is stale.
    pub token: u64,
    /// When the timer fires, Unix ms.
    pub until: Option<i64>,
    /// Timer id delivered when the timer fires.
    pub timer_id: String,
    /// Event names that end the wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Whether such an event must carry the instance's entry key.
    #[serde(default)]
    pub match_entry_key: bool,
}

/// One journey instance (per journey, profile and entry key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// Id, `ji_<hex>`.
    pub id: String,
    /// The journey (plugin name).
    pub journey: String,
    /// Plugin version that started it.
    pub version: String,
    /// The profile.
    pub profile_id: String,
    /// The entry key (for example the cart id).
    pub entry_key: Option<String>,
    /// The step that runs next.
    pub step: String,
    /// Journey context (JSON object) built by `patch-context`.
    pub context: Map<String, Value>,
    /// Where it stands.
    pub status: InstanceStatus,
    /// The wait, when waiting.
    pub wait: Option<WaitState>,
    /// Failed tries of the current step.
    pub attempt: u32,
    /// Steps run back to back without a wait.
    #[serde(default)]
    pub chain: u32,
    /// The trigger to retry with after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_trigger: Option<wit::Trigger>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Why it exited.
    pub exit_reason: Option<String>,
    /// Steps run so far.
    pub steps_run: u32,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// A unit of journey work, stored at `jl/<lane>/<seq>` ([`work_key`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
enum Work {
    /// An entry event for a journey.
    Enter {
        journey: String,
        profile_id: String,
        event: Box<Message>,
    },
    /// An event a waiting instance may want.
    Event {
        instance: String,
        event: Box<Message>,
    },
    /// A timer (or an immediate `goto`) for a waiting instance.
    Timer {
        instance: String,
        token: u64,
        timer_id: String,
    },
    /// An exit event for a running instance.
    Exit { instance: String, reason: String },
    /// Quiet hours ended for a held send intent.
    Release { intent: String },
    /// The instance's profile was merged into `to`: its indexes move there, and so does
    /// its work (queued in the merged-away profile's lane, after its earlier work).
    Rehome { instance: String, to: String },
}

fn instance_key(id: &str) -> Vec<u8> {
    format!("ji/{id}").into_bytes()
}
/// The key of work item `seq` of `profile` (`None`: an item that concerns no profile).
fn work_key(profile: Option<&str>, seq: u64) -> Vec<u8> {
    format!("jl/{}/{seq:016x}", lane_of(profile)).into_bytes()
}
fn lane_prefix(lane: usize) -> Vec<u8> {
    format!("jl/{lane}/").into_bytes()
}

/// The lane of `profile`'s work: a stable hash (FNV-1a, not the std hasher, whose output
/// may change between Rust releases while the lanes are stored). No profile: lane 0.
pub fn lane_of(profile: Option<&str>) -> usize {
    let Some(p) = profile else { return 0 };
    let h = p.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % WORK_LANES as u64) as usize
}

/// The lane of a stored work item's key, if it is one.
pub fn lane_of_key(key: &[u8]) -> Option<usize> {
    let rest = key.strip_prefix(WORK_PREFIX)?;
    let digit = *rest.first()?;
    digit
        .is_ascii_digit()
        .then(|| usize::from(digit - b'0'))
        .filter(|l| *l < WORK_LANES)
}

/// The profile a work item concerns, which decides its lane; `None` when it has none any
/// more (the item then does nothing when it runs).
fn profile_of(b: &dyn Backend, sp: &Space, work: &Work) -> Result<Option<String>, StoreError> {
    /// Only the field the lane needs, without decoding the rest of the record.
    #[derive(Deserialize)]
    struct Owner {
        profile_id: String,
    }
    let key = match work {
        Work::Enter { profile_id, .. } => return Ok(Some(profile_id.clone())),
        Work::Event { instance, .. }
        | Work::Timer { instance, .. }
        | Work::Exit { instance, .. }
        | Work::Rehome { instance, .. } => instance_key(instance),
        Work::Release { intent } => format!("outbox/{intent}").into_bytes(),
    };
    Ok(b.get(sp, &key)?
        .and_then(|v| serde_json::from_slice::<Owner>(&v).ok())
        .map(|o| o.profile_id))
}

/// The lane key of a stored work item (undecodable ones go to lane 0, which drops them).
fn stored_work_key(
    b: &dyn Backend,
    sp: &Space,
    value: &[u8],
    seq: u64,
) -> Result<Vec<u8>, StoreError> {
    let profile = match serde_json::from_slice::<Work>(value) {
        Ok(w) => profile_of(b, sp, &w)?,
        Err(_) => None,
    };
    Ok(work_key(profile.as_deref(), seq))
}
/// Every instance of a profile, active or not (360 view, erasure).
fn profile_instance_key(pid: &str, iid: &str) -> Vec<u8> {
    format!("jall/{pid}/{iid}").into_bytes()
}
fn active_key(pid: &str, iid: &str) -> Vec<u8> {
    format!("jact/{pid}/{iid}").into_bytes()
}
fn wait_key(pid: &str, event: &str, iid: &str) -> Vec<u8> {
    format!("jwait/{pid}/{event}\0{iid}").into_bytes()
}
fn entry_index_key(journey: &str, pid: &str, entry_key: Option<&str>) -> Vec<u8> {
    format!("jkey/{journey}/{pid}/{}", entry_key.unwrap_or("")).into_bytes()
}
/// `<due:020>/<tenant>/<token:016x>`: sorted by due time, unique by token.
fn timer_key(due: i64, tenant: &str, token: u64) -> Vec<u8> {
    format!("{:020}/{tenant}/{token:016x}", due.max(0)).into_bytes()
}

/// Where a work item taken from a lane must run.
enum Home {
    /// In this lane (an entry's profile id resolved through merges).
    Here(Work),
    /// In the lane of this profile.
    Elsewhere(String, Work),
}

/// Decides where `work`, taken from `lane`, runs: an instance's work runs in the lane of
/// the instance's profile, and an entry in the lane of its profile's current id (it may
/// have been merged away since the entry was queued).
fn home_lane(b: &dyn Backend, sp: &Space, work: Work, lane: usize) -> Result<Home, StoreError> {
    let (profile, work) = match work {
        Work::Enter {
            journey,
            profile_id,
            event,
        } => {
            let current = profiles::current_id(b, sp, &profile_id)?;
            let work = Work::Enter {
                journey,
                profile_id: current.clone(),
                event,
            };
            (Some(current), work)
        }
        other => (profile_of(b, sp, &other)?, other),
    };
    Ok(match profile {
        Some(p) if lane_of(Some(&p)) != lane => Home::Elsewhere(p, work),
        _ => Home::Here(work),
    })
}

/// The work that moves `loser`'s journey instances to `winner` when the processor merges
/// the two profiles: one `Rehome` item per instance, in the loser's lane (after the work
/// already queued for it). Part of the merge's atomic batch.
pub fn rehome_ops(
    b: &dyn Backend,
    sp: &Space,
    loser: &str,
    winner: &str,
    next_seq: &mut dyn FnMut() -> Result<u64, StoreError>,
) -> Result<Vec<BatchOp>, StoreError> {
    let prefix = format!("jall/{loser}/");
    let mut ops = Vec::new();
    for (k, _) in b.scan_prefix(sp, prefix.as_bytes(), usize::MAX)? {
        let work = Work::Rehome {
            instance: String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
            to: winner.to_string(),
        };
        let bytes = serde_json::to_vec(&work).map_err(StoreError::Codec)?;
        ops.push(BatchOp::put(work_key(Some(loser), next_seq()?), bytes));
    }
    Ok(ops)
}

/// The runner loop of one lane of one tenant.
fn loop_key(tenant: &str, lane: usize) -> String {
    format!("{tenant} lane {lane}")
}

/// One active journey of a tenant, with its manifest.
#[derive(Debug, Clone)]
pub struct Route {
    /// Plugin name.
    pub journey: String,
    /// What it declared.
    pub manifest: wit::Manifest,
    /// The installation.
    pub active: Arc<Active>,
}

/// The tenant's journeys, as the event processor sees them.
pub type Routes = Vec<Route>;

/// A dotted path (`properties.cart_id`) read from a message, as text.
fn entry_key_of(m: &Message, path: &str) -> Option<String> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    // Entry keys live in properties (or traits, context): walk those maps directly; any
    // other path reads the message as JSON.
    let whole;
    let mut cur = match head {
        "properties" => m.properties.get(rest.split('.').next()?)?,
        "traits" => m.traits.get(rest.split('.').next()?)?,
        "context" => m.context.get(rest.split('.').next()?)?,
        _ => {
            whole = serde_json::to_value(m).ok()?;
            whole.get(head)?
        }
    };
    let skip = usize::from(matches!(head, "properties" | "traits" | "context"));
    for part in rest.split('.').filter(|p| !p.is_empty()).skip(skip) {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The work a processed event causes: entry into journeys, exits of running instances,
/// and ends of event waits. Returned as ops for the processor's batch (`next_seq` gives
/// fresh sequence numbers). A `fresh` profile (created by this event) has no instances,
/// so only entries are looked for.
pub fn route(
    b: &dyn Backend,
    sp: &Space,
    routes: &Routes,
    profile_id: &str,
    fresh: bool,
    m: &Message,
    next_seq: &mut dyn FnMut() -> Result<u64, StoreError>,
) -> Result<Vec<BatchOp>, StoreError> {
    let Some(name) = m.event.as_deref().filter(|_| m.kind == MessageType::Track) else {
        return Ok(Vec::new());
    };
    let mut ops = Vec::new();
    let mut push = |w: &Work, ops: &mut Vec<BatchOp>| -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(w).map_err(StoreError::Codec)?;
        ops.push(BatchOp::put(work_key(Some(profile_id), next_seq()?), bytes));
        Ok(())
    };
    // Exits first: an event that both exits and re-enters ends the old instance first.
    let exits: Vec<&str> = routes
        .iter()
        .filter(|r| r.manifest.exit_events.iter().any(|e| e == name))
        .map(|r| r.journey.as_str())
        .collect();
    if !exits.is_empty() && !fresh {
        for (k, v) in b.scan_prefix(sp, format!("jact/{profile_id}/").as_bytes(), usize::MAX)? {
            let journey = String::from_utf8_lossy(&v);
            if exits.contains(&journey.as_ref()) {
                let iid =
                    String::from_utf8_lossy(&k[format!("jact/{profile_id}/").len()..]).into_owned();
                push(
                    &Work::Exit {
                        instance: iid,
                        reason: format!("exit event: {name}"),
                    },
                    &mut ops,
                )?;
            }
        }
    }
    let prefix = format!("jwait/{profile_id}/{name}\0");
    let waits = if fresh {
        Vec::new()
    } else {
        b.scan_prefix(sp, prefix.as_bytes(), usize::MAX)?
    };
    for (k, _) in waits {
        let iid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        push(
            &Work::Event {
                instance: iid,
                event: Box::new(m.clone()),
            },
            &mut ops,
        )?;
    }
    for r in routes
        .iter()
        .filter(|r| r.manifest.entry_events.iter().any(|e| e == name))
    {
        push(
            &Work::Enter {
                journey: r.journey.clone(),
                profile_id: profile_id.to_string(),
                event: Box::new(m.clone()),
            },
            &mut ops,
        )?;
    }
    Ok(ops)
}

/// The journey service: manifests, the runner and the scheduler.
pub struct Journeys {
    db: Db,
    clock: SharedClock,
    registry: Arc<Registry>,
    ingest: Arc<Ingest>,
    loops: Arc<TenantLoops>,
    /// (tenant, plugin, digest) → manifest.
    manifests: Mutex<HashMap<(String, String, String), wit::Manifest>>,
    me: OnceLock<std::sync::Weak<Journeys>>,
}

impl std::fmt::Debug for Journeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journeys").finish_non_exhaustive()
    }
}

/// Converts a stored message to the WIT event a plugin sees.
pub fn to_wit_event(m: &Message) -> types::Event {
    types::Event {
        message_id: m.message_id.clone(),
        event_type: match m.kind {
            MessageType::Track => types::EventType::Track,
            MessageType::Identify => types::EventType::Identify,
            MessageType::Page => types::EventType::Page,
            MessageType::Screen => types::EventType::Screen,
            MessageType::Group => types::EventType::Group,
            MessageType::Alias => types::EventType::Alias,
        },
        name: m.event.clone(),
        user_id: m.user_id.clone(),
        anonymous_id: m.anonymous_id.clone(),
        properties: Value::Object(m.properties.clone()).to_string(),
        traits: Value::Object(m.traits.clone()).to_string(),
        context: Value::Object(m.context.clone()).to_string(),
        timestamp: m.timestamp,
        received_at: m.received_at,
    }
}

/// The next instant at `hour:minute` local time in `tz` strictly after `now_ms`, on an
/// allowed weekday (0 = Sunday; empty = any).
pub fn next_local_time(now_ms: i64, tz: &str, hour: u8, minute: u8, days: &[u8]) -> i64 {
    // Weft's home market when even the zone given is unknown.
    let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::Asia::Ho_Chi_Minh);
    let now = tz
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(|| tz.timestamp_millis_opt(0).single().expect("epoch exists"));
    let (h, mi) = (u32::from(hour.min(23)), u32::from(minute.min(59)));
    // A week plus a day covers every weekday set.
    for d in 0..8 {
        let date = now.date_naive() + chrono::Days::new(d);
        let weekday = date.weekday().num_days_from_sunday() as u8;
        if !days.is_empty() && !days.contains(&weekday) {
            continue;
        }
        let Some(naive) = date.and_hms_opt(h, mi, 0) else {
            continue;
        };
        // The messaging policy's DST rules: a skipped time is the end of the gap, a
        // repeated one its first occurrence.
        if let Some(at) = crate::messaging::policy::instants_at(tz, naive).find(|&t| t > now_ms) {
            return at;
        }
    }
    // Unreachable with valid weekdays; fall back to a day later.
    now_ms + profiles::DAY_MS
}

impl Journeys {
    /// Starts the journey service and its timer scheduler, and hooks it into ingestion.
    pub fn start(
        db: Db,
        clock: SharedClock,
        registry: Arc<Registry>,
        ingest: Arc<Ingest>,
    ) -> Arc<Journeys> {
        let j = Arc::new(Journeys {
            db,
            clock,
            registry,
            ingest: ingest.clone(),
            loops: TenantLoops::background("journey runner"),
            manifests: Mutex::new(HashMap::new()),
            me: OnceLock::new(),
        });
        let _ = j.me.set(Arc::downgrade(&j));
        ingest.processor().set_journeys(&j);
        let weak = Arc::downgrade(&j);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEDULER_TICK).await;
                let Some(j) = weak.upgrade() else { break };
                if let Err(e) = j.fire_due().await {
                    tracing::error!(error = %e, "journey scheduler");
                }
            }
        });
        // Resume work left by a restart.
        let me = j.clone();
        tokio::spawn(async move {
            if let Ok(tenants) = crate::tenants::list(&me.db).await {
                for t in tenants {
                    me.wake(&t.id);
                }
            }
        });
        j
    }

    /// The tenant's active journeys and their manifests (a `describe` call the first time
    /// a version is seen). Blocking: call from a blocking thread.
    pub fn routes(&self, tenant: &str) -> Routes {
        let mut out = Vec::new();
        for (name, active) in self.registry.actives(tenant) {
            if active.kind != PluginKind::JourneyRule {
                continue;
            }
            let key = (tenant.to_string(), name.clone(), active.digest.clone());
            let cached = self
                .manifests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned();
            let manifest = match cached {
                Some(m) => m,
                None => match self
                    .registry
                    .invoke_blocking(&active, Call::JourneyDescribe)
                    .output
                {
                    Some(Output::JourneyDescribe(m)) => {
                        self.manifests
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(key, m.clone());
                        m
                    }
                    other => {
                        tracing::warn!(tenant, journey = %name, ?other, "journey describe failed; not routing to it");
                        continue;
                    }
                },
            };
            out.push(Route {
                journey: name,
                manifest,
                active,
            });
        }
        out.sort_by(|a, b| a.journey.cmp(&b.journey));
        out
    }

    /// Makes sure the runner works through `tenant`'s journey work.
    pub fn wake(&self, tenant: &str) {
        self.wake_lanes(tenant, (0..WORK_LANES).collect());
    }

    /// Makes sure the runner works through the given lanes of `tenant`'s journey work.
    pub fn wake_lanes(&self, tenant: &str, lanes: std::collections::BTreeSet<usize>) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        for lane in lanes {
            let (me, owner) = (me.clone(), tenant.to_string());
            self.loops.wake(
                &loop_key(tenant, lane),
                Arc::new(move |_: &str| me.run_pass(&owner, lane)),
            );
        }
    }

    /// Whether `tenant` has journey work queued or running.
    pub async fn busy(&self, tenant: &str) -> Result<bool, StoreError> {
        if (0..WORK_LANES).any(|lane| self.loops.busy(&loop_key(tenant, lane))) {
            return Ok(true);
        }
        let sp = Space::tenant(tenant);
        for prefix in [WORK_PREFIX, LEGACY_WORK_PREFIX] {
            if !self.db.scan_prefix(&sp, prefix, 1).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Turns every due timer into a work item, once. Returns how many fired.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let legacy = self.ingest.legacy_markers_possible();
        let fired = self
            .db
            .run(move |b| {
                let mut woke = Vec::new();
                // Only the due timers: keys sort by due time, and every key due at or
                // before `now` sorts before `<now + 1:020>`.
                let due = b.scan_range(
                    &TIMERS,
                    b"",
                    format!("{:020}", now.max(0) + 1).as_bytes(),
                    TIMER_CHUNK,
                )?;
                for (key, work) in due {
                    // A timer holds the work item it becomes; its token guards against
                    // firing twice if a crash lands between the insert and the delete.
                    let text = String::from_utf8_lossy(&key).into_owned();
                    let mut parts = text.splitn(3, '/');
                    let (Some(at), Some(tenant), Some(token)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        b.delete(&TIMERS, &key)?;
                        continue;
                    };
                    if at.parse::<i64>().unwrap_or(i64::MAX) > now {
                        break;
                    }
                    let (guard, also) = FIRED_TIMERS.guards(token, now, legacy);
                    let sp = Space::tenant(tenant);
                    let work_key = stored_work_key(b, &sp, &work, b.next_id()?)?;
                    b.insert_unique(
                        &sp,
                        &[UniqueInsert {
                            guard,
                            also,
                            guard_value: Vec::new(),
                            ops: vec![BatchOp::put(work_key, work)],
                        }],
                    )?;
                    b.delete(&TIMERS, &key)?;
                    woke.push(tenant.to_string());
                }
                Ok(woke)
            })
            .await?;
        let n = fired.len();
        let mut seen = std::collections::HashSet::new();
        for t in fired {
            if seen.insert(t.clone()) {
                self.wake(&t);
            }
        }
        Ok(n)
    }

    /// Runs up to [`RUNNER_CHUNK`] work items of `lane` of `tenant`, oldest first. Items
    /// run in order, each reading what the earlier ones decided, and the pass writes their
    /// batches as one: every atomic batch costs a redo record.
    fn run_pass(&self, tenant: &str, lane: usize) -> Result<usize, StoreError> {
        let backend = self.db.backend();
        let sp = Space::tenant(tenant);
        self.move_legacy_work(backend.as_ref(), &sp)?;
        let items = backend.scan_prefix(&sp, &lane_prefix(lane), RUNNER_CHUNK)?;
        if items.is_empty() {
            return Ok(0);
        }
        let routes = self.routes(tenant);
        let mut queued_events = false;
        let (mut moved_to, mut moved_to_count) = (std::collections::BTreeSet::new(), 0);
        let staged = Staged::new(backend.clone(), sp.clone());
        for (key, value) in &items {
            let mut ops = match serde_json::from_slice::<Work>(value) {
                Ok(work) => match home_lane(&staged, &sp, work, lane)? {
                    Home::Here(work) => {
                        let (ops, events) = self.handle(&staged, &sp, tenant, &routes, work)?;
                        queued_events |= events;
                        ops
                    }
                    Home::Elsewhere(to, work) => {
                        // Its profile was merged into one of another lane: the work moves
                        // there, behind that lane's queue, so one instance's steps still
                        // run in one lane only.
                        let moved = work_key(Some(&to), staged.next_id()?);
                        moved_to.extend(lane_of_key(&moved));
                        moved_to_count += 1;
                        let bytes = serde_json::to_vec(&work).map_err(StoreError::Codec)?;
                        vec![BatchOp::put(moved, bytes)]
                    }
                },
                Err(e) => {
                    tracing::warn!(tenant, error = %e, "undecodable journey work item dropped");
                    Vec::new()
                }
            };
            ops.push(BatchOp::delete(key.clone()));
            staged.stage(ops)?;
        }
        staged.commit()?;
        // Items moved to another lane run (and count) there.
        let ran = items.len() - moved_to_count;
        self.ingest
            .processor()
            .counters(tenant)
            .journey_items_run
            .fetch_add(ran as u64, Ordering::Relaxed);
        if queued_events {
            self.ingest.processor().wake(tenant);
        }
        // Woken only now that the moved items are stored.
        if !moved_to.is_empty() {
            self.wake_lanes(tenant, moved_to);
        }
        Ok(items.len())
    }

    /// Moves work items stored before lanes (`jq/<seq>`) into their lanes, keeping their
    /// sequence numbers, so they run before anything queued for their profile since. Every
    /// lane's pass does this first; two lanes moving the same item write the same keys.
    fn move_legacy_work(&self, b: &dyn Backend, sp: &Space) -> Result<(), StoreError> {
        loop {
            let legacy = b.scan_prefix(sp, LEGACY_WORK_PREFIX, RUNNER_CHUNK * 16)?;
            if legacy.is_empty() {
                return Ok(());
            }
            let mut ops = Vec::with_capacity(legacy.len() * 2);
            let mut lanes = std::collections::BTreeSet::new();
            for (key, value) in legacy {
                let seq = std::str::from_utf8(&key[LEGACY_WORK_PREFIX.len()..])
                    .ok()
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                if let Some(seq) = seq {
                    let moved = stored_work_key(b, sp, &value, seq)?;
                    lanes.extend(lane_of_key(&moved));
                    ops.push(BatchOp::put(moved, value.to_vec()));
                }
                ops.push(BatchOp::delete(key.to_vec()));
            }
            b.apply_batch(sp, &ops)?;
            if let Space::Tenant(tenant) = sp {
                self.wake_lanes(tenant, lanes);
            }
        }
    }

    fn load(&self, b: &dyn Backend, sp: &Space, iid: &str) -> Result<Option<Instance>, StoreError> {
        match b.get(sp, &instance_key(iid))? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    /// Handles one work item; returns the batch and whether it queued events.
    fn handle(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        routes: &Routes,
        work: Work,
    ) -> Result<(Vec<BatchOp>, bool), StoreError> {
        let now = self.clock.now_ms();
        match work {
            Work::Enter {
                journey,
                profile_id,
                event,
            } => {
                let Some(route) = routes.iter().find(|r| r.journey == journey) else {
                    return Ok((Vec::new(), false));
                };
                let entry_key = route
                    .manifest
                    .entry_key
                    .as_deref()
                    .and_then(|p| entry_key_of(&event, p));
                let idx = entry_index_key(&journey, &profile_id, entry_key.as_deref());
                if let Some(prev) = b.get(sp, &idx)? {
                    let prev = self.load(b, sp, &String::from_utf8_lossy(&prev))?;
                    let done = prev
                        .as_ref()
                        .is_none_or(|p| matches!(p.status, InstanceStatus::Exited));
                    let allowed = match route.manifest.re_entry {
                        wit::ReEntry::Never => false,
                        wit::ReEntry::AfterExit => done,
                        wit::ReEntry::EveryEvent => true,
                    };
                    if !allowed {
                        return Ok((Vec::new(), false));
                    }
                }
                let iid = format!("ji_{:016x}", b.next_id()?);
                let inst = Instance {
                    id: iid.clone(),
                    journey: journey.clone(),
                    version: route.active.version.clone(),
                    profile_id: profile_id.clone(),
                    entry_key,
                    step: "start".into(),
                    context: Map::new(),
                    status: InstanceStatus::Running,
                    wait: None,
                    attempt: 0,
                    chain: 0,
                    retry_trigger: None,
                    last_error: None,
                    exit_reason: None,
                    steps_run: 0,
                    created_at: now,
                    updated_at: now,
                };
                // The profile's instance index remembers the entry index key (for erasure).
                let mut ops = vec![
                    BatchOp::put(profile_instance_key(&profile_id, &iid), idx.clone()),
                    BatchOp::put(idx, iid.as_bytes().to_vec()),
                    BatchOp::put(active_key(&profile_id, &iid), journey.as_bytes().to_vec()),
                ];
                let (more, events) = self.step(
                    b,
                    sp,
                    tenant,
                    route,
                    inst,
                    wit::Trigger::Entered(to_wit_event(&event)),
                    now,
                )?;
                ops.extend(more);
                Ok((ops, events))
            }
            Work::Event { instance, event } => {
                let Some(inst) = self.load(b, sp, &instance)? else {
                    return Ok((Vec::new(), false));
                };
                let Some(wait) = inst.wait.clone() else {
                    return Ok((Vec::new(), false));
                };
                let name = event.event.clone().unwrap_or_default();
                let key_ok = !wait.match_entry_key
                    || inst.entry_key.is_none()
                    || routes
                        .iter()
                        .find(|r| r.journey == inst.journey)
                        .and_then(|r| r.manifest.entry_key.as_deref())
                        .and_then(|p| entry_key_of(&event, p))
                        == inst.entry_key;
                if inst.status != InstanceStatus::Waiting || !wait.events.contains(&name) || !key_ok
                {
                    return Ok((Vec::new(), false));
                }
                let Some(route) = routes.iter().find(|r| r.journey == inst.journey) else {
                    return Ok((Vec::new(), false));
                };
                let mut ops = clear_wait_ops(&inst);
                let (more, events) = self.step(
                    b,
                    sp,
                    tenant,
                    route,
                    inst,
                    wit::Trigger::EventReceived(to_wit_event(&event)),
                    now,
                )?;
                ops.extend(more);
                Ok((ops, events))
            }
            Work::Timer {
                instance,
                token,
                timer_id,
            } => {
                let Some(inst) = self.load(b, sp, &instance)? else {
                    return Ok((Vec::new(), false));
                };
                let current = inst.status == InstanceStatus::Waiting
                    && inst.wait.as_ref().is_some_and(|w| w.token == token);
                if !current {
                    return Ok((Vec::new(), false));
                }
                let Some(route) = routes.iter().find(|r| r.journey == inst.journey) else {
                    return Ok((Vec::new(), false));
                };
                let trigger = match inst.retry_trigger.clone() {
                    Some(t) if timer_id == RETRY_TIMER => t,
                    _ => wit::Trigger::TimerFired(timer_id),
                };
                let mut ops = clear_wait_ops(&inst);
                let (more, events) = self.step(b, sp, tenant, route, inst, trigger, now)?;
                ops.extend(more);
                Ok((ops, events))
            }
            Work::Release { intent } => {
                let (ops, hold) = outbox::release(b, sp, &intent, now)?;
                if let Some(until) = hold {
                    self.hold_timer(tenant, &intent, until)?;
                }
                Ok((ops, false))
            }
            Work::Rehome { instance, to } => self.rehome(b, sp, &instance, &to, now),
            Work::Exit { instance, reason } => {
                let Some(mut inst) = self.load(b, sp, &instance)? else {
                    return Ok((Vec::new(), false));
                };
                if matches!(inst.status, InstanceStatus::Exited) {
                    return Ok((Vec::new(), false));
                }
                let mut ops = clear_wait_ops(&inst);
                finish(&mut inst, InstanceStatus::Exited, Some(reason), now);
                ops.extend(finish_ops(&inst)?);
                Ok((ops, false))
            }
        }
    }

    /// Moves instance `iid` and its indexes (`jall`, `jact`, `jwait`, and its entry index
    /// unless the winner has one for the same journey and key) to the profile `to` was
    /// merged into, following later merges. If that profile was erased meanwhile, the
    /// instance is erased too.
    fn rehome(
        &self,
        b: &dyn Backend,
        sp: &Space,
        iid: &str,
        to: &str,
        now: i64,
    ) -> Result<(Vec<BatchOp>, bool), StoreError> {
        let Some(mut inst) = self.load(b, sp, iid)? else {
            return Ok((Vec::new(), false));
        };
        let to = profiles::current_id(b, sp, to)?;
        let from = inst.profile_id.clone();
        if to == from {
            return Ok((Vec::new(), false));
        }
        let exists = profiles::get(b, sp, &to).ok().flatten().is_some();
        let mut ops = vec![
            BatchOp::delete(profile_instance_key(&from, iid)),
            BatchOp::delete(active_key(&from, iid)),
        ];
        ops.extend(clear_wait_ops(&inst));
        let old_index = entry_index_key(&inst.journey, &from, inst.entry_key.as_deref());
        let indexed_here = b.get(sp, &old_index)?.is_some_and(|v| v == iid.as_bytes());
        if indexed_here {
            ops.push(BatchOp::delete(old_index));
        }
        if !exists {
            ops.push(BatchOp::delete(instance_key(iid)));
            return Ok((ops, false));
        }
        let new_index = entry_index_key(&inst.journey, &to, inst.entry_key.as_deref());
        if indexed_here && b.get(sp, &new_index)?.is_none() {
            ops.push(BatchOp::put(new_index.clone(), iid.as_bytes().to_vec()));
        }
        ops.push(BatchOp::put(profile_instance_key(&to, iid), new_index));
        if !matches!(inst.status, InstanceStatus::Exited) {
            ops.push(BatchOp::put(
                active_key(&to, iid),
                inst.journey.as_bytes().to_vec(),
            ));
        }
        inst.profile_id = to;
        inst.updated_at = now;
        for e in inst.wait.iter().flat_map(|w| w.events.iter()) {
            ops.push(BatchOp::put(wait_key(&inst.profile_id, e, iid), Vec::new()));
        }
        ops.push(put_instance(&inst)?);
        Ok((ops, false))
    }

    /// Runs one step of `inst` and returns the batch recording what it decided.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        route: &Route,
        mut inst: Instance,
        trigger: wit::Trigger,
        now: i64,
    ) -> Result<(Vec<BatchOp>, bool), StoreError> {
        // A profile merged away since the work was queued: its instances' indexes move to
        // the winner when their `Rehome` runs; until then the step sees the winner.
        let Some(profile) = profiles::get_current(b, sp, &inst.profile_id)
            .ok()
            .flatten()
        else {
            finish(
                &mut inst,
                InstanceStatus::Exited,
                Some("profile erased".into()),
                now,
            );
            return Ok((finish_ops(&inst)?, false));
        };
        let input = wit::StepInput {
            journey_id: inst.journey.clone(),
            instance_id: inst.id.clone(),
            step_id: inst.step.clone(),
            entry_key: inst.entry_key.clone(),
            profile: {
                let mut p = profiles::to_wit(&profile);
                p.audiences = crate::audience::engine::memberships(b, sp, &profile.id)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                p
            },
            journey_context: Value::Object(inst.context.clone()).to_string(),
            trigger: trigger.clone(),
            now,
            attempt: inst.attempt,
        };
        inst.steps_run += 1;
        inst.updated_at = now;
        // An instance finishes on the version that started it (an upgrade affects new
        // instances only); if that version was deleted, it moves to the active one.
        let active = if inst.version == route.active.version {
            route.active.clone()
        } else {
            let pinned = tokio::runtime::Handle::current().block_on(self.registry.pinned(
                tenant,
                &inst.journey,
                &inst.version,
            ));
            match pinned {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(tenant, instance = %inst.id, version = %inst.version, error = %e,
                        "the instance's version is gone; continuing on the active version");
                    inst.version = route.active.version.clone();
                    route.active.clone()
                }
            }
        };
        let invoked = self
            .registry
            .invoke_blocking(&active, Call::JourneyStep(input));
        let failure = match (invoked.output, invoked.error) {
            (Some(Output::JourneyStep(Ok(commands))), _) => {
                inst.attempt = 0;
                inst.retry_trigger = None;
                inst.last_error = None;
                return self.apply(b, sp, tenant, inst, &profile, commands, now);
            }
            (Some(Output::JourneyStep(Err(e))), _) => match e {
                types::PluginError::Retryable(m) => format!("retryable: {m}"),
                types::PluginError::Fatal(m) => {
                    inst.last_error = Some(format!("fatal: {m}"));
                    finish(&mut inst, InstanceStatus::Parked, None, now);
                    return Ok((finish_ops(&inst)?, false));
                }
                types::PluginError::InvalidInput(m) | types::PluginError::NotSupported(m) => {
                    // The plugin does not handle this trigger: the work is discarded.
                    let reason = format!("step discarded: {m}");
                    finish(&mut inst, InstanceStatus::Exited, Some(reason), now);
                    return Ok((finish_ops(&inst)?, false));
                }
            },
            (_, Some(err)) => format!("{}: {err}", err.code()),
            (other, None) => format!("unexpected output {other:?}"),
        };
        // Retry with backoff, then park.
        inst.attempt += 1;
        inst.last_error = Some(failure);
        if inst.attempt >= MAX_ATTEMPTS {
            finish(&mut inst, InstanceStatus::Parked, None, now);
            return Ok((finish_ops(&inst)?, false));
        }
        let delay = RETRY_BASE_MS << (inst.attempt - 1).min(20);
        inst.retry_trigger = Some(trigger);
        let token = b.next_id()?;
        inst.status = InstanceStatus::Waiting;
        inst.wait = Some(WaitState {
            token,
            until: Some(now + delay),
            timer_id: RETRY_TIMER.into(),
            events: Vec::new(),
            match_entry_key: false,
        });
        self.wait_timer(tenant, &inst)?;
        Ok((vec![put_instance(&inst)?], false))
    }

    /// Stores a timer that turns into `work` at `due`.
    fn put_timer(&self, tenant: &str, due: i64, work: &Work) -> Result<(), StoreError> {
        let b = self.db.backend();
        b.put(
            &TIMERS,
            &timer_key(due, tenant, b.next_id()?),
            &serde_json::to_vec(work).map_err(StoreError::Codec)?,
        )
    }

    /// A timer that re-checks a held send when its quiet hours end.
    fn hold_timer(&self, tenant: &str, intent: &str, until: i64) -> Result<(), StoreError> {
        let work = Work::Release {
            intent: intent.to_string(),
        };
        self.put_timer(tenant, until, &work)
    }

    /// The timer of `inst`'s current wait, if it has a time.
    fn wait_timer(&self, tenant: &str, inst: &Instance) -> Result<(), StoreError> {
        match inst.wait.as_ref().and_then(|w| w.until.map(|u| (w, u))) {
            Some((w, until)) => {
                let work = Work::Timer {
                    instance: inst.id.clone(),
                    token: w.token,
                    timer_id: w.timer_id.clone(),
                };
                self.put_timer(tenant, until, &work)
            }
            None => Ok(()),
        }
    }

    /// Applies a step's commands in order.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        b: &dyn Backend,
        sp: &Space,
        tenant: &str,
        mut inst: Instance,
        profile: &ProfileRecord,
        commands: Vec<wit::Command>,
        now: i64,
    ) -> Result<(Vec<BatchOp>, bool), StoreError> {
        let mut ops = Vec::new();
        let mut queued = false;
        let mut goto = None;
        let mut wait = None;
        let mut exit = None;
        for (n, c) in commands.into_iter().enumerate() {
            match c {
                wit::Command::Send(intent) => {
                    let intent_id = intent.intent_id.clone();
                    let (more, hold) =
                        outbox::submit(b, sp, &inst.id, &inst.journey, profile, intent, now)?;
                    if let Some(until) = hold {
                        self.hold_timer(tenant, &intent_id, until)?;
                    }
                    ops.extend(more);
                }
                wit::Command::Wait(spec) => wait = Some(spec),
                wit::Command::Goto(step) => goto = Some(step),
                wit::Command::SetTraits(json) | wit::Command::PatchContext(json)
                    if serde_json::from_str::<Map<String, Value>>(&json).is_err() =>
                {
                    tracing::warn!(tenant, instance = %inst.id, "ignored a command whose JSON is not an object");
                }
                wit::Command::SetTraits(json) => {
                    let traits = serde_json::from_str(&json).unwrap_or_default();
                    let m = own_message(
                        &inst,
                        n,
                        MessageType::Identify,
                        None,
                        Map::new(),
                        traits,
                        now,
                    );
                    ops.push(queue_op(b.next_id()?, &m)?);
                    queued = true;
                }
                wit::Command::Emit(e) => {
                    let props = serde_json::from_str(&e.properties).unwrap_or_default();
                    let m = own_message(
                        &inst,
                        n,
                        MessageType::Track,
                        Some(e.name),
                        props,
                        Map::new(),
                        now,
                    );
                    ops.push(queue_op(b.next_id()?, &m)?);
                    queued = true;
                }
                wit::Command::PatchContext(json) => {
                    let patch: Map<String, Value> = serde_json::from_str(&json).unwrap_or_default();
                    let mut next = inst.context.clone();
                    for (k, v) in patch {
                        if v.is_null() {
                            next.remove(&k);
                        } else {
                            next.insert(k, v);
                        }
                    }
                    if serde_json::to_vec(&next).map_or(usize::MAX, |v| v.len())
                        <= MAX_CONTEXT_BYTES
                    {
                        inst.context = next;
                    } else {
                        inst.last_error = Some(format!("patch-context ignored: the context would exceed {MAX_CONTEXT_BYTES} bytes"));
                    }
                }
                wit::Command::Exit(reason) => {
                    exit = Some(reason);
                    break;
                }
            }
        }
        if let Some(step) = &goto {
            inst.step = step.clone();
        }
        if let Some(reason) = exit {
            finish(&mut inst, InstanceStatus::Exited, Some(reason), now);
            ops.extend(finish_ops(&inst)?);
            return Ok((ops, queued));
        }
        let token = b.next_id()?;
        let next_wait = match wait {
            Some(spec) => {
                inst.chain = 0;
                Some(match spec {
                    wit::WaitSpec::DurationMs(ms) => {
                        timed(token, now.saturating_add(ms.min(i64::MAX as u64) as i64))
                    }
                    wit::WaitSpec::Until(at) => timed(token, at.max(now)),
                    wit::WaitSpec::LocalTime(l) => {
                        // The profile's zone if it is valid, else the tenant's default.
                        let tz = match profile.timezone.clone() {
                            Some(z) if z.parse::<chrono_tz::Tz>().is_ok() => z,
                            _ => outbox::tenant_policy(b, sp)?.default_timezone,
                        };
                        timed(
                            token,
                            next_local_time(now, &tz, l.hour, l.minute, &l.days_of_week),
                        )
                    }
                    wit::WaitSpec::Event(w) => WaitState {
                        token,
                        until: Some(now.saturating_add(w.timeout_ms.min(i64::MAX as u64) as i64)),
                        timer_id: w.timer_id,
                        events: w.event_names,
                        match_entry_key: w.match_entry_key,
                    },
                })
            }
            None if goto.is_some() => {
                inst.chain += 1;
                if inst.chain > MAX_CHAIN {
                    inst.last_error = Some(format!(
                        "{MAX_CHAIN} steps in a row without a wait (a goto loop?)"
                    ));
                    finish(&mut inst, InstanceStatus::Parked, None, now);
                    ops.extend(finish_ops(&inst)?);
                    return Ok((ops, queued));
                }
                // A goto without a wait runs the next step now, as a zero wait.
                Some(timed(token, now))
            }
            None => None,
        };
        match next_wait {
            None => {
                finish(
                    &mut inst,
                    InstanceStatus::Exited,
                    Some("completed".into()),
                    now,
                );
                ops.extend(finish_ops(&inst)?);
            }
            Some(w) => {
                inst.status = InstanceStatus::Waiting;
                for e in &w.events {
                    ops.push(BatchOp::put(
                        wait_key(&inst.profile_id, e, &inst.id),
                        Vec::new(),
                    ));
                }
                let immediate = w.until == Some(now) && w.events.is_empty();
                inst.wait = Some(w);
                if immediate {
                    let work = Work::Timer {
                        instance: inst.id.clone(),
                        token,
                        timer_id: WAIT_TIMER.into(),
                    };
                    ops.push(BatchOp::put(
                        work_key(Some(&inst.profile_id), b.next_id()?),
                        serde_json::to_vec(&work).map_err(StoreError::Codec)?,
                    ));
                } else {
                    self.wait_timer(tenant, &inst)?;
                }
                ops.push(put_instance(&inst)?);
            }
        }
        Ok((ops, queued))
    }

    /// Instances of a profile, newest first (the 360 view).
    pub fn instances_of(
        b: &dyn Backend,
        sp: &Space,
        profile_id: &str,
    ) -> Result<Vec<Instance>, StoreError> {
        let prefix = format!("jall/{profile_id}/");
        let mut out = Vec::new();
        for (k, _) in b.scan_prefix(sp, prefix.as_bytes(), usize::MAX)? {
            let iid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(v) = b.get(sp, &instance_key(&iid))? {
                if let Ok(i) = serde_json::from_slice::<Instance>(&v) {
                    out.push(i);
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse((i.created_at, i.id.clone())));
        Ok(out)
    }
}

/// A message the journey sends into the tenant's event stream for its profile (command
/// `n` of the current step: the id is deterministic, so a retried step repeats it).
fn own_message(
    inst: &Instance,
    n: usize,
    kind: MessageType,
    event: Option<String>,
    properties: Map<String, Value>,
    traits: Map<String, Value>,
    now: i64,
) -> Message {
    let mut m = Message::internal(
        &inst.profile_id,
        kind,
        event,
        properties,
        traits,
        format!("{}:{}:{}:{n}", inst.id, inst.step, inst.steps_run),
        now,
    );
    m.context = Map::from_iter([(
        "journey".to_string(),
        serde_json::json!({"id": inst.journey, "instance": inst.id}),
    )]);
    m
}

/// Timer id of a time wait (and of a `goto` without a wait).
pub const WAIT_TIMER: &str = "wait";
/// Timer id of a retry after a failed step.
const RETRY_TIMER: &str = "retry";

fn timed(token: u64, until: i64) -> WaitState {
    WaitState {
        token,
        until: Some(until),
        timer_id: WAIT_TIMER.into(),
        events: Vec::new(),
        match_entry_key: false,
    }
}

fn put_instance(inst: &Instance) -> Result<BatchOp, StoreError> {
    Ok(BatchOp::put(
        instance_key(&inst.id),
        serde_json::to_vec(inst).map_err(StoreError::Codec)?,
    ))
}

/// Removes the event-wait index entries of `inst`'s current wait.
fn clear_wait_ops(inst: &Instance) -> Vec<BatchOp> {
    inst.wait
        .iter()
        .flat_map(|w| w.events.iter())
        .map(|e| BatchOp::delete(wait_key(&inst.profile_id, e, &inst.id)))
        .collect()
}

fn finish(inst: &mut Instance, status: InstanceStatus, reason: Option<String>, now: i64) {
    inst.status = status;
    inst.wait = None;
    inst.retry_trigger = None;
    if reason.is_some() {
        inst.exit_reason = reason;
    }
    inst.updated_at = now;
}

/// The batch of a finished (exited or parked) instance: no longer active.
fn finish_ops(inst: &Instance) -> Result<Vec<BatchOp>, StoreError> {
    let mut ops = clear_wait_ops(inst);
    if inst.status == InstanceStatus::Exited {
        ops.push(BatchOp::delete(active_key(&inst.profile_id, &inst.id)));
    }
    ops.push(put_instance(inst)?);
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_profiles_work_always_lands_in_the_same_lane_in_order() {
        // Stored keys depend on these values (FNV-1a 64 mod 4, checked independently):
        // a change needs a migration.
        assert_eq!(
            ["p_1", "p_2", "p_3", "p_4", "p_5"].map(|p| lane_of(Some(p))),
            [3, 2, 1, 0, 3]
        );
        assert_eq!(lane_of(None), 0);
        let (a, b) = (work_key(Some("p_2"), 9), work_key(Some("p_2"), 10));
        assert!(
            a.starts_with(b"jl/2/") && a < b,
            "same lane, in sequence order"
        );
        assert_eq!(lane_of_key(&a), Some(2));
        assert_eq!(
            lane_of_key(b"jq/0000000000000001"),
            None,
            "legacy keys are not lanes"
        );
        assert_eq!(lane_of_key(b"jl/9/0000000000000001"), None);
        assert_eq!(lane_of_key(b"ji/jl/1/"), None);
    }

    #[test]
    fn work_runs_in_the_lane_of_its_instances_profile_and_entries_follow_merges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _blobs) = crate::store::open(dir.path()).expect("open store");
        let (b, sp) = (db.backend().as_ref(), Space::tenant("t1"));
        let owner = "p_2"; // lane 2 (see the test above)
        b.put(
            &sp,
            &instance_key("ji_1"),
            serde_json::json!({"profile_id": owner})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let exit = || Work::Exit {
            instance: "ji_1".into(),
            reason: "r".into(),
        };
        assert!(matches!(
            home_lane(b, &sp, exit(), 2).unwrap(),
            Home::Here(_)
        ));
        match home_lane(b, &sp, exit(), 0).unwrap() {
            Home::Elsewhere(p, Work::Exit { .. }) => assert_eq!(p, owner),
            _ => panic!("an instance's work found in lane 0 belongs to lane 2"),
        }
        // An entry queued for a profile merged away since: it runs as the winner's, in
        // the winner's lane.
        b.put(&sp, b"merged/p_1", b"p_2").unwrap();
        let enter = Work::Enter {
            journey: "j".into(),
            profile_id: "p_1".into(),
            event: Box::new(Message::internal(
                "p_1",
                MessageType::Track,
                Some("Product Added".into()),
                Map::new(),
                Map::new(),
                "m-1".into(),
                0,
            )),
        };
        match home_lane(b, &sp, enter, lane_of(Some("p_1"))).unwrap() {
            Home::Elsewhere(p, Work::Enter { profile_id, .. }) => {
                assert_eq!((p.as_str(), profile_id.as_str()), ("p_2", "p_2"));
            }
            _ => panic!("the entry moves to the winner's lane"),
        }
    }

    #[test]
    fn local_time_wait_picks_the_next_occurrence_in_the_zone() {
        // 2026-11-22T01:00:00Z is 08:00 in Ho Chi Minh City (UTC+7).
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 1, 0, 0)
            .unwrap()
            .timestamp_millis();
        let at9 = next_local_time(now, "Asia/Ho_Chi_Minh", 9, 0, &[]);
        assert_eq!(at9 - now, HOUR);
        // Already past 07:00 today: tomorrow.
        let at7 = next_local_time(now, "Asia/Ho_Chi_Minh", 7, 0, &[]);
        assert_eq!(at7 - now, 23 * HOUR);
        // Exactly now is not "next".
        let at8 = next_local_time(now, "Asia/Ho_Chi_Minh", 8, 0, &[]);
        assert_eq!(at8 - now, 24 * HOUR);
        // Only Mondays (22 Nov 2026 is a Sunday).
        let monday9 = next_local_time(now, "Asia/Ho_Chi_Minh", 9, 0, &[1]);
        assert_eq!(monday9 - now, 25 * HOUR);
        // Unknown zone: the default.
        assert_eq!(next_local_time(now, "Mars/Base", 9, 0, &[]), at9);
    }
}
