//! Conversations end to end over a real socket: a visitor on the web-chat WebSocket, the
//! example flows (faq-bot, lead-capture, payment-helper), agents on their API, SLA clocks,
//! surveys and their reports; and every bad input the socket refuses.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;
use weft_tests::{error_code, plugins, TestHost, TestTenant};

/// The shop's site, on the tenant's origin allowlist.
const SHOP: &str = "https://shop.example.vn";

/// How long a test waits for one frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Serves the real router on 127.0.0.1.
async fn listen(h: &TestHost) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let router = weft::api::router(h.app.state.clone());
    tokio::spawn(async move {
        axum::serve(l, router).await.unwrap();
    });
    addr
}

/// A visitor's socket and every frame it received.
struct Visitor {
    ws: Socket,
    seen: Vec<Value>,
    next_client_id: u32,
}

impl Visitor {
    async fn connect(addr: SocketAddr, key: &str, anon: &str, origin: Option<&str>) -> Visitor {
        let url = format!("ws://{addr}/v1/chat/ws?writeKey={key}&anonymousId={anon}");
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Visitor {
            ws,
            seen: Vec::new(),
            next_client_id: 0,
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Ws::Text(v.to_string().into())).await.unwrap();
    }

    async fn hello(&mut self, path: &str) -> Value {
        self.send(json!({
            "type": "hello",
            "locale": "vi-VN",
            "page": {"url": format!("{SHOP}{path}"), "referrer": "https://www.google.com/", "title": "Giỏ hàng", "time_on_page_ms": 42_000},
        }))
        .await;
        self.expect("ready").await
    }

    /// Sends a typed message and waits for its ack.
    async fn say(&mut self, text: &str) -> Value {
        self.next_client_id += 1;
        let cid = format!("c{}", self.next_client_id);
        self.send(json!({"type": "message", "text": text, "client_id": cid}))
            .await;
        let ack = self.expect("ack").await;
        assert_eq!(ack["client_id"], cid.as_str());
        ack
    }

    /// Presses a quick reply.
    async fn press(&mut self, value: &str, label: &str) -> Value {
        self.next_client_id += 1;
        let cid = format!("c{}", self.next_client_id);
        self.send(json!({"type": "postback", "value": value, "label": label, "client_id": cid}))
            .await;
        self.expect("ack").await
    }

    /// The next frame (skipping none), or panics after [`FRAME_WAIT`].
    async fn frame(&mut self) -> Option<Value> {
        let msg = tokio::time::timeout(FRAME_WAIT, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {FRAME_WAIT:?}; seen: {:#?}", self.seen))?;
        match msg.ok()? {
            Ws::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                self.seen.push(v.clone());
                Some(v)
            }
            Ws::Close(c) => {
                let c = c.map(|c| json!({"type": "closed", "code": u16::from(c.code), "reason": c.reason.to_string()}));
                let v = c.unwrap_or(json!({"type": "closed"}));
                self.seen.push(v.clone());
                Some(v)
            }
            _ => Some(json!({"type": "other"})),
        }
    }

    /// Waits for the next frame of `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let f = self
                .frame()
                .await
                .unwrap_or_else(|| panic!("socket ended waiting for `{kind}`: {:#?}", self.seen));
            if f["type"] == kind {
                return f;
            }
        }
    }

    /// Waits for a message frame from `from` whose text contains `needle`.
    async fn message_from(&mut self, from: &str, needle: &str) -> Value {
        loop {
            let f = self.expect("message").await;
            if f["from"] == from && transcript(&f).contains(needle) {
                return f;
            }
        }
    }

    /// Waits for a `state` frame with `state`.
    async fn state(&mut self, state: &str) -> Value {
        loop {
            let f = self.expect("state").await;
            if f["state"] == state {
                return f;
            }
        }
    }

    /// Reads until the server closes; returns the error frame and the close frame.
    async fn refused(&mut self) -> (Value, Value) {
        let err = self.expect("error").await;
        let closed = self.expect("closed").await;
        (err, closed)
    }
}

/// All text of a message frame's content (texts, prompts, card titles, choice labels).
fn transcript(m: &Value) -> String {
    let mut out = String::new();
    for c in m["content"].as_array().into_iter().flatten() {
        for (k, v) in c.as_object().into_iter().flatten() {
            match k.as_str() {
                "Text" => out.push_str(v.as_str().unwrap_or("")),
                "Choices" => {
                    out.push_str(v["prompt"].as_str().unwrap_or(""));
                    for o in v["options"].as_array().into_iter().flatten() {
                        out.push_str(&format!(" [{}]", o["value"].as_str().unwrap_or("")));
                    }
                }
                "Card" => {
                    out.push_str(v["title"].as_str().unwrap_or(""));
                    for b in v["buttons"].as_array().into_iter().flatten() {
                        out.push_str(&format!(" <{}>", b["action"]));
                    }
                }
                _ => {}
            }
            out.push('\n');
        }
    }
    out
}

/// A tenant with the three example flows, faq-bot as the default, the shop's origin
/// allowed, and an agent. Returns the agent's token.
async fn shop(h: &TestHost) -> (TestTenant, String) {
    let t = h.tenant().await;
    h.install(&t, "faq-bot", "chatbot-flow", plugins::FAQ_BOT)
        .await;
    h.install(&t, "lead-capture", "chatbot-flow", plugins::LEAD_CAPTURE)
        .await;
    h.install(
        &t,
        "payment-helper",
        "chatbot-flow",
        plugins::PAYMENT_HELPER,
    )
    .await;
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/chat/settings",
            Some(&t.secret),
            json!({"allowed_origins": [SHOP], "default_flow": "faq-bot"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = agent(h, &t, "Lan").await;
    (t, token)
}

async fn agent(h: &TestHost, t: &TestTenant, name: &str) -> String {
    let (s, v) = h
        .request(
            Method::POST,
            "/v1/agents",
            Some(&t.secret),
            json!({"name": name}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// An agent API call.
async fn as_agent(
    h: &TestHost,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    h.request(method, path, Some(token), body).await
}

#[tokio::test]
async fn a_whole_conversation_bot_handoff_agent_resolve_csat_and_report() {
    let h = TestHost::new().await;
    let (t, lan) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-whole-1", Some(SHOP)).await;

    // The default flow greets with quick replies; the greeting is in the history.
    let ready = v.hello("/gio-hang").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    assert_eq!(ready["state"], "bot");
    let greeting = &ready["history"][0];
    assert_eq!(greeting["from"], "bot", "{ready}");
    assert!(transcript(greeting).contains("[topic:shipping]"), "{ready}");

    // A quick reply: the bot answers the topic.
    v.press("topic:shipping", "Giao hàng").await;
    v.message_from("bot", "").await;

    // Asking for a person hands off.
    v.say("toi muon gap nhan vien").await;
    v.state("waiting_for_agent").await;

    // The agent sees the queue with the page the visitor is on, then the 360 view.
    h.drain(&t).await;
    let (s, q) = as_agent(&h, &lan, Method::GET, "/v1/agent/queue", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{q}");
    let item = &q["conversations"][0];
    assert_eq!(item["id"], conv.as_str());
    assert_eq!(item["state"], "waiting_for_agent");
    assert_eq!(item["page"]["url"], format!("{SHOP}/gio-hang"));
    // The bot saw the page too: its handoff summary names it.
    assert!(
        item["summary"]
            .as_str()
            .unwrap()
            .ends_with(&format!("on {SHOP}/gio-hang")),
        "{item}"
    );
    assert!(item["sla"]["first_response_due"].as_i64().is_some());
    let path = format!("/v1/agent/conversations/{conv}");
    let (s, view) = as_agent(&h, &lan, Method::GET, &path, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["conversation"]["page"]["title"], "Giỏ hàng");
    assert!(
        view["profile"]["profile"]["identities"]
            .to_string()
            .contains("anon-whole-1"),
        "the agent sees the visitor's 360 view: {view}"
    );
    let texts: Vec<String> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(transcript)
        .collect();
    assert!(texts.iter().any(|t| t.contains("toi muon gap nhan vien")));

    // Claim, reply: the visitor sees the agent's name and words.
    let (s, c) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("{path}/claim"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let st = v.state("with_agent").await;
    assert_eq!(st["agent"], "Lan");
    let (s, _) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("{path}/messages"),
        json!({"text": "Chào bạn, mình là Lan. Mình giúp gì được ạ?"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let m = v.message_from("agent", "mình là Lan").await;
    assert_eq!(m["agent"], "Lan");

    // The visitor answers; no bot speaks while the agent holds the chat.
    v.say("Đơn của mình giao chậm").await;

    // Resolve: the flow ends with CSAT; the widget is asked for a rating.
    let (s, r) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("{path}/resolve"),
        json!({"resolution": "resolved"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["survey"], "csat");
    v.state("resolved").await;
    let ask = v.expect("expect").await;
    assert_eq!(ask["kind"], "rating");
    assert_eq!(ask["scale"], "csat");
    v.send(json!({"type": "rating", "value": 5, "client_id": "r1"}))
        .await;
    v.expect("ack").await;
    v.message_from("system", "Cảm ơn").await;
    assert!(
        !v.seen.iter().any(|f| f["type"] == "message"
            && f["from"] == "bot"
            && transcript(f).contains("Đơn của mình")),
        "no bot turn ran while the agent held the conversation"
    );

    // The report shows it, and the answer is an event on the profile.
    let rep = h.get_ok(&t, "/v1/reports/csat").await;
    assert_eq!(rep["asked"], 1, "{rep}");
    assert_eq!(rep["answered"], 1, "{rep}");
    assert_eq!(rep["response_rate"], 1.0, "{rep}");
    assert_eq!(rep["score"], 100.0, "{rep}");
    h.drain(&t).await;
    let ev = h
        .get_ok(&t, "/v1/profiles/anonymous_id:anon-whole-1/events?limit=50")
        .await;
    let names: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for n in [
        "Chat Started",
        "Chat Handed Off",
        "Chat Resolved",
        "Survey Answered",
    ] {
        assert!(names.contains(&n), "missing {n}: {names:?}");
    }
    let answered = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "Survey Answered")
        .unwrap();
    assert_eq!(answered["properties"]["score"], 5);
    assert_eq!(answered["properties"]["survey"], "csat");
}

#[tokio::test]
async fn nps_on_demand_and_the_report_formulas() {
    let h = TestHost::new().await;
    let (t, lan) = shop(&h).await;
    let addr = listen(&h).await;
    // Four visitors answer NPS 10, 9, 7 and 3; a fifth never answers.
    let mut convs = Vec::new();
    for (i, score) in [Some(10u8), Some(9), Some(7), Some(3), None]
        .iter()
        .enumerate()
    {
        let mut v = Visitor::connect(addr, &t.write, &format!("anon-nps-{i}"), Some(SHOP)).await;
        let ready = v.hello("/").await;
        let conv = ready["conversation_id"].as_str().unwrap().to_string();
        let (s, b) = as_agent(
            &h,
            &lan,
            Method::POST,
            &format!("/v1/agent/conversations/{conv}/survey"),
            json!({"kind": "nps"}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let ask = v.expect("expect").await;
        assert_eq!(ask["scale"], "nps");
        if let Some(score) = score {
            v.send(json!({"type": "rating", "value": score})).await;
            v.message_from("system", "Cảm ơn").await;
        }
        convs.push(conv);
    }
    let rep = h.get_ok(&t, "/v1/reports/nps").await;
    assert_eq!(rep["asked"], 5, "{rep}");
    assert_eq!(rep["answered"], 4, "{rep}");
    assert_eq!(rep["response_rate"], 0.8, "{rep}");
    // 2 promoters, 1 passive, 1 detractor of 4: 50% − 25% = 25.
    assert_eq!(rep["score"], 25.0, "{rep}");
    assert_eq!(rep["segments"]["promoters"], 2);
    assert_eq!(rep["segments"]["detractors"], 1);
    // An empty period has no score, and a reversed one is refused with a reason.
    let empty = h
        .get_ok(&t, "/v1/reports/nps?from=2020-01-01&to=2020-01-31")
        .await;
    assert_eq!(empty["asked"], 0);
    assert!(empty["score"].is_null());
    let (s, e) = h
        .request(
            Method::GET,
            "/v1/reports/nps?from=2026-02-01&to=2026-01-01",
            Some(&t.secret),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&e), "invalid_period");
    let (s, e) = h
        .request(
            Method::GET,
            "/v1/reports/nps?since=yesterday",
            Some(&t.secret),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&e), "invalid_period", "{e}");
}

#[tokio::test]
async fn lead_capture_reprompts_an_invalid_phone_and_merges_the_visitor_into_the_known_profile() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    // The brand already knows this customer by user id and phone.
    let (s, _) = h
        .segment(
            &t,
            "identify",
            &json!({"userId": "u-77", "traits": {"phone": "0901234567", "name": "Chị Mai"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.drain(&t).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-lead-1", Some(SHOP)).await;
    v.hello("/bang-gia").await;
    // A keyword starts lead capture (even inside the FAQ session it would not: the FAQ
    // session ends first, so start from a resolved conversation).
    // "Cảm ơn" ends the FAQ session (with a survey the next message leaves unanswered).
    v.say("cảm ơn").await;
    v.say("tôi cần tư vấn").await;
    v.message_from("bot", "").await;
    v.say("Mai").await;
    v.message_from("bot", "").await;
    // Not a phone number: the host re-prompts with the flow's own text; the flow never
    // sees it.
    v.say("gọi cho mình nhé").await;
    let again = v.message_from("bot", "").await;
    assert!(transcript(&again).contains("0901234567"), "{again}");
    v.say("0901 234 567").await;
    v.message_from("bot", "Mai").await;
    h.drain(&t).await;
    // The anonymous visitor is now the known customer.
    let p = h.get_ok(&t, "/v1/profiles/user_id:u-77").await;
    let ids = p["profile"]["identities"].to_string();
    assert!(ids.contains("anon-lead-1"), "merged: {p}");
    let conv = h.get_ok(&t, "/v1/conversations?profile=user_id:u-77").await;
    assert_eq!(conv["conversations"].as_array().unwrap().len(), 1, "{conv}");
}

#[tokio::test]
async fn payment_failed_starts_the_payment_helper_on_the_visitors_open_chat() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    h.app.state.conversations.tick().await.unwrap();
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-pay-1", Some(SHOP)).await;
    v.hello("/thanh-toan").await;
    let (s, _) = h
        .segment(
            &t,
            "track",
            &json!({"anonymousId": "anon-pay-1", "event": "Payment Failed", "properties": {"order_id": "DH1001", "amount": 1250000, "currency": "VND", "retry_url": "https://shop.example.vn/pay/DH1001"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.drain(&t).await;
    h.app.state.conversations.tick().await.unwrap();
    let card = v
        .message_from("bot", "https://shop.example.vn/pay/DH1001")
        .await;
    assert!(transcript(&card).contains("pay:agent"), "{card}");
    // The visitor asks for an agent: the payments queue.
    v.press("pay:agent", "Gặp nhân viên").await;
    v.state("waiting_for_agent").await;
    let c = h.get_ok(&t, "/v1/conversations").await;
    assert_eq!(c["conversations"][0]["queue"], "payments", "{c}");
    // Agents filter the queue by name, state and holder; a bad filter is named.
    let lan = agent(&h, &t, "Lan").await;
    for (query, n) in [
        ("?queue=payments", 1),
        ("?queue=support", 0),
        ("?state=waiting_for_agent", 1),
        ("?state=with_agent", 0),
        ("?agent=me", 0),
    ] {
        let (s, q) = as_agent(
            &h,
            &lan,
            Method::GET,
            &format!("/v1/agent/queue{query}"),
            Value::Null,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(
            q["conversations"].as_array().unwrap().len(),
            n,
            "{query}: {q}"
        );
    }
    for bad in ["?state=lost", "?agent=lan", "?colour=red"] {
        let path = format!("/v1/agent/queue{bad}");
        let (s, e) = as_agent(&h, &lan, Method::GET, &path, Value::Null).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&e), "invalid_filter", "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_failing_flow_gets_the_fallback_message_and_the_agent_queue_and_loses_nothing() {
    // An instruction budget no turn fits in: every turn of the flow fails.
    let h = TestHost::with_config(|c| c.runtime.chatbot_flow.fuel = Some(1_000)).await;
    let (t, lan) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-crash-1", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    // The greeting already failed: fallback text, then the queue.
    assert!(
        transcript(&ready["history"][0]).contains("Nhân viên sẽ hỗ trợ"),
        "{ready}"
    );
    assert_eq!(ready["state"], "waiting_for_agent");
    v.say("Đơn DH1001 của mình bị trừ tiền hai lần").await;
    let (_, view) = as_agent(
        &h,
        &lan,
        Method::GET,
        &format!("/v1/agent/conversations/{conv}"),
        Value::Null,
    )
    .await;
    assert!(view["conversation"]["last_error"]
        .as_str()
        .unwrap()
        .contains("instruction budget"));
    let texts: String = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(transcript)
        .collect();
    assert!(
        texts.contains("bị trừ tiền hai lần"),
        "the visitor's words are kept: {texts}"
    );
}

#[tokio::test]
async fn sla_first_response_breach_is_an_event_and_a_reply_in_time_is_not() {
    let h = TestHost::new().await;
    let (t, lan) = shop(&h).await;
    let addr = listen(&h).await;
    let mut late = Visitor::connect(addr, &t.write, "anon-sla-late", Some(SHOP)).await;
    late.hello("/").await;
    late.say("nhan vien").await;
    late.state("waiting_for_agent").await;
    let mut fast = Visitor::connect(addr, &t.write, "anon-sla-fast", Some(SHOP)).await;
    let ready = fast.hello("/").await;
    let fast_conv = ready["conversation_id"].as_str().unwrap().to_string();
    fast.say("nhan vien").await;
    fast.state("waiting_for_agent").await;
    // Four minutes in, the agent answers one of them.
    h.clock.advance(4 * 60_000);
    let (s, _) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("/v1/agent/conversations/{fast_conv}/messages"),
        json!({"text": "Dạ em đây"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // Past the 5-minute first-response target.
    h.clock.advance(2 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    h.drain(&t).await;
    let breached = |anon: &str| {
        let path = format!("/v1/profiles/anonymous_id:{anon}/events?limit=50");
        let h = &h;
        let t = &t;
        async move {
            let ev = h.get_ok(t, &path).await;
            ev["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["event"] == "SLA Breached")
                .map(|e| e["properties"]["sla"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(breached("anon-sla-late").await, vec!["first_response"]);
    assert!(breached("anon-sla-fast").await.is_empty());
}

#[tokio::test]
async fn reminders_fire_and_a_visitor_message_cancels_them() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-nudge", Some(SHOP)).await;
    v.hello("/").await;
    v.say("cảm ơn").await;
    v.say("tư vấn").await;
    let asked = v.message_from("bot", "").await;
    // Ten minutes without an answer: lead-capture's nudge repeats the question.
    h.clock.advance(10 * 60_000 + 1);
    h.app.state.conversations.tick().await.unwrap();
    let nudge = v.message_from("bot", "").await;
    assert_ne!(nudge["id"], asked["id"]);
    // The visitor answers; the nudge scheduled with that question is cancelled.
    v.say("Mai").await;
    let _phone_q = v.message_from("bot", "").await;
    v.say("0901234567").await;
    v.message_from("bot", "Mai").await;
    let before = v.seen.len();
    h.clock.advance(9 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        v.seen[before..].iter().all(|f| f["type"] != "message"),
        "no message before the new reminder is due: {:?}",
        &v.seen[before..]
    );
}

#[tokio::test]
async fn session_times_out_after_an_hour_idle() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-idle", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    h.clock.advance(59 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["conversation"]["state"], "bot", "still within the hour");
    // The visitor writes at minute 59: the hour starts again from there.
    v.say("giờ mở cửa").await;
    h.clock.advance(2 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["conversation"]["state"], "bot", "idle for 2 minutes only");
    h.clock.advance(57 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["conversation"]["state"], "bot", "idle for 59 minutes");
    h.clock.advance(2 * 60_000);
    h.app.state.conversations.tick().await.unwrap();
    v.state("resolved").await;
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["conversation"]["outcome"], "timeout");
    assert!(c["conversation"]["session"].is_null());
}

#[tokio::test]
async fn sockets_with_a_wrong_key_or_a_disallowed_origin_are_closed_with_a_reason() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let cases = [
        (
            "wwk_00000000000000000000000000000000",
            "anon-1",
            Some(SHOP),
            "invalid_write_key",
        ),
        (t.secret.as_str(), "anon-1", Some(SHOP), "invalid_write_key"),
        (
            t.write.as_str(),
            "anon-1",
            Some("https://evil.example"),
            "origin_not_allowed",
        ),
        (t.write.as_str(), "", Some(SHOP), "invalid_anonymous_id"),
        (t.write.as_str(), "null", Some(SHOP), "invalid_anonymous_id"),
    ];
    for (key, anon, origin, code) in cases {
        let mut v = Visitor::connect(addr, key, anon, origin).await;
        let (err, closed) = v.refused().await;
        assert_eq!(err["code"], code, "{err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
        assert_eq!(closed["code"], u16::from(CloseCode::Policy), "{closed}");
    }
    let c = h.get_ok(&t, "/v1/conversations").await;
    assert!(c["conversations"].as_array().unwrap().is_empty());
    // A plain GET is told to upgrade, in the stable error shape.
    let (s, e) = h
        .request(Method::GET, "/v1/chat/ws", None, Body::empty())
        .await;
    assert_eq!(s, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(error_code(&e), "websocket_required");
}

#[tokio::test]
async fn bad_frames_close_the_socket_with_a_reason_and_store_nothing() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    // Each bad frame after a good hello: (frame, error code, close code).
    let big = json!({"type": "message", "text": "x".repeat(9000)}).to_string();
    let cases: Vec<(Ws, &str, CloseCode)> = vec![
        (
            Ws::Text("{not json".into()),
            "invalid_frame",
            CloseCode::Invalid,
        ),
        (
            Ws::Text(json!({"type": "dance"}).to_string().into()),
            "invalid_frame",
            CloseCode::Invalid,
        ),
        (Ws::Text(big.into()), "frame_too_large", CloseCode::Size),
        (
            Ws::Binary(vec![1, 2, 3].into()),
            "binary_frame",
            CloseCode::Unsupported,
        ),
    ];
    for (i, (frame, code, close)) in cases.into_iter().enumerate() {
        let mut v = Visitor::connect(addr, &t.write, &format!("anon-bad-{i}"), Some(SHOP)).await;
        let ready = v.hello("/").await;
        let history = ready["history"].as_array().unwrap().len();
        v.ws.send(frame).await.unwrap();
        let (err, closed) = v.refused().await;
        assert_eq!(err["code"], code, "{err}");
        assert_eq!(closed["code"], u16::from(close), "{closed}");
        let conv = ready["conversation_id"].as_str().unwrap();
        let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
        assert_eq!(
            c["messages"].as_array().unwrap().len(),
            history,
            "nothing stored"
        );
    }
    // A first frame that is not `hello` is refused too.
    let mut v = Visitor::connect(addr, &t.write, "anon-nohello", Some(SHOP)).await;
    v.send(json!({"type": "message", "text": "hi"})).await;
    let (err, closed) = v.refused().await;
    assert_eq!(err["code"], "expected_hello");
    assert_eq!(closed["code"], u16::from(CloseCode::Policy));
}

#[tokio::test]
async fn a_resent_client_id_is_acknowledged_once_and_stored_once() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-resend", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    v.send(json!({"type": "message", "text": "giờ mở cửa", "client_id": "same"}))
        .await;
    let first = v.expect("ack").await;
    drop(v);
    // The widget reconnects and resends (it never saw the ack).
    let mut v = Visitor::connect(addr, &t.write, "anon-resend", Some(SHOP)).await;
    let again = v.hello("/").await;
    assert_eq!(
        again["conversation_id"],
        conv.as_str(),
        "the same conversation resumes"
    );
    v.send(json!({"type": "message", "text": "giờ mở cửa", "client_id": "same"}))
        .await;
    let second = v.expect("ack").await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["duplicate"], true);
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    let copies = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["client_id"] == "same")
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn message_rate_limit_holds_and_a_burst_within_it_passes() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-rate", Some(SHOP)).await;
    v.hello("/").await;
    // Thirty at once: the burst of ten passes, the rest beyond the refill is refused.
    let t0 = std::time::Instant::now();
    for i in 0..30 {
        v.send(json!({"type": "message", "text": format!("m{i}"), "client_id": format!("b{i}")}))
            .await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 30 {
        let f = v.frame().await.expect("socket open");
        match f["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                limited += 1;
            }
            _ => {}
        }
    }
    // 3 a second refill while the thirty are handled.
    let refill = (t0.elapsed().as_secs_f64() * 3.0).ceil() as usize;
    assert!(acks >= 10, "the burst passes: {acks} acks");
    assert!(acks <= 10 + refill, "{acks} acks with a refill of {refill}");
    assert!(
        limited >= 30 - 10 - refill && limited > 0,
        "{limited} refused"
    );
}

#[tokio::test]
async fn agents_are_scoped_to_their_tenant_and_only_the_holder_may_reply() {
    let h = TestHost::new().await;
    let (t, lan) = shop(&h).await;
    let other = h.tenant().await;
    let outsider = agent(&h, &other, "Khoa").await;
    let minh = agent(&h, &t, "Minh").await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-scope", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    v.say("nhan vien").await;
    v.state("waiting_for_agent").await;
    let path = format!("/v1/agent/conversations/{conv}");
    // Another tenant's agent sees nothing of it.
    let (s, e) = as_agent(&h, &outsider, Method::GET, &path, Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&e), "conversation_not_found");
    let (_, q) = as_agent(&h, &outsider, Method::GET, "/v1/agent/queue", Value::Null).await;
    assert!(q["conversations"].as_array().unwrap().is_empty());
    // Lan claims; Minh may not reply or resolve.
    let (s, _) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("{path}/claim"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = as_agent(
        &h,
        &minh,
        Method::POST,
        &format!("{path}/messages"),
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(error_code(&e), "conversation_conflict");
    let (s, _) = as_agent(
        &h,
        &minh,
        Method::POST,
        &format!("{path}/resolve"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Bad tokens and bad bodies are refused with reasons.
    let (s, e) = as_agent(
        &h,
        "wag_00000000000000000000000000000000",
        Method::GET,
        "/v1/agent/queue",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&e), "invalid_credentials");
    let (s, e) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("{path}/messages"),
        json!({"text": ""}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&e), "invalid_reply");
    // The brand lists its agents (no tokens shown) and revokes Minh: his token stops.
    let list = h.get_ok(&t, "/v1/agents").await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains("wag_"), "{list}");
    let minh_id = agent_id(&list, "Minh");
    let (s, _) = h
        .request(
            Method::DELETE,
            &format!("/v1/agents/{minh_id}"),
            Some(&t.secret),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = as_agent(&h, &minh, Method::GET, "/v1/agent/queue", Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&e), "invalid_credentials");
    // Another tenant cannot revoke this tenant's agents: Lan keeps working.
    let lan_id = agent_id(&list, "Lan");
    let (s, e) = h
        .request(
            Method::DELETE,
            &format!("/v1/agents/{lan_id}"),
            Some(&other.secret),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(error_code(&e), "agent_not_found");
    let (s, _) = as_agent(&h, &lan, Method::GET, "/v1/agent/queue", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn chat_settings_refuse_bad_values_with_the_field_named() {
    let h = TestHost::new().await;
    let t = h.tenant().await;
    for (body, needle) in [
        (
            json!({"allowed_origins": ["shop.example.vn"]}),
            "allowed_origins",
        ),
        (json!({"default_flow": "nope"}), "default_flow"),
        (
            json!({"sla": {"first_response_ms": 5}}),
            "sla.first_response_ms",
        ),
        (
            json!({"business_hours": {"start": "18:00", "end": "08:00"}}),
            "end",
        ),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (s, e) = h
            .request(
                Method::PUT,
                "/v1/chat/settings",
                Some(&t.secret),
                body.to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    let v = h.get_ok(&t, "/v1/chat/settings").await;
    assert!(
        v["allowed_origins"].as_array().unwrap().is_empty(),
        "nothing stored"
    );
}

/// Unix ms of a Vietnam local time.
fn vn(d: u32, h: u32, m: u32) -> i64 {
    use chrono::TimeZone;
    chrono::FixedOffset::east_opt(7 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 11, d, h, m, 0)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn sla_clocks_count_business_hours_only_and_a_late_next_response_is_breached() {
    let h = TestHost::new().await;
    let (t, lan) = shop(&h).await;
    // The test clock starts on Sunday 2026-11-22 09:00 in Vietnam.
    assert_eq!(weft::clock::Clock::now_ms(&*h.clock), vn(22, 9, 0));
    let (s, v) = h
        .request(
            Method::PUT,
            "/v1/chat/settings",
            Some(&t.secret),
            json!({"allowed_origins": [SHOP], "default_flow": "faq-bot",
                   "business_hours": {"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "17:00"}})
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-hours", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    v.say("nhan vien").await;
    v.state("waiting_for_agent").await;
    // Handed off on a Sunday: the 5-minute clock starts Monday 08:00.
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(
        c["conversation"]["sla"]["first_response_due"],
        vn(23, 8, 5),
        "{c}"
    );
    h.clock.set(vn(22, 9, 10));
    h.app.state.conversations.tick().await.unwrap();
    assert_eq!(
        breaches(&h, &t, &conv).await,
        json!([]),
        "Sunday does not count"
    );
    // Monday 08:03: an agent answers in time.
    h.clock.set(vn(23, 8, 3));
    let (s, _) = as_agent(
        &h,
        &lan,
        Method::POST,
        &format!("/v1/agent/conversations/{conv}/messages"),
        json!({"text": "Dạ em chào anh/chị"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // The visitor writes at 08:04; the agent's next reply is due 10 minutes later.
    h.clock.set(vn(23, 8, 4));
    v.say("Đơn của mình chưa tới").await;
    h.clock.set(vn(23, 8, 13));
    h.app.state.conversations.tick().await.unwrap();
    assert_eq!(
        breaches(&h, &t, &conv).await,
        json!([]),
        "within the next-response target"
    );
    h.clock.set(vn(23, 8, 15));
    h.app.state.conversations.tick().await.unwrap();
    assert_eq!(breaches(&h, &t, &conv).await, json!(["next_response"]));
    h.drain(&t).await;
    let ev = h
        .get_ok(&t, "/v1/profiles/anonymous_id:anon-hours/events?limit=50")
        .await;
    let breach = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "SLA Breached")
        .expect("a breach event");
    assert_eq!(breach["properties"]["sla"], "next_response");
    assert_eq!(breach["properties"]["due_at"], vn(23, 8, 14));
}

#[tokio::test]
async fn the_longest_allowed_message_is_stored_whole() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-long", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    // 2,000 characters of 3-byte Vietnamese: 6,000 bytes, inside the 8 KiB frame limit.
    let long = "ả".repeat(2000);
    let ack = v.say(&long).await;
    let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
    let stored = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ack["id"])
        .unwrap();
    assert_eq!(stored["content"][0]["Text"], long.as_str());
    // One character more is refused, and the socket stays open.
    v.send(json!({"type": "message", "text": "ả".repeat(2001), "client_id": "too-long"}))
        .await;
    let err = v.expect("error").await;
    assert_eq!(err["code"], "invalid_text");
    v.say("vẫn còn kết nối").await;
}

#[tokio::test]
async fn erasing_a_profile_erases_its_conversations() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-erase", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    v.say("số điện thoại của mình là 0909000111").await;
    h.drain(&t).await;
    assert_eq!(
        erase_then_read(&h, &t, "anon-erase", &conv).await,
        StatusCode::NOT_FOUND
    );
    let left = h
        .app
        .state
        .db
        .scan_prefix(
            &weft::store::Space::tenant(&t.id),
            format!("cvm/{conv}/").as_bytes(),
            10,
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "messages erased");
}

/// Erases `anon`'s profile and answers the status of a later read of `conv`.
async fn erase_then_read(h: &TestHost, t: &TestTenant, anon: &str, conv: &str) -> StatusCode {
    let s = h.erase_profile(t, &format!("anonymous_id:{anon}")).await;
    assert!(s.is_success(), "{s}");
    let (s, _) = h
        .request(
            Method::GET,
            &format!("/v1/conversations/{conv}"),
            Some(&t.secret),
            Body::empty(),
        )
        .await;
    s
}

#[tokio::test]
async fn a_conversation_held_before_its_visitor_had_a_profile_is_erased_with_the_profile() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    // The event processor is held back (a backlog), so the visitor has no profile yet
    // when the greeting and the first message are stored.
    let held = h.hold_processor(&t).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-early", Some(SHOP)).await;
    let ready = v.hello("/").await;
    let conv = ready["conversation_id"].as_str().unwrap().to_string();
    v.say("số điện thoại của mình là 0909000222").await;
    drop(held);
    h.drain(&t).await;
    assert_eq!(
        erase_then_read(&h, &t, "anon-early", &conv).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_event_naming_another_visitors_conversation_does_not_claim_it() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut v = Visitor::connect(addr, &t.write, "anon-owner", Some(SHOP)).await;
    let conv = v.hello("/").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = h
        .segment(
            &t,
            "track",
            &json!({"anonymousId": "anon-intruder", "event": "Chat Started",
                    "properties": {"conversation_id": conv}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.drain(&t).await;
    assert_eq!(
        erase_then_read(&h, &t, "anon-intruder", &conv).await,
        StatusCode::OK,
        "another visitor's conversation stays"
    );
}

/// The SLA breaches recorded on a conversation.
async fn breaches(h: &TestHost, t: &TestTenant, conv: &str) -> Value {
    h.get_ok(t, &format!("/v1/conversations/{conv}")).await["conversation"]["sla"]["breaches"]
        .clone()
}

/// A visitor talking to test-unruly-flow (installed as `unruly`), past the FAQ greeting.
async fn unruly(h: &TestHost, t: &TestTenant, anon: &str) -> (Visitor, String) {
    let addr = listen(h).await;
    let mut v = Visitor::connect(addr, &t.write, anon, Some(SHOP)).await;
    let ready = v.hello("/").await;
    v.say("cảm ơn").await;
    v.say("unruly").await;
    v.message_from("bot", "ready").await;
    (v, ready["conversation_id"].as_str().unwrap().to_string())
}

async fn last_error(h: &TestHost, t: &TestTenant, conv: &str) -> String {
    let c = h.get_ok(t, &format!("/v1/conversations/{conv}")).await;
    c["conversation"]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn flow_slots_and_actions_within_the_limits_pass_and_beyond_them_fall_back() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    h.install(&t, "unruly", "chatbot-flow", plugins::TEST_UNRULY_FLOW)
        .await;
    // At the limits: 16 KiB of slots, 32 actions.
    let (mut v, conv) = unruly(&h, &t, "anon-unruly-1").await;
    v.say("slots 16384").await;
    v.message_from("bot", "kept 16384").await;
    v.say("actions 32").await;
    v.message_from("bot", "#31").await;
    assert_eq!(last_error(&h, &t, &conv).await, "");
    // One byte more: the fallback message and the agent queue.
    v.say("slots 16385").await;
    v.message_from("system", "Nhân viên sẽ hỗ trợ").await;
    v.state("waiting_for_agent").await;
    assert!(last_error(&h, &t, &conv)
        .await
        .contains("slots are 16385 bytes"));
    // One action more, in another conversation.
    let (mut v, conv) = unruly(&h, &t, "anon-unruly-2").await;
    v.say("actions 33").await;
    v.message_from("system", "Nhân viên sẽ hỗ trợ").await;
    assert!(last_error(&h, &t, &conv).await.contains("33 actions"));
    assert!(
        !v.seen.iter().any(|f| transcript(f).contains("#0")),
        "nothing of a refused turn is shown"
    );
}

#[tokio::test]
async fn a_spinning_or_panicking_flow_falls_back_and_keeps_what_the_visitor_wrote() {
    let h = TestHost::new().await;
    let (t, _) = shop(&h).await;
    h.install(&t, "unruly", "chatbot-flow", plugins::TEST_UNRULY_FLOW)
        .await;
    for (anon, word, error) in [
        ("anon-spin", "spin", "deadline exceeded"),
        ("anon-panic", "panic", "deliberate panic"),
    ] {
        let (mut v, conv) = unruly(&h, &t, anon).await;
        v.say(word).await;
        v.message_from("system", "Nhân viên sẽ hỗ trợ").await;
        v.state("waiting_for_agent").await;
        assert!(last_error(&h, &t, &conv).await.contains(error), "{word}");
        let c = h.get_ok(&t, &format!("/v1/conversations/{conv}")).await;
        assert!(
            c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["from"] == "visitor" && m["content"][0]["Text"] == word),
            "{c}"
        );
    }
}

#[tokio::test]
async fn the_socket_cap_holds_and_a_freed_place_is_reused() {
    let h = TestHost::with_config(|c| c.chat.max_sockets = 2).await;
    let (t, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut a = Visitor::connect(addr, &t.write, "anon-cap-a", Some(SHOP)).await;
    a.hello("/").await;
    let mut b = Visitor::connect(addr, &t.write, "anon-cap-b", Some(SHOP)).await;
    b.hello("/").await;
    // A third is refused before the upgrade: plain HTTP 503 in the stable error shape.
    let url = format!(
        "ws://{addr}/v1/chat/ws?writeKey={}&anonymousId=anon-cap-c",
        t.write
    );
    refused_before_upgrade(&url, "too_many_sockets").await;
    // One visitor leaves: the next one gets in.
    a.ws.close(None).await.unwrap();
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", SHOP.parse().unwrap());
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(req).await {
            break Visitor {
                ws,
                seen: Vec::new(),
                next_client_id: 0,
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.hello("/").await;
    b.say("vẫn ở đây").await;
}

#[tokio::test]
async fn one_tenant_cannot_take_every_socket() {
    let h = TestHost::with_config(|c| {
        c.chat.max_sockets = 10;
        c.chat.max_sockets_per_tenant = 1;
    })
    .await;
    let (a, _) = shop(&h).await;
    let (b, _) = shop(&h).await;
    let addr = listen(&h).await;
    let mut first = Visitor::connect(addr, &a.write, "anon-ta-1", Some(SHOP)).await;
    first.hello("/").await;
    // The tenant's second socket is refused before the upgrade.
    let url = format!(
        "ws://{addr}/v1/chat/ws?writeKey={}&anonymousId=anon-ta-2",
        a.write
    );
    refused_before_upgrade(&url, "too_many_sockets_for_tenant").await;
    // Another tenant still gets in.
    let mut other = Visitor::connect(addr, &b.write, "anon-tb-1", Some(SHOP)).await;
    other.hello("/").await;
    other.say("xin chào").await;
}

/// The id of the agent called `name` in a `GET /v1/agents` listing.
fn agent_id(list: &Value, name: &str) -> String {
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Asserts that opening `url` is refused with a plain HTTP 503 carrying `code`.
async fn refused_before_upgrade(url: &str, code: &str) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(error_code(&body), code);
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
}
