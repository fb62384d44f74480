//! Example channel adapter: Zalo Official Account.
//!
//! - `send` posts consultation messages to the OA API v3 (`/v3.0/oa/message/cs`) through
//!   the host's `outbound-http` and maps Zalo's answer to `send-ok`/`send-error`.
//! - `handle-webhook` verifies `X-ZEvent-Signature` with the host's `crypto` and turns
//!   Zalo events into inbound messages, follows, unfollows and delivery statuses.
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
use weft_guest::types::{ButtonAction, Card, ChannelKind, Content, Geo, Identity, Media};
use weft_guest::{clock, config, crypto, log, serde_json};

/// Default OA API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://openapi.zalo.me";
/// Default OAuth base URL (setting `oauth_base`).
const DEFAULT_OAUTH_BASE: &str = "https://oauth.zaloapp.com";
/// Consultation messages are allowed within 48 h of the user's last interaction.
const WINDOW_MS: u64 = clock::hours(48);
/// Longest text Zalo accepts in one consultation message.
const MAX_TEXT_LEN: u32 = 2000;
/// How long to back off after Zalo's rate-limit error (-32): one minute.
const RATE_LIMIT_BACKOFF_MS: u64 = clock::minutes(1);
/// Default accepted clock skew for webhook timestamps (setting `webhook_max_skew_ms`).
const DEFAULT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Timeout for each provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;

struct ZaloOa;

impl Guest for ZaloOa {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::ZaloOa,
            max_text_len: MAX_TEXT_LEN,
            max_buttons: 5,
            max_button_label: 35,
            content_kinds: ["text", "image", "card", "carousel", "choices", "raw"]
                .map(String::from)
                .to_vec(),
            window: Some(SessionWindow {
                duration_ms: WINDOW_MS,
                template_required_outside: true,
            }),
            status: StatusGranularity::PerMessage,
            max_send_per_sec: None,
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
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
        let token = config::get_secret("access_token")
            .filter(|t| !t.is_empty())
            .ok_or(SendError::AuthExpired)?;
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
            events: parse_event(&body, ts)?,
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

fn zalo_button(button: &weft_guest::types::Button) -> Value {
    let (kind, payload) = match &button.action {
        ButtonAction::Url(u) => ("oa.open.url", json!({"url": u})),
        ButtonAction::Postback(p) => ("oa.query.hide", Value::from(p.as_str())),
        ButtonAction::Say(s) => ("oa.query.show", Value::from(s.as_str())),
        ButtonAction::Phone(p) => ("oa.open.phone", json!({"phone_code": p})),
    };
    json!({"title": button.label, "type": kind, "payload": payload})
}

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
        return Err(SendError::RateLimited(RATE_LIMIT_BACKOFF_MS));
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
    let mut signed =
        Vec::with_capacity(app_id.len() + req.body.len() + timestamp.len() + secret.len());
    signed.extend_from_slice(app_id.as_bytes());
    signed.extend_from_slice(&req.body);
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(secret.as_bytes());
    if crypto::constant_time_eq(&crypto::sha256(&signed), &given) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// The inbound events in one verified Zalo webhook body.
fn parse_event(body: &Value, ts: i64) -> Result<Vec<InboundEvent>, WebhookError> {
    let name = json::str_at(body, "event_name")
        .ok_or_else(|| WebhookError::Malformed("missing event_name".into()))?;
    let field = |path: &str| json::text_at(body, path);
    let require = |path: &str| {
        field(path).ok_or_else(|| WebhookError::Malformed(format!("{name}: missing {path}")))
    };
    // For events from a user the OA is the recipient; for events about OA messages the OA
    // is the sender. The `oa_id` setting, when present, wins.
    let oa_id = |oa_path: &str| {
        config::get("oa_id")
            .filter(|v| !v.is_empty())
            .or_else(|| field("oa_id"))
            .or_else(|| field(oa_path))
    };
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
}
