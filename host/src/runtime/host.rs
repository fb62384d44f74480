//! Per-invocation host state: the WASI context, the resource table, the memory limiter and
//! everything the capabilities need to know about the calling installation.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::clock::SharedClock;
use crate::runtime::CannedHttp;
use crate::store::{Backend, Space};

/// Services shared by every invocation: storage, the clock, the HTTP client.
pub struct Services {
    /// The blocking storage backend (host calls already run on blocking threads).
    pub backend: Arc<dyn Backend>,
    /// The host clock.
    pub clock: SharedClock,
    /// Client for `outbound-http`: redirects off so the allowlist cannot be bypassed, and a
    /// resolver that refuses non-public addresses unless the operator allows them.
    pub http: reqwest::Client,
    /// Whether `outbound-http` may reach loopback, private and link-local addresses.
    pub allow_private_networks: bool,
    /// Runtime handle used to drive outbound HTTP from a blocking thread.
    pub rt: tokio::runtime::Handle,
    /// A local run's provider answers, used instead of the network (`weft plugin run`);
    /// `None` on a server.
    pub canned_http: Option<Arc<CannedHttp>>,
}

impl Services {
    /// Services over `backend` and `clock`, with the outbound HTTP client and the current
    /// tokio runtime. Call from inside a tokio runtime.
    pub fn new(
        backend: Arc<dyn Backend>,
        clock: SharedClock,
        allow_private_networks: bool,
    ) -> anyhow::Result<Arc<Services>> {
        Services::build(backend, clock, allow_private_networks, None)
    }

    /// [`new`](Self::new) for a local run whose `outbound-http` requests get `canned`
    /// answers after the same checks (allowlist, address policy, sizes).
    pub fn with_canned_http(
        backend: Arc<dyn Backend>,
        clock: SharedClock,
        allow_private_networks: bool,
        canned: Arc<CannedHttp>,
    ) -> anyhow::Result<Arc<Services>> {
        Services::build(backend, clock, allow_private_networks, Some(canned))
    }

    fn build(
        backend: Arc<dyn Backend>,
        clock: SharedClock,
        allow_private_networks: bool,
        canned_http: Option<Arc<CannedHttp>>,
    ) -> anyhow::Result<Arc<Services>> {
        Ok(Arc::new(Services {
            backend,
            clock,
            http: crate::runtime::capabilities::outbound_http::client(allow_private_networks)?,
            allow_private_networks,
            rt: tokio::runtime::Handle::current(),
            canned_http,
        }))
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Settings of one installation (tenant + plugin name). `Debug` redacts secret values, so a
/// stray `{:?}` cannot log them; the API shows secret names only.
#[derive(Clone, Default, serde::Deserialize, Serialize)]
pub struct Settings {
    /// Plain settings.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// Secrets; readable by the plugin only.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Hosts (`host` or `host:port`, `*.domain` wildcards) reachable through `outbound-http`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field(
                "secrets",
                &self
                    .secrets
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Who is calling: the installation a plugin instance runs for.
#[derive(Debug)]
pub struct Installation {
    /// Tenant id; every capability call is scoped to it.
    pub tenant: String,
    /// Plugin name within the tenant; state and settings are keyed by it.
    pub plugin: String,
    /// The running version.
    pub version: String,
    /// Live settings; `rotate-secret` swaps them.
    pub settings: RwLock<Arc<Settings>>,
}

impl Installation {
    /// A new installation context.
    pub fn new(tenant: &str, plugin: &str, version: &str, settings: Settings) -> Installation {
        Installation {
            tenant: tenant.to_string(),
            plugin: plugin.to_string(),
            version: version.to_string(),
            settings: RwLock::new(Arc::new(settings)),
        }
    }

    /// The current settings snapshot.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tenant's storage space.
    pub fn space(&self) -> Space {
        Space::tenant(&self.tenant)
    }
}

/// One line a guest logged.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The message, truncated to 1,000 bytes.
    pub message: String,
    /// Structured fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<(String, String)>,
}

/// Most log lines kept per invocation (Shopify keeps 1,000 bytes; a line budget is simpler).
pub const MAX_LOG_LINES: usize = 100;
/// Longest log message kept, in bytes.
pub const MAX_LOG_MESSAGE: usize = 1000;
/// Bytes of guest stdout/stderr captured per stream.
pub const STDIO_CAPTURE_BYTES: usize = 4096;

/// The memory limiter: enforces the kind's cap and records the high-water mark.
#[derive(Debug)]
pub struct Limiter {
    /// Cap on any linear memory, in bytes.
    pub max_memory: usize,
    /// Cap on table elements.
    pub max_table_elements: usize,
    /// Largest memory size reached.
    pub peak_memory: usize,
    /// Set when the guest asked for more than the cap.
    pub memory_exceeded: Option<usize>,
}

/// The trap raised when a guest grows memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the plugin asked for {requested} bytes; the cap is {cap} bytes")]
pub struct MemoryLimitExceeded {
    /// Bytes requested.
    pub requested: usize,
    /// The cap.
    pub cap: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_exceeded = Some(desired);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: desired,
                cap: self.max_memory,
            }));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn instances(&self) -> usize {
        // A component instantiates a few core instances (the module plus shims).
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        // Rust and C components have one memory; a handful leaves room for other toolchains.
        8
    }
}

/// Everything one invocation's `Store` holds.
pub struct HostState {
    /// The WASI context, built on the guest's first WASI call: most invocations make none
    /// (a journey step reads its input and answers), and building one costs about 0.3 µs
    /// of a 10 µs fresh-instance invocation (it seeds two random generators).
    pub(crate) wasi: Option<WasiCtx>,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) installation: Arc<Installation>,
    pub(crate) services: Arc<Services>,
    pub(crate) space: Space,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: u32,
    pub(crate) deadline: Instant,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) hostcalls: u32,
    pub(crate) http_calls: Vec<crate::runtime::invoke::HttpCall>,
    /// Whether a WASI wait that is not ready at once may block this thread (until the
    /// deadline); false for an invocation run on an async runtime thread, where such a wait
    /// traps instead (see `capabilities::waits`).
    pub(crate) may_wait: bool,
}

impl HostState {
    /// The invocation's WASI context, built now if the guest had not used WASI yet.
    pub(crate) fn wasi(&mut self) -> &mut WasiCtx {
        lazy_wasi(
            &mut self.wasi,
            &self.stdout,
            &self.stderr,
            &self.services.clock,
        )
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            // Not `self.wasi()`: the table is borrowed beside it.
            ctx: lazy_wasi(
                &mut self.wasi,
                &self.stdout,
                &self.stderr,
                &self.services.clock,
            ),
            table: &mut self.table,
        }
    }
}

/// The WASI context in `slot`, built by [`wasi_ctx`] if there is none yet.
fn lazy_wasi<'a>(
    slot: &'a mut Option<WasiCtx>,
    stdout: &MemoryOutputPipe,
    stderr: &MemoryOutputPipe,
    clock: &SharedClock,
) -> &'a mut WasiCtx {
    slot.get_or_insert_with(|| wasi_ctx(stdout, stderr, clock))
}

/// The WASI context of one invocation: stdout and stderr captured into `stdout` and
/// `stderr`, the wall clock backed by the host clock (so a test's manual clock applies),
/// no environment, arguments, filesystem or sockets, and at most 64 KiB of random bytes
/// per call.
pub(crate) fn wasi_ctx(
    stdout: &MemoryOutputPipe,
    stderr: &MemoryOutputPipe,
    clock: &SharedClock,
) -> WasiCtx {
    wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(HostWallClock(clock.clone()))
        .max_random_size(64 * 1024)
        .build()
}

/// The WASI wall clock, backed by the host clock (so a test's manual clock applies).
pub(crate) struct HostWallClock(pub SharedClock);

impl wasmtime_wasi::HostWallClock for HostWallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_never_shows_secret_values() {
        let mut s = Settings::default();
        s.secrets
            .insert("access_token".into(), "sk-very-secret".into());
        let shown = format!("{s:?}");
        assert!(shown.contains("access_token"), "{shown}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }
}
