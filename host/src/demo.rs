//! `weft demo`: builds the example plugins from source, serves on the embedded sled store
//! with them installed for a demo tenant, drives a first abandoned-cart journey through
//! the real HTTP API, and prints what happened and how to try more.
//!
//! The Zalo OA adapter sends to a sandbox provider on 127.0.0.1 (the real one is not
//! reachable from here), allowlisted like any provider.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::DemoArgs;
use crate::config::Config;
use crate::samples;

/// Builds every plugin in `plugins/` with `scripts/build-plugins.sh`; returns the folder.
pub fn build_plugins() -> anyhow::Result<PathBuf> {
    let root = crate::cli::repo_root();
    let script = root.join("scripts/build-plugins.sh");
    println!(
        "building example plugins for wasm32-wasip2 ({})…",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", script.display()))?;
    anyhow::ensure!(status.success(), "building plugins failed ({status})");
    Ok(root.join("target/plugins"))
}

/// A fake Zalo OA endpoint on 127.0.0.1: accepts every message.
async fn sandbox_zalo() -> anyhow::Result<std::net::SocketAddr> {
    use axum::routing::post;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/v3.0/oa/message/cs",
        post(move |body: axum::body::Bytes| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move {
                tracing::info!(target: "weft::demo::zalo", body = %String::from_utf8_lossy(&body), "sandbox Zalo received a message");
                axum::Json(json!({"error": 0, "message": "Success", "data": {"message_id": format!("zmsg-{n}"), "user_id": "zalo-user-1"}}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(addr)
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Value> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    async fn invoke(&self, plugin: &str, call: &crate::runtime::Call) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/plugins/{plugin}/invoke"),
            Some(serde_json::to_vec(call)?),
        )
        .await
    }
}

fn brief(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let plugins = match &args.plugins_dir {
        Some(d) => d.clone(),
        None => build_plugins()?,
    };
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    let mut config = Config {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        ..Config::default()
    };
    // The demo's fake Zalo provider listens on 127.0.0.1.
    config.runtime.allow_private_networks = true;
    let app = crate::app::App::open(&config).await?;
    let admin = match crate::tenants::ensure_admin_token(&app.state.db, None).await? {
        crate::tenants::AdminToken::Generated(t) => t,
        _ => anyhow::bail!("demo data directory was not fresh"),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "binding {} (is another weft running? use --listen): {e}",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(crate::api::serve(listener, app.state.clone()));
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let tenant: Value = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "demo-shop"}))
        .send()
        .await?
        .json()
        .await?;
    let key = tenant["secret_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api = Api {
        base: base.clone(),
        key: key.clone(),
        http,
    };

    println!("\n== Installing the example plugins ==");
    for (name, kind) in [
        ("abandoned-cart", "journey-rule"),
        ("tier-personalize", "personalization"),
        ("zalo-oa", "channel-adapter"),
        ("faq-bot", "chatbot-flow"),
    ] {
        let bytes = read_plugin(&plugins, name)?;
        let size = bytes.len();
        let v = api
            .call(
                reqwest::Method::PUT,
                &format!("/v1/plugins/{name}/versions/1.0.0?kind={kind}&activate=true"),
                Some(bytes),
            )
            .await?;
        println!(
            "  {name:<17} {kind:<16} {:>4} KiB, validated + compiled in {:.1} ms",
            size / 1024,
            v["version"]["ready_us"].as_u64().unwrap_or(0) as f64 / 1000.0
        );
    }
    let zalo = sandbox_zalo().await?;
    api.call(
        reqwest::Method::PUT,
        "/v1/plugins/zalo-oa/config",
        Some(serde_json::to_vec(&json!({
            "config": {"api_base": format!("http://{zalo}"), "app_id": "demo-app", "oa_id": "oa-1"},
            "secrets": {"access_token": "demo-access-token", "oa_secret_key": "demo-secret"},
            "allowed_hosts": [zalo.to_string()]
        }))?),
    )
    .await?;
    api.call(
        reqwest::Method::PUT,
        "/v1/profiles/user_id:42",
        Some(serde_json::to_vec(
            &json!({"traits": {"name": "Lan", "tier": "gold", "phone": "+84901234567"}}),
        )?),
    )
    .await?;

    println!("\n== A first journey: abandoned cart for Lan (gold tier) ==");
    let entered = api
        .invoke("abandoned-cart", &samples::journey_entered())
        .await?;
    println!("  Product Added  → {}", brief(&entered["output"]["output"]));
    let context = entered["output"]["output"]["Ok"]
        .as_array()
        .and_then(|cmds| cmds.iter().find_map(|c| c.get("PatchContext")))
        .and_then(Value::as_str)
        .unwrap_or("{}")
        .to_string();
    let remind = api
        .invoke("abandoned-cart", &samples::journey_remind(&context))
        .await?;
    println!("  one hour later → {}", brief(&remind["output"]["output"]));
    println!(
        "  cost: {} µs, {} instructions, {} KiB peak memory",
        remind["report"]["duration_us"],
        remind["report"]["instructions"],
        remind["report"]["peak_memory_bytes"].as_u64().unwrap_or(0) / 1024
    );
    let text = remind["output"]["output"]["Ok"]
        .as_array()
        .and_then(|cmds| cmds.iter().find_map(|c| c.pointer("/Send/content/0/Text")))
        .and_then(Value::as_str)
        .unwrap_or("Bạn còn sản phẩm trong giỏ hàng.")
        .to_string();
    // The reminder through the real send pipeline: policy, outbox, zalo-oa, the sandbox Zalo.
    let write = tenant["write_key"].as_str().unwrap_or_default();
    api.http
        .post(format!("{base}/v1/identify"))
        .basic_auth(write, Some(""))
        .json(&json!({"userId": "42", "context": {"externalIds": [{"type": "zalo:oa-1", "id": "zalo-user-1"}]}}))
        .send()
        .await?
        .error_for_status()?;
    for _ in 0..100 {
        let st = api
            .call(reqwest::Method::GET, "/v1/ingest/status", None)
            .await?;
        if st["backlog"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = api
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(serde_json::to_vec(&json!({
                "intent_id": "demo-reminder-1", "to": "user_id:42", "channels": ["zalo-oa", "sms"],
                "category": "transactional", "content": [{"Text": text}]
            }))?),
        )
        .await?;
    let mut delivery = queued.clone();
    for _ in 0..100 {
        delivery = api
            .call(reqwest::Method::GET, "/v1/deliveries/demo-reminder-1", None)
            .await?;
        if delivery["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  POST /v1/messages → {} via {}, provider id {}",
        delivery["status"].as_str().unwrap_or("?"),
        delivery["delivery"]["installation"].as_str().unwrap_or("?"),
        delivery["delivery"]["provider_message_id"]
            .as_str()
            .unwrap_or("-")
    );
    personalize(&api, write).await?;
    web_chat(&api, write).await?;

    println!("\n== Your demo tenant ==");
    println!(
        "  tenant id:   {}",
        tenant["id"].as_str().unwrap_or_default()
    );
    println!("  secret key:  {key}");
    println!(
        "  write key:   {}",
        tenant["write_key"].as_str().unwrap_or_default()
    );
    println!("  admin token: {admin}");
    println!("\n== Try more ==");
    let write = tenant["write_key"].as_str().unwrap_or_default();
    println!("  # send an event the way Segment's libraries do; abandoned-cart starts a journey for the cart");
    println!("  curl -s -u '{write}:' -H 'content-type: application/json' {base}/v1/track \\");
    println!("    -d '{{\"userId\":\"42\",\"event\":\"Product Added\",\"properties\":{{\"cart_id\":\"c-1\",\"name\":\"Ao dai\"}}}}'");
    println!(
        "  # the profile's 360 view: traits, events, the waiting journey instance, deliveries"
    );
    println!("  curl -s -H 'Authorization: Bearer {key}' {base}/v1/profiles/user_id:42");
    println!("  # the delivery log and the funnel");
    println!("  curl -s -H 'Authorization: Bearer {key}' {base}/v1/deliveries");
    println!("  curl -s -H 'Authorization: Bearer {key}' {base}/v1/plugins");
    println!("  curl -s -H 'Authorization: Bearer {key}' {base}/v1/plugins/abandoned-cart/invocations?limit=2");
    println!("  cargo run --release -- plugin run target/plugins/abandoned-cart.wasm --kind journey-rule --input plugins/abandoned-cart/fixtures/entered.json");
    println!("  cargo run --release -- plugin new journey-rule my-rule --dir plugins");
    println!("  # a page decision, as the personalization script asks for it (examples/personalize-demo/)");
    println!("  curl -s '{base}/v1/personalize?writeKey={write}' -d '{{\"userId\":\"42\",\"placements\":[\"hero\",\"recs\"]}}'");
    println!("  # the chat widget on your site (add its origin first: PUT /v1/chat/settings)");
    println!(
        "  <script src=\"{base}/v1/chat/widget.js\" data-write-key=\"{write}\" async></script>"
    );
    if args.exit {
        server.abort();
        return Ok(());
    }
    println!(
        "\nweft is serving on {base} (data in {}); press Ctrl-C to stop.",
        args.data_dir.display()
    );
    server.await??;
    Ok(())
}

/// Sets up two placements for the demo shop and asks for Lan's decisions the way a page
/// does (`POST /v1/personalize` with the public write key).
async fn personalize(api: &Api, write_key: &str) -> anyhow::Result<()> {
    println!("\n== Personalization: what Lan's product page shows ==");
    let settings = json!({
        "plugin": "tier-personalize",
        "allowed_origins": ["http://127.0.0.1:8000", "http://localhost:8000"],
        "placements": [
            {"id": "hero", "kind": "banner", "max_items": 0,
             "default": {"content": {"headline": "Sản phẩm nổi bật"}}},
            {"id": "recs", "kind": "product-list", "max_items": 3}
        ],
        "candidates": [
            {"id": "sku-7", "score": 0.9, "name": "Áo dài lụa", "price": 1450000},
            {"id": "sku-9", "score": 0.6, "name": "Khăn lụa", "price": 350000},
            {"id": "sku-vip", "score": 0.2, "tags": ["tier:gold"], "name": "Áo dài thêu tay", "price": 4900000},
            {"id": "sku-3", "score": 0.4, "name": "Nón lá", "price": 120000}
        ]
    });
    api.call(
        reqwest::Method::PUT,
        "/v1/personalize/settings",
        Some(serde_json::to_vec(&settings)?),
    )
    .await?;
    let resp = api
        .http
        .post(format!("{}/v1/personalize?writeKey={write_key}", api.base))
        .body(
            json!({"userId": "42", "page": {"path": "/p/ao-dai", "page_type": "product"},
                   "placements": ["hero", "recs"]})
            .to_string(),
        )
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "personalize: {}", resp.status());
    let v: Value = resp.json().await?;
    for d in v["decisions"].as_array().into_iter().flatten() {
        let items: Vec<&str> = d["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["id"].as_str())
            .collect();
        println!(
            "  {:<5} → {} ({}){}{}",
            d["placement"].as_str().unwrap_or("?"),
            d["variant"].as_str().unwrap_or("?"),
            d["source"].as_str().unwrap_or("?"),
            d["content"]["headline"]
                .as_str()
                .map(|h| format!(" \"{h}\""))
                .unwrap_or_default(),
            if items.is_empty() {
                String::new()
            } else {
                format!(" items {}", items.join(", "))
            }
        );
    }
    Ok(())
}

/// A visitor on the real chat socket: the FAQ bot greets and answers, hands off to an
/// agent who replies and resolves, and the CSAT answer shows in the report.
async fn web_chat(api: &Api, write_key: &str) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    println!("\n== Web chat: a visitor, the FAQ bot, an agent ==");
    api.call(
        reqwest::Method::PUT,
        "/v1/chat/settings",
        Some(serde_json::to_vec(&json!({"default_flow": "faq-bot"}))?),
    )
    .await?;
    let agent = api
        .call(
            reqwest::Method::POST,
            "/v1/agents",
            Some(serde_json::to_vec(&json!({"name": "Hoa"}))?),
        )
        .await?;
    let token = agent["token"].as_str().unwrap_or_default().to_string();
    let url = format!(
        "{}/v1/chat/ws?writeKey={write_key}&anonymousId=demo-visitor-1",
        api.base.replacen("http", "ws", 1)
    );
    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    async fn send(ws: &mut Socket, v: Value) -> anyhow::Result<()> {
        Ok(ws.send(Ws::Text(v.to_string().into())).await?)
    }
    // Frames until one of `kind` (and, for messages, from `from`) arrives; prints messages.
    async fn until(ws: &mut Socket, kind: &str, from: Option<&str>) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .map_err(|_| anyhow::anyhow!("no `{kind}` frame within 10 s"))?
                .ok_or_else(|| anyhow::anyhow!("chat socket closed"))??;
            let Ws::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "message" {
                println!(
                    "  {:<9}{}",
                    format!("{}:", v["from"].as_str().unwrap_or("?")),
                    said(&v["content"])
                );
            }
            if v["type"] == kind && from.is_none_or(|f| v["from"] == f) {
                return Ok(v);
            }
        }
    }
    send(&mut ws, json!({"type": "hello", "locale": "vi-VN", "page": {"url": "https://shop.example.vn/gio-hang", "title": "Giỏ hàng"}})).await?;
    let ready = until(&mut ws, "ready", None).await?;
    for m in ready["history"].as_array().into_iter().flatten() {
        println!(
            "  {:<9}{}",
            format!("{}:", m["from"].as_str().unwrap_or("?")),
            said(&m["content"])
        );
    }
    let conv = ready["conversation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("  visitor: [Giờ mở cửa]");
    send(&mut ws, json!({"type": "postback", "value": "topic:hours", "label": "Giờ mở cửa", "client_id": "d1"})).await?;
    // The answer and the menu again, then what the bot waits for.
    until(&mut ws, "expect", None).await?;
    println!("  visitor: cho mình gặp nhân viên");
    send(
        &mut ws,
        json!({"type": "message", "text": "cho mình gặp nhân viên", "client_id": "d2"}),
    )
    .await?;
    until(&mut ws, "state", None).await?;
    let agent_call = |path: String, body: Value| {
        let (http, url, token) = (
            api.http.clone(),
            format!("{}{path}", api.base),
            token.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
    };
    agent_call(
        format!("/v1/agent/conversations/{conv}/messages"),
        json!({"text": "Chào bạn, mình là Hoa. Mình giúp gì được ạ?"}),
    )
    .await?;
    until(&mut ws, "message", Some("agent")).await?;
    agent_call(format!("/v1/agent/conversations/{conv}/resolve"), json!({})).await?;
    until(&mut ws, "message", Some("system")).await?;
    println!("  visitor: ★★★★★ (5)");
    send(
        &mut ws,
        json!({"type": "rating", "value": 5, "client_id": "d3"}),
    )
    .await?;
    until(&mut ws, "message", Some("system")).await?;
    let report = api
        .call(reqwest::Method::GET, "/v1/reports/csat", None)
        .await?;
    println!(
        "  GET /v1/reports/csat → CSAT {}% from {} of {} asked",
        report["score"], report["answered"], report["asked"]
    );
    let _ = ws.close(None).await;
    Ok(())
}

/// Chat content as a line of text: texts, prompts with their quick replies in brackets.
fn said(content: &Value) -> String {
    let mut parts = Vec::new();
    for c in content.as_array().into_iter().flatten() {
        if let Some(t) = c["Text"].as_str() {
            parts.push(t.to_string());
        } else if let Some(ch) = c.get("Choices") {
            let options: Vec<String> = ch["options"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| format!("[{}]", o["label"].as_str().unwrap_or("?")))
                .collect();
            parts.push(format!(
                "{} {}",
                ch["prompt"].as_str().unwrap_or(""),
                options.join(" ")
            ));
        } else {
            parts.push(brief(c));
        }
    }
    parts.join(" ")
}

fn read_plugin(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let p = dir.join(format!("{name}.wasm"));
    std::fs::read(&p).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e} (build plugins with scripts/build-plugins.sh)",
            p.display()
        )
    })
}
