//! `POST /v1/messages`: send one message to a profile from outside a journey (an order
//! confirmation from the brand's backend, an agent's follow-up). It takes the same road as
//! a journey's send: the messaging policy, the outbox, the delivery pipeline with its
//! fallbacks, and the delivery log.
//!
//! Body: `{"intent_id"?, "to": "<kind>:<value>", "channels": ["zalo-oa", "sms"],
//! "category": "transactional" | "service" | "marketing", "content": [{"Text": "…"}, …]}`
//! (content items as in plugin fixtures). Answers 202 with the intent id and its status;
//! the same `intent_id` again answers 200 with the first outcome and sends nothing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth, MAX_JSON_BODY};
use crate::delivery::intake::Intake;
use crate::delivery::log;
use crate::messaging::policy;
use crate::runtime::bindings::exports::journey::SendIntent;
use crate::runtime::bindings::types::{Content, MessageCategory};

/// Content items per message: a text, a card and a few buttons' worth of extras.
const MAX_CONTENT_ITEMS: usize = 20;
/// Serialized content per message: the record must stay far below sled's value limit.
const MAX_CONTENT_BYTES: usize = 32 * 1024;
/// Longest intent id: ids are keys in several indexes.
const MAX_INTENT_ID: usize = 128;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendRequest {
    intent_id: Option<String>,
    to: String,
    channels: Vec<String>,
    category: String,
    content: Vec<Content>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_message", message)
}

/// Sends one message.
pub(super) async fn send(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let req: SendRequest = parse_json(&body)?;
    let id = super::profiles::parse_id(&req.to)?;
    let category = match req.category.as_str() {
        "transactional" => MessageCategory::Transactional,
        "service" => MessageCategory::Service,
        "marketing" => MessageCategory::Marketing,
        other => {
            return Err(invalid(format!(
                "unknown category `{other}`; one of transactional, service, marketing"
            )))
        }
    };
    if req.channels.is_empty() {
        return Err(invalid("`channels` is empty; name at least one channel"));
    }
    let mut channels = Vec::new();
    for c in &req.channels {
        match policy::channel_kind(c) {
            Some(k) if !channels.contains(&k) => channels.push(k),
            Some(_) => return Err(invalid(format!("channel `{c}` is named twice"))),
            None => {
                return Err(invalid(format!(
                    "unknown channel `{c}`; one of {}",
                    policy::CHANNEL_NAMES.join(", ")
                )))
            }
        }
    }
    if req.content.is_empty() || req.content.len() > MAX_CONTENT_ITEMS {
        return Err(invalid(format!(
            "`content` must have 1 to {MAX_CONTENT_ITEMS} items"
        )));
    }
    let size = crate::runtime::invoke::json_size(&req.content);
    if size > MAX_CONTENT_BYTES {
        return Err(invalid(format!(
            "`content` is {size} bytes as JSON; the limit is {MAX_CONTENT_BYTES}"
        )));
    }
    let intent_id = match req.intent_id {
        Some(i) => {
            let ok = !i.is_empty()
                && i.len() <= MAX_INTENT_ID
                && i.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                return Err(invalid(format!(
                    "invalid intent_id `{i}`: 1 to {MAX_INTENT_ID} letters, digits, `-`, `_`, `.` or `:`"
                )));
            }
            i
        }
        None => format!("api_{:016x}", s.db.backend().next_id()?),
    };
    let intake = Intake {
        to: (id.kind, id.value),
        intent: SendIntent {
            intent_id,
            channel_preference: channels,
            category,
            content: req.content,
        },
        now: s.clock.now_ms(),
    };
    let outcome = s.deliveries.record_intake(&auth.tenant_id, intake).await?;
    let Some((created, rec)) = outcome else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile with identity `{}`", req.to),
        ));
    };
    if created {
        s.db.commit().await?;
        s.deliveries.wake(&auth.tenant_id);
    }
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "intent_id": rec.intent_id,
            "status": log::code(&rec.status),
            "channel": rec.channel,
            "duplicate": !created,
        })),
    ))
}
