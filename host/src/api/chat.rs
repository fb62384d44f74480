//! Web chat for websites: the visitor WebSocket (`GET /v1/chat/ws`), the embeddable
//! widget (`GET /v1/chat/widget.js`), the tenant's chat settings, and the read side of
//! conversations and survey reports for the brand's backend. The protocol is in
//! `docs/webchat.md`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{CloseFrame, Message as Ws, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth, MAX_JSON_BODY};
use crate::conversations::settings::ChatSettings;
use crate::conversations::store::{PageContext, SurveyKind};
use crate::conversations::{self, ChatError, VisitorInput, MAX_TEXT_CHARS};
use crate::runtime::bindings::exports::flow::UserInput;
use crate::store::{Space, StoreError};
use crate::tenants::{self, KeyKind, WRITE_KEY_PREFIX};

/// The widget, served as is.
const WIDGET_JS: &str = include_str!("../../assets/chat-widget.js");

/// Largest frame a visitor may send: a 2,000-character message in Vietnamese (up to 3
/// bytes a character) with its JSON around it.
pub const MAX_FRAME_BYTES: usize = 8 * 1024;

/// Read buffer per socket: one visitor frame.
const SOCKET_BUFFER_BYTES: usize = MAX_FRAME_BYTES;

/// Outgoing bytes a socket gathers before it writes them without waiting for the flush:
/// a turn's frames (the ack, the bot's replies, what input it expects: under 1 KiB for the
/// example bots) go out in one system call at the flush, not one each. The buffer keeps
/// the capacity it grew to, so a small bound keeps idle sockets small.
const SOCKET_WRITE_GATHER: usize = 4 * 1024;

/// Outgoing bytes a socket may hold unwritten before it counts as failed: a stalled
/// reader must not make the host buffer without bound (frames also queue in the hub, 64 at
/// most).
const SOCKET_MAX_WRITE_BUFFER: usize = 256 * 1024;

/// How long a new socket may take to send `hello`.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Longest `anonymousId`: analytics SDKs use UUIDs (36 chars); anything past 128 is abuse.
const MAX_ANON_ID: usize = 128;

/// Longest widget `client_id`.
const MAX_CLIENT_ID: usize = 64;

/// Longest page URL, referrer or title kept: the conversation record stays small.
const MAX_PAGE_FIELD: usize = 1024;

/// Messages a socket may send in a burst, and per second after it: faster than anyone
/// types, slower than a script flooding the bot.
const BURST: f64 = 10.0;
const PER_SECOND: f64 = 3.0;

/// WebSocket close codes (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INVALID: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_UNSUPPORTED: u16 = 1003;

/// `GET /v1/chat/widget.js`.
pub(super) async fn widget() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // An hour: sites pick up a new widget the same day without hammering the host.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// Why a socket is refused before it starts.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refusal(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// `GET /v1/chat/ws?writeKey=&anonymousId=`.
pub(super) async fn socket(
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("this endpoint speaks WebSocket only: {e}"),
        )
    })?;
    // Before the upgrade: a full server answers plain HTTP 503 and holds nothing.
    let Some(slot) = s.conversations.socket_slot() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sockets",
            "the server has as many chat sockets open as it allows; try again shortly",
        ));
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("").to_string());
    let checked = authorize(&s, &q, origin.as_deref()).await;
    // A known tenant over its own cap is refused before the upgrade too.
    let tenant_slot =
        match &checked {
            Ok((tenant, _)) => match s.conversations.tenant_socket_slot(tenant) {
                Some(t) => Some(t),
                None => return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_sockets_for_tenant",
                    "this site has as many chat sockets open as a tenant may; try again shortly",
                )),
            },
            Err(_) => None,
        };
    // Frames past the limit are refused by us with a reason; the transport's own cap only
    // stops a giant frame from being buffered at all.
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES * 4)
        .max_frame_size(MAX_FRAME_BYTES * 4)
        // Small buffers: tungstenite's 128 KiB defaults cost ~160 KiB per idle socket;
        // a visitor's frames are under 8 KiB, ours a few KiB.
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_WRITE_GATHER)
        .max_write_buffer_size(SOCKET_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let _slots = (slot, tenant_slot);
            match checked {
                Ok((tenant, anon)) => run(s, socket, tenant, anon).await,
                Err(r) => close_with(socket, r.code, &r.message, CLOSE_POLICY).await,
            }
        }))
}

async fn authorize(
    s: &AppState,
    q: &HashMap<String, String>,
    origin: Option<&str>,
) -> Result<(String, String), Refusal> {
    let key = q.get("writeKey").map(String::as_str).unwrap_or("");
    if key.is_empty() {
        return Err(refusal(
            "missing_write_key",
            "missing `writeKey` query parameter: the tenant's public write key",
        ));
    }
    if !tenants::well_formed(key, WRITE_KEY_PREFIX) {
        return Err(refusal(
            "invalid_write_key",
            "malformed write key: `wwk_` followed by 32 hex digits",
        ));
    }
    let rec = match s.keys.lookup(&s.db, key).await {
        Ok(Some(r)) if r.kind == KeyKind::Write => r,
        Ok(_) => return Err(refusal("invalid_write_key", "unknown write key")),
        Err(e) => {
            tracing::error!(error = %e, "key lookup for web chat");
            return Err(refusal("internal_error", "internal error; try again"));
        }
    };
    let anon = q.get("anonymousId").map(String::as_str).unwrap_or("");
    if anon.is_empty()
        || anon.len() > MAX_ANON_ID
        || !anon
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        || crate::identity::is_blocked(anon)
    {
        return Err(refusal(
            "invalid_anonymous_id",
            format!(
                "`anonymousId` must be 1 to {MAX_ANON_ID} letters, digits, `-`, `_`, `.` or `:`"
            ),
        ));
    }
    // Browsers always send Origin; a page on a site the tenant did not list is refused.
    // Non-browser clients send none (and could send any), so none is not checked.
    if let Some(o) = origin {
        let settings = s
            .conversations
            .settings(&rec.tenant_id)
            .await
            .map_err(|_| refusal("internal_error", "internal error; try again"))?;
        if !settings.allows_origin(o) {
            return Err(refusal(
                "origin_not_allowed",
                format!("origin `{o}` is not on this tenant's chat allowlist"),
            ));
        }
    }
    Ok((rec.tenant_id, anon.to_string()))
}

/// Sends one `error` frame and closes with `code` and a short reason.
async fn close_with(mut socket: WebSocket, error: &str, message: &str, code: u16) {
    let frame = json!({"type": "error", "code": error, "message": message}).to_string();
    let _ = socket.send(Ws::Text(frame.into())).await;
    // Close reasons are limited to 123 bytes; the code names the problem.
    let _ = socket
        .send(Ws::Close(Some(CloseFrame {
            code,
            reason: error.to_string().into(),
        })))
        .await;
}

async fn send_json(socket: &mut WebSocket, v: &Value) -> bool {
    socket.send(Ws::Text(v.to_string().into())).await.is_ok()
}

/// A client frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Hello {
        #[serde(default)]
        page: Option<PageContext>,
        #[serde(default)]
        locale: Option<String>,
    },
    Page {
        page: PageContext,
    },
    Message {
        text: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    Postback {
        value: String,
        #[serde(default)]
        label: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
    },
    Rating {
        value: u8,
        #[serde(default)]
        client_id: Option<String>,
    },
}

/// What a received frame means for the socket.
enum Received {
    Frame(ClientFrame),
    /// Refused; the socket closes with this code.
    Fatal(&'static str, String, u16),
    /// The client closed.
    Closed,
    /// A ping or pong (the transport answers pings).
    Ignore,
}

fn read(msg: Option<Result<Ws, axum::Error>>) -> Received {
    let text = match msg {
        None | Some(Err(_)) | Some(Ok(Ws::Close(_))) => return Received::Closed,
        Some(Ok(Ws::Text(t))) => t,
        Some(Ok(Ws::Binary(_))) => {
            return Received::Fatal(
                "binary_frame",
                "binary frames are not accepted; send JSON text frames".into(),
                CLOSE_UNSUPPORTED,
            )
        }
        Some(Ok(_)) => return Received::Ignore,
    };
    if text.len() > MAX_FRAME_BYTES {
        return Received::Fatal(
            "frame_too_large",
            format!(
                "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
                text.len()
            ),
            CLOSE_TOO_BIG,
        );
    }
    match serde_json::from_str::<ClientFrame>(text.as_str()) {
        Ok(f) => Received::Frame(f),
        Err(e) => Received::Fatal(
            "invalid_frame",
            format!("frame is not a valid client frame: {e}"),
            CLOSE_INVALID,
        ),
    }
}

fn clip(s: &mut String) {
    if s.len() > MAX_PAGE_FIELD {
        let mut end = MAX_PAGE_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn clean_page(mut p: PageContext) -> PageContext {
    clip(&mut p.url);
    clip(&mut p.referrer);
    clip(&mut p.title);
    p
}

/// A token bucket per socket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * PER_SECOND).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One visitor socket, from `hello` to close.
async fn run(s: AppState, mut socket: WebSocket, tenant: String, anon: String) {
    let first = match tokio::time::timeout(HELLO_WAIT, socket.recv()).await {
        Ok(m) => read(m),
        Err(_) => {
            return close_with(
                socket,
                "hello_timeout",
                "no `hello` frame within 10 s",
                CLOSE_POLICY,
            )
            .await
        }
    };
    let (page, locale) = match first {
        Received::Frame(ClientFrame::Hello { page, locale }) => (page.unwrap_or_default(), locale),
        Received::Frame(_) => {
            return close_with(
                socket,
                "expected_hello",
                "the first frame must be `hello`",
                CLOSE_POLICY,
            )
            .await
        }
        Received::Fatal(code, msg, close) => return close_with(socket, code, &msg, close).await,
        Received::Closed | Received::Ignore => return,
    };
    let locale = locale
        .filter(|l| l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let chat = s.conversations.clone();
    let opened = match chat
        .open_web(&tenant, &anon, clean_page(page), locale)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(tenant, error = %e, "opening a web chat");
            return close_with(socket, "internal_error", "internal error; try again", 1011).await;
        }
    };
    let conv = opened.conversation.id.clone();
    let (_sub, mut rx) = chat.hub.subscribe(&tenant, &conv);
    if !send_json(&mut socket, &conversations::ready_frame(&opened)).await {
        return;
    }
    let mut bucket = Bucket {
        tokens: BURST,
        at: Instant::now(),
    };
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(frame) = out else {
                    // Dropped by the hub: this socket stopped reading.
                    return close_with(socket, "too_slow", "the socket fell behind", CLOSE_POLICY).await;
                };
                // Frames queued together (an ack and the bot's reply, say) go out in one
                // write: one system call instead of one per frame.
                let mut frame = Some(frame);
                while let Some(f) = frame.take().or_else(|| rx.try_recv().ok()) {
                    if socket.feed(Ws::Text(f.to_string().into())).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            inc = socket.recv() => {
                let frame = match read(inc) {
                    Received::Frame(f) => f,
                    Received::Fatal(code, msg, close) => return close_with(socket, code, &msg, close).await,
                    Received::Closed => return,
                    Received::Ignore => continue,
                };
                let input = match frame {
                    ClientFrame::Hello { .. } => continue,
                    ClientFrame::Page { page } => {
                        if let Err(e) = chat.page(&tenant, &conv, clean_page(page)).await {
                            tracing::warn!(tenant, error = %e, "page context");
                        }
                        continue;
                    }
                    ClientFrame::Message { text, client_id } => {
                        let t = text.trim().to_string();
                        if t.is_empty() || t.chars().count() > MAX_TEXT_CHARS {
                            let _ = send_json(&mut socket, &json!({"type": "error", "code": "invalid_text", "message": format!("a message has 1 to {MAX_TEXT_CHARS} characters"), "client_id": client_id})).await;
                            continue;
                        }
                        VisitorInput { input: UserInput::Text(t.clone()), shown: t, client_id }
                    }
                    ClientFrame::Postback { value, label, client_id } => {
                        if value.is_empty() || value.len() > 256 {
                            let _ = send_json(&mut socket, &json!({"type": "error", "code": "invalid_postback", "message": "a postback value has 1 to 256 bytes", "client_id": client_id})).await;
                            continue;
                        }
                        let shown = label.filter(|l| !l.is_empty() && l.chars().count() <= 200).unwrap_or_else(|| value.clone());
                        VisitorInput { input: UserInput::Postback(value), shown, client_id }
                    }
                    ClientFrame::Rating { value, client_id } => {
                        if value > 10 {
                            let _ = send_json(&mut socket, &json!({"type": "error", "code": "invalid_rating", "message": "a rating is 0 to 10", "client_id": client_id})).await;
                            continue;
                        }
                        VisitorInput { input: UserInput::Rating(value), shown: value.to_string(), client_id }
                    }
                };
                if let Some(c) = &input.client_id {
                    if c.is_empty() || c.len() > MAX_CLIENT_ID || !c.bytes().all(|b| b.is_ascii_graphic()) {
                        let _ = send_json(&mut socket, &json!({"type": "error", "code": "invalid_client_id", "message": format!("`client_id` has 1 to {MAX_CLIENT_ID} printable ASCII characters")})).await;
                        continue;
                    }
                }
                if !bucket.take() {
                    let _ = send_json(&mut socket, &json!({"type": "error", "code": "rate_limited", "message": "too many messages; wait a moment", "client_id": input.client_id})).await;
                    continue;
                }
                let client_id = input.client_id.clone();
                let hub = chat.hub.clone();
                let (t2, c2) = (tenant.clone(), conv.clone());
                let r = chat.visitor(&tenant, &conv, input, move |st| {
                    hub.publish(&t2, &c2, json!({"type": "ack", "client_id": client_id, "id": st.id, "duplicate": st.duplicate}).to_string().into());
                }).await;
                if let Err(e) = r {
                    tracing::error!(tenant, conversation = conv, error = %e, "visitor message");
                    let _ = send_json(&mut socket, &json!({"type": "error", "code": "internal_error", "message": "your message could not be processed; try again"})).await;
                }
            }
        }
    }
}

/// `GET /v1/chat/settings`.
pub(super) async fn get_settings(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<ChatSettings>, ApiError> {
    Ok(Json(s.conversations.settings(&auth.tenant_id).await?))
}

/// `PUT /v1/chat/settings`.
pub(super) async fn put_settings(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChatSettings>, ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let mut settings: ChatSettings = parse_json(&body)?;
    settings
        .validate()
        .map_err(|m| ApiError::bad_request("invalid_chat_settings", m))?;
    if let Some(flow) = &settings.default_flow {
        match s.registry.active(&auth.tenant_id, flow) {
            Some(a) if a.kind == crate::kind::PluginKind::ChatbotFlow => {}
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_chat_settings",
                    format!(
                    "default_flow: `{flow}` is not an active chatbot-flow plugin of this tenant"
                ),
                ))
            }
        }
    }
    s.conversations
        .save_settings(&auth.tenant_id, &settings)
        .await?;
    Ok(Json(settings))
}

/// Query of the conversation listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    profile: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/conversations?profile=<kind>:<value>`: a profile's conversations, or the
/// agent queue when no profile is named.
pub(super) async fn list(
    auth: TenantAuth,
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_filter", e.body_text()))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let convs = match q.profile {
        None => s.conversations.queue(&auth.tenant_id).await?,
        Some(p) => {
            let id = super::profiles::parse_id(&p)?;
            let sp = Space::tenant(&auth.tenant_id);
            let ids =
                s.db.run(move |b| {
                    let Some(pid) = crate::profiles::owner(b, &sp, &id.kind, &id.value)? else {
                        return Ok(Vec::new());
                    };
                    conversations::store::of_profile(b, &sp, &pid, limit)
                })
                .await?;
            let mut out = Vec::new();
            for c in ids {
                out.push(s.conversations.get(&auth.tenant_id, &c).await?);
            }
            out
        }
    };
    Ok(Json(
        json!({"conversations": convs.into_iter().take(limit).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/conversations/{id}`: the conversation and its newest messages.
pub(super) async fn show(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(conversation_view(&s, &auth.tenant_id, &id).await?))
}

/// A conversation with its messages and the customer's 360 view.
pub(super) async fn conversation_view(
    s: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Value, ApiError> {
    let c = s.conversations.get(tenant, id).await?;
    let messages = s.conversations.messages(tenant, id, 200).await?;
    let sp = Space::tenant(tenant);
    let (pid, address, now) = (c.profile_id.clone(), c.address.clone(), s.clock.now_ms());
    let profile =
        s.db.run(move |b| {
            let id = match pid {
                Some(p) => Some(crate::profiles::current_id(b, &sp, &p)?),
                None => crate::profiles::owner(b, &sp, &address.kind, &address.value)
                    .map_err(StoreError::from)?,
            };
            let Some(id) = id else { return Ok(Value::Null) };
            match crate::profiles::get(b, &sp, &id).map_err(StoreError::from)? {
                Some(rec) => crate::profiles::view(b, &sp, rec, now)
                    .map_err(StoreError::from)
                    .map(|v| serde_json::to_value(v).unwrap_or(Value::Null)),
                None => Ok(Value::Null),
            }
        })
        .await?;
    Ok(json!({"conversation": c, "messages": messages, "profile": profile}))
}

/// Query of a survey report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/reports/csat` and `/v1/reports/nps`.
pub(super) async fn report(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(kind): Path<String>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_period", e.body_text()))?;
    let kind = match kind.as_str() {
        "csat" => SurveyKind::Csat,
        "nps" => SurveyKind::Nps,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                format!("no report `{other}`; reports are `csat` and `nps`"),
            ))
        }
    };
    let now = s.clock.now_ms();
    let to = match q.to.as_deref() {
        Some(t) => period_bound(t, "to", true)?,
        None => now + 1,
    };
    // Default period: the last 30 days.
    let from = match q.from.as_deref() {
        Some(f) => period_bound(f, "from", false)?,
        None => to - 30 * 86_400_000,
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_period",
            "`from` must be before `to`",
        ));
    }
    let sp = Space::tenant(&auth.tenant_id);
    let r =
        s.db.run(move |b| conversations::surveys::report(b, &sp, kind, from, to))
            .await?;
    Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null)))
}

/// A period bound: Unix ms, or a date `YYYY-MM-DD` in Vietnam time (`to` dates include
/// the whole day).
fn period_bound(v: &str, field: &str, end_of_day: bool) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    use chrono::TimeZone;
    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid_period",
            format!("`{field}` must be Unix milliseconds or a date `YYYY-MM-DD`"),
        )
    })?;
    let d = if end_of_day {
        d.succ_opt().unwrap_or(d)
    } else {
        d
    };
    let local = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    Ok(chrono_tz::Asia::Ho_Chi_Minh
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or(0))
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "conversation_not_found",
                format!("no conversation `{id}` in this tenant"),
            ),
            ChatError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "conversation_conflict", m)
            }
            ChatError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            ChatError::Store(e) => e.into(),
        }
    }
}
