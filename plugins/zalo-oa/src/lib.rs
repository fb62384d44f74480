//! Example channel adapter: Zalo Official Account.
//!
//! - `send` on channel `zalo-oa` posts consultation messages to the OA API v3
//!   (`/v3.0/oa/message/cs`); on channel `zalo-zns` it posts one ZNS template message by
//!   phone (`/message/template`). Both go through the host's `outbound-http`, and Zalo's
//!   answer becomes `send-ok`/`send-error`.
//! - `handle-webhook` verifies `X-ZEvent-Signature` with the host's `crypto` and turns
//!   Zalo events into inbound messages, follows, unfollows and delivery statuses (OA
//!   messages and ZNS deliveries arrive on the same webhook).
//! - `refresh-credentials` trades the single-use refresh token for a new pair and rotates
//!   both secrets with compare-and-swap.
//!
//! Config and secrets are listed in README.md.

use weft_guest::adapter::{
    ChannelCapabilities, DeliveryStatus, Guest, HttpRequest, HttpResponse, IdentityLink,
    InboundEvent, InboundMessage, MessageRef, OutboundMessage, PluginError, SendError, SendOk,
    SessionWindow, StatusGranularity, StatusUpdate, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Request, Response};
use weft_guest::json::{self, json, Value};
use weft_guest::types::{
    ButtonAction, Card, ChannelKind, Content, Geo, Identity, Media, TemplateRef,
};
use weft_guest::{clock, config, crypto, log, serde_json};

/// Default OA API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://openapi.zalo.me";
/// Default ZNS API base URL (setting `zns_api_base`).
const DEFAULT_ZNS_API_BASE: &str = "https://business.openapi.zalo.me";
/// Default OAuth base URL (setting `oauth_base`).
const DEFAULT_OAUTH_BASE: &str = "https://oauth.zaloapp.com";
/// Consultation messages are allowed within 48 h of the user's last interaction.
const WINDOW_MS: u64 = clock::hours(48);
/// Longest text Zalo accepts in one consultation message.
const MAX_TEXT_LEN: u32 = 2000;
/// How long to back off after Zalo's rate-limit error (-32), or an HTTP 429 without a
/// usable `Retry-After`: one minute, the period Zalo's per-minute request limits reset on.
const RATE_LIMIT_BACKOFF_MS: u64 = clock::minutes(1);
/// Default accepted clock skew for webhook timestamps (setting `webhook_max_skew_ms`).
const DEFAULT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Timeout for each provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;

/// The adapter: one installation sends on `zalo-oa` and `zalo-zns`.
struct ZaloOa;

impl Guest for ZaloOa {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::ZaloOa,
            max_text_len: MAX_TEXT_LEN,
            max_buttons: 5,
            max_button_label: 35,
            // `template` is for `zalo-zns` sends only; the OA API takes none.
            content_kinds: [
                "text", "image", "card", "carousel", "choices", "raw", "template",
            ]
            .map(String::from)
            .to_vec(),
            window: Some(SessionWindow {
                duration_ms: WINDOW_MS,
                template_required_outside: true,
            }),
            status: StatusGranularity::PerMessage,
            max_send_per_sec: None,
            extra_channels: vec![ChannelKind::ZaloZns],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        match route(msg.channel)? {
            Route::Oa => send_oa(&msg),
            Route::Zns => send_zns(&msg),
        }
    }

    fn handle_webhook(req: HttpRequest) -> Result<WebhookResult, WebhookError> {
        if req.method.eq_ignore_ascii_case("GET") {
            return verification_handshake(&req);
        }
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
        let timestamp = json::text_at(&body, "timestamp")
            .ok_or_else(|| WebhookError::Malformed("missing timestamp".into()))?;
        verify_signature(&req, &timestamp)?;

        let ts: i64 = timestamp.parse().map_err(|_| {
            WebhookError::Malformed(format!("timestamp {timestamp:?} is not a number"))
        })?;
        let max_skew = config::get("webhook_max_skew_ms")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(DEFAULT_MAX_SKEW_MS);
        if max_skew > 0 && (req.received_at - ts).abs() > max_skew {
            return Err(WebhookError::StaleTimestamp);
        }

        Ok(WebhookResult {
            response: HttpResponse::json(200, &json!({"error": 0})),
            events: parse_event(&body, ts, config::get("oa_id").filter(|v| !v.is_empty()))?,
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        let app_id = config::require("app_id")?;
        let app_secret = config::require_secret("app_secret")?;
        let refresh_token = config::require_secret("refresh_token")?;
        let url = format!(
            "{}/v4/oa/access_token",
            config::get_or("oauth_base", DEFAULT_OAUTH_BASE).trim_end_matches('/')
        );
        let req = Request::new("POST", &url)
            .header("secret_key", &app_secret)
            .form(&[
                ("refresh_token", refresh_token.as_str()),
                ("app_id", app_id.as_str()),
                ("grant_type", "refresh_token"),
            ])
            .timeout_ms(REQUEST_TIMEOUT_MS);
        let resp = http::send(&req).map_err(|e| PluginError::retryable(format!("oauth: {e:?}")))?;
        if resp.status >= 500 {
            return Err(PluginError::retryable(format!(
                "oauth: http {}",
                resp.status
            )));
        }
        let body: Value = resp.json().map_err(|_| {
            PluginError::retryable(format!("oauth: http {} with a non-JSON body", resp.status))
        })?;
        let (Some(access), Some(refresh)) = (
            json::str_at(&body, "access_token").filter(|s| !s.is_empty()),
            json::str_at(&body, "refresh_token").filter(|s| !s.is_empty()),
        ) else {
            return Err(PluginError::fatal(format!(
                "oauth: zalo error {}: {}",
                json::text_at(&body, "error").unwrap_or_else(|| "?".into()),
                json::text_at(&body, "error_description")
                    .or_else(|| json::text_at(&body, "message"))
                    .unwrap_or_else(|| format!("http {}", resp.status)),
            )));
        };

        // The refresh token is single-use: store the new one first, and only if nobody
        // replaced the one we spent.
        if !config::rotate_secret("refresh_token", &refresh_token, refresh)? {
            return Err(PluginError::retryable(
                "refresh_token changed while refreshing; retry with the current one",
            ));
        }
        let current_access = config::get_secret("access_token").unwrap_or_default();
        if !config::rotate_secret("access_token", &current_access, access)? {
            log::warn("zalo-oa: access_token changed concurrently; kept the newer value");
        }
        log::info!(
            "zalo-oa: credentials refreshed; access token expires in {} s",
            json::text_at(&body, "expires_in").unwrap_or_else(|| "?".into())
        );
        Ok(())
    }
}

/// Which Zalo API a send goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// OA consultation messages (`/v3.0/oa/message/cs`).
    Oa,
    /// ZNS template messages (`/message/template`).
    Zns,
}

/// The API for `channel`: `zalo-oa` and `zalo-zns`; anything else is `permanent`.
fn route(channel: ChannelKind) -> Result<Route, SendError> {
    match channel {
        ChannelKind::ZaloOa => Ok(Route::Oa),
        ChannelKind::ZaloZns => Ok(Route::Zns),
        _ => Err(SendError::Permanent(
            "this adapter sends on zalo-oa and zalo-zns only".into(),
        )),
    }
}

/// Sends `msg` as OA consultation messages, one request per content item.
fn send_oa(msg: &OutboundMessage) -> Result<SendOk, SendError> {
    let user_id = zalo_user_id(&msg.recipient.address)?;
    if let Some(last) = msg.recipient.last_inbound_at {
        if clock::now().saturating_sub(last) > WINDOW_MS as i64 {
            return Err(SendError::OutsideWindow);
        }
    }
    let messages = msg
        .content
        .iter()
        .map(zalo_message)
        .collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Err(SendError::ContentRejected("no content to send".into()));
    }
    let token = access_token()?;
    let url = format!(
        "{}/v3.0/oa/message/cs",
        config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/')
    );

    // Zalo takes one message per request and has no idempotency key: send the parts in
    // order, and once a part went out, report any later failure as ambiguous so the
    // host reconciles instead of resending what was delivered.
    let total = messages.len();
    let mut ids = Vec::with_capacity(total);
    let mut quota = None;
    for message in messages {
        let req = Request::new("POST", &url)
            .header("access_token", &token)
            .json(&json!({"recipient": {"user_id": user_id}, "message": message}))
            .timeout_ms(REQUEST_TIMEOUT_MS);
        let outcome = http::send(&req)
            .map_err(SendError::from)
            .and_then(|resp| interpret_send_response(&resp));
        match outcome {
            Ok((id, remaining)) => {
                ids.push(id);
                quota = remaining.or(quota);
            }
            Err(e) if ids.is_empty() => return Err(e),
            Err(e) => {
                return Err(SendError::Ambiguous(format!(
                    "sent {} of {total} parts ({}), then failed: {e:?}",
                    ids.len(),
                    ids.join(",")
                )))
            }
        }
    }
    Ok(SendOk {
        provider_message_id: ids.join(","),
        accepted_at: clock::now(),
        quota_remaining: quota,
    })
}

/// Sends `msg` as one ZNS template message to the recipient's phone.
///
/// ZNS has no care window (templates are pre-approved), so `last-inbound-at` is not
/// checked. Content items other than the first template are ignored: the template is the
/// whole message.
fn send_zns(msg: &OutboundMessage) -> Result<SendOk, SendError> {
    let phone = zns_phone(&msg.recipient.address)?;
    let template = first_template(&msg.content)?;
    let development = zns_development(config::get("zns_mode").as_deref())?;
    let body = zns_body(&phone, template, &msg.tracking_id, development)?;
    let token = access_token()?;
    let url = format!(
        "{}/message/template",
        config::get_or("zns_api_base", DEFAULT_ZNS_API_BASE).trim_end_matches('/')
    );
    let req = Request::new("POST", &url)
        .header("access_token", &token)
        .json(&body)
        .timeout_ms(REQUEST_TIMEOUT_MS);
    let resp = http::send(&req)?;
    let (id, quota) = interpret_zns_response(&resp)?;
    Ok(SendOk {
        provider_message_id: id,
        accepted_at: clock::now(),
        quota_remaining: quota,
    })
}

/// The OA access token secret (used by both APIs); missing is `auth-expired`, so the host
/// refreshes credentials before retrying.
fn access_token() -> Result<String, SendError> {
    config::get_secret("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(SendError::AuthExpired)
}

/// The digits ZNS wants for a `phone` identity: `+84912345678` → `84912345678` (local
/// `0912345678` and `84…` are accepted too). ZNS reaches Vietnamese numbers only.
fn zns_phone(address: &Identity) -> Result<String, SendError> {
    if address.kind != "phone" {
        return Err(SendError::RecipientInvalid(format!(
            "zalo-zns needs a phone identity, got `{}`",
            address.kind
        )));
    }
    let e164 = e164(&address.value).ok_or_else(|| {
        SendError::RecipientInvalid("zalo-zns needs a Vietnamese phone number (+84…)".into())
    })?;
    Ok(e164.trim_start_matches('+').to_owned())
}

/// The first template item of `content`; none is `content-rejected`.
fn first_template(content: &[Content]) -> Result<&TemplateRef, SendError> {
    content
        .iter()
        .find_map(|c| match c {
            Content::Template(t) => Some(t),
            _ => None,
        })
        .ok_or_else(|| SendError::ContentRejected("ZNS needs a template".into()))
}

/// Whether the `zns_mode` setting asks for development mode: `development` → yes;
/// unset, empty or `production` → no; anything else is a configuration error
/// (`permanent`), so a typo never sends billed messages by surprise.
fn zns_development(mode: Option<&str>) -> Result<bool, SendError> {
    match mode.map(str::trim).unwrap_or_default() {
        "" | "production" => Ok(false),
        "development" => Ok(true),
        other => Err(SendError::Permanent(format!(
            "setting zns_mode must be `production` or `development`, got `{other}`"
        ))),
    }
}

/// The `/message/template` body: `{phone, template_id, template_data, tracking_id}` plus
/// `"mode": "development"` in development mode. The template's `params` must be a JSON
/// object (empty text counts as `{}`), else `content-rejected`.
fn zns_body(
    phone: &str,
    template: &TemplateRef,
    tracking_id: &str,
    development: bool,
) -> Result<Value, SendError> {
    if template.id.trim().is_empty() {
        return Err(SendError::ContentRejected(
            "ZNS template id is empty".into(),
        ));
    }
    let data = if template.params.trim().is_empty() {
        Value::Object(json::Map::new())
    } else {
        serde_json::from_str::<Value>(&template.params).map_err(|e| {
            SendError::ContentRejected(format!("ZNS template params are not JSON: {e}"))
        })?
    };
    if !data.is_object() {
        return Err(SendError::ContentRejected(
            "ZNS template params must be a JSON object".into(),
        ));
    }
    let mut body = json!({
        "phone": phone,
        "template_id": template.id,
        "template_data": data,
        "tracking_id": tracking_id,
    });
    if development {
        body["mode"] = Value::from("development");
    }
    Ok(body)
}

/// The Zalo user id of a `zalo:<oa_id>` (or plain `zalo`) identity.
fn zalo_user_id(address: &Identity) -> Result<&str, SendError> {
    if !(address.kind == "zalo" || address.kind.starts_with("zalo:")) {
        return Err(SendError::RecipientInvalid(format!(
            "zalo-oa needs a zalo identity, got `{}`",
            address.kind
        )));
    }
    if address.value.is_empty() {
        return Err(SendError::RecipientInvalid("empty zalo user id".into()));
    }
    Ok(&address.value)
}

/// One Zalo `message` object for one content item.
fn zalo_message(content: &Content) -> Result<Value, SendError> {
    Ok(match content {
        Content::Text(text) => json!({"text": truncate(text, MAX_TEXT_LEN as usize)}),
        Content::Image(media) => {
            let mut m = json!({"attachment": {"type": "template", "payload": {
                "template_type": "media",
                "elements": [{"media_type": "image", "url": media.url}],
            }}});
            if let Some(caption) = &media.caption {
                m["text"] = Value::from(truncate(caption, MAX_TEXT_LEN as usize));
            }
            m
        }
        Content::Card(card) => list_template(std::slice::from_ref(card)),
        Content::Carousel(cards) => list_template(cards),
        Content::Choices(choices) => json!({
            "text": truncate(&choices.prompt, MAX_TEXT_LEN as usize),
            "attachment": {"type": "template", "payload": {
                "buttons": choices.options.iter().map(|c| json!({
                    "title": c.label,
                    "type": "oa.query.hide",
                    "payload": c.value,
                })).collect::<Vec<_>>(),
            }},
        }),
        Content::Raw(raw) => serde_json::from_str(raw)
            .map_err(|e| SendError::ContentRejected(format!("raw content is not JSON: {e}")))?,
        Content::Template(_) => {
            return Err(SendError::ContentRejected(
                "zalo-oa does not send templates; use the zalo-zns channel".into(),
            ))
        }
        Content::Video(_) | Content::Audio(_) | Content::File(_) | Content::Location(_) => {
            return Err(SendError::ContentRejected(format!(
                "zalo-oa cannot send {} content",
                content_kind(content)
            )))
        }
    })
}

/// A Zalo `list` template: one element per card (Zalo shows at most 5), the first card's
/// buttons under the list.
fn list_template(cards: &[Card]) -> Value {
    let elements: Vec<Value> = cards
        .iter()
        .take(5)
        .map(|card| {
            let mut e = json!({"title": card.title});
            if let Some(s) = &card.subtitle {
                e["subtitle"] = Value::from(s.as_str());
            }
            if let Some(u) = &card.image_url {
                e["image_url"] = Value::from(u.as_str());
            }
            if let Some(url) = card.buttons.iter().find_map(|b| match &b.action {
                ButtonAction::Url(u) => Some(u),
                _ => None,
            }) {
                e["default_action"] = json!({"type": "oa.open.url", "url": url});
            }
            e
        })
        .collect();
    let buttons: Vec<Value> = cards
        .first()
        .map(|c| c.buttons.iter().map(zalo_button).collect())
        .unwrap_or_default();
    json!({"attachment": {"type": "template", "payload": {
        "template_type": "list",
        "elements": elements,
        "buttons": buttons,
    }}})
}

/// One Zalo button object for a Weft button.
fn zalo_button(button: &weft_guest::types::Button) -> Value {
    let (kind, payload) = match &button.action {
        ButtonAction::Url(u) => ("oa.open.url", json!({"url": u})),
        ButtonAction::Postback(p) => ("oa.query.hide", Value::from(p.as_str())),
        ButtonAction::Say(s) => ("oa.query.show", Value::from(s.as_str())),
        ButtonAction::Phone(p) => ("oa.open.phone", json!({"phone_code": p})),
    };
    json!({"title": button.label, "type": kind, "payload": payload})
}

/// The `content-kinds` name of a content item, for error messages.
fn content_kind(content: &Content) -> &'static str {
    match content {
        Content::Text(_) => "text",
        Content::Image(_) => "image",
        Content::Video(_) => "video",
        Content::Audio(_) => "audio",
        Content::File(_) => "file",
        Content::Location(_) => "location",
        Content::Card(_) => "card",
        Content::Carousel(_) => "carousel",
        Content::Choices(_) => "choices",
        Content::Template(_) => "template",
        Content::Raw(_) => "raw",
    }
}

/// At most `max` characters of `text`.
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Maps Zalo's answer to one send: the message id and remaining quota, or why not.
fn interpret_send_response(resp: &Response) -> Result<(String, Option<u32>), SendError> {
    if resp.status >= 500 {
        return Err(SendError::Retryable(format!("zalo http {}", resp.status)));
    }
    if resp.status == 429 {
        return Err(SendError::RateLimited(retry_after_ms(
            resp.header("retry-after"),
        )));
    }
    let body: Option<Value> = resp.json().ok();
    let code = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_i64);
    let Some(code) = code else {
        // A 2xx without Zalo's envelope may still have sent the message.
        return Err(if resp.is_success() {
            SendError::Ambiguous(format!("zalo http {} without an error code", resp.status))
        } else {
            SendError::Permanent(format!(
                "zalo http {}: {}",
                resp.status,
                truncate(&resp.text(), 200)
            ))
        });
    };
    let body = body.unwrap_or_default();
    let message = json::text_at(&body, "message").unwrap_or_default();
    match code {
        0 => {
            let id = json::text_at(&body, "data.message_id")
                .or_else(|| json::text_at(&body, "data.msg_id"))
                .ok_or_else(|| {
                    SendError::Ambiguous("zalo accepted the message without an id".into())
                })?;
            let quota = json::text_at(&body, "data.quota.remain").and_then(|q| q.parse().ok());
            Ok((id, quota))
        }
        -216 => Err(SendError::AuthExpired),
        -213 => Err(SendError::RecipientUnreachable(format!(
            "zalo -213: {message}"
        ))),
        -201 => Err(SendError::RecipientInvalid(format!("zalo -201: {message}"))),
        -32 => Err(SendError::RateLimited(RATE_LIMIT_BACKOFF_MS)),
        other => Err(SendError::Permanent(format!("zalo {other}: {message}"))),
    }
}

/// Maps Zalo's answer to one ZNS send: the `msg_id` and `quota.remainingQuota`, or why not.
///
/// HTTP 5xx is `retryable` and 429 `rate-limited` (honouring `Retry-After` seconds); a
/// 2xx without Zalo's `error` code, or a success without a `msg_id`, is `ambiguous`; a
/// non-2xx without one is `permanent`; Zalo's codes map as in [`zns_error`].
fn interpret_zns_response(resp: &Response) -> Result<(String, Option<u32>), SendError> {
    if resp.status >= 500 {
        return Err(SendError::Retryable(format!("zns http {}", resp.status)));
    }
    if resp.status == 429 {
        return Err(SendError::RateLimited(retry_after_ms(
            resp.header("retry-after"),
        )));
    }
    let body: Option<Value> = resp.json().ok();
    // Zalo sends the code as a number; accept a numeric string too.
    let code = body
        .as_ref()
        .and_then(|b| json::text_at(b, "error"))
        .and_then(|c| c.trim().parse::<i64>().ok());
    let Some(code) = code else {
        // A 2xx without Zalo's envelope may still have sent the message.
        return Err(if resp.is_success() {
            SendError::Ambiguous(format!("zns http {} without an error code", resp.status))
        } else {
            SendError::Permanent(format!(
                "zns http {}: {}",
                resp.status,
                truncate(&resp.text(), 200)
            ))
        });
    };
    let body = body.unwrap_or_default();
    if code != 0 {
        let message = json::text_at(&body, "message").unwrap_or_default();
        return Err(zns_error(code, truncate(&message, 200)));
    }
    let id = json::text_at(&body, "data.msg_id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SendError::Ambiguous("zns accepted the message without a msg_id".into()))?;
    let quota = json::text_at(&body, "data.quota.remainingQuota").and_then(|q| q.parse().ok());
    Ok((id, quota))
}

/// The send error for a non-zero ZNS `error` code. Codes -100 to -112, -118 and -124 are
/// confirmed by Zalo's ZNS error page (zalo.cloud); the others are "to verify" (README).
fn zns_error(code: i64, message: &str) -> SendError {
    let why = format!("zns {code}: {message}");
    match code {
        // Access token invalid (-124 on ZNS; -216 is the OA API's code for the same token).
        -124 | -216 => SendError::AuthExpired,
        // Request rate limit of the Zalo open APIs.
        -32 => SendError::RateLimited(RATE_LIMIT_BACKOFF_MS),
        // Out of quota / balance (-115), ZCA wallet charge failed (-137), OA daily quota
        // used up (-144).
        -115 | -137 | -144 => SendError::QuotaExceeded,
        // Phone number invalid.
        -108 => SendError::RecipientInvalid(why),
        // Zalo version unsupported (-110), user inactive or refusing ZNS (-114), no Zalo
        // account for the number (-118), account cannot receive ZNS (-119), user declined
        // this kind of ZNS (-139).
        -110 | -114 | -118 | -119 | -139 => SendError::RecipientUnreachable(why),
        // Template id invalid (-109), template data empty (-111) or invalid (-112), QR
        // code or button invalid (-113), text invalid (-116), no permission for the
        // template (-117).
        -109 | -111 | -112 | -113 | -116 | -117 => SendError::ContentRejected(why),
        // Unknown error: Zalo's guidance is to try again later.
        -100 => SendError::Retryable(why),
        _ => SendError::Permanent(why),
    }
}

/// Milliseconds to wait after an HTTP 429: `Retry-After` in seconds when it is a number,
/// else [`RATE_LIMIT_BACKOFF_MS`] (an HTTP-date form is not worth a date parser here).
fn retry_after_ms(header: Option<&str>) -> u64 {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(RATE_LIMIT_BACKOFF_MS, |secs| secs.saturating_mul(1000))
}

/// Answers a GET: echoes `hub.challenge` when the optional `verify_token` secret matches.
fn verification_handshake(req: &HttpRequest) -> Result<WebhookResult, WebhookError> {
    let Some(challenge) = req.query_param("hub.challenge") else {
        return Ok(WebhookResult {
            response: HttpResponse::text(200, "ok"),
            events: vec![],
        });
    };
    if let Some(expected) = config::get_secret("verify_token").filter(|t| !t.is_empty()) {
        let given = req.query_param("hub.verify_token").unwrap_or_default();
        if !crypto::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(WebhookError::BadSignature);
        }
    }
    Ok(WebhookResult {
        response: HttpResponse::text(200, challenge),
        events: vec![],
    })
}

/// Checks `X-ZEvent-Signature: mac=<hex sha256(app_id + body + timestamp + oa_secret_key)>`.
fn verify_signature(req: &HttpRequest, timestamp: &str) -> Result<(), WebhookError> {
    let given = req
        .header("x-zevent-signature")
        .map(|h| h.trim())
        .map(|h| h.strip_prefix("mac=").unwrap_or(h))
        .and_then(crypto::unhex)
        .ok_or(WebhookError::BadSignature)?;
    let (Some(app_id), Some(secret)) = (
        config::get("app_id").filter(|v| !v.is_empty()),
        config::get_secret("oa_secret_key").filter(|v| !v.is_empty()),
    ) else {
        log::error(
            "zalo-oa: setting `app_id` or secret `oa_secret_key` is missing; refusing webhooks",
        );
        return Err(WebhookError::BadSignature);
    };
    let signed = mac_input(&app_id, &req.body, timestamp, &secret);
    if crypto::constant_time_eq(&crypto::sha256(&signed), &given) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// The bytes Zalo hashes for the webhook MAC: `app_id + raw body + timestamp + oa_secret_key`
/// (the timestamp exactly as it appears in the body).
fn mac_input(app_id: &str, body: &[u8], timestamp: &str, secret: &str) -> Vec<u8> {
    let mut signed = Vec::with_capacity(app_id.len() + body.len() + timestamp.len() + secret.len());
    signed.extend_from_slice(app_id.as_bytes());
    signed.extend_from_slice(body);
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(secret.as_bytes());
    signed
}

/// The inbound events in one verified Zalo webhook body; `oa_setting` is the `oa_id`
/// setting, if set.
fn parse_event(
    body: &Value,
    ts: i64,
    oa_setting: Option<String>,
) -> Result<Vec<InboundEvent>, WebhookError> {
    let name = json::str_at(body, "event_name")
        .ok_or_else(|| WebhookError::Malformed("missing event_name".into()))?;
    let field = |path: &str| json::text_at(body, path);
    let require = |path: &str| {
        field(path).ok_or_else(|| WebhookError::Malformed(format!("{name}: missing {path}")))
    };
    // The OA id, when known: the `oa_id` setting wins over the body's `oa_id`. Without it,
    // user events name the OA as `recipient.id`; statuses work it out in
    // `status_recipient`.
    let known_oa = oa_setting
        .or_else(|| field("oa_id"))
        .filter(|v| !v.is_empty());
    let oa_id = |oa_path: &str| known_oa.clone().or_else(|| field(oa_path));
    let zalo = |oa: Option<String>, user: String| Identity {
        kind: oa.map_or_else(|| "zalo".to_owned(), |oa| format!("zalo:{oa}")),
        value: user,
    };

    Ok(match name {
        "user_send_text" | "user_send_image" | "user_send_gif" | "user_send_sticker"
        | "user_send_file" | "user_send_location" | "user_send_link" => {
            let user = require("sender.id")?;
            let mut content = Vec::new();
            if let Some(text) = field("message.text").filter(|t| !t.is_empty()) {
                content.push(Content::Text(text));
            }
            if let Some(attachments) =
                json::path(body, "message.attachments").and_then(Value::as_array)
            {
                content.extend(attachments.iter().filter_map(attachment_content));
            }
            vec![InboundEvent::Message(InboundMessage {
                provider_message_id: field("message.msg_id")
                    .or_else(|| field("message.mid"))
                    .unwrap_or_else(|| format!("{name}:{user}:{ts}")),
                sender: zalo(oa_id("recipient.id"), user.clone()),
                conversation_id: user,
                content,
                postback: None,
                occurred_at: ts,
            })]
        }
        "follow" | "unfollow" => {
            let user = field("follower.id")
                .or_else(|| field("sender.id"))
                .ok_or_else(|| WebhookError::Malformed(format!("{name}: missing follower.id")))?;
            let who = zalo(oa_id("recipient.id"), user);
            vec![if name == "follow" {
                InboundEvent::Followed(who)
            } else {
                InboundEvent::Unfollowed(who)
            }]
        }
        "user_received_message" if is_zns_delivery(body) => {
            let msg_id = require("message.msg_id")?;
            vec![InboundEvent::Status(StatusUpdate {
                provider_event_id: format!("zns_received:{msg_id}"),
                message: MessageRef::Id(msg_id),
                recipient: status_recipient(body, known_oa.as_deref(), true),
                status: DeliveryStatus::Delivered,
                occurred_at: field("message.delivery_time")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(ts),
            })]
        }
        "user_received_message" | "user_seen_message" => {
            let ids: Vec<String> =
                match json::path(body, "message.msg_ids").and_then(Value::as_array) {
                    Some(ids) => ids
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    None => field("message.msg_id").into_iter().collect(),
                };
            if ids.is_empty() {
                return Err(WebhookError::Malformed(format!("{name}: no message ids")));
            }
            vec![InboundEvent::Status(StatusUpdate {
                provider_event_id: format!("{name}:{ts}:{}", ids.join(",")),
                message: MessageRef::Ids(ids),
                recipient: status_recipient(body, known_oa.as_deref(), false),
                status: if name == "user_seen_message" {
                    DeliveryStatus::Read
                } else {
                    DeliveryStatus::Delivered
                },
                occurred_at: ts,
            })]
        }
        "user_submit_info" => match field("info.phone").and_then(|p| e164(&p)) {
            Some(phone) => vec![InboundEvent::IdentityHint(IdentityLink {
                channel_identity: zalo(oa_id("recipient.id"), require("sender.id")?),
                linked: Identity {
                    kind: "phone".into(),
                    value: phone,
                },
            })],
            None => vec![],
        },
        _ => vec![],
    })
}

/// Whether a `user_received_message` body is a ZNS delivery: ZNS adds
/// `message.delivery_time` and echoes `message.tracking_id`; OA deliveries carry
/// `message.msg_ids` and neither.
fn is_zns_delivery(body: &Value) -> bool {
    ["message.delivery_time", "message.tracking_id"]
        .iter()
        .any(|p| json::path(body, p).is_some_and(|v| !v.is_null()))
}

/// The customer a status event is about, if the body says.
///
/// For ZNS, a Vietnamese phone number in `recipient.phone`, `message.phone`, `phone` or
/// `recipient.id` gives a `phone` identity (the address ZNS was sent to). Otherwise the
/// customer is the Zalo user on the other side from the OA, as `zalo:<oa>`: when the OA id
/// is known (`known_oa`: the `oa_id` setting or the body's `oa_id`) it is whichever of
/// `sender.id` / `recipient.id` is not the OA; when it is not known, `sender.id` for OA
/// statuses (Zalo names the user who received or saw the message as the event's sender)
/// and `recipient.id` for ZNS (the OA is the sender), the other id being the OA.
fn status_recipient(body: &Value, known_oa: Option<&str>, zns: bool) -> Option<Identity> {
    if zns {
        let phone = ["recipient.phone", "message.phone", "phone", "recipient.id"]
            .iter()
            .filter_map(|p| json::text_at(body, p))
            .find_map(|p| e164(&p));
        if let Some(phone) = phone {
            return Some(Identity {
                kind: "phone".into(),
                value: phone,
            });
        }
    }
    let id = |p: &str| json::text_at(body, p).filter(|v| !v.is_empty());
    let (first, second) = if zns {
        (id("recipient.id"), id("sender.id"))
    } else {
        (id("sender.id"), id("recipient.id"))
    };
    let (user, oa) = match known_oa {
        Some(oa) => {
            let user = [first, second]
                .into_iter()
                .flatten()
                .find(|v| v.as_str() != oa)?;
            (user, Some(oa.to_owned()))
        }
        None => (first?, second),
    };
    Some(Identity {
        kind: oa.map_or_else(|| "zalo".to_owned(), |oa| format!("zalo:{oa}")),
        value: user,
    })
}

/// Content for one Zalo attachment, if it is a kind Weft models.
fn attachment_content(att: &Value) -> Option<Content> {
    let url = json::str_at(att, "payload.url").map(str::to_owned);
    match json::str_at(att, "type")? {
        "image" | "gif" | "sticker" => Some(Content::Image(Media {
            url: url?,
            mime: None,
            caption: None,
            filename: None,
        })),
        "file" => Some(Content::File(Media {
            url: url?,
            mime: json::str_at(att, "payload.type").map(str::to_owned),
            caption: None,
            filename: json::str_at(att, "payload.name").map(str::to_owned),
        })),
        "location" => Some(Content::Location(Geo {
            latitude: json::text_at(att, "payload.coordinates.latitude")?
                .parse()
                .ok()?,
            longitude: json::text_at(att, "payload.coordinates.longitude")?
                .parse()
                .ok()?,
            address: None,
        })),
        "link" => url.map(Content::Text),
        _ => None,
    }
}

/// A Vietnamese phone number in E.164: `0912345678` and `84912345678` → `+84912345678`.
fn e164(phone: &str) -> Option<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let national = match digits.strip_prefix("84") {
        Some(rest) => rest,
        None => digits.strip_prefix('0')?,
    };
    (8..=10)
        .contains(&national.len())
        .then(|| format!("+84{national}"))
}

weft_guest::export_channel_adapter!(ZaloOa);

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn oa_rate_limit_honours_retry_after() {
        let mut r = response(429, "");
        assert_eq!(
            interpret_send_response(&r),
            Err(SendError::RateLimited(RATE_LIMIT_BACKOFF_MS))
        );
        r.headers.push(("Retry-After".into(), "7".into()));
        assert_eq!(
            interpret_send_response(&r),
            Err(SendError::RateLimited(7_000))
        );
    }

    #[test]
    fn maps_zalo_answers() {
        let ok = interpret_send_response(&response(
            200,
            r#"{"error":0,"message":"Success","data":{"message_id":"abc","user_id":"1","quota":{"remain":"7"}}}"#,
        ));
        assert_eq!(ok.unwrap(), ("abc".to_owned(), Some(7)));
        let err = |status, body| interpret_send_response(&response(status, body)).unwrap_err();
        assert_eq!(
            err(200, r#"{"error":-216,"message":"Access token is invalid"}"#),
            SendError::AuthExpired
        );
        assert!(matches!(
            err(200, r#"{"error":-213,"message":"x"}"#),
            SendError::RecipientUnreachable(_)
        ));
        assert!(matches!(
            err(200, r#"{"error":-201,"message":"x"}"#),
            SendError::RecipientInvalid(_)
        ));
        assert_eq!(
            err(200, r#"{"error":-32,"message":"x"}"#),
            SendError::RateLimited(60_000)
        );
        assert!(matches!(
            err(200, r#"{"error":-124,"message":"x"}"#),
            SendError::Permanent(_)
        ));
        assert!(matches!(err(502, "bad gateway"), SendError::Retryable(_)));
        assert!(matches!(err(200, "<html>"), SendError::Ambiguous(_)));
        assert!(matches!(err(400, "nope"), SendError::Permanent(_)));
    }

    #[test]
    fn formats_text_and_choices() {
        assert_eq!(
            zalo_message(&Content::Text("xin chào".into())).unwrap(),
            json!({"text": "xin chào"})
        );
        let m = zalo_message(&Content::Choices(weft_guest::types::Choices {
            prompt: "Chọn".into(),
            options: vec![weft_guest::types::Choice {
                label: "Có".into(),
                value: "yes".into(),
            }],
        }))
        .unwrap();
        assert_eq!(
            m["attachment"]["payload"]["buttons"][0],
            json!({"title": "Có", "type": "oa.query.hide", "payload": "yes"})
        );
        assert!(matches!(
            zalo_message(&Content::Template(weft_guest::types::TemplateRef {
                id: "t".into(),
                language: None,
                params: "{}".into()
            })),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn truncates_by_characters() {
        assert_eq!(truncate("đổi trả", 3), "đổi");
        assert_eq!(truncate("ab", 5), "ab");
    }

    #[test]
    fn normalises_vietnamese_phones() {
        assert_eq!(e164("0912345678").as_deref(), Some("+84912345678"));
        assert_eq!(e164("84912345678").as_deref(), Some("+84912345678"));
        assert_eq!(e164("+84 912 345 678").as_deref(), Some("+84912345678"));
        assert_eq!(e164("12345"), None);
    }

    /// A `TemplateRef` with `params` as given.
    fn template(id: &str, params: &str) -> TemplateRef {
        TemplateRef {
            id: id.into(),
            language: None,
            params: params.into(),
        }
    }

    /// A `phone` identity.
    fn phone(value: &str) -> Identity {
        Identity {
            kind: "phone".into(),
            value: value.into(),
        }
    }

    #[test]
    fn routes_each_channel() {
        assert_eq!(route(ChannelKind::ZaloOa), Ok(Route::Oa));
        assert_eq!(route(ChannelKind::ZaloZns), Ok(Route::Zns));
        for other in [
            ChannelKind::Messenger,
            ChannelKind::Whatsapp,
            ChannelKind::Sms,
            ChannelKind::Email,
            ChannelKind::Push,
            ChannelKind::WebChat,
            ChannelKind::Webhook,
        ] {
            assert_eq!(
                route(other),
                Err(SendError::Permanent(
                    "this adapter sends on zalo-oa and zalo-zns only".into()
                )),
                "{other:?}"
            );
        }
    }

    #[test]
    fn capabilities_add_zns_as_an_extra_channel() {
        let caps = ZaloOa::capabilities();
        assert_eq!(caps.channel, ChannelKind::ZaloOa);
        assert_eq!(caps.extra_channels, vec![ChannelKind::ZaloZns]);
        assert!(caps.content_kinds.iter().any(|k| k == "template"));
    }

    #[test]
    fn turns_phones_into_zns_digits() {
        assert_eq!(zns_phone(&phone("+84912345678")).unwrap(), "84912345678");
        assert_eq!(zns_phone(&phone("0912345678")).unwrap(), "84912345678");
        assert_eq!(zns_phone(&phone("84912345678")).unwrap(), "84912345678");
        assert_eq!(zns_phone(&phone("+84 912 345 678")).unwrap(), "84912345678");
        assert!(matches!(
            zns_phone(&phone("+14155550100")),
            Err(SendError::RecipientInvalid(_))
        ));
        assert!(matches!(
            zns_phone(&phone("")),
            Err(SendError::RecipientInvalid(_))
        ));
        assert!(matches!(
            zns_phone(&Identity {
                kind: "zalo:oa-1".into(),
                value: "84912345678".into()
            }),
            Err(SendError::RecipientInvalid(_))
        ));
    }

    #[test]
    fn picks_the_first_template() {
        let content = vec![
            Content::Text("fallback".into()),
            Content::Template(template("231241", r#"{"order":"A1"}"#)),
            Content::Template(template("999", "{}")),
        ];
        assert_eq!(first_template(&content).unwrap().id, "231241");
        assert_eq!(
            first_template(&[Content::Text("hi".into())]),
            Err(SendError::ContentRejected("ZNS needs a template".into()))
        );
        assert!(first_template(&[]).is_err());
    }

    #[test]
    fn builds_zns_bodies() {
        let t = template(
            "231241",
            r#"{"customer_name":"Lan","order_code":"A1","amount":250000}"#,
        );
        assert_eq!(
            zns_body("84912345678", &t, "trk-1", false).unwrap(),
            json!({
                "phone": "84912345678",
                "template_id": "231241",
                "template_data": {"customer_name": "Lan", "order_code": "A1", "amount": 250000},
                "tracking_id": "trk-1",
            })
        );
        let dev = zns_body("84912345678", &t, "trk-1", true).unwrap();
        assert_eq!(dev["mode"], "development");
        assert_eq!(
            zns_body("84912345678", &template("1", ""), "t", false).unwrap()["template_data"],
            json!({})
        );
        for bad in ["[1,2]", "\"x\"", "{not json"] {
            assert!(
                matches!(
                    zns_body("84912345678", &template("1", bad), "t", false),
                    Err(SendError::ContentRejected(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            zns_body("84912345678", &template(" ", "{}"), "t", false),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn reads_the_zns_mode() {
        assert_eq!(zns_development(None), Ok(false));
        assert_eq!(zns_development(Some("")), Ok(false));
        assert_eq!(zns_development(Some("production")), Ok(false));
        assert_eq!(zns_development(Some(" development ")), Ok(true));
        assert!(matches!(
            zns_development(Some("develop")),
            Err(SendError::Permanent(_))
        ));
    }

    #[test]
    fn maps_zns_answers() {
        let ok = interpret_zns_response(&response(
            200,
            r#"{"error":0,"message":"Success","data":{"msg_id":"a1b2","sent_time":"1700000000000","quota":{"dailyQuota":"500","remainingQuota":"499"}}}"#,
        ));
        assert_eq!(ok.unwrap(), ("a1b2".to_owned(), Some(499)));
        let numeric = interpret_zns_response(&response(
            200,
            r#"{"error":0,"data":{"msg_id":"a1b2","quota":{"remainingQuota":12}}}"#,
        ));
        assert_eq!(numeric.unwrap(), ("a1b2".to_owned(), Some(12)));
        let no_quota =
            interpret_zns_response(&response(200, r#"{"error":0,"data":{"msg_id":"x"}}"#));
        assert_eq!(no_quota.unwrap(), ("x".to_owned(), None));

        let err = |status, body: &str| interpret_zns_response(&response(status, body)).unwrap_err();
        let code = |c: i64| {
            interpret_zns_response(&response(200, &format!(r#"{{"error":{c},"message":"m"}}"#)))
                .unwrap_err()
        };
        assert_eq!(code(-124), SendError::AuthExpired);
        assert_eq!(code(-216), SendError::AuthExpired);
        assert_eq!(
            err(200, r#"{"error":"-124","message":"Access token invalid"}"#),
            SendError::AuthExpired
        );
        assert_eq!(code(-32), SendError::RateLimited(60_000));
        for c in [-115, -137, -144] {
            assert_eq!(code(c), SendError::QuotaExceeded, "{c}");
        }
        assert_eq!(
            code(-108),
            SendError::RecipientInvalid("zns -108: m".into())
        );
        for c in [-110, -114, -118, -119, -139] {
            assert!(matches!(code(c), SendError::RecipientUnreachable(_)), "{c}");
        }
        for c in [-109, -111, -112, -113, -116, -117] {
            assert!(matches!(code(c), SendError::ContentRejected(_)), "{c}");
        }
        assert!(matches!(code(-100), SendError::Retryable(_)));
        for c in [-101, -104, -105, -125, -999] {
            assert!(matches!(code(c), SendError::Permanent(_)), "{c}");
        }
        assert!(matches!(err(500, "oops"), SendError::Retryable(_)));
        assert!(matches!(
            err(503, r#"{"error":0}"#),
            SendError::Retryable(_)
        ));
        assert_eq!(err(429, ""), SendError::RateLimited(60_000));
        let mut limited = response(429, "");
        limited.headers = vec![("Retry-After".into(), "7".into())];
        assert_eq!(
            interpret_zns_response(&limited).unwrap_err(),
            SendError::RateLimited(7_000)
        );
        assert!(matches!(err(200, "<html>"), SendError::Ambiguous(_)));
        assert!(matches!(
            err(200, r#"{"error":0,"data":{}}"#),
            SendError::Ambiguous(_)
        ));
        assert!(matches!(
            err(200, r#"{"error":0,"data":{"msg_id":""}}"#),
            SendError::Ambiguous(_)
        ));
        assert!(matches!(err(404, "not found"), SendError::Permanent(_)));
    }

    #[test]
    fn reads_retry_after() {
        assert_eq!(retry_after_ms(Some("30")), 30_000);
        assert_eq!(retry_after_ms(Some(" 0 ")), 0);
        assert_eq!(
            retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            60_000
        );
        assert_eq!(retry_after_ms(None), 60_000);
        assert_eq!(retry_after_ms(Some("18446744073709551615")), u64::MAX);
    }

    #[test]
    fn mac_input_concatenates_in_zalos_order() {
        assert_eq!(
            mac_input("app", br#"{"a":1}"#, "1700000000000", "secret"),
            br#"app{"a":1}1700000000000secret"#.to_vec()
        );
    }

    /// The single status event of a parsed body.
    fn status_of(body: Value, oa: Option<&str>) -> StatusUpdate {
        let ts = 1_700_000_000_000;
        match parse_event(&body, ts, oa.map(str::to_owned))
            .unwrap()
            .as_slice()
        {
            [InboundEvent::Status(s)] => s.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_zns_deliveries() {
        let body = json!({
            "app_id": "app-1",
            "event_name": "user_received_message",
            "sender": {"id": "oa-1"},
            "recipient": {"id": "7401962345678901234"},
            "message": {
                "msg_id": "zns-msg-1",
                "tracking_id": "trk-1",
                "delivery_time": "1700000005000",
            },
            "timestamp": "1700000006000",
        });
        let s = status_of(body.clone(), None);
        assert_eq!(s.provider_event_id, "zns_received:zns-msg-1");
        assert_eq!(s.message, MessageRef::Id("zns-msg-1".into()));
        assert_eq!(s.status, DeliveryStatus::Delivered);
        assert_eq!(s.occurred_at, 1_700_000_005_000);
        assert_eq!(
            s.recipient,
            Some(Identity {
                kind: "zalo:oa-1".into(),
                value: "7401962345678901234".into()
            })
        );
        // The `oa_id` setting decides which side is the OA, whatever the layout.
        let mut swapped = body.clone();
        swapped["sender"]["id"] = json!("7401962345678901234");
        swapped["recipient"]["id"] = json!("oa-1");
        assert_eq!(
            status_of(swapped, Some("oa-1")).recipient,
            Some(Identity {
                kind: "zalo:oa-1".into(),
                value: "7401962345678901234".into()
            })
        );

        // A phone as the recipient gives the phone identity ZNS was sent to.
        let mut by_phone = body.clone();
        by_phone["recipient"]["id"] = json!("84912345678");
        assert_eq!(
            status_of(by_phone, None).recipient,
            Some(phone("+84912345678"))
        );
        let mut phone_field = body.clone();
        phone_field["recipient"] = json!({"phone": "0912345678"});
        assert_eq!(
            status_of(phone_field, None).recipient,
            Some(phone("+84912345678"))
        );

        // Only a tracking id marks it as ZNS; no delivery time falls back to the timestamp.
        let mut bare = body.clone();
        bare["message"] = json!({"msg_id": "zns-msg-2", "tracking_id": "trk-2"});
        bare.as_object_mut().unwrap().remove("recipient");
        let s = status_of(bare, None);
        assert_eq!(s.message, MessageRef::Id("zns-msg-2".into()));
        assert_eq!(s.occurred_at, 1_700_000_000_000);
        assert_eq!(s.recipient, None, "only the OA is known");

        let mut no_id = body;
        no_id["message"] = json!({"tracking_id": "trk-3", "delivery_time": "1"});
        assert!(matches!(
            parse_event(&no_id, 1, None),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn parses_oa_statuses_with_their_recipient() {
        let body = json!({
            "app_id": "app-1",
            "event_name": "user_seen_message",
            "sender": {"id": "user-9"},
            "recipient": {"id": "oa-1"},
            "message": {"msg_ids": ["m1", "m2"]},
            "timestamp": "1700000000000",
        });
        let s = status_of(body.clone(), None);
        assert_eq!(s.provider_event_id, "user_seen_message:1700000000000:m1,m2");
        assert_eq!(s.message, MessageRef::Ids(vec!["m1".into(), "m2".into()]));
        assert_eq!(s.status, DeliveryStatus::Read);
        let user9 = Some(Identity {
            kind: "zalo:oa-1".into(),
            value: "user-9".into(),
        });
        assert_eq!(s.recipient, user9);
        // With the OA known, the other side is the customer even if Zalo swaps them.
        let mut swapped = body.clone();
        swapped["event_name"] = json!("user_received_message");
        swapped["sender"]["id"] = json!("oa-1");
        swapped["recipient"]["id"] = json!("user-9");
        let s = status_of(swapped.clone(), Some("oa-1"));
        assert_eq!(s.status, DeliveryStatus::Delivered);
        assert_eq!(s.recipient, user9);
        // The body's own `oa_id` counts as known too.
        swapped["oa_id"] = json!("oa-1");
        assert_eq!(status_of(swapped, None).recipient, user9);
        // A single `msg_id` without ZNS markers stays an OA status.
        let mut single = body;
        single["event_name"] = json!("user_received_message");
        single["message"] = json!({"msg_id": "m3"});
        let s = status_of(single, None);
        assert_eq!(s.message, MessageRef::Ids(vec!["m3".into()]));
        assert_eq!(
            s.provider_event_id,
            "user_received_message:1700000000000:m3"
        );
    }

    #[test]
    fn parses_user_events() {
        let ts = 1_700_000_000_000;
        let text = json!({
            "event_name": "user_send_text",
            "sender": {"id": "user-9"},
            "recipient": {"id": "oa-1"},
            "message": {"msg_id": "m1", "text": "giờ mở cửa?"},
            "timestamp": "1700000000000",
        });
        let events = parse_event(&text, ts, None).unwrap();
        let [InboundEvent::Message(m)] = events.as_slice() else {
            panic!("not one message");
        };
        assert_eq!(m.provider_message_id, "m1");
        assert_eq!(m.sender.kind, "zalo:oa-1");
        assert_eq!(m.content, vec![Content::Text("giờ mở cửa?".into())]);
        let follow = json!({"event_name": "follow", "oa_id": "oa-1", "follower": {"id": "user-9"}, "timestamp": "1"});
        assert!(matches!(
            parse_event(&follow, ts, Some("oa-2".into())).unwrap().as_slice(),
            [InboundEvent::Followed(Identity { kind, value })] if kind == "zalo:oa-2" && value == "user-9"
        ));
        let other = json!({"event_name": "oa_send_text", "timestamp": "1"});
        assert!(parse_event(&other, ts, None).unwrap().is_empty());
        assert!(matches!(
            parse_event(&json!({"timestamp": "1"}), ts, None),
            Err(WebhookError::Malformed(_))
        ));
    }
}
