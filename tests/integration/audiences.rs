//! Audiences through the real router, processor and sled: definition with a synchronous
//! backfill, list, count, members paging, delete, bad input and limits.
//!
//! The last section tests membership kept current as events arrive, erasure and the 360
//! view; those need the event processor to call the audience engine.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft_tests::{error_code, TestHost, TestTenant};

/// The test host's manual clock.
const NOW: i64 = weft::samples::NOW_MS;
/// One day in ms.
const DAY: i64 = 86_400_000;

async fn host() -> (TestHost, TestTenant) {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    (h, t)
}

async fn send(h: &TestHost, t: &TestTenant, call: &str, body: Value) {
    let (s, v) = h.segment(t, call, &body).await;
    assert_eq!(s, StatusCode::OK, "{call} {body}: {v}");
}

async fn identify(h: &TestHost, t: &TestTenant, user: &str, traits: Value) {
    send(h, t, "identify", json!({"userId": user, "traits": traits})).await;
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn order(h: &TestHost, t: &TestTenant, user: &str, at: i64) {
    send(
        h,
        t,
        "track",
        json!({"userId": user, "event": "Order Completed", "timestamp": iso(at)}),
    )
    .await;
}

/// POSTs a definition; returns status and body.
async fn post(
    h: &TestHost,
    t: &TestTenant,
    body: impl Into<axum::body::Body>,
) -> (StatusCode, Value) {
    h.request(Method::POST, "/v1/audiences", Some(&t.secret), body)
        .await
}

/// Creates an audience; panics unless 201; returns the answered audience.
async fn create(h: &TestHost, t: &TestTenant, id: &str, predicate: Value) -> Value {
    let body = json!({"id": id, "name": format!("Audience {id}"), "predicate": predicate});
    let (s, v) = post(h, t, body.to_string()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}: {v}");
    v["audience"].clone()
}

/// Expects a 4xx with `code`; returns the message.
fn refused(status: StatusCode, v: &Value, want_status: StatusCode, code: &str) -> String {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(error_code(v), code, "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

async fn profile_id(h: &TestHost, t: &TestTenant, user: &str) -> String {
    let v = h.get_ok(t, &format!("/v1/profiles/user_id:{user}")).await;
    v["profile"]["id"].as_str().unwrap().to_string()
}

async fn members(h: &TestHost, t: &TestTenant, id: &str) -> Vec<String> {
    let v = h
        .get_ok(t, &format!("/v1/audiences/{id}/members?limit=1000"))
        .await;
    assert!(v.get("next").is_none(), "{v}");
    let mut out: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn count(h: &TestHost, t: &TestTenant, id: &str) -> u64 {
    h.get_ok(t, &format!("/v1/audiences/{id}")).await["audience"]["count"]
        .as_u64()
        .unwrap()
}

fn gold() -> Value {
    json!({"trait": "tier", "op": "eq", "value": "gold"})
}

// ---- definition, backfill, list, count, members, delete ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_trait_audience_backfills_existing_profiles() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    identify(&h, &t, "u2", json!({"tier": "silver"})).await;
    identify(&h, &t, "u3", json!({"tier": "gold"})).await;
    h.drain(&t).await;

    let a = create(&h, &t, "gold", gold()).await;
    assert_eq!(a["id"], "gold");
    assert_eq!(a["name"], "Audience gold");
    assert_eq!(a["predicate"], gold());
    assert_eq!(a["created_at"], NOW);
    assert_eq!(a["count"], 2);

    let mut want = vec![
        profile_id(&h, &t, "u1").await,
        profile_id(&h, &t, "u3").await,
    ];
    want.sort();
    assert_eq!(members(&h, &t, "gold").await, want);
    assert_eq!(count(&h, &t, "gold").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_window_audience_counts_only_recent_orders() {
    let (h, t) = host().await;
    order(&h, &t, "recent", NOW - 3 * DAY).await;
    order(&h, &t, "old", NOW - 60 * DAY).await;
    identify(&h, &t, "never", json!({})).await;
    h.drain(&t).await;

    let a = create(
        &h,
        &t,
        "buyers-30d",
        json!({"event": "Order Completed", "within_days": 30}),
    )
    .await;
    assert_eq!(a["count"], 1);
    assert_eq!(a["predicate"]["count"], json!({"op": "gte", "value": 1}));
    assert_eq!(
        members(&h, &t, "buyers-30d").await,
        vec![profile_id(&h, &t, "recent").await]
    );

    // "Ordered before, but not in the last 30 days": the win-back shape.
    let lapsed = create(
        &h,
        &t,
        "lapsed",
        json!({"all": [
            {"event": "Order Completed"},
            {"last_performed": "Order Completed", "older_than_days": 30}
        ]}),
    )
    .await;
    assert_eq!(lapsed["count"], 1);
    assert_eq!(
        members(&h, &t, "lapsed").await,
        vec![profile_id(&h, &t, "old").await]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_of_a_tenant_without_profiles_is_empty() {
    let (h, t) = host().await;
    let a = create(&h, &t, "gold", gold()).await;
    assert_eq!(a["count"], 0);
    let v = h.get_ok(&t, "/v1/audiences/gold/members").await;
    assert_eq!(v, json!({"members": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_audience_with_its_count() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({"tier": "gold", "city": "Hanoi"})).await;
    h.drain(&t).await;
    assert_eq!(
        h.get_ok(&t, "/v1/audiences").await,
        json!({"audiences": []})
    );
    create(&h, &t, "gold", gold()).await;
    create(
        &h,
        &t,
        "saigon",
        json!({"trait": "city", "op": "eq", "value": "Saigon"}),
    )
    .await;
    let v = h.get_ok(&t, "/v1/audiences").await;
    let list = v["audiences"].as_array().unwrap();
    let summary: Vec<(&str, u64)> = list
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(summary, vec![("gold", 1), ("saigon", 0)]);
    assert_eq!(list[0]["predicate"], gold());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_paged_with_a_cursor() {
    let (h, t) = host().await;
    for i in 0..5 {
        identify(&h, &t, &format!("u{i}"), json!({"tier": "gold"})).await;
    }
    h.drain(&t).await;
    create(&h, &t, "gold", gold()).await;
    let mut seen = Vec::new();
    let mut path = "/v1/audiences/gold/members?limit=2".to_string();
    loop {
        let v = h.get_ok(&t, &path).await;
        let page = v["members"].as_array().unwrap();
        assert!(page.len() <= 2, "{v}");
        seen.extend(page.iter().map(|m| m.as_str().unwrap().to_string()));
        match v["next"].as_str() {
            Some(next) => path = format!("/v1/audiences/gold/members?limit=2&before={next}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "{seen:?}");
    assert_eq!(sorted, members(&h, &t, "gold").await);

    for bad in ["limit=0", "limit=1001", "limit=x", "size=2"] {
        let (s, v) = h
            .request(
                Method::GET,
                &format!("/v1/audiences/gold/members?{bad}"),
                Some(&t.secret),
                "",
            )
            .await;
        refused(s, &v, StatusCode::BAD_REQUEST, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_audience_and_a_new_one_with_its_id_starts_fresh() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    h.drain(&t).await;
    create(&h, &t, "gold", gold()).await;
    let (s, v) = h
        .request(Method::DELETE, "/v1/audiences/gold", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    for path in ["/v1/audiences/gold", "/v1/audiences/gold/members"] {
        let (s, v) = h.request(Method::GET, path, Some(&t.secret), "").await;
        refused(s, &v, StatusCode::NOT_FOUND, "audience_not_found");
    }
    assert_eq!(
        h.get_ok(&t, "/v1/audiences").await,
        json!({"audiences": []})
    );

    // The same id, now over a trait nobody has.
    let a = create(
        &h,
        &t,
        "gold",
        json!({"trait": "tier", "op": "eq", "value": "platinum"}),
    )
    .await;
    assert_eq!(a["count"], 0);
    assert!(members(&h, &t, "gold").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_audiences_are_404() {
    let (h, t) = host().await;
    for (method, path) in [
        (Method::GET, "/v1/audiences/nope"),
        (Method::GET, "/v1/audiences/nope/members"),
        (Method::DELETE, "/v1/audiences/nope"),
        (Method::GET, "/v1/audiences/Not%20A%20Slug"),
        (Method::DELETE, "/v1/audiences/a%2Fb"),
    ] {
        let (s, v) = h.request(method.clone(), path, Some(&t.secret), "").await;
        let msg = refused(s, &v, StatusCode::NOT_FOUND, "audience_not_found");
        assert!(msg.contains("no audience"), "{method} {path}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_belong_to_one_tenant_and_need_the_secret_key() {
    let (h, t) = host().await;
    let other = h.tenant().await;
    create(&h, &t, "gold", gold()).await;
    let (s, v) = h
        .request(Method::GET, "/v1/audiences/gold", Some(&other.secret), "")
        .await;
    refused(s, &v, StatusCode::NOT_FOUND, "audience_not_found");
    assert_eq!(
        h.get_ok(&other, "/v1/audiences").await,
        json!({"audiences": []})
    );
    // The other tenant can use the same id.
    create(&h, &other, "gold", gold()).await;

    let (s, v) = h
        .request(Method::GET, "/v1/audiences", Some(&t.write), "")
        .await;
    refused(s, &v, StatusCode::FORBIDDEN, "wrong_key_kind");
    let (s, v) = h.request(Method::GET, "/v1/audiences", None, "").await;
    refused(s, &v, StatusCode::UNAUTHORIZED, "missing_credentials");
}

// ---- bad input and limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_naming_the_problem() {
    let (h, t) = host().await;
    let body = |id: Value, name: Value, predicate: Value| {
        json!({"id": id, "name": name, "predicate": predicate}).to_string()
    };
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        ("".into(), StatusCode::BAD_REQUEST, "invalid_json", "empty"),
        (
            "{".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "invalid JSON",
        ),
        (
            json!({"id": "a", "name": "A", "predicate": gold(), "colour": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "unknown field `colour`",
        ),
        (
            json!({"id": "a", "name": "A"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "missing field `predicate`",
        ),
        (
            body(json!("Win Back"), json!("A"), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "`W` is not allowed",
        ),
        (
            body(json!(""), json!("A"), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "must not be empty",
        ),
        (
            body(json!("x".repeat(65)), json!("A"), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "over the maximum of 64",
        ),
        (
            body(json!(7), json!("A"), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "invalid type",
        ),
        (
            body(json!("a"), json!(" "), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "invalid audience name: must not be empty",
        ),
        (
            body(json!("a"), json!("n".repeat(201)), gold()),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "over the maximum of 200",
        ),
        (
            body(
                json!("a"),
                json!("A"),
                json!({"all": [gold(), {"trait": "tier", "op": "equals", "value": "x"}]}),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "invalid predicate: at $.all[1]: unknown op `equals`",
        ),
        (
            body(
                json!("a"),
                json!("A"),
                json!({"event": "E", "within_day": 3}),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "at $: unknown field `within_day`",
        ),
        (
            body(json!("a"), json!("A"), Value::Null),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "at $: expected a predicate node",
        ),
        (
            body(
                json!("a"),
                json!("A"),
                json!({"trait": "t", "op": "eq", "value": "x".repeat(20_000)}),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "audience_too_large",
            "over the maximum of 16384 bytes",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (s, v) = post(&h, &t, body.clone()).await;
        let msg = refused(s, &v, status, code);
        assert!(msg.contains(needle), "{body}: `{msg}` lacks `{needle}`");
    }
    assert_eq!(
        h.get_ok(&t, "/v1/audiences").await,
        json!({"audiences": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_id_is_a_conflict() {
    let (h, t) = host().await;
    create(&h, &t, "gold", gold()).await;
    let body = json!({"id": "gold", "name": "Other", "predicate": {"trait": "x", "op": "exists"}});
    let (s, v) = post(&h, &t, body.to_string()).await;
    let msg = refused(s, &v, StatusCode::CONFLICT, "audience_exists");
    assert!(msg.contains("`gold` already exists"), "{msg}");
    let a = h.get_ok(&t, "/v1/audiences/gold").await;
    assert_eq!(a["audience"]["name"], "Audience gold", "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_can_have_100_audiences_and_no_more() {
    let (h, t) = host().await;
    for i in 0..100 {
        create(&h, &t, &format!("a{i:03}"), gold()).await;
    }
    let body = json!({"id": "one-more", "name": "x", "predicate": gold()});
    let (s, v) = post(&h, &t, body.to_string()).await;
    let msg = refused(s, &v, StatusCode::CONFLICT, "too_many_audiences");
    assert!(msg.contains("maximum of 100"), "{msg}");
    assert_eq!(
        h.get_ok(&t, "/v1/audiences").await["audiences"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let (s, _) = h
        .request(Method::DELETE, "/v1/audiences/a042", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    create(&h, &t, "one-more", gold()).await;
}

// ---- needs the processor wiring: membership kept current, erasure, the 360 view ----
//
// These pass once the event processor calls `audience::engine::reevaluate(_merged)` for
// every event, erasure adds `engine::erase_ops`, and the 360 view lists
// `engine::memberships`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_identify_after_creation_enters_and_a_trait_change_exits() {
    let (h, t) = host().await;
    create(&h, &t, "gold", gold()).await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    identify(&h, &t, "u2", json!({"tier": "silver"})).await;
    h.drain(&t).await;
    assert_eq!(count(&h, &t, "gold").await, 1);
    assert_eq!(
        members(&h, &t, "gold").await,
        vec![profile_id(&h, &t, "u1").await]
    );

    identify(&h, &t, "u1", json!({"tier": "silver"})).await;
    identify(&h, &t, "u2", json!({"tier": "gold"})).await;
    h.drain(&t).await;
    assert_eq!(count(&h, &t, "gold").await, 1);
    assert_eq!(
        members(&h, &t, "gold").await,
        vec![profile_id(&h, &t, "u2").await]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_an_order_enters_the_event_window_audience() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({})).await;
    h.drain(&t).await;
    assert_eq!(
        create(
            &h,
            &t,
            "buyers",
            json!({"event": "Order Completed", "within_days": 30})
        )
        .await["count"],
        0
    );
    order(&h, &t, "u1", NOW - DAY).await;
    h.drain(&t).await;
    assert_eq!(count(&h, &t, "buyers").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_the_360_view_lists_the_profiles_audiences() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    h.drain(&t).await;
    create(&h, &t, "gold", gold()).await;
    create(
        &h,
        &t,
        "silver",
        json!({"trait": "tier", "op": "eq", "value": "silver"}),
    )
    .await;
    let v = h.get_ok(&t, "/v1/profiles/user_id:u1").await;
    let ids: Vec<&str> = v["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gold"], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_erasing_a_profile_removes_it_from_its_audiences() {
    let (h, t) = host().await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    identify(&h, &t, "u2", json!({"tier": "gold"})).await;
    h.drain(&t).await;
    create(&h, &t, "gold", gold()).await;
    let (s, v) = h
        .request(
            Method::DELETE,
            "/v1/profiles/user_id:u1",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(count(&h, &t, "gold").await, 1);
    assert_eq!(
        members(&h, &t, "gold").await,
        vec![profile_id(&h, &t, "u2").await]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_a_merge_leaves_one_membership_for_the_merged_profile() {
    let (h, t) = host().await;
    create(&h, &t, "gold", gold()).await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    send(
        &h,
        &t,
        "identify",
        json!({"anonymousId": "anon-1", "traits": {"tier": "gold"}}),
    )
    .await;
    h.drain(&t).await;
    assert_eq!(count(&h, &t, "gold").await, 2);
    // Linking the anonymous visitor to u1 merges the two profiles.
    send(
        &h,
        &t,
        "alias",
        json!({"userId": "u1", "previousId": "anon-1"}),
    )
    .await;
    h.drain(&t).await;
    assert_eq!(count(&h, &t, "gold").await, 1);
    assert_eq!(
        members(&h, &t, "gold").await,
        vec![profile_id(&h, &t, "u1").await]
    );
}
