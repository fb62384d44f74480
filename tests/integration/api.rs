//! The HTTP API at its edges: every bad upload is refused with a 4xx naming the problem
//! and stores nothing; authentication and the admin token; routing and the error shape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use weft_tests::{error_code, plugin_bytes, plugins, TestHost, TestTenant};

/// Every file under `dir`, recursively (empty if `dir` does not exist).
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// The stored component blobs and compiled artifacts of a host.
fn blob_files(h: &TestHost) -> BTreeSet<PathBuf> {
    let mut f = files_under(&h.path().join("blobs/sha256"));
    f.extend(files_under(&h.path().join("blobs/artifacts")));
    f
}

async fn upload(
    h: &TestHost,
    t: &TestTenant,
    name: &str,
    version: &str,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    h.request(
        Method::PUT,
        &format!("/v1/plugins/{name}/versions/{version}{query}"),
        Some(&t.secret),
        body,
    )
    .await
}

/// Asserts that the tenant has no plugins at all and that no blob or artifact was written
/// since `before` was taken.
async fn assert_nothing_stored(h: &TestHost, t: &TestTenant, before: &BTreeSet<PathBuf>) {
    let (s, v) = h
        .request(Method::GET, "/v1/plugins", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["plugins"],
        json!([]),
        "a refused upload left a plugin record: {v}"
    );
    assert_eq!(
        &blob_files(h),
        before,
        "a refused upload left files in the blob store"
    );
}

/// Sends a request with a raw `Authorization` header value (or none).
async fn raw(
    h: &TestHost,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = weft::api::router(h.app.state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

// ---- uploads ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_non_wasm_bytes_is_422_not_wasm_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    for body in [
        b"hello, this is not wasm".to_vec(),
        Vec::new(),
        b"\0as".to_vec(),
    ] {
        let (s, v) = upload(
            &h,
            &t,
            "cart",
            "1.0.0",
            "?kind=journey-rule&activate=true",
            body.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}: {v}");
        assert_eq!(error_code(&v), "not_wasm");
        assert!(message(&v).contains("not a WebAssembly component"), "{v}");
        assert_nothing_stored(&h, &t, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_core_module_is_422_core_module_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    // The smallest valid core module: magic plus version 1, no sections.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let (s, v) = upload(&h, &t, "cart", "1.0.0", "?kind=journey-rule", core).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_code(&v), "core_module");
    assert!(message(&v).contains("core WebAssembly module"), "{v}");
    assert!(
        message(&v).contains("wasm32-wasip2"),
        "the message should say how to fix it: {v}"
    );
    assert_nothing_stored(&h, &t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_component_for_another_kinds_world_is_422_missing_export_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    let (s, v) = upload(
        &h,
        &t,
        "tiers",
        "1.0.0",
        "?kind=journey-rule",
        plugin_bytes(plugins::TIER_PERSONALIZE),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_code(&v), "missing_export");
    let m = message(&v);
    assert!(
        m.contains("weft:plugin/journey"),
        "should name the missing export: {v}"
    );
    assert!(
        m.contains("personalization"),
        "should hint at the kind it really is: {v}"
    );
    assert_nothing_stored(&h, &t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_size_cap_is_413_component_too_large_and_stores_nothing() {
    let h = TestHost::with_config(|c| c.runtime.max_component_bytes = 100_000).await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    let bytes = plugin_bytes(plugins::ABANDONED_CART);
    assert!(
        bytes.len() > 100_000,
        "the test needs a plugin over the cap"
    );
    let (s, v) = upload(
        &h,
        &t,
        "cart",
        "1.0.0",
        "?kind=journey-rule&activate=true",
        bytes,
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_code(&v), "component_too_large");
    assert!(message(&v).contains("100000"), "should name the limit: {v}");
    assert_nothing_stored(&h, &t, &before).await;
    // A plugin under the cap is still accepted on the same host.
    let small = plugin_bytes(plugins::TEST_WELL_BEHAVED);
    assert!(
        small.len() <= 100_000,
        "test-well-behaved grew past the cap: {}",
        small.len()
    );
    let (s, v) = upload(&h, &t, "ok", "1.0.0", "?kind=journey-rule", small).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_unknown_kind_is_400_unknown_kind_naming_it_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    let (s, v) = upload(
        &h,
        &t,
        "cart",
        "1.0.0",
        "?kind=journey-rules",
        plugin_bytes(plugins::ABANDONED_CART),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "unknown_kind");
    assert!(
        message(&v).contains("`journey-rules`"),
        "should name the unknown kind: {v}"
    );
    assert!(
        message(&v).contains("journey-rule,"),
        "should list the valid kinds: {v}"
    );
    assert_nothing_stored(&h, &t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_without_kind_is_400_missing_kind_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    for query in ["", "?activate=true"] {
        let (s, v) = upload(
            &h,
            &t,
            "cart",
            "1.0.0",
            query,
            plugin_bytes(plugins::ABANDONED_CART),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(error_code(&v), "missing_kind");
        assert!(message(&v).contains("kind"), "{v}");
        assert_nothing_stored(&h, &t, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_existing_version_is_409_version_exists_and_keeps_the_original_record() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let bytes = plugin_bytes(plugins::TEST_WELL_BEHAVED);
    let (s, first) = upload(
        &h,
        &t,
        "wb",
        "1.0.0",
        "?kind=journey-rule&activate=true",
        bytes.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (_, shown_before) = h
        .request(Method::GET, "/v1/plugins/wb", Some(&t.secret), "")
        .await;
    let files_before = blob_files(&h);
    assert!(
        files_before.len() >= 2,
        "expected the component blob and its artifact: {files_before:?}"
    );
    h.clock.advance(60_000);

    // The same bytes again, and other bytes under the same version.
    for body in [bytes.clone(), plugin_bytes(plugins::TEST_PANIC)] {
        let (s, v) = upload(
            &h,
            &t,
            "wb",
            "1.0.0",
            "?kind=journey-rule&activate=true",
            body,
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(error_code(&v), "version_exists");
        assert!(
            message(&v).contains("`1.0.0`") && message(&v).contains("`wb`"),
            "{v}"
        );
        let (s, shown) = h
            .request(Method::GET, "/v1/plugins/wb", Some(&t.secret), "")
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            shown, shown_before,
            "a refused upload changed the plugin or its versions"
        );
        assert_eq!(shown["versions"][0]["digest"], first["version"]["digest"]);
        assert_eq!(blob_files(&h), files_before, "a refused upload wrote blobs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_invalid_plugin_name_is_400_invalid_name_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    let long = "a".repeat(65);
    for name in [
        "Cart",
        "-cart",
        "_cart",
        "my.cart",
        "my%20cart",
        "caf%C3%A9",
        long.as_str(),
    ] {
        let (s, v) = upload(
            &h,
            &t,
            name,
            "1.0.0",
            "?kind=journey-rule&activate=true",
            plugin_bytes(plugins::TEST_WELL_BEHAVED),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}: {v}");
        assert_eq!(error_code(&v), "invalid_name", "{name}");
        assert!(message(&v).contains("invalid plugin name"), "{v}");
        assert_nothing_stored(&h, &t, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_invalid_version_is_400_invalid_version_and_stores_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let before = blob_files(&h);
    let long = "1".repeat(65);
    for version in ["1_0", "1.0%20beta", "1.0~2", "v%C3%A9", long.as_str()] {
        let (s, v) = upload(
            &h,
            &t,
            "cart",
            version,
            "?kind=journey-rule&activate=true",
            plugin_bytes(plugins::TEST_WELL_BEHAVED),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{version}: {v}");
        assert_eq!(error_code(&v), "invalid_version", "{version}");
        assert!(message(&v).contains("invalid version"), "{v}");
        assert_nothing_stored(&h, &t, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_other_kind_onto_existing_plugin_is_409_kind_mismatch() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "p", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let files_before = blob_files(&h);
    let (s, v) = upload(
        &h,
        &t,
        "p",
        "2.0.0",
        "?kind=personalization",
        plugin_bytes(plugins::TIER_PERSONALIZE),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "kind_mismatch");
    let (_, shown) = h
        .request(Method::GET, "/v1/plugins/p", Some(&t.secret), "")
        .await;
    assert_eq!(shown["versions"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(blob_files(&h), files_before);
}

// ---- authentication -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_key_is_401_missing_credentials() {
    let h = TestHost::new().await;
    for (method, path) in [
        (Method::GET, "/v1/plugins"),
        (Method::GET, "/v1/plugins/x"),
        (
            Method::PUT,
            "/v1/plugins/x/versions/1.0.0?kind=journey-rule",
        ),
        (Method::POST, "/v1/plugins/x/invoke"),
        (Method::GET, "/v1/profiles/user_id:1"),
    ] {
        let (s, v) = raw(&h, method.clone(), path, None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
        assert_eq!(error_code(&v), "missing_credentials");
        assert!(message(&v).contains("Authorization"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_header_or_key_is_401_malformed_credentials() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let cases = [
        format!("Basic {}", t.secret),
        "Bearer ".to_string(),
        "Bearer    ".to_string(),
        t.secret.clone(),
        "Bearer wsk_123".to_string(),
        "Bearer sk_live_0123456789abcdef0123456789abcdef".to_string(),
        format!("Bearer {}zz", &t.secret[..t.secret.len() - 2]),
        format!("Bearer {}0", t.secret),
    ];
    for a in &cases {
        let (s, v) = raw(&h, Method::GET, "/v1/plugins", Some(a), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{a:?}: {v}");
        assert_eq!(error_code(&v), "malformed_credentials", "{a:?}");
    }
    // The real key in the same position works.
    let (s, _) = raw(
        &h,
        Method::GET,
        "/v1/plugins",
        Some(&format!("Bearer {}", t.secret)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_but_unknown_key_is_401_invalid_credentials() {
    let h = TestHost::new().await;
    let _t = h.tenant().await;
    for key in [
        "wsk_0123456789abcdef0123456789abcdef",
        "wwk_0123456789abcdef0123456789abcdef",
    ] {
        let (s, v) = h.request(Method::GET, "/v1/plugins", Some(key), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{key}: {v}");
        assert_eq!(error_code(&v), "invalid_credentials");
    }
    // The admin token is not a tenant key either.
    let (s, v) = h
        .request(Method::GET, "/v1/plugins", Some(&h.admin), "")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_key_on_management_api_is_403_wrong_key_kind() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let (s, v) = h
        .request(Method::GET, "/v1/plugins", Some(&t.write), "")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(error_code(&v), "wrong_key_kind");
    assert!(message(&v).contains("secret key"), "{v}");
    let before = blob_files(&h);
    let (s, v) = upload(
        &h,
        &TestTenant {
            secret: t.write.clone(),
            ..t.clone()
        },
        "cart",
        "1.0.0",
        "?kind=journey-rule&activate=true",
        plugin_bytes(plugins::TEST_WELL_BEHAVED),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_nothing_stored(&h, &t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_sees_404_for_a_plugin_and_cannot_touch_it() {
    let h = TestHost::new().await;
    let a = h.tenant().await;
    let b = h.tenant().await;
    h.install(&a, "cart", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let call = serde_json::to_vec(&weft::samples::journey_entered()).unwrap();
    let b_key = Some(b.secret.as_str());

    let (s, v) = h.request(Method::GET, "/v1/plugins", b_key, "").await;
    assert_eq!((s, &v["plugins"]), (StatusCode::OK, &json!([])), "{v}");
    for (method, path, body) in [
        (Method::GET, "/v1/plugins/cart", Vec::new()),
        (Method::POST, "/v1/plugins/cart/invoke", call.clone()),
        (Method::GET, "/v1/plugins/cart/config", Vec::new()),
        (
            Method::PUT,
            "/v1/plugins/cart/config",
            b"{\"config\":{\"x\":\"y\"}}".to_vec(),
        ),
        (Method::GET, "/v1/plugins/cart/invocations", Vec::new()),
        (Method::POST, "/v1/plugins/cart/rollback", Vec::new()),
        (
            Method::POST,
            "/v1/plugins/cart/versions/1.0.0/activate",
            Vec::new(),
        ),
        (
            Method::DELETE,
            "/v1/plugins/cart/versions/1.0.0",
            Vec::new(),
        ),
        (Method::DELETE, "/v1/plugins/cart", Vec::new()),
    ] {
        let (s, v) = h.request(method.clone(), path, b_key, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        assert_eq!(error_code(&v), "plugin_not_found", "{method} {path}");
    }
    // Tenant A's plugin is untouched and still runs with its own (empty) config.
    let v = h
        .invoke(&a, "cart", &weft::samples::journey_entered())
        .await;
    assert_eq!(v["version"], "1.0.0");
    let (s, v) = h
        .request(Method::GET, "/v1/plugins/cart/config", Some(&a.secret), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["config"], json!({}), "{v}");
    // The same name is free in tenant B's namespace.
    let v = h
        .install(&b, "cart", "journey-rule", plugins::ABANDONED_CART)
        .await;
    assert_eq!(v["active"], "1.0.0");
    let (_, va) = h
        .request(Method::GET, "/v1/plugins/cart", Some(&a.secret), "")
        .await;
    let (_, vb) = h
        .request(Method::GET, "/v1/plugins/cart", Some(&b.secret), "")
        .await;
    assert_ne!(va["versions"][0]["digest"], vb["versions"][0]["digest"]);
}

// ---- admin ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_tenant_needs_the_admin_token_and_answers_its_keys() {
    let h = TestHost::new().await;
    let (s, v) = raw(&h, Method::POST, "/v1/tenants", None, "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(error_code(&v), "missing_credentials");
    let (s, v) = raw(&h, Method::POST, "/v1/tenants", Some("Token abc"), "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(error_code(&v), "malformed_credentials");
    let t = h.tenant().await;
    for bad in [
        "wat_00000000000000000000000000000002",
        "nope",
        t.secret.as_str(),
    ] {
        let (s, v) = h
            .request(Method::POST, "/v1/tenants", Some(bad), "{}")
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}: {v}");
        assert_eq!(error_code(&v), "invalid_credentials", "{bad}");
    }

    let (s, v) = h
        .request(
            Method::POST,
            "/v1/tenants",
            Some(&h.admin),
            "{\"name\":\"Acme\"}",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let secret = v["secret_key"].as_str().unwrap();
    let write = v["write_key"].as_str().unwrap();
    assert!(id.starts_with("t_") && id.len() == 18, "{id}");
    assert!(weft::tenants::well_formed(secret, "wsk_"), "{secret}");
    assert!(weft::tenants::well_formed(write, "wwk_"), "{write}");
    assert_eq!(v["name"], "Acme");
    assert_ne!(secret, t.secret);
    // The new secret key works at once.
    let (s, _) = h
        .request(Method::GET, "/v1/plugins", Some(secret), "")
        .await;
    assert_eq!(s, StatusCode::OK);

    // An empty body is fine; a bad one is named.
    let (s, v) = h
        .request(Method::POST, "/v1/tenants", Some(&h.admin), "")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/tenants",
            Some(&h.admin),
            "{\"nmae\":\"x\"}",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "invalid_json");
}

// ---- routing and error shape ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_json_route_not_found() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    for (key, path) in [
        (None, "/nope"),
        (Some(t.secret.as_str()), "/v1/plugin"),
        (None, "/v2/plugins"),
    ] {
        let (s, v) = h.request(Method::GET, path, key, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(error_code(&v), "route_not_found");
        assert!(message(&v).contains(path), "should name the path: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_json_method_not_allowed() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    for (method, path) in [
        (Method::GET, "/v1/tenants"),
        (Method::DELETE, "/v1/plugins"),
        (Method::POST, "/v1/plugins/x/config"),
        (Method::GET, "/v1/plugins/x/invoke"),
        (Method::POST, "/v1/plugins/x/versions/1.0.0"),
    ] {
        let (s, v) = h.request(method.clone(), path, Some(&t.secret), "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {v}");
        assert_eq!(error_code(&v), "method_not_allowed");
        assert!(message(&v).contains(method.as_str()), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_on_config_is_400_invalid_json_and_changes_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "cart", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let good =
        json!({"config": {"a": "1"}, "secrets": {"k": "v"}, "allowed_hosts": ["api.example.com"]});
    let (s, saved) = h
        .request(
            Method::PUT,
            "/v1/plugins/cart/config",
            Some(&t.secret),
            good.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    for body in [
        "",
        "{",
        "not json",
        "[1,2]",
        "{\"config\": {\"a\": 1}}",
        "{\"confg\": {}}",
    ] {
        let (s, v) = h
            .request(
                Method::PUT,
                "/v1/plugins/cart/config",
                Some(&t.secret),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body:?}: {v}");
        assert_eq!(error_code(&v), "invalid_json", "{body:?}");
        let (_, now) = h
            .request(Method::GET, "/v1/plugins/cart/config", Some(&t.secret), "")
            .await;
        assert_eq!(now, saved, "a refused config update changed the settings");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_allowed_host_pattern_is_400_invalid_settings_and_changes_nothing() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "cart", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, saved) = h
        .request(
            Method::PUT,
            "/v1/plugins/cart/config",
            Some(&t.secret),
            json!({"allowed_hosts": ["api.example.com:443", "*.zalo.me"]}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    for bad in [
        "https://api.example.com",
        "api.example.com/path",
        "a b",
        "host:99999",
        "host:",
        "",
        "*.",
        "*",
    ] {
        let body = json!({"config": {"changed": "yes"}, "allowed_hosts": ["ok.example.com", bad]});
        let (s, v) = h
            .request(
                Method::PUT,
                "/v1/plugins/cart/config",
                Some(&t.secret),
                body.to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert_eq!(error_code(&v), "invalid_settings", "{bad:?}");
        assert!(
            message(&v).contains(&format!("`{bad}`")),
            "should name the pattern: {v}"
        );
        let (_, now) = h
            .request(Method::GET, "/v1/plugins/cart/config", Some(&t.secret), "")
            .await;
        assert_eq!(now, saved, "a refused config update changed the settings");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_error_response_does_not_leak_the_detail() {
    let resp =
        weft::api::ApiError::internal("secret detail: /var/lib/weft/sled io error").into_response();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        !text.contains("secret detail") && !text.contains("/var/lib"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_code(&v), "internal");
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "only `error` at the top: {v}"
    );
    assert_eq!(
        v["error"].as_object().unwrap().len(),
        2,
        "only code and message: {v}"
    );

    // Storage failures map to the same opaque shape.
    let e = weft::store::StoreError::Io(std::io::Error::other("secret detail"));
    let resp = weft::api::ApiError::from(e).into_response();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("secret detail"));
}
