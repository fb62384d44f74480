//! Helpers for Weft's integration tests: plugin paths, a test host on a temp data
//! directory, and an HTTP client that drives the real router with `oneshot`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use weft::app::App;
use weft::clock::{ManualClock, SharedClock};
use weft::config::Config;

/// Paths of the plugins built from `plugins/`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/gen.rs"));
}

/// The bytes of a built plugin, e.g. `plugin_bytes(plugins::ABANDONED_CART)`.
pub fn plugin_bytes(path: &str) -> Vec<u8> {
    if plugins::SKIPPED {
        panic!("plugins were not built (WEFT_SKIP_PLUGIN_BUILD=1)");
    }
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A host on a temporary data directory, with a manual clock.
pub struct TestHost {
    /// The data directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The app.
    pub app: App,
    /// The manual clock.
    pub clock: Arc<ManualClock>,
    /// The admin token.
    pub admin: String,
}

/// An event processor held back by [`TestHost::hold_processor`]; dropping it lets the
/// processor go on.
pub struct ProcessorHold {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProcessorHold {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tenant's id and keys.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// Id.
    pub id: String,
    /// Secret key.
    pub secret: String,
    /// Write key.
    pub write: String,
}

/// Admin token used by test hosts.
pub const ADMIN: &str = "wat_00000000000000000000000000000001";

impl TestHost {
    /// A new host with default limits.
    pub async fn new() -> TestHost {
        TestHost::with_config(|_| {}).await
    }

    /// A new host after `tweak` adjusts the configuration.
    pub async fn with_config(tweak: impl FnOnce(&mut Config)) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let mut config = App::test_config(dir.path());
        tweak(&mut config);
        TestHost::open_at(dir, config).await
    }

    /// Opens a host on an existing directory (to test restarts).
    pub async fn open_at(dir: tempfile::TempDir, config: Config) -> TestHost {
        let clock = ManualClock::new(weft::samples::NOW_MS);
        let shared: SharedClock = clock.clone();
        let app = App::open_with_clock(&config, shared).await.unwrap();
        weft::tenants::ensure_admin_token(&app.state.db, Some(ADMIN))
            .await
            .unwrap();
        TestHost {
            dir,
            app,
            clock,
            admin: ADMIN.to_string(),
        }
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one request through the router; returns the status and the JSON body
    /// (`Value::Null` when empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let headers: Vec<(&str, String)> = key
            .map(|k| ("authorization", format!("Bearer {k}")))
            .into_iter()
            .collect();
        self.request_with(method, path, &headers, body).await
    }

    /// Creates a tenant through the API.
    pub async fn tenant(&self) -> TestTenant {
        let (s, v) = self
            .request(
                Method::POST,
                "/v1/tenants",
                Some(&self.admin),
                "{\"name\":\"t\"}",
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        TestTenant {
            id: v["id"].as_str().unwrap().into(),
            secret: v["secret_key"].as_str().unwrap().into(),
            write: v["write_key"].as_str().unwrap().into(),
        }
    }

    /// Uploads (and activates) a plugin; panics unless it is accepted.
    pub async fn install(&self, t: &TestTenant, name: &str, kind: &str, wasm_path: &str) -> Value {
        let (s, v) = self
            .request(
                Method::PUT,
                &format!("/v1/plugins/{name}/versions/1.0.0?kind={kind}&activate=true"),
                Some(&t.secret),
                plugin_bytes(wasm_path),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Sends a Segment call (`track`, `batch`, …) with the write key as HTTP Basic user name,
    /// as Segment's libraries do; returns the status and JSON body.
    pub async fn segment(&self, t: &TestTenant, call: &str, body: &Value) -> (StatusCode, Value) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:", t.write));
        self.request_with(
            Method::POST,
            &format!("/v1/{call}"),
            &[("authorization", format!("Basic {auth}"))],
            body.to_string(),
        )
        .await
    }

    /// Waits until every event the tenant sent has been processed.
    pub async fn drain(&self, t: &TestTenant) {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.app.state.ingest.processor().drain(&t.id),
        )
        .await
        .expect("events were not processed within 30 s")
        .unwrap();
    }

    /// Erases the profile `who` (`user_id:lan`, `anonymous_id:a-1`) through the API
    /// (right to erasure) and answers the status.
    pub async fn erase_profile(&self, t: &TestTenant, who: &str) -> StatusCode {
        let path = format!("/v1/profiles/{who}");
        self.request(Method::DELETE, &path, Some(&t.secret), Body::empty())
            .await
            .0
    }

    /// Holds `t`'s event processor back, as a backlog would, until the answer is dropped:
    /// events are accepted and queued but not applied to profiles meanwhile.
    pub async fn hold_processor(&self, t: &TestTenant) -> ProcessorHold {
        let lock = self.app.state.ingest.processor().tenant_lock(&t.id);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, holding) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let _held = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = held.send(());
            let _ = released.recv();
        });
        holding.await.expect("the holding thread took the lock");
        ProcessorHold {
            release: Some(release),
            thread: Some(thread),
        }
    }

    /// Runs everything due now to completion: event processing, due timers, journey steps,
    /// and the events those steps emit, until nothing is left.
    pub async fn settle(&self, t: &TestTenant) {
        let journeys = &self.app.state.journeys;
        let processor = self.app.state.ingest.processor().clone();
        let tenant = t.id.clone();
        tokio::task::spawn_blocking(move || processor.sweep_audiences(&tenant))
            .await
            .unwrap()
            .unwrap();
        let deliveries = &self.app.state.deliveries;
        for _ in 0..1_000 {
            self.drain(t).await;
            let fired = journeys.fire_due().await.unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while journeys.busy(&t.id).await.unwrap() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "journey work never finished"
                );
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let queued = !self
                .app
                .state
                .db
                .scan_prefix(&weft::store::Space::tenant(&t.id), b"q/", 1)
                .await
                .unwrap()
                .is_empty();
            let mut sending = false;
            while deliveries.busy(&t.id).await.unwrap() {
                sending = true;
                deliveries.wake(&t.id);
                assert!(
                    std::time::Instant::now() < deadline,
                    "delivery work never finished"
                );
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            if fired == 0 && !queued && !sending {
                return;
            }
        }
        panic!("work kept coming for 1,000 rounds");
    }

    /// Moves the manual clock forward by `ms` and settles everything that became due.
    pub async fn advance(&self, t: &TestTenant, ms: i64) {
        self.clock.advance(ms);
        self.settle(t).await;
    }

    /// GET with the tenant's secret key; panics unless 200.
    pub async fn get_ok(&self, t: &TestTenant, path: &str) -> Value {
        let (s, v) = self
            .request(Method::GET, path, Some(&t.secret), Body::empty())
            .await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Closes the host, keeping its data directory, and opens a new one on it.
    pub async fn restart(self) -> TestHost {
        let TestHost { dir, app, .. } = self;
        drop(app);
        let config = App::test_config(dir.path());
        TestHost::open_at(dir, config).await
    }

    /// Sends one request with arbitrary headers; returns the whole response (for headers).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> axum::response::Response {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        weft::api::router(self.app.state.clone())
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap()
    }

    /// Sends one request with arbitrary headers.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = weft::api::router(self.app.state.clone())
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, v)
    }

    /// Invokes an installed plugin with a call; returns the response JSON.
    pub async fn invoke(&self, t: &TestTenant, name: &str, call: &weft::runtime::Call) -> Value {
        let (s, v) = self
            .request(
                Method::POST,
                &format!("/v1/plugins/{name}/invoke"),
                Some(&t.secret),
                serde_json::to_vec(call).unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

/// Asserts the stable error shape and returns the code.
pub fn error_code(v: &Value) -> &str {
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"));
    assert!(
        v["error"]["message"].is_string(),
        "error without message: {v}"
    );
    code
}

/// The `weft` binary of this build profile, built once per test run.
pub fn weft_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test binary lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "weft",
            "--bin",
            "weft",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
        // `cargo test` runs this process with the package's OUT_DIR, CARGO_MANIFEST_DIR,
        // CARGO_PKG_*… set. Build scripts watch some of them (ring's `rerun-if-env-changed`),
        // so passing them on would rebuild ring, rustls, reqwest and weft here, and again on
        // the next `cargo test`. Without them this build sees what a shell's `cargo` sees.
        for (k, _) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || matches!(
                    k,
                    "OUT_DIR"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_BIN_NAME"
                        | "CARGO_RUSTC_CURRENT_DIR"
                )
            {
                cmd.env_remove(k);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build -p weft --bin weft failed");
        let bin = profile_dir.join(format!("weft{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// Headless Chromium for the browser tests (Debian's `chromium`, which `.ci/run` installs).
pub mod browser {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    /// The browser's path, or `None` outside CI when it is not installed (the test `name`
    /// prints SKIPPED); in CI a missing browser fails the test.
    pub fn chromium(name: &str) -> Option<String> {
        let path = std::env::var("WEFT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if std::path::Path::new(&path).exists() {
            return Some(path);
        }
        if std::env::var_os("CI").is_some() {
            panic!("{path} is missing: .ci/run installs Debian's `chromium` package for this test");
        }
        eprintln!("SKIPPED {name}: {path} is missing (apt-get install chromium); CI runs it");
        None
    }

    /// A headless browser on one page, with a throwaway profile. Dropping it kills the
    /// browser's whole process group (renderers and zygotes too).
    pub struct Browser {
        child: std::process::Child,
        _profile: tempfile::TempDir,
    }

    impl Browser {
        /// Opens `url` in `chromium` with a desktop viewport.
        pub fn open(chromium: &str, url: &str) -> Browser {
            let profile = tempfile::tempdir().unwrap();
            let child = std::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    // Containers often have a tiny /dev/shm.
                    "--disable-dev-shm-usage",
                    // A desktop viewport, so pages report device_type "desktop".
                    "--window-size=1280,900",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(url)
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromium");
            Browser {
                child,
                _profile: profile,
            }
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
        }
    }
}
