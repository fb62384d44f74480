//! The sandbox: tenant and installation isolation, the outbound HTTP allowlist, secrets,
//! imports refused at upload, and a fresh instance per invocation. Each protection comes as
//! a pair: what the plugin may do, and what it may not.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use weft::runtime::bindings::exports::adapter::{SendError, SendOk};
use weft::runtime::{Call, InvokeError, Output, Report};
use weft::samples;
use weft::store::Space;
use weft_tests::{error_code, plugins, TestHost, TestTenant};

/// Invokes and returns the typed output (panics on an invocation error) and the report.
async fn invoke_ok(h: &TestHost, t: &TestTenant, name: &str, call: &Call) -> (Output, Report) {
    let v = h.invoke(t, name, call).await;
    assert!(v["error"].is_null(), "{name} failed: {v}");
    let out: Output = serde_json::from_value(v["output"].clone()).expect("output parses");
    (
        out,
        serde_json::from_value(v["report"].clone()).expect("report parses"),
    )
}

// ---------------------------------------------------------------------------------------
// Tenant and installation isolation
// ---------------------------------------------------------------------------------------

/// A journey step whose context asks the snoop plugin to look up `probes`.
fn probe_call(probes: &[(&str, &str)]) -> Call {
    let probe: Vec<Value> = probes
        .iter()
        .map(|(k, v)| json!({"kind": k, "value": v}))
        .collect();
    let ctx = json!({ "probe": probe }).to_string();
    Call::JourneyStep(samples::step(
        "start",
        weft::runtime::bindings::exports::journey::Trigger::Entered(samples::product_added()),
        &ctx,
        "gold",
    ))
}

/// What the snoop plugin reported: `{"found": [...], "state": ..., "errors": [...]}`.
async fn snoop(h: &TestHost, t: &TestTenant, name: &str, probes: &[(&str, &str)]) -> Value {
    let v = h.invoke(t, name, &probe_call(probes)).await;
    let traits = v["output"]["output"]["Ok"][0]["SetTraits"]
        .as_str()
        .unwrap_or_else(|| panic!("snoop gave no report: {v}"));
    assert_eq!(v["output"]["output"]["Ok"][1]["Exit"], "probed", "{v}");
    serde_json::from_str(traits).unwrap()
}

/// Writes a value under an installation's state key, as `state.set` would store it
/// (`state/<plugin>\0<key>` in the tenant's space).
async fn seed_state(h: &TestHost, t: &TestTenant, plugin: &str, key: &str, value: &Value) {
    let mut k = format!("state/{plugin}").into_bytes();
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    let db = &h.app.state.db;
    db.put(&Space::tenant(&t.id), &k, value.to_string().as_bytes())
        .await
        .unwrap();
    db.commit().await.unwrap();
}

/// Tenant B with profile `user_id:b-1`, the snoop installed, and a `probe` state entry.
async fn tenant_b(h: &TestHost) -> TestTenant {
    let b = h.tenant().await;
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/profiles/user_id:b-1",
            Some(&b.secret),
            r#"{"traits": {"name": "Bảo", "tier": "gold", "email": "bao@b.example"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/profiles/email:bao@b.example",
            Some(&b.secret),
            r#"{"traits": {"name": "Bảo (email)"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.install(
        &b,
        "test-tenant-snoop",
        "journey-rule",
        plugins::TEST_TENANT_SNOOP,
    )
    .await;
    seed_state(
        h,
        &b,
        "test-tenant-snoop",
        "probe",
        &json!({"owner": "tenant-b"}),
    )
    .await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoop_in_another_tenant_sees_nothing_of_tenant_b() {
    let h = TestHost::new().await;
    let b = tenant_b(&h).await;
    let a = h.tenant().await;
    // Same plugin, same installation name, same probed identity: only the tenant differs.
    h.install(
        &a,
        "test-tenant-snoop",
        "journey-rule",
        plugins::TEST_TENANT_SNOOP,
    )
    .await;
    let r = snoop(
        &h,
        &a,
        "test-tenant-snoop",
        &[
            ("user_id", "b-1"),
            ("email", "bao@b.example"),
            ("user_id", "42"),
        ],
    )
    .await;
    assert_eq!(r, json!({"found": [], "state": null, "errors": []}));
    // Tenant A's profile API does not see B's profile either.
    let (s, v) = h
        .request(Method::GET, "/v1/profiles/user_id:b-1", Some(&a.secret), "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // A's snoop is not B's: B's invocation records are untouched.
    let (_, v) = h
        .request(
            Method::GET,
            "/v1/plugins/test-tenant-snoop/invocations",
            Some(&b.secret),
            "",
        )
        .await;
    assert_eq!(v["invocations"], json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoop_in_its_own_tenant_sees_its_profile_and_state() {
    let h = TestHost::new().await;
    let b = tenant_b(&h).await;
    let r = snoop(
        &h,
        &b,
        "test-tenant-snoop",
        &[
            ("user_id", "b-1"),
            ("user_id", "nobody"),
            ("email", "bao@b.example"),
        ],
    )
    .await;
    let found = r["found"].as_array().unwrap();
    assert_eq!(found.len(), 2, "{r}");
    assert_eq!(found[1]["traits"]["name"], "Bảo (email)", "{r}");
    assert_eq!(found[0]["kind"], "user_id");
    assert_eq!(found[0]["value"], "b-1");
    assert_eq!(found[0]["traits"]["name"], "Bảo");
    assert_eq!(found[0]["traits"]["tier"], "gold");
    assert!(
        found[0]["profile_id"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "{r}"
    );
    assert_eq!(r["state"], json!({"owner": "tenant-b"}));
    assert_eq!(r["errors"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_is_private_to_its_installation() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    // Two installations of the snoop in one tenant: only the first has a `probe` entry.
    h.install(&t, "snoop-x", "journey-rule", plugins::TEST_TENANT_SNOOP)
        .await;
    h.install(&t, "snoop-y", "journey-rule", plugins::TEST_TENANT_SNOOP)
        .await;
    seed_state(&h, &t, "snoop-x", "probe", &json!("x's value")).await;
    assert_eq!(snoop(&h, &t, "snoop-x", &[]).await["state"], "x's value");
    assert_eq!(snoop(&h, &t, "snoop-y", &[]).await["state"], Value::Null);
    // Two installations of the counter: each counts its own runs.
    h.install(&t, "wb-x", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    h.install(&t, "wb-y", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let entered = samples::journey_entered();
    for _ in 0..3 {
        invoke_ok(&h, &t, "wb-x", &entered).await;
    }
    let (_, r) = invoke_ok(&h, &t, "wb-y", &entered).await;
    assert_eq!(r.logs[0].message, "test-well-behaved: step start run 1");
    let (_, r) = invoke_ok(&h, &t, "wb-x", &entered).await;
    assert_eq!(r.logs[0].message, "test-well-behaved: step start run 4");
}

// ---------------------------------------------------------------------------------------
// Outbound HTTP allowlist and secrets
// ---------------------------------------------------------------------------------------

/// A fake Zalo OA endpoint on 127.0.0.1 that answers every message with `answer` and keeps
/// what it received.
struct FakeZalo {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

impl FakeZalo {
    async fn start(answer: Value) -> FakeZalo {
        let seen: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/v3.0/oa/message/cs",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let answer = answer.clone();
                log.lock().unwrap().push((
                    headers,
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
                async move { axum::Json(answer) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        FakeZalo { addr, seen }
    }

    fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

const ACCESS_TOKEN: &str = "zalo-access-8f3a2c1d-never-shown";

/// Installs `zalo-oa` pointed at `provider`, with `allowed_hosts` as its allowlist.
async fn zalo(
    h: &TestHost,
    t: &TestTenant,
    provider: SocketAddr,
    allowed_hosts: &[String],
) -> Value {
    h.install(t, "zalo-oa", "channel-adapter", plugins::ZALO_OA)
        .await;
    let body = json!({
        "config": {"api_base": format!("http://{provider}"), "oa_id": "oa-1"},
        "secrets": {"access_token": ACCESS_TOKEN},
        "allowed_hosts": allowed_hosts,
    });
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/plugins/zalo-oa/config",
            Some(&t.secret),
            body.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn send(h: &TestHost, t: &TestTenant) -> Result<SendOk, SendError> {
    match invoke_ok(h, t, "zalo-oa", &samples::adapter_send("Xin chào Lan"))
        .await
        .0
    {
        Output::AdapterSend(r) => r,
        other => panic!("unexpected output {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_reaches_an_allowlisted_provider_with_its_access_token() {
    let provider =
        FakeZalo::start(json!({"error": 0, "message": "Success", "data": {"message_id": "m1"}}))
            .await;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    zalo(&h, &t, provider.addr, &[provider.addr.to_string()]).await;
    let ok = send(&h, &t).await.expect("send accepted");
    assert_eq!(ok.provider_message_id, "m1");
    assert_eq!(ok.accepted_at, samples::NOW_MS, "the host clock");
    let seen = provider.requests();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers["access_token"], ACCESS_TOKEN);
    assert_eq!(body["recipient"]["user_id"], "zalo-user-1");
    assert_eq!(body["message"]["text"], "Xin chào Lan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_cannot_reach_a_host_missing_from_the_allowlist() {
    let provider = FakeZalo::start(json!({"error": 0, "data": {"message_id": "m1"}})).await;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    // Another host, and the right host on another port: neither allows the provider.
    let other_port = format!("127.0.0.1:{}", provider.addr.port().wrapping_add(1).max(1));
    zalo(
        &h,
        &t,
        provider.addr,
        &["openapi.zalo.me".into(), other_port, "*.127.0.0.1".into()],
    )
    .await;
    let err = send(&h, &t).await.expect_err("send must fail");
    // `refused(denied)` from outbound-http maps to a permanent send error.
    let SendError::Permanent(msg) = &err else {
        panic!("expected permanent, got {err:?}");
    };
    assert!(
        msg.contains("127.0.0.1") && msg.contains("allowlist"),
        "{msg}"
    );
    assert!(provider.requests().is_empty(), "the provider was reached");
    // With no allowlist at all, the same.
    zalo_config(&h, &t, provider.addr, &[]).await;
    assert!(matches!(send(&h, &t).await, Err(SendError::Permanent(_))));
    assert!(provider.requests().is_empty(), "the provider was reached");
}

async fn zalo_config(h: &TestHost, t: &TestTenant, provider: SocketAddr, allowed_hosts: &[String]) {
    let body = json!({"config": {"api_base": format!("http://{provider}")}, "allowed_hosts": allowed_hosts});
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/plugins/zalo-oa/config",
            Some(&t.secret),
            body.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zalo_expired_token_error_maps_to_auth_expired() {
    let provider =
        FakeZalo::start(json!({"error": -216, "message": "Access token is invalid"})).await;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    zalo(&h, &t, provider.addr, &[provider.addr.to_string()]).await;
    let r = send(&h, &t).await;
    assert!(matches!(r, Err(SendError::AuthExpired)), "{r:?}");
    assert_eq!(provider.requests().len(), 1, "the provider was asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_never_returned_by_the_api() {
    let provider = FakeZalo::start(json!({"error": 0, "data": {"message_id": "m1"}})).await;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let put = zalo(&h, &t, provider.addr, &[provider.addr.to_string()]).await;
    // The plugin can use the secret (the provider got it)...
    send(&h, &t).await.expect("send accepted");
    assert_eq!(provider.requests()[0].0["access_token"], ACCESS_TOKEN);
    // ...but no API answer ever contains it: the config shows the secret's name only.
    let (s, get) = h
        .request(
            Method::GET,
            "/v1/plugins/zalo-oa/config",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get["secrets"], json!(["access_token"]), "{get}");
    assert_eq!(get["config"]["oa_id"], "oa-1", "{get}");
    assert_eq!(
        get["allowed_hosts"],
        json!([provider.addr.to_string()]),
        "{get}"
    );
    let (_, show) = h
        .request(Method::GET, "/v1/plugins/zalo-oa", Some(&t.secret), "")
        .await;
    let (_, list) = h
        .request(Method::GET, "/v1/plugins", Some(&t.secret), "")
        .await;
    let (_, recs) = h
        .request(
            Method::GET,
            "/v1/plugins/zalo-oa/invocations",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(
        recs["invocations"].as_array().map(Vec::len),
        Some(1),
        "{recs}"
    );
    for (what, body) in [
        ("PUT config", &put),
        ("GET config", &get),
        ("GET plugin", &show),
        ("GET plugins", &list),
        ("GET invocations", &recs),
    ] {
        let text = body.to_string();
        assert!(
            !text.contains(ACCESS_TOKEN),
            "{what} leaks the secret: {text}"
        );
        assert!(
            !text.contains("8f3a2c1d"),
            "{what} leaks part of the secret: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Imports and worlds checked at upload
// ---------------------------------------------------------------------------------------

async fn upload(
    h: &TestHost,
    t: &TestTenant,
    name: &str,
    kind: &str,
    wasm: &str,
) -> (StatusCode, Value) {
    h.request(
        Method::PUT,
        &format!("/v1/plugins/{name}/versions/1.0.0?kind={kind}"),
        Some(&t.secret),
        weft_tests::plugin_bytes(wasm),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_importing_wasi_sockets_is_refused() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let (s, v) = upload(
        &h,
        &t,
        "sockets",
        "journey-rule",
        plugins::TEST_FORBIDDEN_IMPORT,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_code(&v), "forbidden_import");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("wasi:sockets/"), "{msg}");
    assert!(msg.contains("journey-rule"), "{msg}");
    // Nothing was stored.
    let (s, _) = h
        .request(Method::GET, "/v1/plugins/sockets", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Obeyed: a plugin importing only granted interfaces (state, log) is accepted.
    let (s, v) = upload(&h, &t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let imports = v["version"]["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("weft:plugin/state")),
        "{v}"
    );
    assert!(
        !imports
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:sockets")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalizer_uploaded_as_journey_rule_is_refused_for_its_missing_export() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let (s, v) = upload(&h, &t, "tier", "journey-rule", plugins::TIER_PERSONALIZE).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_code(&v), "missing_export");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("weft:plugin/journey"), "{msg}");
    assert!(
        msg.contains("weft:plugin/personalize"),
        "the hint names what it does export: {msg}"
    );
    let (s, _) = h
        .request(Method::GET, "/v1/plugins/tier", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Obeyed: the same component as a personalization plugin is accepted and decides.
    h.install(&t, "tier", "personalization", plugins::TIER_PERSONALIZE)
        .await;
    let (out, _) = invoke_ok(&h, &t, "tier", &samples::decide()).await;
    let Output::PersonalizeDecide(Ok(decisions)) = out else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].variant_id, "tier-gold");
}

// ---------------------------------------------------------------------------------------
// A fresh instance per invocation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_starts_a_fresh_instance_while_host_state_persists() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let call = samples::journey_entered();
    let (_, first) = invoke_ok(&h, &t, "wb", &call).await;
    let (_, second) = invoke_ok(&h, &t, "wb", &call).await;
    // Host state (the `runs` counter) carries over...
    assert_eq!(first.logs[0].message, "test-well-behaved: step start run 1");
    assert_eq!(
        second.logs[0].message,
        "test-well-behaved: step start run 2"
    );
    // ...guest memory does not: the second call starts from the same initial memory and
    // runs exactly the same instructions (a reused instance would find its heap in use).
    assert_eq!(first.peak_memory_bytes, second.peak_memory_bytes);
    assert_eq!(first.instructions, second.instructions);
    assert_eq!(first.hostcalls, second.hostcalls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_instance_leaves_nothing_behind() {
    // 8 MiB to keep it quick; a long deadline so the cap, not the clock, stops it.
    let h = TestHost::with_config(|c| {
        c.runtime.journey_rule.memory_bytes = 8 * 1024 * 1024;
        c.runtime.journey_rule.deadline_ms = 2_000;
    })
    .await;
    let t = h.tenant().await;
    h.install(&t, "oom", "journey-rule", plugins::TEST_OOM)
        .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let v = h.invoke(&t, "oom", &samples::journey_entered()).await;
        let e: InvokeError = serde_json::from_value(v["error"].clone()).unwrap();
        let r: Report = serde_json::from_value(v["report"].clone()).unwrap();
        seen.push((e, r.instructions, r.peak_memory_bytes));
    }
    // The second run grows from scratch to the same cap: memory filled by the first is gone.
    assert!(
        matches!(seen[0].0, InvokeError::MemoryLimit { cap: 8_388_608, .. }),
        "{seen:?}"
    );
    assert_eq!(seen[0], seen[1]);
}
