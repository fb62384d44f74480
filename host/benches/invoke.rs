//! Invocation benchmarks: a fresh instance per call through the production path
//! (`Runtime::invoke` on a cached `KindPre`, pooling allocator), its parts (store,
//! instantiate, a call on a warm instance, the output size check), a plugin making host
//! calls, and the on-demand allocator for contrast.
//!
//! `cargo bench -p weft --bench invoke` (needs `bash scripts/build-plugins.sh` first).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runtime::bindings::exports::journey;
use weft::runtime::bindings::journey_rule::JourneyRulePre;
use weft::runtime::engine;
use weft::runtime::host::{Installation, Settings, STDIO_CAPTURE_BYTES};
use weft::runtime::{invoke, Bindings, Call, KindPre, Output};
use weft::samples;

use common::Host;

/// The step input inside a journey call.
fn step_input(call: &Call) -> journey::StepInput {
    match call {
        Call::JourneyStep(s) => s.clone(),
        other => panic!("not a journey step: {}", other.name()),
    }
}

fn installation(plugin: &str) -> Arc<Installation> {
    Arc::new(Installation::new(
        "t_bench",
        plugin,
        "1.0.0",
        Settings::default(),
    ))
}

/// Runs `call` once and panics unless the plugin returned commands.
fn check(host: &Host, pre: &KindPre, inst: &Arc<Installation>, call: &Call) -> Output {
    let inv = host.runtime.invoke(pre, inst, call.clone());
    match inv.result {
        Ok(out @ Output::JourneyStep(Ok(_))) => out,
        other => panic!("{}: unexpected result {other:?}", inst.plugin),
    }
}

fn benches(c: &mut Criterion) {
    let host = Host::new(RuntimeConfig::default());
    let rt = host.runtime.clone();
    eprintln!("allocator: {:?}", rt.allocator());
    let cart = host.prepare("abandoned-cart", PluginKind::JourneyRule);
    let well = host.prepare("test-well-behaved", PluginKind::JourneyRule);
    let cart_inst = installation("abandoned-cart");
    let well_inst = installation("test-well-behaved");
    let entered = samples::journey_entered();
    let cart_out = check(&host, &cart, &cart_inst, &entered);
    check(&host, &well, &well_inst, &entered);

    let limits = rt.config().limits(PluginKind::JourneyRule).clone();
    // As `Runtime::new` derives it.
    let tick = Duration::from_micros(rt.config().epoch_tick_us.max(100));
    let deadline = limits.deadline();
    // Warm instances serve many calls: give their stores a deadline the run cannot reach.
    let warm_deadline = Duration::from_secs(24 * 3600);
    let Bindings::JourneyRule(cart_pre) = &cart.bindings else {
        unreachable!("prepared as a journey rule")
    };

    let mut g = c.benchmark_group("invoke");
    g.bench_function("abandoned-cart/fresh-instance", |b| {
        b.iter_batched(
            || entered.clone(),
            |call| rt.invoke(&cart, &cart_inst, call),
            BatchSize::SmallInput,
        )
    });
    // A store as `invoke` builds it, for one fresh instance.
    let fresh_store = || {
        invoke::new_store(
            rt.services(),
            &cart,
            &cart_inst,
            &limits,
            Instant::now(),
            deadline,
        )
    };
    // As `invoke` instantiates once a pre's exports are checked: the bare component.
    g.bench_function("abandoned-cart/instantiate-only", |b| {
        b.iter(|| {
            let mut store = fresh_store();
            let instance = cart_pre.instance_pre().instantiate(&mut store);
            black_box(&instance.expect("instantiate"));
        })
    });
    // The generated bindings' instantiate, which looks up and type-checks every export
    // each time (what `invoke` did for every call before `runtime::exports`).
    g.bench_function("abandoned-cart/instantiate-with-bindings-load", |b| {
        b.iter(|| {
            let mut store = fresh_store();
            let instance = cart_pre.instantiate(&mut store);
            black_box(&instance.expect("instantiate"));
        })
    });
    {
        // One instance, reused: the cost of the call itself (lowering, guest code, lifting).
        let mut store = invoke::new_store(
            rt.services(),
            &cart,
            &cart_inst,
            &limits,
            Instant::now(),
            warm_deadline,
        );
        let instance = cart_pre.instantiate(&mut store).expect("instantiate");
        let input = step_input(&entered);
        g.bench_function("abandoned-cart/call-on-warm-instance", |b| {
            b.iter_batched(
                || input.clone(),
                |input| {
                    // A fresh host-call budget, as a new invocation would get.
                    store.set_hostcall_fuel(limits.hostcall_bytes);
                    instance
                        .weft_plugin_journey()
                        .call_step(&mut store, &input)
                        .expect("step")
                },
                BatchSize::SmallInput,
            )
        });
        // The cheapest call (no input, a small record back): the floor of a call.
        g.bench_function("abandoned-cart/describe-on-warm-instance", |b| {
            b.iter(|| {
                instance
                    .weft_plugin_journey()
                    .call_describe(&mut store)
                    .expect("describe")
            })
        });
    }
    g.bench_function("test-well-behaved/fresh-instance-with-host-calls", |b| {
        b.iter_batched(
            || entered.clone(),
            |call| rt.invoke(&well, &well_inst, call),
            BatchSize::SmallInput,
        )
    });
    {
        // Host-call cost on a warm instance: `step` does `state.increment` (a sled update)
        // and one `log` call; `describe` makes none. After 100 calls the per-invocation log
        // cap drops the line, so this counts the log call's cap check, not a stored line.
        let Bindings::JourneyRule(well_pre) = &well.bindings else {
            unreachable!("prepared as a journey rule")
        };
        let mut store = invoke::new_store(
            rt.services(),
            &well,
            &well_inst,
            &limits,
            Instant::now(),
            warm_deadline,
        );
        let instance = well_pre.instantiate(&mut store).expect("instantiate");
        let input = step_input(&entered);
        g.bench_function("test-well-behaved/call-on-warm-instance", |b| {
            b.iter_batched(
                || input.clone(),
                |input| {
                    store.set_hostcall_fuel(limits.hostcall_bytes);
                    instance
                        .weft_plugin_journey()
                        .call_step(&mut store, &input)
                        .expect("step")
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("test-well-behaved/describe-on-warm-instance", |b| {
            b.iter(|| {
                instance
                    .weft_plugin_journey()
                    .call_describe(&mut store)
                    .expect("describe")
            })
        });
    }
    g.finish();

    // Where the time of a fresh-instance invocation goes, piece by piece.
    let mut g = c.benchmark_group("invoke-parts");
    g.bench_function("wasi-ctx-build", |b| {
        b.iter(|| {
            let out = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
            let err = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
            let ctx = WasiCtxBuilder::new()
                .stdout(out)
                .stderr(err)
                .max_random_size(64 * 1024)
                .build();
            black_box(ctx)
        })
    });
    g.bench_function("store-new-and-drop", |b| {
        b.iter(|| black_box(fresh_store()))
    });
    g.bench_function("output-json-size-check", |b| {
        b.iter(|| invoke::json_size(black_box(&cart_out)))
    });
    g.bench_function("call-clone", |b| b.iter(|| black_box(&entered).clone()));
    let body = serde_json::to_vec(&entered).expect("call JSON");
    g.bench_function("call-parse-json", |b| {
        b.iter(|| serde_json::from_slice::<Call>(black_box(&body)).expect("parse"))
    });
    g.finish();

    // Experiment: the same invocation on engines whose pooling allocator resets linear
    // memory differently. The engine mirrors `runtime::engine::build_engine` except for the
    // two knobs named in each benchmark id (see BENCHMARKS.md).
    let mut g = c.benchmark_group("pooling-variants");
    for (id, keep_resident, pagemap, fuel) in [
        ("keep-resident-2MiB/pagemap-off", 2 << 20, Enabled::No, true),
        (
            "keep-resident-2MiB/pagemap-auto",
            2 << 20,
            Enabled::Auto,
            true,
        ),
        ("keep-resident-0/pagemap-off", 0, Enabled::No, true),
        // Without fuel metering (reports no instruction counts): its cost, for reference.
        (
            "keep-resident-2MiB/pagemap-auto/no-fuel",
            2 << 20,
            Enabled::Auto,
            false,
        ),
    ] {
        let engine = variant_engine(rt.config(), keep_resident, pagemap, fuel);
        engine::start_epoch_ticker(&engine, tick);
        let linker = engine::build_linker(&engine, PluginKind::JourneyRule).expect("linker");
        let component =
            wasmtime::component::Component::new(&engine, common::plugin_bytes("abandoned-cart"))
                .unwrap_or_else(|e| panic!("compiling abandoned-cart: {e:#}"));
        let pre = linker
            .instantiate_pre(&component)
            .and_then(JourneyRulePre::new)
            .expect("pre");
        let pre = KindPre::new(Bindings::JourneyRule(pre)).expect("exports");
        let inv = invoke::invoke(rt.services(), &pre, &cart_inst, &limits, entered.clone());
        assert!(
            matches!(inv.result, Ok(Output::JourneyStep(Ok(_)))),
            "{id}: {:?}",
            inv.result
        );
        g.bench_function(format!("fresh-instance/{id}"), |b| {
            b.iter_batched(
                || entered.clone(),
                |call| invoke::invoke(rt.services(), &pre, &cart_inst, &limits, call),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // The same invocation without the pooling allocator (mmap per instance).
    let on_demand = Host::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    });
    let cart_od = on_demand.prepare("abandoned-cart", PluginKind::JourneyRule);
    check(&on_demand, &cart_od, &cart_inst, &entered);
    let rt_od = on_demand.runtime.clone();
    let mut g = c.benchmark_group("invoke-on-demand-allocator");
    g.bench_function("abandoned-cart/fresh-instance", |b| {
        b.iter_batched(
            || entered.clone(),
            |call| rt_od.invoke(&cart_od, &cart_inst, call),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// An engine configured as `runtime::engine::build_engine` configures the production one
/// (component model, epochs, fuel, 512 KiB wasm stack, pooling sized by `cfg`), except for
/// `linear_memory_keep_resident`, `pagemap_scan` and fuel metering.
fn variant_engine(
    cfg: &RuntimeConfig,
    keep_resident: usize,
    pagemap: Enabled,
    fuel: bool,
) -> Engine {
    let n = cfg.pool_instances.max(1);
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(n)
        .total_memories(n)
        .total_tables(n * 2)
        .total_core_instances(n * 4)
        .max_memory_size(cfg.max_memory_bytes())
        .table_elements(
            PluginKind::ALL
                .iter()
                .map(|k| cfg.limits(*k).max_table_elements)
                .max()
                .unwrap_or(20_000),
        )
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(512 * 1024)
        .pagemap_scan(pagemap);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(fuel)
        .max_wasm_stack(512 * 1024)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    Engine::new(&c).expect("variant engine")
}

criterion_group!(invoke_benches, benches);
criterion_main!(invoke_benches);
