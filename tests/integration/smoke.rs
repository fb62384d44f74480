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
    let (s, _) = h.request(Method::GET, "/healthz", None, "").await;
    assert_eq!(s, StatusCode::OK);
}
