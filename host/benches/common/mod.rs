//! Setup shared by the benchmarks: the built plugins and a runtime on a throwaway store.

// Each bench binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use weft::clock::SystemClock;
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runtime::host::Services;
use weft::runtime::{KindPre, Runtime};

/// The allocator `weft serve` runs with (`host/src/main.rs`), so that the benchmarks time
/// the production path's allocations, not glibc's (a fresh-instance invocation measured
/// 12.4 against 13.0 µs with glibc in one quiet sitting: BENCHMARKS.md, session 17).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Where the built plugins are: `$WEFT_PLUGINS_DIR`, else `<repo>/target/plugins`.
pub fn plugins_dir() -> PathBuf {
    match std::env::var_os("WEFT_PLUGINS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

/// The bytes of `target/plugins/<name>.wasm`; exits with instructions when it is missing.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: cannot read plugin {} ({e}).\n\
                 The benchmarks use the built example plugins: run `bash scripts/build-plugins.sh` \
                 from the repository root first (or set WEFT_PLUGINS_DIR).",
                path.display()
            );
            std::process::exit(2);
        }
    }
}

/// A runtime with the production configuration on a temporary store.
pub struct Host {
    /// Drives `Services::rt`; kept alive for the runtime's lifetime.
    pub _tokio: tokio::runtime::Runtime,
    /// The data directory (deleted on drop).
    pub _dir: tempfile::TempDir,
    /// The runtime under test.
    pub runtime: Arc<Runtime>,
}

impl Host {
    /// A runtime with `config` (use `RuntimeConfig::default()` for production settings).
    pub fn new(config: RuntimeConfig) -> Host {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _blobs) = weft::store::open(dir.path()).expect("opening the store");
        let services = {
            let _guard = tokio.enter();
            Services::new(db.backend().clone(), Arc::new(SystemClock), false).expect("services")
        };
        let runtime = Arc::new(Runtime::new(config, services).expect("runtime"));
        Host {
            _tokio: tokio,
            _dir: dir,
            runtime,
        }
    }

    /// Validates, compiles and type-checks a built plugin: the cached pre that serves calls.
    pub fn prepare(&self, name: &str, kind: PluginKind) -> KindPre {
        let bytes = plugin_bytes(name);
        let component = self
            .runtime
            .compile(&bytes, kind)
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
        self.runtime
            .prepare(&component, kind)
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }
}
