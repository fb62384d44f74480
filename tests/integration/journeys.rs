//! The journey engine end to end: events in over the Segment API, the real processor,
//! journey-rule plugins on the real runtime, timers on the manual clock, and the outbox.
//! Scenarios from `../shared/design/domain.md` §10 that belong to the journeys issue.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft::clock::Clock as _;
use weft_tests::{plugins, TestHost, TestTenant};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

async fn host_with(journeys: &[(&str, &str)]) -> (TestHost, TestTenant) {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    for (name, wasm) in journeys {
        h.install(&t, name, "journey-rule", wasm).await;
    }
    (h, t)
}

async fn send(h: &TestHost, t: &TestTenant, call: &str, body: Value) {
    let (s, v) = h.segment(t, call, &body).await;
    assert_eq!(s, StatusCode::OK, "{call} {body}: {v}");
}

async fn view(h: &TestHost, t: &TestTenant, id: &str) -> Value {
    h.get_ok(t, &format!("/v1/profiles/{id}")).await
}

/// A gold customer with a phone number who accepted marketing.
async fn gold_customer(h: &TestHost, t: &TestTenant, user: &str) {
    send(
        h,
        t,
        "identify",
        json!({"userId": user, "traits": {"tier": "gold", "phone": "0901234567", "name": "Lan"},
        "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    )
    .await;
}

/// Abandoned-cart installed, and gold customer `user`'s cart `c-1` waiting for its reminder.
async fn cart_waiting_for_its_reminder(user: &str) -> (TestHost, TestTenant) {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    gold_customer(&h, &t, user).await;
    send(&h, &t, "track", cart_added(user, "c-1", "m-1")).await;
    h.settle(&t).await;
    (h, t)
}

fn cart_added(user: &str, cart: &str, message: &str) -> Value {
    json!({"userId": user, "event": "Product Added", "messageId": message,
        "properties": {"cart_id": cart, "product_id": "sku-7", "name": "Áo dài lụa"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_reminds_after_an_hour_with_a_gold_code_and_issues_the_coupon() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    let v = view(&h, &t, "user_id:lan").await;
    let ji = &v["journeys"][0];
    assert_eq!(ji["journey"], "abandoned-cart");
    assert_eq!(ji["status"], "waiting", "{v}");
    assert_eq!(ji["step"], "remind");
    assert_eq!(ji["entry_key"], "c-1");
    assert_eq!(ji["context"]["cart_id"], "c-1");
    assert!(v["deliveries"].as_array().unwrap().is_empty());

    // 59 minutes: nothing yet. 60: the reminder.
    h.advance(&t, 59 * MINUTE).await;
    assert!(view(&h, &t, "user_id:lan").await["deliveries"]
        .as_array()
        .unwrap()
        .is_empty());
    h.advance(&t, MINUTE).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"][0]["status"], "exited");
    assert_eq!(v["journeys"][0]["exit_reason"], "reminded");
    let d = &v["deliveries"][0];
    assert_eq!(d["status"], "queued", "{d}");
    assert_eq!(d["channel"], "zns", "no Zalo id, so ZNS to the phone");
    assert_eq!(d["address"], "+84901234567");
    assert_eq!(d["category"], "marketing");
    assert!(
        d["content"][0]["Text"].as_str().unwrap().contains("GOLD10"),
        "{d}"
    );
    // The emitted event landed on the profile.
    assert_eq!(v["events"]["Coupon Issued"]["total"], 1, "{v}");
    let page = h.get_ok(&t, "/v1/profiles/user_id:lan/events").await;
    let coupon = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "Coupon Issued")
        .unwrap()
        .clone();
    assert_eq!(coupon["properties"]["coupon"], "GOLD10");
    assert_eq!(coupon["properties"]["cart_id"], "c-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_status_counts_the_journey_work_of_events_until_it_is_done() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    let status = |v: &Value| {
        let j = &v["journeys"];
        (
            v["backlog"].as_u64(),
            j["items_run"].as_u64(),
            j["busy"].as_bool(),
        )
    };
    let idle = h.get_ok(&t, "/v1/ingest/status").await;
    assert_eq!(status(&idle), (Some(0), Some(0), Some(false)), "{idle}");
    for n in 0..3 {
        let cart = format!("c-{n}");
        send(&h, &t, "track", cart_added("lan", &cart, &format!("m-{n}"))).await;
    }
    // The processor's backlog empties first; the journey entries its events made run after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let v = h.get_ok(&t, "/v1/ingest/status").await;
        if status(&v).0 == Some(0) && status(&v).2 == Some(false) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never done: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(done["processed"], 3, "{done}");
    assert_eq!(status(&done).1, Some(3), "one entry per cart: {done}");
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"].as_array().map(Vec::len), Some(3), "{v}");
}

/// A store written before the runner had lanes keeps its work at `jq/<seq>`: after the
/// upgrade (a restart) the items move into their profile's lane and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_before_lanes_runs_after_a_restart() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    let v = view(&h, &t, "user_id:lan").await;
    let iid = v["journeys"][0]["id"].as_str().unwrap().to_string();
    let sp = weft::store::Space::tenant(&t.id);
    let legacy = json!({"work": "exit", "instance": iid, "reason": "queued before lanes"});
    h.app
        .state
        .db
        .backend()
        .put(&sp, b"jq/0000000000000001", legacy.to_string().as_bytes())
        .unwrap();
    let h = h.restart().await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    let ji = &v["journeys"][0];
    assert_eq!(ji["status"], "exited", "{v}");
    assert_eq!(ji["exit_reason"], "queued before lanes", "{v}");
    let b = h.app.state.db.backend().clone();
    assert!(b.scan_prefix(&sp, b"jq/", 1).unwrap().is_empty());
    assert!(b.scan_prefix(&sp, b"jl/", 1).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_exits_the_instance_and_cancels_the_reminder() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    h.advance(&t, 30 * MINUTE).await;
    send(
        &h,
        &t,
        "track",
        json!({"userId": "lan", "event": "Order Completed",
        "properties": {"cart_id": "c-1", "revenue": 900000}}),
    )
    .await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"][0]["status"], "exited");
    assert_eq!(
        v["journeys"][0]["exit_reason"],
        "exit event: Order Completed"
    );
    // The timer fires later and finds nothing to do.
    h.advance(&t, 2 * HOUR).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert!(v["deliveries"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["journeys"][0]["steps_run"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_per_cart_and_duplicate_events_start_nothing_new() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    gold_customer(&h, &t, "lan").await;
    send(&h, &t, "track", cart_added("lan", "c-1", "m-1")).await;
    send(&h, &t, "track", cart_added("lan", "c-1", "m-1")).await; // same messageId
    send(&h, &t, "track", cart_added("lan", "c-1", "m-2")).await; // same cart, still running
    send(&h, &t, "track", cart_added("lan", "c-2", "m-3")).await; // another cart
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    let mut carts: Vec<String> = v["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["entry_key"].as_str().unwrap().to_string())
        .collect();
    carts.sort();
    assert_eq!(carts, ["c-1", "c-2"]);
    h.advance(&t, HOUR).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 2);
    // After exit, the same cart may enter again (re-entry after-exit).
    send(&h, &t, "track", cart_added("lan", "c-1", "m-4")).await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_survive_a_restart_and_fire_once() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    let now = h.clock.now_ms();
    let dir = h.dir;
    drop(h.app);
    let config = weft::app::App::test_config(dir.path());
    let h2 = TestHost::open_at(dir, config).await;
    h2.clock.set(now + HOUR);
    h2.settle(&t).await;
    h2.settle(&t).await;
    let v = view(&h2, &t, "user_id:lan").await;
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["journeys"][0]["exit_reason"], "reminded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_timer_guard_is_kept_a_day_then_expires() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    h.advance(&t, HOUR).await;
    let fired = || async {
        h.app
            .state
            .db
            .scan_prefix(&weft::store::Space::tenant(&t.id), b"fd/", 100)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(fired().await, 1, "the reminder's timer fired once");
    // Within the window the guard stays, whatever the sweep.
    h.clock.advance(23 * HOUR);
    h.app.state.ingest.expire_markers().await.unwrap();
    assert_eq!(fired().await, 1);
    // Two windows on, it is gone.
    h.clock.advance(25 * HOUR);
    h.app.state.ingest.expire_markers().await.unwrap();
    assert_eq!(fired().await, 0);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketing_without_consent_is_skipped_and_recorded() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    send(
        &h,
        &t,
        "identify",
        json!({"userId": "an", "traits": {"phone": "0912345678"}}),
    )
    .await;
    send(&h, &t, "track", cart_added("an", "c-9", "m-9")).await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await;
    let v = view(&h, &t, "user_id:an").await;
    assert_eq!(v["deliveries"][0]["status"], "skipped");
    assert_eq!(v["deliveries"][0]["reason"], "no_consent");
    // The journey still advanced and ended.
    assert_eq!(v["journeys"][0]["status"], "exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_steps_are_retried_with_backoff_then_parked_with_the_error_visible() {
    let (h, t) = host_with(&[("spin", plugins::TEST_SPIN_LOOP)]).await;
    // test-spin-loop enters on `Test Started`; every step runs out of time.
    send(
        &h,
        &t,
        "track",
        json!({"userId": "p", "event": "Test Started"}),
    )
    .await;
    h.settle(&t).await;
    let ji = &view(&h, &t, "user_id:p").await["journeys"][0];
    assert_eq!(ji["status"], "waiting", "retry pending: {ji}");
    assert_eq!(ji["attempt"], 1);
    assert!(
        ji["last_error"].as_str().unwrap().contains("deadline"),
        "{ji}"
    );
    // Retries after 1 s, 2 s, 4 s, 8 s; the fifth failure parks it.
    for delay in [1_000, 2_000, 4_000, 8_000] {
        h.advance(&t, delay).await;
    }
    let ji = &view(&h, &t, "user_id:p").await["journeys"][0];
    assert_eq!(ji["status"], "parked", "{ji}");
    assert_eq!(ji["attempt"], 5);
    assert!(ji["last_error"].as_str().unwrap().contains("deadline"));
    assert_eq!(ji["steps_run"], 5);
    // Parked means parked: more time changes nothing.
    h.advance(&t, HOUR).await;
    assert_eq!(
        view(&h, &t, "user_id:p").await["journeys"][0]["steps_run"],
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_profile_can_no_longer_be_reached_by_its_journeys() {
    let (h, t) = cart_waiting_for_its_reminder("gone").await;
    let s = h.erase_profile(&t, "user_id:gone").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    h.advance(&t, HOUR).await;
    let b = h.app.state.db.backend().clone();
    let sp = weft::store::Space::tenant(&t.id);
    assert!(
        b.scan_prefix(&sp, b"outbox/", 10).unwrap().is_empty(),
        "nothing was sent to an erased profile"
    );
}

const DAY: i64 = 24 * HOUR;

fn deliveries(v: &Value) -> Vec<Value> {
    v["deliveries"].as_array().unwrap().clone()
}

/// Scenario 9: a marketing send that falls in quiet hours is held until 07:00 local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminder_due_at_22_30_is_held_until_07_00_then_queued() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    // The manual clock starts at 09:00 in Ho Chi Minh City; move to 21:30.
    h.clock.advance(12 * HOUR + 30 * MINUTE);
    gold_customer(&h, &t, "lan").await;
    send(&h, &t, "track", cart_added("lan", "c-1", "m-1")).await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await; // 22:30
    let d = deliveries(&view(&h, &t, "user_id:lan").await);
    assert_eq!(d[0]["status"], "held", "{d:?}");
    let held_until = d[0]["until"].as_i64().unwrap();
    assert_eq!(
        held_until,
        weft::samples::NOW_MS + DAY - 2 * HOUR,
        "07:00 the next morning"
    );
    h.advance(&t, 8 * HOUR + 29 * MINUTE).await; // 06:59
    assert_eq!(
        deliveries(&view(&h, &t, "user_id:lan").await)[0]["status"],
        "held"
    );
    h.advance(&t, MINUTE).await; // 07:00
    assert_eq!(
        deliveries(&view(&h, &t, "user_id:lan").await)[0]["status"],
        "queued"
    );
}

/// Scenario 8: the fourth marketing send of a local day is capped; the journey still
/// advances; the cap resets at local midnight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_marketing_send_of_the_day_is_frequency_capped_and_the_cap_resets_at_midnight() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    gold_customer(&h, &t, "lan").await;
    for i in 0..4 {
        send(
            &h,
            &t,
            "track",
            cart_added("lan", &format!("c-{i}"), &format!("m-{i}")),
        )
        .await;
        h.settle(&t).await;
        h.advance(&t, MINUTE).await;
    }
    h.advance(&t, HOUR).await;
    let v = view(&h, &t, "user_id:lan").await;
    let mut statuses: Vec<String> = deliveries(&v)
        .iter()
        .map(|d| {
            format!(
                "{}{}",
                d["status"].as_str().unwrap(),
                d["reason"]
                    .as_str()
                    .map(|r| format!(":{r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        ["queued", "queued", "queued", "skipped:frequency_capped"]
    );
    assert!(v["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "exited"));
    // The next local day, outside quiet hours (the clock is at about 11:04; 23 hours on is
    // 10:04 tomorrow).
    h.advance(&t, 23 * HOUR).await;
    send(&h, &t, "track", cart_added("lan", "c-9", "m-9")).await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await;
    let d = deliveries(&view(&h, &t, "user_id:lan").await);
    assert_eq!(d[0]["status"], "queued", "newest first: {d:?}");
}

/// Scenario 3: a form submitted at 23:00 gets its transactional confirmation at once; the
/// consented marketing nurture goes out the next day at 10:00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_submitted_at_23_00_is_confirmed_at_once_and_nurtured_next_day_at_10_00() {
    let (h, t) = host_with(&[("form-confirmation", plugins::FORM_CONFIRMATION)]).await;
    h.clock.advance(14 * HOUR); // 23:00 local
    send(
        &h,
        &t,
        "identify",
        json!({"userId": "mai", "traits": {"email": "mai@example.vn"},
        "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    )
    .await;
    send(&h, &t, "track", json!({"userId": "mai", "event": "Form Submitted",
        "properties": {"submission_id": "s-1", "form_name": "Đăng ký tư vấn", "marketing_opt_in": true}}))
    .await;
    h.settle(&t).await;
    let d = deliveries(&view(&h, &t, "user_id:mai").await);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["category"], "transactional");
    assert_eq!(
        d[0]["status"], "queued",
        "transactional ignores quiet hours"
    );
    assert_eq!(d[0]["channel"], "email");
    h.advance(&t, 10 * HOUR + 59 * MINUTE).await; // 09:59 next day
    assert_eq!(deliveries(&view(&h, &t, "user_id:mai").await).len(), 1);
    h.advance(&t, MINUTE).await; // 10:00
    let v = view(&h, &t, "user_id:mai").await;
    let d = deliveries(&v);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0]["category"], "marketing");
    assert_eq!(d[0]["status"], "queued");
    assert_eq!(v["journeys"][0]["exit_reason"], "nurtured");
}

/// Scenario 14: a customer whose last order is over 30 days old enters the win-back
/// audience; the journey emails, then follows up over Zalo (ZNS to the phone) after three
/// days without an open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_customer_enters_win_back_gets_an_email_then_a_zalo_follow_up() {
    let (h, t) = host_with(&[("win-back", plugins::WIN_BACK)]).await;
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/audiences",
            Some(&t.secret),
            json!({"id": "win-back", "name": "No order in 30 days",
                   "predicate": {"last_performed": "Order Completed", "older_than_days": 30}})
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    send(
        &h,
        &t,
        "identify",
        json!({"userId": "hoa", "traits": {"email": "hoa@example.vn", "phone": "0987654321"},
        "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    )
    .await;
    send(
        &h,
        &t,
        "track",
        json!({"userId": "hoa", "event": "Order Completed", "properties": {"revenue": 500000}}),
    )
    .await;
    h.settle(&t).await;
    h.advance(&t, 10 * DAY).await;
    assert!(view(&h, &t, "user_id:hoa").await["audiences"]
        .as_array()
        .unwrap()
        .is_empty());
    h.advance(&t, 21 * DAY).await;
    let v = view(&h, &t, "user_id:hoa").await;
    assert_eq!(v["audiences"][0]["id"], "win-back", "{v}");
    assert_eq!(v["events"]["Audience Entered"]["total"], 1);
    let d = deliveries(&v);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["channel"], "email");
    assert_eq!(d[0]["status"], "queued");
    h.advance(&t, 3 * DAY).await;
    let v = view(&h, &t, "user_id:hoa").await;
    let d = deliveries(&v);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0]["channel"], "zns");
    assert_eq!(d[0]["address"], "+84987654321");
    assert_eq!(v["journeys"][0]["exit_reason"], "followed-up");
    // A new order takes the customer out of the audience.
    send(
        &h,
        &t,
        "track",
        json!({"userId": "hoa", "event": "Order Completed"}),
    )
    .await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:hoa").await;
    assert!(v["audiences"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["events"]["Audience Exited"]["total"], 1);
}

/// Scenario 2: the birthday greeting goes out at 09:00 local on the day, once a year.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_goes_out_at_nine_local_time_once_a_year() {
    let (h, t) = host_with(&[("birthday", plugins::BIRTHDAY)]).await;
    send(&h, &t, "identify", json!({"userId": "linh", "traits": {"birthday": "1995-11-25", "phone": "0901111222", "name": "Nguyễn Thu Linh"},
        "context": {"consent": {"categoryPreferences": {"marketing": true}}}}))
    .await;
    send(
        &h,
        &t,
        "track",
        json!({"userId": "linh", "event": "Birthday Check", "messageId": "bc-1"}),
    )
    .await;
    h.settle(&t).await;
    // Now is 22 Nov 09:00; the birthday is 25 Nov at 09:00 local.
    h.advance(&t, 3 * DAY - MINUTE).await;
    assert!(deliveries(&view(&h, &t, "user_id:linh").await).is_empty());
    h.advance(&t, MINUTE).await;
    let v = view(&h, &t, "user_id:linh").await;
    let d = deliveries(&v);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["status"], "queued");
    assert_eq!(v["journeys"][0]["exit_reason"], "sent");
    // Another check the same year sends nothing more.
    send(
        &h,
        &t,
        "track",
        json!({"userId": "linh", "event": "Birthday Check", "messageId": "bc-2"}),
    )
    .await;
    h.settle(&t).await;
    h.advance(&t, DAY).await;
    assert_eq!(deliveries(&view(&h, &t, "user_id:linh").await).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_policy_defaults_to_the_vietnamese_rules_and_refuses_bad_values() {
    let (h, t) = host_with(&[]).await;
    let v = h.get_ok(&t, "/v1/messaging/policy").await;
    assert_eq!(v["default_timezone"], "Asia/Ho_Chi_Minh");
    assert_eq!(v["quiet_hours"], json!({"start": "22:00", "end": "07:00"}));
    assert_eq!(v["marketing_cap"], 3);
    for (body, needle) in [
        (json!({"default_timezone": "Mars/Base"}), "Mars/Base"),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}),
            "25",
        ),
        (json!({"marketing_caps": 2}), "marketing_caps"),
        (json!({"marketing_cap": "three"}), "marketing_cap"),
    ] {
        let (s, v) = h
            .request(
                Method::PUT,
                "/v1/messaging/policy",
                Some(&t.secret),
                body.to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(weft_tests::error_code(&v), "invalid_policy");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Nothing was stored.
    assert_eq!(
        h.get_ok(&t, "/v1/messaging/policy").await["marketing_cap"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_policy_sets_the_cap_and_lifts_quiet_hours() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/messaging/policy",
            Some(&t.secret),
            json!({"marketing_cap": 1, "quiet_hours": null}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stored = h.get_ok(&t, "/v1/messaging/policy").await;
    assert_eq!(stored["marketing_cap"], 1, "{stored}");
    assert!(stored["quiet_hours"].is_null(), "{stored}");
    h.clock.advance(12 * HOUR + 30 * MINUTE); // 21:30 local: the reminders fall at 22:30
    gold_customer(&h, &t, "lan").await;
    send(&h, &t, "track", cart_added("lan", "c-1", "m-1")).await;
    send(&h, &t, "track", cart_added("lan", "c-2", "m-2")).await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await;
    let mut statuses: Vec<String> = deliveries(&view(&h, &t, "user_id:lan").await)
        .iter()
        .map(|d| {
            format!(
                "{}{}",
                d["status"].as_str().unwrap(),
                d["reason"]
                    .as_str()
                    .map(|r| format!(":{r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        ["queued", "skipped:frequency_capped"],
        "no quiet hours, a cap of one"
    );
}

/// Scenario 20: an upgrade changes what new instances run; running ones finish on the
/// version that started them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_finish_on_their_version_after_an_upgrade() {
    let (h, t) = host_with(&[("cart", plugins::ABANDONED_CART)]).await;
    gold_customer(&h, &t, "lan").await;
    send(&h, &t, "track", cart_added("lan", "c-1", "m-1")).await;
    h.settle(&t).await;
    // Version 2.0.0 of "cart" is a different rule (win-back's code), activated.
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/plugins/cart/versions/2.0.0?kind=journey-rule&activate=true",
            Some(&t.secret),
            weft_tests::plugin_bytes(plugins::WIN_BACK),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    h.advance(&t, HOUR).await;
    let v = view(&h, &t, "user_id:lan").await;
    let ji = &v["journeys"][0];
    assert_eq!(ji["version"], "1.0.0");
    assert_eq!(ji["exit_reason"], "reminded", "ran on 1.0.0: {ji}");
    assert_eq!(deliveries(&v).len(), 1);
    // New carts no longer enter: 2.0.0 enters on `Audience Entered` only.
    send(&h, &t, "track", cart_added("lan", "c-2", "m-2")).await;
    h.settle(&t).await;
    assert_eq!(
        view(&h, &t, "user_id:lan").await["journeys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// An instance's work found in another lane than its profile's (queued before a merge
/// moved the instance) moves to the instance's lane, runs there, and counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_found_in_another_lane_runs_once_in_its_instances_lane() {
    let (h, t) = cart_waiting_for_its_reminder("lan").await;
    let items_run = |v: &Value| v["journeys"]["items_run"].as_u64().unwrap();
    let before = items_run(&h.get_ok(&t, "/v1/ingest/status").await);
    let v = view(&h, &t, "user_id:lan").await;
    let iid = v["journeys"][0]["id"].as_str().unwrap().to_string();
    let pid = v["profile"]["id"].as_str().unwrap();
    let lanes = weft::journeys::engine::WORK_LANES;
    let wrong = (weft::journeys::engine::lane_of(Some(pid)) + 1) % lanes;
    let sp = weft::store::Space::tenant(&t.id);
    let item = json!({"work": "exit", "instance": iid, "reason": "found in another lane"});
    h.app
        .state
        .db
        .backend()
        .put(
            &sp,
            format!("jl/{wrong}/0000000000000001").as_bytes(),
            item.to_string().as_bytes(),
        )
        .unwrap();
    h.app.state.journeys.wake(&t.id);
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(
        v["journeys"][0]["exit_reason"], "found in another lane",
        "{v}"
    );
    let after = items_run(&h.get_ok(&t, "/v1/ingest/status").await);
    assert_eq!(after - before, 1, "moved, then run once");
}

/// An anonymous visitor's cart, then an identify that merges the visitor into a known
/// customer: the running abandoned-cart instance moves to the known profile.
async fn anonymous_cart_then_login(h: &TestHost, t: &TestTenant) {
    gold_customer(h, t, "lan").await;
    send(
        h,
        t,
        "track",
        json!({"anonymousId": "anon-1", "event": "Product Added", "messageId": "m-anon",
            "properties": {"cart_id": "c-9", "product_id": "sku-7", "name": "Áo dài lụa"}}),
    )
    .await;
    h.settle(t).await;
    send(
        h,
        t,
        "identify",
        json!({"anonymousId": "anon-1", "userId": "lan"}),
    )
    .await;
    h.settle(t).await;
}

/// A cart left by an anonymous visitor who then logs in: the journey continues on the
/// known customer (it shows in their 360 view) and the reminder reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_started_anonymously_continues_after_the_visitor_is_identified() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    anonymous_cart_then_login(&h, &t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"][0]["entry_key"], "c-9", "{v}");
    assert_eq!(v["journeys"][0]["status"], "waiting", "{v}");
    // The cart is indexed under the known customer now: adding to it again while the
    // journey waits does not start a second one for the same cart.
    send(&h, &t, "track", cart_added("lan", "c-9", "m-again")).await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"].as_array().map(Vec::len), Some(1), "{v}");
    h.advance(&t, HOUR).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"][0]["exit_reason"], "reminded", "{v}");
    let d = deliveries(&v);
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(
        d[0]["address"], "+84901234567",
        "the known customer's phone: {d:?}"
    );
}

/// After the merge, the known customer's purchase exits the journey the visitor started:
/// no reminder for a cart that was bought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_after_login_exits_the_journey_started_anonymously() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    anonymous_cart_then_login(&h, &t).await;
    send(
        &h,
        &t,
        "track",
        json!({"userId": "lan", "event": "Order Completed", "messageId": "m-order",
            "properties": {"order_id": "o-1", "revenue": 450000}}),
    )
    .await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    assert_eq!(v["journeys"][0]["status"], "exited", "{v}");
    assert_eq!(
        v["journeys"][0]["exit_reason"], "exit event: Order Completed",
        "{v}"
    );
    h.advance(&t, HOUR).await;
    assert!(deliveries(&view(&h, &t, "user_id:lan").await).is_empty());
}

/// An anonymous visitor who gave a phone number (and marketing consent) puts `cart` in
/// their cart: abandoned-cart starts for the anonymous profile.
async fn anonymous_cart_with_phone(h: &TestHost, t: &TestTenant, anon: &str, cart: &str) {
    send(
        h,
        t,
        "identify",
        json!({"anonymousId": anon, "traits": {"phone": "0907654321"},
            "context": {"consent": {"categoryPreferences": {"marketing": true}}}}),
    )
    .await;
    send(
        h,
        t,
        "track",
        json!({"anonymousId": anon, "event": "Product Added", "messageId": format!("m-{cart}"),
            "properties": {"cart_id": cart, "product_id": "sku-7", "name": "Nón lá"}}),
    )
    .await;
}

/// A visitor reminded while anonymous (a phone given, not yet logged in), then merged into
/// a known customer: the reminder shows among the customer's deliveries, and erasing the
/// customer erases it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_merged_customer_erases_what_was_sent_to_the_profile_merged_into_it() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    gold_customer(&h, &t, "lan").await;
    anonymous_cart_with_phone(&h, &t, "anon-2", "c-5").await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await;
    let sp = weft::store::Space::tenant(&t.id);
    let b = h.app.state.db.backend().clone();
    assert_eq!(
        b.scan_prefix(&sp, b"outbox/", 10).unwrap().len(),
        1,
        "reminded"
    );
    send(
        &h,
        &t,
        "identify",
        json!({"anonymousId": "anon-2", "userId": "lan"}),
    )
    .await;
    h.settle(&t).await;
    let v = view(&h, &t, "user_id:lan").await;
    let d = deliveries(&v);
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(d[0]["address"], "+84907654321", "{d:?}");
    let s = h.erase_profile(&t, "user_id:lan").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(b.scan_prefix(&sp, b"outbox/", 10).unwrap().is_empty());
    assert!(b.scan_prefix(&sp, b"outp/", 10).unwrap().is_empty());
    assert!(b.scan_prefix(&sp, b"ji/", 10).unwrap().is_empty());
}

/// A send held for quiet hours, then its anonymous recipient merged into a known customer:
/// at 07:00 it goes out to the customer instead of being dropped as erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_send_goes_out_after_its_recipient_is_merged_into_a_known_customer() {
    let (h, t) = host_with(&[("abandoned-cart", plugins::ABANDONED_CART)]).await;
    h.clock.advance(12 * HOUR + 30 * MINUTE); // 21:30 in Ho Chi Minh City
    gold_customer(&h, &t, "lan").await;
    anonymous_cart_with_phone(&h, &t, "anon-3", "c-6").await;
    h.settle(&t).await;
    h.advance(&t, HOUR).await; // 22:30: held until 07:00
    send(
        &h,
        &t,
        "identify",
        json!({"anonymousId": "anon-3", "userId": "lan"}),
    )
    .await;
    h.settle(&t).await;
    let d = deliveries(&view(&h, &t, "user_id:lan").await);
    assert_eq!(d[0]["status"], "held", "{d:?}");
    h.advance(&t, 8 * HOUR + 30 * MINUTE).await; // 07:00
    let v = view(&h, &t, "user_id:lan").await;
    let d = deliveries(&v);
    assert_eq!(d[0]["status"], "queued", "{d:?}");
    assert_eq!(d[0]["profile_id"], v["profile"]["id"], "{d:?}");
}
