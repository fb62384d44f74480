//! The send pipeline end to end: journeys → messaging policy → channel adapters → a fake
//! provider on 127.0.0.1 → signed webhooks back → the delivery log and the funnel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use weft::clock::Clock as _;
use weft_tests::{error_code, plugins, TestHost, TestTenant};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const APP_ID: &str = "app-1";
const OA_SECRET: &str = "oa-secret-key";
const ZNS_TEMPLATE: &str = "231241";

/// What the fake provider saw: path, headers, body.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

/// A fake Zalo (OA API, ZNS API and OAuth on one port). OA sends answer from a script of
/// queued answers, else success with ids `oa-1`, `oa-2`, …; a send with a stale access
/// token gets Zalo's -216; a refresh hands out the next token pair.
struct FakeZalo {
    addr: SocketAddr,
    seen: Seen,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    zns_script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    token: Arc<Mutex<String>>,
}

impl FakeZalo {
    async fn start() -> FakeZalo {
        let seen: Seen = Arc::default();
        let script: Arc<Mutex<VecDeque<(u16, Value)>>> = Arc::default();
        let zns_script: Arc<Mutex<VecDeque<(u16, Value)>>> = Arc::default();
        let token = Arc::new(Mutex::new("at-0".to_string()));
        let counter = Arc::new(Mutex::new(0u32));
        let app = axum::Router::new()
            .route(
                "/v3.0/oa/message/cs",
                axum::routing::post({
                    let (seen, script, token, counter) =
                        (seen.clone(), script.clone(), token.clone(), counter.clone());
                    move |headers: HeaderMap, body: axum::body::Bytes| {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        seen.lock().unwrap().push(("cs".into(), headers.clone(), body));
                        let answer = if headers.get("access_token").and_then(|v| v.to_str().ok())
                            != Some(token.lock().unwrap().as_str())
                        {
                            (200, json!({"error": -216, "message": "Access token is invalid"}))
                        } else if let Some(a) = script.lock().unwrap().pop_front() {
                            a
                        } else {
                            let mut n = counter.lock().unwrap();
                            *n += 1;
                            (200, json!({"error": 0, "message": "Success", "data": {"message_id": format!("oa-{n}")}}))
                        };
                        async move {
                            (StatusCode::from_u16(answer.0).unwrap(), axum::Json(answer.1))
                        }
                    }
                }),
            )
            .route(
                "/message/template",
                axum::routing::post({
                    let (seen, zns_script) = (seen.clone(), zns_script.clone());
                    move |headers: HeaderMap, body: axum::body::Bytes| {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        seen.lock().unwrap().push(("zns".into(), headers, body));
                        let answer = zns_script.lock().unwrap().pop_front().unwrap_or((
                            200,
                            json!({"error": 0, "message": "Success", "data": {"msg_id": "zns-1", "quota": {"remainingQuota": 499}}}),
                        ));
                        async move {
                            (StatusCode::from_u16(answer.0).unwrap(), axum::Json(answer.1))
                        }
                    }
                }),
            )
            .route(
                "/v4/oa/access_token",
                axum::routing::post({
                    let (seen, token) = (seen.clone(), token.clone());
                    move |headers: HeaderMap, body: String| {
                        seen.lock()
                            .unwrap()
                            .push(("oauth".into(), headers, Value::String(body)));
                        let mut t = token.lock().unwrap();
                        let n: u32 = t.trim_start_matches("at-").parse().unwrap_or(0) + 1;
                        *t = format!("at-{n}");
                        let answer = json!({"access_token": format!("at-{n}"), "refresh_token": format!("rt-{n}"), "expires_in": "90000"});
                        async move { axum::Json(answer) }
                    }
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        FakeZalo {
            addr,
            seen,
            script,
            zns_script,
            token,
        }
    }

    fn requests(&self, kind: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    fn answer_next(&self, status: u16, body: Value) {
        self.script.lock().unwrap().push_back((status, body));
    }
}

/// A host with abandoned-cart and zalo-oa installed, zalo-oa pointed at `zalo`.
async fn setup(zalo: &FakeZalo) -> (TestHost, TestTenant) {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(
        &t,
        "abandoned-cart",
        "journey-rule",
        plugins::ABANDONED_CART,
    )
    .await;
    configure(
        &h,
        &t,
        "abandoned-cart",
        json!({"config": {"zns_template_id": ZNS_TEMPLATE}}),
    )
    .await;
    h.install(&t, "zalo-oa", "channel-adapter", plugins::ZALO_OA)
        .await;
    let base = format!("http://{}", zalo.addr);
    configure(
        &h,
        &t,
        "zalo-oa",
        json!({
            "config": {"api_base": base, "zns_api_base": base, "oauth_base": base,
                       "app_id": APP_ID, "oa_id": "oa-1"},
            "secrets": {"access_token": "at-0", "refresh_token": "rt-0",
                        "app_secret": "app-secret", "oa_secret_key": OA_SECRET},
            "allowed_hosts": [zalo.addr.to_string()],
        }),
    )
    .await;
    (h, t)
}

async fn configure(h: &TestHost, t: &TestTenant, plugin: &str, body: Value) {
    let (s, v) = h
        .request(
            Method::PUT,
            &format!("/v1/plugins/{plugin}/config"),
            Some(&t.secret),
            body.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn segment(h: &TestHost, t: &TestTenant, call: &str, body: Value) {
    let (s, v) = h.segment(t, call, &body).await;
    assert_eq!(s, StatusCode::OK, "{call} {body}: {v}");
}

/// Lan: gold, a phone number, marketing accepted.
async fn lan(h: &TestHost, t: &TestTenant) {
    segment(
        h,
        t,
        "identify",
        json!({"userId": "lan", "traits": {"tier": "gold", "phone": "0901234567", "name": "Lan"},
               "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    )
    .await;
}

/// Posts a Zalo webhook signed as Zalo signs it; returns status and body.
async fn zalo_webhook(
    h: &TestHost,
    t: &TestTenant,
    mut body: Value,
    sign_with: &str,
) -> (StatusCode, Value) {
    let ts = h.clock.now_ms().to_string();
    body["timestamp"] = json!(ts);
    body["app_id"] = json!(APP_ID);
    let raw = body.to_string();
    let mac = Sha256::digest(format!("{APP_ID}{raw}{ts}{sign_with}").as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    h.request_with(
        Method::POST,
        &format!("/v1/webhooks/{}/zalo-oa", t.id),
        &[
            ("x-zevent-signature", format!("mac={hex}")),
            ("content-type", "application/json".into()),
        ],
        raw,
    )
    .await
}

/// Zalo user `zu-1` of OA `oa-1` shares Lan's phone, then writes to the OA.
async fn lan_on_zalo(h: &TestHost, t: &TestTenant) {
    let (s, v) = zalo_webhook(
        h,
        t,
        json!({"event_name": "user_submit_info", "oa_id": "oa-1",
               "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"},
               "info": {"name": "Lan", "phone": "0901234567"}}),
        OA_SECRET,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = zalo_webhook(
        h,
        t,
        json!({"event_name": "user_send_text", "oa_id": "oa-1",
               "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"},
               "message": {"msg_id": "in-1", "text": "Shop ơi, còn size M không?"}}),
        OA_SECRET,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.settle(t).await;
}

async fn cart(h: &TestHost, t: &TestTenant, cart: &str) {
    segment(
        h,
        t,
        "track",
        json!({"userId": "lan", "event": "Product Added", "messageId": format!("add-{cart}"),
               "properties": {"cart_id": cart, "product_id": "sku-7", "name": "Áo dài lụa"}}),
    )
    .await;
    h.settle(t).await;
}

async fn deliveries(h: &TestHost, t: &TestTenant, query: &str) -> Vec<Value> {
    h.get_ok(t, &format!("/v1/deliveries{query}")).await["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_reaches_zalo_oa_and_its_webhooks_fill_the_log_and_funnel() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    let v = h.get_ok(&t, "/v1/profiles/zalo:oa-1:zu-1").await;
    assert_eq!(
        v["profile"]["traits"]["name"], "Lan",
        "the hint merged the Zalo user into Lan: {v}"
    );

    cart(&h, &t, "c-1").await;
    h.advance(&t, HOUR).await;

    let sent = zalo.requests("cs");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["recipient"]["user_id"], "zu-1");
    assert!(sent[0]["message"]["text"]
        .as_str()
        .unwrap()
        .contains("GOLD10"));
    assert!(
        zalo.requests("zns").is_empty(),
        "inside the 48 h window: no ZNS"
    );
    let d = deliveries(&h, &t, "?channel=zalo-oa").await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["status"], "sent", "{}", d[0]);
    assert_eq!(d[0]["delivery"]["provider_message_id"], "oa-1");
    assert_eq!(d[0]["delivery"]["installation"], "zalo-oa");
    let intent = d[0]["intent_id"].as_str().unwrap().to_string();

    // Zalo reports delivery, then the read; the read comes twice (a provider retry).
    let delivered = json!({"event_name": "user_received_message", "oa_id": "oa-1",
        "sender": {"id": "oa-1"}, "recipient": {"id": "zu-1"}, "message": {"msg_ids": ["oa-1"]}});
    assert_eq!(
        zalo_webhook(&h, &t, delivered, OA_SECRET).await.0,
        StatusCode::OK
    );
    h.clock.advance(1_000);
    let seen = json!({"event_name": "user_seen_message", "oa_id": "oa-1",
        "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"}, "message": {"msg_ids": ["oa-1"]}});
    let ts = h.clock.now_ms();
    assert_eq!(
        zalo_webhook(&h, &t, seen.clone(), OA_SECRET).await.0,
        StatusCode::OK
    );
    assert_eq!(
        zalo_webhook(&h, &t, seen, OA_SECRET).await.0,
        StatusCode::OK
    );
    assert_eq!(h.clock.now_ms(), ts);
    h.settle(&t).await;

    let one = h.get_ok(&t, &format!("/v1/deliveries/{intent}")).await;
    assert_eq!(one["status"], "read", "{one}");
    let history: Vec<&str> = one["delivery"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["sent", "delivered", "read"],
        "the duplicate is ignored"
    );

    let funnel = h
        .get_ok(&t, "/v1/deliveries/funnel?journey=abandoned-cart")
        .await;
    let row = &funnel["funnel"][0];
    assert_eq!(
        (
            row["channel"].as_str(),
            row["sent"].as_u64(),
            row["delivered"].as_u64(),
            row["opened"].as_u64()
        ),
        (Some("zalo-oa"), Some(1), Some(1), Some(1)),
        "{funnel}"
    );
    assert_eq!(row["converted"], 0);

    // The events journeys can wait on are on the profile.
    let events = h
        .get_ok(&t, "/v1/profiles/user_id:lan/events?limit=50")
        .await;
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for n in [
        "Message Delivered",
        "Message Opened",
        "Message Received",
        "Identity Linked",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // A purchase within a week counts as a conversion.
    segment(
        &h,
        &t,
        "track",
        json!({"userId": "lan", "event": "Order Completed", "properties": {"order_id": "o-1", "revenue": 850000}}),
    )
    .await;
    h.settle(&t).await;
    let funnel = h.get_ok(&t, "/v1/deliveries/funnel").await;
    assert_eq!(funnel["funnel"][0]["converted"], 1, "{funnel}");

    // What Lan wrote is on her 360 view; erasing her leaves nothing that names her.
    let v = h.get_ok(&t, "/v1/profiles/user_id:lan").await;
    assert_eq!(
        v["conversations"][0]["text"], "Shop ơi, còn size M không?",
        "{v}"
    );
    let s = h.erase_profile(&t, "user_id:lan").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    h.settle(&t).await;
    let left: Vec<String> = h
        .app
        .state
        .db
        .scan_prefix(&weft::store::Space::tenant(&t.id), b"", usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.contains("zu-1") || k.contains("84901234567") || k.contains(&intent))
        .collect();
    assert!(left.is_empty(), "keys left after erasure: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_oa_window_the_reminder_falls_back_to_the_zns_template() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    // Lan last wrote 49 hours before the reminder is due.
    h.advance(&t, 48 * HOUR).await;
    cart(&h, &t, "c-2").await;
    h.advance(&t, HOUR).await;

    assert!(
        zalo.requests("cs").is_empty(),
        "the adapter refuses OA outside the window"
    );
    let zns = zalo.requests("zns");
    assert_eq!(zns.len(), 1, "{zns:?}");
    assert_eq!(zns[0]["phone"], "84901234567");
    assert_eq!(zns[0]["template_id"], ZNS_TEMPLATE);
    assert_eq!(zns[0]["template_data"]["discount_code"], "GOLD10");
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(d["channel"], "zns");
    assert_eq!(d["address"], "+84901234567");
    assert_eq!(
        d["delivery"]["fallbacks"][0], "zalo-oa: outside_window",
        "{d}"
    );
    assert_eq!(zns[0]["tracking_id"], d["intent_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_are_retried_with_backoff_then_sent_once() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    zalo.answer_next(503, json!({"error": -1}));
    zalo.answer_next(503, json!({"error": -1}));
    cart(&h, &t, "c-3").await;
    h.advance(&t, HOUR).await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "queued", "waiting for the retry: {d}");
    assert_eq!(d["delivery"]["attempts"], 1);
    let next = d["delivery"]["next_attempt_at"].as_i64().unwrap();
    let wait = next - h.clock.now_ms();
    assert!(
        (1_000..=1_500).contains(&wait),
        "first backoff about 1 s: {wait}"
    );
    h.advance(&t, wait).await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["delivery"]["attempts"], 2, "{d}");
    h.advance(&t, 5_000).await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(d["delivery"]["attempts"], 3);
    assert_eq!(zalo.requests("cs").len(), 3, "two failures, one success");
    h.advance(&t, HOUR).await;
    assert_eq!(zalo.requests("cs").len(), 3, "never sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_failing_every_try_is_dead_lettered_not_lost() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    for _ in 0..10 {
        zalo.answer_next(503, json!({"error": -1}));
    }
    cart(&h, &t, "c-4").await;
    h.advance(&t, HOUR).await;
    for _ in 0..10 {
        h.advance(&t, 60_000).await;
    }
    let d = &deliveries(&h, &t, "?status=dead_lettered").await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["delivery"]["attempts"], 6);
    assert_eq!(zalo.requests("cs").len(), 6, "MAX_ATTEMPTS tries, no more");

    // The provider is back: an operator replays the dead letter, once.
    zalo.script.lock().unwrap().clear();
    let intent = d[0]["intent_id"].as_str().unwrap();
    let retry = format!("/v1/deliveries/{intent}/retry");
    let (s, v) = h.request(Method::POST, &retry, Some(&t.secret), "").await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("queued")),
        "{v}"
    );
    h.settle(&t).await;
    let d = status_of(&h, &t, intent).await;
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(zalo.requests("cs").len(), 7);
    let (s, v) = h.request(Method::POST, &retry, Some(&t.secret), "").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "not_retryable"),
        "{v}"
    );
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/deliveries/nope/retry",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "delivery_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_once_and_the_send_retried() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    // The provider moved on to a newer token: the installation's `at-0` is now stale.
    *zalo.token.lock().unwrap() = "at-1".into();
    // Two carts, so two sends see the stale token.
    cart(&h, &t, "c-5").await;
    cart(&h, &t, "c-6").await;
    h.advance(&t, HOUR).await;
    let d = deliveries(&h, &t, "?status=sent").await;
    assert_eq!(d.len(), 2, "{:?}", deliveries(&h, &t, "").await);
    let refreshes = zalo.requests("oauth");
    assert_eq!(
        refreshes.len(),
        1,
        "both sends saw the stale token; one refresh, the single-use token used once: {refreshes:?}"
    );
    assert!(
        refreshes[0]
            .as_str()
            .unwrap()
            .contains("refresh_token=rt-0"),
        "{refreshes:?}"
    );
    let cs = zalo.requests("cs");
    assert!(
        (3..=4).contains(&cs.len()),
        "stale tries, then retries with the new token: {cs:?}"
    );
    let cfg = h.get_ok(&t, "/v1/plugins/zalo-oa/config").await;
    assert!(
        !cfg.to_string().contains("at-2"),
        "secret values are never shown: {cfg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_stale_webhooks_get_401_and_record_nothing() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    lan(&h, &t).await;
    let msg = json!({"event_name": "user_send_text", "oa_id": "oa-1",
        "sender": {"id": "zu-9"}, "recipient": {"id": "oa-1"}, "message": {"msg_id": "in-9", "text": "hi"}});
    let (s, v) = zalo_webhook(&h, &t, msg.clone(), "not-the-secret").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(error_code(&v), "bad_signature");
    // Signed correctly but ten minutes old.
    let ts = (h.clock.now_ms() - 10 * MINUTE).to_string();
    let mut stale = msg.clone();
    stale["timestamp"] = json!(ts);
    stale["app_id"] = json!(APP_ID);
    let raw = stale.to_string();
    let mac = Sha256::digest(format!("{APP_ID}{raw}{ts}{OA_SECRET}").as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    let (s, v) = h
        .request_with(
            Method::POST,
            &format!("/v1/webhooks/{}/zalo-oa", t.id),
            &[("x-zevent-signature", format!("mac={hex}"))],
            raw,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(error_code(&v), "stale_timestamp");
    h.settle(&t).await;
    let (s, _) = h
        .request(
            Method::GET,
            "/v1/profiles/zalo:oa-1:zu-9",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_for_unknown_installations_or_malformed_bodies_are_refused() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    let (s, v) = h
        .request(
            Method::POST,
            &format!("/v1/webhooks/{}/nope", t.id),
            None,
            "{}",
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "unknown_installation")
    );
    let (s, _) = h
        .request(Method::POST, "/v1/webhooks/t_unknown/zalo-oa", None, "{}")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A journey rule is not a webhook target.
    let (s, _) = h
        .request(
            Method::POST,
            &format!("/v1/webhooks/{}/abandoned-cart", t.id),
            None,
            "{}",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = zalo_webhook(&h, &t, json!({"oa_id": "oa-1"}), OA_SECRET).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "malformed_webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_filters_are_validated() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    for (q, needle) in [
        ("?status=lost", "unknown status `lost`"),
        ("?channel=fax", "unknown channel `fax`"),
        ("?limit=0", "limit must be 1 to 500"),
        ("?colour=red", "colour"),
        ("?profile=nokind", "expected `<kind>:<value>`"),
    ] {
        let (s, v) = h
            .request(
                Method::GET,
                &format!("/v1/deliveries{q}"),
                Some(&t.secret),
                "",
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{q}: {v}"
        );
    }
    let (s, v) = h
        .request(Method::GET, "/v1/deliveries/nope", Some(&t.secret), "")
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "delivery_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_cannot_reach_private_addresses_unless_the_operator_allows_them() {
    let zalo = FakeZalo::start().await;
    let h = TestHost::with_config(|c| c.runtime.allow_private_networks = false).await;
    let t = h.tenant().await;
    h.install(&t, "zalo-oa", "channel-adapter", plugins::ZALO_OA)
        .await;
    configure(
        &h,
        &t,
        "zalo-oa",
        json!({"config": {"api_base": format!("http://{}", zalo.addr)},
               "secrets": {"access_token": "at-0"}, "allowed_hosts": [zalo.addr.to_string()]}),
    )
    .await;
    let out = h
        .invoke(&t, "zalo-oa", &weft::samples::adapter_send("Xin chào"))
        .await;
    assert!(
        zalo.requests("cs").is_empty(),
        "nothing reached the provider"
    );
    let calls = &out["report"]["http_calls"];
    assert_eq!(calls[0]["method"], "POST", "{out}");
    assert!(
        calls[0]["error"]
            .as_str()
            .unwrap()
            .contains("private or local"),
        "{calls}"
    );
    assert!(calls[0].get("status").is_none());
}

/// A fake Twilio: every message is accepted as `SM<n>`; requests are kept.
struct FakeTwilio {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeTwilio {
    async fn start() -> FakeTwilio {
        FakeTwilio::answering_after(std::time::Duration::ZERO).await
    }

    /// A fake Twilio that takes `delay` to answer each message.
    async fn answering_after(delay: std::time::Duration) -> FakeTwilio {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(move |body: String| {
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(body);
                    l.len()
                };
                async move {
                    tokio::time::sleep(delay).await;
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"sid": format!("SM{n}"), "status": "queued"})),
                    )
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        FakeTwilio { addr, seen }
    }
}

const TWILIO_TOKEN: &str = "twilio-auth-token";
const TWILIO_HOOK: &str = "https://weft.example.vn/hooks/sms";

/// Posts a Twilio callback signed as Twilio signs it.
async fn twilio_webhook(
    h: &TestHost,
    t: &TestTenant,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = TWILIO_HOOK.to_string();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    h.request_with(
        Method::POST,
        &format!("/v1/webhooks/{}/sms", t.id),
        &[
            ("x-twilio-signature", sig),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zns_quota_used_up_falls_back_to_sms_and_stop_withdraws_sms_consent() {
    let zalo = FakeZalo::start().await;
    let twilio = FakeTwilio::start().await;
    let (h, t) = setup(&zalo).await;
    h.install(&t, "sms", "channel-adapter", plugins::SMS).await;
    configure(
        &h,
        &t,
        "sms",
        json!({"config": {"api_base": format!("http://{}", twilio.addr), "account_sid": "AC1",
                          "from_number": "+84900000000", "webhook_url": TWILIO_HOOK},
               "secrets": {"auth_token": TWILIO_TOKEN},
               "allowed_hosts": [twilio.addr.to_string()]}),
    )
    .await;
    lan(&h, &t).await; // a phone, no Zalo id: OA has no address, ZNS is next
    zalo.zns_script.lock().unwrap().push_back((
        200,
        json!({"error": -144, "message": "OA has exceeded the daily quota"}),
    ));
    cart(&h, &t, "c-7").await;
    h.advance(&t, HOUR).await;

    assert_eq!(zalo.requests("zns").len(), 1);
    let sms = twilio.seen.lock().unwrap().clone();
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert!(sms[0].contains("To=%2B84901234567"), "{}", sms[0]);
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(
        (d["channel"].as_str(), d["status"].as_str()),
        (Some("sms"), Some("sent")),
        "{d}"
    );
    assert_eq!(
        d["delivery"]["fallbacks"],
        json!(["zns: quota_exceeded"]),
        "no Zalo id, so the intent started on ZNS: {d}"
    );
    assert_eq!(d["delivery"]["provider_message_id"], "SM1");

    // Twilio's status callback, then the customer answers STOP.
    let (s, v) = twilio_webhook(
        &h,
        &t,
        &[
            ("MessageSid", "SM1"),
            ("MessageStatus", "delivered"),
            ("To", "+84901234567"),
            ("From", "+84900000000"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = twilio_webhook(
        &h,
        &t,
        &[
            ("MessageSid", "SM-in-1"),
            ("From", "+84901234567"),
            ("To", "+84900000000"),
            ("Body", "STOP"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.settle(&t).await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(
        d["status"], "replied",
        "delivered, then the customer answered: {d}"
    );
    let profile = h.get_ok(&t, "/v1/profiles/user_id:lan").await;
    let withdrawn: Vec<&str> = profile["profile"]["consents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"] == "sms" && c["granted"] == false)
        .map(|c| c["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(
        withdrawn,
        ["marketing", "transactional"],
        "STOP withdraws everything on SMS: {profile}"
    );

    // The next marketing reminder is not sent by SMS any more.
    zalo.zns_script.lock().unwrap().push_back((
        200,
        json!({"error": -144, "message": "OA has exceeded the daily quota"}),
    ));
    cart(&h, &t, "c-8").await;
    h.advance(&t, HOUR).await;
    assert_eq!(
        twilio.seen.lock().unwrap().len(),
        1,
        "no second SMS after STOP"
    );
    let d = &deliveries(&h, &t, "?status=failed").await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0]["delivery"]["fallbacks"]
            .to_string()
            .contains("sms: consent_withdrawn"),
        "{}",
        d[0]
    );
}

/// A host whose only adapter is `test-flaky-adapter` (as the SMS channel) in `mode`,
/// posting to a fake Twilio; adapter deadlines cut to 300 ms so a hang ends quickly.
async fn flaky(mode: &str) -> (TestHost, TestTenant, FakeTwilio) {
    let twilio = FakeTwilio::start().await;
    let h = TestHost::with_config(|c| c.runtime.channel_adapter.deadline_ms = 300).await;
    let t = h.tenant().await;
    h.install(
        &t,
        "abandoned-cart",
        "journey-rule",
        plugins::ABANDONED_CART,
    )
    .await;
    h.install(&t, "flaky", "channel-adapter", plugins::TEST_FLAKY_ADAPTER)
        .await;
    configure(
        &h,
        &t,
        "flaky",
        json!({"config": {"mode": mode,
                          "url": format!("http://{}/2010-04-01/Accounts/AC1/Messages.json", twilio.addr)},
               "allowed_hosts": [twilio.addr.to_string()]}),
    )
    .await;
    lan(&h, &t).await;
    cart(&h, &t, "c-9").await;
    h.advance(&t, HOUR).await;
    (h, t, twilio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_trapping_before_any_request_is_retried_then_dead_lettered() {
    let (h, t, twilio) = flaky("panic").await;
    for _ in 0..10 {
        h.advance(&t, 60_000).await;
    }
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "dead_lettered", "{d}");
    assert_eq!(d["channel"], "sms", "no ZNS adapter: fell back to SMS");
    assert_eq!(d["delivery"]["attempts"], 6);
    assert!(
        d["reason"].as_str().unwrap().contains("deliberate panic"),
        "{d}"
    );
    assert!(twilio.seen.lock().unwrap().is_empty(), "nothing was sent");
    let inv = h.get_ok(&t, "/v1/plugins/flaky/invocations").await;
    assert!(inv.to_string().contains("deliberate panic"), "{inv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_sleeping_through_wasi_before_its_request_still_sends() {
    let (h, t, twilio) = flaky("sleep-then-send").await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(twilio.seen.lock().unwrap().len(), 1);
    let inv = h.get_ok(&t, "/v1/plugins/flaky/invocations").await;
    let send = inv["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["call"] == "send")
        .unwrap_or_else(|| panic!("no send recorded: {inv}"));
    assert!(
        send["report"]["duration_us"].as_u64().unwrap() >= 50_000,
        "the adapter slept 50 ms: {send}"
    );
}

/// Sends whose adapters each sleep 50 ms through WASI before their request.
const SLEEPING_SENDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_sleeping_through_wasi_sleep_side_by_side_not_one_after_another() {
    let (h, t, twilio) = flaky("sleep-then-send").await;
    let before = twilio.seen.lock().unwrap().len();
    let start = std::time::Instant::now();
    post_sms_orders(&h, &t, "nap", SLEEPING_SENDS).await;
    h.settle(&t).await;
    let took = start.elapsed();
    assert_eq!(twilio.seen.lock().unwrap().len(), before + SLEEPING_SENDS);
    // One after another (a sleep holding the delivery pass) they need 10 x 50 ms at least.
    assert!(
        took < std::time::Duration::from_millis(350),
        "{SLEEPING_SENDS} sends sleeping 50 ms each took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_hanging_after_its_request_is_ambiguous_and_never_sent_twice() {
    let (h, t, twilio) = flaky("send-then-hang").await;
    let d = &deliveries(&h, &t, "").await[0];
    assert_eq!(d["status"], "ambiguous", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("deadline"), "{d}");
    h.advance(&t, HOUR).await;
    assert_eq!(
        twilio.seen.lock().unwrap().len(),
        1,
        "sent once, never again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_short_by_a_crash_is_ambiguous_not_resent() {
    let (h, t, twilio) = flaky("ok").await;
    let d = deliveries(&h, &t, "").await[0].clone();
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(twilio.seen.lock().unwrap().len(), 1);
    // What the disk holds if the server died after the request left but before the
    // outcome was written: the intent still queued and due, its in-flight marker set.
    let intent = d["intent_id"].as_str().unwrap();
    let mut queued = d.clone();
    queued["status"] = json!("queued");
    let sp = weft::store::Space::tenant(&t.id);
    let db = &h.app.state.db;
    db.put(
        &sp,
        format!("outbox/{intent}").as_bytes(),
        queued.to_string().as_bytes(),
    )
    .await
    .unwrap();
    db.put(
        &sp,
        weft::delivery::log::due_key(h.clock.now_ms(), intent).as_slice(),
        b"",
    )
    .await
    .unwrap();
    db.put(&sp, format!("dlvflight/{intent}").as_bytes(), b"1")
        .await
        .unwrap();
    h.settle(&t).await;
    let d = h.get_ok(&t, &format!("/v1/deliveries/{intent}")).await;
    assert_eq!(d["status"], "ambiguous", "{d}");
    assert_eq!(
        twilio.seen.lock().unwrap().len(),
        1,
        "not sent a second time"
    );
}

/// A host with only the SMS adapter, pointed at a fake Twilio, and Lan.
async fn sms_only() -> (TestHost, TestTenant, FakeTwilio) {
    let twilio = FakeTwilio::start().await;
    let (h, t) = sms_at(twilio.addr).await;
    (h, t, twilio)
}

/// A host with only the SMS adapter, pointed at a Twilio at `addr`, and Lan.
async fn sms_at(addr: SocketAddr) -> (TestHost, TestTenant) {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "sms", "channel-adapter", plugins::SMS).await;
    configure(
        &h,
        &t,
        "sms",
        json!({"config": {"api_base": format!("http://{addr}"), "account_sid": "AC1",
                          "from_number": "+84900000000", "webhook_url": TWILIO_HOOK},
               "secrets": {"auth_token": TWILIO_TOKEN},
               "allowed_hosts": [addr.to_string()]}),
    )
    .await;
    lan(&h, &t).await;
    h.settle(&t).await;
    (h, t)
}

/// A fake Twilio that answers 503 until it is told to hold, then keeps every request
/// waiting until it is released, counting the requests waiting at once.
#[derive(Clone)]
struct GatedTwilio {
    addr: SocketAddr,
    holding: Arc<std::sync::atomic::AtomicBool>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    most_waiting: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<Mutex<Vec<String>>>,
    released: Arc<tokio::sync::watch::Sender<bool>>,
}

impl GatedTwilio {
    async fn start() -> GatedTwilio {
        use std::sync::atomic::Ordering::SeqCst;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = GatedTwilio {
            addr: l.local_addr().unwrap(),
            holding: Arc::default(),
            waiting: Arc::default(),
            most_waiting: Arc::default(),
            accepted: Arc::default(),
            released: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let g = gate.clone();
        let app = axum::Router::new().route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(move |body: String| {
                let g = g.clone();
                async move {
                    if !g.holding.load(SeqCst) {
                        let busy = json!({"code": 20500, "message": "try later"});
                        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(busy));
                    }
                    let now = g.waiting.fetch_add(1, SeqCst) + 1;
                    g.most_waiting.fetch_max(now, SeqCst);
                    let mut open = g.released.subscribe();
                    let _ = open.wait_for(|r| *r).await;
                    g.waiting.fetch_sub(1, SeqCst);
                    let n = {
                        let mut a = g.accepted.lock().unwrap();
                        a.push(body);
                        a.len()
                    };
                    let sid = json!({"sid": format!("SM{n}"), "status": "queued"});
                    (StatusCode::CREATED, axum::Json(sid))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        gate
    }
}

/// Sends in the air at once in a test host: a quarter of its pool of 64 instances.
const TEST_SEND_SLOTS: usize = 16;

/// Sends `n` messages to a provider that keeps them all waiting: every send's first try
/// meets a 503, so all become due together at their retry; then the provider holds.
/// Returns the most requests waiting at once; after the release, checks each went out once.
async fn sends_waiting_together(n: usize) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let gate = GatedTwilio::start().await;
    let (h, t) = sms_at(gate.addr).await;
    post_sms_orders(&h, &t, "order", n).await;
    // First tries: all answered 503, retries due within 1.5 s of the frozen clock.
    h.settle(&t).await;
    gate.holding.store(true, SeqCst);
    h.clock.advance(2_000);
    h.app.state.deliveries.wake(&t.id);
    let expected = n.min(TEST_SEND_SLOTS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gate.waiting.load(SeqCst) < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {expected} sends reached the provider together",
            gate.waiting.load(SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Whatever else was going to start has had time to.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let most = gate.most_waiting.load(SeqCst);
    gate.released.send_replace(true);
    h.settle(&t).await;
    let accepted = gate.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), n, "each message sent once");
    let sent = deliveries(&h, &t, "?status=sent&limit=500").await;
    assert_eq!(sent.len(), n);
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_within_their_share_of_the_pool_all_wait_for_a_slow_provider_at_once() {
    assert_eq!(
        sends_waiting_together(TEST_SEND_SLOTS).await,
        TEST_SEND_SLOTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_their_share_of_the_pool_wait_for_a_free_slot() {
    assert_eq!(
        sends_waiting_together(3 * TEST_SEND_SLOTS).await,
        TEST_SEND_SLOTS,
        "a quarter of the pool in the air, the rest after them"
    );
}

/// Posts `n` transactional SMS to Lan at once (intent ids `<prefix>-<i>`); each is accepted.
async fn post_sms_orders(h: &TestHost, t: &TestTenant, prefix: &str, n: usize) {
    let bodies = (0..n).map(|i| {
        json!({"intent_id": format!("{prefix}-{i}"), "to": "user_id:lan", "channels": ["sms"],
               "category": "transactional", "content": [{"Text": format!("Đơn hàng #{i}")}]})
    });
    let answers = futures_util::future::join_all(bodies.map(|b| post_message(h, t, b))).await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
}

async fn post_message(h: &TestHost, t: &TestTenant, body: Value) -> (StatusCode, Value) {
    h.request(
        Method::POST,
        "/v1/messages",
        Some(&t.secret),
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_message_goes_through_the_pipeline_once_per_intent_id() {
    let (h, t, twilio) = sms_only().await;
    let msg = json!({"intent_id": "order-1001-confirm", "to": "phone:0901234567",
        "channels": ["zalo-oa", "sms"], "category": "transactional",
        "content": [{"Text": "Đơn hàng #1001 đã được xác nhận."}]});
    let (s, v) = post_message(&h, &t, msg.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["channel"].as_str()),
        (Some("queued"), Some("sms"))
    );
    h.settle(&t).await;
    let (s, v) = post_message(&h, &t, msg).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["duplicate"].as_bool(), v["status"].as_str()),
        (Some(true), Some("sent"))
    );
    h.settle(&t).await;
    let sent = twilio.seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("1001"), "{}", sent[0]);
    let d = h.get_ok(&t, "/v1/deliveries?profile=user_id:lan").await;
    assert_eq!(d["deliveries"][0]["journey"], "api", "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_are_all_recorded_and_a_repeated_intent_id_once() {
    let (h, t, twilio) = sms_only().await;
    // Eight distinct intents and one intent posted four times, all at once.
    let mut bodies: Vec<Value> = (1..=8)
        .map(|n| json!({"intent_id": format!("order-{n}"), "to": "user_id:lan", "channels": ["sms"],
                        "category": "transactional", "content": [{"Text": format!("Đơn hàng #{n}")}]}))
        .collect();
    for _ in 0..4 {
        bodies.push(
            json!({"intent_id": "order-same", "to": "user_id:lan", "channels": ["sms"],
                           "category": "transactional", "content": [{"Text": "Đơn hàng chung"}]}),
        );
    }
    let answers =
        futures_util::future::join_all(bodies.into_iter().map(|b| post_message(&h, &t, b))).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let duplicates = answers
        .iter()
        .filter(|(s, v)| *s == StatusCode::OK && v["duplicate"] == true)
        .count();
    assert_eq!((accepted, duplicates), (9, 3), "{answers:?}");
    h.settle(&t).await;
    let sent = twilio.seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 9, "one SMS per intent: {sent:?}");
    assert_eq!(sent.iter().filter(|b| b.contains("chung")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_webhooks_each_apply_once_and_in_status_order() {
    let (h, t, _twilio) = sms_only().await;
    let intents: Vec<String> = (1..=6).map(|n| format!("sms-{n}")).collect();
    for i in &intents {
        api_send(&h, &t, i, "sms").await;
    }
    let mut sids = Vec::new();
    for i in &intents {
        let d = status_of(&h, &t, i).await;
        sids.push(
            d["delivery"]["provider_message_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Every message's callbacks at once, each twice (Twilio retries): the tenant's
    // webhooks are applied in groups, each reading what the earlier ones wrote. First all
    // the `delivered`, then all the `read`.
    for status in ["delivered", "read"] {
        let params: Vec<[(&str, &str); 4]> = sids
            .iter()
            .flat_map(|sid| [sid, sid])
            .map(|sid| {
                [
                    ("MessageSid", sid.as_str()),
                    ("MessageStatus", status),
                    ("To", "+84901234567"),
                    ("From", "+84900000000"),
                ]
            })
            .collect();
        let answers =
            futures_util::future::join_all(params.iter().map(|p| twilio_webhook(&h, &t, p))).await;
        for (s, v) in answers {
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    }
    h.settle(&t).await;
    for i in &intents {
        let d = status_of(&h, &t, i).await;
        assert_eq!(d["status"], "read", "{d}");
    }
    let events = h
        .get_ok(&t, "/v1/profiles/user_id:lan/events?limit=100")
        .await;
    let count = |name: &str| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == name)
            .count()
    };
    assert_eq!(
        (count("Message Delivered"), count("Message Opened")),
        (intents.len(), intents.len()),
        "each provider event becomes one track event, duplicates none: {events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_marketing_message_in_quiet_hours_waits_for_the_morning() {
    let (h, t, twilio) = sms_only().await;
    // 23:00 in Ho Chi Minh City (NOW is 09:00 there).
    h.advance(&t, 14 * HOUR).await;
    let (s, v) = post_message(
        &h,
        &t,
        json!({"to": "user_id:lan", "channels": ["sms"], "category": "marketing",
               "content": [{"Text": "Sale 50% hôm nay"}]}),
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("held")),
        "{v}"
    );
    h.advance(&t, 7 * HOUR).await;
    assert!(twilio.seen.lock().unwrap().is_empty(), "still 06:00");
    h.advance(&t, HOUR).await;
    let sent = twilio.seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "sent at 07:00: {sent:?}");
    assert!(
        sent[0].contains("Reply%20STOP"),
        "marketing SMS carry the opt-out hint: {}",
        sent[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_message_bad_input_is_refused_with_the_problem_named() {
    let (h, t, twilio) = sms_only().await;
    let ok = json!({"to": "user_id:lan", "channels": ["sms"], "category": "transactional",
                    "content": [{"Text": "x"}]});
    let with = |k: &str, v: Value| {
        let mut m = ok.clone();
        m[k] = v;
        m
    };
    for (body, needle) in [
        (with("channels", json!(["fax"])), "unknown channel `fax`"),
        (with("channels", json!([])), "`channels` is empty"),
        (with("channels", json!(["sms", "sms"])), "named twice"),
        (with("category", json!("spam")), "unknown category `spam`"),
        (with("content", json!([])), "1 to 20 items"),
        (
            with("content", json!([{"Text": "x".repeat(40_000)}])),
            "the limit is 32768",
        ),
        (with("intent_id", json!("a b")), "invalid intent_id"),
        (with("to", json!("lan")), "expected `<kind>:<value>`"),
        (with("colour", json!("red")), "unknown field `colour`"),
    ] {
        let (s, v) = post_message(&h, &t, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let (s, v) = post_message(&h, &t, with("to", json!("user_id:nobody"))).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "profile_not_found")
    );
    h.settle(&t).await;
    assert!(twilio.seen.lock().unwrap().is_empty(), "nothing sent");
    assert!(deliveries(&h, &t, "").await.is_empty(), "nothing stored");
}

// ---------------------------------------------------------------------------------------
// Meta (Messenger, WhatsApp) and SendGrid
// ---------------------------------------------------------------------------------------

const PAGE: &str = "105000000000001";
const WA_NUMBER: &str = "106540352242922";
const META_SECRET: &str = "meta-app-secret";

/// A fake Graph API: Messenger sends answer `m_<n>`, WhatsApp sends `wamid.<n>`.
struct FakeGraph {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl FakeGraph {
    async fn start() -> FakeGraph {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/{ver}/{id}/messages",
            axum::routing::post(
                move |axum::extract::Path((_, id)): axum::extract::Path<(String, String)>,
                      body: axum::body::Bytes| {
                    let n = {
                        let mut l = log.lock().unwrap();
                        l.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        l.len()
                    };
                    let answer = if id == WA_NUMBER {
                        json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.{n}")}]})
                    } else {
                        json!({"recipient_id": "psid-lan", "message_id": format!("m_{n}")})
                    };
                    async move { axum::Json(answer) }
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        FakeGraph { addr, seen }
    }
}

/// Posts a Meta webhook signed with `X-Hub-Signature-256`.
async fn meta_webhook(
    h: &TestHost,
    t: &TestTenant,
    installation: &str,
    body: &Value,
) -> StatusCode {
    use hmac::Mac as _;
    let raw = body.to_string();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(META_SECRET.as_bytes()).unwrap();
    mac.update(raw.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (s, v) = h
        .request_with(
            Method::POST,
            &format!("/v1/webhooks/{}/{installation}", t.id),
            &[("x-hub-signature-256", format!("sha256={hex}"))],
            raw,
        )
        .await;
    assert!(s.is_success(), "{v}");
    s
}

/// A host with `messenger` and `whatsapp-cloud` pointed at a fake Graph API, and Lan
/// (phone, and a Messenger PSID on the page).
async fn meta() -> (TestHost, TestTenant, FakeGraph) {
    let graph = FakeGraph::start().await;
    let h = TestHost::new().await;
    let t = h.tenant().await;
    for (name, wasm, cfg) in [
        ("messenger", plugins::MESSENGER, json!({"page_id": PAGE})),
        (
            "whatsapp-cloud",
            plugins::WHATSAPP_CLOUD,
            json!({"phone_number_id": WA_NUMBER}),
        ),
    ] {
        h.install(&t, name, "channel-adapter", wasm).await;
        let mut config = cfg;
        config["api_base"] = json!(format!("http://{}", graph.addr));
        configure(
            &h,
            &t,
            name,
            json!({"config": config, "secrets": {"access_token": "page-token", "app_secret": META_SECRET},
                   "allowed_hosts": [graph.addr.to_string()]}),
        )
        .await;
    }
    segment(
        &h,
        &t,
        "identify",
        json!({"userId": "lan", "traits": {"phone": "0901234567", "name": "Lan"},
               "context": {"externalIds": [{"type": format!("psid:{PAGE}"), "id": "psid-lan"}]}}),
    )
    .await;
    h.settle(&t).await;
    (h, t, graph)
}

async fn api_send(h: &TestHost, t: &TestTenant, intent: &str, channel: &str) {
    let (s, v) = post_message(
        h,
        t,
        json!({"intent_id": intent, "to": "user_id:lan", "channels": [channel],
               "category": "transactional", "content": [{"Text": format!("tin nhắn {intent}")}]}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    h.settle(t).await;
}

async fn status_of(h: &TestHost, t: &TestTenant, intent: &str) -> Value {
    h.get_ok(t, &format!("/v1/deliveries/{intent}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_statuses_out_of_order_end_in_the_right_state() {
    let (h, t, graph) = meta().await;
    // Lan writes first: the 24 h window opens, so free-form text may go out.
    let inbound = json!({"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": WA_NUMBER},
                  "contacts": [{"wa_id": "84901234567", "profile": {"name": "Lan"}}],
                  "messages": [{"from": "84901234567", "id": "wamid.in1", "timestamp": "1795312800", "type": "text", "text": {"body": "Còn hàng không?"}}]}}]}]});
    meta_webhook(&h, &t, "whatsapp-cloud", &inbound).await;
    h.settle(&t).await;
    api_send(&h, &t, "wa-1", "whatsapp").await;
    api_send(&h, &t, "wa-2", "whatsapp").await;
    let sent = graph.seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["to"], "84901234567");
    assert_eq!(sent[0]["type"], "text", "inside the window: free-form");
    let wamid = |i: &Value| {
        i["delivery"]["provider_message_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (w1, w2) = (
        wamid(&status_of(&h, &t, "wa-1").await),
        wamid(&status_of(&h, &t, "wa-2").await),
    );
    let statuses = |list: Vec<(&str, &str)>| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": WA_NUMBER},
                      "statuses": list.iter().map(|(id, st)| json!({"id": id, "status": st, "timestamp": "1795312900",
                          "recipient_id": "84901234567",
                          "errors": if *st == "failed" { json!([{"code": 131026, "title": "Message undeliverable"}]) } else { json!(null) }}))
                          .collect::<Vec<_>>()}}]}]})
    };
    // wa-1: read arrives before delivered. wa-2: failed, then a late delivered.
    meta_webhook(
        &h,
        &t,
        "whatsapp-cloud",
        &statuses(vec![(&w1, "read"), (&w2, "failed")]),
    )
    .await;
    meta_webhook(
        &h,
        &t,
        "whatsapp-cloud",
        &statuses(vec![(&w1, "delivered"), (&w2, "delivered")]),
    )
    .await;
    h.settle(&t).await;
    let one = status_of(&h, &t, "wa-1").await;
    assert_eq!(one["status"], "read", "{one}");
    let two = status_of(&h, &t, "wa-2").await;
    assert_eq!(two["status"], "failed", "{two}");
    assert!(two["reason"].as_str().unwrap().contains("131026"), "{two}");
    let funnel = h.get_ok(&t, "/v1/deliveries/funnel?channel=whatsapp").await;
    let row = &funnel["funnel"][0];
    assert_eq!(
        (
            row["sent"].as_u64(),
            row["delivered"].as_u64(),
            row["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{funnel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messenger_read_watermark_covers_every_earlier_message_and_no_later_one() {
    let (h, t, graph) = meta().await;
    for n in 1..=3 {
        api_send(&h, &t, &format!("fb-{n}"), "messenger").await;
        h.advance(&t, 1_000).await;
    }
    let watermark = h.clock.now_ms();
    h.advance(&t, 5_000).await;
    api_send(&h, &t, "fb-4", "messenger").await;
    let sent = graph.seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0]["recipient"]["id"], "psid-lan");
    let read = json!({"object": "page", "entry": [{"id": PAGE, "time": watermark, "messaging": [
        {"sender": {"id": "psid-lan"}, "recipient": {"id": PAGE}, "timestamp": watermark, "read": {"watermark": watermark}}]}]});
    meta_webhook(&h, &t, "messenger", &read).await;
    // The same report again (Meta retries): nothing changes.
    meta_webhook(&h, &t, "messenger", &read).await;
    h.settle(&t).await;
    for n in 1..=3 {
        let d = status_of(&h, &t, &format!("fb-{n}")).await;
        assert_eq!(d["status"], "read", "fb-{n}: {d}");
        assert_eq!(
            d["delivery"]["history"].as_array().unwrap().len(),
            2,
            "sent, read once: {d}"
        );
    }
    assert_eq!(
        status_of(&h, &t, "fb-4").await["status"],
        "sent",
        "sent after the watermark"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_open_and_click_events_signed_by_sendgrid_reach_the_funnel() {
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/v3/mail/send",
        axum::routing::post(move |body: axum::body::Bytes| {
            log.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            async move { (StatusCode::ACCEPTED, [("x-message-id", "sgmsg1")], "") }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let public = p256::PublicKey::from(*key.verifying_key())
        .to_public_key_der()
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;

    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "email", "channel-adapter", plugins::EMAIL)
        .await;
    configure(
        &h,
        &t,
        "email",
        json!({"config": {"api_base": format!("http://{addr}"), "from_email": "shop@example.vn",
                          "webhook_public_key": b64.encode(public.as_bytes()), "webhook_max_skew_ms": "0"},
               "secrets": {"api_key": "SG.key"}, "allowed_hosts": [addr.to_string()]}),
    )
    .await;
    segment(
        &h,
        &t,
        "identify",
        json!({"userId": "lan", "traits": {"email": "lan@example.vn"}}),
    )
    .await;
    h.settle(&t).await;
    api_send(&h, &t, "mail-1", "email").await;
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["personalizations"][0]["to"][0]["email"],
        "lan@example.vn"
    );
    assert_eq!(
        sent[0]["personalizations"][0]["custom_args"]["weft_intent"],
        "mail-1"
    );

    let events = json!([
        {"email": "lan@example.vn", "timestamp": 1795312900, "event": "delivered", "sg_event_id": "e1", "sg_message_id": "sgmsg1.filterdrecv-1"},
        {"email": "lan@example.vn", "timestamp": 1795312950, "event": "open", "sg_event_id": "e2", "sg_message_id": "sgmsg1.filterdrecv-1"},
        {"email": "lan@example.vn", "timestamp": 1795313000, "event": "click", "url": "https://shop.example.vn/cart", "sg_event_id": "e3", "sg_message_id": "sgmsg1.filterdrecv-1"}
    ])
    .to_string();
    let ts = "1795312999";
    let sig: p256::ecdsa::Signature = key.sign(format!("{ts}{events}").as_bytes());
    let post = |sig: String| {
        let events = events.clone();
        let h = &h;
        let t = &t;
        async move {
            h.request_with(
                Method::POST,
                &format!("/v1/webhooks/{}/email", t.id),
                &[
                    ("x-twilio-email-event-webhook-signature", sig),
                    ("x-twilio-email-event-webhook-timestamp", ts.to_string()),
                ],
                events,
            )
            .await
        }
    };
    let forged: p256::ecdsa::Signature = key.sign(b"something else");
    let (s, v) = post(b64.encode(forged.to_der().as_bytes())).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    let (s, v) = post(b64.encode(sig.to_der().as_bytes())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.settle(&t).await;
    let d = status_of(&h, &t, "mail-1").await;
    assert_eq!(d["status"], "clicked", "{d}");
    let funnel = h.get_ok(&t, "/v1/deliveries/funnel?channel=email").await;
    let row = &funnel["funnel"][0];
    assert_eq!(
        (
            row["sent"].as_u64(),
            row["delivered"].as_u64(),
            row["opened"].as_u64(),
            row["clicked"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{funnel}"
    );
    let events = h
        .get_ok(&t, "/v1/profiles/user_id:lan/events?limit=20")
        .await;
    let clicked = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "Message Clicked")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(clicked["properties"]["url"], "https://shop.example.vn/cart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_calling_a_host_off_its_allowlist_fails_the_send_with_the_call_recorded() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    // The provider is no longer on the installation's allowlist.
    let base = format!("http://{}", zalo.addr);
    configure(
        &h,
        &t,
        "zalo-oa",
        json!({"config": {"api_base": base, "zns_api_base": base, "app_id": APP_ID, "oa_id": "oa-1"},
               "secrets": {"access_token": "at-0", "oa_secret_key": OA_SECRET},
               "allowed_hosts": ["openapi.zalo.me"]}),
    )
    .await;
    lan(&h, &t).await;
    lan_on_zalo(&h, &t).await;
    cart(&h, &t, "c-10").await;
    h.advance(&t, HOUR).await;
    assert!(
        zalo.requests("cs").is_empty() && zalo.requests("zns").is_empty(),
        "nothing sent"
    );
    let d = &deliveries(&h, &t, "").await[0];
    assert!(
        matches!(d["status"].as_str(), Some("failed" | "dead_lettered")),
        "{d}"
    );
    let inv = h
        .get_ok(&t, "/v1/plugins/zalo-oa/invocations?limit=5")
        .await;
    assert!(
        inv.to_string()
            .contains("not on this installation's allowlist"),
        "the refused call is on the invocation record: {inv}"
    );
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_value(body: &str, name: &str) -> String {
    let raw = body
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .replace('+', " ");
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_tracked_on_any_channel_and_a_click_reaches_the_log_and_redirects() {
    let twilio = FakeTwilio::start().await;
    let h = TestHost::with_config(|c| c.public_url = Some("https://weft.example.vn".into())).await;
    let t = h.tenant().await;
    h.install(&t, "sms", "channel-adapter", plugins::SMS).await;
    configure(
        &h,
        &t,
        "sms",
        json!({"config": {"api_base": format!("http://{}", twilio.addr), "account_sid": "AC1",
                          "from_number": "+84900000000", "webhook_url": TWILIO_HOOK},
               "secrets": {"auth_token": TWILIO_TOKEN}, "allowed_hosts": [twilio.addr.to_string()]}),
    )
    .await;
    lan(&h, &t).await;
    h.settle(&t).await;
    let (s, v) = post_message(
        &h,
        &t,
        json!({"intent_id": "ship-1", "to": "user_id:lan", "channels": ["sms"], "category": "transactional",
               "content": [{"Text": "Đơn hàng đang giao: https://shop.vn/track/1001."}]}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    h.settle(&t).await;
    let body = form_value(&twilio.seen.lock().unwrap()[0], "Body");
    let start = body.find("https://weft.example.vn/v1/c/").expect(&body);
    let tracked: String = body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('.')
        .to_string();
    assert!(
        !body.contains("shop.vn"),
        "the original URL is not sent: {body}"
    );
    let path = tracked.trim_start_matches("https://weft.example.vn");
    use tower::ServiceExt as _;
    let resp = weft::api::router(h.app.state.clone())
        .oneshot(
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "https://shop.vn/track/1001");
    h.settle(&t).await;
    let d = status_of(&h, &t, "ship-1").await;
    assert_eq!(d["status"], "clicked", "{d}");
    // A forged token, or another tenant's path, finds nothing.
    let last = if path.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &path[..path.len() - 1]);
    for p in [forged.as_str(), &path.replace(&t.id, "t_other")] {
        let (s, v) = h.request(Method::GET, p, None, "").await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::NOT_FOUND, "link_not_found"),
            "{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sends_share_the_instance_pool_without_exhausting_it() {
    // A pool of 4 instances, 40 sends, a provider taking 100 ms (so sends overlap; the
    // worker runs up to 64 at once): every send waits for a slot instead of failing to
    // instantiate.
    let twilio = FakeTwilio::answering_after(std::time::Duration::from_millis(100)).await;
    let h = TestHost::with_config(|c| c.runtime.pool_instances = 4).await;
    let t = h.tenant().await;
    h.install(&t, "sms", "channel-adapter", plugins::SMS).await;
    configure(
        &h,
        &t,
        "sms",
        json!({"config": {"api_base": format!("http://{}", twilio.addr), "account_sid": "AC1",
                          "from_number": "+84900000000", "webhook_url": TWILIO_HOOK},
               "secrets": {"auth_token": TWILIO_TOKEN}, "allowed_hosts": [twilio.addr.to_string()]}),
    )
    .await;
    lan(&h, &t).await;
    h.settle(&t).await;
    for n in 0..40 {
        let (s, v) = post_message(
            &h,
            &t,
            json!({"intent_id": format!("bulk-{n}"), "to": "user_id:lan", "channels": ["sms"],
                   "category": "transactional", "content": [{"Text": format!("tin {n}")}]}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    h.settle(&t).await;
    let d = h.get_ok(&t, "/v1/deliveries?limit=100").await;
    let all = d["deliveries"].as_array().unwrap();
    assert_eq!(all.len(), 40);
    for r in all {
        assert_eq!(
            (r["status"].as_str(), r["delivery"]["attempts"].as_u64()),
            (Some("sent"), Some(1)),
            "{r}"
        );
    }
    assert_eq!(twilio.seen.lock().unwrap().len(), 40);
}

/// Waits (real time: the delivery worker runs by itself) until an OA send to the fake
/// Zalo contains `needle`; returns every OA message body sent so far, as JSON text.
async fn zalo_sent(zalo: &FakeZalo, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sent: Vec<String> = zalo
            .requests("cs")
            .iter()
            .map(|b| b["message"].to_string())
            .collect();
        if sent.iter().any(|m| m.contains(needle)) {
            return sent;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OA send contains {needle:?}: {sent:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A customer's Zalo message, signed as Zalo signs it.
async fn zalo_says(h: &TestHost, t: &TestTenant, id: &str, text: &str) {
    let (s, v) = zalo_webhook(
        h,
        t,
        json!({"event_name": "user_send_text", "oa_id": "oa-1",
               "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"},
               "message": {"msg_id": id, "text": text}}),
        OA_SECRET,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zalo_messages_run_the_chatbot_and_agent_replies_and_csat_go_out_through_zalo() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    h.install(&t, "faq-bot", "chatbot-flow", plugins::FAQ_BOT)
        .await;
    lan(&h, &t).await;
    h.settle(&t).await;
    // Lan links her Zalo account and writes a FAQ keyword: the bot greets her on Zalo,
    // its quick replies as Zalo buttons.
    let (s, v) = zalo_webhook(
        &h,
        &t,
        json!({"event_name": "user_submit_info", "oa_id": "oa-1",
               "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"},
               "info": {"name": "Lan", "phone": "0901234567"}}),
        OA_SECRET,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    zalo_says(&h, &t, "in-1", "giao hàng").await;
    let sent = zalo_sent(&zalo, "Xin chào").await;
    assert!(sent[0].contains("topic:shipping"), "{sent:#?}");
    // The same provider message again (Zalo retries webhooks): no second turn.
    zalo_says(&h, &t, "in-1", "giao hàng").await;
    // A question inside the session is answered.
    zalo_says(&h, &t, "in-2", "phí ship thế nào").await;
    zalo_sent(&zalo, "500.000").await;
    // Handoff, then an agent's reply reaches Zalo.
    zalo_says(&h, &t, "in-3", "cho mình gặp nhân viên").await;
    zalo_sent(&zalo, "chuyển bạn tới nhân viên").await;
    let q = h.get_ok(&t, "/v1/conversations?profile=user_id:lan").await;
    let conv = q["conversations"][0].clone();
    assert_eq!(conv["channel"], "zalo-oa", "{q}");
    assert_eq!(conv["state"], "waiting_for_agent", "{q}");
    let id = conv["id"].as_str().unwrap();
    let (s, a) = h
        .request(
            Method::POST,
            "/v1/agents",
            Some(&t.secret),
            json!({"name": "Hoa"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let hoa = a["token"].as_str().unwrap().to_string();
    let (s, _) = h
        .request(
            Method::POST,
            &format!("/v1/agent/conversations/{id}/messages"),
            Some(&hoa),
            json!({"text": "Chào chị Lan, em là Hoa ạ."}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    zalo_sent(&zalo, "em là Hoa").await;
    // Resolved: the CSAT question goes out with buttons 1–5; pressing 5 answers it.
    let (s, _) = h
        .request(
            Method::POST,
            &format!("/v1/agent/conversations/{id}/resolve"),
            Some(&hoa),
            axum::body::Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    zalo_sent(&zalo, "csat:5").await;
    zalo_says(&h, &t, "in-4", "csat:5").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rep = h.get_ok(&t, "/v1/reports/csat").await;
        if rep["answered"] == 1 {
            assert_eq!(rep["score"], 100.0, "{rep}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rep}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Every message of the conversation is stored, in order, the duplicate once.
    let c = h.get_ok(&t, &format!("/v1/conversations/{id}")).await;
    let visitor: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "visitor")
        .map(|m| m["content"][0]["Text"].as_str().unwrap())
        .collect();
    assert_eq!(
        visitor,
        [
            "giao hàng",
            "phí ship thế nào",
            "cho mình gặp nhân viên",
            "csat:5"
        ],
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_customer_message_gets_its_turn_after_a_crash() {
    let zalo = FakeZalo::start().await;
    let (h, t) = setup(&zalo).await;
    h.install(&t, "faq-bot", "chatbot-flow", plugins::FAQ_BOT)
        .await;
    lan(&h, &t).await;
    let (s, v) = zalo_webhook(
        &h,
        &t,
        json!({"event_name": "user_submit_info", "oa_id": "oa-1",
               "sender": {"id": "zu-1"}, "recipient": {"id": "oa-1"},
               "info": {"name": "Lan", "phone": "0901234567"}}),
        OA_SECRET,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.settle(&t).await;
    // What the webhook queues with the stored message, as if the process died before the
    // conversation engine ran the turn.
    let m = weft::runtime::bindings::exports::adapter::InboundMessage {
        provider_message_id: "in-crash-1".into(),
        sender: weft::runtime::bindings::types::Identity {
            kind: "zalo:oa-1".into(),
            value: "zu-1".into(),
        },
        conversation_id: "zu-1".into(),
        content: vec![weft::runtime::bindings::types::Content::Text(
            "giao hàng".into(),
        )],
        postback: None,
        occurred_at: 0,
    };
    let op = weft::conversations::store::inbound_op(1, "zalo-oa", "zalo-oa", &m).unwrap();
    h.app
        .state
        .db
        .apply_batch(&weft::store::Space::tenant(&t.id), vec![op])
        .await
        .unwrap();
    // The engine's timer loop finds it: the bot greets Lan on Zalo, once.
    h.app.state.conversations.tick().await.unwrap();
    zalo_sent(&zalo, "Xin chào").await;
    h.app.state.conversations.tick().await.unwrap();
    let left = h
        .app
        .state
        .db
        .scan_prefix(&weft::store::Space::tenant(&t.id), b"cvi/", 10)
        .await
        .unwrap();
    assert!(left.is_empty(), "dequeued once its turn is stored");
    let greetings = zalo
        .requests("cs")
        .iter()
        .filter(|b| b["message"].to_string().contains("Xin chào"))
        .count();
    assert_eq!(greetings, 1);
}
