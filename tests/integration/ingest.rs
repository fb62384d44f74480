//! Segment-compatible ingestion and unified profiles: auth, limits, dedup, clock skew,
//! partial batches, identity resolution and merges, computed traits, history paging and
//! erasure — all through the real router, the real processor and sled.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft_tests::{error_code, TestHost, TestTenant};

/// `receivedAt` of every test event: the test host's manual clock.
const NOW: i64 = weft::samples::NOW_MS;

async fn host() -> (TestHost, TestTenant) {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    (h, t)
}

async fn ok(h: &TestHost, t: &TestTenant, call: &str, body: Value) -> Value {
    let (s, v) = h.segment(t, call, &body).await;
    assert_eq!(s, StatusCode::OK, "{call} {body}: {v}");
    assert_eq!(v["success"], true, "{v}");
    v
}

async fn profile(h: &TestHost, t: &TestTenant, id: &str) -> Value {
    h.get_ok(t, &format!("/v1/profiles/{id}")).await
}

async fn missing(h: &TestHost, t: &TestTenant, id: &str) {
    let (s, v) = h
        .request(
            Method::GET,
            &format!("/v1/profiles/{id}"),
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{id}: {v}");
}

fn kinds(view: &Value) -> Vec<String> {
    view["profile"]["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["kind"].as_str().unwrap(),
                i["value"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_with_basic_auth_is_acknowledged_processed_and_in_the_360_view() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "track",
        json!({"userId": "42", "event": "Product Viewed",
        "properties": {"sku": "A1"}, "messageId": "m-1"}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:42").await;
    assert_eq!(kinds(&v), ["user_id:42"]);
    assert_eq!(v["events"]["Product Viewed"]["total"], 1);
    assert_eq!(v["events"]["Product Viewed"]["last_7_days"], 1);
    assert_eq!(v["recent_events"][0]["event"], "Product Viewed");
    assert_eq!(v["recent_events"][0]["properties"]["sku"], "A1");
    assert_eq!(v["recent_events"][0]["received_at"], NOW);
    assert_eq!(v["profile"]["computed"]["first_seen"], NOW);
    for key in ["audiences", "journeys", "deliveries", "merges"] {
        assert!(v[key].is_array(), "{key}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_call_and_import_is_accepted() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "identify",
        json!({"userId": "u1", "traits": {"name": "Lan"}}),
    )
    .await;
    ok(&h, &t, "page", json!({"userId": "u1", "name": "Home"})).await;
    ok(&h, &t, "screen", json!({"userId": "u1", "name": "Cart"})).await;
    ok(&h, &t, "group", json!({"userId": "u1", "groupId": "g1"})).await;
    ok(
        &h,
        &t,
        "alias",
        json!({"userId": "u1", "previousId": "anon-1"}),
    )
    .await;
    ok(
        &h,
        &t,
        "import",
        json!({"batch": [{"type": "track", "userId": "u1", "event": "X"}]}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:u1").await;
    assert_eq!(v["profile"]["traits"]["name"], "Lan");
    assert_eq!(v["events"]["Page Viewed"]["total"], 1);
    assert_eq!(v["events"]["Screen Viewed"]["total"], 1);
    assert_eq!(v["events"]["X"]["total"], 1);
    let page = h
        .get_ok(&t, "/v1/profiles/user_id:u1/events?limit=200")
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 6, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_key_in_the_body_or_as_bearer_is_accepted() {
    let (h, t) = host().await;
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/track",
            None,
            json!({"writeKey": t.write, "userId": "1", "event": "A"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/track",
            Some(&t.write),
            json!({"userId": "1", "event": "B"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.drain(&t).await;
    assert_eq!(
        profile(&h, &t, "user_id:1").await["events"]["B"]["total"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_or_secret_keys_are_refused_and_nothing_is_stored() {
    let (h, t) = host().await;
    let other = h.tenant().await;
    let body = json!({"userId": "1", "event": "A"}).to_string();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing_credentials"),
        (
            vec![("authorization", "Basic !!!".into())],
            "malformed_credentials",
        ),
        (
            vec![("authorization", "Digest abc".into())],
            "malformed_credentials",
        ),
        (
            vec![("authorization", format!("Bearer {}", t.secret))],
            "malformed_credentials",
        ),
        (
            vec![(
                "authorization",
                "Bearer wwk_00000000000000000000000000000000".into(),
            )],
            "invalid_credentials",
        ),
    ];
    for (headers, code) in cases {
        let (s, v) = h
            .request_with(Method::POST, "/v1/track", &headers, body.clone())
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}: {v}");
        assert_eq!(error_code(&v), code, "{headers:?}: {v}");
    }
    // The other tenant's key stores into the other tenant only.
    ok(&h, &other, "track", json!({"userId": "1", "event": "A"})).await;
    h.drain(&t).await;
    h.drain(&other).await;
    missing(&h, &t, "user_id:1").await;
    profile(&h, &other, "user_id:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_single_events_get_400_naming_the_problem_and_nothing_is_stored() {
    let (h, t) = host().await;
    let big = "x".repeat(33 * 1024);
    let cases = [
        ("track", "{not json".to_string(), "invalid_json"),
        ("track", "[1,2]".to_string(), "invalid_json"),
        ("track", json!({"event": "A"}).to_string(), "missing_id"),
        ("track", json!({"userId": "9"}).to_string(), "missing_field"),
        (
            "track",
            json!({"userId": "9", "event": "A", "timestamp": "yesterday"}).to_string(),
            "invalid_timestamp",
        ),
        (
            "track",
            json!({"userId": "9", "event": "A", "properties": {"big": big}}).to_string(),
            "event_too_large",
        ),
        (
            "track",
            json!({"userId": "null", "event": "A"}).to_string(),
            "blocked_id",
        ),
        ("alias", json!({"userId": "9"}).to_string(), "missing_id"),
        ("group", json!({"userId": "9"}).to_string(), "missing_field"),
    ];
    for (call, body, code) in cases {
        let (s, v) = h
            .request(
                Method::POST,
                &format!("/v1/{call}"),
                Some(&t.write),
                body.clone(),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{call} {}: {v}",
            &body[..body.len().min(80)]
        );
        assert_eq!(error_code(&v), code, "{v}");
    }
    h.drain(&t).await;
    missing(&h, &t, "user_id:9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_id_is_acknowledged_and_stored_once() {
    let (h, t) = host().await;
    let e = json!({"userId": "7", "event": "Order Completed", "messageId": "dup-1",
        "properties": {"revenue": 250000}});
    ok(&h, &t, "track", e.clone()).await;
    ok(&h, &t, "track", e.clone()).await;
    ok(
        &h,
        &t,
        "batch",
        json!({"batch": [
            {"type": "track", "userId": "7", "event": "Order Completed", "messageId": "dup-1"},
            {"type": "track", "userId": "7", "event": "Order Completed", "messageId": "dup-2",
             "properties": {"total": "100000"}},
            {"type": "track", "userId": "7", "event": "Order Completed", "messageId": "dup-2"},
        ]}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:7").await;
    assert_eq!(v["events"]["Order Completed"]["total"], 2, "{v}");
    assert_eq!(v["profile"]["computed"]["orders"], 2);
    assert_eq!(v["profile"]["computed"]["lifetime_revenue"], 350000.0);
    // Another tenant's identical messageId is its own.
    let other = h.tenant().await;
    ok(&h, &other, "track", e).await;
    h.drain(&other).await;
    assert_eq!(
        profile(&h, &other, "user_id:7").await["events"]["Order Completed"]["total"],
        1
    );
}

/// The tenant's dedup marker keys under `prefix`.
async fn marker_keys(h: &TestHost, t: &TestTenant, prefix: &[u8]) -> Vec<String> {
    h.app
        .state
        .db
        .scan_prefix(&weft::store::Space::tenant(&t.id), prefix, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

async fn orders(h: &TestHost, t: &TestTenant) -> Value {
    h.drain(t).await;
    profile(h, t, "user_id:7").await["events"]["Order Completed"]["total"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_repeated_within_the_dedup_window_is_ignored_across_sweeps() {
    let (h, t) = host().await;
    let e = json!({"userId": "7", "event": "Order Completed", "messageId": "win-1"});
    ok(&h, &t, "track", e.clone()).await;
    // Just inside the window, past a bucket boundary, with a sweep in between.
    h.clock
        .advance(weft::store::markers::MESSAGE_IDS.window_ms - 1);
    h.app.state.ingest.expire_markers().await.unwrap();
    ok(&h, &t, "track", e.clone()).await;
    assert_eq!(orders(&h, &t).await, 1);
    assert_eq!(marker_keys(&h, &t, b"dd/").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_markers_expire_after_two_windows_so_the_store_does_not_grow_forever() {
    let (h, t) = host().await;
    let e = json!({"userId": "7", "event": "Order Completed", "messageId": "win-2"});
    ok(&h, &t, "track", e.clone()).await;
    ok(
        &h,
        &t,
        "batch",
        json!({"batch": (0..50).map(|i| json!({"type": "track", "userId": "7",
            "event": "Page Viewed", "messageId": format!("p-{i}")})).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(marker_keys(&h, &t, b"dd/").await.len(), 51);
    h.clock
        .advance(2 * weft::store::markers::MESSAGE_IDS.window_ms);
    let swept = h.app.state.ingest.expire_markers().await.unwrap();
    assert_eq!(swept.deleted, 51);
    assert!(marker_keys(&h, &t, b"dd/").await.is_empty());
    // Forgotten: the same id is now a new event.
    ok(&h, &t, "track", e).await;
    assert_eq!(orders(&h, &t).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_from_before_dedup_buckets_still_catch_duplicates_and_are_moved() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    // A store written by an older Weft: one marker per messageId, `msg/<id>`.
    h.app
        .state
        .db
        .apply_batch(
            &weft::store::Space::tenant(&t.id),
            vec![weft::store::BatchOp::put(
                b"msg/old-1".to_vec(),
                7u64.to_be_bytes().to_vec(),
            )],
        )
        .await
        .unwrap();
    // On restart, the marker is checked until the start-up sweep has moved it.
    let h = h.restart().await;
    let e = json!({"userId": "7", "event": "Order Completed", "messageId": "old-1"});
    let (s, v) = h.segment(&t, "track", &e).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.app.state.ingest.expire_markers().await.unwrap();
    assert!(marker_keys(&h, &t, b"msg/").await.is_empty());
    assert_eq!(marker_keys(&h, &t, b"dd/").await.len(), 1);
    ok(&h, &t, "track", e).await;
    h.drain(&t).await;
    // Still a duplicate after the move: no profile was ever created for it.
    missing(&h, &t, "user_id:7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_repeating_message_ids_store_each_event_once() {
    let (h, t) = host().await;
    // 24 requests at once carrying 8 distinct messageIds, each three times: the tenant's
    // requests are stored in groups, and a later one in a group sees an earlier's ids.
    let bodies: Vec<Value> = (0..24)
        .map(|i| {
            json!({"userId": "9", "event": "Order Completed", "messageId": format!("cc-{}", i % 8),
                   "properties": {"revenue": 1000}})
        })
        .collect();
    let answers =
        futures_util::future::join_all(bodies.into_iter().map(|b| ok(&h, &t, "track", b))).await;
    assert!(answers.iter().all(|v| v["success"] == true), "{answers:?}");
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:9").await;
    assert_eq!(v["events"]["Order Completed"]["total"], 8, "{v}");
    assert_eq!(v["profile"]["computed"]["lifetime_revenue"], 8000.0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_is_corrected_for_client_clock_skew() {
    let (h, t) = host().await;
    // The client's clock is a day ahead; it sent the batch 2 s after the event.
    let day = 86_400_000;
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    ok(
        &h,
        &t,
        "batch",
        json!({"sentAt": iso(NOW + day), "batch": [
            {"type": "track", "userId": "s", "event": "A", "timestamp": iso(NOW + day - 2_000)}
        ]}),
    )
    .await;
    h.drain(&t).await;
    let page = h.get_ok(&t, "/v1/profiles/user_id:s/events").await;
    let e = &page["events"][0];
    assert_eq!(e["received_at"], NOW);
    assert_eq!(e["timestamp"], NOW - 2_000);
    assert_eq!(e["original_timestamp"], NOW + day - 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_bad_batch_keeps_the_valid_events_and_names_the_rejected() {
    let (h, t) = host().await;
    let big = "x".repeat(33 * 1024);
    let v = ok(
        &h,
        &t,
        "batch",
        json!({"batch": [
            {"type": "track", "userId": "b", "event": "Good 1"},
            {"type": "purchase", "userId": "b"},
            {"type": "track", "event": "No id"},
            {"type": "track", "userId": "b", "event": "Bad time", "timestamp": "soon"},
            {"type": "track", "userId": "b", "event": "Big", "properties": {"x": big}},
            "not an object",
            {"type": "identify", "userId": "b", "traits": {"tier": "gold"}},
        ]}),
    )
    .await;
    let rejected: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "unknown_type".to_string()),
            (2, "missing_id".to_string()),
            (3, "invalid_timestamp".to_string()),
            (4, "event_too_large".to_string()),
            (5, "invalid_event".to_string()),
        ]
    );
    assert!(v["rejected"][0]["message"]
        .as_str()
        .unwrap()
        .contains("purchase"));
    h.drain(&t).await;
    let p = profile(&h, &t, "user_id:b").await;
    assert_eq!(p["events"]["Good 1"]["total"], 1);
    assert_eq!(p["profile"]["traits"]["tier"], "gold");
    assert!(p["events"].get("Big").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_whole() {
    let (h, t) = host().await;
    // Obeyed: a batch just under 500 KB.
    let item = |i: usize| {
        json!({"type": "track", "userId": format!("w{i}"), "event": "E",
        "properties": {"pad": "y".repeat(20_000)}})
    };
    let under: Vec<Value> = (0..24).map(item).collect();
    let body = json!({"batch": under}).to_string();
    assert!(body.len() < 500 * 1024);
    ok(&h, &t, "batch", json!({"batch": under})).await;
    // Violated: over 500 KB.
    let over: Vec<Value> = (0..26).map(item).collect();
    let (s, v) = h.segment(&t, "batch", &json!({"batch": over})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "batch_too_large");
    for (body, code) in [
        (
            json!({"batch": [{"type": "nope", "userId": "1"}]}),
            "no_valid_events",
        ),
        (json!({"events": []}), "missing_field"),
        (json!({"batch": 3}), "invalid_json"),
    ] {
        let (s, v) = h.segment(&t, "batch", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(error_code(&v), code, "{v}");
    }
    h.drain(&t).await;
    missing(&h, &t, "user_id:w25").await;
    profile(&h, &t, "user_id:w23").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_links_anonymous_history_email_and_vietnamese_phone_forms() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "track",
        json!({"anonymousId": "anon-1", "event": "Product Viewed"}),
    )
    .await;
    ok(
        &h,
        &t,
        "identify",
        json!({"anonymousId": "anon-1", "userId": "u-9",
        "traits": {"email": "Lan@Example.com", "phone": "0901 234 567", "name": "Lan"}}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:u-9").await;
    assert_eq!(
        kinds(&v),
        [
            "user_id:u-9",
            "email:lan@example.com",
            "anonymous_id:anon-1",
            "phone:+84901234567"
        ]
    );
    assert_eq!(v["events"]["Product Viewed"]["total"], 1);
    for id in [
        "phone:+84901234567",
        "phone:0901234567",
        "phone:84901234567",
        "email:LAN@example.com",
        "anonymous_id:anon-1",
    ] {
        assert_eq!(
            profile(&h, &t, id).await["profile"]["id"],
            v["profile"]["id"],
            "{id}"
        );
    }
    // Explicit null removes a trait; absent keys keep theirs.
    ok(
        &h,
        &t,
        "identify",
        json!({"userId": "u-9", "traits": {"name": null, "tier": "gold"}}),
    )
    .await;
    h.drain(&t).await;
    let traits = &profile(&h, &t, "user_id:u-9").await["profile"]["traits"];
    assert!(traits.get("name").is_none(), "{traits}");
    assert_eq!(traits["tier"], "gold");
    assert_eq!(traits["email"], "Lan@Example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_profiles_merge_when_an_event_joins_them_and_the_merge_is_logged() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "track",
        json!({"anonymousId": "a1", "event": "Product Viewed", "messageId": "m1"}),
    )
    .await;
    ok(
        &h,
        &t,
        "track",
        json!({"userId": "u1", "anonymousId": "a2", "event": "Product Viewed", "messageId": "m2"}),
    )
    .await;
    h.drain(&t).await;
    let before_a1 = profile(&h, &t, "anonymous_id:a1").await["profile"]["id"].clone();
    let before_u1 = profile(&h, &t, "user_id:u1").await["profile"]["id"].clone();
    assert_ne!(before_a1, before_u1);
    ok(
        &h,
        &t,
        "track",
        json!({"userId": "u1", "anonymousId": "a1", "event": "Cart Viewed", "messageId": "m3"}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "anonymous_id:a1").await;
    // The profile with the user id wins; the anonymous one is merged into it.
    assert_eq!(v["profile"]["id"], before_u1);
    assert_eq!(
        kinds(&v),
        ["user_id:u1", "anonymous_id:a2", "anonymous_id:a1"]
    );
    assert_eq!(v["events"]["Product Viewed"]["total"], 2);
    assert_eq!(v["events"]["Cart Viewed"]["total"], 1);
    assert_eq!(v["merges"][0]["merged"], json!([before_a1]));
    assert_eq!(v["merges"][0]["message_id"], "m3");
    let page = h.get_ok(&t, "/v1/profiles/user_id:u1/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_kiosk_device_never_merges_different_users() {
    let (h, t) = host().await;
    for i in 0..6 {
        ok(
            &h,
            &t,
            "track",
            json!({"userId": format!("user-{i}"), "anonymousId": "kiosk-7",
            "event": "Checkout Started"}),
        )
        .await;
    }
    h.drain(&t).await;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..6 {
        let v = profile(&h, &t, &format!("user_id:user-{i}")).await;
        assert_eq!(v["events"]["Checkout Started"]["total"], 1, "user-{i}: {v}");
        ids.insert(v["profile"]["id"].to_string());
    }
    assert_eq!(ids.len(), 6, "six people, six profiles");
    // The device stays with the first user only.
    assert_eq!(
        kinds(&profile(&h, &t, "anonymous_id:kiosk-7").await),
        ["user_id:user-0", "anonymous_id:kiosk-7"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_anonymous_ids_join_one_profile_and_placeholders_never_do() {
    let (h, t) = host().await;
    for i in 0..6 {
        ok(
            &h,
            &t,
            "track",
            json!({"userId": "many", "anonymousId": format!("dev-{i}"), "event": "A"}),
        )
        .await;
    }
    ok(
        &h,
        &t,
        "track",
        json!({"userId": "0000", "anonymousId": "real-anon", "event": "A"}),
    )
    .await;
    ok(
        &h,
        &t,
        "identify",
        json!({"userId": "many", "traits": {"email": "undefined", "phone": "12"}}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:many").await;
    let k = kinds(&v);
    assert_eq!(
        k.iter().filter(|i| i.starts_with("anonymous_id:")).count(),
        5,
        "{k:?}"
    );
    assert!(!k.contains(&"anonymous_id:dev-5".to_string()));
    assert!(
        !k.iter()
            .any(|i| i.starts_with("email:") || i.starts_with("phone:")),
        "{k:?}"
    );
    // Over the limit, the event still lands on the user's profile.
    assert_eq!(v["events"]["A"]["total"], 6);
    assert_eq!(
        kinds(&profile(&h, &t, "anonymous_id:real-anon").await),
        ["anonymous_id:real-anon"]
    );
    let (s, _) = h
        .request(
            Method::GET,
            "/v1/profiles/user_id:0000",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_moves_anonymous_history_to_the_user() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "track",
        json!({"anonymousId": "visitor-3", "event": "Page Seen"}),
    )
    .await;
    ok(
        &h,
        &t,
        "identify",
        json!({"userId": "lan", "traits": {"tier": "silver"}}),
    )
    .await;
    h.drain(&t).await;
    ok(
        &h,
        &t,
        "alias",
        json!({"previousId": "visitor-3", "userId": "lan"}),
    )
    .await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:lan").await;
    assert_eq!(v["events"]["Page Seen"]["total"], 1);
    assert_eq!(kinds(&v), ["user_id:lan", "anonymous_id:visitor-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_with_a_cursor() {
    let (h, t) = host().await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"type": "track", "userId": "p", "event": format!("E{i}"),
            "timestamp": chrono::DateTime::from_timestamp_millis(NOW - 10_000 + i * 1000).unwrap().to_rfc3339()}))
        .collect();
    ok(&h, &t, "batch", json!({"batch": batch})).await;
    h.drain(&t).await;
    let mut seen = Vec::new();
    let mut url = "/v1/profiles/user_id:p/events?limit=2".to_string();
    loop {
        let page = h.get_ok(&t, &url).await;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["event"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(c) => url = format!("/v1/profiles/user_id:p/events?limit=2&before={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["E4", "E3", "E2", "E1", "E0"]);
    for bad in ["limit=0", "limit=201", "limit=x", "colour=red"] {
        let (s, v) = h
            .request(
                Method::GET,
                &format!("/v1/profiles/user_id:p/events?{bad}"),
                Some(&t.secret),
                "",
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(error_code(&v), "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_the_profile_its_identities_history_and_counts() {
    let (h, t) = host().await;
    ok(
        &h,
        &t,
        "identify",
        json!({"userId": "gone", "anonymousId": "ga", "traits": {"email": "g@x.vn"}}),
    )
    .await;
    ok(
        &h,
        &t,
        "track",
        json!({"userId": "gone", "event": "Order Completed", "properties": {"revenue": 5}}),
    )
    .await;
    h.drain(&t).await;
    let id = profile(&h, &t, "email:g@x.vn").await["profile"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = h.erase_profile(&t, "email:g@x.vn").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for i in ["user_id:gone", "anonymous_id:ga", "email:g@x.vn"] {
        missing(&h, &t, i).await;
    }
    let b = h.app.state.db.backend().clone();
    let sp = weft::store::Space::tenant(&t.id);
    for family in ["event", "stats", "mergelog", "profile"] {
        let left = b
            .scan_prefix(&sp, format!("{family}/{id}").as_bytes(), 10)
            .unwrap();
        assert!(left.is_empty(), "{family} keys left after erasure");
    }
    // A new event after erasure starts a fresh profile with nothing of the old one.
    ok(&h, &t, "track", json!({"userId": "gone", "event": "Back"})).await;
    h.drain(&t).await;
    let v = profile(&h, &t, "user_id:gone").await;
    assert_ne!(v["profile"]["id"], id);
    assert_eq!(v["profile"]["computed"]["orders"], 0);
    assert!(v["profile"]["traits"].as_object().unwrap().is_empty());
}
