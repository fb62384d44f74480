//! Channel adapter: WhatsApp Business Cloud API.
//!
//! - `send` posts one request per message part to
//!   `{api_base}/{graph_version}/{phone_number_id}/messages` through the host's
//!   `outbound-http`: free-form messages inside the 24 h customer-service window, the first
//!   approved template outside it, and maps Graph API errors to `send-error`.
//! - `handle-webhook` answers the `hub.*` subscription handshake, verifies
//!   `X-Hub-Signature-256` with the host's `crypto`, and turns `messages` changes into
//!   per-message statuses, inbound messages and `STOP` opt-outs.
//! - `refresh-credentials` is not supported: system-user access tokens do not expire on a
//!   schedule and have no refresh grant.
//!
//! Config and secrets are listed in README.md.

use weft_guest::adapter::{
    ChannelCapabilities, DeliveryStatus, Guest, HttpRequest, HttpResponse, InboundEvent,
    InboundMessage, MessageRef, OptOut, OutboundMessage, PluginError, SendError, SendOk,
    SessionWindow, StatusGranularity, StatusUpdate, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Response};
use weft_guest::json::{self, json, Map, Value};
use weft_guest::types::{
    ButtonAction, Card, ChannelKind, Choices, Content, Geo, Identity, Media, TemplateRef,
};
use weft_guest::{clock, config, log, serde_json};

/// Default Graph API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://graph.facebook.com";
/// Default Graph API version (setting `graph_version`).
const DEFAULT_GRAPH_VERSION: &str = "v21.0";
/// Default template language when neither the template nor the settings name one.
const DEFAULT_TEMPLATE_LANGUAGE: &str = "en";
/// Default label of the button that opens a list message (setting `list_button_label`).
const DEFAULT_LIST_BUTTON_LABEL: &str = "Options";
/// Free-form messages are allowed within 24 h of the customer's last message.
const WINDOW_MS: u64 = clock::hours(24);
/// Longest text body the Cloud API accepts.
const MAX_TEXT_LEN: usize = 4096;
/// Longest media caption and interactive body text.
const MAX_CAPTION_LEN: usize = 1024;
/// Most reply buttons on an interactive button message.
const MAX_REPLY_BUTTONS: usize = 3;
/// Most rows in a list message (all sections together).
const MAX_LIST_ROWS: usize = 10;
/// Longest reply-button title, and list button label.
const MAX_LABEL_LEN: usize = 20;
/// Longest list row title.
const MAX_ROW_TITLE_LEN: usize = 24;
/// Longest list row description.
const MAX_ROW_DESCRIPTION_LEN: usize = 72;
/// Longest reply-button id.
const MAX_BUTTON_ID_LEN: usize = 256;
/// Longest list row id.
const MAX_ROW_ID_LEN: usize = 200;
/// Longest `biz_opaque_callback_data` (echoed back in status webhooks).
const MAX_CALLBACK_DATA_LEN: usize = 512;
/// Most cards of a carousel sent (each card is one to three messages).
const MAX_CAROUSEL_CARDS: usize = 10;
/// E.164 numbers have at most 15 digits; the shortest national plans give 7 with the
/// country code.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
/// Default Cloud API throughput per business phone number, messages per second.
const DEFAULT_THROUGHPUT_PER_SEC: u32 = 80;
/// Back-off after a throttling answer without `Retry-After`: Meta's per-number and
/// per-app limits are computed over rolling windows, so one minute lets them move on.
const RATE_LIMIT_BACKOFF_MS: u64 = clock::minutes(1);
/// Timeout for each provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
/// Longest piece of a provider answer quoted in an error message.
const MAX_QUOTED_LEN: usize = 200;
/// Shown as the body of an interactive message whose prompt is empty (a body is required).
const EMPTY_BODY: &str = "…";

/// The adapter: one WhatsApp business phone number per installation.
struct WhatsappCloud;

impl Guest for WhatsappCloud {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Whatsapp,
            max_text_len: MAX_TEXT_LEN as u32,
            max_buttons: MAX_REPLY_BUTTONS as u8,
            max_button_label: MAX_LABEL_LEN as u8,
            content_kinds: [
                "text", "image", "video", "audio", "file", "location", "choices", "template",
            ]
            .map(String::from)
            .to_vec(),
            window: Some(SessionWindow {
                duration_ms: WINDOW_MS,
                template_required_outside: true,
            }),
            status: StatusGranularity::PerMessage,
            max_send_per_sec: Some(DEFAULT_THROUGHPUT_PER_SEC),
            extra_channels: vec![],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        let to = wa_number(&msg.recipient.address)?;
        let phone_number_id = config::get("phone_number_id")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SendError::Permanent("config `phone_number_id` is not set".into()))?;
        let settings = FormatSettings {
            template_language: config::get_or("template_language", DEFAULT_TEMPLATE_LANGUAGE),
            list_button_label: config::get_or("list_button_label", DEFAULT_LIST_BUTTON_LABEL),
        };
        let inside = within_window(clock::now(), msg.recipient.last_inbound_at);
        let parts = plan_messages(&msg.content, inside, &settings)?;
        if !inside && msg.content.len() > 1 {
            log::info!(
                "whatsapp-cloud: outside the 24 h window; sending the template only ({} other items dropped)",
                msg.content.len() - 1
            );
        }
        let token = config::get_secret("access_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SendError::Permanent("secret `access_token` is not set".into()))?;
        let url = format!(
            "{}/{}/{}/messages",
            config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/'),
            config::get_or("graph_version", DEFAULT_GRAPH_VERSION).trim_matches('/'),
            phone_number_id
        );

        // The Cloud API takes one message per request and has no idempotency key: send
        // the parts in order, and once a part went out, report any later failure as
        // ambiguous so the host reconciles instead of resending what was delivered.
        let total = parts.len();
        let mut ids: Vec<String> = Vec::with_capacity(total);
        for part in parts {
            let req = http::Request::new("POST", &url)
                .header("authorization", &format!("Bearer {token}"))
                .json(&envelope(&to, &msg.tracking_id, part))
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
            log::info!(
                "whatsapp-cloud: sent {} parts: {}",
                ids.len(),
                ids.join(",")
            );
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
            return weft_guest::meta::verification_handshake(&req, "whatsapp-cloud");
        }
        weft_guest::meta::verify_signature(&req, "whatsapp-cloud")?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
        let only_number = config::get("phone_number_id").filter(|v| !v.is_empty());
        let media_base = format!(
            "{}/{}",
            config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/'),
            config::get_or("graph_version", DEFAULT_GRAPH_VERSION).trim_matches('/'),
        );
        Ok(WebhookResult {
            response: HttpResponse::text(200, "EVENT_RECEIVED"),
            events: parse_webhook(&body, only_number.as_deref(), &media_base, req.received_at)?,
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        Err(PluginError::not_supported(
            "whatsapp-cloud: system-user access tokens have no refresh grant; issue a new \
             token in Business Manager and update the `access_token` secret",
        ))
    }
}

/// The `to` digits of a `phone` (E.164, `+` optional) or `wa` identity.
fn wa_number(address: &Identity) -> Result<String, SendError> {
    if address.kind != "phone" && address.kind != "wa" {
        return Err(SendError::RecipientInvalid(format!(
            "whatsapp needs a phone identity, got `{}`",
            address.kind
        )));
    }
    let value = address.value.trim();
    let digits: String = value
        .strip_prefix('+')
        .unwrap_or(value)
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !PHONE_DIGITS.contains(&digits.len()) {
        return Err(SendError::RecipientInvalid(format!(
            "`{}` is not an E.164 phone number",
            address.value
        )));
    }
    Ok(digits)
}

/// Whether the customer wrote within the last 24 h; unknown counts as outside.
fn within_window(now: i64, last_inbound: Option<i64>) -> bool {
    last_inbound.is_some_and(|last| now.saturating_sub(last) <= WINDOW_MS as i64)
}

/// Settings that shape message formatting.
struct FormatSettings {
    /// Language code for templates without one.
    template_language: String,
    /// Label of the button that opens a list message.
    list_button_label: String,
}

/// The message parts (`{"type", "<type>": …}` objects) to send, in order.
///
/// Outside the window only the first template goes out (`outside-window` if there is
/// none). Inside it the free-form items go out and templates are skipped, unless templates
/// are all there is, in which case the first one is sent.
fn plan_messages(
    content: &[Content],
    inside_window: bool,
    settings: &FormatSettings,
) -> Result<Vec<Value>, SendError> {
    let first_template = content.iter().find_map(|c| match c {
        Content::Template(t) => Some(t),
        _ => None,
    });
    let free: Vec<&Content> = content
        .iter()
        .filter(|c| !matches!(c, Content::Template(_)))
        .collect();
    if !inside_window || free.is_empty() {
        return match first_template {
            Some(t) => Ok(vec![template_message(t, &settings.template_language)?]),
            None if !inside_window => Err(SendError::OutsideWindow),
            None => Err(SendError::ContentRejected("no content to send".into())),
        };
    }
    let mut parts = Vec::new();
    for item in free {
        parts.extend(free_form(item, settings)?);
    }
    if parts.is_empty() {
        return Err(SendError::ContentRejected("no content to send".into()));
    }
    Ok(parts)
}

/// The request body for one part: the fixed envelope plus the part's fields.
fn envelope(to: &str, tracking_id: &str, part: Value) -> Value {
    let mut body = Map::new();
    if let Value::Object(fields) = part {
        body.extend(fields);
    }
    body.insert("messaging_product".into(), "whatsapp".into());
    body.insert("recipient_type".into(), "individual".into());
    body.insert("to".into(), to.into());
    if !tracking_id.is_empty() {
        body.insert(
            "biz_opaque_callback_data".into(),
            truncate(tracking_id, MAX_CALLBACK_DATA_LEN).into(),
        );
    }
    Value::Object(body)
}

/// The parts for one free-form content item.
fn free_form(item: &Content, settings: &FormatSettings) -> Result<Vec<Value>, SendError> {
    Ok(match item {
        Content::Text(text) => text_parts(text),
        Content::Image(m) => vec![media_part("image", m, true)],
        Content::Video(m) => vec![media_part("video", m, true)],
        Content::Audio(m) => {
            // Audio messages have no caption: send it as a text after the clip.
            let mut parts = vec![media_part("audio", m, false)];
            if let Some(caption) = m.caption.as_deref() {
                parts.extend(text_parts(caption));
            }
            parts
        }
        Content::File(m) => {
            let mut part = media_part("document", m, true);
            if let Some(name) = m.filename.as_deref().filter(|n| !n.is_empty()) {
                part["document"]["filename"] = name.into();
            }
            vec![part]
        }
        Content::Location(geo) => vec![location_part(geo)],
        Content::Choices(choices) => choices_parts(choices, &settings.list_button_label),
        Content::Card(card) => card_parts(card),
        Content::Carousel(cards) => cards
            .iter()
            .take(MAX_CAROUSEL_CARDS)
            .flat_map(card_parts)
            .collect(),
        Content::Raw(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => vec![v],
            Ok(_) => {
                return Err(SendError::ContentRejected(
                    "raw content must be a Cloud API message object".into(),
                ))
            }
            Err(e) => {
                return Err(SendError::ContentRejected(format!(
                    "raw content is not JSON: {e}"
                )))
            }
        },
        Content::Template(_) => vec![],
    })
}

/// `text` messages for `text`, split into pieces the Cloud API accepts; links get a
/// preview.
fn text_parts(text: &str) -> Vec<Value> {
    split_text(text, MAX_TEXT_LEN)
        .into_iter()
        .map(|body| {
            let preview = body.contains("https://") || body.contains("http://");
            json!({"type": "text", "text": {"preview_url": preview, "body": body}})
        })
        .collect()
}

/// A media message by link, with the caption where the type takes one.
fn media_part(kind: &str, media: &Media, with_caption: bool) -> Value {
    let mut object = json!({ "link": media.url });
    if with_caption {
        if let Some(caption) = media.caption.as_deref().filter(|c| !c.is_empty()) {
            object["caption"] = truncate(caption, MAX_CAPTION_LEN).into();
        }
    }
    json!({"type": kind, kind: object})
}

/// A location pin.
fn location_part(geo: &Geo) -> Value {
    let mut location = json!({"latitude": geo.latitude, "longitude": geo.longitude});
    if let Some(address) = geo.address.as_deref().filter(|a| !a.is_empty()) {
        location["address"] = address.into();
    }
    json!({"type": "location", "location": location})
}

/// Choices: reply buttons for up to 3, a list message for up to 10, a numbered text list
/// beyond that.
fn choices_parts(choices: &Choices, list_label: &str) -> Vec<Value> {
    let options = &choices.options;
    let body = interactive_body(&choices.prompt);
    if options.is_empty() {
        return text_parts(&choices.prompt);
    }
    if options.len() <= MAX_REPLY_BUTTONS {
        let buttons = options
            .iter()
            .map(|o| reply_button(&o.value, &o.label))
            .collect();
        return vec![button_message(None, body, buttons)];
    }
    if options.len() <= MAX_LIST_ROWS {
        let rows: Vec<Value> = options
            .iter()
            .map(|o| {
                let mut row = json!({
                    "id": truncate(&o.value, MAX_ROW_ID_LEN),
                    "title": truncate(&o.label, MAX_ROW_TITLE_LEN),
                });
                if o.label.chars().count() > MAX_ROW_TITLE_LEN {
                    row["description"] = truncate(&o.label, MAX_ROW_DESCRIPTION_LEN).into();
                }
                row
            })
            .collect();
        return vec![json!({"type": "interactive", "interactive": {
            "type": "list",
            "body": {"text": body},
            "action": {
                "button": truncate(list_label, MAX_LABEL_LEN),
                "sections": [{"rows": rows}],
            },
        }})];
    }
    let mut text = choices.prompt.trim().to_owned();
    for (i, option) in options.iter().enumerate() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{}. {}", i + 1, option.label));
    }
    text_parts(&text)
}

/// An interactive body text: the prompt cut to the limit, never empty.
fn interactive_body(prompt: &str) -> &str {
    match prompt.trim() {
        "" => EMPTY_BODY,
        p => truncate(p, MAX_CAPTION_LEN),
    }
}

/// One reply button.
fn reply_button(id: &str, title: &str) -> Value {
    json!({"type": "reply", "reply": {
        "id": truncate(id, MAX_BUTTON_ID_LEN),
        "title": truncate(title, MAX_LABEL_LEN),
    }})
}

/// An interactive button message, with an image header if given.
fn button_message(header_image: Option<&str>, body: &str, buttons: Vec<Value>) -> Value {
    let mut interactive = json!({
        "type": "button",
        "body": {"text": body},
        "action": {"buttons": buttons},
    });
    if let Some(link) = header_image {
        interactive["header"] = json!({"type": "image", "image": {"link": link}});
    }
    json!({"type": "interactive", "interactive": interactive})
}

/// A card degraded to what WhatsApp shows: the image with title and subtitle as caption,
/// then a text with the URL and phone buttons as `label: target` lines; postback and say
/// buttons (up to 3) become reply buttons under that text instead.
fn card_parts(card: &Card) -> Vec<Value> {
    let mut parts = Vec::new();
    let mut heading = card.title.trim().to_owned();
    if let Some(subtitle) = card.subtitle.as_deref().filter(|s| !s.trim().is_empty()) {
        if !heading.is_empty() {
            heading.push('\n');
        }
        heading.push_str(subtitle.trim());
    }
    let image = card.image_url.as_deref().filter(|u| !u.is_empty());
    let mut lines = Vec::new();
    match image {
        Some(link) => {
            let mut image = json!({ "link": link });
            if !heading.is_empty() {
                image["caption"] = truncate(&heading, MAX_CAPTION_LEN).into();
            }
            parts.push(json!({"type": "image", "image": image}));
        }
        None if !heading.is_empty() => lines.push(heading.clone()),
        None => {}
    }
    let mut replies = Vec::new();
    for b in &card.buttons {
        match &b.action {
            ButtonAction::Url(target) | ButtonAction::Phone(target) => {
                lines.push(format!("{}: {target}", b.label));
            }
            ButtonAction::Postback(id) | ButtonAction::Say(id) => {
                if replies.len() < MAX_REPLY_BUTTONS {
                    replies.push(reply_button(id, &b.label));
                }
            }
        }
    }
    let text = lines.join("\n");
    if !replies.is_empty() {
        let body = if text.is_empty() {
            interactive_body(&card.title)
        } else {
            interactive_body(&text)
        };
        parts.push(button_message(None, body, replies));
    } else if !text.is_empty() {
        parts.extend(text_parts(&text));
    }
    parts
}

/// A template message: `{name, language: {code, policy: "deterministic"}, components}`.
fn template_message(template: &TemplateRef, default_language: &str) -> Result<Value, SendError> {
    let language = template
        .language
        .as_deref()
        .filter(|l| !l.is_empty())
        .unwrap_or(default_language);
    let mut body = json!({
        "name": template.id,
        "language": {"code": language, "policy": "deterministic"},
    });
    let components = template_components(&template.params)?;
    if !components.is_empty() {
        body["components"] = components.into();
    }
    Ok(json!({"type": "template", "template": body}))
}

/// Template `components` from `template-ref.params` (see README.md for the shapes).
///
/// - `{"components": [...]}`: sent as they are;
/// - `{"header": …, "body": …, "buttons": […]}`: header text parameters (a string or a
///   list) or a media header (`{"image"|"video"|"document": url, "filename"?}`); body
///   parameters positional (a list) or named (an object); button parameters per index;
/// - `["a", "b"]`: positional body parameters;
/// - any other object, such as `{"name": "Lan"}`: named body parameters;
/// - `{}` or empty text: no components.
fn template_components(params: &str) -> Result<Vec<Value>, SendError> {
    if params.trim().is_empty() {
        return Ok(vec![]);
    }
    let reject = |why: String| SendError::ContentRejected(format!("template params: {why}"));
    let value: Value = serde_json::from_str(params).map_err(|e| reject(e.to_string()))?;
    let map = match value {
        Value::Array(items) => return Ok(vec![body_component(&Value::Array(items))?]),
        Value::Object(map) => map,
        _ => return Err(reject("must be an object or a list".into())),
    };
    /// The keys of the structured form; an object without any of them is named body
    /// parameters.
    const STRUCTURED: [&str; 4] = ["components", "header", "body", "buttons"];
    if !map.keys().any(|k| STRUCTURED.contains(&k.as_str())) {
        if map.is_empty() {
            return Ok(vec![]);
        }
        return Ok(vec![body_component(&Value::Object(map))?]);
    }
    if let Some(unknown) = map.keys().find(|k| !STRUCTURED.contains(&k.as_str())) {
        return Err(reject(format!(
            "unknown key `{unknown}` next to header/body/buttons"
        )));
    }
    if let Some(components) = map.get("components") {
        return match components {
            Value::Array(list) if map.len() == 1 => Ok(list.clone()),
            Value::Array(_) => Err(reject(
                "`components` cannot be mixed with other keys".into(),
            )),
            _ => Err(reject("`components` must be a list".into())),
        };
    }
    let mut components = Vec::new();
    if let Some(header) = map.get("header") {
        components.push(header_component(header)?);
    }
    if let Some(body) = map.get("body") {
        components.push(body_component(body)?);
    }
    if let Some(buttons) = map.get("buttons") {
        let Value::Array(buttons) = buttons else {
            return Err(reject("`buttons` must be a list".into()));
        };
        for (i, button) in buttons.iter().enumerate() {
            if let Some(component) = button_component(i, button)? {
                components.push(component);
            }
        }
    }
    Ok(components)
}

/// A scalar parameter as text: strings as they are, numbers and booleans in JSON form.
fn param_text(value: &Value) -> Result<String, SendError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(SendError::ContentRejected(format!(
            "template params: parameter {other} is not text"
        ))),
    }
}

/// A text parameter, named when `name` is given.
fn text_param(name: Option<&str>, value: &Value) -> Result<Value, SendError> {
    let mut param = json!({"type": "text", "text": param_text(value)?});
    if let Some(name) = name {
        param["parameter_name"] = name.into();
    }
    Ok(param)
}

/// The body component: a list gives positional parameters, an object named ones.
fn body_component(body: &Value) -> Result<Value, SendError> {
    let parameters = match body {
        Value::Array(items) => items
            .iter()
            .map(|v| text_param(None, v))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| text_param(Some(k), v))
            .collect::<Result<Vec<_>, _>>()?,
        single => vec![text_param(None, single)?],
    };
    Ok(json!({"type": "body", "parameters": parameters}))
}

/// The header component: text parameters, or one media parameter.
fn header_component(header: &Value) -> Result<Value, SendError> {
    let parameters = match header {
        Value::Array(items) => items
            .iter()
            .map(|v| text_param(None, v))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Object(map) => {
            let Some((kind, link)) = ["image", "video", "document"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str).map(|l| (*k, l)))
            else {
                return Err(SendError::ContentRejected(
                    "template params: a header object needs `image`, `video` or `document`".into(),
                ));
            };
            let mut media = json!({ "link": link });
            if let Some(name) = map.get("filename").and_then(Value::as_str) {
                media["filename"] = name.into();
            }
            vec![json!({"type": kind, kind: media})]
        }
        single => vec![text_param(None, single)?],
    };
    Ok(json!({"type": "header", "parameters": parameters}))
}

/// The component for the button at `index`: a string is a URL suffix; an object names its
/// `sub_type` (`url` default, `quick_reply`, `copy_code`) and value; `null` skips it.
fn button_component(index: usize, button: &Value) -> Result<Option<Value>, SendError> {
    let (sub_type, parameter, index) = match button {
        Value::Null => return Ok(None),
        Value::String(suffix) => ("url", json!({"type": "text", "text": suffix}), index),
        Value::Object(map) => {
            let get = |k: &str| map.get(k).map(param_text).transpose();
            let sub_type = map
                .get("sub_type")
                .or_else(|| map.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("url");
            let index = match map.get("index") {
                Some(i) => param_text(i)?.parse().map_err(|_| {
                    SendError::ContentRejected("template params: bad button index".into())
                })?,
                None => index,
            };
            let missing = |what: &str| {
                SendError::ContentRejected(format!(
                    "template params: {sub_type} button {index} needs `{what}`"
                ))
            };
            match sub_type {
                "quick_reply" => (
                    "quick_reply",
                    json!({"type": "payload", "payload": get("payload")?.ok_or_else(|| missing("payload"))?}),
                    index,
                ),
                "copy_code" => (
                    "copy_code",
                    json!({"type": "coupon_code", "coupon_code": get("coupon_code")?
                        .or(get("text")?)
                        .ok_or_else(|| missing("coupon_code"))?}),
                    index,
                ),
                "url" => (
                    "url",
                    json!({"type": "text", "text": get("text")?.ok_or_else(|| missing("text"))?}),
                    index,
                ),
                other => {
                    return Err(SendError::ContentRejected(format!(
                        "template params: unknown button sub_type `{other}`"
                    )))
                }
            }
        }
        other => {
            return Err(SendError::ContentRejected(format!(
                "template params: button {other} is not a string or object"
            )))
        }
    };
    Ok(Some(json!({
        "type": "button",
        "sub_type": sub_type,
        "index": index.to_string(),
        "parameters": [parameter],
    })))
}

/// `text` in pieces of at most `max` characters, broken at whitespace where there is
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

/// A Graph API error object: `{"error": {"code", "message", "error_data": {"details"}}}`.
#[derive(Debug, PartialEq)]
struct GraphError {
    /// `error.code`.
    code: i64,
    /// `error.message`, with `error_data.details` when present.
    message: String,
    /// `error.is_transient`.
    transient: bool,
}

/// The Graph error in an answer body, if it has one.
fn graph_error(body: &Value) -> Option<GraphError> {
    let error = body.get("error")?;
    let code = json::text_at(error, "code")?.trim().parse::<i64>().ok()?;
    let mut message = json::text_at(error, "message").unwrap_or_default();
    if let Some(details) = json::text_at(error, "error_data.details").filter(|d| !d.is_empty()) {
        message = format!("{message} ({details})");
    }
    Some(GraphError {
        code,
        message,
        transient: error.get("is_transient").and_then(Value::as_bool) == Some(true),
    })
}

/// `Retry-After` in milliseconds, when the answer has it in seconds.
fn retry_after_ms(resp: &Response) -> Option<u64> {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// Maps the Cloud API's answer to one request: the `wamid`, or why not.
fn interpret_send_response(resp: &Response) -> Result<String, SendError> {
    let body: Option<Value> = resp.json().ok();
    let error = body.as_ref().and_then(graph_error);
    if resp.is_success() && error.is_none() {
        return body
            .as_ref()
            .and_then(|b| json::text_at(b, "messages.0.id"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                SendError::Ambiguous(format!(
                    "whatsapp http {} without a message id",
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
            "whatsapp http {}",
            resp.status
        ))),
        None => Err(SendError::Permanent(format!(
            "whatsapp http {}: {}",
            resp.status,
            truncate(&resp.text(), MAX_QUOTED_LEN)
        ))),
    }
}

/// Maps a Cloud API error code to a send error (see the table in README.md).
fn map_graph_error(error: &GraphError, status: u16, backoff_ms: u64) -> SendError {
    let what = format!("whatsapp {}: {}", error.code, error.message);
    match error.code {
        190 => SendError::AuthExpired,
        4 | 80007 | 130429 | 131048 | 131056 => SendError::RateLimited(backoff_ms),
        131047 => SendError::OutsideWindow,
        131021 | 131030 => SendError::RecipientInvalid(what),
        131026 | 131050 => SendError::RecipientUnreachable(what),
        131051..=131053 | 132000..=132999 => SendError::ContentRejected(what),
        1 | 2 | 131000 | 131016 | 131057 | 133004 => SendError::Retryable(what),
        _ if status >= 500 || error.transient => SendError::Retryable(what),
        _ => SendError::Permanent(what),
    }
}

/// The events in one verified webhook body. Changes for other fields or other phone
/// numbers than `only_number` (when set), and bodies for other objects, give no events;
/// statuses and messages without an id are skipped rather than failing the batch.
fn parse_webhook(
    body: &Value,
    only_number: Option<&str>,
    media_base: &str,
    received_at: i64,
) -> Result<Vec<InboundEvent>, WebhookError> {
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("missing entry list".into()))?;
    if json::str_at(body, "object") != Some("whatsapp_business_account") {
        return Ok(vec![]);
    }
    let mut events = Vec::new();
    let changes = entries
        .iter()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten();
    for change in changes {
        if json::str_at(change, "field") != Some("messages") {
            continue;
        }
        let Some(value) = change.get("value") else {
            continue;
        };
        let number = json::text_at(value, "metadata.phone_number_id");
        if let (Some(only), Some(number)) = (only_number, number.as_deref()) {
            if only != number {
                continue;
            }
        }
        let list = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        for status in list("statuses") {
            events.extend(status_event(status, received_at));
        }
        for message in list("messages") {
            events.extend(message_events(message, media_base, received_at));
        }
    }
    Ok(events)
}

/// A `+`-prefixed phone identity for WhatsApp's digits-only `wa_id`.
fn phone_identity(wa_id: &str) -> Identity {
    Identity {
        kind: "phone".into(),
        value: if wa_id.starts_with('+') {
            wa_id.to_owned()
        } else {
            format!("+{wa_id}")
        },
    }
}

/// Unix seconds (as WhatsApp sends them, usually a string) in milliseconds.
fn seconds_to_ms(item: &Value, fallback: i64) -> i64 {
    json::text_at(item, "timestamp")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or(fallback)
}

/// One `statuses[]` item as a status update: `sent`, `delivered`, `read` or `failed`.
fn status_event(status: &Value, received_at: i64) -> Option<InboundEvent> {
    let id = json::text_at(status, "id").filter(|i| !i.is_empty())?;
    let name = json::str_at(status, "status")?;
    let delivery = match name {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed(failure_reason(status)),
        _ => return None,
    };
    Some(InboundEvent::Status(StatusUpdate {
        provider_event_id: format!("{id}:{name}"),
        message: MessageRef::Id(id),
        recipient: json::text_at(status, "recipient_id")
            .filter(|r| !r.is_empty())
            .map(|r| phone_identity(&r)),
        status: delivery,
        occurred_at: seconds_to_ms(status, received_at),
    }))
}

/// `<code>: <title or message>` of a failed status's first error.
fn failure_reason(status: &Value) -> String {
    let text = json::text_at(status, "errors.0.title")
        .or_else(|| json::text_at(status, "errors.0.message"))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "failed".into());
    match json::text_at(status, "errors.0.code") {
        Some(code) => format!("{code}: {text}"),
        None => text,
    }
}

/// One `messages[]` item as an inbound message, plus an opt-out for a text `STOP`.
/// Reactions and system notices (number changes) give no events.
fn message_events(message: &Value, media_base: &str, received_at: i64) -> Vec<InboundEvent> {
    let (Some(from), Some(id)) = (
        json::text_at(message, "from").filter(|f| !f.is_empty()),
        json::text_at(message, "id").filter(|i| !i.is_empty()),
    ) else {
        return vec![];
    };
    let kind = json::str_at(message, "type").unwrap_or_default();
    if matches!(kind, "reaction" | "system") {
        return vec![];
    }
    let field = |path: &str| json::text_at(message, &format!("{kind}.{path}"));
    let media = || {
        field("id").map(|media_id| Media {
            url: format!("{media_base}/{media_id}"),
            mime: field("mime_type"),
            caption: field("caption"),
            filename: field("filename"),
        })
    };
    let mut postback = None;
    let content: Vec<Content> = match kind {
        "text" => field("body").map(Content::Text).into_iter().collect(),
        "image" | "sticker" => media().map(Content::Image).into_iter().collect(),
        "video" => media().map(Content::Video).into_iter().collect(),
        "audio" => media().map(Content::Audio).into_iter().collect(),
        "document" => media().map(Content::File).into_iter().collect(),
        "location" => location_content(message).into_iter().collect(),
        "interactive" => {
            let reply = ["button_reply", "list_reply"]
                .iter()
                .find_map(|r| message.get("interactive").and_then(|i| i.get(*r)));
            postback = reply.and_then(|r| json::text_at(r, "id"));
            reply
                .and_then(|r| json::text_at(r, "title"))
                .map(Content::Text)
                .into_iter()
                .collect()
        }
        "button" => {
            postback = field("payload");
            field("text").map(Content::Text).into_iter().collect()
        }
        _ => vec![],
    };
    let who = phone_identity(&from);
    let stop =
        kind == "text" && field("body").is_some_and(|b| b.trim().eq_ignore_ascii_case("STOP"));
    let mut events = vec![InboundEvent::Message(InboundMessage {
        provider_message_id: id,
        sender: who.clone(),
        conversation_id: from,
        content,
        postback,
        occurred_at: seconds_to_ms(message, received_at),
    })];
    if stop {
        events.push(InboundEvent::OptedOut(OptOut {
            who,
            scope: "marketing".into(),
        }));
    }
    events
}

/// A shared location pin.
fn location_content(message: &Value) -> Option<Content> {
    let number = |key: &str| {
        json::text_at(message, &format!("location.{key}"))?
            .parse()
            .ok()
    };
    Some(Content::Location(Geo {
        latitude: number("latitude")?,
        longitude: number("longitude")?,
        address: json::text_at(message, "location.address")
            .or_else(|| json::text_at(message, "location.name")),
    }))
}

weft_guest::export_channel_adapter!(WhatsappCloud);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::types::{Button, Choice};

    const NOW: i64 = 1_700_000_000_000;

    fn settings() -> FormatSettings {
        FormatSettings {
            template_language: "vi".into(),
            list_button_label: "Chọn".into(),
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn error_body(code: i64, message: &str) -> String {
        json!({"error": {
            "message": message, "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": "more"},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        }})
        .to_string()
    }

    fn err(status: u16, body: &str) -> SendError {
        interpret_send_response(&response(status, body)).unwrap_err()
    }

    fn template(params: &str) -> Content {
        Content::Template(TemplateRef {
            id: "order_update".into(),
            language: None,
            params: params.into(),
        })
    }

    #[test]
    fn accepts_wamids() {
        let ok = interpret_send_response(&response(
            200,
            r#"{"messaging_product":"whatsapp","contacts":[{"input":"84912345678","wa_id":"84912345678"}],"messages":[{"id":"wamid.HBgM","message_status":"accepted"}]}"#,
        ));
        assert_eq!(ok.unwrap(), "wamid.HBgM");
        assert!(matches!(
            err(200, r#"{"messages":[]}"#),
            SendError::Ambiguous(_)
        ));
        assert!(matches!(err(201, "<html>"), SendError::Ambiguous(_)));
    }

    #[test]
    fn maps_cloud_api_errors() {
        assert_eq!(
            err(401, &error_body(190, "expired")),
            SendError::AuthExpired
        );
        for code in [4, 80007, 130429, 131048, 131056] {
            assert_eq!(
                err(400, &error_body(code, "slow down")),
                SendError::RateLimited(60_000),
                "code {code}"
            );
        }
        assert_eq!(
            err(400, &error_body(131047, "Re-engagement message")),
            SendError::OutsideWindow
        );
        for code in [131021, 131030] {
            assert!(matches!(
                err(400, &error_body(code, "x")),
                SendError::RecipientInvalid(_)
            ));
        }
        for code in [131026, 131050] {
            assert!(matches!(
                err(400, &error_body(code, "x")),
                SendError::RecipientUnreachable(_)
            ));
        }
        for code in [131051, 131052, 131053, 132000, 132001, 132999] {
            assert!(
                matches!(
                    err(400, &error_body(code, "x")),
                    SendError::ContentRejected(_)
                ),
                "code {code}"
            );
        }
        for code in [131000, 131016, 133004, 1, 2] {
            assert!(matches!(
                err(500, &error_body(code, "x")),
                SendError::Retryable(_)
            ));
        }
        assert!(matches!(
            err(400, &error_body(131000, "x")),
            SendError::Retryable(_)
        ));
        assert!(matches!(err(502, "bad gateway"), SendError::Retryable(_)));
        assert!(matches!(
            err(503, &error_body(100, "odd")),
            SendError::Retryable(_)
        ));
        assert!(matches!(
            err(400, &error_body(100, "Invalid parameter")),
            SendError::Permanent(_)
        ));
        assert!(matches!(err(404, "nope"), SendError::Permanent(_)));
        let SendError::RecipientUnreachable(m) = err(400, &error_body(131026, "Undeliverable"))
        else {
            unreachable!()
        };
        assert_eq!(m, "whatsapp 131026: Undeliverable (more)");
    }

    #[test]
    fn honours_retry_after() {
        let mut resp = response(429, "");
        assert_eq!(
            interpret_send_response(&resp).unwrap_err(),
            SendError::RateLimited(60_000)
        );
        resp.headers.push(("retry-after".into(), "12".into()));
        assert_eq!(
            interpret_send_response(&resp).unwrap_err(),
            SendError::RateLimited(12_000)
        );
    }

    #[test]
    fn reads_phone_identities() {
        let id = |kind: &str, value: &str| Identity {
            kind: kind.into(),
            value: value.into(),
        };
        assert_eq!(
            wa_number(&id("phone", "+84912345678")).unwrap(),
            "84912345678"
        );
        assert_eq!(
            wa_number(&id("phone", "+1 (415) 555-0100")).unwrap(),
            "14155550100"
        );
        assert_eq!(wa_number(&id("wa", "84912345678")).unwrap(), "84912345678");
        for (kind, value) in [
            ("email", "a@b.c"),
            ("phone", ""),
            ("phone", "+84abc"),
            ("phone", "+12345"),
            ("phone", "+1234567890123456"),
        ] {
            assert!(
                matches!(
                    wa_number(&id(kind, value)),
                    Err(SendError::RecipientInvalid(_))
                ),
                "{kind} {value}"
            );
        }
    }

    #[test]
    fn checks_the_window() {
        let hour = clock::hours(1) as i64;
        assert!(within_window(NOW, Some(NOW - hour)));
        assert!(within_window(NOW, Some(NOW - 24 * hour)));
        assert!(!within_window(NOW, Some(NOW - 24 * hour - 1)));
        assert!(!within_window(NOW, None));
    }

    #[test]
    fn builds_the_envelope() {
        let part = json!({"type": "text", "text": {"preview_url": false, "body": "hi"}});
        assert_eq!(
            envelope("84912345678", "trk-1", part),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "84912345678",
                "type": "text",
                "text": {"preview_url": false, "body": "hi"},
                "biz_opaque_callback_data": "trk-1",
            })
        );
        let raw = json!({"type": "text", "to": "spoofed", "text": {"body": "x"}});
        assert_eq!(envelope("1", "", raw)["to"], "1");
        assert!(envelope("1", "", json!({}))
            .get("biz_opaque_callback_data")
            .is_none());
    }

    #[test]
    fn picks_free_form_or_template_by_window() {
        let content = vec![
            template(r##"{"body": ["Lan", "#123"]}"##),
            Content::Text("Đơn #123 đã giao".into()),
        ];
        let inside = plan_messages(&content, true, &settings()).unwrap();
        assert_eq!(
            inside,
            vec![
                json!({"type": "text", "text": {"preview_url": false, "body": "Đơn #123 đã giao"}})
            ]
        );
        let outside = plan_messages(&content, false, &settings()).unwrap();
        assert_eq!(
            outside,
            vec![json!({"type": "template", "template": {
                "name": "order_update",
                "language": {"code": "vi", "policy": "deterministic"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Lan"},
                    {"type": "text", "text": "#123"},
                ]}],
            }})]
        );
        let only_template = plan_messages(&content[..1], true, &settings()).unwrap();
        assert_eq!(only_template, outside);
        assert_eq!(
            plan_messages(&content[1..], false, &settings()),
            Err(SendError::OutsideWindow)
        );
        assert!(matches!(
            plan_messages(&[], true, &settings()),
            Err(SendError::ContentRejected(_))
        ));
        assert!(matches!(
            plan_messages(&[Content::Text(" ".into())], true, &settings()),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn maps_template_params() {
        let components = |p: &str| template_components(p);
        assert_eq!(components("").unwrap(), Vec::<Value>::new());
        assert_eq!(components("{}").unwrap(), Vec::<Value>::new());
        assert_eq!(
            components(r#"["a", 2]"#).unwrap(),
            vec![json!({"type": "body", "parameters": [
                {"type": "text", "text": "a"}, {"type": "text", "text": "2"},
            ]})]
        );
        assert_eq!(
            components(r#"{"name": "Lan"}"#).unwrap(),
            vec![json!({"type": "body", "parameters": [
                {"type": "text", "parameter_name": "name", "text": "Lan"},
            ]})]
        );
        assert_eq!(
            components(
                r##"{"header": {"image": "https://x/h.jpg"}, "body": {"order": "#1"},
                    "buttons": ["track/1", null, {"sub_type": "quick_reply", "payload": "STOP"},
                                {"type": "copy_code", "coupon_code": "GOLD10", "index": 5}]}"##
            )
            .unwrap(),
            vec![
                json!({"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x/h.jpg"}}]}),
                json!({"type": "body", "parameters": [{"type": "text", "parameter_name": "order", "text": "#1"}]}),
                json!({"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "track/1"}]}),
                json!({"type": "button", "sub_type": "quick_reply", "index": "2", "parameters": [{"type": "payload", "payload": "STOP"}]}),
                json!({"type": "button", "sub_type": "copy_code", "index": "5", "parameters": [{"type": "coupon_code", "coupon_code": "GOLD10"}]}),
            ]
        );
        assert_eq!(
            components(r#"{"header": "Lan", "body": ["x"]}"#).unwrap()[0],
            json!({"type": "header", "parameters": [{"type": "text", "text": "Lan"}]})
        );
        let raw = json!([{"type": "body", "parameters": [{"type": "currency", "currency": {}}]}]);
        assert_eq!(
            components(&json!({ "components": raw }).to_string()).unwrap(),
            raw.as_array().unwrap().clone()
        );
        for bad in [
            "nope",
            "3",
            r#"{"body": [{"x": 1}]}"#,
            r#"{"body": ["a"], "extra": 1}"#,
            r#"{"components": {}}"#,
            r#"{"components": [], "body": []}"#,
            r#"{"header": {"gif": "x"}}"#,
            r#"{"buttons": [{"sub_type": "url"}]}"#,
            r#"{"buttons": [{"sub_type": "flow", "text": "x"}]}"#,
            r#"{"buttons": "x"}"#,
        ] {
            assert!(
                matches!(components(bad), Err(SendError::ContentRejected(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats_media_and_location() {
        let media = |caption: Option<&str>, filename: Option<&str>| Media {
            url: "https://x/f".into(),
            mime: None,
            caption: caption.map(Into::into),
            filename: filename.map(Into::into),
        };
        let parts = |c: Content| free_form(&c, &settings()).unwrap();
        assert_eq!(
            parts(Content::Image(media(Some("Ảnh"), None))),
            vec![json!({"type": "image", "image": {"link": "https://x/f", "caption": "Ảnh"}})]
        );
        assert_eq!(
            parts(Content::Video(media(None, None))),
            vec![json!({"type": "video", "video": {"link": "https://x/f"}})]
        );
        assert_eq!(
            parts(Content::Audio(media(Some("voice note"), None))),
            vec![
                json!({"type": "audio", "audio": {"link": "https://x/f"}}),
                json!({"type": "text", "text": {"preview_url": false, "body": "voice note"}}),
            ]
        );
        assert_eq!(
            parts(Content::File(media(Some("Hoá đơn"), Some("hd.pdf")))),
            vec![
                json!({"type": "document", "document": {"link": "https://x/f", "caption": "Hoá đơn", "filename": "hd.pdf"}})
            ]
        );
        assert_eq!(
            parts(Content::Location(Geo {
                latitude: 10.77,
                longitude: 106.7,
                address: Some("Q1".into())
            })),
            vec![
                json!({"type": "location", "location": {"latitude": 10.77, "longitude": 106.7, "address": "Q1"}})
            ]
        );
        assert_eq!(
            parts(Content::Text("xem https://shop.vn".into())),
            vec![
                json!({"type": "text", "text": {"preview_url": true, "body": "xem https://shop.vn"}})
            ]
        );
        assert_eq!(
            parts(Content::Raw(
                r#"{"type":"sticker","sticker":{"id":"1"}}"#.into()
            )),
            vec![json!({"type": "sticker", "sticker": {"id": "1"}})]
        );
        assert!(matches!(
            free_form(&Content::Raw("[]".into()), &settings()),
            Err(SendError::ContentRejected(_))
        ));
        assert_eq!(text_parts(&"a".repeat(MAX_TEXT_LEN + 1)).len(), 2);
    }

    fn choices(n: usize, prompt: &str) -> Content {
        Content::Choices(Choices {
            prompt: prompt.into(),
            options: (1..=n)
                .map(|i| Choice {
                    label: format!("Phương thức thanh toán {i}"),
                    value: format!("v{i}"),
                })
                .collect(),
        })
    }

    #[test]
    fn formats_choices_by_count() {
        let parts = |c: Content| free_form(&c, &settings()).unwrap();
        assert_eq!(
            parts(choices(2, "Chọn")),
            vec![json!({"type": "interactive", "interactive": {
                "type": "button",
                "body": {"text": "Chọn"},
                "action": {"buttons": [
                    {"type": "reply", "reply": {"id": "v1", "title": "Phương thức thanh to"}},
                    {"type": "reply", "reply": {"id": "v2", "title": "Phương thức thanh to"}},
                ]},
            }})]
        );
        let list = parts(choices(4, ""));
        assert_eq!(list[0]["interactive"]["type"], "list");
        assert_eq!(list[0]["interactive"]["body"]["text"], EMPTY_BODY);
        assert_eq!(list[0]["interactive"]["action"]["button"], "Chọn");
        assert_eq!(
            list[0]["interactive"]["action"]["sections"][0]["rows"][3],
            json!({"id": "v4", "title": "Phương thức thanh toán 4"})
        );
        let list = parts(choices(10, "Chọn"));
        assert_eq!(
            list[0]["interactive"]["action"]["sections"][0]["rows"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        let text = parts(choices(11, "Chọn"));
        assert_eq!(text.len(), 1);
        let body = text[0]["text"]["body"].as_str().unwrap();
        assert!(body.starts_with("Chọn\n1. Phương thức thanh toán 1\n"));
        assert!(body.ends_with("\n11. Phương thức thanh toán 11"));
        assert_eq!(
            parts(choices(0, "Hỏi")),
            vec![json!({"type": "text", "text": {"preview_url": false, "body": "Hỏi"}})]
        );
    }

    #[test]
    fn long_list_labels_keep_a_description() {
        let parts = free_form(
            &Content::Choices(Choices {
                prompt: "p".into(),
                options: (0..4)
                    .map(|i| Choice {
                        label: format!("Một lựa chọn có nhãn rất dài số {i}"),
                        value: i.to_string(),
                    })
                    .collect(),
            }),
            &settings(),
        )
        .unwrap();
        assert_eq!(
            parts[0]["interactive"]["action"]["sections"][0]["rows"][0],
            json!({
                "id": "0",
                "title": "Một lựa chọn có nhãn rất",
                "description": "Một lựa chọn có nhãn rất dài số 0",
            })
        );
    }

    #[test]
    fn degrades_cards() {
        let card = Card {
            title: "Áo dài".into(),
            subtitle: Some("450.000 ₫".into()),
            image_url: Some("https://x/p.jpg".into()),
            buttons: vec![
                Button {
                    label: "Xem".into(),
                    action: ButtonAction::Url("https://shop/p/1".into()),
                },
                Button {
                    label: "Gọi".into(),
                    action: ButtonAction::Phone("+84912345678".into()),
                },
                Button {
                    label: "Mua".into(),
                    action: ButtonAction::Postback("BUY_1".into()),
                },
            ],
        };
        assert_eq!(
            card_parts(&card),
            vec![
                json!({"type": "image", "image": {"link": "https://x/p.jpg", "caption": "Áo dài\n450.000 ₫"}}),
                json!({"type": "interactive", "interactive": {
                    "type": "button",
                    "body": {"text": "Xem: https://shop/p/1\nGọi: +84912345678"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "BUY_1", "title": "Mua"}}]},
                }}),
            ]
        );
        let plain = Card {
            title: "Áo dài".into(),
            subtitle: None,
            image_url: None,
            buttons: vec![Button {
                label: "Xem".into(),
                action: ButtonAction::Url("https://shop/p/1".into()),
            }],
        };
        assert_eq!(
            card_parts(&plain),
            vec![
                json!({"type": "text", "text": {"preview_url": true, "body": "Áo dài\nXem: https://shop/p/1"}})
            ]
        );
        let only_replies = Card {
            title: "Áo dài".into(),
            subtitle: None,
            image_url: Some("https://x/p.jpg".into()),
            buttons: vec![Button {
                label: "Hỏi".into(),
                action: ButtonAction::Say("còn size M?".into()),
            }],
        };
        assert_eq!(
            card_parts(&only_replies)[1]["interactive"]["body"]["text"],
            "Áo dài"
        );
        let carousel = free_form(&Content::Carousel(vec![plain.clone(); 12]), &settings()).unwrap();
        assert_eq!(carousel.len(), MAX_CAROUSEL_CARDS);
    }

    #[test]
    fn splits_and_truncates_by_characters() {
        assert_eq!(split_text("đổi trả hàng", 7), vec!["đổi trả", "hàng"]);
        assert_eq!(split_text("abcdef", 4), vec!["abcd", "ef"]);
        assert!(split_text(" \n ", 4).is_empty());
        assert_eq!(truncate("đổi trả", 3), "đổi");
    }

    fn webhook(value: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
            {"field": "messages", "value": value},
        ]}]})
    }

    fn phone(value: &str) -> Identity {
        Identity {
            kind: "phone".into(),
            value: value.into(),
        }
    }

    const BASE: &str = "https://graph.facebook.com/v21.0";

    #[test]
    fn parses_statuses() {
        let body = webhook(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
            "statuses": [
                {"id": "wamid.A", "status": "sent", "timestamp": "1700000000", "recipient_id": "84912345678",
                 "conversation": {"id": "c"}, "pricing": {"billable": true}},
                {"id": "wamid.A", "status": "read", "timestamp": "1700000005", "recipient_id": "84912345678"},
                {"id": "wamid.B", "status": "failed", "timestamp": "1700000006", "recipient_id": "84912345678",
                 "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message"}]},
                {"id": "wamid.C", "status": "failed", "recipient_id": "84912345678"},
                {"id": "wamid.D", "status": "deleted", "timestamp": "1700000007"},
                {"status": "delivered", "timestamp": "1700000007"},
            ],
        }));
        let events = parse_webhook(&body, Some("PNID"), BASE, 42).unwrap();
        let status = |id: &str, name: &str, status, at| {
            InboundEvent::Status(StatusUpdate {
                provider_event_id: format!("{id}:{name}"),
                message: MessageRef::Id(id.into()),
                recipient: Some(phone("+84912345678")),
                status,
                occurred_at: at,
            })
        };
        assert_eq!(
            events,
            vec![
                status("wamid.A", "sent", DeliveryStatus::Sent, 1_700_000_000_000),
                status("wamid.A", "read", DeliveryStatus::Read, 1_700_000_005_000),
                status(
                    "wamid.B",
                    "failed",
                    DeliveryStatus::Failed("131047: Re-engagement message".into()),
                    1_700_000_006_000
                ),
                status(
                    "wamid.C",
                    "failed",
                    DeliveryStatus::Failed("failed".into()),
                    42
                ),
            ]
        );
        assert!(parse_webhook(&body, Some("OTHER"), BASE, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn parses_messages() {
        let body = webhook(json!({
            "metadata": {"phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Lan"}, "wa_id": "84912345678"}],
            "messages": [
                {"from": "84912345678", "id": "wamid.1", "timestamp": "1700000001", "type": "text",
                 "text": {"body": "giờ mở cửa?"}},
                {"from": "84912345678", "id": "wamid.2", "timestamp": "1700000002", "type": "interactive",
                 "interactive": {"type": "button_reply", "button_reply": {"id": "RETRY", "title": "Thử lại"}}},
                {"from": "84912345678", "id": "wamid.3", "timestamp": "1700000003", "type": "interactive",
                 "interactive": {"type": "list_reply", "list_reply": {"id": "v4", "title": "Ví", "description": "d"}}},
                {"from": "84912345678", "id": "wamid.4", "timestamp": "1700000004", "type": "button",
                 "button": {"text": "Stop promotions", "payload": "OPT_OUT"}},
                {"from": "84912345678", "id": "wamid.5", "timestamp": "1700000005", "type": "image",
                 "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "x", "caption": "lỗi"}},
                {"from": "84912345678", "id": "wamid.6", "timestamp": "1700000006", "type": "document",
                 "document": {"id": "MEDIA2", "mime_type": "application/pdf", "filename": "a.pdf"}},
                {"from": "84912345678", "id": "wamid.7", "timestamp": "1700000007", "type": "location",
                 "location": {"latitude": 10.77, "longitude": 106.7, "name": "Shop"}},
                {"from": "84912345678", "id": "wamid.8", "timestamp": "1700000008", "type": "reaction",
                 "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
                {"from": "84912345678", "id": "wamid.9", "timestamp": "1700000009", "type": "unsupported",
                 "errors": [{"code": 131051}]},
                {"id": "wamid.10", "type": "text", "text": {"body": "no sender"}},
            ],
        }));
        let events = parse_webhook(&body, None, BASE, 0).unwrap();
        let message = |id: &str, at: i64, content: Vec<Content>, postback: Option<&str>| {
            InboundEvent::Message(InboundMessage {
                provider_message_id: id.into(),
                sender: phone("+84912345678"),
                conversation_id: "84912345678".into(),
                content,
                postback: postback.map(Into::into),
                occurred_at: at * 1000,
            })
        };
        assert_eq!(
            events,
            vec![
                message(
                    "wamid.1",
                    1_700_000_001,
                    vec![Content::Text("giờ mở cửa?".into())],
                    None
                ),
                message(
                    "wamid.2",
                    1_700_000_002,
                    vec![Content::Text("Thử lại".into())],
                    Some("RETRY")
                ),
                message(
                    "wamid.3",
                    1_700_000_003,
                    vec![Content::Text("Ví".into())],
                    Some("v4")
                ),
                message(
                    "wamid.4",
                    1_700_000_004,
                    vec![Content::Text("Stop promotions".into())],
                    Some("OPT_OUT")
                ),
                message(
                    "wamid.5",
                    1_700_000_005,
                    vec![Content::Image(Media {
                        url: format!("{BASE}/MEDIA1"),
                        mime: Some("image/jpeg".into()),
                        caption: Some("lỗi".into()),
                        filename: None,
                    })],
                    None
                ),
                message(
                    "wamid.6",
                    1_700_000_006,
                    vec![Content::File(Media {
                        url: format!("{BASE}/MEDIA2"),
                        mime: Some("application/pdf".into()),
                        caption: None,
                        filename: Some("a.pdf".into()),
                    })],
                    None
                ),
                message(
                    "wamid.7",
                    1_700_000_007,
                    vec![Content::Location(Geo {
                        latitude: 10.77,
                        longitude: 106.7,
                        address: Some("Shop".into()),
                    })],
                    None
                ),
                message("wamid.9", 1_700_000_009, vec![], None),
            ]
        );
    }

    #[test]
    fn stop_opts_out_of_marketing() {
        for text in ["STOP", " stop\n", "Stop"] {
            let body = webhook(json!({"messages": [
                {"from": "84912345678", "id": "wamid.1", "timestamp": "1700000001", "type": "text",
                 "text": {"body": text}},
            ]}));
            let events = parse_webhook(&body, None, BASE, 0).unwrap();
            assert_eq!(events.len(), 2, "{text:?}");
            assert_eq!(
                events[1],
                InboundEvent::OptedOut(OptOut {
                    who: phone("+84912345678"),
                    scope: "marketing".into()
                })
            );
        }
        let body = webhook(json!({"messages": [
            {"from": "84912345678", "id": "wamid.1", "timestamp": "1700000001", "type": "text",
             "text": {"body": "please stop"}},
        ]}));
        assert_eq!(parse_webhook(&body, None, BASE, 0).unwrap().len(), 1);
    }

    #[test]
    fn ignores_other_objects_and_fields() {
        let mut body = webhook(json!({"messages": [
            {"from": "1", "id": "wamid.1", "type": "text", "text": {"body": "x"}},
        ]}));
        body["entry"][0]["changes"][0]["field"] = "account_update".into();
        assert!(parse_webhook(&body, None, BASE, 0).unwrap().is_empty());
        body["object"] = "page".into();
        assert!(parse_webhook(&body, None, BASE, 0).unwrap().is_empty());
        assert!(matches!(
            parse_webhook(
                &json!({"object": "whatsapp_business_account"}),
                None,
                BASE,
                0
            ),
            Err(WebhookError::Malformed(_))
        ));
    }
}
