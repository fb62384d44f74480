//! The local runner (`weft plugin run`): in process through `weft::runner::run`, and as the
//! real `weft` binary for exit codes and the JSON report. Also keeps the fixture files under
//! `plugins/*/fixtures/` in sync with `weft::samples` and proves each one runs.
//!
//! To regenerate the fixtures after changing the samples:
//! `WEFT_BLESS_FIXTURES=1 cargo test -p weft-tests fixtures_match`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcessOutput};

use serde_json::{json, Value};
use weft::config::RuntimeConfig;
use weft::kind::PluginKind;
use weft::runner::{RunError, RunOutcome};
use weft::runtime::bindings::exports::journey;
use weft::runtime::bindings::types::ChannelKind;
use weft::runtime::{Call, InvokeError, Output};
use weft::samples;
use weft_tests::plugins;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The journey context abandoned-cart's entry step writes for the sample event.
fn cart_context() -> String {
    json!({"cart_id": "c-1001", "product": {"name": "Áo dài lụa", "product_id": "sku-7"}})
        .to_string()
}

/// One fixture file: where it lives, the plugin it is for, and the call it holds.
struct FixtureFile {
    path: &'static str,
    kind: PluginKind,
    wasm: &'static str,
    call: Call,
}

fn fixture_files() -> Vec<FixtureFile> {
    vec![
        FixtureFile {
            path: "plugins/abandoned-cart/fixtures/entered.json",
            kind: PluginKind::JourneyRule,
            wasm: plugins::ABANDONED_CART,
            call: samples::journey_entered(),
        },
        FixtureFile {
            path: "plugins/abandoned-cart/fixtures/remind.json",
            kind: PluginKind::JourneyRule,
            wasm: plugins::ABANDONED_CART,
            call: samples::journey_remind(&cart_context()),
        },
        FixtureFile {
            path: "plugins/tier-personalize/fixtures/decide.json",
            kind: PluginKind::Personalization,
            wasm: plugins::TIER_PERSONALIZE,
            call: samples::decide(),
        },
        FixtureFile {
            path: "plugins/zalo-oa/fixtures/capabilities.json",
            kind: PluginKind::ChannelAdapter,
            wasm: plugins::ZALO_OA,
            call: Call::AdapterCapabilities,
        },
        FixtureFile {
            path: "plugins/faq-bot/fixtures/hours.json",
            kind: PluginKind::ChatbotFlow,
            wasm: plugins::FAQ_BOT,
            call: samples::chat_turn("Cho hỏi giờ mở cửa?"),
        },
    ]
}

/// Limits as in production, with a small instance pool: many tests build engines at once.
fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        pool_instances: 16,
        ..RuntimeConfig::default()
    }
}

async fn run(wasm: &str, kind: PluginKind, input: &Path) -> RunOutcome {
    weft::runner::run(Path::new(wasm), kind, input, runtime_config())
        .await
        .unwrap_or_else(|e| panic!("running {wasm} on {}: {e}", input.display()))
}

#[test]
fn fixtures_match_the_shared_samples() {
    let bless = std::env::var("WEFT_BLESS_FIXTURES").is_ok_and(|v| v == "1");
    for f in fixture_files() {
        let path = repo_root().join(f.path);
        // As printed: an `f32` score reads back as the `0.9` the file holds.
        let sample: Value = serde_json::from_str(&serde_json::to_string(&f.call).unwrap()).unwrap();
        let mut actual: Value = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate with WEFT_BLESS_FIXTURES=1",
                    path.display()
                )
            });
        // The fixture's `expect` is its own; the call must be the sample's.
        let expect = actual.as_object_mut().and_then(|o| o.remove("expect"));
        if bless {
            let mut blessed = sample.clone();
            if let (Some(o), Some(e)) = (blessed.as_object_mut(), expect) {
                o.insert("expect".into(), e);
            }
            let text = serde_json::to_string_pretty(&blessed).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
            continue;
        }
        assert_eq!(
            actual, sample,
            "{} is out of date; regenerate with WEFT_BLESS_FIXTURES=1",
            f.path
        );
    }
}

/// Every example plugin's fixtures: each states the output it expects, and meets it, run
/// as `weft plugin run <plugin>.wasm --input plugins/<name>/fixtures` runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_fixture_states_its_expected_output_and_meets_it() {
    let built = Path::new(plugins::ABANDONED_CART).parent().unwrap();
    let mut dirs: Vec<_> = std::fs::read_dir(repo_root().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("fixtures").is_dir())
        .collect();
    dirs.sort();
    let mut ran = 0;
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let wasm = built.join(format!("{name}.wasm"));
        let plugin = weft::runner::LocalPlugin::compile(&wasm, runtime_config())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut fixtures: Vec<_> = std::fs::read_dir(dir.join("fixtures"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        fixtures.sort();
        for f in fixtures {
            let shown = format!("{name}/{}", f.file_name().unwrap().to_string_lossy());
            let o = plugin
                .run(None, &f)
                .await
                .unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert!(o.error.is_none(), "{shown}: {:?}", o.error);
            let check = o
                .expect
                .unwrap_or_else(|| panic!("{shown} has no `expect`"));
            assert!(check.met, "{shown}: {:?}", check.difference);
            ran += 1;
        }
    }
    assert!(ran >= 50, "only {ran} example fixtures ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_parse_and_run() {
    let mut entered_context = None;
    for f in fixture_files() {
        let o = run(f.wasm, f.kind, &repo_root().join(f.path)).await;
        assert!(o.ok && o.error.is_none(), "{}: {:?}", f.path, o.error);
        assert!(
            o.compile_us > 0 && o.report.duration_us > 0,
            "{}: {:?}",
            f.path,
            o.report
        );
        let out = o.output.unwrap_or_else(|| panic!("{}: no output", f.path));
        let text = serde_json::to_string(&out).unwrap();
        match (f.path.rsplit('/').next().unwrap(), out) {
            ("entered.json", Output::JourneyStep(Ok(cmds))) => {
                let [journey::Command::PatchContext(ctx), journey::Command::Wait(_), journey::Command::Goto(to)] =
                    cmds.as_slice()
                else {
                    panic!("entered: {cmds:?}");
                };
                assert_eq!(to, "remind");
                entered_context = Some(ctx.clone());
            }
            ("remind.json", Output::JourneyStep(Ok(_))) => {
                assert!(
                    text.contains("GOLD10") && text.contains("Áo dài lụa"),
                    "remind: {text}"
                );
            }
            ("decide.json", Output::PersonalizeDecide(Ok(d))) => {
                assert_eq!(d.len(), 1, "{text}");
                assert_eq!(d[0].variant_id, "tier-gold");
            }
            ("capabilities.json", Output::AdapterCapabilities(c)) => {
                assert!(matches!(c.channel, ChannelKind::ZaloOa), "{text}");
                assert_eq!(c.max_text_len, 2000);
            }
            ("hours.json", Output::FlowTurn(Ok(_))) => {
                assert!(
                    text.contains("FAQ Answered") && text.contains("hours"),
                    "hours: {text}"
                );
            }
            (name, out) => panic!("{name}: unexpected output {out:?}"),
        }
    }
    // The remind fixture continues from what the entered fixture's step wrote.
    let written: Value = serde_json::from_str(&entered_context.unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::from_str::<Value>(&cart_context()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_seeds_fixture_profiles_for_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("snoop.json");
    let ctx = json!({"probe": [{"kind": "user_id", "value": "77"}]}).to_string();
    let call = Call::JourneyStep(samples::step(
        "start",
        journey::Trigger::TimerFired("t".into()),
        &ctx,
        "gold",
    ));
    let mut fixture = serde_json::to_value(&call).unwrap();
    fixture["profiles"] =
        json!([{"identities": [{"kind": "user_id", "value": "77"}], "traits": {"name": "Minh"}}]);
    // Settings parse alongside (the snoop reads none of them).
    fixture["settings"] = json!({"config": {"greeting": "xin chào"}});
    std::fs::write(&input, fixture.to_string()).unwrap();
    let o = run(plugins::TEST_TENANT_SNOOP, PluginKind::JourneyRule, &input).await;
    let Some(Output::JourneyStep(Ok(cmds))) = &o.output else {
        panic!("{:?} {:?}", o.output, o.error);
    };
    let journey::Command::SetTraits(report) = &cmds[0] else {
        panic!("{cmds:?}");
    };
    let report: Value = serde_json::from_str(report).unwrap();
    assert_eq!(report["found"][0]["traits"]["name"], "Minh", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_refuses_a_fixture_for_another_kind() {
    let input = repo_root().join("plugins/tier-personalize/fixtures/decide.json");
    let err = weft::runner::run(
        Path::new(plugins::ABANDONED_CART),
        PluginKind::JourneyRule,
        &input,
        runtime_config(),
    )
    .await
    .expect_err("a decide call cannot run on a journey rule");
    let RunError::Fixture { message, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        message.contains("personalization") && message.contains("journey-rule"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_without_a_kind_runs_the_fixtures_call_and_checks_the_component_for_it() {
    let wasm = Path::new(plugins::TIER_PERSONALIZE);
    let plugin = weft::runner::LocalPlugin::compile(wasm, runtime_config())
        .await
        .unwrap();
    let decide = repo_root().join("plugins/tier-personalize/fixtures/decide.json");
    let o = plugin.run(None, &decide).await.unwrap();
    assert!(
        matches!(o.output, Some(Output::PersonalizeDecide(Ok(_)))),
        "{o:?}"
    );
    // A journey call names a kind this component is not: refused, naming both.
    let entered = repo_root().join(ENTERED);
    let err = plugin
        .run(None, &entered)
        .await
        .expect_err("not a journey rule");
    let RunError::Validation(e) = &err else {
        panic!("{err}");
    };
    assert!(
        e.to_string().contains("journey-rule") && e.to_string().contains("personalization"),
        "{e}"
    );
}

/// The sms adapter's send fixture with its `http` answers replaced by `answers` and no
/// `expect`, written under `dir`: its path and its JSON, to change and [`rewrite`].
fn sms_send_answered(dir: &Path, answers: Value) -> (PathBuf, Value) {
    let mut fixture: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("plugins/sms/fixtures/send.json")).unwrap(),
    )
    .unwrap();
    fixture["http"] = answers;
    fixture.as_object_mut().unwrap().remove("expect");
    let path = dir.join("send.json");
    rewrite(&path, &fixture);
    (path, fixture)
}

fn rewrite(path: &Path, fixture: &Value) {
    std::fs::write(path, fixture.to_string()).unwrap();
}

const TWILIO_MESSAGES: &str =
    "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixtures_http_answers_stand_in_for_the_provider_each_once() {
    let dir = tempfile::tempdir().unwrap();
    // Twilio's rate limit, then its acceptance: the adapter sees the first answer.
    let (input, _) = sms_send_answered(
        dir.path(),
        json!([
            {"method": "POST", "url": TWILIO_MESSAGES, "status": 429,
             "headers": {"retry-after": "7"}, "body": {"code": 20429}},
            {"method": "POST", "url": TWILIO_MESSAGES, "status": 201,
             "body": {"sid": "SM2", "status": "queued"}},
        ]),
    );
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    let text = serde_json::to_string(&o.output).unwrap();
    assert!(
        text.contains("RateLimited") && text.contains("7000"),
        "{text}"
    );
    assert_eq!(o.report.http_calls.len(), 1, "{:?}", o.report.http_calls);
    assert_eq!(o.report.http_calls[0].status, Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixtures_expect_checks_the_requests_the_adapter_made() {
    let dir = tempfile::tempdir().unwrap();
    let (input, mut fixture) = sms_send_answered(
        dir.path(),
        json!([{"url": TWILIO_MESSAGES, "status": 201, "body": {"sid": "SM5"}}]),
    );
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    let requests = o
        .requests
        .expect("the fixture answers, so the requests are kept");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url, TWILIO_MESSAGES);
    let body = requests[0].body.as_str().unwrap_or_default();
    assert!(body.starts_with("To=%2B84912345678&From="), "{body}");
    // Met, then missed by the method, named by its path.
    fixture["expect"] = json!({"requests": [{"method": "POST", "url": TWILIO_MESSAGES}]});
    rewrite(&input, &fixture);
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    assert_eq!(o.expect.map(|c| c.met), Some(true));
    fixture["expect"] = json!({"requests": [{"method": "GET"}]});
    rewrite(&input, &fixture);
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    let check = o.expect.unwrap();
    assert_eq!(
        check.difference.as_deref(),
        Some("`output.requests[0].method` is \"POST\"; expected \"GET\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_fixture_does_not_answer_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let other = "https://api.twilio.com/2010-04-01/Accounts/AC9/Messages.json";
    let (input, _) = sms_send_answered(
        dir.path(),
        json!([{"url": other, "status": 201, "body": {"sid": "SM3"}}]),
    );
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    let call = &o.report.http_calls[0];
    assert_eq!(call.status, None);
    let error = call.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("no answer left in the fixture's `http`") && error.contains(TWILIO_MESSAGES),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixtures_http_answers_do_not_bypass_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let (input, mut fixture) = sms_send_answered(
        dir.path(),
        json!([{"url": TWILIO_MESSAGES, "status": 201, "body": {"sid": "SM4"}}]),
    );
    fixture["settings"]["allowed_hosts"] = json!(["example.com"]);
    rewrite(&input, &fixture);
    let o = run(plugins::SMS, PluginKind::ChannelAdapter, &input).await;
    let error = o.report.http_calls[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("not on this installation's allowlist"),
        "{error}"
    );
    assert!(!serde_json::to_string(&o.output).unwrap().contains("SM4"));
}

/// The test-flaky adapter's send fixture, answered, with its `header` setting.
fn flaky_send_with_header(dir: &Path, header: &str) -> PathBuf {
    let (input, mut fixture) = sms_send_answered(
        dir,
        json!([{"url": "https://api.example.com/send", "status": 200}]),
    );
    fixture["settings"] = json!({
        "config": {"url": "https://api.example.com/send", "header": header},
        "allowed_hosts": ["api.example.com"],
    });
    rewrite(&input, &fixture);
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapters_request_headers_are_shown_and_an_invalid_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = flaky_send_with_header(dir.path(), "X-Trace: t-1");
    let o = run(
        plugins::TEST_FLAKY_ADAPTER,
        PluginKind::ChannelAdapter,
        &input,
    )
    .await;
    assert!(o.ok, "{:?}", o.error);
    let requests = o.requests.as_deref().unwrap_or_default();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers["x-trace"], "t-1");

    // A space in a header name: refused before it is sent (or answered), as a server
    // refuses it, with the header named.
    let input = flaky_send_with_header(dir.path(), "Bad Name: x");
    let o = run(
        plugins::TEST_FLAKY_ADAPTER,
        PluginKind::ChannelAdapter,
        &input,
    )
    .await;
    let error = o.report.http_calls[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("invalid header name `Bad Name`"), "{error}");
    assert!(
        o.requests.unwrap_or_default().is_empty(),
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_refuses_a_fixture_over_its_kinds_input_limit() {
    let entered = repo_root().join(ENTERED);
    let size = std::fs::metadata(&entered).unwrap().len() as usize;
    let wasm = Path::new(plugins::ABANDONED_CART);
    // Obeyed: the limit is the fixture's size.
    let mut config = runtime_config();
    config.limits_mut(PluginKind::JourneyRule).max_input_bytes = size;
    let plugin = weft::runner::LocalPlugin::compile(wasm, config.clone())
        .await
        .unwrap();
    assert!(plugin.run(None, &entered).await.unwrap().ok);
    // Violated by one byte, with the kind given or taken from the fixture.
    config.limits_mut(PluginKind::JourneyRule).max_input_bytes = size - 1;
    let plugin = weft::runner::LocalPlugin::compile(wasm, config)
        .await
        .unwrap();
    for kind in [Some(PluginKind::JourneyRule), None] {
        let err = plugin
            .run(kind, &entered)
            .await
            .expect_err("over the limit");
        let RunError::Fixture { message, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            message.contains(&format!(
                "{size} bytes exceeds the {}-byte input limit of journey-rule plugins",
                size - 1
            )),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_applies_the_limits_it_is_given() {
    let input = repo_root().join("plugins/abandoned-cart/fixtures/entered.json");
    // Obeyed: production limits.
    let o = run(plugins::TEST_WELL_BEHAVED, PluginKind::JourneyRule, &input).await;
    assert!(o.ok, "{:?}", o.error);
    // Violated: the same plugin under a 1,000-instruction budget.
    let mut c = runtime_config();
    c.journey_rule.fuel = Some(1_000);
    let o = weft::runner::run(
        Path::new(plugins::TEST_WELL_BEHAVED),
        PluginKind::JourneyRule,
        &input,
        c,
    )
    .await
    .unwrap();
    assert!(!o.ok);
    assert_eq!(o.error, Some(InvokeError::FuelExhausted { budget: 1_000 }));
}

// ---------------------------------------------------------------------------------------
// The `weft` binary
// ---------------------------------------------------------------------------------------

fn plugin_run(wasm: &str, fixture: &str, extra: &[&str]) -> ProcessOutput {
    let out = Command::new(weft_tests::weft_bin())
        .args(["plugin", "run", wasm, "--kind", "journey-rule", "--input"])
        .arg(repo_root().join(fixture))
        .args(extra)
        .output()
        .expect("running weft plugin run");
    eprintln!(
        "weft plugin run {} -> {:?}\nstderr: {}",
        Path::new(wasm).file_name().unwrap().to_string_lossy(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    out
}

const ENTERED: &str = "plugins/abandoned-cart/fixtures/entered.json";

#[test]
fn weft_plugin_run_prints_the_outcome_and_report_as_json() {
    let out = plugin_run(plugins::ABANDONED_CART, ENTERED, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["output"]["call"], "journey-step", "{v}");
    assert!(
        v["output"]["output"]["Ok"][0]["PatchContext"].is_string(),
        "{v}"
    );
    assert!(v["compile_us"].as_u64().unwrap() > 0, "{v}");
    let r = &v["report"];
    for field in ["duration_us", "instructions", "peak_memory_bytes"] {
        assert!(
            r[field].as_u64().is_some_and(|n| n > 0),
            "report.{field} missing or zero: {v}"
        );
    }
    assert!(
        r["peak_memory_bytes"].as_u64().unwrap() <= 64 * 1024 * 1024,
        "{v}"
    );
}

fn stderr(out: &ProcessOutput) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the run exited with `code` and said `says` on stderr.
fn assert_exit(out: &ProcessOutput, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert!(stderr(out).contains(says), "{}", stderr(out));
}

/// The fixture at `ENTERED` with its `expect` replaced by `expect`, written under `dir`.
fn entered_expecting(dir: &Path, expect: Value) -> String {
    let mut fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(ENTERED)).unwrap()).unwrap();
    match expect {
        Value::Null => fixture.as_object_mut().unwrap().remove("expect"),
        expect => fixture
            .as_object_mut()
            .unwrap()
            .insert("expect".into(), expect),
    };
    let path = dir.join("entered-expect.json");
    std::fs::write(&path, fixture.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn weft_plugin_run_exits_9_when_the_output_differs_from_the_fixtures_expect() {
    let dir = tempfile::tempdir().unwrap();
    let met = entered_expecting(
        dir.path(),
        json!({"call": "journey-step", "output": {"Ok": [{}, {"Wait": {}}, {}]}}),
    );
    let out = plugin_run(plugins::ABANDONED_CART, &met, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("expect: met"), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expect"], json!({"met": true}), "{v}");

    let missed = entered_expecting(dir.path(), json!({"output": {"Ok": [{"Exit": "done"}]}}));
    let out = plugin_run(plugins::ABANDONED_CART, &missed, &[]);
    assert_exit(
        &out,
        9,
        "expect: not met: `output.output.Ok` has 3 items; expected 1",
    );
}

#[test]
fn weft_plugin_run_on_a_directory_runs_every_fixture_and_exits_with_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    let met = entered_expecting(dir.path(), json!({"call": "journey-step"}));
    std::fs::rename(met, fixtures.join("a-met.json")).unwrap();
    let missed = entered_expecting(dir.path(), json!({"call": "journey-describe"}));
    std::fs::rename(missed, fixtures.join("b-missed.json")).unwrap();
    let plain = entered_expecting(dir.path(), Value::Null);
    std::fs::rename(plain, fixtures.join("c-plain.json")).unwrap();
    std::fs::write(fixtures.join("notes.txt"), "not a fixture").unwrap();

    let out = plugin_run(plugins::ABANDONED_CART, fixtures.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "one line per *.json, in name order: {stdout}"
    );
    assert!(
        lines[0].starts_with("a-met.json: ok, expect met"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("b-missed.json: FAILED (exit 9): expect not met: `output.call`"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("c-plain.json: ok, no expect"),
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("3 fixtures: 2 passed, 1 failed"),
        "{}",
        stderr(&out)
    );

    std::fs::remove_file(fixtures.join("b-missed.json")).unwrap();
    let out = plugin_run(plugins::ABANDONED_CART, fixtures.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn weft_plugin_run_exits_3_when_the_deadline_passes() {
    let out = plugin_run(plugins::TEST_SPIN_LOOP, ENTERED, &[]);
    assert_exit(&out, 3, "deadline exceeded: the 100 ms deadline");
}

#[test]
fn weft_plugin_run_exits_4_at_the_memory_limit() {
    // A 16 MiB cap and a 5 s deadline: filling memory a byte at a time can take longer
    // than the 100 ms deadline on a loaded box, and then the deadline (exit 3) would win.
    let dir = tempfile::tempdir().unwrap();
    let config = journey_config(dir.path(), 5_000, 16 * 1024 * 1024, None);
    // --json: the error is in the JSON and the exit code still says which limit.
    let out = plugin_run(plugins::TEST_OOM, ENTERED, &["--json", "--config", &config]);
    assert_exit(&out, 4, "memory limit exceeded");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "memory_limit_exceeded", "{v}");
    assert_eq!(v["error"]["cap"], 16 * 1024 * 1024, "{v}");
}

#[test]
fn weft_plugin_run_exits_6_when_the_plugin_panics() {
    let out = plugin_run(plugins::TEST_PANIC, ENTERED, &[]);
    assert_exit(&out, 6, "plugin panicked");
    assert!(
        stderr(&out).contains("deliberate panic"),
        "{}",
        stderr(&out)
    );
}

/// Writes a `weft.toml` with the default journey-rule limits except the deadline, memory
/// and fuel; returns its path.
fn journey_config(dir: &Path, deadline_ms: u64, memory_bytes: usize, fuel: Option<u64>) -> String {
    let mut limits = weft::config::KindLimits::for_kind(PluginKind::JourneyRule);
    limits.deadline_ms = deadline_ms;
    limits.memory_bytes = memory_bytes;
    limits.fuel = fuel;
    // Every field of the table is required; numbers are TOML as they are JSON.
    let mut text = String::from("[runtime]\npool_instances = 4\n\n[runtime.journey_rule]\n");
    for (k, v) in serde_json::to_value(&limits).unwrap().as_object().unwrap() {
        if !v.is_null() {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    let path = dir.join("weft.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn weft_plugin_run_takes_limits_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = journey_config(dir.path(), 100, 64 * 1024 * 1024, Some(100_000));
    // Obeyed: the well-behaved step fits in 100,000 instructions.
    let plain = entered_expecting(dir.path(), Value::Null);
    let out = plugin_run(plugins::TEST_WELL_BEHAVED, &plain, &["--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Violated: the spin loop runs out of fuel (exit 5), not into the deadline (exit 3).
    let out = plugin_run(plugins::TEST_SPIN_LOOP, ENTERED, &["--config", &config]);
    assert_exit(&out, 5, "100000 instructions");
}

#[test]
fn weft_plugin_run_exits_2_on_a_bad_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.json");
    std::fs::write(&input, r#"{"call": "journey-step", "input": {"nope": 1}}"#).unwrap();
    let out = Command::new(weft_tests::weft_bin())
        .args([
            "plugin",
            "run",
            plugins::ABANDONED_CART,
            "--kind",
            "journey-rule",
            "--input",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid fixture"), "{}", stderr(&out));
}

/// Every channel adapter's webhook and capability fixtures run through the local runner
/// with the outcome their name promises: signed ones give events, forged ones
/// `bad-signature`, old ones `stale-timestamp`. (Send fixtures answer from their `http`
/// list; the `channels` tests send to fake providers over HTTP.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_fixtures_give_the_outcomes_their_names_promise() {
    use weft::runtime::bindings::exports::adapter::WebhookError;
    let adapters = [
        ("zalo-oa", plugins::ZALO_OA),
        ("messenger", plugins::MESSENGER),
        ("whatsapp-cloud", plugins::WHATSAPP_CLOUD),
        ("sms", plugins::SMS),
        ("email", plugins::EMAIL),
    ];
    let mut ran = 0;
    for (name, wasm) in adapters {
        let dir = repo_root().join("plugins").join(name).join("fixtures");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_string_lossy().into_owned();
                f.starts_with("webhook-") || f == "capabilities.json"
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 2,
            "{name}: too few fixtures in {}",
            dir.display()
        );
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let o = run(wasm, PluginKind::ChannelAdapter, &path).await;
            let out = o
                .output
                .unwrap_or_else(|| panic!("{name}/{file}: {:?}", o.error));
            match out {
                Output::AdapterCapabilities(c) => assert!(c.max_text_len > 0, "{name}/{file}"),
                Output::AdapterHandleWebhook(r) => {
                    let refused = file.contains("bad-signature") || file.contains("wrong-token");
                    match (r, refused, file.contains("stale")) {
                        (Err(WebhookError::BadSignature), true, _) => {}
                        (Err(WebhookError::StaleTimestamp), _, true) => {}
                        (Ok(res), false, false) => assert!(
                            !res.events.is_empty() || file.contains("verify"),
                            "{name}/{file}: no events"
                        ),
                        (other, _, _) => panic!("{name}/{file}: {other:?}"),
                    }
                }
                other => panic!("{name}/{file}: unexpected {other:?}"),
            }
            ran += 1;
        }
    }
    assert!(ran >= 25, "{ran} fixtures ran");
}
