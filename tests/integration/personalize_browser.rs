//! The personalization script in a real browser: headless Chromium (Debian's `chromium`,
//! which `.ci/run` installs) opens a shop page the test serves from its own origin, with
//! `data-user-id` for a gold-tier visitor. The page's script (tests/assets/personalize-test.html)
//! checks what `/v1/personalize.js` rendered, the `weft:decision` events, the cache and an
//! error, and POSTs a report back.

use std::sync::{Arc, Mutex};
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
async fn the_script_renders_decisions_in_headless_chromium() {
    let Some(chromium) = chromium("the_script_renders_decisions_in_headless_chromium") else {
        return;
    };
    let h = TestHost::new().await;
    let t = h.tenant().await;
    h.install(
        &t,
        "tier-personalize",
        "personalization",
        plugins::TIER_PERSONALIZE,
    )
    .await;

    // Weft on one port, the shop's page on another: a cross-origin embed, as on a real
    // site. Every request Weft gets is logged, to show the browser sent no preflight.
    let weft = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let weft_url = format!("http://{}", weft.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = seen.clone();
    let router = weft::api::router(h.app.state.clone()).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            log.lock()
                .unwrap()
                .push((req.method().to_string(), req.uri().path().to_string()));
            next.run(req)
        },
    ));
    tokio::spawn(async move { axum::serve(weft, router).await.unwrap() });
    let page = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", page.local_addr().unwrap());

    let (s, v) = h
        .request(
            axum::http::Method::PUT,
            "/v1/personalize/settings",
            Some(&t.secret),
            json!({
                "plugin": "tier-personalize",
                "allowed_origins": [origin],
                "placements": [
                    {
                        "id": "hero",
                        "kind": "banner",
                        "default": {"variant": "default", "content": {"headline": "Sản phẩm nổi bật"}, "ttl_ms": 60000}
                    },
                    {"id": "recs", "kind": "product-list", "max_items": 2}
                ],
                // A gold visitor sees sku-gold (boosted), sku-evil, sku-3; never sku-silver.
                // sku-evil's fields try to become markup, a script link and a data: image.
                "candidates": [
                    {"id": "sku-gold", "score": 0.1, "tags": ["tier:gold"], "name": "Áo dài lụa Vàng",
                     "price": 450000, "image": format!("{origin}/img/sku-gold.png"),
                     "url": format!("{origin}/p/sku-gold")},
                    {"id": "sku-evil", "score": 0.9, "name": "<img src=x onerror=\"window.__pwned=1\">",
                     "url": "javascript:window.__pwned=1", "image": "data:image/svg+xml,<svg/>"},
                    {"id": "sku-3", "score": 0.5, "name": "Khăn lụa", "price": "liên hệ"},
                    {"id": "sku-silver", "score": 0.9, "tags": ["tier:silver"], "name": "Chỉ cho hạng Bạc"}
                ]
            })
            .to_string(),
        )
        .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");

    let (s, v) = h
        .segment(
            &t,
            "identify",
            &json!({"userId": "u1", "traits": {"tier": "gold"}}),
        )
        .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");
    h.drain(&t).await;

    let html = include_str!("../assets/personalize-test.html")
        .replace("{{WEFT}}", &weft_url)
        .replace("{{WRITE_KEY}}", &t.write)
        .replace("{{USER}}", "u1");
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

    let page_url = format!("{origin}/page?utm_source=zalo&utm_medium=oa&utm_campaign=tet");
    let _browser = Browser::open(&chromium, &page_url);

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
        "rendered",
        "hero-gold",
        "recs-two-items",
        "events",
        "one-request",
        "cached-and-prevented",
        "error-keeps-content",
        "spa-navigation",
        "safe",
    ] {
        assert!(steps.contains(&s), "step {s} missing: {report:#}");
    }
    assert!(
        report["page_errors"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    // What rendered: the gold variant, the plugin's headline, and the top two candidates
    // for a gold visitor, their fields as text and only http(s) URLs.
    let hero = &report["hero"];
    assert_eq!(hero["variant"], "tier-gold", "{report:#}");
    assert_eq!(hero["source"], "plugin", "{report:#}");
    assert_eq!(
        hero["headline"], "Ưu đãi riêng cho thành viên Vàng",
        "{report:#}"
    );
    let recs = &report["recs"];
    assert_eq!(recs["variant"], "tier-gold", "{report:#}");
    let items = recs["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids, ["sku-gold", "sku-evil"], "{report:#}");
    assert_eq!(items[0]["name"], "Áo dài lụa Vàng");
    let price = items[0]["price"].as_str().unwrap_or_default();
    assert!(
        price.contains("450.000") && price.contains('₫'),
        "VND price: {price:?}"
    );
    assert_eq!(items[0]["href"], format!("{origin}/p/sku-gold"));
    assert_eq!(
        items[0]["images"],
        json!([format!("{origin}/img/sku-gold.png")])
    );
    assert_eq!(items[1]["name"], "<img src=x onerror=\"window.__pwned=1\">");
    assert_eq!(items[1]["href"], Value::Null, "{report:#}");
    assert_eq!(items[1]["images"], json!([]), "{report:#}");
    assert_eq!(report["pwned"], false);
    assert_eq!(report["nope_text"], "Fallback nope");

    // The events: one per placement on load, on each of the two cached refreshes, after
    // pushState and after going back.
    let events = report["events"].as_array().unwrap();
    for id in ["hero", "recs"] {
        let n = events.iter().filter(|e| e["placement"] == id).count();
        assert_eq!(n, 5, "weft:decision events for {id}: {report:#}");
    }

    // The one request for both placements, as docs/personalize.md describes it.
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "{report:#}");
    let first = &requests[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["content_type"], "text/plain;charset=UTF-8");
    assert_eq!(first["credentials"], "omit");
    assert_eq!(
        first["url"],
        format!("{weft_url}/v1/personalize?writeKey={}", t.write)
    );
    let body = &first["body"];
    assert_eq!(body["userId"], "u1", "{body:#}");
    assert!(
        body["anonymousId"].as_str().is_some_and(|a| !a.is_empty()),
        "{body:#}"
    );
    assert_eq!(body["placements"], json!(["hero", "recs"]), "{body:#}");
    let p = &body["page"];
    assert_eq!(p["url"], page_url, "{body:#}");
    assert_eq!(p["path"], "/page");
    assert_eq!(p["title"], "Weft personalize test");
    assert_eq!(p["page_type"], "home");
    assert_eq!(p["device_type"], "desktop");
    assert!(
        p["locale"].as_str().is_some_and(|l| !l.is_empty()),
        "{body:#}"
    );
    assert_eq!(
        p["campaign"],
        json!({"source": "zalo", "medium": "oa", "name": "tet"})
    );
    assert_eq!(
        p["attributes"],
        json!({"productId": "sku-7", "cart": [{"sku": "sku-3", "quantity": 1}]})
    );
    assert_eq!(requests[1]["body"]["placements"], json!(["nope"]));
    let spa = &requests[2]["body"];
    assert_eq!(spa["placements"], json!(["hero", "recs"]), "{spa:#}");
    assert_eq!(spa["page"]["path"], "/page/other", "{spa:#}");
    assert_eq!(spa["page"]["referrer"], page_url, "{spa:#}");

    // Weft saw three POSTs (cached refreshes ask nothing) and no CORS preflight.
    let seen = seen.lock().unwrap().clone();
    let to_personalize: Vec<&str> = seen
        .iter()
        .filter(|(_, path)| path == "/v1/personalize")
        .map(|(method, _)| method.as_str())
        .collect();
    assert_eq!(to_personalize, ["POST", "POST", "POST"], "{seen:?}");
    assert!(
        seen.iter()
            .any(|(m, p)| m == "GET" && p == "/v1/personalize.js"),
        "{seen:?}"
    );
}
