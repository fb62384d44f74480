//! Channel adapter: Facebook Messenger Platform.
//!
//! - `send` posts one Send API request per message part to
//!   `{api_base}/{graph_version}/{page}/messages` through the host's `outbound-http`: as a
//!   `RESPONSE` inside the 24 h window, with a message tag outside it, and maps Graph API
//!   errors to `send-error`.
//! - `handle-webhook` answers the `hub.*` subscription handshake, verifies
//!   `X-Hub-Signature-256` with the host's `crypto`, and turns page events into inbound
//!   messages, postbacks, watermark delivery/read statuses and marketing opt-outs.
//! - `refresh-credentials` is not supported: page access tokens are long-lived and are
//!   replaced by the page admin, not refreshed.
//!
//! Config and secrets are listed in README.md.

use weft_guest::adapter::{
    ChannelCapabilities, DeliveryStatus, Guest, HttpRequest, HttpResponse, InboundEvent,
    InboundMessage, MessageRef, OptOut, OutboundMessage, PluginError, SendError, SendOk,
    SessionWindow, StatusGranularity, StatusUpdate, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Response};
use weft_guest::json::{self, json, Value};
use weft_guest::types::{
    Button, ButtonAction, Card, ChannelKind, Choices, Content, Geo, Identity, Media,
    MessageCategory,
};
use weft_guest::{clock, config, log, serde_json};

/// Default Graph API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://graph.facebook.com";
/// Default Graph API version (setting `graph_version`).
const DEFAULT_GRAPH_VERSION: &str = "v21.0";
/// Standard messaging is allowed within 24 h of the person's last message.
const WINDOW_MS: u64 = clock::hours(24);
/// The `HUMAN_AGENT` tag lets a human reply up to 7 days after the person's last message.
const HUMAN_AGENT_WINDOW_MS: u64 = clock::days(7);
/// Longest text the Send API accepts in one message.
const MAX_TEXT_LEN: usize = 2000;
/// Most buttons on a button or generic template element.
const MAX_BUTTONS: usize = 3;
/// Most quick replies on one message.
const MAX_QUICK_REPLIES: usize = 13;
/// Longest button or quick-reply title Messenger shows.
const MAX_LABEL_LEN: usize = 20;
/// Longest generic template title and subtitle.
const MAX_ELEMENT_TEXT_LEN: usize = 80;
/// Most elements in one generic template (carousel).
const MAX_ELEMENTS: usize = 10;
/// Longest postback or quick-reply payload.
const MAX_PAYLOAD_LEN: usize = 1000;
/// Longest `message.metadata` string (echoed back in message echoes).
const MAX_METADATA_LEN: usize = 1000;
/// Back-off after a throttling answer without `Retry-After`: Graph limits are computed
/// over rolling windows, so one minute lets the window move on.
const RATE_LIMIT_BACKOFF_MS: u64 = clock::minutes(1);
/// Timeout for each provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
/// Longest piece of a provider answer quoted in an error message.
const MAX_QUOTED_LEN: usize = 200;

/// The adapter: one Facebook Page per installation.
struct Messenger;

impl Guest for Messenger {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Messenger,
            max_text_len: MAX_TEXT_LEN as u32,
            max_buttons: MAX_BUTTONS as u8,
            max_button_label: MAX_LABEL_LEN as u8,
            content_kinds: ["text", "image", "card", "carousel", "choices"]
                .map(String::from)
                .to_vec(),
            window: Some(SessionWindow {
                duration_ms: WINDOW_MS,
                // Outside the window Messenger takes message tags, not templates.
                template_required_outside: false,
            }),
            status: StatusGranularity::Watermark,
            max_send_per_sec: None,
            extra_channels: vec![],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        let (address_page, psid) = psid_of(&msg.recipient.address)?;
        let configured_page = config::get("page_id").filter(|p| !p.is_empty());
        if let (Some(address_page), Some(configured)) = (address_page, configured_page.as_deref()) {
            if address_page != configured {
                return Err(SendError::RecipientInvalid(format!(
                    "PSID belongs to page {address_page}, this installation sends as page {configured}"
                )));
            }
        }
        let delivery = delivery_mode(
            clock::now(),
            msg.recipient.last_inbound_at,
            msg.tag.as_deref(),
            msg.category,
        )?;
        let messages = messenger_messages(&msg.content, &msg.tracking_id)?;
        if messages.is_empty() {
            return Err(SendError::ContentRejected("no content to send".into()));
        }
        let token = config::get_secret("access_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SendError::Permanent("secret `access_token` is not set".into()))?;
        let page = configured_page.as_deref().or(address_page).unwrap_or("me");
        let url = format!(
            "{}/{}/{}/messages",
            config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/'),
            config::get_or("graph_version", DEFAULT_GRAPH_VERSION).trim_matches('/'),
            page
        );

        // The Send API takes one message per request and has no idempotency key: send the
        // parts in order, and once a part went out, report any later failure as ambiguous
        // so the host reconciles instead of resending what was delivered.
        let total = messages.len();
        let mut ids: Vec<String> = Vec::with_capacity(total);
        for message in messages {
            let req = http::Request::new("POST", &url)
                .header("authorization", &format!("Bearer {token}"))
                .json(&send_body(psid, &delivery, message))
                .timeout_ms(REQUEST_TIMEOUT_MS);
            let outcome = http::send(&req)
                .map_err(SendError::from)
                .and_then(|resp| interpret_send_response(&resp));
            match outcome {
                Ok(id) => ids.push(id),
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
        if ids.len() > 1 {
            log::info!("messenger: sent {} parts: {}", ids.len(), ids.join(","));
        }
        let first = ids.into_iter().next().unwrap_or_default();
        Ok(SendOk {
            provider_message_id: first,
            accepted_at: clock::now(),
            quota_remaining: None,
        })
    }

    fn handle_webhook(req: HttpRequest) -> Result<WebhookResult, WebhookError> {
        if req.method.eq_ignore_ascii_case("GET") {
            return weft_guest::meta::verification_handshake(&req, "messenger");
        }
        weft_guest::meta::verify_signature(&req, "messenger")?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
        let only_page = config::get("page_id").filter(|p| !p.is_empty());
        Ok(WebhookResult {
            response: HttpResponse::text(200, "EVENT_RECEIVED"),
            events: parse_webhook(&body, only_page.as_deref(), req.received_at)?,
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        Err(PluginError::not_supported(
            "messenger: page access tokens are long-lived and cannot be refreshed by the \
             adapter; a page admin must issue a new token and update the `access_token` secret",
        ))
    }
}

/// The page id (if the identity names one) and the PSID of a `psid:<page_id>` (or plain
/// `psid`) identity.
fn psid_of(address: &Identity) -> Result<(Option<&str>, &str), SendError> {
    let page = match address.kind.as_str() {
        "psid" => None,
        kind => match kind.strip_prefix("psid:") {
            Some(page) if !page.is_empty() => Some(page),
            _ => {
                return Err(SendError::RecipientInvalid(format!(
                    "messenger needs a psid:<page_id> identity, got `{}`",
                    address.kind
                )))
            }
        },
    };
    let psid = address.value.trim();
    if psid.is_empty() {
        return Err(SendError::RecipientInvalid("empty page-scoped id".into()));
    }
    Ok((page, psid))
}

/// How one message goes out: the Send API `messaging_type` and the tag, if any.
#[derive(Debug, PartialEq)]
struct Delivery {
    /// `RESPONSE` or `MESSAGE_TAG`.
    messaging_type: &'static str,
    /// The message tag sent with `MESSAGE_TAG`.
    tag: Option<String>,
}

/// Chooses the `messaging_type` from the window and the tag.
///
/// Inside 24 h of the last inbound message: `RESPONSE`. Outside it: `MESSAGE_TAG` with the
/// message's tag, unless the message is marketing (tags may never carry promotions) or
/// the tag is `HUMAN_AGENT` and 7 days have passed; otherwise `outside-window`. When the
/// last inbound time is unknown, a usable tag is sent as `MESSAGE_TAG` and anything else
/// as `RESPONSE`, and Messenger decides (its window error maps to `outside-window`).
fn delivery_mode(
    now: i64,
    last_inbound: Option<i64>,
    tag: Option<&str>,
    category: MessageCategory,
) -> Result<Delivery, SendError> {
    let since_inbound = last_inbound.map(|last| now.saturating_sub(last));
    let response = Delivery {
        messaging_type: "RESPONSE",
        tag: None,
    };
    if since_inbound.is_some_and(|d| d <= WINDOW_MS as i64) {
        return Ok(response);
    }
    let tag = tag
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_uppercase)
        .filter(|_| category != MessageCategory::Marketing);
    match (tag, since_inbound) {
        (Some(tag), Some(d)) if tag == "HUMAN_AGENT" && d > HUMAN_AGENT_WINDOW_MS as i64 => {
            Err(SendError::OutsideWindow)
        }
        (Some(tag), _) => Ok(Delivery {
            messaging_type: "MESSAGE_TAG",
            tag: Some(tag),
        }),
        (None, None) => Ok(response),
        (None, Some(_)) => Err(SendError::OutsideWindow),
    }
}

/// The Send API request body for one message.
fn send_body(psid: &str, delivery: &Delivery, message: Value) -> Value {
    let mut body = json!({
        "recipient": {"id": psid},
        "messaging_type": delivery.messaging_type,
        "message": message,
    });
    if let Some(tag) = &delivery.tag {
        body["tag"] = Value::from(tag.as_str());
    }
    body
}

/// The Send API `message` objects for the content, in order, each carrying `tracking_id`
/// as `metadata`. Templates are skipped (Messenger has none in this sense; the host only
/// sends them to channels that list `template`).
fn messenger_messages(content: &[Content], tracking_id: &str) -> Result<Vec<Value>, SendError> {
    let mut out = Vec::new();
    for item in content {
        match item {
            Content::Text(text) => out.extend(text_messages(text)),
            Content::Image(media) => media_messages(&mut out, "image", media),
            Content::Video(media) => media_messages(&mut out, "video", media),
            Content::Audio(media) => media_messages(&mut out, "audio", media),
            Content::File(media) => media_messages(&mut out, "file", media),
            Content::Location(geo) => out.extend(text_messages(&location_text(geo))),
            Content::Card(card) => out.push(generic_template(std::slice::from_ref(card))),
            Content::Carousel(cards) => {
                out.extend(cards.chunks(MAX_ELEMENTS).map(generic_template));
            }
            Content::Choices(choices) => out.extend(choices_messages(choices)),
            Content::Template(_) => {}
            Content::Raw(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => out.push(v),
                Ok(_) => {
                    return Err(SendError::ContentRejected(
                        "raw content must be a Send API `message` object".into(),
                    ))
                }
                Err(e) => {
                    return Err(SendError::ContentRejected(format!(
                        "raw content is not JSON: {e}"
                    )))
                }
            },
        }
    }
    if !tracking_id.is_empty() {
        let metadata = truncate(tracking_id, MAX_METADATA_LEN);
        for message in &mut out {
            if let Some(obj) = message.as_object_mut() {
                obj.entry("metadata")
                    .or_insert_with(|| Value::from(metadata));
            }
        }
    }
    Ok(out)
}

/// `{"text"}` messages for `text`, split into pieces Messenger accepts.
fn text_messages(text: &str) -> Vec<Value> {
    split_text(text, MAX_TEXT_LEN)
        .into_iter()
        .map(|part| json!({ "text": part }))
        .collect()
}

/// An attachment message for `media`, then its caption as text (attachments have none).
fn media_messages(out: &mut Vec<Value>, kind: &str, media: &Media) {
    out.push(json!({"attachment": {"type": kind, "payload": {"url": media.url}}}));
    if let Some(caption) = media.caption.as_deref().filter(|c| !c.trim().is_empty()) {
        out.extend(text_messages(caption));
    }
}

/// A location as text: the address, then a map link (Messenger cannot send a pin).
fn location_text(geo: &Geo) -> String {
    let link = format!(
        "https://maps.google.com/?q={},{}",
        geo.latitude, geo.longitude
    );
    match geo.address.as_deref().filter(|a| !a.is_empty()) {
        Some(address) => format!("{address}\n{link}"),
        None => link,
    }
}

/// A generic template with one element per card (at most [`MAX_ELEMENTS`]).
fn generic_template(cards: &[Card]) -> Value {
    let elements: Vec<Value> = cards.iter().take(MAX_ELEMENTS).map(element).collect();
    json!({"attachment": {"type": "template", "payload": {
        "template_type": "generic",
        "elements": elements,
    }}})
}

/// One generic template element: title, subtitle, image, the first URL button as the
/// tap action, and up to three buttons.
fn element(card: &Card) -> Value {
    let mut e = json!({ "title": truncate(&card.title, MAX_ELEMENT_TEXT_LEN) });
    if let Some(s) = card.subtitle.as_deref().filter(|s| !s.is_empty()) {
        e["subtitle"] = Value::from(truncate(s, MAX_ELEMENT_TEXT_LEN));
    }
    if let Some(u) = card.image_url.as_deref().filter(|u| !u.is_empty()) {
        e["image_url"] = Value::from(u);
    }
    if let Some(url) = card.buttons.iter().find_map(|b| match &b.action {
        ButtonAction::Url(u) => Some(u),
        _ => None,
    }) {
        e["default_action"] = json!({"type": "web_url", "url": url});
    }
    if !card.buttons.is_empty() {
        e["buttons"] = card
            .buttons
            .iter()
            .take(MAX_BUTTONS)
            .map(button)
            .collect::<Vec<_>>()
            .into();
    }
    e
}

/// A template button: URL → `web_url`, postback → `postback`, phone → `phone_number`;
/// "say" becomes a postback whose payload is the text (Messenger has no say button).
fn button(b: &Button) -> Value {
    let title = truncate(&b.label, MAX_LABEL_LEN);
    match &b.action {
        ButtonAction::Url(u) => json!({"type": "web_url", "url": u, "title": title}),
        ButtonAction::Postback(p) | ButtonAction::Say(p) => json!({
            "type": "postback",
            "title": title,
            "payload": truncate(p, MAX_PAYLOAD_LEN),
        }),
        ButtonAction::Phone(p) => json!({"type": "phone_number", "title": title, "payload": p}),
    }
}

/// Choices as quick replies (up to [`MAX_QUICK_REPLIES`]); more choices than that become a
/// numbered text list the customer answers by typing.
fn choices_messages(choices: &Choices) -> Vec<Value> {
    let options = &choices.options;
    if options.is_empty() {
        return text_messages(&choices.prompt);
    }
    if options.len() > MAX_QUICK_REPLIES {
        return text_messages(&numbered_list(choices));
    }
    // Quick replies attach to one text message: the prompt, or the list if there is none.
    let prompt = if choices.prompt.trim().is_empty() {
        numbered_list(choices)
    } else {
        choices.prompt.clone()
    };
    let mut parts = text_messages(&prompt);
    let quick_replies: Vec<Value> = options
        .iter()
        .map(|o| {
            json!({
                "content_type": "text",
                "title": truncate(&o.label, MAX_LABEL_LEN),
                "payload": truncate(&o.value, MAX_PAYLOAD_LEN),
            })
        })
        .collect();
    if let Some(last) = parts.last_mut() {
        last["quick_replies"] = quick_replies.into();
    }
    parts
}

/// The prompt followed by `1. label` lines.
fn numbered_list(choices: &Choices) -> String {
    let mut text = choices.prompt.trim().to_owned();
    for (i, option) in choices.options.iter().enumerate() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{}. {}", i + 1, option.label));
    }
    text
}

/// `text` in pieces of at most `max` characters, broken after whitespace where there is
/// some in the second half of a piece. Blank text gives no pieces.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max) else {
            parts.push(rest);
            break;
        };
        let head = &rest[..cut];
        let at_break = rest[cut..].starts_with(char::is_whitespace);
        let end = match head.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
            _ if at_break => cut,
            Some((i, c)) if i >= head.len() / 2 => i + c.len_utf8(),
            _ => cut,
        };
        let part = rest[..end].trim_end();
        if !part.is_empty() {
            parts.push(part);
        }
        rest = rest[end..].trim_start();
    }
    parts
}

/// At most `max` characters of `text`.
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A Graph API error object: `{"error": {"code", "error_subcode", "message", "is_transient"}}`.
#[derive(Debug, PartialEq)]
struct GraphError {
    /// `error.code`.
    code: i64,
    /// `error.error_subcode`, if any.
    subcode: Option<i64>,
    /// `error.message`.
    message: String,
    /// `error.is_transient`.
    transient: bool,
}

/// The Graph error in an answer body, if it has one.
fn graph_error(body: &Value) -> Option<GraphError> {
    let error = body.get("error")?;
    let number = |key: &str| json::text_at(error, key).and_then(|v| v.trim().parse::<i64>().ok());
    Some(GraphError {
        code: number("code")?,
        subcode: number("error_subcode"),
        message: json::text_at(error, "message").unwrap_or_default(),
        transient: error.get("is_transient").and_then(Value::as_bool) == Some(true),
    })
}

/// `Retry-After` in milliseconds, when the answer has it in seconds.
fn retry_after_ms(resp: &Response) -> Option<u64> {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// Maps the Send API's answer to one request: the message id, or why not.
fn interpret_send_response(resp: &Response) -> Result<String, SendError> {
    let body: Option<Value> = resp.json().ok();
    let error = body.as_ref().and_then(graph_error);
    if resp.is_success() && error.is_none() {
        return body
            .as_ref()
            .and_then(|b| json::text_at(b, "message_id"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                SendError::Ambiguous(format!(
                    "messenger http {} without a message_id",
                    resp.status
                ))
            });
    }
    let backoff = retry_after_ms(resp).unwrap_or(RATE_LIMIT_BACKOFF_MS);
    if resp.status == 429 {
        return Err(SendError::RateLimited(backoff));
    }
    match error {
        Some(error) => Err(map_graph_error(&error, resp.status, backoff)),
        None if resp.status >= 500 => Err(SendError::Retryable(format!(
            "messenger http {}",
            resp.status
        ))),
        None => Err(SendError::Permanent(format!(
            "messenger http {}: {}",
            resp.status,
            truncate(&resp.text(), MAX_QUOTED_LEN)
        ))),
    }
}

/// Maps a Graph error to a send error (see the table in README.md).
fn map_graph_error(error: &GraphError, status: u16, backoff_ms: u64) -> SendError {
    let what = match error.subcode {
        Some(sub) => format!("messenger {}/{sub}: {}", error.code, error.message),
        None => format!("messenger {}: {}", error.code, error.message),
    };
    let message = error.message.to_ascii_lowercase();
    match (error.code, error.subcode) {
        (190, _) => SendError::AuthExpired,
        (4 | 32 | 613, _) => SendError::RateLimited(backoff_ms),
        (10, Some(2018278 | 2018065)) => SendError::OutsideWindow,
        (551, _) | (_, Some(2018108)) => SendError::RecipientUnreachable(what),
        (100, Some(2018001)) => SendError::RecipientInvalid(what),
        (100, _) if message.contains("recipient") || message.contains("no matching user") => {
            SendError::RecipientInvalid(what)
        }
        (1 | 2 | 1200, _) => SendError::Retryable(what),
        _ if status >= 500 || error.transient => SendError::Retryable(what),
        _ => SendError::Permanent(what),
    }
}

/// The events in one verified webhook body. Entries of pages other than `only_page` (when
/// set) and bodies for other objects (`instagram`, …) give no events; messaging items
/// without a sender are skipped rather than failing the whole batch.
fn parse_webhook(
    body: &Value,
    only_page: Option<&str>,
    received_at: i64,
) -> Result<Vec<InboundEvent>, WebhookError> {
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("missing entry list".into()))?;
    if json::str_at(body, "object") != Some("page") {
        return Ok(vec![]);
    }
    let mut events = Vec::new();
    for entry in entries {
        let page = json::text_at(entry, "id");
        if let (Some(only), Some(page)) = (only_page, page.as_deref()) {
            if only != page {
                continue;
            }
        }
        let entry_time = json::text_at(entry, "time").and_then(|t| t.parse().ok());
        let Some(items) = entry.get("messaging").and_then(Value::as_array) else {
            continue;
        };
        for item in items {
            let page = page
                .clone()
                .or_else(|| json::text_at(item, "recipient.id"))
                .or_else(|| only_page.map(str::to_owned));
            let ts = json::text_at(item, "timestamp")
                .and_then(|t| t.parse().ok())
                .or(entry_time)
                .unwrap_or(received_at);
            events.extend(messaging_event(item, page.as_deref(), ts));
        }
    }
    Ok(events)
}

/// The events for one `messaging` item (at most two).
fn messaging_event(item: &Value, page: Option<&str>, ts: i64) -> Vec<InboundEvent> {
    let Some(psid) = json::text_at(item, "sender.id").filter(|s| !s.is_empty()) else {
        return vec![];
    };
    let who = Identity {
        kind: page.map_or_else(|| "psid".to_owned(), |p| format!("psid:{p}")),
        value: psid.clone(),
    };
    if let Some(message) = item.get("message") {
        if message.get("is_echo").and_then(Value::as_bool) == Some(true) {
            return vec![];
        }
        let mut content = Vec::new();
        if let Some(text) = json::str_at(message, "text").filter(|t| !t.is_empty()) {
            content.push(Content::Text(text.to_owned()));
        }
        if let Some(attachments) = message.get("attachments").and_then(Value::as_array) {
            content.extend(attachments.iter().filter_map(attachment_content));
        }
        return vec![InboundEvent::Message(InboundMessage {
            provider_message_id: json::text_at(message, "mid")
                .unwrap_or_else(|| format!("message:{psid}:{ts}")),
            sender: who,
            conversation_id: psid,
            content,
            postback: json::text_at(message, "quick_reply.payload"),
            occurred_at: ts,
        })];
    }
    if let Some(postback) = item.get("postback") {
        return vec![InboundEvent::Message(InboundMessage {
            provider_message_id: json::text_at(postback, "mid")
                .unwrap_or_else(|| format!("postback:{psid}:{ts}")),
            sender: who,
            conversation_id: psid,
            content: json::text_at(postback, "title")
                .filter(|t| !t.is_empty())
                .map(Content::Text)
                .into_iter()
                .collect(),
            postback: json::text_at(postback, "payload"),
            occurred_at: ts,
        })];
    }
    for (key, status) in [
        ("delivery", DeliveryStatus::Delivered),
        ("read", DeliveryStatus::Read),
    ] {
        if let Some(report) = item.get(key) {
            return watermark_status(key, report, status, &psid, who, ts)
                .into_iter()
                .collect();
        }
    }
    if let Some(optin) = item.get("optin") {
        if json::str_at(optin, "type") == Some("notification_messages") {
            // Marketing messages opt-in: only "stop notifications" is news for Weft.
            let status = json::str_at(optin, "notification_messages_status")
                .unwrap_or_default()
                .replace(' ', "_")
                .to_ascii_uppercase();
            return if status == "STOP_NOTIFICATIONS" {
                vec![InboundEvent::OptedOut(OptOut {
                    who,
                    scope: "marketing".into(),
                })]
            } else {
                vec![]
            };
        }
        // Send to Messenger plugin or an accepted message request: the person opened the
        // conversation with the page.
        return vec![InboundEvent::Followed(who)];
    }
    vec![]
}

/// A delivery or read report: everything sent to `psid` before `watermark`, or (a delivery
/// without a watermark) the listed message ids.
fn watermark_status(
    key: &str,
    report: &Value,
    status: DeliveryStatus,
    psid: &str,
    who: Identity,
    ts: i64,
) -> Option<InboundEvent> {
    let (provider_event_id, message) =
        match json::text_at(report, "watermark").and_then(|w| w.parse::<i64>().ok()) {
            Some(watermark) => (
                format!("{key}:{psid}:{watermark}"),
                MessageRef::Watermark(watermark),
            ),
            None => {
                let mids: Vec<String> = report
                    .get("mids")
                    .and_then(Value::as_array)?
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect();
                if mids.is_empty() {
                    return None;
                }
                (
                    format!("{key}:{psid}:{}", mids.join(",")),
                    MessageRef::Ids(mids),
                )
            }
        };
    Some(InboundEvent::Status(StatusUpdate {
        provider_event_id,
        message,
        recipient: Some(who),
        status,
        occurred_at: ts,
    }))
}

/// Content for one inbound attachment, if it is a kind Weft models.
fn attachment_content(att: &Value) -> Option<Content> {
    let url = json::str_at(att, "payload.url").map(str::to_owned);
    let media = |url: String| Media {
        url,
        mime: None,
        caption: None,
        filename: None,
    };
    match json::str_at(att, "type")? {
        "image" => Some(Content::Image(media(url?))),
        "video" => Some(Content::Video(media(url?))),
        "audio" => Some(Content::Audio(media(url?))),
        "file" => Some(Content::File(media(url?))),
        "location" => Some(Content::Location(Geo {
            latitude: json::text_at(att, "payload.coordinates.lat")?
                .parse()
                .ok()?,
            longitude: json::text_at(att, "payload.coordinates.long")?
                .parse()
                .ok()?,
            address: json::text_at(att, "title"),
        })),
        _ => url.map(Content::Text),
    }
}

weft_guest::export_channel_adapter!(Messenger);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::types::Choice;

    const NOW: i64 = 1_700_000_000_000;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn error_body(code: i64, subcode: Option<i64>, message: &str) -> String {
        let mut error = json!({"message": message, "type": "OAuthException", "code": code});
        if let Some(sub) = subcode {
            error["error_subcode"] = sub.into();
        }
        json!({ "error": error }).to_string()
    }

    fn err(status: u16, body: &str) -> SendError {
        interpret_send_response(&response(status, body)).unwrap_err()
    }

    #[test]
    fn accepts_message_ids() {
        let ok = interpret_send_response(&response(
            200,
            r#"{"recipient_id":"1254477777772919","message_id":"m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM"}"#,
        ));
        assert_eq!(ok.unwrap(), "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM");
        assert!(matches!(err(200, "{}"), SendError::Ambiguous(_)));
        assert!(matches!(err(200, "<html>"), SendError::Ambiguous(_)));
    }

    #[test]
    fn maps_graph_errors() {
        assert_eq!(
            err(400, &error_body(190, Some(463), "Session has expired")),
            SendError::AuthExpired
        );
        for code in [4, 32, 613] {
            assert_eq!(
                err(400, &error_body(code, None, "too many")),
                SendError::RateLimited(60_000),
                "code {code}"
            );
        }
        for sub in [2018278, 2018065] {
            assert_eq!(
                err(400, &error_body(10, Some(sub), "outside of allowed window")),
                SendError::OutsideWindow
            );
        }
        assert!(matches!(
            err(400, &error_body(10, None, "permission")),
            SendError::Permanent(_)
        ));
        assert!(matches!(
            err(
                400,
                &error_body(551, Some(1545041), "This person isn't available")
            ),
            SendError::RecipientUnreachable(_)
        ));
        assert!(matches!(
            err(
                400,
                &error_body(200, Some(2018108), "not receiving messages")
            ),
            SendError::RecipientUnreachable(_)
        ));
        assert!(matches!(
            err(
                400,
                &error_body(100, Some(2018001), "No matching user found")
            ),
            SendError::RecipientInvalid(_)
        ));
        assert!(matches!(
            err(400, &error_body(100, None, "Invalid recipient id")),
            SendError::RecipientInvalid(_)
        ));
        assert!(matches!(
            err(400, &error_body(100, None, "Invalid parameter")),
            SendError::Permanent(_)
        ));
        assert!(matches!(
            err(
                500,
                &error_body(1200, None, "Temporary send message failure")
            ),
            SendError::Retryable(_)
        ));
        assert!(matches!(
            err(400, &error_body(2, None, "unexpected")),
            SendError::Retryable(_)
        ));
        assert!(matches!(
            err(500, &error_body(12345, None, "odd")),
            SendError::Retryable(_)
        ));
        assert!(matches!(err(503, "unavailable"), SendError::Retryable(_)));
        assert!(matches!(err(403, "nope"), SendError::Permanent(_)));
    }

    #[test]
    fn honours_retry_after() {
        let mut resp = response(429, "");
        assert_eq!(
            interpret_send_response(&resp).unwrap_err(),
            SendError::RateLimited(60_000)
        );
        resp.headers.push(("Retry-After".into(), "7".into()));
        assert_eq!(
            interpret_send_response(&resp).unwrap_err(),
            SendError::RateLimited(7_000)
        );
        resp.status = 400;
        resp.body =
            error_body(613, None, "Calls to this API have exceeded the rate limit").into_bytes();
        assert_eq!(
            interpret_send_response(&resp).unwrap_err(),
            SendError::RateLimited(7_000)
        );
    }

    #[test]
    fn chooses_messaging_type() {
        use MessageCategory::*;
        let hour = clock::hours(1) as i64;
        let response = |r: Result<Delivery, SendError>| r.map(|d| (d.messaging_type, d.tag));
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - hour),
                Some("ACCOUNT_UPDATE"),
                Service
            )),
            Ok(("RESPONSE", None))
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - 25 * hour),
                Some("account_update"),
                Service
            )),
            Ok(("MESSAGE_TAG", Some("ACCOUNT_UPDATE".into())))
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - 25 * hour),
                None,
                Transactional
            )),
            Err(SendError::OutsideWindow)
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - 25 * hour),
                Some("POST_PURCHASE_UPDATE"),
                Marketing
            )),
            Err(SendError::OutsideWindow)
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - 6 * 24 * hour),
                Some("HUMAN_AGENT"),
                Service
            )),
            Ok(("MESSAGE_TAG", Some("HUMAN_AGENT".into())))
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                Some(NOW - 8 * 24 * hour),
                Some("HUMAN_AGENT"),
                Service
            )),
            Err(SendError::OutsideWindow)
        );
        assert_eq!(
            response(delivery_mode(NOW, None, None, Marketing)),
            Ok(("RESPONSE", None))
        );
        assert_eq!(
            response(delivery_mode(
                NOW,
                None,
                Some("CONFIRMED_EVENT_UPDATE"),
                Service
            )),
            Ok(("MESSAGE_TAG", Some("CONFIRMED_EVENT_UPDATE".into())))
        );
    }

    #[test]
    fn builds_the_request_body() {
        let delivery = Delivery {
            messaging_type: "MESSAGE_TAG",
            tag: Some("ACCOUNT_UPDATE".into()),
        };
        assert_eq!(
            send_body("123", &delivery, json!({"text": "hi"})),
            json!({
                "recipient": {"id": "123"},
                "messaging_type": "MESSAGE_TAG",
                "message": {"text": "hi"},
                "tag": "ACCOUNT_UPDATE",
            })
        );
    }

    #[test]
    fn reads_psid_identities() {
        let id = |kind: &str, value: &str| Identity {
            kind: kind.into(),
            value: value.into(),
        };
        assert_eq!(psid_of(&id("psid:42", "123")).unwrap(), (Some("42"), "123"));
        assert_eq!(psid_of(&id("psid", "123")).unwrap(), (None, "123"));
        for (kind, value) in [("phone", "+84912345678"), ("psid:", "1"), ("psid:42", " ")] {
            assert!(
                matches!(
                    psid_of(&id(kind, value)),
                    Err(SendError::RecipientInvalid(_))
                ),
                "{kind} {value}"
            );
        }
    }

    #[test]
    fn formats_content() {
        let media = |url: &str, caption: Option<&str>| Media {
            url: url.into(),
            mime: None,
            caption: caption.map(Into::into),
            filename: None,
        };
        let out = messenger_messages(
            &[
                Content::Text("hello".into()),
                Content::Image(media("https://x/a.png", Some("look"))),
                Content::File(media("https://x/a.pdf", None)),
                Content::Location(Geo {
                    latitude: 10.5,
                    longitude: 106.25,
                    address: Some("Q1".into()),
                }),
                Content::Template(weft_guest::types::TemplateRef {
                    id: "t".into(),
                    language: None,
                    params: "{}".into(),
                }),
                Content::Raw(r#"{"text":"raw","metadata":"mine"}"#.into()),
            ],
            "trk-1",
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                json!({"text": "hello", "metadata": "trk-1"}),
                json!({"attachment": {"type": "image", "payload": {"url": "https://x/a.png"}}, "metadata": "trk-1"}),
                json!({"text": "look", "metadata": "trk-1"}),
                json!({"attachment": {"type": "file", "payload": {"url": "https://x/a.pdf"}}, "metadata": "trk-1"}),
                json!({"text": "Q1\nhttps://maps.google.com/?q=10.5,106.25", "metadata": "trk-1"}),
                json!({"text": "raw", "metadata": "mine"}),
            ]
        );
        assert!(matches!(
            messenger_messages(&[Content::Raw("[1]".into())], ""),
            Err(SendError::ContentRejected(_))
        ));
        assert!(matches!(
            messenger_messages(&[Content::Raw("nope".into())], ""),
            Err(SendError::ContentRejected(_))
        ));
        assert_eq!(
            messenger_messages(&[Content::Text("  ".into())], "t").unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn formats_cards_as_generic_templates() {
        let card = |title: &str| Card {
            title: title.into(),
            subtitle: Some("Giao trong 2 giờ".into()),
            image_url: Some("https://x/p.jpg".into()),
            buttons: vec![
                Button {
                    label: "Xem chi tiết sản phẩm ngay bây giờ".into(),
                    action: ButtonAction::Url("https://shop/p/1".into()),
                },
                Button {
                    label: "Mua".into(),
                    action: ButtonAction::Postback("BUY_1".into()),
                },
                Button {
                    label: "Gọi".into(),
                    action: ButtonAction::Phone("+84912345678".into()),
                },
                Button {
                    label: "Hỏi".into(),
                    action: ButtonAction::Say("còn hàng không?".into()),
                },
            ],
        };
        let out = messenger_messages(&[Content::Card(card("Áo dài"))], "").unwrap();
        assert_eq!(
            out,
            vec![json!({"attachment": {"type": "template", "payload": {
                "template_type": "generic",
                "elements": [{
                    "title": "Áo dài",
                    "subtitle": "Giao trong 2 giờ",
                    "image_url": "https://x/p.jpg",
                    "default_action": {"type": "web_url", "url": "https://shop/p/1"},
                    "buttons": [
                        {"type": "web_url", "url": "https://shop/p/1", "title": "Xem chi tiết sản phẩ"},
                        {"type": "postback", "title": "Mua", "payload": "BUY_1"},
                        {"type": "phone_number", "title": "Gọi", "payload": "+84912345678"},
                    ],
                }],
            }}})]
        );
        assert_eq!(
            button(&Button {
                label: "Hỏi".into(),
                action: ButtonAction::Say("còn hàng không?".into())
            }),
            json!({"type": "postback", "title": "Hỏi", "payload": "còn hàng không?"})
        );
        let cards: Vec<Card> = (0..12).map(|i| card(&format!("p{i}"))).collect();
        let out = messenger_messages(&[Content::Carousel(cards)], "").unwrap();
        assert_eq!(out.len(), 2, "12 cards → templates of 10 and 2");
        assert_eq!(
            out[0]["attachment"]["payload"]["elements"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            out[1]["attachment"]["payload"]["elements"][1]["title"],
            "p11"
        );
    }

    #[test]
    fn formats_choices_as_quick_replies_or_a_list() {
        let choices = |n: usize, prompt: &str| Choices {
            prompt: prompt.into(),
            options: (1..=n)
                .map(|i| Choice {
                    label: format!("Lựa chọn số {i} rất dài ở đây"),
                    value: format!("v{i}"),
                })
                .collect(),
        };
        let out = messenger_messages(&[Content::Choices(choices(2, "Chọn"))], "").unwrap();
        assert_eq!(
            out,
            vec![json!({"text": "Chọn", "quick_replies": [
                {"content_type": "text", "title": "Lựa chọn số 1 rất dà", "payload": "v1"},
                {"content_type": "text", "title": "Lựa chọn số 2 rất dà", "payload": "v2"},
            ]})]
        );
        let out = messenger_messages(&[Content::Choices(choices(13, "Chọn"))], "").unwrap();
        assert_eq!(out[0]["quick_replies"].as_array().unwrap().len(), 13);
        let out = messenger_messages(&[Content::Choices(choices(14, "Chọn"))], "").unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].get("quick_replies").is_none());
        let text = out[0]["text"].as_str().unwrap();
        assert!(text.starts_with("Chọn\n1. Lựa chọn số 1"));
        assert!(text.ends_with("\n14. Lựa chọn số 14 rất dài ở đây"));
        let out = messenger_messages(&[Content::Choices(choices(2, ""))], "").unwrap();
        assert!(out[0]["text"].as_str().unwrap().starts_with("1. "));
        assert_eq!(out[0]["quick_replies"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn splits_long_text() {
        assert_eq!(split_text("ab", 5), vec!["ab"]);
        assert_eq!(split_text("đổi trả hàng", 7), vec!["đổi trả", "hàng"]);
        assert_eq!(split_text("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        let long = "từ ".repeat(1000);
        let parts = split_text(&long, MAX_TEXT_LEN);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_TEXT_LEN));
        assert_eq!(parts.concat().replace(' ', ""), long.replace(' ', ""));
        assert!(split_text("   ", 5).is_empty());
        assert_eq!(truncate("đổi trả", 3), "đổi");
    }

    fn webhook(items: Value) -> Value {
        json!({"object": "page", "entry": [{"id": "PAGE", "time": NOW, "messaging": items}]})
    }

    fn psid(value: &str) -> Identity {
        Identity {
            kind: "psid:PAGE".into(),
            value: value.into(),
        }
    }

    #[test]
    fn parses_messages_and_postbacks() {
        let body = webhook(json!([
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 1,
             "message": {"mid": "m_1", "text": "giờ mở cửa?",
                         "quick_reply": {"payload": "HOURS"},
                         "attachments": [
                            {"type": "image", "payload": {"url": "https://cdn/x.jpg"}},
                            {"type": "location", "title": "Shop", "payload": {"coordinates": {"lat": 10.7, "long": 106.6}}},
                            {"type": "fallback", "payload": {"url": "https://example.com"}},
                            {"type": "template", "payload": {}}]}},
            {"sender": {"id": "PAGE"}, "recipient": {"id": "111"}, "timestamp": NOW + 2,
             "message": {"mid": "m_echo", "is_echo": true, "text": "hello"}},
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 3,
             "postback": {"mid": "m_2", "title": "Mua", "payload": "BUY_1"}},
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 4,
             "postback": {"title": "Get Started", "payload": "START"}},
            {"recipient": {"id": "PAGE"}, "timestamp": NOW + 5, "message": {"mid": "m_3"}},
        ]));
        let events = parse_webhook(&body, None, 0).unwrap();
        assert_eq!(
            events,
            vec![
                InboundEvent::Message(InboundMessage {
                    provider_message_id: "m_1".into(),
                    sender: psid("111"),
                    conversation_id: "111".into(),
                    content: vec![
                        Content::Text("giờ mở cửa?".into()),
                        Content::Image(Media {
                            url: "https://cdn/x.jpg".into(),
                            mime: None,
                            caption: None,
                            filename: None
                        }),
                        Content::Location(Geo {
                            latitude: 10.7,
                            longitude: 106.6,
                            address: Some("Shop".into())
                        }),
                        Content::Text("https://example.com".into()),
                    ],
                    postback: Some("HOURS".into()),
                    occurred_at: NOW + 1,
                }),
                InboundEvent::Message(InboundMessage {
                    provider_message_id: "m_2".into(),
                    sender: psid("111"),
                    conversation_id: "111".into(),
                    content: vec![Content::Text("Mua".into())],
                    postback: Some("BUY_1".into()),
                    occurred_at: NOW + 3,
                }),
                InboundEvent::Message(InboundMessage {
                    provider_message_id: format!("postback:111:{}", NOW + 4),
                    sender: psid("111"),
                    conversation_id: "111".into(),
                    content: vec![Content::Text("Get Started".into())],
                    postback: Some("START".into()),
                    occurred_at: NOW + 4,
                }),
            ]
        );
    }

    #[test]
    fn parses_watermark_statuses() {
        let body = webhook(json!([
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 9,
             "delivery": {"mids": ["m_a", "m_b"], "watermark": NOW + 8}},
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 10,
             "read": {"watermark": NOW + 9}},
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 11,
             "delivery": {"mids": ["m_c"]}},
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW + 12,
             "read": {}},
        ]));
        let events = parse_webhook(&body, Some("PAGE"), 0).unwrap();
        assert_eq!(
            events,
            vec![
                InboundEvent::Status(StatusUpdate {
                    provider_event_id: format!("delivery:111:{}", NOW + 8),
                    message: MessageRef::Watermark(NOW + 8),
                    recipient: Some(psid("111")),
                    status: DeliveryStatus::Delivered,
                    occurred_at: NOW + 9,
                }),
                InboundEvent::Status(StatusUpdate {
                    provider_event_id: format!("read:111:{}", NOW + 9),
                    message: MessageRef::Watermark(NOW + 9),
                    recipient: Some(psid("111")),
                    status: DeliveryStatus::Read,
                    occurred_at: NOW + 10,
                }),
                InboundEvent::Status(StatusUpdate {
                    provider_event_id: "delivery:111:m_c".into(),
                    message: MessageRef::Ids(vec!["m_c".into()]),
                    recipient: Some(psid("111")),
                    status: DeliveryStatus::Delivered,
                    occurred_at: NOW + 11,
                }),
            ]
        );
    }

    #[test]
    fn parses_optins() {
        let body = webhook(json!([
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "timestamp": NOW,
             "optin": {"type": "notification_messages", "payload": "deals",
                       "notification_messages_status": "STOP_NOTIFICATIONS"}},
            {"sender": {"id": "112"}, "recipient": {"id": "PAGE"}, "timestamp": NOW,
             "optin": {"type": "notification_messages", "notification_messages_token": "tok"}},
            {"sender": {"id": "113"}, "recipient": {"id": "PAGE"}, "timestamp": NOW,
             "optin": {"ref": "landing-page"}},
        ]));
        assert_eq!(
            parse_webhook(&body, None, 0).unwrap(),
            vec![
                InboundEvent::OptedOut(OptOut {
                    who: psid("111"),
                    scope: "marketing".into()
                }),
                InboundEvent::Followed(psid("113")),
            ]
        );
    }

    #[test]
    fn filters_pages_and_objects() {
        let body = webhook(json!([
            {"sender": {"id": "111"}, "recipient": {"id": "PAGE"}, "message": {"mid": "m_1", "text": "hi"}},
        ]));
        let events = parse_webhook(&body, Some("OTHER"), 0).unwrap();
        assert!(events.is_empty());
        let events = parse_webhook(&body, None, 77).unwrap();
        let InboundEvent::Message(m) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(m.occurred_at, NOW, "entry time when the item has none");
        let mut other = body.clone();
        other["object"] = "instagram".into();
        assert!(parse_webhook(&other, None, 0).unwrap().is_empty());
        assert!(matches!(
            parse_webhook(&json!({"object": "page"}), None, 0),
            Err(WebhookError::Malformed(_))
        ));
    }
}
