//! Personalization invocation benchmarks: `tier-personalize` deciding two placements on a
//! fresh instance (the production path, `Runtime::invoke`), with the benchmark's catalog
//! of 50 candidates and with none, to show what handing the catalog to the guest costs.
//!
//! `cargo bench -p weft --bench personalize` (needs `bash scripts/build-plugins.sh` first).

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runtime::host::{Installation, Settings};
use weft::runtime::Output;
use weft::samples;

use common::Host;

fn benches(c: &mut Criterion) {
    let host = Host::new(RuntimeConfig::default());
    let rt = host.runtime.clone();
    let pre = host.prepare("tier-personalize", PluginKind::Personalization);
    let inst = Arc::new(Installation::new(
        "t_bench",
        "tier-personalize",
        "1.0.0",
        Settings::default(),
    ));
    let mut g = c.benchmark_group("personalize");
    for (name, candidates) in [("catalog-50", 50), ("catalog-0", 0)] {
        let call = samples::decide_two_placements(candidates);
        match rt.invoke(&pre, &inst, call.clone()).result {
            Ok(Output::PersonalizeDecide(Ok(d))) => assert_eq!(d.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        g.bench_function(format!("tier-personalize/fresh-instance/{name}"), |b| {
            b.iter_batched(
                || call.clone(),
                |call| rt.invoke(&pre, &inst, call),
                BatchSize::SmallInput,
            )
        });
        let report = rt.invoke(&pre, &inst, call.clone()).report;
        eprintln!("{name}: {} instructions", report.instructions);
    }
    g.finish();
}

criterion_group!(personalize_benches, benches);
criterion_main!(personalize_benches);
