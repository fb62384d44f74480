//! HTTP load helper for `scripts/bench.sh`.
//!
//! ```text
//! # create a tenant, install abandoned-cart, write <out>/key and <out>/entered.json
//! cargo run --release -p weft --example loadgen -- setup --url http://127.0.0.1:18080 --admin-token wat_... --out DIR
//! # closed-loop load (fallback when wrk is not installed): C connections for S seconds
//! cargo run --release -p weft --example loadgen -- run --url URL [--key K --body FILE] [--connections 16] [--seconds 10]
//! # open-loop ingestion at a fixed rate (the p99-at-10,000-events/s figure)
//! cargo run --release -p weft --example loadgen -- ingest --url URL --write-key wwk_... --rate 10000 [--batch 1]
//! ```
//!
//! `run` sends `POST` with the body when `--body` is given, `GET` otherwise, keeps one
//! keep-alive connection per worker, stops by itself after the duration, and prints
//! requests/s and latency percentiles in the same `RESULT` line format as
//! `scripts/wrk-invoke.lua`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn need(args: &[String], flag: &str) -> anyhow::Result<String> {
    arg(args, flag).ok_or_else(|| anyhow::anyhow!("missing {flag}"))
}

fn plugins_dir() -> PathBuf {
    match std::env::var_os("WEFT_PLUGINS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

async fn setup(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let admin = need(args, "--admin-token")?;
    let out = PathBuf::from(need(args, "--out")?);
    let wasm_path = plugins_dir().join("abandoned-cart.wasm");
    let wasm = std::fs::read(&wasm_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); run `bash scripts/build-plugins.sh` first",
            wasm_path.display()
        )
    })?;
    let http = reqwest::Client::new();
    let tenant: serde_json::Value = http
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "load"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = tenant["secret_key"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no secret_key in {tenant}"))?
        .to_string();
    http.put(format!(
        "{url}/v1/plugins/abandoned-cart/versions/1.0.0?kind=journey-rule&activate=true"
    ))
    .bearer_auth(&key)
    .body(wasm)
    .send()
    .await?
    .error_for_status()?;
    let body = serde_json::to_vec(&weft::samples::journey_entered())?;
    let check: serde_json::Value = http
        .post(format!("{url}/v1/plugins/abandoned-cart/invoke"))
        .bearer_auth(&key)
        .body(body.clone())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if !check["output"]["output"]["Ok"].is_array() {
        anyhow::bail!("the check invocation did not return commands: {check}");
    }
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("key"), &key)?;
    if let Some(w) = tenant["write_key"].as_str() {
        std::fs::write(out.join("write_key"), w)?;
    }
    std::fs::write(out.join("entered.json"), &body)?;
    eprintln!(
        "tenant {} with abandoned-cart installed; body {} bytes",
        tenant["id"],
        body.len()
    );
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies (sorted, µs) and error counts of every worker.
async fn gather(
    mut workers: tokio::task::JoinSet<(Vec<u64>, u64)>,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = workers.join_next().await {
        let (lat, e) = r?;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    Ok((all, errors))
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let key = arg(args, "--key");
    let body = arg(args, "--body").map(std::fs::read).transpose()?;
    let conns: usize = arg(args, "--connections").map_or(Ok(16), |v| v.parse())?;
    let secs: u64 = arg(args, "--seconds").map_or(Ok(10), |v| v.parse())?;
    let end = Instant::now() + Duration::from_secs(secs);
    let body = Arc::new(body);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        // One client per worker: one keep-alive connection each, as wrk does.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, key, body) = (url.clone(), key.clone(), body.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let mut req = match body.as_ref() {
                    Some(b) => http.post(&url).body(b.clone()),
                    None => http.get(&url),
                };
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let t0 = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t0.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let t0 = Instant::now();
    let (all, errors) = gather(workers).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "RESULT requests={} duration_s={elapsed:.2} rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} errors={errors} non2xx=0",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        all.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// Open-loop ingestion at a fixed rate: `--rate` events per second as single `/v1/track`
/// calls (or `--batch N` events per `/v1/batch`), each with a unique messageId, spread over
/// `--connections` connections. Latency is measured from each request's *scheduled* send
/// time, so a slow server cannot hide queueing (no coordinated omission).
async fn ingest(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let key = need(args, "--write-key")?;
    let rate: f64 = arg(args, "--rate").map_or(Ok(10_000.0), |v| v.parse())?;
    let batch: usize = arg(args, "--batch").map_or(Ok(1), |v| v.parse())?;
    let conns: usize = arg(args, "--connections").map_or(Ok(64), |v| v.parse())?;
    let secs: u64 = arg(args, "--seconds").map_or(Ok(10), |v| v.parse())?;
    let profiles: u64 = arg(args, "--profiles").map_or(Ok(100_000), |v| v.parse())?;
    let requests_per_sec = rate / batch.max(1) as f64;
    let total = (requests_per_sec * secs as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / requests_per_sec);
    let start = Instant::now() + Duration::from_millis(100);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run_id: u64 = rand::random::<u32>().into();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, key, next) = (url.clone(), key.clone(), next.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let event = |j: u64| {
                    let n = i * batch as u64 + j;
                    let user = (n.wrapping_mul(2_654_435_761)) % profiles;
                    serde_json::json!({"type": "track", "event": "Product Added", "userId": format!("u{user}"),
                        "messageId": format!("r{run_id}-{n}"),
                        "properties": {"cart_id": format!("c{user}"), "product_id": format!("sku-{}", n % 500), "price": 450000, "currency": "VND"},
                        "context": {"library": {"name": "loadgen"}, "timezone": "Asia/Ho_Chi_Minh"}})
                };
                let (path, body) = if batch <= 1 {
                    ("/v1/track", event(0))
                } else {
                    ("/v1/batch", serde_json::json!({"batch": (0..batch as u64).map(event).collect::<Vec<_>>()}))
                };
                let ok = match http
                    .post(format!("{url}{path}"))
                    .basic_auth(&key, Some(""))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(due.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let (all, errors) = gather(workers).await?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "RESULT requests={} events={} duration_s={elapsed:.2} target_eps={rate:.0} eps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} errors={errors}",
        all.len(),
        all.len() * batch,
        (all.len() * batch) as f64 / elapsed,
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        all.last().copied().unwrap_or(0),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("setup") => rt.block_on(setup(&args)),
        Some("run") => rt.block_on(run(&args)),
        Some("ingest") => rt.block_on(ingest(&args)),
        _ => anyhow::bail!("usage: loadgen setup --url URL --admin-token TOKEN --out DIR | loadgen run --url URL [--key KEY --body FILE] [--connections N] [--seconds S] | loadgen ingest --url URL --write-key KEY [--rate 10000] [--batch 1] [--connections 64] [--seconds 10] [--profiles 100000]"),
    }
}
