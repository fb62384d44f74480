//! The wasmtime runtime: one engine, per-kind linkers, validation at upload, and the
//! per-invocation sandbox. **A plugin is invoked in [`Runtime::invoke`]** (via
//! [`invoke::invoke`]), and nowhere else.

pub mod bindings;
pub mod capabilities;
pub mod catalog;
pub mod engine;
pub mod exports;
pub mod host;
pub mod invoke;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use crate::config::RuntimeConfig;
use crate::kind::{unversioned, PluginKind, GRANTED_WASI};
pub use capabilities::outbound_http::{CannedAnswer, CannedHttp, SeenRequest};
pub use engine::Allocator;
use host::{HostState, Installation, Services};
pub use invoke::{Bindings, Call, Invocation, InvokeError, KindPre, Output, Report};

/// Why an upload was refused. Every message names the problem.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ValidationError {
    /// Empty or not WebAssembly.
    #[error("not a WebAssembly component: the body does not start with the `\\0asm` magic bytes")]
    NotWasm,
    /// A core module, not a component.
    #[error("this is a core WebAssembly module, not a component; build for `wasm32-wasip2` (or wrap it with `wasm-tools component new`)")]
    CoreModule,
    /// Bigger than the cap.
    #[error("component of {size} bytes exceeds the {max}-byte upload limit")]
    TooLarge {
        /// Upload size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// wasmtime could not compile it.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// An import the kind's world does not grant.
    #[error("forbidden import `{import}`: the {kind} world does not grant it (granted: weft:plugin capabilities {granted} and the WASI io/cli/clocks/random subset)")]
    ForbiddenImport {
        /// The import as named by the component.
        import: String,
        /// The declared kind.
        kind: PluginKind,
        /// What the kind may import.
        granted: String,
    },
    /// The kind's interface is not exported.
    #[error("missing export `{export}@0.1.0`: a {kind} plugin must export it{hint}")]
    MissingExport {
        /// The required interface.
        export: &'static str,
        /// The declared kind.
        kind: PluginKind,
        /// What it exports instead, if anything.
        hint: String,
    },
    /// An import or export has the wrong type.
    #[error("component does not match the {kind} world: {detail}")]
    TypeMismatch {
        /// The declared kind.
        kind: PluginKind,
        /// wasmtime's explanation.
        detail: String,
    },
}

/// Checks the first bytes: `\0asm`, then version 1 (core module) or a component layer.
pub fn sniff(bytes: &[u8]) -> Result<(), ValidationError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(ValidationError::NotWasm);
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(ValidationError::CoreModule);
    }
    Ok(())
}

/// The runtime: compile, link, validate and invoke.
pub struct Runtime {
    engine: Engine,
    allocator: Allocator,
    linkers: [Linker<HostState>; 4],
    services: Arc<Services>,
    config: RuntimeConfig,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("allocator", &self.allocator)
            .finish_non_exhaustive()
    }
}

fn kind_index(k: PluginKind) -> usize {
    match k {
        PluginKind::JourneyRule => 0,
        PluginKind::Personalization => 1,
        PluginKind::ChannelAdapter => 2,
        PluginKind::ChatbotFlow => 3,
    }
}

impl Runtime {
    /// Builds the engine, the epoch ticker and the per-kind linkers.
    pub fn new(config: RuntimeConfig, services: Arc<Services>) -> anyhow::Result<Runtime> {
        let (engine, allocator) = engine::build_engine(&config)?;
        let epoch_tick = Duration::from_micros(config.epoch_tick_us.max(100));
        engine::start_epoch_ticker(&engine, epoch_tick);
        let linkers = [
            engine::build_linker(&engine, PluginKind::JourneyRule)?,
            engine::build_linker(&engine, PluginKind::Personalization)?,
            engine::build_linker(&engine, PluginKind::ChannelAdapter)?,
            engine::build_linker(&engine, PluginKind::ChatbotFlow)?,
        ];
        Ok(Runtime {
            engine,
            allocator,
            linkers,
            services,
            config,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Which allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The runtime configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Shared services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// A key that changes whenever compiled artifacts become incompatible: the wasmtime
    /// version plus the engine's compatibility hash.
    pub fn artifact_key(&self) -> String {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys, so the value is stable across runs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let digest = sha2::Sha256::digest(format!("wasmtime-48.0.8/{:016x}", h.finish()));
        hex::encode(&digest[..8])
    }

    /// Validates an upload for `kind` and compiles it. Checks, in order: size, magic bytes,
    /// compilation, imports against the kind's grants, the required export, and the types.
    pub fn compile(&self, bytes: &[u8], kind: PluginKind) -> Result<Component, ValidationError> {
        let component = self.compile_component(bytes)?;
        self.check_world(&component, kind)?;
        Ok(component)
    }

    /// The first checks of [`compile`](Self::compile), for any kind: size, magic bytes and
    /// compilation. [`check_world`](Self::check_world) must pass before the component runs.
    pub fn compile_component(&self, bytes: &[u8]) -> Result<Component, ValidationError> {
        if bytes.len() > self.config.max_component_bytes {
            return Err(ValidationError::TooLarge {
                size: bytes.len(),
                max: self.config.max_component_bytes,
            });
        }
        sniff(bytes)?;
        Component::new(&self.engine, bytes).map_err(|e| ValidationError::Invalid(format!("{e:#}")))
    }

    /// Checks a component's imports and exports against `kind`'s world.
    pub fn check_world(
        &self,
        component: &Component,
        kind: PluginKind,
    ) -> Result<(), ValidationError> {
        let ty = component.component_type();
        let granted = kind.granted_weft_imports();
        for (name, _) in ty.imports(&self.engine) {
            let base = unversioned(name);
            if !granted.contains(&base) && !GRANTED_WASI.contains(&base) {
                return Err(ValidationError::ForbiddenImport {
                    import: name.to_string(),
                    kind,
                    granted: granted
                        .iter()
                        .filter(|g| **g != "weft:plugin/types")
                        .map(|g| g.trim_start_matches("weft:plugin/"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports
            .iter()
            .any(|e| unversioned(e) == kind.export_interface())
        {
            let hint = if exports.is_empty() {
                String::new()
            } else {
                let other = PluginKind::ALL.iter().find(|k| {
                    exports
                        .iter()
                        .any(|e| unversioned(e) == k.export_interface())
                });
                match other {
                    Some(k) => format!(
                        " (this component exports `{}`: is it a {k} plugin?)",
                        k.export_interface()
                    ),
                    None => format!(" (it exports: {})", exports.join(", ")),
                }
            };
            return Err(ValidationError::MissingExport {
                export: kind.export_interface(),
                kind,
                hint,
            });
        }
        Ok(())
    }

    /// Links and type-checks a compiled component for `kind`, giving the cached pre.
    pub fn prepare(
        &self,
        component: &Component,
        kind: PluginKind,
    ) -> Result<KindPre, ValidationError> {
        let mismatch = |e: wasmtime::Error| ValidationError::TypeMismatch {
            kind,
            detail: format!("{e:#}"),
        };
        let pre = self.linkers[kind_index(kind)]
            .instantiate_pre(component)
            .map_err(mismatch)?;
        let bindings = match kind {
            PluginKind::JourneyRule => Bindings::JourneyRule(
                bindings::journey_rule::JourneyRulePre::new(pre).map_err(mismatch)?,
            ),
            PluginKind::Personalization => Bindings::Personalization(
                bindings::personalization::PersonalizationPre::new(pre).map_err(mismatch)?,
            ),
            PluginKind::ChannelAdapter => Bindings::ChannelAdapter(
                bindings::channel_adapter::ChannelAdapterPre::new(pre).map_err(mismatch)?,
            ),
            PluginKind::ChatbotFlow => Bindings::ChatbotFlow(
                bindings::chatbot_flow::ChatbotFlowPre::new(pre).map_err(mismatch)?,
            ),
        };
        KindPre::new(bindings).map_err(mismatch)
    }

    /// Loads a compiled artifact that this runtime produced earlier.
    ///
    /// The caller must have verified the artifact's HMAC: only bytes Weft itself wrote
    /// under this engine's [`artifact_key`](Self::artifact_key) are ever deserialized.
    #[allow(unsafe_code)]
    pub fn load_artifact(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        // SAFETY: `bytes` were produced by `Component::serialize` on an engine with the same
        // compatibility hash (the artifact path is keyed by it) and their HMAC, keyed by a
        // secret in the data directory, was verified by the caller. wasmtime additionally
        // checks the header's version and configuration and errors on mismatch.
        unsafe { Component::deserialize(&self.engine, bytes) }
            .map_err(|e| anyhow::anyhow!("loading compiled artifact: {e:#}"))
    }

    /// Runs one call on a fresh instance of `pre`. Blocking; run it on a blocking thread.
    pub fn invoke(
        &self,
        pre: &KindPre,
        installation: &Arc<Installation>,
        call: Call,
    ) -> Invocation {
        self.invoke_with(pre, installation, call, true)
    }

    /// [`invoke`](Self::invoke) on an async runtime thread: for a component that
    /// [`runs_inline`](Self::runs_inline). A WASI wait that is not ready at once traps with
    /// [`capabilities::NO_WAITING`] instead of blocking the thread.
    pub fn invoke_inline(
        &self,
        pre: &KindPre,
        installation: &Arc<Installation>,
        call: Call,
    ) -> Invocation {
        self.invoke_with(pre, installation, call, false)
    }

    /// [`invoke`](Self::invoke) of a channel adapter call as a future, which holds no
    /// thread while the adapter waits for its provider (see [`invoke::invoke_async`]).
    pub async fn invoke_async(
        &self,
        pre: &KindPre,
        installation: &Arc<Installation>,
        call: Call,
    ) -> Invocation {
        let limits = self.config.limits(pre.kind());
        invoke::invoke_async(&self.services, pre, installation, limits, call).await
    }

    /// Both of the above, with the kind's limits.
    fn invoke_with(
        &self,
        pre: &KindPre,
        installation: &Arc<Installation>,
        call: Call,
        may_wait: bool,
    ) -> Invocation {
        let limits = self.config.limits(pre.kind());
        invoke::invoke_with(&self.services, pre, installation, limits, call, may_wait)
    }

    /// Whether `component` can run on an async runtime thread: it imports nothing that
    /// touches the store or may block (profile store, state, config), only types, log,
    /// clock and the WASI subset, whose waits [`invoke_inline`](Self::invoke_inline)
    /// refuses.
    pub fn runs_inline(&self, component: &Component) -> bool {
        /// The `weft:plugin` interfaces served from memory, without the store.
        const MEMORY_ONLY: [&str; 3] =
            ["weft:plugin/types", "weft:plugin/log", "weft:plugin/clock"];
        component
            .component_type()
            .imports(&self.engine)
            .all(|(name, _)| {
                let base = unversioned(name);
                MEMORY_ONLY.contains(&base) || GRANTED_WASI.contains(&base)
            })
    }
}
