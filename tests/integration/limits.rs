//! Runtime limits, each as a pair: one test where the limit is obeyed, one where it is
//! violated. Everything goes through the HTTP API (upload, invoke, invocation records);
//! errors are read back as the typed `InvokeError` the API serializes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::Value;
use weft::registry::InvocationRecord;
use weft::runtime::bindings::exports::journey;
use weft::runtime::{Call, InvokeError, Output, Report};
use weft::samples;
use weft_tests::{error_code, plugins, TestHost, TestTenant};

/// One invocation as the API answered it, typed.
#[derive(Debug)]
struct Outcome {
    output: Option<Output>,
    error: Option<InvokeError>,
    report: Report,
    /// Wall time of the whole API request, as the caller saw it.
    wall: Duration,
}

async fn call(h: &TestHost, t: &TestTenant, name: &str, call: &Call) -> Outcome {
    let t0 = Instant::now();
    let v = h.invoke(t, name, call).await;
    let wall = t0.elapsed();
    let typed = |field: &str| -> Option<Value> { (!v[field].is_null()).then(|| v[field].clone()) };
    Outcome {
        output: typed("output")
            .map(|o| serde_json::from_value(o).expect("output parses as Output")),
        error: typed("error")
            .map(|e| serde_json::from_value(e).expect("error parses as InvokeError")),
        report: serde_json::from_value(v["report"].clone()).expect("report parses"),
        wall,
    }
}

fn entered() -> Call {
    samples::journey_entered()
}

/// The newest invocation record of `name`.
async fn last_record(h: &TestHost, t: &TestTenant, name: &str) -> InvocationRecord {
    let (s, v) = h
        .request(
            Method::GET,
            &format!("/v1/plugins/{name}/invocations?limit=1"),
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v["invocations"][0].clone())
        .unwrap_or_else(|e| panic!("no record for {name}: {e}: {v}"))
}

/// Asserts the newest record of `name` is a failure with error code `code`.
async fn assert_recorded_failure(
    h: &TestHost,
    t: &TestTenant,
    name: &str,
    code: &str,
) -> InvocationRecord {
    let rec = last_record(h, t, name).await;
    assert!(!rec.ok, "record of {name} says ok: {rec:?}");
    let e = rec
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("record of {name} has no error: {rec:?}"));
    assert_eq!(e.code(), code, "{rec:?}");
    assert_eq!(rec.call, "step");
    rec
}

fn expect_ok(o: &Outcome) -> &Output {
    assert!(o.error.is_none(), "unexpected error: {:?}", o.error);
    o.output.as_ref().expect("an output")
}

/// The well-behaved plugin's result: `[exit("ok")]`.
fn assert_exit_ok(o: &Outcome) {
    match expect_ok(o) {
        Output::JourneyStep(Ok(cmds)) => {
            assert!(
                matches!(cmds.as_slice(), [journey::Command::Exit(r)] if r == "ok"),
                "{cmds:?}"
            )
        }
        other => panic!("unexpected output {other:?}"),
    }
}

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Deadline
// ---------------------------------------------------------------------------------------

/// Checks a deadline error and returns the overshoot (elapsed past the deadline).
fn deadline_overshoot(o: &Outcome, expected_ms: u64, label: &str) -> Duration {
    let Some(InvokeError::Deadline {
        deadline_ms,
        elapsed_us,
    }) = &o.error
    else {
        panic!(
            "{label}: expected a deadline error, got {:?} / {:?}",
            o.error, o.output
        );
    };
    assert_eq!(*deadline_ms, expected_ms);
    assert_eq!(o.error.as_ref().unwrap().code(), "deadline_exceeded");
    assert_eq!(
        o.report.duration_us, *elapsed_us,
        "the report and the error disagree"
    );
    let deadline = Duration::from_millis(expected_ms);
    let elapsed = Duration::from_micros(*elapsed_us);
    assert!(
        elapsed >= deadline,
        "{label}: stopped {elapsed:?} before its {deadline:?} deadline"
    );
    let overshoot = elapsed - deadline;
    eprintln!(
        "{label}: deadline {expected_ms} ms, stopped after {:.2} ms: overshoot {:.2} ms (API wall time {:.2} ms)",
        elapsed.as_secs_f64() * 1e3,
        overshoot.as_secs_f64() * 1e3,
        o.wall.as_secs_f64() * 1e3
    );
    overshoot
}

/// Overshoot allowed past a deadline. The epoch ticks every 1 ms, so an idle box overshoots
/// by 1-2 ms; the rest is headroom for a loaded 2-core machine running tests in parallel.
const MAX_OVERSHOOT: Duration = Duration::from_millis(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_stops_at_the_journey_deadline() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "spin", "journey-rule", plugins::TEST_SPIN_LOOP)
        .await;
    let o = call(&h, &t, "spin", &entered()).await;
    let overshoot = deadline_overshoot(&o, 100, "journey-rule spin loop");
    assert!(overshoot < MAX_OVERSHOOT, "overshoot {overshoot:?}");
    assert!(
        o.wall < Duration::from_millis(100) + MAX_OVERSHOOT + Duration::from_millis(50),
        "API answered after {:?}",
        o.wall
    );
    let rec = assert_recorded_failure(&h, &t, "spin", "deadline_exceeded").await;
    assert_eq!(rec.error, o.error, "the record carries the same error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_plugin_finishes_well_under_the_journey_deadline() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&o);
    eprintln!(
        "well-behaved step: {} µs of its 100 ms deadline",
        o.report.duration_us
    );
    assert!(o.report.duration_us > 0);
    assert!(
        o.report.duration_us < 50_000,
        "took {} µs",
        o.report.duration_us
    );
    let rec = last_record(&h, &t, "wb").await;
    assert!(rec.ok && rec.error.is_none(), "{rec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_stops_at_a_configured_20_ms_deadline() {
    // The personalization deadline (20 ms), applied to the journey-rule spin loop.
    let h = TestHost::with_config(|c| c.runtime.journey_rule.deadline_ms = 20).await;
    let t = h.tenant().await;
    h.install(&t, "spin", "journey-rule", plugins::TEST_SPIN_LOOP)
        .await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "spin", &entered()).await;
    let overshoot = deadline_overshoot(&o, 20, "20 ms spin loop");
    assert!(overshoot < MAX_OVERSHOOT, "overshoot {overshoot:?}");
    assert_recorded_failure(&h, &t, "spin", "deadline_exceeded").await;
    // Obeyed: a well-behaved step fits in 20 ms.
    let ok = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&ok);
    assert!(
        ok.report.duration_us < 20_000,
        "took {} µs",
        ok.report.duration_us
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_loop_does_not_stall_other_tenants_or_plugins() {
    // A long deadline so the loop is surely still running while the others are served.
    let h = Arc::new(TestHost::with_config(|c| c.runtime.journey_rule.deadline_ms = 500).await);
    let a = h.tenant().await;
    let b = h.tenant().await;
    h.install(&a, "spin", "journey-rule", plugins::TEST_SPIN_LOOP)
        .await;
    h.install(&a, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    h.install(&b, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;

    let (h2, a2) = (h.clone(), a.clone());
    let spin = tokio::spawn(async move { call(&h2, &a2, "spin", &entered()).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!spin.is_finished(), "the spin loop ended early");
    for (who, t) in [("another tenant", &b), ("the same tenant", &a)] {
        let o = call(&h, t, "wb", &entered()).await;
        assert_exit_ok(&o);
        eprintln!(
            "{who}: well-behaved step answered in {:.2} ms during the spin loop",
            o.wall.as_secs_f64() * 1e3
        );
        assert!(
            o.wall < Duration::from_millis(150),
            "{who} waited {:?}",
            o.wall
        );
    }
    assert!(
        !spin.is_finished(),
        "the other invocations were not served while the loop ran"
    );
    let s = spin.await.unwrap();
    let overshoot = deadline_overshoot(&s, 500, "500 ms spin loop beside other invocations");
    assert!(overshoot < MAX_OVERSHOOT, "overshoot {overshoot:?}");
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

fn assert_memory_limit(o: &Outcome, cap_bytes: usize) -> usize {
    let Some(InvokeError::MemoryLimit { requested, cap }) = &o.error else {
        panic!(
            "expected a memory limit error, got {:?} / {:?}",
            o.error, o.output
        );
    };
    assert_eq!(*cap, cap_bytes, "the error names the configured cap");
    assert!(
        *requested > *cap,
        "requested {requested} is not above the cap {cap}"
    );
    assert!(
        o.report.peak_memory_bytes <= cap_bytes,
        "peak {} above the cap",
        o.report.peak_memory_bytes
    );
    assert_eq!(o.error.as_ref().unwrap().code(), "memory_limit_exceeded");
    *requested
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_stops_at_the_journey_memory_cap() {
    // Filling 64 MiB a byte at a time takes ~50 ms of wasm; a loaded box may need more than
    // the 100 ms deadline, and this test is about the memory cap, not the deadline.
    let h = TestHost::with_config(|c| c.runtime.journey_rule.deadline_ms = 2_000).await;
    let t = h.tenant().await;
    h.install(&t, "oom", "journey-rule", plugins::TEST_OOM)
        .await;
    let o = call(&h, &t, "oom", &entered()).await;
    let requested = assert_memory_limit(&o, 64 * MIB);
    eprintln!(
        "test-oom: asked for {requested} bytes; peak {} bytes; cap {} bytes",
        o.report.peak_memory_bytes,
        64 * MIB
    );
    // It really grew up to the cap (1 MiB at a time), not failing on the first grow.
    assert!(
        o.report.peak_memory_bytes > 60 * MIB,
        "peak {}",
        o.report.peak_memory_bytes
    );
    assert_recorded_failure(&h, &t, "oom", "memory_limit_exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_plugin_peak_memory_is_reported_below_the_cap() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&o);
    let peak = o.report.peak_memory_bytes;
    eprintln!(
        "well-behaved peak memory: {peak} bytes of {} allowed",
        64 * MIB
    );
    assert!(peak > 0);
    assert_eq!(peak % 65536, 0, "linear memory grows in 64 KiB pages");
    assert!(peak < 64 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_memory_cap_stops_plugins_that_need_more() {
    let h = TestHost::with_config(|c| c.runtime.journey_rule.memory_bytes = 2 * MIB).await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    h.install(&t, "oom", "journey-rule", plugins::TEST_OOM)
        .await;
    h.install(&t, "big", "journey-rule", plugins::TEST_BIG_OUTPUT)
        .await;
    // Obeyed: the well-behaved plugin fits in 2 MiB.
    let ok = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&ok);
    assert!(ok.report.peak_memory_bytes <= 2 * MIB);
    // Violated: the memory bomb stops at the lowered cap...
    let o = call(&h, &t, "oom", &entered()).await;
    assert_memory_limit(&o, 2 * MIB);
    assert_recorded_failure(&h, &t, "oom", "memory_limit_exceeded").await;
    // ...and so does an ordinary plugin that needs ~3 MiB (2 MiB output string).
    let o = call(&h, &t, "big", &entered()).await;
    assert_memory_limit(&o, 2 * MIB);
    assert_recorded_failure(&h, &t, "big", "memory_limit_exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_whose_initial_memory_exceeds_the_cap_cannot_start() {
    // The plugins link with 1 MiB of initial memory (scripts/build-plugins.sh).
    let h = TestHost::with_config(|c| c.runtime.journey_rule.memory_bytes = MIB / 2).await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "wb", &entered()).await;
    let requested = assert_memory_limit(&o, MIB / 2);
    assert!(
        requested < 2 * MIB,
        "the initial memory, not a later grow: {requested}"
    );
    assert_eq!(o.report.hostcalls, 0, "the step never ran");
    assert_recorded_failure(&h, &t, "wb", "memory_limit_exceeded").await;
}

// ---------------------------------------------------------------------------------------
// Fuel
// ---------------------------------------------------------------------------------------

const FUEL_BUDGET: u64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_is_enough_for_the_well_behaved_plugin() {
    let h = TestHost::with_config(|c| c.runtime.journey_rule.fuel = Some(FUEL_BUDGET)).await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&o);
    eprintln!(
        "well-behaved used {} of {FUEL_BUDGET} instructions",
        o.report.instructions
    );
    assert!(o.report.instructions > 0);
    assert!(o.report.instructions <= FUEL_BUDGET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_stops_an_infinite_loop_before_its_deadline() {
    let h = TestHost::with_config(|c| c.runtime.journey_rule.fuel = Some(FUEL_BUDGET)).await;
    let t = h.tenant().await;
    h.install(&t, "spin", "journey-rule", plugins::TEST_SPIN_LOOP)
        .await;
    let o = call(&h, &t, "spin", &entered()).await;
    assert_eq!(
        o.error,
        Some(InvokeError::FuelExhausted {
            budget: FUEL_BUDGET
        }),
        "{o:?}"
    );
    assert_eq!(o.error.as_ref().unwrap().code(), "fuel_exhausted");
    assert_eq!(
        o.report.instructions, FUEL_BUDGET,
        "it used the whole budget"
    );
    eprintln!(
        "spin loop burned {FUEL_BUDGET} instructions in {} µs",
        o.report.duration_us
    );
    assert!(
        o.report.duration_us < 100_000,
        "the fuel, not the 100 ms deadline, stopped it"
    );
    assert_recorded_failure(&h, &t, "spin", "fuel_exhausted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_below_what_a_plugin_needs_fails_it() {
    // The well-behaved step needs ~10,000 instructions.
    let h = TestHost::with_config(|c| c.runtime.journey_rule.fuel = Some(1_000)).await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "wb", &entered()).await;
    assert_eq!(
        o.error,
        Some(InvokeError::FuelExhausted { budget: 1_000 }),
        "{o:?}"
    );
    assert_recorded_failure(&h, &t, "wb", "fuel_exhausted").await;
}

// ---------------------------------------------------------------------------------------
// Stack, panics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_traps_and_the_host_keeps_serving() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "rec", "journey-rule", plugins::TEST_RECURSION)
        .await;
    h.install(&t, "cart", "journey-rule", plugins::ABANDONED_CART)
        .await;
    let o = call(&h, &t, "rec", &entered()).await;
    // A Rust guest overflows its shadow stack in linear memory (1 MiB) before wasmtime's
    // 512 KiB native stack limit; wasm then reports an out-of-bounds access, which the host
    // cannot tell from any other wild access. Either way it must be a trap of the stack
    // kinds, never a deadline or a crash.
    let code = match &o.error {
        Some(InvokeError::StackOverflow) => "stack_overflow",
        Some(InvokeError::Trap { message }) if message.contains("out of bounds memory access") => {
            "trap"
        }
        other => panic!("expected a stack overflow, got {other:?} / {:?}", o.output),
    };
    eprintln!(
        "test-recursion: {:?} after {} µs",
        o.error, o.report.duration_us
    );
    assert!(
        o.report.duration_us < 100_000,
        "it trapped, it did not run into the deadline"
    );
    assert_recorded_failure(&h, &t, "rec", code).await;
    // Obeyed: ordinary call depth works on the same host right after.
    let ok = call(&h, &t, "cart", &entered()).await;
    assert!(
        matches!(expect_ok(&ok), Output::JourneyStep(Ok(c)) if c.len() == 3),
        "{ok:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_panic_is_reported_with_its_message() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "panic", "journey-rule", plugins::TEST_PANIC)
        .await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let o = call(&h, &t, "panic", &entered()).await;
    let Some(InvokeError::Panic { message }) = &o.error else {
        panic!("expected a panic, got {:?}", o.error);
    };
    assert!(message.contains("deliberate panic"), "{message}");
    assert!(
        o.report.stderr.contains("panicked at"),
        "{}",
        o.report.stderr
    );
    let rec = assert_recorded_failure(&h, &t, "panic", "panic").await;
    assert!(
        rec.report.stderr.contains("test-panic: deliberate panic"),
        "{rec:?}"
    );
    // Obeyed: a plugin that does not panic reports no panic and prints nothing.
    let ok = call(&h, &t, "wb", &entered()).await;
    assert_exit_ok(&ok);
    assert!(
        ok.report.stderr.is_empty() && ok.report.stdout.is_empty(),
        "{:?}",
        ok.report
    );
}

// ---------------------------------------------------------------------------------------
// Output and input size
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused_with_output_too_large() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "big", "journey-rule", plugins::TEST_BIG_OUTPUT)
        .await;
    let o = call(&h, &t, "big", &entered()).await;
    let Some(InvokeError::OutputTooLarge { size, max }) = &o.error else {
        panic!("expected output_too_large, got {:?}", o.error);
    };
    assert_eq!(*max, 64 * 1024);
    // 2,097,164 bytes of traits JSON, escaped once more inside the output JSON.
    assert!(*size > 2 * MIB && *size < 3 * MIB, "size {size}");
    assert!(o.output.is_none(), "no part of the output is returned");
    assert_recorded_failure(&h, &t, "big", "output_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_output_fits_the_output_limit() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "cart", "journey-rule", plugins::ABANDONED_CART)
        .await;
    let o = call(&h, &t, "cart", &entered()).await;
    let out = expect_ok(&o);
    let size = weft::runtime::invoke::json_size(out);
    eprintln!(
        "abandoned-cart output: {size} bytes of {} allowed",
        64 * 1024
    );
    assert!(size > 0 && size <= 64 * 1024, "{size}");
}

/// A well-behaved step whose JSON is exactly `len` bytes (padding in the journey context,
/// which the plugin ignores).
fn step_of_len(len: usize) -> Vec<u8> {
    let with = |n: usize| {
        let mut s = samples::step(
            "start",
            journey::Trigger::Entered(samples::product_added()),
            "",
            "gold",
        );
        s.journey_context = "x".repeat(n);
        serde_json::to_vec(&Call::JourneyStep(s)).unwrap()
    };
    let base = with(0).len();
    let body = with(len - base);
    assert_eq!(body.len(), len);
    body
}

const MAX_INPUT: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_body_over_the_input_limit_is_refused_with_invalid_call() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/plugins/wb/invoke",
            Some(&t.secret),
            step_of_len(MAX_INPUT + 1),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "invalid_call");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{}", MAX_INPUT + 1))
            && msg.contains(&format!("{MAX_INPUT}-byte limit")),
        "{msg}"
    );
    // Refused before running: nothing recorded, and the plugin's counter never moved.
    let (_, v) = h
        .request(
            Method::GET,
            "/v1/plugins/wb/invocations",
            Some(&t.secret),
            "",
        )
        .await;
    assert_eq!(v["invocations"], serde_json::json!([]), "{v}");
    let o = call(&h, &t, "wb", &entered()).await;
    assert!(
        o.report.logs[0].message.ends_with("run 1"),
        "{:?}",
        o.report.logs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_body_at_the_input_limit_is_accepted() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "wb", "journey-rule", plugins::TEST_WELL_BEHAVED)
        .await;
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/plugins/wb/invoke",
            Some(&t.secret),
            step_of_len(MAX_INPUT),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["output"]["output"]["Ok"][0]["Exit"], "ok", "{v}");
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_failure_lands_on_the_invocation_record() {
    // One host, every faulty plugin. An 8 MiB cap keeps the memory bomb quick, and a
    // 250 ms deadline leaves it room on a loaded box (it must hit the cap, not the deadline).
    let h = TestHost::with_config(|c| {
        c.runtime.journey_rule.memory_bytes = 8 * MIB;
        c.runtime.journey_rule.deadline_ms = 250;
    })
    .await;
    let t = h.tenant().await;
    let cases = [
        ("spin", plugins::TEST_SPIN_LOOP, &["deadline_exceeded"][..]),
        ("oom", plugins::TEST_OOM, &["memory_limit_exceeded"]),
        ("panic", plugins::TEST_PANIC, &["panic"]),
        ("big", plugins::TEST_BIG_OUTPUT, &["output_too_large"]),
        // See unbounded_recursion_traps_and_the_host_keeps_serving.
        ("rec", plugins::TEST_RECURSION, &["stack_overflow", "trap"]),
        ("wb", plugins::TEST_WELL_BEHAVED, &[]),
    ];
    for (name, wasm, _) in cases {
        h.install(&t, name, "journey-rule", wasm).await;
        call(&h, &t, name, &entered()).await;
    }
    for (name, _, tags) in cases {
        // As raw JSON, the way an operator reads it.
        let (s, v) = h
            .request(
                Method::GET,
                &format!("/v1/plugins/{name}/invocations"),
                Some(&t.secret),
                "",
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let recs = v["invocations"].as_array().unwrap();
        assert_eq!(recs.len(), 1, "{v}");
        let r = &recs[0];
        assert_eq!(r["call"], "step");
        assert_eq!(r["version"], "1.0.0");
        assert!(r["report"]["duration_us"].as_u64().unwrap() > 0, "{r}");
        if tags.is_empty() {
            assert_eq!(r["ok"], true, "{r}");
            assert!(r.get("error").is_none(), "{r}");
        } else {
            assert_eq!(r["ok"], false, "{r}");
            let tag = r["error"]["code"].as_str().unwrap_or_default();
            assert!(
                tags.contains(&tag),
                "{name}: error {tag:?}, expected {tags:?}: {r}"
            );
        }
    }
}
