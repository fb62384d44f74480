//! The plugin registry: upload, validate, compile once, activate, roll back, delete, and
//! configure plugins per tenant; plus the in-memory table of active installations whose
//! cached `InstancePre`s serve every invocation.
//!
//! Storage, inside each tenant's space:
//! - `plugin/<name>`: [`PluginRecord`];
//! - `version/<name>/<version>`: [`VersionRecord`] (immutable once written);
//! - `settings/<name>`: config, secrets and allowlist;
//! - `inv/<name>/<slot:016x>`: the last [`INVOCATION_RECORDS_KEPT`] invocation records, a
//!   ring: record `seq` lives in slot `seq % INVOCATION_RECORDS_KEPT` and overwrites the
//!   one that fell out of the window (the record carries its `seq`).
//!
//! Component bytes are content-addressed blobs; compiled artifacts live under
//! `artifacts/<engine key>/<digest>.cwasm`, prefixed by an HMAC so only artifacts this host
//! wrote are ever deserialized.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::kind::{PluginKind, UnknownKind};
use crate::runtime::capabilities::settings_key;
use crate::runtime::host::{Installation, Settings};
use crate::runtime::{Call, InvokeError, KindPre, Output, Report, Runtime, ValidationError};
use crate::store::{write_file_durably, BatchOp, BlobStore, Db, Space, StoreError};

/// Invocation records kept per installation: a ring whose slots newer records overwrite.
pub const INVOCATION_RECORDS_KEPT: u64 = 1000;
/// Largest settings document, in bytes of JSON: well under the 64 KiB value cap.
pub const MAX_SETTINGS_BYTES: usize = 32 * 1024;
/// Longest an invocation waits for a tenant or pool slot before it is refused with `busy`
/// (429): past this, callers are better served by backing off than by queueing.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Versions one plugin may have: enough for years of weekly releases.
pub const MAX_VERSIONS_PER_PLUGIN: usize = 500;

/// A plugin of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Name, unique within the tenant.
    pub name: String,
    /// Kind, fixed by the first upload.
    pub kind: PluginKind,
    /// The active version, if any.
    pub active: Option<String>,
    /// Previously active versions, most recent last (the rollback stack).
    pub previous: Vec<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// One immutable uploaded version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version string.
    pub version: String,
    /// Kind it was validated against.
    pub kind: PluginKind,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// Size of the component, in bytes.
    pub size_bytes: usize,
    /// Upload time, Unix ms.
    pub created_at: i64,
    /// Time to validate, compile and type-check, in microseconds.
    pub ready_us: u64,
    /// Imports of the component, as named by it.
    pub imports: Vec<String>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad plugin name.
    #[error("invalid plugin name `{0}`: use 1-64 characters from a-z, 0-9, `-` and `_`, starting with a letter or digit")]
    InvalidName(String),
    /// Bad version string.
    #[error("invalid version `{0}`: use 1-64 characters from A-Z, a-z, 0-9, `.`, `-` and `+`")]
    InvalidVersion(String),
    /// Unknown kind.
    #[error(transparent)]
    UnknownKind(#[from] UnknownKind),
    /// The `kind` parameter is missing.
    #[error("missing `kind` query parameter; expected one of journey-rule, personalization, channel-adapter, chatbot-flow")]
    MissingKind,
    /// The component failed validation.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Versions are immutable.
    #[error("version `{version}` of plugin `{name}` already exists; versions are immutable, upload a new version")]
    VersionExists {
        /// Plugin.
        name: String,
        /// Version.
        version: String,
    },
    /// The plugin exists with another kind.
    #[error("plugin `{name}` is a {existing} plugin; this upload declares {requested}")]
    KindMismatch {
        /// Plugin.
        name: String,
        /// Its kind.
        existing: PluginKind,
        /// The declared kind.
        requested: PluginKind,
    },
    /// No such plugin.
    #[error("plugin `{0}` not found")]
    PluginNotFound(String),
    /// No such version.
    #[error("version `{version}` of plugin `{name}` not found")]
    VersionNotFound {
        /// Plugin.
        name: String,
        /// Version.
        version: String,
    },
    /// Nothing is active.
    #[error("plugin `{0}` has no active version; activate one first")]
    NoActiveVersion(String),
    /// Nothing to roll back to.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPreviousVersion(String),
    /// The active version cannot be deleted.
    #[error("version `{version}` of plugin `{name}` is active; activate another version or delete the plugin")]
    VersionActive {
        /// Plugin.
        name: String,
        /// Version.
        version: String,
    },
    /// Too many versions.
    #[error("plugin `{0}` has reached the limit of {MAX_VERSIONS_PER_PLUGIN} versions; delete old versions first")]
    TooManyVersions(String),
    /// Bad settings document.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// The call JSON is invalid.
    #[error("{0}")]
    InvalidCall(String),
    /// Too many concurrent invocations.
    #[error("too many concurrent invocations for this tenant; retry shortly")]
    Busy,
    /// Storage failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// Something inside the host failed.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// An active installation: the cached pre plus its live settings.
pub struct Active {
    /// Kind.
    pub kind: PluginKind,
    /// Active version.
    pub version: String,
    /// Component digest.
    pub digest: String,
    /// The linked, type-checked pre.
    pub pre: KindPre,
    /// Who it runs as.
    pub installation: Arc<Installation>,
    /// Whether it may run on an async runtime thread ([`Runtime::runs_inline`]).
    pub inline: bool,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One tenant's active installations and its concurrency budget.
struct TenantSlot {
    plugins: RwLock<HashMap<String, Arc<Active>>>,
    permits: Arc<Semaphore>,
}

/// Shards of the active table, so lookups of different tenants never share a lock.
const SHARDS: usize = 16;

/// An invocation record as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Sequence number within the installation.
    pub seq: u64,
    /// When it started, Unix ms.
    pub at: i64,
    /// Plugin version.
    pub version: String,
    /// The WIT function called.
    pub call: String,
    /// Whether it returned (a typed plugin error still counts as returned).
    pub ok: bool,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<InvokeError>,
    /// Cost and captured output.
    pub report: Report,
}

/// The outcome of an invocation through the registry.
#[derive(Debug, Serialize)]
pub struct Invoked {
    /// Plugin version that ran.
    pub version: String,
    /// Output, if it returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
    /// Cost and captured output.
    pub report: Report,
}

/// The registry.
pub struct Registry {
    db: Db,
    blobs: BlobStore,
    runtime: Arc<Runtime>,
    hmac_key: [u8; 32],
    shards: Vec<RwLock<HashMap<String, Arc<TenantSlot>>>>,
    global_permits: Arc<Semaphore>,
    /// Loaded non-active versions that running journey instances still use, by
    /// (tenant, plugin, version). Cleared for a plugin whenever its activation changes.
    pinned: std::sync::Mutex<HashMap<(String, String, String), Arc<Active>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Validates a plugin name.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_string()))
    }
}

/// Validates a version string.
pub fn check_version(v: &str) -> Result<(), RegistryError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'+');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidVersion(v.to_string()))
    }
}

fn plugin_key(name: &str) -> Vec<u8> {
    format!("plugin/{name}").into_bytes()
}

fn version_key(name: &str, version: &str) -> Vec<u8> {
    format!("version/{name}/{version}").into_bytes()
}

fn inv_prefix(name: &str) -> Vec<u8> {
    format!("inv/{name}/").into_bytes()
}

/// The ring slot of record `seq`: one write per invocation (no delete of the oldest), and a
/// key range that neither grows nor churns sled's nodes. Slots below the ring size are the
/// keys the earlier one-key-per-seq layout gave those records, so old data reads as is.
fn inv_key(name: &str, seq: u64) -> Vec<u8> {
    format!("inv/{name}/{:016x}", seq % INVOCATION_RECORDS_KEPT).into_bytes()
}

/// The `seq` of a stored invocation record: read from the front of its JSON (`{"seq":N,`,
/// as [`InvocationRecord`] serializes) without decoding the rest, else from the whole.
fn record_seq(value: &[u8]) -> Option<u64> {
    /// Only the field wanted; serde skips the others.
    #[derive(Deserialize)]
    struct SeqOf {
        seq: u64,
    }
    value
        .strip_prefix(b"{\"seq\":")
        .and_then(|rest| {
            let end = rest.iter().position(|b| !b.is_ascii_digit())?;
            std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
        })
        .or_else(|| serde_json::from_slice::<SeqOf>(value).ok().map(|s| s.seq))
}

/// The `seq` of the newest record in a ring whose slot `i` holds `seq_at(i)`, by binary
/// search: records are written in `seq` order, so slots 0 up to the newest hold the
/// current lap (a `seq` at least slot 0's) and the slots after it the lap before, or
/// nothing yet. `None` when slot 0 is empty (an empty ring, or a gap the caller resolves
/// by reading the whole ring).
fn newest_in_ring(
    mut seq_at: impl FnMut(u64) -> Result<Option<u64>, StoreError>,
) -> Result<Option<u64>, StoreError> {
    let Some(first) = seq_at(0)? else {
        return Ok(None);
    };
    // Invariant: slot `lo` is in the current lap with `newest` its seq; the newest slot
    // is below `hi`.
    let (mut lo, mut hi, mut newest) = (0, INVOCATION_RECORDS_KEPT, first);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match seq_at(mid)? {
            Some(seq) if seq >= first => (lo, newest) = (mid, seq),
            _ => hi = mid,
        }
    }
    Ok(Some(newest))
}

/// Where plugin `name`'s invocation ring stands, as [`ring_state`] finds it.
enum Ring {
    /// No record yet.
    Empty,
    /// The `seq` of the newest record.
    Newest(u64),
    /// Not searchable: it holds records of the earlier one-key-per-seq layout past its
    /// slots, or its slot 0 is empty; only reading the whole ring tells.
    Unsearchable,
}

/// The state of plugin `name`'s invocation ring: one reverse scan, then a binary search.
fn ring_state(b: &dyn crate::store::Backend, sp: &Space, name: &str) -> Result<Ring, StoreError> {
    // The highest key: past the ring only under the earlier layout.
    let last = b.scan_prefix_rev(sp, &inv_prefix(name), 1)?;
    Ok(match last.first() {
        None => Ring::Empty,
        Some((k, _)) if *k > inv_key(name, INVOCATION_RECORDS_KEPT - 1) => Ring::Unsearchable,
        Some(_) => match newest_in_ring(|slot| {
            Ok(b.get(sp, &inv_key(name, slot))?
                .and_then(|v| record_seq(&v)))
        })? {
            Some(seq) => Ring::Newest(seq),
            None => Ring::Unsearchable,
        },
    })
}

/// The rows of a plugin's invocation ring, newest first: each with its `seq`.
fn newest_first(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter_map(|(k, v)| record_seq(&v).map(|seq| (seq, k, v)))
        .collect();
    rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    rows
}

fn internal(e: impl Into<anyhow::Error>) -> RegistryError {
    RegistryError::Internal(e.into())
}

impl Registry {
    /// Opens the registry over `db` and `blobs`, creating the artifact HMAC key in
    /// `data_dir` on first start.
    pub fn open(
        data_dir: &Path,
        db: Db,
        blobs: BlobStore,
        runtime: Arc<Runtime>,
    ) -> Result<Registry, RegistryError> {
        let key_path = data_dir.join("artifact.key");
        let hmac_key = match std::fs::read(&key_path) {
            Ok(b) if b.len() == 32 => b.try_into().expect("length checked"),
            _ => {
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut k);
                write_file_durably(&key_path, &k)?;
                k
            }
        };
        let permits = runtime.config().pool_instances as usize;
        Ok(Registry {
            db,
            blobs,
            runtime,
            hmac_key,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            global_permits: Arc::new(Semaphore::new(permits.max(1))),
            pinned: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn shard(&self, tenant: &str) -> &RwLock<HashMap<String, Arc<TenantSlot>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn slot(&self, tenant: &str) -> Arc<TenantSlot> {
        if let Some(s) = self
            .shard(tenant)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
        {
            return s.clone();
        }
        let mut w = self
            .shard(tenant)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        w.entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(TenantSlot {
                    plugins: RwLock::new(HashMap::new()),
                    permits: Arc::new(Semaphore::new(
                        self.runtime.config().tenant_concurrency.max(1),
                    )),
                })
            })
            .clone()
    }

    /// The active installation of `plugin` for `tenant`, if loaded.
    pub fn active(&self, tenant: &str, plugin: &str) -> Option<Arc<Active>> {
        let shard = self.shard(tenant).read().unwrap_or_else(|e| e.into_inner());
        let slot = shard.get(tenant)?;
        let plugins = slot.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.get(plugin).cloned()
    }

    /// Every active installation of `tenant`, by plugin name.
    pub fn actives(&self, tenant: &str) -> Vec<(String, Arc<Active>)> {
        let shard = self.shard(tenant).read().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = shard.get(tenant) else {
            return Vec::new();
        };
        let plugins = slot.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .iter()
            .map(|(name, a)| (name.clone(), a.clone()))
            .collect()
    }

    /// A key for `purpose` derived from the server's secret (kept in the data directory):
    /// signed click links, for example.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut m =
            <Hmac<Sha256>>::new_from_slice(&self.hmac_key).expect("HMAC accepts any key length");
        m.update(purpose.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// Tenants with at least one active plugin of `kind` (the delivery scheduler's list).
    pub fn tenants_with(&self, kind: PluginKind) -> Vec<String> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for (tenant, slot) in shard.iter() {
                let plugins = slot.plugins.read().unwrap_or_else(|e| e.into_inner());
                if plugins.values().any(|a| a.kind == kind) {
                    out.push(tenant.clone());
                }
            }
        }
        out
    }

    /// A given version of a plugin, loaded: the active one, or a pinned older one (journey
    /// instances finish on the version that started them).
    pub async fn pinned(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Arc<Active>, RegistryError> {
        if let Some(a) = self.active(tenant, name).filter(|a| a.version == version) {
            return Ok(a);
        }
        let key = (tenant.to_string(), name.to_string(), version.to_string());
        if let Some(a) = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let v = self.version(tenant, name, version).await?;
        let a = self.load_active(tenant, name, &v).await?;
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, a.clone());
        Ok(a)
    }

    fn set_active(&self, tenant: &str, plugin: &str, active: Option<Arc<Active>>) {
        // Pinned versions hold settings snapshots: reload them after any change.
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, p, _), _| !(t == tenant && p == plugin));
        let slot = self.slot(tenant);
        let mut w = slot.plugins.write().unwrap_or_else(|e| e.into_inner());
        match active {
            Some(a) => {
                w.insert(plugin.to_string(), a);
            }
            None => {
                w.remove(plugin);
            }
        }
    }

    fn artifact_rel(&self, digest: &str) -> String {
        format!("artifacts/{}/{digest}.cwasm", self.runtime.artifact_key())
    }

    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        let mut m =
            <Hmac<Sha256>>::new_from_slice(&self.hmac_key).expect("HMAC accepts any key length");
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// Writes the compiled artifact: 32-byte HMAC, then wasmtime's serialized bytes.
    fn store_artifact(&self, digest: &str, serialized: &[u8]) -> Result<(), RegistryError> {
        let mut file = Vec::with_capacity(32 + serialized.len());
        file.extend_from_slice(&self.mac(serialized));
        file.extend_from_slice(serialized);
        self.blobs.put_at(self.artifact_rel(digest), &file)?;
        Ok(())
    }

    /// Loads the compiled component for `digest`: from the artifact cache when it is
    /// present, authentic and compatible; otherwise recompiled from the stored upload (and
    /// the cache rewritten).
    fn load_component(
        &self,
        digest: &str,
        kind: PluginKind,
    ) -> Result<wasmtime::component::Component, RegistryError> {
        if let Some(file) = self.blobs.get_at(self.artifact_rel(digest))? {
            if file.len() > 32 {
                let (mac, body) = file.split_at(32);
                use subtle::ConstantTimeEq;
                if bool::from(mac.ct_eq(&self.mac(body))) {
                    match self.runtime.load_artifact(body) {
                        Ok(c) => return Ok(c),
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "compiled artifact unusable; recompiling")
                        }
                    }
                } else {
                    tracing::warn!(%digest, "compiled artifact failed its HMAC check; recompiling");
                }
            }
        }
        let bytes = self
            .blobs
            .get(digest)?
            .ok_or_else(|| internal(anyhow::anyhow!("component blob {digest} is missing")))?;
        let component = self.runtime.compile(&bytes, kind)?;
        let serialized = component
            .serialize()
            .map_err(|e| internal(anyhow::anyhow!("{e:#}")))?;
        self.store_artifact(digest, &serialized)?;
        Ok(component)
    }

    /// Uploads a version: validates, compiles, type-checks, stores the bytes and the
    /// compiled artifact durably, then records the version. Nothing is stored on failure.
    pub async fn upload(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: &str,
        kind: PluginKind,
        bytes: bytes::Bytes,
        now_ms: i64,
    ) -> Result<VersionRecord, RegistryError> {
        check_name(name)?;
        check_version(version)?;
        let space = Space::tenant(tenant);
        let existing: Option<PluginRecord> = self.db.get_json(&space, &plugin_key(name)).await?;
        if let Some(p) = &existing {
            if p.kind != kind {
                return Err(RegistryError::KindMismatch {
                    name: name.into(),
                    existing: p.kind,
                    requested: kind,
                });
            }
        }
        if self
            .db
            .get(&space, &version_key(name, version))
            .await?
            .is_some()
        {
            return Err(RegistryError::VersionExists {
                name: name.into(),
                version: version.into(),
            });
        }
        let versions = self
            .db
            .scan_prefix(
                &space,
                format!("version/{name}/").as_bytes(),
                MAX_VERSIONS_PER_PLUGIN + 1,
            )
            .await?;
        if versions.len() >= MAX_VERSIONS_PER_PLUGIN {
            return Err(RegistryError::TooManyVersions(name.into()));
        }

        // Validate + compile + type-check + persist blobs on a blocking thread.
        let size_bytes = bytes.len();
        let this = self.clone();
        let (digest, imports, ready_us) = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let component = this.runtime.compile(&bytes, kind)?;
            this.runtime.prepare(&component, kind)?;
            let ready_us = t0.elapsed().as_micros() as u64;
            let imports: Vec<String> = component
                .component_type()
                .imports(this.runtime.engine())
                .map(|(n, _)| n.to_string())
                .collect();
            let digest = this.blobs.put(&bytes)?;
            let serialized = component
                .serialize()
                .map_err(|e| internal(anyhow::anyhow!("{e:#}")))?;
            this.store_artifact(&digest, &serialized)?;
            Ok::<_, RegistryError>((digest, imports, ready_us))
        })
        .await
        .map_err(internal)??;

        let record = VersionRecord {
            version: version.into(),
            kind,
            digest,
            size_bytes,
            created_at: now_ms,
            ready_us,
            imports,
        };
        let vbytes = serde_json::to_vec(&record).map_err(internal)?;
        // Insert-if-absent: two concurrent uploads of one version cannot both win.
        let inserted = self
            .db
            .compare_and_swap(&space, &version_key(name, version), None, Some(&vbytes))
            .await?;
        if !inserted {
            return Err(RegistryError::VersionExists {
                name: name.into(),
                version: version.into(),
            });
        }
        if existing.is_none() {
            let p = PluginRecord {
                name: name.into(),
                kind,
                active: None,
                previous: Vec::new(),
                created_at: now_ms,
                updated_at: now_ms,
            };
            let pbytes = serde_json::to_vec(&p).map_err(internal)?;
            // A concurrent first upload may have created it; either way it now exists.
            let _ = self
                .db
                .compare_and_swap(&space, &plugin_key(name), None, Some(&pbytes))
                .await?;
        }
        self.db.commit().await?;
        Ok(record)
    }

    /// Reads a plugin record.
    pub async fn plugin(&self, tenant: &str, name: &str) -> Result<PluginRecord, RegistryError> {
        check_name(name)?;
        self.db
            .get_json(&Space::tenant(tenant), &plugin_key(name))
            .await?
            .ok_or_else(|| RegistryError::PluginNotFound(name.into()))
    }

    /// Lists a tenant's plugins.
    pub async fn list(&self, tenant: &str) -> Result<Vec<PluginRecord>, RegistryError> {
        let rows = self
            .db
            .scan_prefix(&Space::tenant(tenant), b"plugin/", usize::MAX)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Lists a plugin's versions.
    pub async fn versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>, RegistryError> {
        self.plugin(tenant, name).await?;
        let rows = self
            .db
            .scan_prefix(
                &Space::tenant(tenant),
                format!("version/{name}/").as_bytes(),
                usize::MAX,
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    async fn version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<VersionRecord, RegistryError> {
        self.db
            .get_json(&Space::tenant(tenant), &version_key(name, version))
            .await?
            .ok_or_else(|| RegistryError::VersionNotFound {
                name: name.into(),
                version: version.into(),
            })
    }

    /// Builds the in-memory active entry for a version (artifact load + link + type-check).
    async fn load_active(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        v: &VersionRecord,
    ) -> Result<Arc<Active>, RegistryError> {
        let space = Space::tenant(tenant);
        let settings: Settings = self
            .db
            .get_json(&space, &settings_key(name))
            .await?
            .unwrap_or_default();
        let next_seq = self.invocation_ring(&space, name).await?;
        let this = self.clone();
        let (digest, kind) = (v.digest.clone(), v.kind);
        let (pre, inline) = tokio::task::spawn_blocking(move || {
            let c = this.load_component(&digest, kind)?;
            let inline = this.runtime.runs_inline(&c);
            Ok::<_, RegistryError>((this.runtime.prepare(&c, kind)?, inline))
        })
        .await
        .map_err(internal)??;
        Ok(Arc::new(Active {
            kind: v.kind,
            version: v.version.clone(),
            digest: v.digest.clone(),
            pre,
            installation: Arc::new(Installation::new(tenant, name, &v.version, settings)),
            inline,
            next_seq: AtomicU64::new(next_seq),
        }))
    }

    /// Activates `version`; the previously active one goes on the rollback stack.
    pub async fn activate(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: &str,
        now_ms: i64,
    ) -> Result<PluginRecord, RegistryError> {
        let mut p = self.plugin(tenant, name).await?;
        check_version(version)?;
        let v = self.version(tenant, name, version).await?;
        let active = self.load_active(tenant, name, &v).await?;
        if p.active.as_deref() != Some(version) {
            if let Some(prev) = p.active.take() {
                p.previous.push(prev);
            }
            p.active = Some(version.into());
        }
        p.updated_at = now_ms;
        self.commit_active(tenant, p, active).await
    }

    /// Durably records `p` (whose `active` changed), then serves `active` for it.
    async fn commit_active(
        &self,
        tenant: &str,
        p: PluginRecord,
        active: Arc<Active>,
    ) -> Result<PluginRecord, RegistryError> {
        self.db
            .put_json(&Space::tenant(tenant), &plugin_key(&p.name), &p)
            .await?;
        self.db.commit().await?;
        self.set_active(tenant, &p.name, Some(active));
        Ok(p)
    }

    /// Re-activates the previously active version.
    pub async fn rollback(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<PluginRecord, RegistryError> {
        let mut p = self.plugin(tenant, name).await?;
        let prev = p
            .previous
            .pop()
            .ok_or_else(|| RegistryError::NoPreviousVersion(name.into()))?;
        let v = self.version(tenant, name, &prev).await?;
        let active = self.load_active(tenant, name, &v).await?;
        p.active = Some(prev);
        p.updated_at = now_ms;
        self.commit_active(tenant, p, active).await
    }

    /// Deletes a plugin with its versions, settings, state and invocation records.
    pub async fn delete_plugin(&self, tenant: &str, name: &str) -> Result<(), RegistryError> {
        self.plugin(tenant, name).await?;
        let space = Space::tenant(tenant);
        self.set_active(tenant, name, None);
        let mut ops = vec![
            BatchOp::delete(plugin_key(name)),
            BatchOp::delete(settings_key(name)),
        ];
        for prefix in [
            format!("version/{name}/").into_bytes(),
            inv_prefix(name),
            crate::runtime::capabilities::installation_state_key(name, ""),
        ] {
            for (k, _) in self.db.scan_prefix(&space, &prefix, usize::MAX).await? {
                ops.push(BatchOp::delete(k));
            }
        }
        for chunk in ops.chunks(1000) {
            self.db.apply_batch(&space, chunk.to_vec()).await?;
        }
        self.db.commit().await?;
        Ok(())
    }

    /// Deletes one version that is not active.
    pub async fn delete_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<(), RegistryError> {
        let mut p = self.plugin(tenant, name).await?;
        self.version(tenant, name, version).await?;
        if p.active.as_deref() == Some(version) {
            return Err(RegistryError::VersionActive {
                name: name.into(),
                version: version.into(),
            });
        }
        p.previous.retain(|v| v != version);
        let space = Space::tenant(tenant);
        let pbytes = serde_json::to_vec(&p).map_err(internal)?;
        self.db
            .apply_batch(
                &space,
                vec![
                    BatchOp::delete(version_key(name, version)),
                    BatchOp::put(plugin_key(name), pbytes),
                ],
            )
            .await?;
        self.db.commit().await?;
        Ok(())
    }

    /// Replaces an installation's config and allowlist and merges its secrets (a `null`
    /// secret removes it). Takes effect for the next invocation.
    pub async fn configure(
        &self,
        tenant: &str,
        name: &str,
        update: SettingsUpdate,
    ) -> Result<SettingsView, RegistryError> {
        self.plugin(tenant, name).await?;
        let space = Space::tenant(tenant);
        for h in &update.allowed_hosts {
            check_host_pattern(h)?;
        }
        for k in update.config.keys().chain(update.secrets.keys()) {
            if k.is_empty() || k.len() > 128 {
                return Err(RegistryError::InvalidSettings(format!(
                    "setting name `{k}` must be 1-128 bytes"
                )));
            }
        }
        let mut s: Settings = self
            .db
            .get_json(&space, &settings_key(name))
            .await?
            .unwrap_or_default();
        s.config = update.config;
        s.allowed_hosts = update.allowed_hosts;
        for (k, v) in update.secrets {
            match v {
                Some(v) => {
                    s.secrets.insert(k, v);
                }
                None => {
                    s.secrets.remove(&k);
                }
            }
        }
        let bytes = serde_json::to_vec(&s).map_err(internal)?;
        if bytes.len() > MAX_SETTINGS_BYTES {
            return Err(RegistryError::InvalidSettings(format!(
                "settings of {} bytes exceed the {MAX_SETTINGS_BYTES}-byte limit",
                bytes.len()
            )));
        }
        self.db.put(&space, &settings_key(name), &bytes).await?;
        self.db.commit().await?;
        if let Some(a) = self.active(tenant, name) {
            *a.installation
                .settings
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Arc::new(s.clone());
        }
        Ok(SettingsView::from(&s))
    }

    /// The settings of an installation, without secret values.
    pub async fn settings(&self, tenant: &str, name: &str) -> Result<SettingsView, RegistryError> {
        self.plugin(tenant, name).await?;
        let s: Settings = self
            .db
            .get_json(&Space::tenant(tenant), &settings_key(name))
            .await?
            .unwrap_or_default();
        Ok(SettingsView::from(&s))
    }

    /// Invokes the active version of `name` with a JSON call, under the tenant's
    /// concurrency budget, and records the invocation.
    pub async fn invoke_json(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        call_json: bytes::Bytes,
    ) -> Result<Invoked, RegistryError> {
        let active = self.active_or_load(tenant, name).await?;
        let max = self.runtime.config().limits(active.kind).max_input_bytes;
        if call_json.len() > max {
            return Err(RegistryError::InvalidCall(format!(
                "input of {} bytes exceeds the {max}-byte limit for {} plugins",
                call_json.len(),
                active.kind
            )));
        }
        let call: Call = serde_json::from_slice(&call_json)
            .map_err(|e| RegistryError::InvalidCall(format!("invalid call JSON: {e}")))?;
        if call.kind() != active.kind {
            return Err(RegistryError::InvalidCall(format!(
                "`{}` is a {} call, but `{name}` is a {} plugin",
                call.name(),
                call.kind(),
                active.kind
            )));
        }
        self.invoke(tenant, active, call).await
    }

    async fn active_or_load(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
    ) -> Result<Arc<Active>, RegistryError> {
        if let Some(a) = self.active(tenant, name) {
            return Ok(a);
        }
        let p = self.plugin(tenant, name).await?;
        let version = p
            .active
            .ok_or_else(|| RegistryError::NoActiveVersion(name.into()))?;
        let v = self.version(tenant, name, &version).await?;
        let a = self.load_active(tenant, name, &v).await?;
        self.set_active(tenant, name, Some(a.clone()));
        Ok(a)
    }

    /// Invokes a typed call on an active installation (the path later subsystems use).
    pub async fn invoke(
        self: &Arc<Self>,
        tenant: &str,
        active: Arc<Active>,
        call: Call,
    ) -> Result<Invoked, RegistryError> {
        self.invoke_then(tenant, active, call, |invoked| invoked)
            .await
    }

    /// [`invoke`](Self::invoke), then `then` on the result, on the same blocking thread:
    /// for callers whose next step is blocking store work, which saves a second hand-off
    /// to a blocking thread. The slots are released before `then` runs.
    pub async fn invoke_then<R: Send + 'static>(
        self: &Arc<Self>,
        tenant: &str,
        active: Arc<Active>,
        call: Call,
        then: impl FnOnce(Invoked) -> R + Send + 'static,
    ) -> Result<R, RegistryError> {
        let slot = self.slot(tenant);
        let acquire = async {
            let t = slot.permits.clone().acquire_owned().await;
            let g = self.global_permits.clone().acquire_owned().await;
            (t, g)
        };
        let (Ok(tenant_permit), Ok(pool_permit)) = tokio::time::timeout(ADMISSION_WAIT, acquire)
            .await
            .map_err(|_| RegistryError::Busy)?
        else {
            return Err(RegistryError::Busy);
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let invoked = this.invoke_admitted(&active, call);
            drop((tenant_permit, pool_permit));
            then(invoked)
        })
        .await
        .map_err(internal)
    }

    /// Invokes a typed call from a blocking thread (background workers: journey runners,
    /// the delivery worker) and writes the invocation record. It waits for a slot of the
    /// global pool, shared with API invocations, so background work can never ask the
    /// pooling allocator for more instances than it has; the per-tenant API budget does not
    /// apply (the workers bound their own concurrency per tenant).
    pub fn invoke_blocking(&self, active: &Arc<Active>, call: Call) -> Invoked {
        let _slot = self
            .runtime
            .services()
            .rt
            .block_on(self.global_permits.clone().acquire_owned());
        self.invoke_admitted(active, call)
    }

    /// [`invoke_blocking`](Self::invoke_blocking) as a future: it waits for a pool slot,
    /// and a channel adapter waits for its provider, without holding a thread. Poll it as
    /// [`invoke_async`](crate::runtime::invoke::invoke_async) says: on a thread that may
    /// block briefly, inside the server's runtime context.
    pub async fn invoke_async(&self, active: &Arc<Active>, call: Call) -> Invoked {
        let _slot = self.global_permits.clone().acquire_owned().await;
        let at = self.runtime.services().clock.now_ms();
        let call_name = call.name();
        let inv = self
            .runtime
            .invoke_async(&active.pre, &active.installation, call)
            .await;
        self.invoked(active, at, call_name, inv)
    }

    /// Invokes a call for the latency-critical edge path (personalization): no wait for
    /// a slot (a tenant or pool at its limit answers [`RegistryError::Busy`] at once, and
    /// the caller serves its fallback), and an invocation record only when the call
    /// fails. Blocking: call it from a blocking thread.
    pub fn invoke_now(&self, active: &Arc<Active>, call: Call) -> Result<Invoked, RegistryError> {
        let call_name = call.name();
        let invoked = self.admit_now(active, |pre, inst| self.runtime.invoke(pre, inst, call))?;
        if let Some(e) = &invoked.error {
            self.record_failure(active, call_name, e, &invoked.report);
        }
        Ok(invoked)
    }

    /// [`invoke_now`](Self::invoke_now) on the calling async runtime thread, for an
    /// [`Active::inline`] plugin: no thread hand-off. A failure is not recorded here (that
    /// writes to the store); pass it to [`record_failure`](Self::record_failure) from a
    /// blocking thread.
    pub fn invoke_inline(
        &self,
        active: &Arc<Active>,
        call: Call,
    ) -> Result<Invoked, RegistryError> {
        self.admit_now(active, |pre, inst| {
            self.runtime.invoke_inline(pre, inst, call)
        })
    }

    /// Writes the invocation record of a failed call made by
    /// [`invoke_inline`](Self::invoke_inline). Blocking.
    pub fn record_failure(
        &self,
        active: &Active,
        call_name: &str,
        error: &InvokeError,
        report: &Report,
    ) {
        let at = self.runtime.services().clock.now_ms();
        self.record(active, at, call_name, Some(error.clone()), report);
    }

    /// Runs `run` if the tenant and the pool have a free slot now, else `Busy`.
    fn admit_now(
        &self,
        active: &Arc<Active>,
        run: impl FnOnce(&KindPre, &Arc<Installation>) -> crate::runtime::Invocation,
    ) -> Result<Invoked, RegistryError> {
        let slot = self.slot(&active.installation.tenant);
        let Ok(_tenant_permit) = slot.permits.try_acquire() else {
            return Err(RegistryError::Busy);
        };
        let Ok(_pool_permit) = self.global_permits.try_acquire() else {
            return Err(RegistryError::Busy);
        };
        let inv = run(&active.pre, &active.installation);
        let (output, error) = match inv.result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        Ok(Invoked {
            version: active.version.clone(),
            output,
            error,
            report: inv.report,
        })
    }

    /// Invokes a call whose admission the caller has settled.
    fn invoke_admitted(&self, active: &Arc<Active>, call: Call) -> Invoked {
        let at = self.runtime.services().clock.now_ms();
        let call_name = call.name();
        let inv = self.runtime.invoke(&active.pre, &active.installation, call);
        self.invoked(active, at, call_name, inv)
    }

    /// Logs a failed invocation started at `at`, writes its record, and returns it.
    fn invoked(
        &self,
        active: &Arc<Active>,
        at: i64,
        call_name: &str,
        inv: crate::runtime::Invocation,
    ) -> Invoked {
        let (output, error) = match inv.result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        if let Some(e) = &error {
            tracing::warn!(
                tenant = %active.installation.tenant,
                plugin = %active.installation.plugin,
                version = %active.version,
                code = e.code(),
                "invocation failed: {e}"
            );
        }
        self.record(active, at, call_name, error.clone(), &inv.report);
        Invoked {
            version: active.version.clone(),
            output,
            error,
            report: inv.report,
        }
    }

    /// Writes the invocation record into its ring slot (not fsynced: records are telemetry,
    /// flushed by sled's background flush), over the one that fell out of the window.
    fn record(
        &self,
        active: &Active,
        at: i64,
        call: &str,
        error: Option<InvokeError>,
        report: &Report,
    ) {
        let seq = active.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut report = report.clone();
        // Keep the record well under the 64 KiB value cap: at most 16 KiB of log lines.
        let mut budget = 16 * 1024usize;
        report.logs.retain(|l| {
            let n = l.message.len() + 32;
            if n <= budget {
                budget -= n;
                true
            } else {
                false
            }
        });
        let rec = InvocationRecord {
            seq,
            at,
            version: active.version.clone(),
            call: call.to_string(),
            ok: error.is_none(),
            error,
            report,
        };
        let space = active.installation.space();
        let backend = self.db.backend();
        let name = &active.installation.plugin;
        // Two plain writes, not a batch: the pair need not be atomic (a crash between them
        // leaves one record more), and sled runs every batch under its process-wide write
        // lock, which would stall every other reader and writer once per invocation.
        match serde_json::to_vec(&rec) {
            Ok(b) => {
                if let Err(e) = backend.put(&space, &inv_key(name, seq), &b) {
                    tracing::warn!(error = %e, "writing invocation record");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding invocation record"),
        }
    }

    /// The next `seq` of a plugin's invocation ring: a binary search over its slots (about
    /// ten reads at every plugin load, not the whole ring). Moves records of the earlier
    /// layout that lie outside the ring (keys of `seq` past its size) into their slots,
    /// newest last, so each slot keeps the newest record it was given.
    async fn invocation_ring(&self, space: &Space, name: &str) -> Result<u64, RegistryError> {
        let (sp, owned) = (space.clone(), name.to_string());
        let found = self
            .db
            .run(move |b| {
                Ok(match ring_state(b, &sp, &owned)? {
                    Ring::Empty => Some(0),
                    Ring::Newest(seq) => Some(seq + 1),
                    Ring::Unsearchable => None,
                })
            })
            .await?;
        if let Some(next_seq) = found {
            return Ok(next_seq);
        }
        let rows = self
            .db
            .scan_prefix(space, &inv_prefix(name), usize::MAX)
            .await?;
        let rows = newest_first(rows);
        let next_seq = rows.first().map_or(0, |(seq, _, _)| seq + 1);
        let mut outside: Vec<_> = rows
            .into_iter()
            .filter(|(seq, k, _)| *k != inv_key(name, *seq))
            .collect();
        if !outside.is_empty() {
            outside.reverse();
            let mut ops = Vec::with_capacity(outside.len() * 2);
            for (seq, k, v) in outside {
                ops.push(BatchOp::delete(k));
                ops.push(BatchOp::put(inv_key(name, seq), v));
            }
            for chunk in ops.chunks(1000) {
                self.db.apply_batch(space, chunk.to_vec()).await?;
            }
        }
        Ok(next_seq)
    }

    /// The newest invocation records of a plugin, newest first.
    pub async fn invocations(
        &self,
        tenant: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, RegistryError> {
        self.plugin(tenant, name).await?;
        let (sp, name) = (Space::tenant(tenant), name.to_string());
        let values = self
            .db
            .run(move |b| {
                let newest = match ring_state(b, &sp, &name)? {
                    Ring::Empty => return Ok(Vec::new()),
                    Ring::Newest(seq) => seq,
                    Ring::Unsearchable => {
                        let rows = b.scan_prefix(&sp, &inv_prefix(&name), usize::MAX)?;
                        return Ok(newest_first(rows)
                            .into_iter()
                            .map(|(_, _, v)| v)
                            .take(limit)
                            .collect());
                    }
                };
                // Walk back from the newest: `limit` reads, not the whole ring. A slot whose
                // record is not the `seq` expected (a write still in flight) is skipped.
                let mut out = Vec::new();
                let oldest = newest.saturating_sub(INVOCATION_RECORDS_KEPT - 1);
                for seq in (oldest..=newest).rev() {
                    if out.len() == limit {
                        break;
                    }
                    if let Some(v) = b.get(&sp, &inv_key(&name, seq))? {
                        if record_seq(&v) == Some(seq) {
                            out.push(v);
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(values
            .into_iter()
            .filter_map(|v| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Loads every tenant's active versions into memory (at start). Returns how many
    /// loaded; failures are logged and retried lazily on first use.
    pub async fn load_all(self: &Arc<Self>) -> Result<usize, RegistryError> {
        let tenants = crate::tenants::list(&self.db).await?;
        // One load per core at a time: an artifact load is CPU-bound, and a cold start that
        // recompiles every plugin at once would hold every compilation in memory together.
        let gate = Arc::new(Semaphore::new(crate::worker::cores()));
        let mut jobs = tokio::task::JoinSet::new();
        for t in tenants {
            for p in self.list(&t.id).await? {
                let Some(version) = p.active.clone() else {
                    continue;
                };
                let this = self.clone();
                let tenant = t.id.clone();
                let gate = gate.clone();
                jobs.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let r = async {
                        let v = this.version(&tenant, &p.name, &version).await?;
                        let a = this.load_active(&tenant, &p.name, &v).await?;
                        this.set_active(&tenant, &p.name, Some(a));
                        Ok::<_, RegistryError>(())
                    }
                    .await;
                    if let Err(e) = &r {
                        tracing::error!(tenant = %tenant, plugin = %p.name, error = %e, "loading plugin at start failed");
                    }
                    r.is_ok()
                });
            }
        }
        let mut n = 0;
        while let Some(r) = jobs.join_next().await {
            if r.unwrap_or(false) {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A settings update (`PUT /v1/plugins/{name}/config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// Plain settings (replaces the previous ones).
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// Secrets to set; `null` removes one; absent ones are kept.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, Option<String>>,
    /// Hosts reachable through `outbound-http` (replaces the previous list).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// Settings as the API shows them: secret names only, never values.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsView {
    /// Plain settings.
    pub config: std::collections::BTreeMap<String, String>,
    /// Names of the secrets that are set.
    pub secrets: Vec<String>,
    /// Allowlisted hosts.
    pub allowed_hosts: Vec<String>,
}

impl From<&Settings> for SettingsView {
    fn from(s: &Settings) -> Self {
        SettingsView {
            config: s.config.clone(),
            secrets: s.secrets.keys().cloned().collect(),
            allowed_hosts: s.allowed_hosts.clone(),
        }
    }
}

fn check_host_pattern(h: &str) -> Result<(), RegistryError> {
    let (host, port) = match h.rsplit_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (h, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidSettings(format!(
            "allowed host `{h}` must be `host`, `host:port` or `*.domain`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_its_seq_from_the_front_of_its_json() {
        let rec = InvocationRecord {
            seq: 1234,
            at: 1,
            version: "1.0.0".into(),
            call: "step".into(),
            ok: true,
            error: None,
            report: Report::default(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap();
        assert_eq!(record_seq(&bytes), Some(1234));
        assert_eq!(
            record_seq(br#"{"at":1,"seq":2}"#),
            Some(2),
            "any field order"
        );
        assert_eq!(record_seq(b"{\"seq\":"), None);
        assert_eq!(record_seq(b"not json"), None);
    }

    #[test]
    fn records_a_ring_apart_share_a_slot_and_list_newest_first() {
        let kept = INVOCATION_RECORDS_KEPT;
        assert_eq!(inv_key("p", 7), inv_key("p", 7 + kept));
        assert_ne!(inv_key("p", 7), inv_key("p", 8));
        // Below the ring size a slot is the key the one-key-per-seq layout used.
        assert_eq!(inv_key("p", 7), b"inv/p/0000000000000007".to_vec());
        let row = |seq: u64| {
            (
                inv_key("p", seq),
                format!("{{\"seq\":{seq},\"at\":0}}").into_bytes(),
            )
        };
        let order: Vec<u64> = newest_first(vec![row(kept + 1), row(2), row(kept + 3)])
            .into_iter()
            .map(|(seq, _, _)| seq)
            .collect();
        assert_eq!(order, [kept + 3, kept + 1, 2]);
    }

    #[test]
    fn the_newest_record_of_a_ring_is_found_at_any_fill_and_wrap() {
        let kept = INVOCATION_RECORDS_KEPT;
        // `written` records numbered from 0, each in its slot; the newest one wins a slot.
        let ring = |written: u64| {
            move |slot: u64| -> Result<Option<u64>, StoreError> {
                Ok((0..written).rev().find(|seq| seq % kept == slot))
            }
        };
        assert_eq!(newest_in_ring(ring(0)).unwrap(), None);
        for written in [
            1,
            2,
            500,
            kept - 1,
            kept,
            kept + 1,
            kept + 5,
            3 * kept - 1,
            3 * kept,
        ] {
            assert_eq!(
                newest_in_ring(ring(written)).unwrap(),
                Some(written - 1),
                "{written} records"
            );
        }
    }
}
