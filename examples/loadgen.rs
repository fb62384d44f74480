//! HTTP load helper for `scripts/bench.sh`.
//!
//! ```text
//! # create a tenant, install abandoned-cart, write <out>/key and <out>/entered.json
//! cargo run --release -p weft --example loadgen -- setup --url http://127.0.0.1:18080 --admin-token wat_... --out DIR
//! # closed-loop load (fallback when wrk is not installed): C connections for S seconds
//! cargo run --release -p weft --example loadgen -- run --url URL [--key K --body FILE] [--connections 16] [--seconds 10]
//! # open-loop ingestion at a fixed rate (the p99-at-10,000-events/s figure)
//! cargo run --release -p weft --example loadgen -- ingest --url URL --write-key wwk_... --rate 10000 [--batch 1]
//! # the send pipeline to a fake Twilio it runs itself, then signed status webhooks back
//! # (the server needs `[runtime] allow_private_networks = true` to reach the fake)
//! cargo run --release -p weft --example loadgen -- sends --url URL --admin-token wat_... --rate 5000 [--seconds 10]
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
        Some("sends") => rt.block_on(sends(&args)),
        _ => anyhow::bail!("usage: loadgen setup --url URL --admin-token TOKEN --out DIR | loadgen run --url URL [--key KEY --body FILE] [--connections N] [--seconds S] | loadgen ingest --url URL --write-key KEY [--rate 10000] [--batch 1] [--connections 64] [--seconds 10] [--profiles 100000] | loadgen sends --url URL --admin-token TOKEN [--rate 5000] [--seconds 10] [--connections 64] [--webhook-connections 32] [--profiles 10000] [--provider-latency-ms 0]"),
    }
}

/// What the fake provider saw: (message number, arrival time).
type Arrivals = Arc<std::sync::Mutex<Vec<(u64, Instant)>>>;

/// A fake Twilio on 127.0.0.1: answers every message at once (after `delay`) with sid
/// `SM<n>` where the body is `bench-<n>`, and notes when each arrived.
async fn fake_twilio(delay: Duration) -> anyhow::Result<(std::net::SocketAddr, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(move |body: String| {
            let at = Instant::now();
            let n: u64 = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("Body=bench-"))
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            log.lock().unwrap_or_else(|e| e.into_inner()).push((n, at));
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(serde_json::json!({"sid": format!("SM{n}"), "status": "queued"})),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok((addr, arrivals))
}

/// Twilio's request signature over `url` and the form `params`.
fn twilio_signature(token: &str, url: &str, params: &[(&str, String)]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The send pipeline under load, then its status webhooks:
/// 1. a tenant with the `sms` adapter pointed at an in-process fake Twilio, and `--profiles`
///    profiles with phone numbers;
/// 2. `POST /v1/messages` open-loop at `--rate` for `--seconds`: latency from each request's
///    scheduled time to the moment the provider receives the message (what Weft adds before
///    the provider), and sends/s completed;
/// 3. signed Twilio status callbacks (`delivered`, then `read`) for the messages sent, on
///    `--connections` connections as fast as they go: webhooks/s with signature checks.
async fn sends(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let admin = need(args, "--admin-token")?;
    let rate: f64 = arg(args, "--rate").map_or(Ok(5_000.0), |v| v.parse())?;
    let secs: u64 = arg(args, "--seconds").map_or(Ok(10), |v| v.parse())?;
    let conns: usize = arg(args, "--connections").map_or(Ok(64), |v| v.parse())?;
    let hook_conns: usize = arg(args, "--webhook-connections").map_or(Ok(32), |v| v.parse())?;
    let profiles: u64 = arg(args, "--profiles").map_or(Ok(10_000), |v| v.parse())?;
    let delay =
        Duration::from_millis(arg(args, "--provider-latency-ms").map_or(Ok(0), |v| v.parse())?);
    let (provider, arrivals) = fake_twilio(delay).await?;
    let http = reqwest::Client::new();
    let tenant: serde_json::Value = http
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "sends"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(key), Some(wkey), Some(tid)) = (
        tenant["secret_key"].as_str(),
        tenant["write_key"].as_str(),
        tenant["id"].as_str(),
    ) else {
        anyhow::bail!("unexpected tenant answer {tenant}");
    };
    let wasm_path = plugins_dir().join("sms.wasm");
    let wasm = std::fs::read(&wasm_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); build the plugins",
            wasm_path.display()
        )
    })?;
    http.put(format!(
        "{url}/v1/plugins/sms/versions/1.0.0?kind=channel-adapter&activate=true"
    ))
    .bearer_auth(key)
    .body(wasm)
    .send()
    .await?
    .error_for_status()?;
    let token = "bench-twilio-token";
    let hook = format!("{url}/v1/webhooks/{tid}/sms");
    http.put(format!("{url}/v1/plugins/sms/config"))
        .bearer_auth(key)
        .json(&serde_json::json!({
            "config": {"api_base": format!("http://{provider}"), "account_sid": "AC1",
                       "from_number": "+84900000000", "webhook_url": hook},
            "secrets": {"auth_token": token},
            "allowed_hosts": [provider.to_string()]}))
        .send()
        .await?
        .error_for_status()?;
    // Profiles: phones +8491xxxxxxx.
    let phone = |n: u64| format!("+8491{:07}", n % 10_000_000);
    for chunk in (0..profiles).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|n| serde_json::json!({"type": "identify", "userId": format!("s{n}"), "traits": {"phone": phone(*n)}}))
            .collect();
        http.post(format!("{url}/v1/batch"))
            .basic_auth(wkey, Some(""))
            .json(&serde_json::json!({"batch": batch}))
            .send()
            .await?
            .error_for_status()?;
    }
    for _ in 0..600 {
        let st: serde_json::Value = http
            .get(format!("{url}/v1/ingest/status"))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        if st["backlog"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("tenant {tid}: sms adapter -> fake Twilio {provider}; {profiles} profiles");

    // 2. Sends, open loop.
    let total = (rate * secs as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run_id: u32 = rand::random();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, key, next) = (url.clone(), key.to_string(), next.clone());
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
                let body = serde_json::json!({"intent_id": format!("b{run_id}-{i}"),
                    "to": format!("user_id:s{}", i % profiles), "channels": ["sms"],
                    "category": "transactional", "content": [{"Text": format!("bench-{i}")}]});
                let ok = match http
                    .post(format!("{url}/v1/messages"))
                    .bearer_auth(&key)
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
    let (api, api_errors) = gather(workers).await?;
    let accepted_in = start.elapsed().as_secs_f64();
    // Wait for the pipeline to drain (at most 60 s after the load).
    let wait_until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < wait_until {
        if arrivals.lock().unwrap_or_else(|e| e.into_inner()).len() as u64 >= total - api_errors {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut to_provider: Vec<u64> = seen
        .iter()
        .filter(|(n, _)| *n < total)
        .map(|(n, at)| {
            at.saturating_duration_since(start + interval.mul_f64(*n as f64))
                .as_micros() as u64
        })
        .collect();
    to_provider.sort_unstable();
    let last = seen.iter().map(|(_, at)| *at).max().unwrap_or(start);
    let span = last
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    println!(
        "RESULT sends target={rate:.0} requested={total} api_p50_us={} api_p99_us={} api_errors={api_errors} accepted_in_s={accepted_in:.2} delivered={} sends_per_s={:.0} to_provider_p50_us={} to_provider_p90_us={} to_provider_p99_us={} to_provider_max_us={} provider_latency_ms={}",
        percentile(&api, 50.0),
        percentile(&api, 99.0),
        to_provider.len(),
        to_provider.len() as f64 / span,
        percentile(&to_provider, 50.0),
        percentile(&to_provider, 90.0),
        percentile(&to_provider, 99.0),
        to_provider.last().copied().unwrap_or(0),
        delay.as_millis(),
    );

    // 3. Status webhooks for what was sent, closed loop.
    let sids: Arc<Vec<u64>> = Arc::new(
        seen.iter()
            .map(|(n, _)| *n)
            .filter(|n| *n < total)
            .collect(),
    );
    let events = sids.len() as u64 * 2;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    for _ in 0..hook_conns {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (hook, next, sids) = (hook.clone(), next.clone(), sids.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= events {
                    break;
                }
                let n = sids[(i % sids.len() as u64) as usize];
                let status = if i < sids.len() as u64 {
                    "delivered"
                } else {
                    "read"
                };
                let params = [
                    ("MessageSid", format!("SM{n}")),
                    ("MessageStatus", status.to_string()),
                    ("To", phone(n % profiles)),
                    ("From", "+84900000000".to_string()),
                ];
                let sig = twilio_signature(token, &hook, &params);
                let form: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let t = Instant::now();
                let ok = match http
                    .post(&hook)
                    .header("x-twilio-signature", sig)
                    .form(&form)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let (hooks, hook_errors) = gather(workers).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "RESULT webhooks requests={} duration_s={elapsed:.2} rps={:.0} p50_us={} p99_us={} errors={hook_errors}",
        hooks.len(),
        hooks.len() as f64 / elapsed,
        percentile(&hooks, 50.0),
        percentile(&hooks, 99.0),
    );
    let d: serde_json::Value = http
        .get(format!("{url}/v1/deliveries?status=read&limit=1"))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    eprintln!("a read delivery: {}", d["deliveries"][0]["intent_id"]);
    Ok(())
}
