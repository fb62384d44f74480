//! The happy path end to end.

use axum::http::{Method, StatusCode};
use weft_tests::{plugins, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_reminds_gold_customer_with_code() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(
        &t,
        "abandoned-cart",
        "journey-rule",
        plugins::ABANDONED_CART,
    )
    .await;
    let v = h
        .invoke(&t, "abandoned-cart", &weft::samples::journey_entered())
        .await;
    assert!(v["error"].is_null(), "{v}");
    let ctx = v["output"]["output"]["Ok"][0]["PatchContext"]
        .as_str()
        .unwrap()
        .to_string();
    let v = h
        .invoke(&t, "abandoned-cart", &weft::samples::journey_remind(&ctx))
        .await;
    let text = v["output"]["output"]["Ok"][0]["Send"]["content"][0]["Text"]
        .as_str()
        .unwrap();
    assert!(text.contains("GOLD10"), "{text}");
    // Without credentials: liveness only.
    let (s, v) = h.request(Method::GET, "/healthz", None, "").await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    // A wrong token is refused as on every admin route.
    let (s, v) = h
        .request(Method::GET, "/healthz", Some("wat_wrong"), "")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(weft_tests::error_code(&v), "invalid_credentials");
    let (s, v) = h
        .request(Method::GET, "/healthz", Some(weft_tests::ADMIN), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["allocator"].is_string() && v["version"].is_string(),
        "{v}"
    );
    // The install and the invocations above committed: their rounds are counted (whether
    // one was slow depends on the disk; the store's unit tests cover that).
    assert!(v["storage"]["rounds"].as_u64().unwrap() > 0, "{v}");
    assert!(v["storage"]["slow_rounds"].as_u64().is_some(), "{v}");
    assert!(
        v["storage"]["slowest_round_ms"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

/// The quick start's main job: `weft demo` installs the examples, runs a journey step,
/// sends a message through the real pipeline to its sandbox Zalo, and runs a web chat.
#[test]
fn demo_runs_the_examples_and_sends_through_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = std::path::Path::new(weft_tests::plugins::ABANDONED_CART)
        .parent()
        .unwrap();
    let out = std::process::Command::new(weft_tests::weft_bin())
        .args(["demo", "--exit", "--listen", "127.0.0.1:0", "--plugins-dir"])
        .arg(plugins)
        .arg("--data-dir")
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("GOLD10"), "{text}");
    assert!(
        text.contains("POST /v1/messages → sent via zalo-oa, provider id zmsg-1"),
        "{text}"
    );
    // A page decision through POST /v1/personalize: Lan is gold, so the gold item leads.
    assert!(text.contains("hero  → tier-gold (plugin)"), "{text}");
    assert!(
        text.contains("recs  → tier-gold (plugin)") && text.contains("items sku-vip, sku-7, sku-9"),
        "{text}"
    );
    // A visitor on the chat socket: bot, handoff, the agent's reply, CSAT in the report.
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("agent:") && l.contains("mình là Hoa")),
        "{text}"
    );
    assert!(
        text.contains("GET /v1/reports/csat → CSAT 100.0% from 1 of 1 asked"),
        "{text}"
    );
}
