//! Upload-to-ready benchmarks: validate + compile + type-check (`Runtime::compile` then
//! `Runtime::prepare`) of each example plugin, the work an upload does before it answers.
//! For contrast, loading the same plugin from its compiled artifact (what a restart does
//! per active plugin): `Runtime::load_artifact` then `Runtime::prepare`.
//!
//! `cargo bench -p weft --bench upload` (needs `bash scripts/build-plugins.sh` first).

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;

use common::{plugin_bytes, Host};

const EXAMPLES: [(&str, PluginKind); 4] = [
    ("abandoned-cart", PluginKind::JourneyRule),
    ("tier-personalize", PluginKind::Personalization),
    ("zalo-oa", PluginKind::ChannelAdapter),
    ("faq-bot", PluginKind::ChatbotFlow),
];

fn benches(c: &mut Criterion) {
    let host = Host::new(RuntimeConfig::default());
    let rt = host.runtime.clone();

    // Compiles take hundreds of milliseconds: a few flat samples are enough.
    let mut g = c.benchmark_group("upload-to-ready");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, kind) in EXAMPLES {
        let bytes = plugin_bytes(name);
        g.bench_function(name, |b| {
            b.iter(|| {
                let component = rt.compile(&bytes, kind).expect("compile");
                rt.prepare(&component, kind).expect("prepare")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("load-from-artifact");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (name, kind) in EXAMPLES {
        let component = rt.compile(&plugin_bytes(name), kind).expect("compile");
        let artifact = component.serialize().expect("serialize");
        g.bench_function(name, |b| {
            b.iter(|| {
                let component = rt.load_artifact(&artifact).expect("load");
                rt.prepare(&component, kind).expect("prepare")
            })
        });
    }
    g.finish();
}

criterion_group!(upload_benches, benches);
criterion_main!(upload_benches);
