//! Wiring: opens the store, builds the runtime and the registry, loads active plugins.
//! Used by `weft serve`, `weft demo`, the tests and the benchmarks alike.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::AppState;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::registry::Registry;
use crate::runtime::host::Services;
use crate::runtime::Runtime;
use crate::store;

/// A running host (without the HTTP listener).
pub struct App {
    /// Handler state: registry, db, clock.
    pub state: AppState,
    /// How many active plugins were loaded at start.
    pub loaded: usize,
    /// Time from open to ready (store + engine + loading every active plugin).
    pub ready_in: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens everything under `config.data_dir` with the system clock.
    pub async fn open(config: &Config) -> anyhow::Result<App> {
        App::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens everything with a given clock (tests use a manual one).
    pub async fn open_with_clock(config: &Config, clock: SharedClock) -> anyhow::Result<App> {
        let t0 = Instant::now();
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", dir.display()))?;
        let (db, blobs) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || store::open(&dir)).await??
        };
        let services = Services::new(
            db.backend().clone(),
            clock.clone(),
            config.runtime.allow_private_networks,
        )?;
        let runtime = Arc::new(Runtime::new(config.runtime.clone(), services)?);
        let registry = Arc::new(Registry::open(&dir, db.clone(), blobs, runtime)?);
        let loaded = registry.load_all().await?;
        let ready_in = t0.elapsed();
        tracing::info!(
            data_dir = %dir.display(),
            allocator = ?registry.runtime().allocator(),
            loaded,
            ready_ms = ready_in.as_millis() as u64,
            "weft ready"
        );
        crate::worker::set_background_nice(config.background_nice);
        let ingest = crate::ingest::Ingest::start(db.clone(), clock.clone());
        let journeys = crate::journeys::Journeys::start(
            db.clone(),
            clock.clone(),
            registry.clone(),
            ingest.clone(),
        );
        let deliveries = crate::delivery::Deliveries::start(
            db.clone(),
            clock.clone(),
            registry.clone(),
            ingest.clone(),
            config.public_url.as_deref(),
        );
        let conversations = crate::conversations::Conversations::start(
            db.clone(),
            clock.clone(),
            registry.clone(),
            ingest.clone(),
            deliveries.clone(),
            &config.chat,
        );
        let personalize = crate::personalize::Personalizer::start(
            db.clone(),
            clock.clone(),
            registry.clone(),
            ingest.clone(),
            config.personalize.profile_cache_bytes,
        );
        Ok(App {
            state: AppState {
                personalize,
                registry,
                ingest,
                journeys,
                deliveries,
                conversations,
                keys: Arc::new(crate::tenants::KeyCache::default()),
                db,
                clock,
            },
            loaded,
            ready_in,
        })
    }

    /// Data directory helper for tests: a config rooted at `dir` with a small pool.
    pub fn test_config(dir: &Path) -> Config {
        let mut c = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        // 64 slots: tests run many engines at once; each slot reserves address space.
        c.runtime.pool_instances = 64;
        // The tests' fake providers listen on 127.0.0.1.
        c.runtime.allow_private_networks = true;
        c
    }
}
