//! Edge personalization: **a page's `POST /v1/personalize` is decided in
//! [`Personalizer::decide`]**. It finds the visitor's profile in the in-memory
//! [`cache::ProfileCache`], assigns experiments, runs the tenant's personalization plugin
//! on a fresh instance (on the request's own thread when the plugin imports nothing from
//! the store, see [`Runtime::runs_inline`](crate::runtime::Runtime::runs_inline); on a
//! blocking thread otherwise), and fails open to the tenant's default
//! content when the plugin errs, runs out of time or is quarantined. Exposures become
//! `Experiment Viewed` events in the background.

pub mod cache;
pub mod experiment;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::identity;
use crate::ingest::{Ingest, Message, MessageType};
use crate::kind::PluginKind;
use crate::registry::{Invoked, Registry, RegistryError};
use crate::runtime::bindings::exports::personalize as wit;
use crate::runtime::{Call, Output};
use crate::store::{Db, Space, StoreError};
use cache::ProfileCache;
use experiment::Exposures;
use settings::{Compiled, Settings, SETTINGS_KEY};

/// Placements one request may ask for: a page has a handful of slots.
pub const MAX_REQUEST_PLACEMENTS: usize = 20;

/// Failures in a row that quarantine a plugin: one or two can be a fluke (a cold
/// cache, a noisy neighbour); five in a row is a broken version.
pub const QUARANTINE_AFTER: u32 = 5;

/// How long a quarantined plugin is skipped before one request tries it again: long
/// enough to shed a broken version's cost, short enough that a fix shows within a minute.
pub const QUARANTINE_MS: i64 = 30_000;

/// Exposures waiting to be written: about two seconds of a busy edge's traffic; past it
/// exposures are dropped (and counted) rather than slowing pages down.
const EXPOSURE_QUEUE: usize = 65_536;

/// Exposures written in one ingestion batch (one commit).
const EXPOSURE_BATCH: usize = 500;

/// Shards of the tenant table.
const SHARDS: usize = 16;

/// Why a decision request was refused. Every message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The tenant has not configured personalization.
    #[error(
        "personalization is not configured for this tenant: PUT /v1/personalize/settings first"
    )]
    NotConfigured,
    /// A placement the tenant has not configured.
    #[error("unknown placement `{0}`: it is not in this tenant's personalization settings")]
    UnknownPlacement(String),
    /// None, too many, or a repeated placement.
    #[error("{0}")]
    InvalidPlacements(String),
    /// Neither `anonymousId` nor `userId`.
    #[error("send `anonymousId` or `userId` (or both) to say who the visitor is")]
    MissingIdentity,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A placement as a page asks for it.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Placement id.
    pub id: String,
    /// At most this many items (capped by the configured number).
    pub max_items: Option<u32>,
}

/// The page context as a page sends it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageIn {
    /// Full URL.
    #[serde(default)]
    pub url: Option<String>,
    /// URL path.
    #[serde(default)]
    pub path: Option<String>,
    /// Referrer URL.
    #[serde(default)]
    pub referrer: Option<String>,
    /// Page title.
    #[serde(default)]
    pub title: Option<String>,
    /// `home`, `category`, `product`, `cart`, `checkout` or `other`.
    #[serde(default)]
    pub page_type: Option<String>,
    /// Visitor locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// `desktop`, `mobile` or `tablet`.
    #[serde(default)]
    pub device_type: Option<String>,
    /// UTM fields: the JSON object's text, as the plugin gets it.
    #[serde(default = "empty_object", deserialize_with = "object_text")]
    pub campaign: String,
    /// Page data (SKU, category, cart lines): the JSON object's text, as the plugin gets it.
    #[serde(default = "empty_object", deserialize_with = "object_text")]
    pub attributes: String,
}

fn empty_object() -> String {
    "{}".into()
}

/// A JSON object kept as its text: checked while parsing, never built into a tree and
/// serialized again, since the plugin receives it as text.
fn object_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw: Box<RawValue> = serde::Deserialize::deserialize(d)?;
    let found = match raw.get().as_bytes().first() {
        Some(b'{') => return Ok(String::from(Box::<str>::from(raw))),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    Err(serde::de::Error::invalid_type(
        serde::de::Unexpected::Other(found),
        &"a JSON object",
    ))
}

/// One decision request, parsed.
#[derive(Debug, Clone, Default)]
pub struct DecideRequest {
    /// Spec `anonymousId`.
    pub anonymous_id: Option<String>,
    /// Spec `userId`.
    pub user_id: Option<String>,
    /// The page.
    pub page: PageIn,
    /// Placements, in the page's order.
    pub placements: Vec<Wanted>,
}

/// Items of a decision: the plugin's, or the default's pre-encoded list.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Items {
    /// From the plugin.
    Plugin(Vec<ItemOut>),
    /// The tenant's default.
    Default(Box<RawValue>),
}

/// A ranked item as the page gets it.
#[derive(Debug, Serialize)]
pub struct ItemOut {
    /// Item id.
    pub id: String,
    /// Score.
    pub score: f32,
    /// Item data.
    pub payload: Box<RawValue>,
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The plugin decided.
    Plugin,
    /// The tenant's default content (the plugin could not answer).
    Default,
}

/// One decision as the page gets it.
#[derive(Debug, Serialize)]
pub struct DecisionOut {
    /// Placement id.
    pub placement: String,
    /// Variant.
    pub variant: String,
    /// Experiment, for attribution.
    pub experiment_id: Option<String>,
    /// Block or template variables.
    pub content: Box<RawValue>,
    /// Ranked items.
    pub items: Items,
    /// How long the page may cache it.
    pub ttl_ms: u32,
    /// Plugin or default.
    pub source: Source,
    /// Why the default was served (or the plugin's own reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a page.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// Request id, for support and attribution.
    pub request_id: String,
    /// One decision per requested placement, in the page's order.
    pub decisions: Vec<DecisionOut>,
}

/// Counters of one tenant since start, for `GET /v1/personalize/status`.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    plugin_decisions: AtomicU64,
    default_decisions: AtomicU64,
    exposures_queued: AtomicU64,
    exposures_dropped: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    last_failure: Mutex<Option<Value>>,
}

/// A plugin's health: consecutive failures and quarantine.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive: AtomicU32,
    open_until: AtomicI64,
    probing: AtomicBool,
}

impl Breaker {
    /// Whether a request may run the plugin at `now`: yes unless quarantined; after the
    /// quarantine one request at a time probes it.
    fn allow(&self, now: i64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        now >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// A probe that could not run (the server was busy): the next request probes instead.
    fn abandon_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0
            || self.open_until.load(Ordering::Relaxed) != 0
        {
            self.consecutive.store(0, Ordering::Relaxed);
            self.open_until.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }

    fn failure(&self, now: i64) {
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        if probe_failed || n >= QUARANTINE_AFTER {
            self.open_until
                .store(now + QUARANTINE_MS, Ordering::Release);
        }
    }

    /// When the quarantine ends, if the plugin is quarantined at `now`.
    pub fn quarantined_until(&self, now: i64) -> Option<i64> {
        let until = self.open_until.load(Ordering::Acquire);
        (until != 0 && now < until).then_some(until)
    }
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn five_failures_quarantine_and_one_probe_at_a_time_reopens() {
        let b = Breaker::default();
        for _ in 0..QUARANTINE_AFTER - 1 {
            assert!(b.allow(0));
            b.failure(0);
        }
        assert!(
            b.quarantined_until(0).is_none(),
            "four failures quarantined"
        );
        b.failure(0);
        assert_eq!(b.quarantined_until(1), Some(QUARANTINE_MS));
        assert!(!b.allow(QUARANTINE_MS - 1));
        assert!(b.allow(QUARANTINE_MS), "no probe after the quarantine");
        assert!(!b.allow(QUARANTINE_MS), "two probes at once");
        b.success();
        assert!(b.allow(QUARANTINE_MS + 1));
        assert!(b.quarantined_until(QUARANTINE_MS + 1).is_none());
    }

    #[test]
    fn a_failed_probe_quarantines_again_and_an_abandoned_one_lets_the_next_probe() {
        let b = Breaker::default();
        for _ in 0..QUARANTINE_AFTER {
            b.failure(0);
        }
        assert!(b.allow(QUARANTINE_MS));
        b.abandon_probe();
        assert!(
            b.allow(QUARANTINE_MS),
            "an abandoned probe blocked the next"
        );
        b.failure(QUARANTINE_MS);
        assert_eq!(
            b.quarantined_until(QUARANTINE_MS),
            Some(2 * QUARANTINE_MS),
            "a failed probe did not quarantine again"
        );
    }
}

/// One tenant's compiled settings with its counters.
#[derive(Debug)]
struct TenantState {
    settings: Option<Arc<Compiled>>,
    stats: Arc<Stats>,
    breaker: Arc<Breaker>,
}

/// An exposure waiting to be written.
#[derive(Debug)]
struct Exposure {
    tenant: String,
    message: Message,
}

/// The personalization service.
pub struct Personalizer {
    db: Db,
    registry: Arc<Registry>,
    clock: SharedClock,
    cache: Arc<ProfileCache>,
    tenants: Vec<RwLock<HashMap<String, Arc<TenantState>>>>,
    exposures: Exposures,
    exposure_tx: mpsc::Sender<Exposure>,
    request_prefix: u32,
    next_request: AtomicU64,
    /// Decisions running at once on blocking threads: one per core. More would only share
    /// the cores, and a decision preempted by its neighbours can miss its 20 ms wall-clock
    /// deadline. (Inline decisions need no cap: the runtime has one worker per core.)
    running: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Personalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Personalizer").finish_non_exhaustive()
    }
}

impl Personalizer {
    /// Starts the service: registers the profile cache with the store (so every write
    /// invalidates it) and starts the exposure writer.
    pub fn start(
        db: Db,
        clock: SharedClock,
        registry: Arc<Registry>,
        ingest: Arc<Ingest>,
        cache_bytes: usize,
    ) -> Arc<Personalizer> {
        let cache = Arc::new(ProfileCache::new(cache_bytes));
        db.backend().observe(cache.clone());
        let (tx, rx) = mpsc::channel(EXPOSURE_QUEUE);
        tokio::spawn(write_exposures(rx, ingest));
        Arc::new(Personalizer {
            db,
            registry,
            clock,
            cache,
            tenants: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            exposures: Exposures::default(),
            exposure_tx: tx,
            request_prefix: rand::random(),
            next_request: AtomicU64::new(0),
            running: tokio::sync::Semaphore::new(crate::worker::cores()),
        })
    }

    /// The profile cache.
    pub fn cache(&self) -> &Arc<ProfileCache> {
        &self.cache
    }

    fn shard(&self, tenant: &str) -> &RwLock<HashMap<String, Arc<TenantState>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut h);
        &self.tenants[(h.finish() as usize) % SHARDS]
    }

    async fn state(&self, tenant: &str) -> Result<Arc<TenantState>, StoreError> {
        if let Some(s) = self
            .shard(tenant)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return Ok(s.clone());
        }
        let stored: Option<Settings> = self
            .db
            .get_json(&Space::tenant(tenant), SETTINGS_KEY)
            .await?;
        let mut map = self
            .shard(tenant)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // A PUT may have landed while we read: its entry wins.
        Ok(map
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(TenantState {
                    settings: stored.map(|s| Arc::new(Compiled::new(s))),
                    stats: Arc::default(),
                    breaker: Arc::default(),
                })
            })
            .clone())
    }

    /// The tenant's settings, if set.
    pub async fn settings(&self, tenant: &str) -> Result<Option<Settings>, StoreError> {
        Ok(self
            .state(tenant)
            .await?
            .settings
            .as_ref()
            .map(|c| c.settings.clone()))
    }

    /// Validates and stores the tenant's settings durably, then serves them at once.
    pub async fn put_settings(
        &self,
        tenant: &str,
        mut settings: Settings,
    ) -> Result<Settings, PutError> {
        settings.validate().map_err(PutError::Invalid)?;
        let bytes = serde_json::to_vec(&settings).map_err(StoreError::Codec)?;
        if bytes.len() > settings::MAX_SETTINGS_BYTES {
            return Err(PutError::TooLarge(bytes.len()));
        }
        let old = self.state(tenant).await?;
        self.db
            .put(&Space::tenant(tenant), SETTINGS_KEY, &bytes)
            .await?;
        self.db.commit().await?;
        let fresh = Arc::new(TenantState {
            settings: Some(Arc::new(Compiled::new(settings.clone()))),
            stats: old.stats.clone(),
            breaker: Arc::default(),
        });
        self.shard(tenant)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_string(), fresh);
        Ok(settings)
    }

    /// Whether a browser page from `origin` may ask for the tenant's decisions (`None`
    /// when the tenant has not configured personalization).
    pub async fn allows_origin(&self, tenant: &str, origin: &str) -> Result<bool, StoreError> {
        Ok(self
            .state(tenant)
            .await?
            .settings
            .as_ref()
            .is_some_and(|c| crate::origins::allows(&c.settings.allowed_origins, origin)))
    }

    /// The plugin to run: the configured one, or the tenant's only active personalizer.
    fn plugin(&self, tenant: &str, c: &Compiled) -> Option<Arc<crate::registry::Active>> {
        match &c.settings.plugin {
            Some(name) => self
                .registry
                .active(tenant, name)
                .filter(|a| a.kind == PluginKind::Personalization),
            None => {
                let mut found = self
                    .registry
                    .actives(tenant)
                    .into_iter()
                    .filter(|(_, a)| a.kind == PluginKind::Personalization);
                let first = found.next();
                match found.next() {
                    None => first.map(|(_, a)| a),
                    Some(_) => None,
                }
            }
        }
    }

    /// Decides every requested placement for one page view. Never fails because of the
    /// plugin: its faults become the tenant's default content.
    pub async fn decide(&self, tenant: &str, req: DecideRequest) -> Result<Answer, DecideError> {
        let state = self.state(tenant).await?;
        let Some(compiled) = state.settings.clone() else {
            return Err(DecideError::NotConfigured);
        };
        let indices = check_placements(&compiled, &req.placements)?;
        let mut identities: Vec<(&'static str, String)> = Vec::with_capacity(2);
        if let Some(u) = req.user_id.as_deref().filter(|v| !identity::is_blocked(v)) {
            identities.push((identity::USER_ID, u.to_string()));
        }
        if let Some(a) = req
            .anonymous_id
            .as_deref()
            .filter(|v| !identity::is_blocked(v))
        {
            identities.push((identity::ANONYMOUS_ID, a.to_string()));
        }
        if identities.is_empty() {
            return Err(DecideError::MissingIdentity);
        }
        let snapshot = self.cache.profile(&self.db, tenant, &identities).await?;
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now_ms();
        let unit: &str = match &snapshot {
            Some(s) => &s.profile.profile_id,
            None => &identities[identities.len() - 1].1,
        };

        let placements: Vec<wit::Placement> = indices
            .iter()
            .zip(&req.placements)
            .map(|(&i, wanted)| {
                let mut p = compiled.wit[i].clone();
                if let Some(m) = wanted.max_items {
                    p.max_items = p.max_items.min(m);
                }
                if let Some(e) = &compiled.settings.placements[i].experiment {
                    p.experiment = Some(wit::ExperimentAssignment {
                        experiment_id: e.id.clone(),
                        variant_id: experiment::assign(e, unit).to_string(),
                    });
                }
                p
            })
            .collect();

        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("pz_{:08x}{n:012x}", self.request_prefix);
        let outcome = self
            .run_plugin(tenant, &compiled, &state, now, || wit::Request {
                request_id: request_id.clone(),
                profile: snapshot.as_ref().map(|s| s.profile.clone()),
                page: to_wit_page(&req.page),
                placements,
                recent_events: snapshot
                    .as_ref()
                    .map_or_else(Vec::new, |s| s.recent.clone()),
                now,
            })
            .await;

        let mut decisions = Vec::with_capacity(indices.len());
        let (mut from_plugin, mut from_default) = (0u64, 0u64);
        let mut plugin_decisions = match outcome {
            Ok(d) => d,
            Err(reason) => {
                for &i in &indices {
                    decisions.push(default_decision(&compiled, i, reason.clone()));
                }
                state
                    .stats
                    .default_decisions
                    .fetch_add(indices.len() as u64, Ordering::Relaxed);
                return Ok(Answer {
                    request_id,
                    decisions,
                });
            }
        };
        for (k, &i) in indices.iter().enumerate() {
            let id = &compiled.wit[i].id;
            let max_items = match req.placements[k].max_items {
                Some(m) => m.min(compiled.wit[i].max_items),
                None => compiled.wit[i].max_items,
            };
            let found = plugin_decisions
                .iter()
                .position(|d| d.placement_id == *id)
                .map(|pos| plugin_decisions.swap_remove(pos));
            let out = match found.map(|d| to_out(d, max_items, &compiled.payloads)) {
                Some(Ok(d)) => {
                    from_plugin += 1;
                    if let Some(exp) = &d.experiment_id {
                        self.expose(tenant, &req, &state.stats, unit, exp, &d.variant, id, now);
                    }
                    d
                }
                Some(Err(why)) => {
                    from_default += 1;
                    self.fail(&state.stats, now, "invalid_output", &why);
                    default_decision(&compiled, i, why)
                }
                None => {
                    from_default += 1;
                    default_decision(
                        &compiled,
                        i,
                        "the plugin returned no decision for this placement".into(),
                    )
                }
            };
            decisions.push(out);
        }
        state
            .stats
            .plugin_decisions
            .fetch_add(from_plugin, Ordering::Relaxed);
        state
            .stats
            .default_decisions
            .fetch_add(from_default, Ordering::Relaxed);
        Ok(Answer {
            request_id,
            decisions,
        })
    }

    /// Runs the plugin unless there is none or it is quarantined; `Err` carries the
    /// reason the defaults are served.
    async fn run_plugin(
        &self,
        tenant: &str,
        compiled: &Compiled,
        state: &TenantState,
        now: i64,
        request: impl FnOnce() -> wit::Request,
    ) -> Result<Vec<wit::Decision>, String> {
        let Some(active) = self.plugin(tenant, compiled) else {
            return Err(match &compiled.settings.plugin {
                Some(name) => format!("plugin `{name}` has no active personalization version"),
                None => {
                    "no personalization plugin is active (or several are and settings name none)"
                        .into()
                }
            });
        };
        if !state.breaker.allow(now) {
            return Err(format!(
                "plugin `{}` is quarantined after {QUARANTINE_AFTER} failures in a row",
                active.installation.plugin
            ));
        }
        let call = Call::PersonalizeDecide {
            req: request(),
            catalog: compiled.catalog.clone(),
        };
        let call_name = call.name();
        let invoked = if active.inline {
            // A plugin that cannot touch the store or wait runs right here: a thread
            // hand-off would cost more than many decisions.
            let invoked = self.registry.invoke_inline(&active, call);
            if let Ok(Invoked {
                error: Some(e),
                report,
                ..
            }) = &invoked
            {
                let (registry, active, e, report) = (
                    self.registry.clone(),
                    active.clone(),
                    e.clone(),
                    report.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    registry.record_failure(&active, call_name, &e, &report);
                });
            }
            invoked
        } else {
            // Otherwise on a blocking thread, at most one per core: its store access or
            // a WASI wait may block.
            let Ok(_running) = self.running.acquire().await else {
                return Err("the server is shutting down".into());
            };
            let registry = self.registry.clone();
            tokio::task::spawn_blocking(move || registry.invoke_now(&active, call))
                .await
                .unwrap_or_else(|e| Err(RegistryError::Internal(e.into())))
        };
        let invoked = match invoked {
            Ok(i) => i,
            Err(RegistryError::Busy) => {
                // Not the plugin's fault: no quarantine, but counted; a probe goes to the
                // next request.
                state.breaker.abandon_probe();
                self.fail(&state.stats, now, "busy", "every instance slot was busy");
                return Err("the server was busy; served the default".into());
            }
            Err(e) => {
                state.breaker.abandon_probe();
                self.fail(&state.stats, now, "internal", &e.to_string());
                return Err("internal error running the plugin".into());
            }
        };
        match (invoked.output, invoked.error) {
            (Some(Output::PersonalizeDecide(Ok(d))), _) => {
                state.breaker.success();
                Ok(d)
            }
            (Some(Output::PersonalizeDecide(Err(e))), _) => {
                state.breaker.failure(now);
                let msg = format!("plugin error: {e:?}");
                self.fail(&state.stats, now, "plugin_error", &msg);
                Err(msg)
            }
            (_, Some(e)) => {
                state.breaker.failure(now);
                let msg = e.to_string();
                self.fail(&state.stats, now, e.code(), &msg);
                Err(msg)
            }
            _ => {
                state.breaker.failure(now);
                self.fail(&state.stats, now, "invalid_output", "unexpected output");
                Err("the plugin gave no decisions".into())
            }
        }
    }

    fn fail(&self, stats: &Stats, now: i64, code: &'static str, message: &str) {
        *stats
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code)
            .or_default() += 1;
        *stats
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some(serde_json::json!({"at": now, "code": code, "message": message}));
    }

    /// Queues an `Experiment Viewed` event, once per visitor, experiment and variant per
    /// [`experiment::EXPOSURE_WINDOW_MS`]. Never waits: a full queue drops it (counted).
    #[allow(clippy::too_many_arguments)]
    fn expose(
        &self,
        tenant: &str,
        req: &DecideRequest,
        stats: &Stats,
        unit: &str,
        experiment_id: &str,
        variant: &str,
        placement: &str,
        now: i64,
    ) {
        let key = experiment::stable_hash(&[tenant, unit, experiment_id, variant]);
        if !self.exposures.first_in_window(key, now) {
            return;
        }
        let window = now.div_euclid(experiment::EXPOSURE_WINDOW_MS);
        let mut properties = Map::new();
        properties.insert("experiment_id".into(), experiment_id.into());
        properties.insert("variation_id".into(), variant.into());
        properties.insert("placement".into(), placement.into());
        let mut context = Map::new();
        if let Some(url) = &req.page.url {
            context.insert("page".into(), serde_json::json!({"url": url}));
        }
        let message = Message {
            kind: MessageType::Track,
            message_id: format!("xv_{key:016x}_{window}"),
            user_id: req.user_id.clone(),
            anonymous_id: req.anonymous_id.clone(),
            event: Some("Experiment Viewed".into()),
            properties,
            traits: Map::new(),
            context,
            group_id: None,
            previous_id: None,
            timestamp: now,
            original_timestamp: None,
            sent_at: None,
            received_at: now,
            profile_id: None,
        };
        let queued = self.exposure_tx.try_send(Exposure {
            tenant: tenant.to_string(),
            message,
        });
        let counter = if queued.is_ok() {
            &stats.exposures_queued
        } else {
            &stats.exposures_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The tenant's personalization health.
    pub async fn status(&self, tenant: &str) -> Result<Value, StoreError> {
        let state = self.state(tenant).await?;
        let now = self.clock.now_ms();
        let plugin = state
            .settings
            .as_ref()
            .and_then(|c| self.plugin(tenant, c))
            .map(|a| serde_json::json!({"name": a.installation.plugin, "version": a.version}));
        let s = &state.stats;
        Ok(serde_json::json!({
            "configured": state.settings.is_some(),
            "plugin": plugin,
            "quarantined_until": state.breaker.quarantined_until(now),
            "consecutive_failures": state.breaker.consecutive.load(Ordering::Relaxed),
            "requests": s.requests.load(Ordering::Relaxed),
            "plugin_decisions": s.plugin_decisions.load(Ordering::Relaxed),
            "default_decisions": s.default_decisions.load(Ordering::Relaxed),
            "failures": *s.failures.lock().unwrap_or_else(PoisonError::into_inner),
            "last_failure": *s.last_failure.lock().unwrap_or_else(PoisonError::into_inner),
            "exposures_queued": s.exposures_queued.load(Ordering::Relaxed),
            "exposures_dropped": s.exposures_dropped.load(Ordering::Relaxed),
            "profile_cache": self.cache.stats(),
        }))
    }
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// A field is wrong (named).
    #[error("{0}")]
    Invalid(String),
    /// Bigger than one stored value may be.
    #[error("the settings are {0} bytes as JSON; at most 61440 (trim the candidates)")]
    TooLarge(usize),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The configured index of each wanted placement; errors name the bad one.
fn check_placements(c: &Compiled, wanted: &[Wanted]) -> Result<Vec<usize>, DecideError> {
    if wanted.is_empty() {
        return Err(DecideError::InvalidPlacements(
            "`placements` is empty: list the placement ids to decide".into(),
        ));
    }
    if wanted.len() > MAX_REQUEST_PLACEMENTS {
        return Err(DecideError::InvalidPlacements(format!(
            "{} placements asked for; at most {MAX_REQUEST_PLACEMENTS} per request",
            wanted.len()
        )));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (k, w) in wanted.iter().enumerate() {
        let Some(&i) = c.index.get(&w.id) else {
            return Err(DecideError::UnknownPlacement(w.id.clone()));
        };
        if wanted[..k].iter().any(|o| o.id == w.id) {
            return Err(DecideError::InvalidPlacements(format!(
                "placement `{}` is asked for twice",
                w.id
            )));
        }
        out.push(i);
    }
    Ok(out)
}

fn opt_text(v: &Option<String>) -> Option<String> {
    v.clone()
}

fn to_wit_page(p: &PageIn) -> wit::PageContext {
    wit::PageContext {
        url: opt_text(&p.url),
        path: opt_text(&p.path),
        referrer: opt_text(&p.referrer),
        title: opt_text(&p.title),
        page_type: opt_text(&p.page_type),
        locale: opt_text(&p.locale),
        device_type: opt_text(&p.device_type),
        campaign: p.campaign.clone(),
        attributes: p.attributes.clone(),
    }
}

fn default_decision(c: &Compiled, i: usize, reason: String) -> DecisionOut {
    let d = &c.defaults[i];
    DecisionOut {
        placement: c.settings.placements[i].id.clone(),
        variant: d.variant.clone(),
        experiment_id: None,
        content: d.content.clone(),
        items: Items::Default(d.items.clone()),
        ttl_ms: d.ttl_ms,
        source: Source::Default,
        reason: Some(reason),
    }
}

/// A JSON text from the plugin as a raw value (`null` for empty text); `Err` names the
/// field when it is not JSON.
fn raw_json(text: String, field: &str) -> Result<Box<RawValue>, String> {
    if text.trim().is_empty() {
        return Ok(RawValue::from_string("null".into()).expect("null is JSON"));
    }
    RawValue::from_string(text).map_err(|e| format!("the plugin's {field} is not JSON: {e}"))
}

/// Checks and converts a plugin decision; `Err` says why the default is served instead.
/// An item's payload: the plugin's JSON, or (left empty) the catalog entry of its id.
fn payload(
    text: String,
    id: &str,
    catalog: &HashMap<String, Box<RawValue>>,
) -> Result<Box<RawValue>, String> {
    if text.is_empty() {
        if let Some(entry) = catalog.get(id) {
            return Ok(entry.clone());
        }
    }
    raw_json(text, "item payload")
}

fn to_out(
    d: wit::Decision,
    max_items: u32,
    catalog: &HashMap<String, Box<RawValue>>,
) -> Result<DecisionOut, String> {
    let content = if d.content.trim().is_empty() {
        RawValue::from_string("{}".into()).expect("{} is JSON")
    } else {
        if !d.content.trim_start().starts_with('{') {
            return Err("the plugin's content is not a JSON object".into());
        }
        raw_json(d.content, "content")?
    };
    let mut items = Vec::with_capacity(d.items.len().min(max_items as usize));
    for item in d.items.into_iter().take(max_items as usize) {
        items.push(ItemOut {
            payload: payload(item.payload, &item.id, catalog)?,
            id: item.id,
            score: if item.score.is_finite() {
                item.score
            } else {
                0.0
            },
        });
    }
    Ok(DecisionOut {
        placement: d.placement_id,
        variant: d.variant_id,
        experiment_id: d.experiment_id,
        content,
        items: Items::Plugin(items),
        ttl_ms: d.ttl_ms,
        source: Source::Plugin,
        reason: d.reason,
    })
}

/// Writes queued exposures through ingestion, a batch per tenant per round.
async fn write_exposures(mut rx: mpsc::Receiver<Exposure>, ingest: Arc<Ingest>) {
    let mut buf = Vec::with_capacity(EXPOSURE_BATCH);
    while rx.recv_many(&mut buf, EXPOSURE_BATCH).await > 0 {
        let mut by_tenant: HashMap<String, Vec<Message>> = HashMap::new();
        for e in buf.drain(..) {
            by_tenant.entry(e.tenant).or_default().push(e.message);
        }
        for (tenant, messages) in by_tenant {
            if let Err(e) = ingest.accept(&tenant, messages).await {
                tracing::warn!(%tenant, error = %e, "recording Experiment Viewed events failed");
            }
        }
    }
}
