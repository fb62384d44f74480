//! HTTP load helper for `scripts/bench.sh`.
//!
//! ```text
//! # create a tenant, install abandoned-cart, write <out>/key and <out>/entered.json
//! cargo run --release -p weft --example loadgen -- setup --url http://127.0.0.1:18080 --admin-token wat_... --out DIR
//! # closed-loop load (fallback when wrk is not installed): C connections for S seconds
//! cargo run --release -p weft --example loadgen -- run --url URL [--key K --body FILE] [--connections 16] [--seconds 10]
//! # open-loop ingestion at a fixed rate (the p99-at-10,000-events/s figure)
//! cargo run --release -p weft --example loadgen -- ingest --url URL --write-key wwk_... --rate 10000 [--batch 1]
//! # open-loop profile lookups (the 360 view of a random user) at a fixed rate
//! cargo run --release -p weft --example loadgen -- lookups --url URL --key wsk_... --rate 1000 [--profiles 100000]
//! # the send pipeline to a fake Twilio it runs itself, then signed status webhooks back
//! # (the server needs `[runtime] allow_private_networks = true` to reach the fake)
//! cargo run --release -p weft --example loadgen -- sends --url URL --admin-token wat_... --rate 5000 [--seconds 10]
//! # web chat: a tenant with faq-bot as the default flow, N idle visitor sockets (the
//! # server's RSS per idle conversation with --server-pid), then open-loop messages
//! cargo run --release -p weft --example loadgen -- chat --url URL --admin-token wat_... --conversations 5000 --rate 2000 [--seconds 10] [--server-pid PID] [--open-concurrency 200]
//! # edge personalization: a tenant with tier-personalize, the audience `vip`, the settings
//! # FILE (`personalize_native --print-settings`) and N profiles u1..uN ingested as identify
//! # events; writes <out>/key and <out>/write_key
//! cargo run --release -p weft --example loadgen -- personalize-setup --url URL --admin-token wat_... --settings FILE --out DIR [--profiles 100000] [--batch 500]
//! ```
//!
//! `run` sends `POST` with the body when `--body` is given, `GET` otherwise, keeps one
//! keep-alive connection per worker, stops by itself after the duration, and prints
//! requests/s and latency percentiles in the same `RESULT` line format as
//! `scripts/wrk-invoke.lua`.
//!
//! `chat` opens `--conversations` WebSockets on `/v1/chat/ws` (no `Origin` header; at most
//! `--open-concurrency` opening at a time), each `hello` → `ready`; reads the server's
//! `VmRSS` before and 2 s after the last `ready` when `--server-pid` is given; then sends
//! `--rate` messages/s ("giờ mở cửa", which faq-bot answers) for `--seconds` on a fixed
//! schedule, round-robin over the conversations, and waits up to 10 s for the replies. The
//! bot turn latency is from a message's actual send to the first bot `message` frame after
//! its `ack`; `achieved_per_s` is bot replies per second from the first scheduled send to
//! the last reply (below `--rate` when the server falls behind); `slow_commits` counts the
//! server's storage commit rounds of 100 ms or more during the run (disk stalls every
//! reply waits for; from `GET /healthz`). It prints a summary and a `RESULT chat ...` line.

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

/// A built example plugin's component, from [`plugins_dir`].
fn plugin_wasm(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); run `bash scripts/build-plugins.sh` first",
            path.display()
        )
    })
}

/// A tenant the load helper created: its id, secret key and write key.
struct NewTenant {
    id: String,
    key: String,
    wkey: String,
}

/// Creates a tenant named `name` with the admin token.
async fn new_tenant(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    name: &str,
) -> anyhow::Result<NewTenant> {
    let tenant: serde_json::Value = http
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(id), Some(key), Some(wkey)) = (
        tenant["id"].as_str(),
        tenant["secret_key"].as_str(),
        tenant["write_key"].as_str(),
    ) else {
        anyhow::bail!("unexpected tenant answer {tenant}");
    };
    Ok(NewTenant {
        id: id.into(),
        key: key.into(),
        wkey: wkey.into(),
    })
}

async fn setup(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let admin = need(args, "--admin-token")?;
    let out = PathBuf::from(need(args, "--out")?);
    let wasm = plugin_wasm("abandoned-cart")?;
    let http = reqwest::Client::new();
    let tenant = new_tenant(&http, &url, &admin, "load").await?;
    let key = tenant.key.clone();
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
    std::fs::write(out.join("write_key"), &tenant.wkey)?;
    std::fs::write(out.join("entered.json"), &body)?;
    eprintln!(
        "tenant {:?} with abandoned-cart installed; body {} bytes",
        tenant.id,
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

/// The `p50_us=… p90_us=… p99_us=… p999_us=… max_us=…` part of a `RESULT` line, from
/// sorted latencies in µs.
fn latencies(sorted: &[u64]) -> String {
    format!(
        "p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        percentile(sorted, 50.0),
        percentile(sorted, 90.0),
        percentile(sorted, 99.0),
        percentile(sorted, 99.9),
        sorted.last().copied().unwrap_or(0),
    )
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
        "RESULT requests={} duration_s={elapsed:.2} rps={:.0} {} errors={errors} non2xx=0",
        all.len(),
        all.len() as f64 / elapsed,
        latencies(&all),
    );
    Ok(())
}

/// Runs `total` requests open loop: request `i` is due at `start + i * interval`, spread
/// over `conns` keep-alive connections; `build(client, i)` makes request `i`. A request
/// that every connection was too busy to send on time is measured from its *scheduled*
/// send time, so a slow server cannot hide queueing (no coordinated omission). Returns the sorted latencies (µs) and the errors.
async fn open_loop<F>(
    total: u64,
    interval: Duration,
    conns: usize,
    build: F,
) -> anyhow::Result<(Vec<u64>, u64, Instant)>
where
    F: Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let start = Instant::now() + Duration::from_millis(100);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let build = Arc::new(build);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (next, build) = (next.clone(), build.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + interval.mul_f64(i as f64);
                // A request this worker reaches late (its previous answer was slow) counts
                // from when it was due; one it waits for counts from when it is sent,
                // because tokio's timer wakes up to 1 ms after `due` and that delay is the
                // load generator's, not the server's.
                let origin = if Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                let ok = match build(&http, i).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(origin.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let (all, errors) = gather(workers).await?;
    Ok((all, errors, start))
}

/// Open-loop ingestion at a fixed rate: `--rate` events per second as single `/v1/track`
/// calls (or `--batch N` events per `/v1/batch`), each with a unique messageId, spread over
/// `--connections` connections (see [`open_loop`]).
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
    let run_id: u64 = rand::random::<u32>().into();
    let (all, errors, start) = open_loop(total, interval, conns, move |http, i| {
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
        http.post(format!("{url}{path}"))
            .basic_auth(&key, Some(""))
            .json(&body)
    })
    .await?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "RESULT requests={} events={} duration_s={elapsed:.2} target_eps={rate:.0} eps={:.0} {} errors={errors}",
        all.len(),
        all.len() * batch,
        (all.len() * batch) as f64 / elapsed,
        latencies(&all),
    );
    Ok(())
}

/// Open-loop profile lookups at a fixed rate: `--rate` `GET /v1/profiles/user_id:uN` (the
/// 360 view) per second for a user among u0..u(`--profiles` - 1), spread over
/// `--connections` connections (see [`open_loop`]).
async fn lookups(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let key = need(args, "--key")?;
    let rate: f64 = arg(args, "--rate").map_or(Ok(1_000.0), |v| v.parse())?;
    let conns: usize = arg(args, "--connections").map_or(Ok(16), |v| v.parse())?;
    let secs: u64 = arg(args, "--seconds").map_or(Ok(10), |v| v.parse())?;
    let profiles: u64 = arg(args, "--profiles").map_or(Ok(100_000), |v| v.parse())?;
    let total = (rate * secs as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (all, errors, start) = open_loop(total, interval, conns, move |http, i| {
        let user = (i.wrapping_mul(2_654_435_761)) % profiles;
        http.get(format!("{url}/v1/profiles/user_id:u{user}"))
            .bearer_auth(&key)
    })
    .await?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "RESULT requests={} duration_s={elapsed:.2} target_rps={rate:.0} rps={:.0} {} errors={errors}",
        all.len(),
        all.len() as f64 / elapsed,
        latencies(&all),
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
        Some("lookups") => rt.block_on(lookups(&args)),
        Some("sends") => rt.block_on(sends(&args)),
        Some("chat") => rt.block_on(chat(&args)),
        Some("personalize-setup") => rt.block_on(personalize_setup(&args)),
        _ => anyhow::bail!("usage: loadgen setup --url URL --admin-token TOKEN --out DIR | loadgen run --url URL [--key KEY --body FILE] [--connections N] [--seconds S] | loadgen ingest --url URL --write-key KEY [--rate 10000] [--batch 1] [--connections 64] [--seconds 10] [--profiles 100000] | loadgen lookups --url URL --key KEY [--rate 1000] [--connections 16] [--seconds 10] [--profiles 100000] | loadgen sends --url URL --admin-token TOKEN [--rate 5000] [--seconds 10] [--connections 64] [--webhook-connections 32] [--profiles 10000] [--provider-latency-ms 0] | loadgen chat --url URL --admin-token TOKEN [--conversations 5000] [--rate 2000] [--seconds 10] [--server-pid PID] [--open-concurrency 200] | loadgen personalize-setup --url URL --admin-token TOKEN --settings FILE --out DIR [--profiles 100000] [--batch 500]"),
    }
}

/// The traits of synthetic user `u<n>` in the personalize benchmark (keep in sync with
/// `examples/personalize_native.rs` and `scripts/personalize-vm.js`): tier `gold` when
/// `n % 10 == 0`, `silver` when `n % 10` is 1..=3, none otherwise; `vip` (the audience's
/// predicate) when `n % 7 == 0`.
fn personalize_traits(n: u64) -> serde_json::Value {
    let mut traits = serde_json::Map::new();
    match n % 10 {
        0 => {
            traits.insert("tier".into(), "gold".into());
        }
        1..=3 => {
            traits.insert("tier".into(), "silver".into());
        }
        _ => {}
    }
    traits.insert("vip".into(), n.is_multiple_of(7).into());
    serde_json::Value::Object(traits)
}

/// Edge personalization setup: a tenant with tier-personalize active as its
/// personalization plugin, the audience `vip` (trait `vip` is true), the settings document
/// from `--settings`, then `--profiles` users `u1..uN` ingested as identify events through
/// `/v1/batch` (`--batch` per request, 4 requests in flight) and processed; checks one
/// decision and writes `<out>/key` and `<out>/write_key`.
async fn personalize_setup(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let admin = need(args, "--admin-token")?;
    let out = PathBuf::from(need(args, "--out")?);
    let settings = std::fs::read(need(args, "--settings")?)?;
    let profiles: u64 = arg(args, "--profiles").map_or(Ok(100_000), |v| v.parse())?;
    let batch: u64 = arg(args, "--batch").map_or(Ok(500), |v| v.parse())?;
    anyhow::ensure!(batch > 0, "--batch must be positive");

    let http = reqwest::Client::new();
    let tenant = new_tenant(&http, &url, &admin, "personalize").await?;
    let (key, wkey) = (tenant.key.as_str(), tenant.wkey.as_str());
    let wasm = plugin_wasm("tier-personalize")?;
    // Answers the error body too: a refused setup step should say why.
    async fn ok(r: reqwest::Response, what: &str) -> anyhow::Result<serde_json::Value> {
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{what}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
    ok(
        http.put(format!(
            "{url}/v1/plugins/tier-personalize/versions/1.0.0?kind=personalization&activate=true"
        ))
        .bearer_auth(key)
        .body(wasm)
        .send()
        .await?,
        "upload tier-personalize",
    )
    .await?;
    ok(
        http.post(format!("{url}/v1/audiences"))
            .bearer_auth(key)
            .json(&serde_json::json!({
                "id": "vip", "name": "VIP",
                "predicate": {"trait": "vip", "op": "eq", "value": true},
            }))
            .send()
            .await?,
        "create the audience vip",
    )
    .await?;
    ok(
        http.put(format!("{url}/v1/personalize/settings"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(settings)
            .send()
            .await?,
        "PUT /v1/personalize/settings",
    )
    .await?;
    eprintln!(
        "tenant {:?}: tier-personalize, audience vip, settings; ingesting {profiles} profiles",
        tenant.id
    );

    // Profiles: identify events, `batch` per request, 4 requests in flight.
    let t0 = Instant::now();
    let status_of = |http: reqwest::Client, url: String, key: String| async move {
        let s: serde_json::Value = http
            .get(format!("{url}/v1/ingest/status"))
            .bearer_auth(&key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::Ok(s)
    };
    let before = status_of(http.clone(), url.clone(), key.to_string()).await?["processed"]
        .as_u64()
        .unwrap_or(0);
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut sends = tokio::task::JoinSet::new();
    let mut start = 1;
    while start <= profiles {
        let end = (start + batch - 1).min(profiles);
        let events: Vec<serde_json::Value> = (start..=end)
            .map(|n| {
                serde_json::json!({
                    "type": "identify",
                    "userId": format!("u{n}"),
                    "messageId": format!("pz-{n}"),
                    "traits": personalize_traits(n),
                    "context": {"library": {"name": "loadgen"}, "locale": "vi-VN", "timezone": "Asia/Ho_Chi_Minh"},
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"batch": events}))?;
        let permit = gate.clone().acquire_owned().await?;
        let (http, url, wkey) = (http.clone(), url.clone(), wkey.to_string());
        sends.spawn(async move {
            let _permit = permit;
            let r = http
                .post(format!("{url}/v1/batch"))
                .basic_auth(&wkey, Some(""))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            ok(r, "POST /v1/batch").await
        });
        while let Some(r) = sends.try_join_next() {
            r??;
        }
        start = end + 1;
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let accepted_s = t0.elapsed().as_secs_f64();
    // Processed: every event, and no backlog (at most 10 minutes).
    let mut last = serde_json::Value::Null;
    for _ in 0..1200 {
        last = status_of(http.clone(), url.clone(), key.to_string()).await?;
        let processed = last["processed"].as_u64().unwrap_or(0);
        if last["backlog"].as_u64() == Some(0) && processed >= before + profiles {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::ensure!(
        last["backlog"].as_u64() == Some(0),
        "ingestion did not drain in 10 minutes: {last}"
    );
    let processed_s = t0.elapsed().as_secs_f64();
    let audience = ok(
        http.get(format!("{url}/v1/audiences/vip"))
            .bearer_auth(key)
            .send()
            .await?,
        "GET /v1/audiences/vip",
    )
    .await?;
    eprintln!(
        "{profiles} profiles accepted in {accepted_s:.1} s, processed in {processed_s:.1} s ({:.0} events/s); status {last}; audience vip: {} members (expected {})",
        profiles as f64 / processed_s,
        audience["audience"]["count"],
        profiles / 7
    );
    // One decision for a gold vip user (u70) when there are that many.
    let probe = if profiles >= 70 { "u70" } else { "u1" };
    let check = ok(
        http.post(format!("{url}/v1/personalize?writeKey={wkey}"))
            .header("content-type", "text/plain")
            .body(format!(
                r#"{{"userId":"{probe}","page":{{"path":"/"}},"placements":["hero","recs"]}}"#
            ))
            .send()
            .await?,
        "POST /v1/personalize",
    )
    .await?;
    eprintln!("check decision for {probe}: {check}");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("key"), key)?;
    std::fs::write(out.join("write_key"), wkey)?;
    println!(
        "RESULT personalize_setup profiles={profiles} accepted_s={accepted_s:.1} processed_s={processed_s:.1} vip_members={}",
        audience["audience"]["count"]
    );
    Ok(())
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
    let tenant = new_tenant(&http, &url, &admin, "sends").await?;
    let (key, wkey, tid) = (
        tenant.key.as_str(),
        tenant.wkey.as_str(),
        tenant.id.as_str(),
    );
    let wasm = plugin_wasm("sms")?;
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
    // When each request actually started: tokio's timer wakes up to a millisecond late, so
    // `to_provider` from the schedule includes the load generator's own lateness.
    let started: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..total)
            .map(|_| std::sync::atomic::AtomicU64::new(u64::MAX))
            .collect(),
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, key, next, started) =
            (url.clone(), key.to_string(), next.clone(), started.clone());
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
                started[i as usize].store(
                    start.elapsed().as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
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
    let mut from_request: Vec<u64> = seen
        .iter()
        .filter(|(n, _)| *n < total)
        .filter_map(|(n, at)| {
            let began = started[*n as usize].load(std::sync::atomic::Ordering::Relaxed);
            (began != u64::MAX).then(|| {
                (at.saturating_duration_since(start).as_micros() as u64).saturating_sub(began)
            })
        })
        .collect();
    from_request.sort_unstable();
    let last = seen.iter().map(|(_, at)| *at).max().unwrap_or(start);
    let span = last
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    println!(
        "RESULT sends target={rate:.0} requested={total} api_p50_us={} api_p99_us={} api_errors={api_errors} accepted_in_s={accepted_in:.2} delivered={} sends_per_s={:.0} to_provider_p50_us={} to_provider_p90_us={} to_provider_p99_us={} to_provider_max_us={} from_request_p50_us={} from_request_p99_us={} provider_latency_ms={}",
        percentile(&api, 50.0),
        percentile(&api, 99.0),
        to_provider.len(),
        to_provider.len() as f64 / span,
        percentile(&to_provider, 50.0),
        percentile(&to_provider, 90.0),
        percentile(&to_provider, 99.0),
        to_provider.last().copied().unwrap_or(0),
        percentile(&from_request, 50.0),
        percentile(&from_request, 99.0),
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

/// What the driver asks a conversation's task to do.
struct ChatSend {
    /// Message number (unique in the run; names the `client_id`).
    seq: u64,
    /// When the schedule wanted it sent.
    due: Instant,
}

/// What one conversation's task saw.
#[derive(Default)]
struct ChatStats {
    /// Bot turn latencies, µs from the actual send to the first bot `message` after it.
    latencies: Vec<u64>,
    /// Send to `ack`, µs (the message stored and fsynced).
    ack_latencies: Vec<u64>,
    /// How late each send left against the schedule, µs (the load generator's own lag).
    lag: Vec<u64>,
    sent: u64,
    send_failed: u64,
    /// Sends made while an earlier message of this conversation still had no reply.
    overlapped: u64,
    acks: u64,
    errors: u64,
    error_codes: std::collections::BTreeMap<String, u64>,
    /// Acknowledged messages whose turn ended without a bot message.
    no_reply: u64,
    /// When the last bot reply arrived.
    last_reply: Option<Instant>,
    /// The socket closed (by the server or an error) before the run ended.
    closed: bool,
    close_reason: Option<String>,
}

/// The fields of a server frame the benchmark looks at.
#[derive(serde::Deserialize)]
struct ChatFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

type ChatSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The server's resident set (`VmRSS`), KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time the server has used (user + system), seconds.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture that matters here.
    Some(ticks / 100.0)
}

/// The server's storage commit counters (`GET /healthz` with the admin token, `storage`),
/// if it reports them.
async fn commit_stats(url: &str, admin: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .bearer_auth(admin)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(v["storage"].clone()).filter(|s| s.is_object())
}

/// Opens one visitor socket: connect, `hello`, wait for `ready`.
async fn chat_open(ws_url: &str, write_key: &str, i: usize) -> anyhow::Result<ChatSocket> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let url = format!("{ws_url}/v1/chat/ws?writeKey={write_key}&anonymousId=bench-{i}");
    // No Origin header: a non-browser client, not origin-checked. TCP_NODELAY as browsers
    // set it; a 16 KiB read buffer instead of tungstenite's 128 KiB (which it zero-fills
    // on every read): this process shares the machine's cores and memory with the server.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let hello = serde_json::json!({"type": "hello", "locale": "vi-VN",
        "page": {"url": "https://shop.example.vn/", "referrer": "", "title": "bench", "time_on_page_ms": 0}});
    ws.send(Ws::Text(hello.to_string().into())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Ws::Text(t))) => {
                let f: ChatFrame = serde_json::from_str(t.as_str())?;
                match f.kind.as_str() {
                    "ready" => return Ok(ws),
                    "error" => anyhow::bail!("error frame before ready: {}", t.as_str()),
                    _ => {}
                }
            }
            Some(Ok(Ws::Close(c))) => anyhow::bail!("closed before ready: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("socket ended before ready"),
        }
    }
}

/// One open conversation: sends what the driver asks, timestamps the bot's replies.
///
/// Frames of one socket arrive in the order the server handles its messages: `ack` of a
/// message, then that turn's bot messages, then the next `ack`. So the first bot `message`
/// after an `ack` is the reply to the acknowledged message.
async fn chat_conversation(
    ws: ChatSocket,
    mut cmds: tokio::sync::mpsc::UnboundedReceiver<ChatSend>,
    run_id: u32,
    outstanding: Arc<std::sync::atomic::AtomicI64>,
) -> ChatStats {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::Ordering::Relaxed;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let (mut sink, mut stream) = ws.split();
    let mut st = ChatStats::default();
    // Sent, not yet acknowledged (or refused): client_id and send instant.
    let mut pending: Vec<(String, Instant)> = Vec::new();
    // Acknowledged, waiting for the bot's first message.
    let mut awaiting: Option<Instant> = None;
    let mut open = true;
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { break };
                if !open {
                    st.send_failed += 1;
                    continue;
                }
                if !pending.is_empty() || awaiting.is_some() {
                    st.overlapped += 1;
                }
                let client_id = format!("b{run_id}-{}", cmd.seq);
                let frame = serde_json::json!({"type": "message", "text": "giờ mở cửa", "client_id": client_id});
                let t0 = Instant::now();
                st.lag.push(t0.saturating_duration_since(cmd.due).as_micros() as u64);
                match sink.send(Ws::Text(frame.to_string().into())).await {
                    Ok(()) => {
                        st.sent += 1;
                        outstanding.fetch_add(1, Relaxed);
                        pending.push((client_id, t0));
                    }
                    Err(_) => st.send_failed += 1,
                }
            }
            msg = stream.next(), if open => {
                let text = match msg {
                    Some(Ok(Ws::Text(t))) => t,
                    Some(Ok(Ws::Close(c))) => {
                        st.closed = true;
                        st.close_reason = Some(c.map_or("close without code".into(), |c| format!("{} {}", u16::from(c.code), c.reason)));
                        open = false;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        st.closed = true;
                        st.close_reason = Some(e.to_string());
                        open = false;
                        continue;
                    }
                    None => {
                        st.closed = true;
                        st.close_reason = Some("socket ended".into());
                        open = false;
                        continue;
                    }
                };
                let at = Instant::now();
                let Ok(f) = serde_json::from_str::<ChatFrame>(text.as_str()) else { continue };
                match f.kind.as_str() {
                    "ack" => {
                        st.acks += 1;
                        let Some(i) = pending.iter().position(|(c, _)| Some(c) == f.client_id.as_ref()) else { continue };
                        let (_, t0) = pending.remove(i);
                        st.ack_latencies.push(at.duration_since(t0).as_micros() as u64);
                        if awaiting.replace(t0).is_some() {
                            // The previous turn ended without a bot message.
                            st.no_reply += 1;
                            outstanding.fetch_sub(1, Relaxed);
                        }
                    }
                    "message" if f.from.as_deref() == Some("bot") => {
                        if let Some(t0) = awaiting.take() {
                            st.latencies.push(at.duration_since(t0).as_micros() as u64);
                            st.last_reply = Some(at);
                            outstanding.fetch_sub(1, Relaxed);
                        }
                    }
                    "error" => {
                        st.errors += 1;
                        *st.error_codes.entry(f.code.unwrap_or_default()).or_default() += 1;
                        if let Some(i) = pending.iter().position(|(c, _)| Some(c) == f.client_id.as_ref()) {
                            pending.remove(i);
                            outstanding.fetch_sub(1, Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if open {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Ws::Close(None))).await;
    }
    st
}

/// Web chat under load: `--conversations` visitor sockets opened and left idle (the
/// server's memory per idle conversation), then `--rate` messages/s spread round-robin
/// over them for `--seconds`, open loop; bot turn latency from each message's send to the
/// bot's first reply message.
async fn chat(args: &[String]) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let url = need(args, "--url")?;
    let admin = need(args, "--admin-token")?;
    let n: usize = arg(args, "--conversations").map_or(Ok(5_000), |v| v.parse())?;
    let rate: f64 = arg(args, "--rate").map_or(Ok(2_000.0), |v| v.parse())?;
    let secs: f64 = arg(args, "--seconds").map_or(Ok(10.0), |v| v.parse())?;
    let concurrency: usize = arg(args, "--open-concurrency").map_or(Ok(200), |v| v.parse())?;
    let server_pid: Option<u32> = arg(args, "--server-pid").map(|v| v.parse()).transpose()?;
    anyhow::ensure!(
        n > 0 && rate > 0.0 && secs > 0.0,
        "conversations, rate and seconds must be positive"
    );

    // Setup: a tenant with faq-bot as the default flow.
    let http = reqwest::Client::new();
    let tenant = new_tenant(&http, &url, &admin, "chat").await?;
    let (key, wkey) = (tenant.key.as_str(), tenant.wkey.as_str());
    let wasm = plugin_wasm("faq-bot")?;
    http.put(format!(
        "{url}/v1/plugins/faq-bot/versions/1.0.0?kind=chatbot-flow&activate=true"
    ))
    .bearer_auth(key)
    .body(wasm)
    .send()
    .await?
    .error_for_status()?;
    http.put(format!("{url}/v1/chat/settings"))
        .bearer_auth(key)
        .json(&serde_json::json!({"default_flow": "faq-bot"}))
        .send()
        .await?
        .error_for_status()?;
    eprintln!("tenant {:?}: faq-bot is the default flow", tenant.id);

    // Idle conversations.
    let rss_before = server_pid.and_then(rss_kib);
    let cpu_before_open = server_pid.and_then(cpu_s);
    let ws_url = url.replacen("http", "ws", 1);
    let t_open = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let (gate, ws_url, wkey) = (gate.clone(), ws_url.clone(), wkey.to_string());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let r = tokio::time::timeout(Duration::from_secs(30), chat_open(&ws_url, &wkey, i))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no ready within 30 s")));
            (i, r)
        });
    }
    let mut sockets: Vec<(usize, ChatSocket)> = Vec::with_capacity(n);
    let mut open_failures: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(r) = opening.join_next().await {
        match r? {
            (i, Ok(ws)) => sockets.push((i, ws)),
            (_, Err(e)) => *open_failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let open_s = t_open.elapsed().as_secs_f64();
    let cpu_opened = server_pid.and_then(cpu_s);
    sockets.sort_by_key(|(i, _)| *i);
    let opened = sockets.len();
    eprintln!(
        "{opened} of {n} conversations open in {open_s:.2} s ({} failed)",
        n - opened
    );
    for (why, count) in &open_failures {
        eprintln!("  {count} x {why}");
    }
    anyhow::ensure!(opened > 0, "no conversation opened");
    // Idle: let the server settle before measuring its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server_pid.and_then(rss_kib);

    // One task per conversation.
    let run_id: u32 = rand::random();
    let outstanding = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut senders = Vec::with_capacity(opened);
    let mut convs = tokio::task::JoinSet::new();
    for (_, ws) in sockets {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        senders.push(tx);
        convs.spawn(chat_conversation(ws, rx, run_id, outstanding.clone()));
    }

    // Open loop: message k is due at start + k / rate, to conversation k mod opened.
    let total = (rate * secs).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let cpu_before_load = server_pid.and_then(cpu_s);
    let commits_before = commit_stats(&url, &admin).await;
    for seq in 0..total {
        let due = start + interval.mul_f64(seq as f64);
        tokio::time::sleep_until(due.into()).await;
        let _ = senders[(seq % opened as u64) as usize].send(ChatSend { seq, due });
    }
    let driven_s = start.elapsed().as_secs_f64();
    // Outstanding replies: at most 10 s.
    let wait_until = Instant::now() + Duration::from_secs(10);
    tokio::time::sleep(Duration::from_millis(50)).await;
    while outstanding.load(Relaxed) > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unanswered_at_end = outstanding.load(Relaxed).max(0);
    let cpu_after_load = server_pid.and_then(cpu_s);
    let answered_s = start.elapsed().as_secs_f64();
    drop(senders);
    let mut all = ChatStats::default();
    let mut closed = 0u64;
    let mut close_reasons: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(r) = convs.join_next().await {
        let s = r?;
        all.latencies.extend(s.latencies);
        all.lag.extend(s.lag);
        all.ack_latencies.extend(s.ack_latencies);
        all.sent += s.sent;
        all.send_failed += s.send_failed;
        all.overlapped += s.overlapped;
        all.acks += s.acks;
        all.errors += s.errors;
        all.no_reply += s.no_reply;
        all.last_reply = all.last_reply.max(s.last_reply);
        for (c, k) in s.error_codes {
            *all.error_codes.entry(c).or_default() += k;
        }
        if s.closed {
            closed += 1;
            *close_reasons
                .entry(s.close_reason.unwrap_or_default())
                .or_default() += 1;
        }
    }
    let rss_end = server_pid.and_then(rss_kib);
    all.latencies.sort_unstable();
    all.lag.sort_unstable();
    all.ack_latencies.sort_unstable();
    let replied = all.latencies.len() as u64;
    // What the server kept up with: bot replies per second from the first scheduled send
    // to the last reply (the offered rate when it keeps up; its throughput when it does
    // not, as the replies then trail the schedule).
    let sent_per_s = all.sent as f64 / driven_s.max(1e-9);
    let achieved = match all.last_reply {
        Some(last) => {
            replied as f64
                / last
                    .saturating_duration_since(start)
                    .as_secs_f64()
                    .max(1e-9)
        }
        None => 0.0,
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let lat = |p: f64| {
        if all.latencies.is_empty() {
            "nan".to_string()
        } else {
            format!("{:.3}", ms(percentile(&all.latencies, p)))
        }
    };
    let mib = |k: Option<u64>| k.map_or("nan".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let per_conv = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:.2}", (a as f64 - b as f64) / opened as f64),
        _ => "nan".to_string(),
    };

    println!("chat: {opened} of {n} conversations open in {open_s:.2} s ({concurrency} opening at a time)");
    println!(
        "  server RSS: {} MiB before, {} MiB with all open and idle ({per_conv} KiB per conversation), {} MiB after the run",
        mib(rss_before),
        mib(rss_after),
        mib(rss_end)
    );
    if let (Some(a), Some(b)) = (cpu_before_open, cpu_opened) {
        println!(
            "  server CPU opening: {:.2} s ({:.3} ms per conversation, {:.0}% of one core)",
            b - a,
            (b - a) * 1000.0 / opened.max(1) as f64,
            (b - a) * 100.0 / open_s
        );
    }
    if let (Some(a), Some(b)) = (cpu_before_load, cpu_after_load) {
        println!(
            "  server CPU sending and answering: {:.2} s in {answered_s:.1} s ({:.3} ms per message, {:.0}% of one core)",
            b - a,
            (b - a) * 1000.0 / all.sent.max(1) as f64,
            (b - a) * 100.0 / answered_s
        );
    }
    println!(
        "  driver: {total} messages scheduled at {rate:.0}/s over {secs} s; sent {} ({sent_per_s:.0}/s), send failures {}, sent while the previous reply was outstanding {}",
        all.sent, all.send_failed, all.overlapped
    );
    println!(
        "  loadgen send lag behind schedule: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(percentile(&all.lag, 50.0)),
        ms(percentile(&all.lag, 99.0)),
        ms(all.lag.last().copied().unwrap_or(0))
    );
    println!(
        "  acks {}, bot replies {replied} ({achieved:.0}/s from the first send to the last reply), acknowledged without a bot reply {}, unanswered at the end {unanswered_at_end}",
        all.acks, all.no_reply
    );
    println!(
        "  bot turn latency (send -> first bot message): p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        lat(50.0),
        lat(90.0),
        lat(99.0),
        lat(99.9),
        lat(100.0)
    );
    println!(
        "  ack latency (send -> ack): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(percentile(&all.ack_latencies, 50.0)),
        ms(percentile(&all.ack_latencies, 99.0)),
        ms(all.ack_latencies.last().copied().unwrap_or(0))
    );
    println!("  error frames {} {:?}", all.errors, all.error_codes);
    println!("  sockets closed before the end {closed} {close_reasons:?}");
    // Disk stalls during the run: every reply waits for its turn's commit round.
    let commits = match (commits_before, commit_stats(&url, &admin).await) {
        (Some(b), Some(a)) => {
            let delta = |k: &str| a[k].as_u64().unwrap_or(0) - b[k].as_u64().unwrap_or(0);
            let slow = delta("slow_rounds");
            println!(
                "  storage commit rounds during the run {}, of {} ms or more {slow}; the slowest since the server started {} ms",
                delta("rounds"),
                weft::store::SLOW_ROUND.as_millis(),
                a["slowest_round_ms"]
            );
            format!(" slow_commits={slow}")
        }
        _ => String::new(),
    };
    println!(
        "RESULT chat conversations={opened} open_s={open_s:.2} rate={rate:.0} sent={} replied={replied} errors={} closed={closed} achieved_per_s={achieved:.0} p50_ms={} p90_ms={} p99_ms={} max_ms={} rss_before_mib={} rss_after_mib={} idle_kib_per_conversation={per_conv}{commits}",
        all.sent,
        all.errors,
        lat(50.0),
        lat(90.0),
        lat(99.0),
        lat(100.0),
        mib(rss_before),
        mib(rss_after),
    );
    Ok(())
}
