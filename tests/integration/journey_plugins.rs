//! The journey rules `birthday`, `form-confirmation` and `win-back`, run in process on the
//! real runtime and host capabilities (the clock's time-zone conversions, `state`).
//!
//! Each test builds its step input in Rust and asserts the exact commands returned. The
//! commands are compared as JSON with their JSON-text fields (journey context, emitted
//! properties, template parameters) parsed, so key order inside them does not matter.
//! Their fixtures under `plugins/<name>/fixtures/` state their outcome in `expect`; the
//! `runner` tests run every example fixture against it.
//!
//! Local times below are in `Asia/Ho_Chi_Minh` (UTC+7, no daylight saving) unless a
//! test says otherwise.

use std::sync::Arc;

use serde_json::{json, Value};
use weft::clock::SystemClock;
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runtime::bindings::exports::journey::{
    Command, MessageOutcome, OutcomeStatus, StepInput, Trigger,
};
use weft::runtime::bindings::types::{
    ChannelKind, Consent, ConsentState, Event, EventType, Identity, PluginError, Profile,
};
use weft::runtime::host::{Installation, Services, Settings};
use weft::runtime::{Call, KindPre, Output, Runtime};
use weft_tests::plugins;

// ---------------------------------------------------------------------------------------
// Times (UTC epoch milliseconds)
// ---------------------------------------------------------------------------------------

/// Sunday 2026-11-22 09:00 local (02:00 UTC), the shared samples' "now".
const NOW: i64 = weft::samples::NOW_MS;
/// 2026-11-22 07:30 local.
const NOV_22_0730: i64 = 1_795_307_400_000;
/// 2026-11-22 10:00 local.
const NOV_22_1000: i64 = 1_795_316_400_000;
/// 2026-11-22 15:00 local.
const NOV_22_1500: i64 = 1_795_334_400_000;
/// 2026-11-23 10:00 local.
const NOV_23_1000: i64 = 1_795_402_800_000;
/// 2026-11-25 09:00 local.
const NOV_25_0900: i64 = 1_795_572_000_000;
/// 2026-11-22 09:00 in America/Los_Angeles (PST, UTC-8).
const NOV_22_0900_LOS_ANGELES: i64 = 1_795_366_800_000;
/// 2026-12-31 08:00 local.
const DEC_31_0800: i64 = 1_798_678_800_000;
/// 2027-01-01 10:00 local.
const JAN_1_2027_1000: i64 = 1_798_772_400_000;
/// 2027-02-20 12:00 local (2027 is a common year).
const FEB_20_2027_1200: i64 = 1_803_099_600_000;
/// 2027-02-28 09:00 local.
const FEB_28_2027_0900: i64 = 1_803_780_000_000;
/// 2027-11-21 09:00 local.
const NOV_21_2027_0900: i64 = 1_826_762_400_000;
/// 2028-02-20 12:00 local (2028 is a leap year).
const FEB_20_2028_1200: i64 = 1_834_635_600_000;
/// 2028-02-29 09:00 local.
const FEB_29_2028_0900: i64 = 1_835_402_400_000;
/// Three days in milliseconds.
const THREE_DAYS_MS: u64 = 3 * 24 * 3_600_000;

// ---------------------------------------------------------------------------------------
// Harness: one installation per test, so `state` persists across its steps
// ---------------------------------------------------------------------------------------

/// A journey rule compiled once and installed for one tenant, over a throwaway store.
struct Rule {
    runtime: Arc<Runtime>,
    pre: KindPre,
    installation: Arc<Installation>,
    _db: weft::store::Db,
    _dir: tempfile::TempDir,
}

impl Rule {
    async fn load(wasm: &str) -> Rule {
        let dir = tempfile::tempdir().unwrap();
        let (db, _blobs) = weft::store::open(dir.path()).unwrap();
        let services = Services::new(db.backend().clone(), Arc::new(SystemClock), true).unwrap();
        let runtime = Arc::new(Runtime::new(runtime_config(), services).unwrap());
        let component = runtime
            .compile(&weft_tests::plugin_bytes(wasm), PluginKind::JourneyRule)
            .unwrap();
        let pre = runtime
            .prepare(&component, PluginKind::JourneyRule)
            .unwrap();
        Rule {
            runtime,
            pre,
            installation: Arc::new(Installation::new(
                "t1",
                "rule",
                "1.0.0",
                Settings::default(),
            )),
            _db: db,
            _dir: dir,
        }
    }

    async fn invoke(&self, call: Call) -> Output {
        let (rt, pre, inst) = (
            self.runtime.clone(),
            self.pre.clone(),
            self.installation.clone(),
        );
        let inv = tokio::task::spawn_blocking(move || rt.invoke(&pre, &inst, call))
            .await
            .unwrap();
        inv.result
            .unwrap_or_else(|e| panic!("invocation failed: {e}; {:?}", inv.report))
    }

    async fn step(&self, input: StepInput) -> Result<Vec<Command>, PluginError> {
        match self.invoke(Call::JourneyStep(input)).await {
            Output::JourneyStep(result) => result,
            other => panic!("unexpected output {other:?}"),
        }
    }

    /// The commands of a step that must succeed, normalised (see [`normalise`]).
    async fn commands(&self, input: StepInput) -> Value {
        let cmds = self
            .step(input)
            .await
            .unwrap_or_else(|e| panic!("step failed: {e:?}"));
        normalise(&cmds)
    }

    /// The error of a step that must fail.
    async fn error(&self, input: StepInput) -> PluginError {
        match self.step(input).await {
            Ok(cmds) => panic!("expected an error, got {}", normalise(&cmds)),
            Err(e) => e,
        }
    }

    async fn manifest(&self) -> Value {
        match self.invoke(Call::JourneyDescribe).await {
            Output::JourneyDescribe(m) => serde_json::to_value(m).unwrap(),
            other => panic!("unexpected output {other:?}"),
        }
    }
}

/// Production limits with a small instance pool: many tests build engines at once.
fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        pool_instances: 4,
        ..RuntimeConfig::default()
    }
}

/// Commands as JSON, with JSON-text fields parsed into values.
fn normalise(cmds: &[Command]) -> Value {
    let mut v = serde_json::to_value(cmds).unwrap();
    let parse = |field: &mut Value| {
        let text = field.as_str().expect("a JSON text field").to_owned();
        *field = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    };
    for cmd in v.as_array_mut().unwrap() {
        if let Some(ctx) = cmd.get_mut("PatchContext") {
            parse(ctx);
        } else if let Some(traits) = cmd.get_mut("SetTraits") {
            parse(traits);
        } else if let Some(emit) = cmd.get_mut("Emit") {
            parse(&mut emit["properties"]);
        } else if let Some(send) = cmd.get_mut("Send") {
            for content in send["content"].as_array_mut().unwrap() {
                if let Some(template) = content.get_mut("Template") {
                    parse(&mut template["params"]);
                }
            }
        }
    }
    v
}

/// A message outcome trigger (none of these rules acts on outcomes).
fn outcome() -> Trigger {
    Trigger::MessageOutcome(MessageOutcome {
        intent_id: "ji-1:start:email".into(),
        status: OutcomeStatus::Delivered,
        reason: None,
    })
}

fn assert_not_supported(e: &PluginError, mentions: &str) {
    match e {
        PluginError::NotSupported(m) => assert!(m.contains(mentions), "{m}"),
        other => panic!("expected not-supported mentioning {mentions:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

fn profile(profile_id: &str, traits: Value) -> Profile {
    Profile {
        profile_id: profile_id.into(),
        identities: vec![
            Identity {
                kind: "user_id".into(),
                value: "42".into(),
            },
            Identity {
                kind: "email".into(),
                value: "lan@example.vn".into(),
            },
        ],
        traits: traits.to_string(),
        audiences: vec![],
        timezone: Some("Asia/Ho_Chi_Minh".into()),
        locale: Some("vi-VN".into()),
        consents: vec![],
    }
}

fn event(name: &str, properties: Value, at: i64) -> Event {
    Event {
        message_id: "m-1".into(),
        event_type: EventType::Track,
        name: Some(name.into()),
        user_id: Some("42".into()),
        anonymous_id: None,
        properties: properties.to_string(),
        traits: "{}".into(),
        context: "{}".into(),
        timestamp: at,
        received_at: at,
    }
}

fn input(
    journey: &str,
    step_id: &str,
    profile: Profile,
    trigger: Trigger,
    now: i64,
    context: Value,
) -> StepInput {
    StepInput {
        journey_id: journey.into(),
        instance_id: "ji-1".into(),
        step_id: step_id.into(),
        entry_key: None,
        profile,
        journey_context: context.to_string(),
        trigger,
        now,
        attempt: 0,
    }
}

// ---------------------------------------------------------------------------------------
// birthday
// ---------------------------------------------------------------------------------------

/// Lan's profile with `birthday` set to `birthday` (omitted when `None`) and tier silver.
fn birthday_profile(birthday: Option<Value>) -> Profile {
    let mut traits = json!({"name": "Nguyễn Thị Lan", "tier": "silver"});
    if let Some(b) = birthday {
        traits["birthday"] = b;
    }
    profile("p-lan", traits)
}

/// The entry step on `Birthday Check` at `now`.
fn birthday_check(profile: Profile, now: i64) -> StepInput {
    input(
        "birthday",
        "start",
        profile,
        Trigger::Entered(event("Birthday Check", json!({}), now)),
        now,
        json!({}),
    )
}

/// The `greet` step for `instance` celebrating `celebrate_on`.
fn greet(instance: &str, profile: Profile, celebrate_on: &str, now: i64) -> StepInput {
    let mut i = input(
        "birthday",
        "greet",
        profile,
        Trigger::TimerFired("wait".into()),
        now,
        json!({"celebrate_on": celebrate_on}),
    );
    i.instance_id = instance.into();
    i
}

/// The entry commands when the greeting waits until `until` for `celebrate_on`.
fn wait_until_greet(celebrate_on: &str, until: i64) -> Value {
    json!([
        {"PatchContext": {"celebrate_on": celebrate_on}},
        {"Wait": {"Until": until}},
        {"Goto": "greet"},
    ])
}

/// The greeting commands for a silver-tier Vietnamese profile named Lan.
fn silver_greeting(instance: &str) -> Value {
    json!([
        {"Send": {
            "intent_id": format!("{instance}:greet:greeting"),
            "channel_preference": ["ZaloOa", "ZaloZns", "Sms", "Email"],
            "category": "Marketing",
            "content": [
                {"Template": {"id": "birthday", "language": "vi", "params": {"name": "Lan"}}},
                {"Text": "Chúc mừng sinh nhật Lan!"},
            ],
        }},
        {"Exit": "sent"},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_manifest_enters_on_birthday_check_and_audience_entered() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    assert_eq!(
        rule.manifest().await,
        json!({
            "name": "Birthday greeting",
            "entry_events": ["Birthday Check", "Audience Entered"],
            "entry_key": null,
            "exit_events": [],
            "re_entry": "AfterExit",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_check_waits_until_nine_local_time_on_the_next_birthday() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(birthday_check(
            birthday_profile(Some(json!("1990-11-25"))),
            NOW,
        ))
        .await;
    assert_eq!(out, wait_until_greet("2026-11-25", NOV_25_0900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_today_before_nine_waits_for_nine_oclock_local_time() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(birthday_check(
            birthday_profile(Some(json!("1990-11-22"))),
            NOV_22_0730,
        ))
        .await;
    assert_eq!(
        out,
        json!([
            {"PatchContext": {"celebrate_on": "2026-11-22"}},
            {"Wait": {"LocalTime": {"hour": 9, "minute": 0, "days_of_week": []}}},
            {"Goto": "greet"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_today_at_or_after_nine_greets_at_once_without_a_wait() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    for now in [NOW, NOV_22_1500] {
        let out = rule
            .commands(birthday_check(
                birthday_profile(Some(json!("1990-11-22"))),
                now,
            ))
            .await;
        assert_eq!(
            out,
            json!([
                {"PatchContext": {"celebrate_on": "2026-11-22"}},
                {"Goto": "greet"},
            ]),
            "now = {now}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_already_past_this_year_waits_for_next_years() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(birthday_check(
            birthday_profile(Some(json!("1990-11-21"))),
            NOW,
        ))
        .await;
    assert_eq!(out, wait_until_greet("2027-11-21", NOV_21_2027_0900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_on_29_february_is_celebrated_on_28_february_in_common_years() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let leapling = || birthday_profile(Some(json!("1992-02-29")));
    let out = rule
        .commands(birthday_check(leapling(), FEB_20_2027_1200))
        .await;
    assert_eq!(out, wait_until_greet("2027-02-28", FEB_28_2027_0900));
    // And `greet` on 28 February accepts it as the birthday.
    let out = rule
        .commands(greet("ji-1", leapling(), "2027-02-28", FEB_28_2027_0900))
        .await;
    assert_eq!(out, silver_greeting("ji-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_on_29_february_is_celebrated_on_29_february_in_leap_years() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(birthday_check(
            birthday_profile(Some(json!("02-29"))),
            FEB_20_2028_1200,
        ))
        .await;
    assert_eq!(out, wait_until_greet("2028-02-29", FEB_29_2028_0900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_trait_may_be_a_date_a_month_day_or_an_iso_datetime() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    for birthday in [
        "1990-11-25",
        "11-25",
        "--11-25",
        "1990-11-25T00:00:00Z",
        "1990-11-25T00:00:00.000+07:00",
        "1990-11-25 08:30:00",
    ] {
        let out = rule
            .commands(birthday_check(birthday_profile(Some(json!(birthday))), NOW))
            .await;
        assert_eq!(
            out,
            wait_until_greet("2026-11-25", NOV_25_0900),
            "{birthday}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_missing_or_invalid_exits_no_birthday() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let cases = [
        None,
        Some(json!("")),
        Some(json!("sắp tới")),
        Some(json!("1990-02-30")),
        Some(json!("1991-02-29")),
        Some(json!("25/11/1990")),
        Some(json!(19901125)),
        Some(json!(null)),
    ];
    for birthday in cases {
        let out = rule
            .commands(birthday_check(birthday_profile(birthday.clone()), NOW))
            .await;
        assert_eq!(out, json!([{"Exit": "no-birthday"}]), "{birthday:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_is_planned_in_the_profiles_time_zone() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    // NOW is Sunday 09:00 in Ho Chi Minh City but Saturday 18:00 in Los Angeles: the
    // birthday on 22 November is still ahead there, at 09:00 Pacific time.
    let mut angeleno = birthday_profile(Some(json!("1990-11-22")));
    angeleno.timezone = Some("America/Los_Angeles".into());
    let out = rule.commands(birthday_check(angeleno, NOW)).await;
    assert_eq!(out, wait_until_greet("2026-11-22", NOV_22_0900_LOS_ANGELES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_without_a_known_time_zone_uses_ho_chi_minh() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    for tz in [None, Some("Mars/Olympus"), Some("")] {
        let mut p = birthday_profile(Some(json!("1990-11-25")));
        p.timezone = tz.map(String::from);
        let out = rule.commands(birthday_check(p, NOW)).await;
        assert_eq!(out, wait_until_greet("2026-11-25", NOV_25_0900), "{tz:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_audience_entered_for_birthday_today_starts_the_journey() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(input(
            "birthday",
            "start",
            birthday_profile(Some(json!("1990-11-22"))),
            Trigger::Entered(event(
                "Audience Entered",
                json!({"audience": "birthday-today"}),
                NOV_22_1000,
            )),
            NOV_22_1000,
            json!({}),
        ))
        .await;
    assert_eq!(
        out,
        json!([
            {"PatchContext": {"celebrate_on": "2026-11-22"}},
            {"Goto": "greet"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_entry_on_another_audience_or_event_is_not_supported() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    for (name, props, mentions) in [
        ("Audience Entered", json!({"audience": "vip"}), "vip"),
        ("Audience Entered", json!({}), "birthday-today"),
        ("Signed Up", json!({}), "Signed Up"),
    ] {
        let e = rule
            .error(input(
                "birthday",
                "start",
                birthday_profile(Some(json!("1990-11-25"))),
                Trigger::Entered(event(name, props, NOW)),
                NOW,
                json!({}),
            ))
            .await;
        assert_not_supported(&e, mentions);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_sends_the_zns_template_and_vietnamese_text_then_exits_sent() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(greet(
            "ji-1",
            birthday_profile(Some(json!("1990-11-25"))),
            "2026-11-25",
            NOV_25_0900,
        ))
        .await;
    assert_eq!(out, silver_greeting("ji-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_is_in_english_for_an_english_locale() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let mut jane = profile("p-jane", json!({"name": "Jane Doe", "birthday": "11-25"}));
    jane.locale = Some("en-US".into());
    let out = rule
        .commands(greet("ji-1", jane, "2026-11-25", NOV_25_0900))
        .await;
    assert_eq!(
        out,
        json!([
            {"Send": {
                "intent_id": "ji-1:greet:greeting",
                "channel_preference": ["ZaloOa", "ZaloZns", "Sms", "Email"],
                "category": "Marketing",
                "content": [
                    {"Template": {"id": "birthday", "language": "en", "params": {"name": "Jane"}}},
                    {"Text": "Happy birthday, Jane!"},
                ],
            }},
            {"Exit": "sent"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_for_gold_tier_emits_coupon_issued_with_bday_gold() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let gold = profile(
        "p-lan",
        json!({"name": "Nguyễn Thị Lan", "tier": "Gold", "birthday": "1990-11-25"}),
    );
    let out = rule
        .commands(greet("ji-1", gold, "2026-11-25", NOV_25_0900))
        .await;
    assert_eq!(
        out,
        json!([
            {"Send": {
                "intent_id": "ji-1:greet:greeting",
                "channel_preference": ["ZaloOa", "ZaloZns", "Sms", "Email"],
                "category": "Marketing",
                "content": [
                    {"Template": {"id": "birthday", "language": "vi", "params": {"name": "Lan"}}},
                    {"Text": "Chúc mừng sinh nhật Lan! Quà sinh nhật của bạn: mã BDAY-GOLD."},
                ],
            }},
            {"Emit": {"name": "Coupon Issued", "properties": {
                "coupon": "BDAY-GOLD",
                "reason": "birthday",
                "year": 2026,
                "journey_id": "birthday",
                "instance_id": "ji-1",
            }}},
            {"Exit": "sent"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_is_sent_once_per_year_per_profile() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let lan = || birthday_profile(Some(json!("1990-11-25")));
    let out = rule
        .commands(greet("ji-1", lan(), "2026-11-25", NOV_25_0900))
        .await;
    assert_eq!(out, silver_greeting("ji-1"));
    // A second instance for the same profile and year: the guard holds.
    let out = rule
        .commands(greet("ji-2", lan(), "2026-11-25", NOV_25_0900))
        .await;
    assert_eq!(out, json!([{"Exit": "already-sent"}]));
    // Another profile in the same installation has its own guard.
    let mut other = lan();
    other.profile_id = "p-other".into();
    let out = rule
        .commands(greet("ji-3", other, "2026-11-25", NOV_25_0900))
        .await;
    assert_eq!(out, silver_greeting("ji-3"));
    // Next year is a new year.
    let out = rule
        .commands(greet(
            "ji-4",
            lan(),
            "2027-11-25",
            NOV_25_0900 + 365 * 86_400_000,
        ))
        .await;
    assert_eq!(out, silver_greeting("ji-4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_retried_by_the_same_instance_returns_the_same_commands() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let first = rule
        .commands(greet(
            "ji-1",
            birthday_profile(Some(json!("1990-11-25"))),
            "2026-11-25",
            NOV_25_0900,
        ))
        .await;
    let mut retry = greet(
        "ji-1",
        birthday_profile(Some(json!("1990-11-25"))),
        "2026-11-25",
        NOV_25_0900,
    );
    retry.attempt = 1;
    assert_eq!(rule.commands(retry).await, first);
    assert_eq!(first, silver_greeting("ji-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_greeting_exits_when_the_birthday_changed_or_vanished_during_the_wait() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let out = rule
        .commands(greet(
            "ji-1",
            birthday_profile(Some(json!("1990-12-01"))),
            "2026-11-25",
            NOV_25_0900,
        ))
        .await;
    assert_eq!(out, json!([{"Exit": "birthday-changed"}]));
    let out = rule
        .commands(greet(
            "ji-2",
            birthday_profile(None),
            "2026-11-25",
            NOV_25_0900,
        ))
        .await;
    assert_eq!(out, json!([{"Exit": "no-birthday"}]));
    // Neither used up this year's guard.
    let out = rule
        .commands(greet(
            "ji-3",
            birthday_profile(Some(json!("1990-11-25"))),
            "2026-11-25",
            NOV_25_0900,
        ))
        .await;
    assert_eq!(out, silver_greeting("ji-3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_ignores_events_outcomes_and_timers_outside_greet() {
    let rule = Rule::load(plugins::BIRTHDAY).await;
    let p = || birthday_profile(Some(json!("1990-11-25")));
    let e = rule
        .error(input(
            "birthday",
            "start",
            p(),
            Trigger::TimerFired("wait".into()),
            NOW,
            json!({}),
        ))
        .await;
    assert_not_supported(&e, "start");
    let e = rule
        .error(input(
            "birthday",
            "greet",
            p(),
            Trigger::EventReceived(event("Email Opened", json!({}), NOW)),
            NOW,
            json!({}),
        ))
        .await;
    assert_not_supported(&e, "Email Opened");
    let e = rule
        .error(input("birthday", "greet", p(), outcome(), NOW, json!({})))
        .await;
    assert_not_supported(&e, "outcomes");
}

// ---------------------------------------------------------------------------------------
// form-confirmation
// ---------------------------------------------------------------------------------------

/// Mai's profile with the given consent records.
fn form_profile(consents: Vec<Consent>) -> Profile {
    let mut p = profile("p-mai", json!({"name": "Phạm Thu Mai"}));
    p.consents = consents;
    p
}

fn consent(channel: ChannelKind, purpose: &str, state: ConsentState, at: i64) -> Consent {
    Consent {
        channel,
        purpose: purpose.into(),
        state,
        updated_at: at,
    }
}

fn email_marketing_opted_in() -> Vec<Consent> {
    vec![consent(
        ChannelKind::Email,
        "marketing",
        ConsentState::OptedIn,
        NOW - 86_400_000,
    )]
}

/// The entry step on `Form Submitted` with extra `properties`, at `now`.
fn form_submitted(profile: Profile, extra: Value, now: i64) -> StepInput {
    let mut props =
        json!({"form_id": "tu-van", "form_name": "Đăng ký tư vấn", "submission_id": "sub-501"});
    for (k, v) in extra.as_object().unwrap() {
        props[k] = v.clone();
    }
    let mut i = input(
        "form-confirmation",
        "start",
        profile,
        Trigger::Entered(event("Form Submitted", props, now)),
        now,
        json!({}),
    );
    i.entry_key = Some("sub-501".into());
    i
}

/// The transactional confirmation every submission gets first.
fn confirmation() -> Value {
    json!({"Send": {
        "intent_id": "ji-1:start:confirmation",
        "channel_preference": ["Email", "Sms"],
        "category": "Transactional",
        "content": [{"Text": "Chúng tôi đã nhận được biểu mẫu “Đăng ký tư vấn” của bạn. Cảm ơn bạn!"}],
    }})
}

/// The entry commands when the nurture email follows after `wait`.
fn confirm_then_nurture(wait: Value) -> Value {
    json!([
        confirmation(),
        {"PatchContext": {"form_name": "Đăng ký tư vấn", "submission_id": "sub-501"}},
        {"Wait": wait},
        {"Goto": "nurture"},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_manifest_keys_instances_by_submission_and_reenters_on_every_event() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    assert_eq!(
        rule.manifest().await,
        json!({
            "name": "Form submission confirmation",
            "entry_events": ["Form Submitted"],
            "entry_key": "properties.submission_id",
            "exit_events": [],
            "re_entry": "EveryEvent",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_without_marketing_consent_confirms_by_email_and_exits_confirmed() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let out = rule
        .commands(form_submitted(form_profile(vec![]), json!({}), NOW))
        .await;
    assert_eq!(out, json!([confirmation(), {"Exit": "confirmed"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_with_email_marketing_consent_before_ten_waits_until_ten_tomorrow() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let out = rule
        .commands(form_submitted(
            form_profile(email_marketing_opted_in()),
            json!({}),
            NOW,
        ))
        .await;
    assert_eq!(out, confirm_then_nurture(json!({"Until": NOV_23_1000})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_at_ten_exactly_waits_until_ten_tomorrow_not_today() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let out = rule
        .commands(form_submitted(
            form_profile(email_marketing_opted_in()),
            json!({}),
            NOV_22_1000,
        ))
        .await;
    assert_eq!(out, confirm_then_nurture(json!({"Until": NOV_23_1000})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_after_ten_waits_for_the_next_ten_oclock_local_time() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let out = rule
        .commands(form_submitted(
            form_profile(email_marketing_opted_in()),
            json!({}),
            NOV_22_1500,
        ))
        .await;
    assert_eq!(
        out,
        confirm_then_nurture(json!({"LocalTime": {"hour": 10, "minute": 0, "days_of_week": []}}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_next_day_rolls_over_the_year() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let out = rule
        .commands(form_submitted(
            form_profile(email_marketing_opted_in()),
            json!({}),
            DEC_31_0800,
        ))
        .await;
    assert_eq!(out, confirm_then_nurture(json!({"Until": JAN_1_2027_1000})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_with_marketing_opt_in_on_the_form_nurtures_without_a_consent_record() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    for opt_in in [json!(true), json!("true")] {
        let out = rule
            .commands(form_submitted(
                form_profile(vec![]),
                json!({"marketing_opt_in": opt_in}),
                NOW,
            ))
            .await;
        assert_eq!(
            out,
            confirm_then_nurture(json!({"Until": NOV_23_1000})),
            "{opt_in}"
        );
    }
    let out = rule
        .commands(form_submitted(
            form_profile(vec![]),
            json!({"marketing_opt_in": false}),
            NOW,
        ))
        .await;
    assert_eq!(out, json!([confirmation(), {"Exit": "confirmed"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_needs_the_newest_email_marketing_consent_to_be_opted_in() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let cases = [
        // Other channels and purposes do not count.
        vec![
            consent(ChannelKind::Sms, "marketing", ConsentState::OptedIn, NOW),
            consent(
                ChannelKind::Email,
                "transactional",
                ConsentState::OptedIn,
                NOW,
            ),
        ],
        // Withdrawn after it was given.
        vec![
            consent(
                ChannelKind::Email,
                "marketing",
                ConsentState::OptedIn,
                NOW - 2,
            ),
            consent(
                ChannelKind::Email,
                "marketing",
                ConsentState::OptedOut,
                NOW - 1,
            ),
        ],
        // Never asked.
        vec![consent(
            ChannelKind::Email,
            "marketing",
            ConsentState::Unknown,
            NOW,
        )],
    ];
    for consents in cases {
        let out = rule
            .commands(form_submitted(
                form_profile(consents.clone()),
                json!({}),
                NOW,
            ))
            .await;
        assert_eq!(
            out,
            json!([confirmation(), {"Exit": "confirmed"}]),
            "{consents:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_nurture_sends_one_marketing_email_and_exits_nurtured() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let mut nurture = input(
        "form-confirmation",
        "nurture",
        form_profile(email_marketing_opted_in()),
        Trigger::TimerFired("wait".into()),
        NOV_23_1000,
        json!({"form_name": "Đăng ký tư vấn", "submission_id": "sub-501"}),
    );
    nurture.entry_key = Some("sub-501".into());
    let out = rule.commands(nurture).await;
    assert_eq!(
        out,
        json!([
            {"Send": {
                "intent_id": "ji-1:nurture:nurture",
                "channel_preference": ["Email"],
                "category": "Marketing",
                "content": [{"Text": "Cảm ơn bạn đã quan tâm qua biểu mẫu “Đăng ký tư vấn”! Khám phá thêm sản phẩm và ưu đãi mới nhất của chúng tôi."}],
            }},
            {"Exit": "nurtured"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_confirmation_other_events_timers_and_outcomes_are_not_supported() {
    let rule = Rule::load(plugins::FORM_CONFIRMATION).await;
    let p = || form_profile(vec![]);
    let cases = [
        (
            "start",
            Trigger::Entered(event("Page Viewed", json!({}), NOW)),
            "Page Viewed",
        ),
        ("start", Trigger::TimerFired("wait".into()), "start"),
        (
            "nurture",
            Trigger::EventReceived(event("Email Opened", json!({}), NOW)),
            "Email Opened",
        ),
        ("nurture", outcome(), "outcomes"),
    ];
    for (step, trigger, mentions) in cases {
        let e = rule
            .error(input(
                "form-confirmation",
                step,
                p(),
                trigger,
                NOW,
                json!({}),
            ))
            .await;
        assert_not_supported(&e, mentions);
    }
}

// ---------------------------------------------------------------------------------------
// win-back
// ---------------------------------------------------------------------------------------

fn win_back_profile() -> Profile {
    profile("p-minh", json!({"name": "Trần Văn Minh"}))
}

fn audience_entered(audience: Value) -> StepInput {
    input(
        "win-back",
        "start",
        win_back_profile(),
        Trigger::Entered(event("Audience Entered", audience, NOW)),
        NOW,
        json!({}),
    )
}

fn followup(trigger: Trigger) -> StepInput {
    input(
        "win-back",
        "followup",
        win_back_profile(),
        trigger,
        NOW + THREE_DAYS_MS as i64,
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_manifest_exits_on_order_completed() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    assert_eq!(
        rule.manifest().await,
        json!({
            "name": "Win-back",
            "entry_events": ["Audience Entered"],
            "entry_key": null,
            "exit_events": ["Order Completed"],
            "re_entry": "AfterExit",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_entry_sends_a_marketing_email_and_waits_three_days_for_an_open() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    let out = rule
        .commands(audience_entered(json!({"audience": "win-back"})))
        .await;
    assert_eq!(
        out,
        json!([
            {"Send": {
                "intent_id": "ji-1:start:email",
                "channel_preference": ["Email"],
                "category": "Marketing",
                "content": [{"Text": "Minh ơi, lâu rồi không gặp bạn! Ghé xem những sản phẩm mới nhất của chúng tôi nhé."}],
            }},
            {"Wait": {"Event": {
                "event_names": ["Email Opened", "Message Opened"],
                "match_entry_key": false,
                "timeout_ms": THREE_DAYS_MS,
                "timer_id": "no-open",
            }}},
            {"Goto": "followup"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_entry_for_any_other_audience_is_not_supported() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    for (props, mentions) in [
        (json!({"audience": "vip"}), "vip"),
        (json!({"audience": "Win-Back"}), "Win-Back"),
        (json!({}), "win-back"),
    ] {
        let e = rule.error(audience_entered(props)).await;
        assert_not_supported(&e, mentions);
    }
    let mut signed_up = audience_entered(json!({"audience": "win-back"}));
    signed_up.trigger = Trigger::Entered(event("Signed Up", json!({"audience": "win-back"}), NOW));
    assert_not_supported(&rule.error(signed_up).await, "Signed Up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_without_an_open_follows_up_over_zalo_oa_and_exits_followed_up() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    let out = rule
        .commands(followup(Trigger::TimerFired("no-open".into())))
        .await;
    assert_eq!(
        out,
        json!([
            {"Send": {
                "intent_id": "ji-1:followup:zalo",
                "channel_preference": ["ZaloOa", "ZaloZns", "Sms"],
                "category": "Marketing",
                "content": [{"Text": "Minh ơi, chúng tôi nhớ bạn! Nhiều sản phẩm mới đang chờ bạn, ghé cửa hàng nhé."}],
            }},
            {"Exit": "followed-up"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_open_of_the_email_or_a_message_exits_opened() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    for name in ["Email Opened", "Message Opened"] {
        let out = rule
            .commands(followup(Trigger::EventReceived(event(
                name,
                json!({}),
                NOW + 3_600_000,
            ))))
            .await;
        assert_eq!(out, json!([{"Exit": "opened"}]), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn win_back_unknown_timers_events_and_outcomes_are_not_supported() {
    let rule = Rule::load(plugins::WIN_BACK).await;
    let e = rule
        .error(followup(Trigger::TimerFired("wait".into())))
        .await;
    assert_not_supported(&e, "wait");
    let e = rule
        .error(followup(Trigger::EventReceived(event(
            "Page Viewed",
            json!({}),
            NOW,
        ))))
        .await;
    assert_not_supported(&e, "Page Viewed");
    assert_not_supported(&rule.error(followup(outcome())).await, "outcomes");
}
