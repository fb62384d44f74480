//! The Segment-compatible tracking API: `POST /v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch` and `/v1/import` (an alias of
//! batch). Authenticated by the tenant's **write key**: HTTP Basic with the key as user
//! name and an empty password (what Segment's libraries send), a `writeKey` field in the
//! body, or a Bearer token.
//!
//! Answers `{"success": true}` once the events are durable. A batch with some bad events
//! keeps the good ones and lists the others under `rejected`; Segment's libraries treat
//! any 200 as success, so a batch answers 400 only when nothing in it was usable.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{ApiError, AppState};
use crate::ingest::segment::{self, BatchDefaults, Message, MessageType, Rejection};
use crate::tenants::{self, KeyKind, WRITE_KEY_PREFIX};

/// Most events in one batch: 500 KB / 32 KB gives 15 large ones; small events are ~300
/// bytes, so 2,500 is a generous cap on per-request work.
pub const MAX_BATCH_EVENTS: usize = 2_500;

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The write key from `Authorization` (Basic `key:` or Bearer), if sent.
pub(super) fn key_from_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(h) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let h = h.to_str().unwrap_or("").trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                unauthorized(
                    "malformed_credentials",
                    "malformed Basic credentials: send base64 of `<write key>:`",
                )
            })?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        return Ok(Some(user.to_string()));
    }
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Some(rest.to_string()));
    }
    Err(unauthorized(
        "malformed_credentials",
        "malformed Authorization header: send HTTP Basic with the write key as user name",
    ))
}

/// The tenant the write key belongs to.
pub(super) async fn tenant_for(s: &AppState, key: Option<String>) -> Result<String, ApiError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(unauthorized(
            "missing_credentials",
            "missing write key: send HTTP Basic auth with the tenant's write key as user name, or a `writeKey` field",
        ));
    };
    if !tenants::well_formed(&key, WRITE_KEY_PREFIX) {
        return Err(unauthorized(
            "malformed_credentials",
            "malformed write key: a tenant write key is `wwk_` followed by 32 hex digits",
        ));
    }
    match s.keys.lookup(&s.db, &key).await? {
        Some(rec) if rec.kind == KeyKind::Write => Ok(rec.tenant_id),
        _ => Err(unauthorized(
            "invalid_credentials",
            "unknown write key: no tenant has this write key",
        )),
    }
}

async fn read_body(body: Body, limit: usize, code: &'static str) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::bad_request(code, format!("request body exceeds the {limit}-byte limit"))
    })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; send a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_json",
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("invalid JSON body: {e}"),
        )),
    }
}

fn body_key(obj: &Map<String, Value>) -> Option<String> {
    obj.get("writeKey")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn rejection_error(r: Rejection) -> ApiError {
    ApiError::bad_request(r.code, r.message)
}

fn new_message_id() -> String {
    format!("weft-{:032x}", rand::random::<u128>())
}

/// Checks that at least one id of `m` is usable as an identity.
fn check_identity(m: &Message) -> Result<(), Rejection> {
    if !crate::identity::from_message(m).is_empty() {
        return Ok(());
    }
    if m.kind == MessageType::Alias {
        return Ok(());
    }
    let shown = m
        .user_id
        .as_deref()
        .or(m.anonymous_id.as_deref())
        .unwrap_or("");
    Err(Rejection {
        code: "blocked_id",
        message: format!(
            "`{shown}` is a placeholder value Weft never uses as an identity; send a real `userId` or `anonymousId`"
        ),
    })
}

async fn single(
    s: AppState,
    headers: HeaderMap,
    body: Body,
    kind: MessageType,
) -> Result<Json<Value>, ApiError> {
    let header_key = key_from_header(&headers)?;
    let bytes = read_body(body, segment::MAX_EVENT_BYTES, "event_too_large").await?;
    let obj = parse_object(&bytes)?;
    let tenant = tenant_for(&s, header_key.or_else(|| body_key(&obj))).await?;
    let value = Value::Object(obj);
    let now = s.clock.now_ms();
    let m = segment::parse_message(
        &value,
        bytes.len(),
        Some(kind),
        &BatchDefaults::default(),
        now,
        new_message_id,
    )
    .and_then(|m| check_identity(&m).map(|()| m))
    .map_err(rejection_error)?;
    s.ingest.accept(&tenant, vec![m]).await?;
    Ok(Json(json!({"success": true})))
}

macro_rules! single_route {
    ($name:ident, $kind:expr, $doc:literal) => {
        #[doc = $doc]
        pub(super) async fn $name(
            State(s): State<AppState>,
            headers: HeaderMap,
            body: Body,
        ) -> Result<Json<Value>, ApiError> {
            single(s, headers, body, $kind).await
        }
    };
}

single_route!(track, MessageType::Track, "`POST /v1/track`.");
single_route!(identify, MessageType::Identify, "`POST /v1/identify`.");
single_route!(page, MessageType::Page, "`POST /v1/page`.");
single_route!(screen, MessageType::Screen, "`POST /v1/screen`.");
single_route!(group, MessageType::Group, "`POST /v1/group`.");
single_route!(alias, MessageType::Alias, "`POST /v1/alias`.");

/// `POST /v1/batch` and `/v1/import`: `{"batch": [...], "sentAt"?, "context"?, "writeKey"?}`.
pub(super) async fn batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let header_key = key_from_header(&headers)?;
    let bytes = read_body(body, segment::MAX_BATCH_BYTES, "batch_too_large").await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct BatchBody<'a> {
        #[serde(borrow, default)]
        batch: Option<Vec<&'a serde_json::value::RawValue>>,
        #[serde(default)]
        sent_at: Option<Value>,
        #[serde(default)]
        context: Option<Value>,
        #[serde(default)]
        write_key: Option<String>,
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; send {\"batch\": [...]}",
        ));
    }
    let req: BatchBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid batch body: {e}")))?;
    let tenant = tenant_for(&s, header_key.or(req.write_key)).await?;
    let Some(items) = req.batch else {
        return Err(ApiError::bad_request(
            "missing_field",
            "a batch needs a `batch` array of events",
        ));
    };
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "the batch holds {} events; the limit is {MAX_BATCH_EVENTS}",
                items.len()
            ),
        ));
    }
    let defaults = BatchDefaults {
        sent_at: match &req.sent_at {
            Some(v) => segment::parse_time(v, "sentAt").map_err(rejection_error)?,
            None => None,
        },
        context: match req.context {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "batch `context` must be an object",
                ))
            }
        },
    };
    let now = s.clock.now_ms();
    let mut accepted = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        let parsed = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| Rejection {
                code: "invalid_json",
                message: e.to_string(),
            })
            .and_then(|v| {
                segment::parse_message(&v, raw.get().len(), None, &defaults, now, new_message_id)
            })
            .and_then(|m| check_identity(&m).map(|()| m));
        match parsed {
            Ok(m) => accepted.push(m),
            Err(r) => rejected.push(json!({"index": index, "code": r.code, "message": r.message})),
        }
    }
    if accepted.is_empty() && !rejected.is_empty() {
        return Err(ApiError::bad_request(
            "no_valid_events",
            format!(
                "none of the {} events was accepted: {}",
                rejected.len(),
                rejected
                    .iter()
                    .map(|r| format!("[{}] {}", r["index"], r["message"].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    s.ingest.accept(&tenant, accepted).await?;
    if rejected.is_empty() {
        Ok(Json(json!({"success": true})))
    } else {
        Ok(Json(json!({"success": true, "rejected": rejected})))
    }
}

/// `GET /v1/ingest/status` (secret key): this tenant's ingestion counters since the server
/// started, whether its processor is behind, and whether the journey work its events made
/// (entries, waits ended, timers) is done: an event is fully handled only then.
pub(super) async fn status(
    auth: super::TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = s.ingest.processor().counters(&auth.tenant_id);
    let (accepted, processed) = (c.accepted.load(Relaxed), c.processed.load(Relaxed));
    Ok(Json(json!({
        "accepted": accepted,
        "processed": processed,
        "dead_lettered": c.dead_lettered.load(Relaxed),
        "backlog": accepted.saturating_sub(processed),
        "journeys": {
            "items_run": c.journey_items_run.load(Relaxed),
            "busy": s.journeys.busy(&auth.tenant_id).await?,
        },
    })))
}
