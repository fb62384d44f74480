//! The one wasmtime `Engine`, its epoch ticker, and the per-kind `Linker`s.

use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::capabilities;
use super::host::HostState;
use crate::config::RuntimeConfig;
use crate::kind::PluginKind;

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Pre-reserved slots: microsecond instantiation.
    Pooling,
    /// mmap per instance: used when the address space is too small for the pool.
    OnDemand,
}

/// Builds the engine: component model, epoch interruption and fuel metering on, the pooling
/// allocator when it fits in the address space, on-demand allocation otherwise.
pub fn build_engine(cfg: &RuntimeConfig) -> anyhow::Result<(Engine, Allocator)> {
    if cfg.pooling {
        match Engine::new(&base_config(cfg, true)) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(e) => tracing::warn!(
                error = %e,
                "pooling allocator unavailable (address space too small?); falling back to on-demand allocation"
            ),
        }
    } else {
        tracing::info!("pooling allocator disabled by configuration; using on-demand allocation");
    }
    let engine = Engine::new(&base_config(cfg, false))
        .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e}"))?;
    Ok((engine, Allocator::OnDemand))
}

fn base_config(cfg: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    // One engine for every kind: fuel is engine-wide, and every invocation reports the
    // instructions it used, so metering is always on.
    c.consume_fuel(true);
    // Bounded native stack for guests: unbounded recursion traps instead of crashing.
    c.max_wasm_stack(512 * 1024);
    if pooling {
        let n = cfg.pool_instances.max(1);
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(n);
        // A Rust component holds one memory and a couple of shim core instances/tables.
        p.total_memories(n);
        p.total_tables(n * 2);
        p.total_core_instances(n * 4);
        // A channel adapter runs on a fiber: one stack per instance at most.
        p.total_stacks(n);
        p.max_memory_size(cfg.max_memory_bytes());
        p.table_elements(
            PluginKind::ALL
                .iter()
                .map(|k| cfg.limits(*k).max_table_elements)
                .max()
                .unwrap_or(20_000),
        );
        // Keep hot pages resident across reuse: fewer page faults (Spin's values).
        p.linear_memory_keep_resident(2 * 1024 * 1024);
        p.table_keep_resident(512 * 1024);
        // Reset only the pages a guest dirtied (Linux PAGEMAP_SCAN, 6.7+; ignored where
        // absent): halves fresh-instance cost for Rust guests (BENCHMARKS.md, pooling-variants).
        p.pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Starts the thread that advances the engine's epoch every `tick`. It holds only a weak
/// reference and stops when the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => break,
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Builds the linker for one kind: the WASI subset every kind gets plus the kind's
/// granted `weft:plugin` capabilities, nothing else.
pub fn build_linker(engine: &Engine, kind: PluginKind) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    capabilities::add_wasi_subset(&mut linker)?;
    capabilities::add_weft(&mut linker, kind)?;
    Ok(linker)
}
