//! Export lookup: the first invocation of a prepared plugin goes through the generated
//! bindings, which type-check every export of the kind's interface; later invocations
//! instantiate the bare component and call the one export by its index
//! (`weft::runtime::exports`).

use std::sync::Arc;

use serde_json::Value;
use weft::kind::PluginKind;
use weft::runtime::host::{Installation, Settings};
use weft::runtime::{Call, KindPre, Runtime};
use weft::samples;
use weft_tests::{plugins, TestHost};

/// Compiles and prepares a built plugin.
fn prepare(rt: &Runtime, wasm: &str, kind: PluginKind) -> KindPre {
    let component = rt.compile(&weft_tests::plugin_bytes(wasm), kind).unwrap();
    rt.prepare(&component, kind).unwrap()
}

/// The call's output (or error) as JSON.
fn call_answer(rt: &Runtime, pre: &KindPre, inst: &Arc<Installation>, call: &Call) -> Value {
    let inv = rt.invoke(pre, inst, call.clone());
    match inv.result {
        Ok(out) => serde_json::to_value(out).unwrap(),
        Err(e) => Value::String(format!("error: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_export_answers_the_same_before_and_after_its_type_check_is_cached() {
    let h = TestHost::new().await;
    let rt = h.app.state.registry.runtime().clone();
    // Invocations block: run them on a blocking thread.
    tokio::task::spawn_blocking(move || check_every_export(&rt))
        .await
        .unwrap();
}

fn check_every_export(rt: &Runtime) {
    let cases: [(&str, PluginKind, Vec<Call>); 4] = [
        (
            plugins::ABANDONED_CART,
            PluginKind::JourneyRule,
            vec![samples::journey_entered(), Call::JourneyDescribe],
        ),
        (
            plugins::TIER_PERSONALIZE,
            PluginKind::Personalization,
            vec![samples::decide()],
        ),
        (
            plugins::SMS,
            PluginKind::ChannelAdapter,
            vec![
                Call::AdapterCapabilities,
                Call::AdapterRefreshCredentials,
                samples::adapter_send("Xin chào"),
            ],
        ),
        (
            plugins::FAQ_BOT,
            PluginKind::ChatbotFlow,
            vec![Call::FlowDescribe, samples::chat_turn("giờ mở cửa")],
        ),
    ];
    for (wasm, kind, calls) in cases {
        let inst = Arc::new(Installation::new("t1", "p", "1.0.0", Settings::default()));
        // Each export's answer on a fresh pre, whose first call is the checked one.
        let mut checked = Vec::new();
        for call in &calls {
            let pre = prepare(rt, wasm, kind);
            assert!(!pre.exports_checked(), "{wasm}: checked before any call");
            let answer = call_answer(rt, &pre, &inst, call);
            assert!(
                !answer.is_string(),
                "{wasm} {}: the call failed: {answer}",
                call.name()
            );
            assert!(
                pre.exports_checked(),
                "{wasm} {}: not checked after a call",
                call.name()
            );
            checked.push(answer);
        }
        // One pre, checked by its first call: every export, called by index, answers alike.
        let pre = prepare(rt, wasm, kind);
        call_answer(rt, &pre, &inst, &calls[0]);
        assert!(pre.exports_checked());
        for (call, answer) in calls.iter().zip(&checked) {
            assert_eq!(
                &call_answer(rt, &pre, &inst, call),
                answer,
                "{wasm} {}",
                call.name()
            );
        }
    }
}
