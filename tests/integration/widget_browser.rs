//! The chat widget in a real browser: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) opens a page the test serves from its own origin. The page's script
//! acts as a visitor through the widget's DOM — it reads the greeting, presses a quick
//! reply, types a message, waits for the handoff — and POSTs a report back.

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_tests::browser::{chromium, Browser};
use weft_tests::{plugins, TestHost};

/// How long the page may take to report: Chromium's start-up on a loaded 2-core box is
/// the slow part.
const REPORT_WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_widget_runs_a_conversation_in_headless_chromium() {
    let Some(chromium) = chromium("the_widget_runs_a_conversation_in_headless_chromium") else {
        return;
    };
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(&t, "faq-bot", "chatbot-flow", plugins::FAQ_BOT)
        .await;

    // Weft on one port, the shop's page on another: a cross-origin embed, as on a real site.
    let weft = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let weft_url = format!("http://{}", weft.local_addr().unwrap());
    let router = weft::api::router(h.app.state.clone());
    tokio::spawn(async move { axum::serve(weft, router).await.unwrap() });
    let page = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", page.local_addr().unwrap());

    let (s, v) = h
        .request(
            axum::http::Method::PUT,
            "/v1/chat/settings",
            Some(&t.secret),
            json!({"allowed_origins": [origin], "default_flow": "faq-bot"}).to_string(),
        )
        .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");

    let anon = "anon-browser-1";
    let html = include_str!("../assets/widget-test.html")
        .replace("{{WEFT}}", &weft_url)
        .replace("{{WRITE_KEY}}", &t.write)
        .replace("{{ANON}}", anon);
    let (tx, mut reports) = mpsc::channel::<Value>(4);
    let site = Router::new()
        .route(
            "/page",
            get(move || {
                let html = html.clone();
                async move { axum::response::Html(html) }
            }),
        )
        .route(
            "/report",
            post(move |body: String| {
                let tx = tx.clone();
                async move {
                    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    let _ = tx.send(v).await;
                    ""
                }
            }),
        );
    tokio::spawn(async move { axum::serve(page, site).await.unwrap() });

    let _browser = Browser::open(&chromium, &format!("{origin}/page"));

    let report = tokio::time::timeout(REPORT_WAIT, reports.recv())
        .await
        .expect("the page did not report within 90 s")
        .expect("report channel closed");
    assert_eq!(report["ok"], true, "the page's report: {report:#}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in [
        "bot-greeting",
        "quick-reply-pressed",
        "postback-answered",
        "text-sent",
        "waiting-for-agent",
        "all-acked",
    ] {
        assert!(steps.contains(&s), "step {s} missing: {report:#}");
    }
    assert_eq!(report["pending"], 0, "{report:#}");
    assert!(
        report["page_errors"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    // What the browser did is what the server stored: the page context, the pressed
    // quick reply's label, the typed words, and the agent queue.
    let q = h.get_ok(&t, "/v1/conversations").await;
    let conv = &q["conversations"][0];
    assert_eq!(conv["state"], "waiting_for_agent", "{q}");
    assert_eq!(conv["address"]["value"], anon);
    assert_eq!(conv["page"]["url"], format!("{origin}/page"));
    let id = conv["id"].as_str().unwrap();
    let c = h.get_ok(&t, &format!("/v1/conversations/{id}")).await;
    let visitor: Vec<String> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "visitor")
        .map(|m| m["content"][0]["Text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(visitor, ["Giao hàng", "toi muon gap nhan vien"], "{c}");
}
