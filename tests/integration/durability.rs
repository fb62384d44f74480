//! Restarts and durability: active plugins come back from the compiled-artifact cache
//! without recompiling, a tampered artifact is caught by its HMAC and rebuilt, and an
//! acknowledged write survives `kill -9` of the real server binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use weft::app::App;
use weft_tests::{plugin_bytes, plugins, TestHost, TestTenant, ADMIN};

/// Identity of a file on disk: a rewrite (write-temp-then-rename) changes the inode and
/// the modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    len: u64,
    ino: u64,
    mtime: SystemTime,
}

/// Every compiled artifact under the data directory, with its identity.
fn artifacts(data: &Path) -> BTreeMap<PathBuf, FileId> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data.join("blobs/artifacts")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let m = std::fs::metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "cwasm") {
                out.insert(
                    p,
                    FileId {
                        len: m.len(),
                        ino: m.ino(),
                        mtime: m.modified().unwrap(),
                    },
                );
            }
        }
    }
    out
}

/// Closes the host (keeping its data directory) and opens a new one on the same directory.
async fn restart(h: TestHost) -> TestHost {
    h.restart().await
}

const CALLS: [(&str, &str, &str); 3] = [
    ("cart", "journey-rule", plugins::ABANDONED_CART),
    ("wb", "journey-rule", plugins::TEST_WELL_BEHAVED),
    ("faq", "chatbot-flow", plugins::FAQ_BOT),
];

fn call_for(name: &str) -> weft::runtime::Call {
    match name {
        "faq" => weft::samples::chat_turn("Mấy giờ cửa hàng mở cửa?"),
        _ => weft::samples::journey_entered(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_active_plugins_from_the_artifact_cache_without_recompiling() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let mut compile_us = 0u64;
    let mut before = BTreeMap::new();
    for (name, kind, wasm) in CALLS {
        let v = h.install(&t, name, kind, wasm).await;
        compile_us += v["version"]["ready_us"].as_u64().unwrap();
        let out = h.invoke(&t, name, &call_for(name)).await;
        assert!(out["error"].is_null(), "{name}: {out}");
        before.insert(name, out["output"].clone());
    }
    let cached = artifacts(h.path());
    assert_eq!(cached.len(), 3, "one artifact per component: {cached:?}");

    let h = restart(h).await;
    assert_eq!(h.app.loaded, 3, "every active plugin loads at start");
    // Loading three cached artifacts must be much cheaper than compiling them was.
    assert!(
        h.app.ready_in < Duration::from_micros(compile_us),
        "restart took {:?}, compiling took {compile_us} µs: were the artifacts recompiled?",
        h.app.ready_in
    );
    for (name, _, _) in CALLS {
        let out = h.invoke(&t, name, &call_for(name)).await;
        assert!(out["error"].is_null(), "{name}: {out}");
        assert_eq!(out["version"], "1.0.0");
        if name != "wb" {
            // Deterministic plugins answer exactly as before the restart.
            assert_eq!(out["output"], before[name], "{name}");
        }
    }
    assert_eq!(
        artifacts(h.path()),
        cached,
        "artifacts were rewritten: the restart recompiled"
    );
    // State written before the restart is still there (the counter continues).
    let out = h.invoke(&t, "wb", &call_for("wb")).await;
    let logs = out["report"]["logs"].to_string();
    assert!(logs.contains("run 3"), "{out}");
}

/// A way to damage an artifact file.
type Tamper = (&'static str, fn(&Path));

fn flip_middle_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

fn flip_mac_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    b[3] ^= 0x80;
    std::fs::write(p, b).unwrap();
}

fn truncate(p: &Path) {
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..b.len() / 3]).unwrap();
}

fn remove(p: &Path) {
    std::fs::remove_file(p).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_artifact_is_caught_by_its_hmac_recompiled_and_the_plugin_still_works() {
    let mut h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (path, _) = artifacts(h.path()).into_iter().next().expect("an artifact");
    let original = std::fs::read(&path).unwrap();

    let tampers: [Tamper; 4] = [
        ("flip a code byte", flip_middle_byte),
        ("flip a MAC byte", flip_mac_byte),
        ("truncate", truncate),
        ("delete", remove),
    ];
    let mut runs = 0;
    for (what, tamper) in tampers {
        let TestHost { dir, app, .. } = h;
        drop(app);
        tamper(&path);
        let tampered = std::fs::read(&path).ok();
        assert_ne!(
            tampered.as_deref(),
            Some(&original[..]),
            "{what}: the tamper changed nothing"
        );
        let config = App::test_config(dir.path());
        h = TestHost::open_at(dir, config).await;
        assert_eq!(
            h.app.loaded, 1,
            "{what}: the plugin loads (recompiled) at start"
        );
        let rewritten =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{what}: artifact not rewritten: {e}"));
        assert_ne!(
            Some(&rewritten),
            tampered.as_ref(),
            "{what}: the tampered artifact was accepted"
        );
        assert_eq!(
            rewritten.len(),
            original.len(),
            "{what}: the rewritten artifact has the original's size"
        );
        let out = h.invoke(&t, "wb", &weft::samples::journey_entered()).await;
        runs += 1;
        assert!(out["error"].is_null(), "{what}: {out}");
        assert!(
            out["report"]["logs"]
                .to_string()
                .contains(&format!("run {runs}")),
            "{what}: {out}"
        );
    }
    // The rebuilt artifact is trusted again: the next start loads it without rewriting it.
    let cached = artifacts(h.path());
    let h = restart(h).await;
    assert_eq!(h.app.loaded, 1);
    assert_eq!(
        artifacts(h.path()),
        cached,
        "the rebuilt artifact was not accepted on the next start"
    );
    let out = h.invoke(&t, "wb", &weft::samples::journey_entered()).await;
    assert!(out["error"].is_null(), "{out}");
}

// ---- kill -9 of the real server -----------------------------------------------------------

/// Builds the `weft` binary once (with the same cargo and profile as this test) and
/// returns its path.
/// A running `weft serve`; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `weft serve` on `data` with an OS-chosen port and waits for `/healthz`.
    async fn start(data: &Path, log: &Path) -> Server {
        let bin = weft_tests::weft_bin().to_path_buf();
        let config = data.with_extension("toml");
        // A small pool: the test needs two slots, not the default thousand.
        std::fs::write(&config, "[runtime]\npool_instances = 8\n").unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(&config)
            .env("WEFT_ADMIN_TOKEN", ADMIN)
            .env_remove("WEFT_LISTEN")
            .env_remove("WEFT_DATA_DIR")
            .env_remove("WEFT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .expect("starting weft serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Report the address, then keep draining so the server never blocks on stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("weft listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
        };
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        server.base = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| {
                panic!(
                    "weft serve did not announce its address; log:\n{}",
                    log_text()
                )
            });
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", server.base)).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered; log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no graceful shutdown, no flush.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the server was not killed by SIGKILL: {status:?}"
        );
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
    let r = req.send().await.expect("request to weft serve");
    let s = r.status();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a tenant on the running server.
async fn create_tenant(http: &reqwest::Client, server: &Server) -> TestTenant {
    let (s, v) = send(
        http.post(server.url("/v1/tenants"))
            .bearer_auth(ADMIN)
            .body("{\"name\":\"acme\"}"),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    TestTenant {
        id: v["id"].as_str().unwrap().into(),
        secret: v["secret_key"].as_str().unwrap().into(),
        write: v["write_key"].as_str().unwrap().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let http = client();

    let server = Server::start(&data, &log).await;
    let t = create_tenant(&http, &server).await;
    let (s, v) = send(
        http.put(server.url("/v1/plugins/cart/versions/1.0.0?kind=journey-rule&activate=true"))
            .bearer_auth(&t.secret)
            .body(plugin_bytes(plugins::ABANDONED_CART)),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    assert_eq!(v["active"], "1.0.0");
    let digest = v["version"]["digest"].clone();
    let (s, v) = send(
        http.put(server.url("/v1/plugins/cart/config"))
            .bearer_auth(&t.secret)
            .body(json!({"config": {"coupon": "GOLD10"}, "secrets": {"token": "x"}}).to_string()),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let (s, v) = send(
        http.put(server.url("/v1/profiles/user_id:42"))
            .bearer_auth(&t.secret)
            .body(json!({"traits": {"tier": "gold", "name": "Lan"}}).to_string()),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    // Every write above was acknowledged; kill at once, with no chance to flush.
    server.kill_9();

    let server = Server::start(&data, &log).await;
    let (s, v) = send(http.get(server.url("/v1/plugins")).bearer_auth(&t.secret)).await;
    assert_eq!(
        s,
        reqwest::StatusCode::OK,
        "the tenant key no longer works: {v}"
    );
    assert_eq!(v["plugins"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["plugins"][0]["name"], "cart");
    assert_eq!(v["plugins"][0]["active"], "1.0.0");
    let (s, v) = send(
        http.get(server.url("/v1/plugins/cart"))
            .bearer_auth(&t.secret),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["versions"][0]["digest"], digest);
    let call = serde_json::to_vec(&weft::samples::journey_entered()).unwrap();
    let (s, v) = send(
        http.post(server.url("/v1/plugins/cart/invoke"))
            .bearer_auth(&t.secret)
            .body(call),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["version"], "1.0.0");
    assert!(v["error"].is_null(), "{v}");
    assert!(
        v["output"]["output"]["Ok"][0]["PatchContext"].is_string(),
        "{v}"
    );
    let (s, v) = send(
        http.get(server.url("/v1/plugins/cart/config"))
            .bearer_auth(&t.secret),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["config"], json!({"coupon": "GOLD10"}));
    assert_eq!(v["secrets"], json!(["token"]));
    let (s, v) = send(
        http.get(server.url("/v1/profiles/user_id:42"))
            .bearer_auth(&t.secret),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "the profile was lost: {v}");
    assert_eq!(v["profile"]["traits"]["tier"], "gold");
    assert_eq!(v["profile"]["traits"]["name"], "Lan");
    // The write key survived too (it authenticates, with the right kind of refusal).
    let (s, _) = send(http.get(server.url("/v1/plugins")).bearer_auth(&t.write)).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN);
    drop(server);
}

/// Every event answered `{"success": true}` is there after `kill -9`, even when the kill
/// lands while other requests are still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_mid_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let http = client();

    let server = Server::start(&data, &log).await;
    let t = create_tenant(&http, &server).await;
    let (secret, write) = (t.secret, t.write);

    // Four senders post events as fast as they can; each remembers what was acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4u32 {
        let (http, url, write) = (http.clone(), server.url("/v1/track"), write.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = w * 1_000_000 + i;
                i += 1;
                let body = json!({"userId": format!("k{n}"), "event": "Product Added",
                    "messageId": format!("m{n}")});
                let r = http
                    .post(&url)
                    .basic_auth(&write, Some(""))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => acked.lock().unwrap().push(n),
                    _ => break,
                }
            }
        }));
    }
    // Let some events through, then kill with requests in flight.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 200 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "only {} events acknowledged",
        acked.len()
    );

    let server = Server::start(&data, &log).await;
    // The processor resumes the queue after the restart; every acknowledged event arrives.
    for n in &acked {
        let url = server.url(&format!("/v1/profiles/user_id:k{n}/events"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, v) = send(http.get(&url).bearer_auth(&secret)).await;
            if s == reqwest::StatusCode::OK {
                assert_eq!(v["events"][0]["message_id"], format!("m{n}"), "{v}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged event m{n} lost after kill -9 ({s}: {v})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
