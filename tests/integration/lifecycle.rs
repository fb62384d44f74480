//! The registry lifecycle over HTTP: upload, activate, roll back, list and show, delete
//! versions and plugins, configure, and invoke in the states where that is refused.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft_tests::{error_code, plugin_bytes, plugins, TestHost, TestTenant};

async fn upload(
    h: &TestHost,
    t: &TestTenant,
    name: &str,
    version: &str,
    query: &str,
    wasm: &str,
) -> (StatusCode, Value) {
    h.request(
        Method::PUT,
        &format!("/v1/plugins/{name}/versions/{version}{query}"),
        Some(&t.secret),
        plugin_bytes(wasm),
    )
    .await
}

async fn post(h: &TestHost, t: &TestTenant, path: &str) -> (StatusCode, Value) {
    h.request(Method::POST, path, Some(&t.secret), "").await
}

async fn get(h: &TestHost, t: &TestTenant, path: &str) -> Value {
    let (s, v) = h.request(Method::GET, path, Some(&t.secret), "").await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    v
}

async fn try_invoke(
    h: &TestHost,
    t: &TestTenant,
    name: &str,
    call: &weft::runtime::Call,
) -> (StatusCode, Value) {
    h.request(
        Method::POST,
        &format!("/v1/plugins/{name}/invoke"),
        Some(&t.secret),
        serde_json::to_vec(call).unwrap(),
    )
    .await
}

/// The log lines of an invoke response.
fn logs(v: &Value) -> Vec<String> {
    v["report"]["logs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activating_v2_then_rolling_back_runs_v1_and_a_second_rollback_is_409() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let call = weft::samples::journey_entered();
    let (s, v) = upload(
        &h,
        &t,
        "rule",
        "1.0.0",
        "?kind=journey-rule&activate=true",
        plugins::TEST_WELL_BEHAVED,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["active"], "1.0.0");
    assert_eq!(h.invoke(&t, "rule", &call).await["version"], "1.0.0");

    // Uploading v2 without `activate` leaves v1 serving.
    let (s, v) = upload(
        &h,
        &t,
        "rule",
        "2.0.0",
        "?kind=journey-rule",
        plugins::ABANDONED_CART,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("active").is_none(), "{v}");
    assert_eq!(h.invoke(&t, "rule", &call).await["version"], "1.0.0");

    let (s, v) = post(&h, &t, "/v1/plugins/rule/versions/2.0.0/activate").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["plugin"]["active"], "2.0.0");
    assert_eq!(v["plugin"]["previous"], json!(["1.0.0"]));
    let out = h.invoke(&t, "rule", &call).await;
    assert_eq!(out["version"], "2.0.0");
    assert!(
        out["output"]["output"]["Ok"][0]["PatchContext"].is_string(),
        "v2 is the abandoned cart: {out}"
    );

    let (s, v) = post(&h, &t, "/v1/plugins/rule/rollback").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["plugin"]["active"], "1.0.0");
    let out = h.invoke(&t, "rule", &call).await;
    assert_eq!(out["version"], "1.0.0");
    assert!(
        logs(&out)
            .iter()
            .any(|l| l.starts_with("test-well-behaved: step start")),
        "v1 is test-well-behaved: {out}"
    );

    let (s, v) = post(&h, &t, "/v1/plugins/rule/rollback").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "no_previous_version");
    assert_eq!(h.invoke(&t, "rule", &call).await["version"], "1.0.0");
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule").await["plugin"]["active"],
        "1.0.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activating_an_unknown_version_is_404_and_keeps_the_active_one() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, v) = post(&h, &t, "/v1/plugins/rule/versions/9.9.9/activate").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_code(&v), "version_not_found");
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule").await["plugin"]["active"],
        "1.0.0"
    );
    let (s, v) = post(&h, &t, "/v1/plugins/nothing/versions/1.0.0/activate").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_code(&v), "plugin_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_report_plugins_their_versions_and_the_active_one() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    assert_eq!(get(&h, &t, "/v1/plugins").await["plugins"], json!([]));
    h.install(&t, "cart", "journey-rule", plugins::ABANDONED_CART)
        .await;
    let (s, _) = upload(
        &h,
        &t,
        "tiers",
        "0.1.0",
        "?kind=personalization",
        plugins::TIER_PERSONALIZE,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = upload(
        &h,
        &t,
        "tiers",
        "0.2.0",
        "?kind=personalization",
        plugins::TIER_PERSONALIZE,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let list = get(&h, &t, "/v1/plugins").await;
    let mut names: Vec<(String, String, Value)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["kind"].as_str().unwrap().into(),
                p["active"].clone(),
            )
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        vec![
            ("cart".into(), "journey-rule".into(), json!("1.0.0")),
            ("tiers".into(), "personalization".into(), Value::Null),
        ]
    );

    let show = get(&h, &t, "/v1/plugins/tiers").await;
    assert_eq!(show["plugin"]["name"], "tiers");
    let versions = show["versions"].as_array().unwrap();
    let mut vs: Vec<&str> = versions
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    vs.sort();
    assert_eq!(vs, ["0.1.0", "0.2.0"]);
    let bytes = plugin_bytes(plugins::TIER_PERSONALIZE);
    for v in versions {
        assert_eq!(v["kind"], "personalization");
        assert_eq!(
            v["digest"],
            weft::store::sha256_hex(&bytes),
            "digest is the SHA-256 of the upload"
        );
        assert_eq!(v["size_bytes"], bytes.len());
        assert_eq!(v["created_at"], weft::samples::NOW_MS);
        assert!(
            v["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i.as_str().unwrap().starts_with("weft:plugin/")),
            "{v}"
        );
    }
    let (s, v) = h
        .request(Method::GET, "/v1/plugins/nope", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_code(&v), "plugin_not_found");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`nope`"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_active_version_is_409_version_active() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, v) = h
        .request(
            Method::DELETE,
            "/v1/plugins/rule/versions/1.0.0",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "version_active");
    let show = get(&h, &t, "/v1/plugins/rule").await;
    assert_eq!(show["versions"].as_array().unwrap().len(), 1, "{show}");
    assert_eq!(
        h.invoke(&t, "rule", &weft::samples::journey_entered())
            .await["version"],
        "1.0.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_inactive_version_is_204_and_it_is_gone_from_versions_and_rollback() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, _) = upload(
        &h,
        &t,
        "rule",
        "2.0.0",
        "?kind=journey-rule&activate=true",
        plugins::TEST_WELL_BEHAVED,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule").await["plugin"]["previous"],
        json!(["1.0.0"])
    );

    let (s, v) = h
        .request(
            Method::DELETE,
            "/v1/plugins/rule/versions/1.0.0",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(v, Value::Null, "204 has no body");
    let show = get(&h, &t, "/v1/plugins/rule").await;
    let versions: Vec<&str> = show["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2.0.0"]);
    assert_eq!(
        show["plugin"]["previous"],
        json!([]),
        "the deleted version left the rollback stack"
    );

    let (s, v) = post(&h, &t, "/v1/plugins/rule/versions/1.0.0/activate").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "version_not_found"),
        "{v}"
    );
    let (s, v) = post(&h, &t, "/v1/plugins/rule/rollback").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "no_previous_version"),
        "{v}"
    );
    let (s, v) = h
        .request(
            Method::DELETE,
            "/v1/plugins/rule/versions/1.0.0",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "version_not_found"),
        "{v}"
    );
    assert_eq!(
        h.invoke(&t, "rule", &weft::samples::journey_entered())
            .await["version"],
        "2.0.0"
    );

    // The version number is free again (the old record is gone, not hidden).
    let (s, v) = upload(
        &h,
        &t,
        "rule",
        "1.0.0",
        "?kind=journey-rule",
        plugins::ABANDONED_CART,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["version"]["digest"],
        weft::store::sha256_hex(&plugin_bytes(plugins::ABANDONED_CART))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_immutable_reupload_with_different_bytes_is_409_and_the_original_still_runs() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let first = h
        .install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, v) = upload(
        &h,
        &t,
        "rule",
        "1.0.0",
        "?kind=journey-rule&activate=true",
        plugins::TEST_PANIC,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "version_exists");
    let show = get(&h, &t, "/v1/plugins/rule").await;
    assert_eq!(show["versions"].as_array().unwrap().len(), 1);
    assert_eq!(show["versions"][0]["digest"], first["version"]["digest"]);
    assert_eq!(
        show["versions"][0]["digest"],
        weft::store::sha256_hex(&plugin_bytes(plugins::TEST_WELL_BEHAVED))
    );
    let out = h
        .invoke(&t, "rule", &weft::samples::journey_entered())
        .await;
    assert!(
        out["error"].is_null(),
        "the original (well-behaved) version still runs, not the panicking one: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_plugin_removes_its_versions_state_settings_and_invocations() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let other = "keep";
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    h.install(&t, other, "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let settings = json!({"config": {"greeting": "xin chào"}, "secrets": {"token": "s3cret"}, "allowed_hosts": ["api.example.com"]});
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/plugins/rule/config",
            Some(&t.secret),
            settings.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let call = weft::samples::journey_entered();
    h.invoke(&t, "rule", &call).await;
    let out = h.invoke(&t, "rule", &call).await;
    assert!(
        logs(&out).iter().any(|l| l.ends_with("run 2")),
        "state counts runs: {out}"
    );
    h.invoke(&t, other, &call).await;
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule/invocations").await["invocations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (s, v) = h
        .request(Method::DELETE, "/v1/plugins/rule", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = try_invoke(&h, &t, "rule", &call).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "plugin_not_found"),
        "{v}"
    );
    for path in [
        "/v1/plugins/rule",
        "/v1/plugins/rule/config",
        "/v1/plugins/rule/invocations",
    ] {
        let (s, v) = h.request(Method::GET, path, Some(&t.secret), "").await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::NOT_FOUND, "plugin_not_found"),
            "{path}: {v}"
        );
    }
    let (s, v) = h
        .request(Method::DELETE, "/v1/plugins/rule", Some(&t.secret), "")
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "plugin_not_found"),
        "deleting twice: {v}"
    );
    let names: Vec<Value> = get(&h, &t, "/v1/plugins").await["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!(other)]);

    // Re-uploading the name starts from nothing: no settings, no records, fresh state.
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let cfg = get(&h, &t, "/v1/plugins/rule/config").await;
    assert_eq!(
        cfg,
        json!({"config": {}, "secrets": [], "allowed_hosts": []})
    );
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule/invocations").await["invocations"],
        json!([])
    );
    let show = get(&h, &t, "/v1/plugins/rule").await;
    assert_eq!(show["versions"].as_array().unwrap().len(), 1);
    assert_eq!(show["plugin"]["previous"], json!([]));
    let out = h.invoke(&t, "rule", &call).await;
    assert!(
        logs(&out).iter().any(|l| l.ends_with("run 1")),
        "state was deleted with the plugin: {out}"
    );
    let recs = get(&h, &t, "/v1/plugins/rule/invocations").await;
    assert_eq!(recs["invocations"].as_array().unwrap().len(), 1, "{recs}");
    assert_eq!(
        recs["invocations"][0]["seq"], 0,
        "sequence restarts: {recs}"
    );

    // The other plugin kept its state and records.
    let out = h.invoke(&t, other, &call).await;
    assert!(logs(&out).iter().any(|l| l.ends_with("run 2")), "{out}");
    assert_eq!(
        get(&h, &t, &format!("/v1/plugins/{other}/invocations")).await["invocations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_and_get_with_write_only_secrets_and_null_removing_one() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let path = "/v1/plugins/rule/config";
    assert_eq!(
        get(&h, &t, path).await,
        json!({"config": {}, "secrets": [], "allowed_hosts": []})
    );

    let body = json!({
        "config": {"coupon": "GOLD10", "wait": "1h"},
        "secrets": {"api_token": "tok-very-secret-1", "hmac_key": "key-very-secret-2"},
        "allowed_hosts": ["openapi.zalo.me", "*.example.com", "localhost:8443"],
    });
    let (s, v) = h
        .request(Method::PUT, path, Some(&t.secret), body.to_string())
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let expected = json!({
        "config": {"coupon": "GOLD10", "wait": "1h"},
        "secrets": ["api_token", "hmac_key"],
        "allowed_hosts": ["openapi.zalo.me", "*.example.com", "localhost:8443"],
    });
    assert_eq!(v, expected, "PUT answers the view");
    let got = get(&h, &t, path).await;
    assert_eq!(got, expected);
    assert!(
        !got.to_string().contains("very-secret"),
        "secret values are never shown: {got}"
    );

    // config and allowed_hosts are replaced; absent secrets are kept; null removes one.
    let body = json!({"config": {"coupon": "SILVER5"}, "secrets": {"hmac_key": null, "new": "v"}});
    let (s, v) = h
        .request(Method::PUT, path, Some(&t.secret), body.to_string())
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        get(&h, &t, path).await,
        json!({"config": {"coupon": "SILVER5"}, "secrets": ["api_token", "new"], "allowed_hosts": []})
    );

    // An empty document clears config and hosts but keeps secrets.
    let (s, _) = h.request(Method::PUT, path, Some(&t.secret), "{}").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        get(&h, &t, path).await,
        json!({"config": {}, "secrets": ["api_token", "new"], "allowed_hosts": []})
    );

    // Settings on a plugin that does not exist are refused, not created.
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/plugins/ghost/config",
            Some(&t.secret),
            "{}",
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "plugin_not_found"),
        "{v}"
    );
    assert_eq!(
        get(&h, &t, "/v1/plugins").await["plugins"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoking_a_plugin_with_no_active_version_is_409_no_active_version() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    let (s, v) = upload(
        &h,
        &t,
        "rule",
        "1.0.0",
        "?kind=journey-rule",
        plugins::TEST_WELL_BEHAVED,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = try_invoke(&h, &t, "rule", &weft::samples::journey_entered()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "no_active_version");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("activate"),
        "{v}"
    );
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule/invocations").await["invocations"],
        json!([])
    );
    // Activating it makes it invocable.
    let (s, _) = post(&h, &t, "/v1/plugins/rule/versions/1.0.0/activate").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.invoke(&t, "rule", &weft::samples::journey_entered())
            .await["version"],
        "1.0.0"
    );
    let (s, v) = try_invoke(&h, &t, "missing", &weft::samples::journey_entered()).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "plugin_not_found"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoking_with_a_call_of_the_wrong_kind_or_bad_json_is_400_invalid_call() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    for call in [
        weft::samples::decide(),
        weft::samples::chat_turn("hi"),
        weft::samples::adapter_send("hi"),
    ] {
        let (s, v) = try_invoke(&h, &t, "rule", &call).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(error_code(&v), "invalid_call");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("journey-rule plugin"),
            "should name the plugin's kind: {v}"
        );
    }
    for body in ["", "{", "{\"call\":\"nope\",\"input\":{}}", "[]"] {
        let (s, v) = h
            .request(
                Method::POST,
                "/v1/plugins/rule/invoke",
                Some(&t.secret),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body:?}: {v}");
        assert_eq!(error_code(&v), "invalid_call", "{body:?}");
    }
    // None of the refused calls ran the plugin or left a record.
    assert_eq!(
        get(&h, &t, "/v1/plugins/rule/invocations").await["invocations"],
        json!([])
    );
    let out = h
        .invoke(&t, "rule", &weft::samples::journey_entered())
        .await;
    assert!(logs(&out).iter().any(|l| l.ends_with("run 1")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_records_keep_the_newest_across_the_ring_wrap_and_go_on_after_a_restart() {
    use weft::registry::INVOCATION_RECORDS_KEPT as KEPT;
    use weft::store::Space;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rule", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let call = weft::runtime::Call::JourneyDescribe;
    let n = KEPT + 5;
    for _ in 0..n {
        h.invoke(&t, "rule", &call).await;
    }
    let seqs = |v: Value| -> Vec<u64> {
        v["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    let listed = seqs(get(&h, &t, "/v1/plugins/rule/invocations?limit=200").await);
    assert_eq!(listed, (n - 200..n).rev().collect::<Vec<_>>());
    let space = Space::tenant(&t.id);
    let stored = |h: &TestHost| {
        let db = h.app.state.db.clone();
        let space = space.clone();
        async move {
            db.scan_prefix(&space, b"inv/rule/", usize::MAX)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        stored(&h).await.len() as u64,
        KEPT,
        "one slot per kept record"
    );

    // A record under the earlier one-key-per-seq layout, past the ring: moved into its slot
    // at the restart, and numbering goes on after it.
    let old_seq = n + 10;
    let mut record =
        get(&h, &t, "/v1/plugins/rule/invocations?limit=1").await["invocations"][0].clone();
    record["seq"] = json!(old_seq);
    let old_key = format!("inv/rule/{old_seq:016x}");
    h.app
        .state
        .db
        .put(&space, old_key.as_bytes(), record.to_string().as_bytes())
        .await
        .unwrap();
    let h = h.restart().await;
    h.invoke(&t, "rule", &call).await;
    let listed = seqs(get(&h, &t, "/v1/plugins/rule/invocations?limit=3").await);
    assert_eq!(listed, [old_seq + 1, old_seq, n - 1]);
    let rows = stored(&h).await;
    assert_eq!(rows.len() as u64, KEPT);
    assert!(
        rows.iter().all(|(k, _)| k.as_slice() != old_key.as_bytes()),
        "the old-layout key is gone"
    );
}
