//! `POST /v1/personalize`: decisions from the tenant's plugin with the visitor's cached
//! profile, sticky experiments with `Experiment Viewed`, fail-open defaults and quarantine,
//! the limits on both sides, CORS, and bad input.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft_tests::{plugins, TestHost, TestTenant};

const SHOP: &str = "https://shop.example.vn";

fn settings(plugin: &str) -> Value {
    json!({
        "plugin": plugin,
        "allowed_origins": [SHOP],
        "placements": [
            {"id": "hero", "kind": "banner", "max_items": 0,
             "constraints": {
                "audience_banners": [{"audience": "big-spenders", "variant": "vip", "content": {"headline": "VIP"}}],
                "variants": {"control": {"headline": "Áo dài mới"}, "sale": {"headline": "Giảm 30%"}}
             },
             "default": {"variant": "fallback", "content": {"headline": "Sản phẩm nổi bật"}, "ttl_ms": 5000}},
            {"id": "recs", "kind": "product-list", "max_items": 3,
             "default": {"variant": "fallback", "items": [{"id": "sku-1"}]}}
        ],
        "candidates": [
            {"id": "sku-1", "score": 0.9, "category": "ao-dai"},
            {"id": "sku-2", "score": 0.5, "category": "vay"},
            {"id": "sku-3", "score": 0.4, "category": "ao-dai"},
            {"id": "sku-4", "score": 0.3, "category": "giay"},
            {"id": "sku-g", "score": 0.1, "tags": ["tier:gold"]}
        ]
    })
}

async fn shop(h: &TestHost, name: &str, kind_path: &str, s: Value) -> TestTenant {
    let t = h.tenant().await;
    h.install(&t, name, "personalization", kind_path).await;
    let (st, v) = h
        .request(
            Method::PUT,
            "/v1/personalize/settings",
            Some(&t.secret),
            s.to_string(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    t
}

/// A tenant with `tier-personalize` and the standard settings.
async fn tier_shop(h: &TestHost) -> TestTenant {
    shop(
        h,
        "tier-personalize",
        plugins::TIER_PERSONALIZE,
        settings("tier-personalize"),
    )
    .await
}

/// A tenant with the misbehaving personalizer and the standard settings.
async fn unruly_shop(h: &TestHost) -> TestTenant {
    shop(
        h,
        "unruly",
        plugins::TEST_UNRULY_PERSONALIZER,
        settings("unruly"),
    )
    .await
}

async fn ask(
    h: &TestHost,
    t: &TestTenant,
    body: Value,
    origin: Option<&str>,
) -> (StatusCode, Value) {
    let mut headers = vec![("content-type", "text/plain;charset=UTF-8".to_string())];
    if let Some(o) = origin {
        headers.push(("origin", o.to_string()));
    }
    h.request_with(
        Method::POST,
        &format!("/v1/personalize?writeKey={}", t.write),
        &headers,
        body.to_string(),
    )
    .await
}

fn decision<'a>(v: &'a Value, placement: &str) -> &'a Value {
    v["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions in {v}"))
        .iter()
        .find(|d| d["placement"] == placement)
        .unwrap_or_else(|| panic!("no decision for {placement} in {v}"))
}

async fn identify(h: &TestHost, t: &TestTenant, user: &str, traits: Value) {
    let (s, v) = h
        .segment(t, "identify", &json!({"userId": user, "traits": traits}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.drain(t).await;
}

#[tokio::test]
async fn decides_by_tier_from_the_profile_and_sees_a_trait_change_at_once() {
    let h = TestHost::new().await;
    let t = tier_shop(&h).await;
    identify(&h, &t, "u1", json!({"tier": "gold"})).await;
    let body = json!({"userId": "u1", "page": {"path": "/", "page_type": "home"}, "placements": ["hero", "recs"]});
    let (s, v) = ask(&h, &t, body.clone(), Some(SHOP)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hero = decision(&v, "hero");
    assert_eq!(hero["variant"], "tier-gold", "{v}");
    assert_eq!(hero["source"], "plugin");
    let recs = decision(&v, "recs");
    let ids: Vec<&str> = recs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["sku-g", "sku-1", "sku-2"],
        "gold item first, capped at 3"
    );
    assert!(v["request_id"].as_str().unwrap().starts_with("pz_"));

    // Served from the cache the second time…
    let (_, again) = ask(&h, &t, body.clone(), Some(SHOP)).await;
    assert_eq!(decision(&again, "hero")["variant"], "tier-gold");
    let (_, status) = h
        .request(Method::GET, "/v1/personalize/status", Some(&t.secret), "")
        .await;
    assert!(
        status["profile_cache"]["hits"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // …and a trait change reaches the very next decision.
    identify(&h, &t, "u1", json!({"tier": "silver"})).await;
    let (_, after) = ask(&h, &t, body, Some(SHOP)).await;
    assert_eq!(
        decision(&after, "hero")["variant"],
        "tier-silver",
        "{after}"
    );
    let ids: Vec<&str> = decision(&after, "recs")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"sku-g"),
        "a silver visitor got the gold item"
    );

    // An unknown visitor is anonymous; erasing a profile makes its visitor unknown again.
    let (_, anon) = ask(
        &h,
        &t,
        json!({"anonymousId": "a-new", "placements": ["hero"]}),
        None,
    )
    .await;
    assert_eq!(decision(&anon, "hero")["variant"], "anonymous", "{anon}");
    let s = h.erase_profile(&t, "user_id:u1").await;
    assert!(s.is_success());
    let (_, erased) = ask(
        &h,
        &t,
        json!({"userId": "u1", "placements": ["hero"]}),
        None,
    )
    .await;
    assert_eq!(
        decision(&erased, "hero")["variant"],
        "anonymous",
        "{erased}"
    );
}

#[tokio::test]
async fn audience_membership_picks_the_banner_and_leaving_the_audience_drops_it() {
    let h = TestHost::new().await;
    let t = tier_shop(&h).await;
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/audiences",
            Some(&t.secret),
            json!({"id": "big-spenders", "name": "Big spenders",
                   "predicate": {"trait": "ltv", "op": "gte", "value": 5000000}})
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    identify(&h, &t, "u7", json!({"tier": "gold", "ltv": 9000000})).await;
    h.settle(&t).await;
    let body = json!({"userId": "u7", "placements": ["hero"]});
    let (_, v) = ask(&h, &t, body.clone(), None).await;
    assert_eq!(decision(&v, "hero")["variant"], "vip", "{v}");
    assert_eq!(decision(&v, "hero")["content"]["headline"], "VIP");
    identify(&h, &t, "u7", json!({"ltv": 10})).await;
    h.settle(&t).await;
    let (_, v) = ask(&h, &t, body, None).await;
    assert_eq!(decision(&v, "hero")["variant"], "tier-gold", "{v}");
}

#[tokio::test]
async fn recently_viewed_recommends_from_the_visitors_own_history() {
    let h = TestHost::new().await;
    let t = shop(
        &h,
        "recently-viewed",
        plugins::RECENTLY_VIEWED,
        settings("recently-viewed"),
    )
    .await;
    let (_, cold) = ask(
        &h,
        &t,
        json!({"anonymousId": "a1", "placements": ["recs"]}),
        None,
    )
    .await;
    assert_eq!(decision(&cold, "recs")["variant"], "popular", "{cold}");
    let (s, v) = h
        .segment(
            &t,
            "track",
            &json!({"anonymousId": "a1", "event": "Product Viewed",
                    "properties": {"product_id": "sku-3", "category": "ao-dai"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.drain(&t).await;
    let (_, warm) = ask(
        &h,
        &t,
        json!({"anonymousId": "a1", "placements": ["recs"]}),
        None,
    )
    .await;
    let recs = decision(&warm, "recs");
    assert_eq!(recs["variant"], "recently-viewed", "{warm}");
    let ids: Vec<&str> = recs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "sku-1", "same category first: {ids:?}");
    assert!(!ids.contains(&"sku-3"), "recommended what was just viewed");
}

#[tokio::test]
async fn experiment_assignment_is_sticky_and_one_experiment_viewed_is_recorded() {
    let h = TestHost::new().await;
    let mut s = settings("ab-hero");
    s["placements"][0]["experiment"] = json!({"id": "hero-q4", "variants": [
        {"id": "control", "weight": 50}, {"id": "sale", "weight": 50}]});
    let t = shop(&h, "ab-hero", plugins::AB_HERO, s).await;
    identify(&h, &t, "u9", json!({"name": "Lan"})).await;
    let body = json!({"userId": "u9", "page": {"url": "https://shop.example.vn/"}, "placements": ["hero"]});
    let (_, first) = ask(&h, &t, body.clone(), None).await;
    let hero = decision(&first, "hero");
    assert_eq!(hero["experiment_id"], "hero-q4", "{first}");
    let variant = hero["variant"].as_str().unwrap().to_string();
    assert!(variant == "control" || variant == "sale");
    for _ in 0..5 {
        let (_, again) = ask(&h, &t, body.clone(), None).await;
        assert_eq!(decision(&again, "hero")["variant"], variant.as_str());
    }
    // Visitors spread over both arms.
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let (_, v) = ask(
            &h,
            &t,
            json!({"anonymousId": format!("anon-{i}"), "placements": ["hero"]}),
            None,
        )
        .await;
        seen.insert(
            decision(&v, "hero")["variant"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "40 visitors all in one arm: {seen:?}");

    // Exposures are written in the background; wait for u9's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let viewed = loop {
        h.drain(&t).await;
        let (_, events) = h
            .request(
                Method::GET,
                "/v1/profiles/user_id:u9/events?limit=50",
                Some(&t.secret),
                "",
            )
            .await;
        let viewed: Vec<Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "Experiment Viewed")
            .cloned()
            .collect();
        if !viewed.is_empty() || std::time::Instant::now() > deadline {
            break viewed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(viewed.len(), 1, "six views, one exposure: {viewed:?}");
    assert_eq!(viewed[0]["properties"]["experiment_id"], "hero-q4");
    assert_eq!(viewed[0]["properties"]["variation_id"], variant.as_str());
    assert_eq!(viewed[0]["properties"]["placement"], "hero");
}

fn unruly(mode: &str) -> Value {
    json!({"anonymousId": "a-1", "page": {"attributes": {"mode": mode}}, "placements": ["hero", "recs"]})
}

#[tokio::test]
async fn a_failing_plugin_gets_the_default_content_and_five_in_a_row_quarantine_it() {
    let h = TestHost::new().await;
    let t = unruly_shop(&h).await;
    let (s, ok) = ask(&h, &t, unruly("ok"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(decision(&ok, "hero")["source"], "plugin", "{ok}");

    for mode in ["panic", "error", "bad-json", "skip"] {
        let (s, v) = ask(&h, &t, unruly(mode), None).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{mode}: failing open is still a 200: {v}"
        );
        let hero = decision(&v, "hero");
        assert_eq!(hero["source"], "default", "{mode}: {v}");
        assert_eq!(hero["variant"], "fallback");
        assert_eq!(hero["content"]["headline"], "Sản phẩm nổi bật");
        assert_eq!(hero["ttl_ms"], 5000);
        assert!(hero["reason"].is_string(), "{mode}: {v}");
        assert_eq!(decision(&v, "recs")["items"][0]["id"], "sku-1");
    }
    // Panic and typed error count towards quarantine; bad JSON and a missing decision
    // are the plugin's answers, not crashes. Two more crashes, then three: quarantined.
    let (_, status) = h
        .request(Method::GET, "/v1/personalize/status", Some(&t.secret), "")
        .await;
    assert_eq!(status["failures"]["panic"], 1, "{status}");
    assert_eq!(status["failures"]["plugin_error"], 1, "{status}");
    assert!(status["quarantined_until"].is_null(), "{status}");
    for _ in 0..5 {
        ask(&h, &t, unruly("panic"), None).await;
    }
    let (_, status) = h
        .request(Method::GET, "/v1/personalize/status", Some(&t.secret), "")
        .await;
    assert!(status["quarantined_until"].is_i64(), "{status}");
    // While quarantined even a good request gets the defaults, without running the plugin.
    let (_, v) = ask(&h, &t, unruly("ok"), None).await;
    let hero = decision(&v, "hero");
    assert_eq!(hero["source"], "default", "{v}");
    assert!(
        hero["reason"].as_str().unwrap().contains("quarantined"),
        "{v}"
    );
    // After the quarantine a good request probes, succeeds and closes it.
    h.clock.advance(weft::personalize::QUARANTINE_MS + 1);
    let (_, v) = ask(&h, &t, unruly("ok"), None).await;
    assert_eq!(decision(&v, "hero")["source"], "plugin", "{v}");
    let (_, status) = h
        .request(Method::GET, "/v1/personalize/status", Some(&t.secret), "")
        .await;
    assert!(status["quarantined_until"].is_null(), "{status}");
    // The failures left invocation records; successes did not.
    let (_, records) = h
        .request(
            Method::GET,
            "/v1/plugins/unruly/invocations",
            Some(&t.secret),
            "",
        )
        .await;
    let records = records["invocations"].as_array().unwrap();
    assert!(records.iter().all(|r| r["ok"] == false), "{records:?}");
    assert!(records.len() >= 6, "{records:?}");
}

#[tokio::test]
async fn the_deadline_stops_a_spinning_plugin_a_sleeping_one_is_refused_and_a_quick_one_runs() {
    let h = TestHost::with_config(|c| c.runtime.personalization.deadline_ms = 50).await;
    let t = unruly_shop(&h).await;
    let t0 = std::time::Instant::now();
    let (s, v) = ask(&h, &t, unruly("spin"), None).await;
    let took = t0.elapsed();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(decision(&v, "hero")["source"], "default", "{v}");
    assert!(
        decision(&v, "hero")["reason"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{v}"
    );
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    // A personalizer that imports nothing from the store runs on the request's thread,
    // where waiting in a host call (a WASI sleep) is refused at once.
    let t0 = std::time::Instant::now();
    let (_, v) = ask(&h, &t, unruly("sleep"), None).await;
    let took = t0.elapsed();
    assert_eq!(decision(&v, "hero")["source"], "default", "{v}");
    assert!(
        decision(&v, "hero")["reason"]
            .as_str()
            .unwrap()
            .contains("may not wait"),
        "{v}"
    );
    assert!(
        took < std::time::Duration::from_secs(2),
        "a 10 s sleep took {took:?}"
    );
    let (_, v) = ask(&h, &t, unruly("ok"), None).await;
    assert_eq!(decision(&v, "hero")["source"], "plugin", "{v}");
}

#[tokio::test]
async fn only_a_plugin_that_imports_nothing_from_the_store_runs_on_the_request_thread() {
    let h = TestHost::new().await;
    let t = unruly_shop(&h).await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let registry = &h.app.state.registry;
    assert!(
        registry.active(&t.id, "unruly").unwrap().inline,
        "imports only types and WASI"
    );
    assert!(
        !registry.active(&t.id, "wb").unwrap().inline,
        "imports state, which reads and writes the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_request_thread_a_sleeping_personalizer_is_stopped_at_its_deadline() {
    // The invoke API runs a plugin on a blocking thread, where a WASI wait may block, up
    // to the deadline and no further.
    let h = TestHost::with_config(|c| c.runtime.personalization.deadline_ms = 50).await;
    let t = unruly_shop(&h).await;
    let weft::runtime::Call::PersonalizeDecide { mut req, catalog } =
        weft::samples::decide_two_placements(0)
    else {
        unreachable!("a decide call")
    };
    req.page.attributes = r#"{"mode":"sleep"}"#.into();
    let t0 = std::time::Instant::now();
    let v = h
        .invoke(
            &t,
            "unruly",
            &weft::runtime::Call::PersonalizeDecide { req, catalog },
        )
        .await;
    let took = t0.elapsed();
    assert_eq!(v["error"]["code"], "deadline_exceeded", "{v}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "a 10 s sleep took {took:?}"
    );
}

#[tokio::test]
async fn the_memory_cap_stops_a_hoarding_plugin_and_a_modest_one_runs() {
    let h = TestHost::with_config(|c| c.runtime.personalization.memory_bytes = 8 << 20).await;
    let t = unruly_shop(&h).await;
    let (_, v) = ask(&h, &t, unruly("oom"), None).await;
    assert_eq!(decision(&v, "hero")["source"], "default", "{v}");
    let (_, status) = h
        .request(Method::GET, "/v1/personalize/status", Some(&t.secret), "")
        .await;
    assert_eq!(status["failures"]["memory_limit_exceeded"], 1, "{status}");
    let (_, v) = ask(&h, &t, unruly("ok"), None).await;
    assert_eq!(decision(&v, "hero")["source"], "plugin", "{v}");
}

#[tokio::test]
async fn one_tenants_visitor_never_gets_another_tenants_profile() {
    let h = TestHost::new().await;
    let a = tier_shop(&h).await;
    let b = tier_shop(&h).await;
    identify(&h, &a, "same-user", json!({"tier": "gold"})).await;
    let body = json!({"userId": "same-user", "placements": ["hero"]});
    let (_, va) = ask(&h, &a, body.clone(), None).await;
    let (_, vb) = ask(&h, &b, body, None).await;
    assert_eq!(decision(&va, "hero")["variant"], "tier-gold");
    assert_eq!(decision(&vb, "hero")["variant"], "anonymous", "{vb}");
}

#[tokio::test]
async fn cors_answers_an_allowed_origin_and_refuses_another() {
    let h = TestHost::new().await;
    let t = tier_shop(&h).await;
    let path = format!("/v1/personalize?writeKey={}", t.write);
    let resp = h
        .raw(
            Method::OPTIONS,
            &path,
            &[("origin", SHOP), ("access-control-request-method", "POST")],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["access-control-allow-origin"], SHOP);
    let resp = h
        .raw(
            Method::POST,
            &path,
            &[("origin", SHOP)],
            json!({"anonymousId": "a", "placements": ["hero"]}).to_string(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], SHOP);
    let resp = h
        .raw(
            Method::OPTIONS,
            &path,
            &[("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bad_decision_requests_get_a_4xx_naming_the_problem() {
    let h = TestHost::new().await;
    let unconfigured = h.tenant().await;
    let (s, v) = ask(
        &h,
        &unconfigured,
        json!({"anonymousId": "a", "placements": ["hero"]}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "personalization_not_configured");

    let t = tier_shop(&h).await;
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"anonymousId": "a", "placements": ["hero", "popup"]}),
            StatusCode::BAD_REQUEST,
            "unknown_placement",
            "`popup`",
        ),
        (
            json!({"anonymousId": "a", "placements": []}),
            StatusCode::BAD_REQUEST,
            "invalid_placements",
            "empty",
        ),
        (
            json!({"anonymousId": "a", "placements": ["hero", "hero"]}),
            StatusCode::BAD_REQUEST,
            "invalid_placements",
            "twice",
        ),
        (
            json!({"anonymousId": "a", "placements": [7]}),
            StatusCode::BAD_REQUEST,
            "invalid_placements",
            "placements[0]",
        ),
        (
            json!({"placements": ["hero"]}),
            StatusCode::BAD_REQUEST,
            "missing_identity",
            "anonymousId",
        ),
        (
            json!({"anonymousId": "a", "page": {"colour": "red"}, "placements": ["hero"]}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "colour",
        ),
        (
            json!({"anonymousId": "a", "page": {"attributes": ["sku-7"]}, "placements": ["hero"]}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "invalid type: an array, expected a JSON object",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (s, v) = ask(&h, &t, body.clone(), None).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: `{msg}` does not name {needle}"
        );
    }
    // Twenty placements is the cap; twenty-one is refused.
    let mut many = settings("tier-personalize");
    many["placements"] = (0..21)
        .map(|i| json!({"id": format!("p{i}"), "kind": "banner"}))
        .collect();
    h.request(
        Method::PUT,
        "/v1/personalize/settings",
        Some(&t.secret),
        many.to_string(),
    )
    .await;
    let ids: Vec<String> = (0..21).map(|i| format!("p{i}")).collect();
    let (s, v) = ask(
        &h,
        &t,
        json!({"anonymousId": "a", "placements": ids[..20]}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = ask(&h, &t, json!({"anonymousId": "a", "placements": ids}), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 20"));

    let path = format!("/v1/personalize?writeKey={}", t.write);
    let (s, v) = h.request_with(Method::POST, &path, &[], "{not json").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json")),
        "{v}"
    );
    let wrong = "/v1/personalize?writeKey=wwk_00000000000000000000000000000000";
    let (s, v) = h
        .request_with(
            Method::POST,
            wrong,
            &[],
            json!({"anonymousId": "a", "placements": ["p0"]}).to_string(),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{v}"
    );
    let (s, v) = h
        .request_with(
            Method::POST,
            "/v1/personalize",
            &[],
            json!({"anonymousId": "a", "placements": ["p0"]}).to_string(),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_credentials")),
        "{v}"
    );
    let (s, v) = ask(
        &h,
        &t,
        json!({"anonymousId": "a", "placements": ["p0"]}),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("origin_not_allowed")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("https://evil.example"));

    // 16 KiB is the body cap: a page with a big cart passes, a bigger body is a 413.
    let cart = |n: usize| json!({"anonymousId": "a", "page": {"attributes": {"note": "x".repeat(n)}}, "placements": ["p0"]});
    let (s, v) = ask(&h, &t, cart(15_000), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = ask(&h, &t, cart(17_000), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn settings_refuse_bad_values_naming_the_field_and_keep_the_old_ones() {
    let h = TestHost::new().await;
    let t = tier_shop(&h).await;
    let bad: Vec<(Value, &str)> = vec![
        (
            json!({"allowed_origins": ["shop.example.vn"]}),
            "allowed_origins",
        ),
        (
            json!({"placements": [{"id": "Hero Banner", "kind": "banner"}]}),
            "Hero Banner",
        ),
        (
            json!({"placements": [{"id": "hero", "kind": "popup"}]}),
            "popup",
        ),
        (
            json!({"placements": [{"id": "hero", "kind": "banner", "experiment": {"id": "x", "variants": [{"id": "a", "weight": 1}]}}]}),
            "2 to 10 variants",
        ),
        (json!({"plugin": "Bad Name!"}), "plugin"),
        (json!({"candidates": "all"}), "candidates"),
        (json!({"placements": [], "surprise": 1}), "surprise"),
    ];
    for (body, needle) in bad {
        let (s, v) = h
            .request(
                Method::PUT,
                "/v1/personalize/settings",
                Some(&t.secret),
                body.to_string(),
            )
            .await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: `{msg}` does not name {needle}"
        );
    }
    let huge = json!({"candidates": (0..3000).map(|i| json!({"id": format!("sku-{i}"), "name": "áo dài lụa tơ tằm"})).collect::<Vec<_>>()});
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/personalize/settings",
            Some(&t.secret),
            huge.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "settings_too_large");
    let (s, v) = h
        .request(Method::GET, "/v1/personalize/settings", Some(&t.secret), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["placements"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["allowed_origins"][0], SHOP);
}

#[tokio::test]
async fn settings_survive_a_restart() {
    let h = TestHost::new().await;
    let t = tier_shop(&h).await;
    let h = h.restart().await;
    let (s, v) = ask(
        &h,
        &t,
        json!({"anonymousId": "a", "placements": ["hero"]}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(decision(&v, "hero")["source"], "plugin", "{v}");
}
