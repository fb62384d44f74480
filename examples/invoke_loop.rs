//! Fresh-instance invocations of the example journey rule in a tight loop, through the
//! production path (`Runtime::invoke` on a prepared plugin, pooling allocator): for A/B
//! comparisons of two builds on a noisy machine, where criterion's short samples swing by
//! a third. Prints the mean per invocation; run it under `perf stat` for CPU time.
//!
//! `cargo run --release -p weft --example invoke_loop -- 100000`
//! (needs `bash scripts/build-plugins.sh` first).

#[path = "../host/benches/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runtime::host::{Installation, Settings};

fn main() {
    let n: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 100_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: invoke_loop [invocations, a positive number; default 100000]");
            std::process::exit(2);
        }
    };
    let host = common::Host::new(RuntimeConfig::default());
    let pre = host.prepare("abandoned-cart", PluginKind::JourneyRule);
    let inst = Arc::new(Installation::new(
        "t_bench",
        "abandoned-cart",
        "1.0.0",
        Settings::default(),
    ));
    let call = weft::samples::journey_entered();
    // Warm-up: the first call type-checks the exports; the rest warm the pool's slots.
    for _ in 0..1_000 {
        let _ = host.runtime.invoke(&pre, &inst, call.clone());
    }
    let t = Instant::now();
    for _ in 0..n {
        let inv = host.runtime.invoke(&pre, &inst, call.clone());
        assert!(inv.result.is_ok(), "invocation failed: {:?}", inv.result);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("RESULT invoke_loop invocations={n} mean_us={per:.2}");
}
