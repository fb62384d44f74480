//! Channel adapter: email through the SendGrid v3 Mail Send API (or any API that speaks it).
//!
//! - `send` renders the content to plain text and minimal, escaped HTML and posts one
//!   message to `/v3/mail/send` through the host's `outbound-http`, mapping SendGrid's
//!   answer to `send-ok`/`send-error`.
//! - `handle-webhook` verifies the signed Event Webhook (ECDSA P-256 over timestamp + raw
//!   body) with the host's `crypto` and turns SendGrid events into delivery statuses and
//!   opt-outs.
//! - `refresh-credentials` is not supported: SendGrid API keys do not expire.
//!
//! Config and secrets are listed in README.md.

use weft_guest::adapter::{
    Bounce, ChannelCapabilities, DeliveryStatus, Guest, HttpRequest, HttpResponse, InboundEvent,
    MessageRef, OptOut, OutboundMessage, PluginError, SendError, SendOk, StatusGranularity,
    StatusUpdate, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Request, Response};
use weft_guest::json::{self, json, Map, Value};
use weft_guest::types::{
    Button, ButtonAction, Card, ChannelKind, Choices, Content, Geo, Identity, Media,
    MessageCategory,
};
use weft_guest::{clock, config, crypto, log, serde_json};

/// Default API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://api.sendgrid.com";
/// Longest text the host should hand us: far below SendGrid's 30 MB message limit, far
/// above any sane marketing email.
const MAX_TEXT_LEN: u32 = 100_000;
/// Buttons rendered as links per card: more make an email look like spam.
const MAX_BUTTONS: u8 = 10;
/// Longest link label: long enough for a sentence, short enough for a button.
const MAX_BUTTON_LABEL: u8 = 80;
/// Longest subject taken from the first text line: RFC 5322's recommended line length.
const MAX_DERIVED_SUBJECT: usize = 78;
/// SendGrid accepts at most 10 categories per message.
const MAX_CATEGORIES: usize = 10;
/// Back-off after a 429 without `Retry-After`: SendGrid's limits are per second.
const DEFAULT_RATE_LIMIT_MS: u64 = clock::seconds(1);
/// Most characters of a non-JSON error body quoted in an error text: enough to diagnose,
/// short enough for one log line.
const MAX_QUOTED_BODY: usize = 200;
/// Default accepted clock skew for webhook timestamps (setting `webhook_max_skew_ms`).
const DEFAULT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Timeout for the provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
/// Opening of every generated HTML body (UTF-8, readable on phones, no external assets).
const HTML_HEAD: &str = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta \
    name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head><body \
    style=\"font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;color:#222\">";
/// Closing of every generated HTML body.
const HTML_TAIL: &str = "</body></html>";

/// The adapter.
struct Email;

impl Guest for Email {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Email,
            max_text_len: MAX_TEXT_LEN,
            max_buttons: MAX_BUTTONS,
            max_button_label: MAX_BUTTON_LABEL,
            content_kinds: ["text", "image", "card", "carousel", "choices", "raw"]
                .map(String::from)
                .to_vec(),
            window: None,
            status: StatusGranularity::PerMessage,
            max_send_per_sec: config::get("max_send_per_sec")
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0),
            extra_channels: vec![],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        let to = recipient_email(&msg.recipient.address)?;
        let settings = MailSettings::from_config()?;
        let mail = build_mail(&msg, &to, &settings)?;
        let api_key = config::get_secret("api_key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| SendError::Permanent("email: secret `api_key` is not set".into()))?;
        let url = format!(
            "{}/v3/mail/send",
            config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/')
        );
        // SendGrid has no idempotency key (the intent travels as custom arg `weft_intent`):
        // a timeout is `ambiguous` (from the SDK's `From<HttpError>`), never resent blindly.
        let req = Request::new("POST", &url)
            .header("authorization", &format!("Bearer {api_key}"))
            .json(&mail)
            .timeout_ms(REQUEST_TIMEOUT_MS);
        let resp = http::send(&req)?;
        Ok(SendOk {
            provider_message_id: interpret_send_response(&resp)?,
            accepted_at: clock::now(),
            quota_remaining: None,
        })
    }

    fn handle_webhook(req: HttpRequest) -> Result<WebhookResult, WebhookError> {
        // SendGrid only POSTs; answer anything else (a browser, a health check) harmlessly.
        if !req.method.eq_ignore_ascii_case("POST") {
            return Ok(WebhookResult {
                response: HttpResponse::text(200, "ok"),
                events: vec![],
            });
        }
        let timestamp = verify_signature(&req)?;
        let ts: i64 = timestamp.trim().parse().map_err(|_| {
            WebhookError::Malformed(format!("timestamp {timestamp:?} is not a number"))
        })?;
        let ts_ms = ts.saturating_mul(1000);
        let max_skew = config::get("webhook_max_skew_ms")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(DEFAULT_MAX_SKEW_MS);
        if max_skew > 0 && req.received_at.saturating_sub(ts_ms).abs() > max_skew {
            return Err(WebhookError::StaleTimestamp);
        }
        let parsed = parse_events(&req.body, ts_ms)?;
        if parsed.incomplete > 0 {
            log::warn!(
                "email: {} events lacked `event`, `email` or `sg_message_id`; kept what they allowed",
                parsed.incomplete
            );
        }
        Ok(WebhookResult {
            response: HttpResponse::text(200, "ok"),
            events: parsed.events,
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        Err(PluginError::not_supported(
            "email: SendGrid API keys do not expire; replace the `api_key` secret by hand",
        ))
    }
}

/// What `send` needs from the installation's settings.
#[derive(Debug, Clone, Default, PartialEq)]
struct MailSettings {
    /// Setting `from_email`: the verified sender address.
    from_email: String,
    /// Setting `from_name`: the sender's display name.
    from_name: Option<String>,
    /// Setting `reply_to`: where replies go, if not to `from_email`.
    reply_to: Option<String>,
    /// Setting `default_subject`: the subject when nothing else gives one.
    default_subject: Option<String>,
    /// Setting `unsubscribe_url`: `List-Unsubscribe` target of marketing mail.
    unsubscribe_url: Option<String>,
    /// Setting `unsubscribe_group_id`: SendGrid suppression group of marketing mail.
    unsubscribe_group_id: Option<i64>,
    /// Setting `unsubscribe_one_click` (default true): also send `List-Unsubscribe-Post`.
    one_click: bool,
}

impl MailSettings {
    /// Reads the settings; a missing or invalid one is a `permanent` error naming it.
    fn from_config() -> Result<Self, SendError> {
        let setting = |key: &str| {
            config::get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let from_email = setting("from_email")
            .ok_or_else(|| SendError::Permanent("email: config `from_email` is not set".into()))?;
        let unsubscribe_group_id = match setting("unsubscribe_group_id") {
            None => None,
            Some(id) => Some(id.parse().map_err(|_| {
                SendError::Permanent(format!(
                    "email: config `unsubscribe_group_id` {id:?} is not a number"
                ))
            })?),
        };
        Ok(MailSettings {
            from_email,
            from_name: setting("from_name"),
            reply_to: setting("reply_to"),
            default_subject: setting("default_subject"),
            unsubscribe_url: setting("unsubscribe_url"),
            unsubscribe_group_id,
            one_click: setting("unsubscribe_one_click").is_none_or(|v| v != "false"),
        })
    }
}

/// The recipient's address, from an `email` identity that looks like one.
fn recipient_email(address: &Identity) -> Result<String, SendError> {
    if address.kind != "email" {
        return Err(SendError::RecipientInvalid(format!(
            "email needs an email identity, got `{}`",
            address.kind
        )));
    }
    let email = address.value.trim();
    // The address itself stays out of the message: error texts end up in logs.
    if !looks_like_email(email) {
        return Err(SendError::RecipientInvalid(
            "not a valid email address".into(),
        ));
    }
    Ok(email.to_owned())
}

/// A cheap syntax check (`local@domain.tld`, no spaces or header-breaking characters);
/// SendGrid does the real validation and answers 400 on the rest.
fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    // RFC 5321 limits: 64 octets of local part, 255 of domain.
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && domain.len() <= 255
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"<>(),;:\"[]\\".contains(c))
}

/// The Mail Send request body for one message.
fn build_mail(
    msg: &OutboundMessage,
    to: &str,
    settings: &MailSettings,
) -> Result<Value, SendError> {
    let rendered = render(&msg.content)?;
    let metadata = json::object_or_empty(&msg.metadata);
    let subject = metadata
        .get("subject")
        .and_then(Value::as_str)
        .map(one_line)
        .filter(|s| !s.is_empty())
        .or(rendered.subject)
        .or(rendered.first_line)
        .or_else(|| settings.default_subject.as_deref().map(one_line))
        .ok_or_else(|| {
            SendError::ContentRejected(
                "no subject: set metadata `subject` or the `default_subject` setting".into(),
            )
        })?;

    let mut recipient = json!({"email": to});
    if let Some(name) = msg
        .recipient
        .display_name
        .as_deref()
        .map(one_line)
        .filter(|n| !n.is_empty())
    {
        recipient["name"] = Value::from(name);
    }
    let mut from = json!({"email": settings.from_email});
    if let Some(name) = &settings.from_name {
        from["name"] = Value::from(one_line(name));
    }
    let mut content = Vec::new();
    if !rendered.text.trim().is_empty() {
        content.push(json!({"type": "text/plain", "value": rendered.text}));
    }
    content.push(json!({"type": "text/html", "value": rendered.html}));

    let mut mail = json!({
        "personalizations": [{
            "to": [recipient],
            "custom_args": {
                "weft_tracking_id": msg.tracking_id,
                "weft_intent": msg.idempotency_key,
            },
        }],
        "from": from,
        "subject": subject,
        "content": content,
    });
    if let Some(reply_to) = &settings.reply_to {
        mail["reply_to"] = json!({"email": reply_to});
    }
    let categories: Vec<&str> = metadata
        .get("categories")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .filter(|c| !c.trim().is_empty())
                .take(MAX_CATEGORIES)
                .collect()
        })
        .unwrap_or_default();
    if !categories.is_empty() {
        mail["categories"] = json!(categories);
    }
    if msg.category == MessageCategory::Marketing {
        if let Some(url) = &settings.unsubscribe_url {
            let url = url.replace("{tracking_id}", &http::url_encode(&msg.tracking_id));
            let mut headers = Map::new();
            headers.insert("List-Unsubscribe".into(), Value::from(format!("<{url}>")));
            // RFC 8058 one-click unsubscribe needs an https URL that accepts the POST.
            if settings.one_click && url.to_ascii_lowercase().starts_with("https://") {
                headers.insert(
                    "List-Unsubscribe-Post".into(),
                    Value::from("List-Unsubscribe=One-Click"),
                );
            }
            mail["headers"] = Value::Object(headers);
        }
        if let Some(group) = settings.unsubscribe_group_id {
            mail["asm"] = json!({"group_id": group});
        }
    }
    Ok(mail)
}

/// `text` on one line: control characters (CR and LF above all, which would break the
/// header) become spaces, and the ends are trimmed.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The first non-blank line of a text item, cut to [`MAX_DERIVED_SUBJECT`] characters.
fn first_line_subject(text: &str) -> Option<String> {
    let line = text.lines().map(one_line).find(|l| !l.is_empty())?;
    if line.chars().count() <= MAX_DERIVED_SUBJECT {
        return Some(line);
    }
    let mut cut: String = line.chars().take(MAX_DERIVED_SUBJECT - 1).collect();
    cut.push('…');
    Some(cut)
}

/// The two bodies of a message, and the subjects the content suggests.
#[derive(Debug, Default, PartialEq)]
struct Rendered {
    /// The `text/plain` body.
    text: String,
    /// The `text/html` body.
    html: String,
    /// `subject` of the first `raw` item that has one.
    subject: Option<String>,
    /// The first non-blank line of the text items, cut for a subject.
    first_line: Option<String>,
}

/// Renders all content items; `content-rejected` for templates, bad `raw` items and
/// content with nothing to show.
fn render(content: &[Content]) -> Result<Rendered, SendError> {
    let mut text = Vec::new();
    let mut html = Vec::new();
    let mut subject = None;
    let mut first_line = None;
    // A lone raw item with HTML is the tenant's whole document: send it as it is.
    let mut whole_document = None;
    for item in content {
        match item {
            Content::Text(t) => {
                first_line = first_line.or_else(|| first_line_subject(t));
                text.push(t.trim_end().to_owned());
                html.push(paragraphs(t));
            }
            Content::Image(media) => {
                text.push(media_text(media));
                html.push(image_html(media));
            }
            Content::Video(media) | Content::Audio(media) | Content::File(media) => {
                text.push(media_text(media));
                let label = media
                    .caption
                    .as_deref()
                    .or(media.filename.as_deref())
                    .unwrap_or(&media.url);
                html.push(format!("<p>{}</p>", link_html(&media.url, label, false)));
            }
            Content::Location(geo) => {
                let (label, url) = location(geo);
                text.push(format!("{label}\n{url}"));
                html.push(format!("<p>{}</p>", link_html(&url, &label, false)));
            }
            Content::Card(card) => {
                text.push(card_text(card));
                html.push(card_html(card));
            }
            Content::Carousel(cards) => {
                for card in cards {
                    text.push(card_text(card));
                    html.push(card_html(card));
                }
            }
            Content::Choices(choices) => {
                text.push(choices_text(choices));
                html.push(choices_html(choices));
            }
            Content::Raw(raw) => {
                let raw = parse_raw(raw)?;
                subject = subject.or(raw.subject);
                if let Some(t) = raw.text {
                    text.push(t.trim_end().to_owned());
                    if raw.html.is_none() {
                        html.push(paragraphs(&t));
                    }
                }
                if let Some(h) = raw.html {
                    if content.len() == 1 {
                        whole_document = Some(h.clone());
                    }
                    html.push(h);
                }
            }
            Content::Template(template) => {
                return Err(SendError::ContentRejected(format!(
                    "email does not send provider templates (template `{}`); send rendered content",
                    template.id
                )))
            }
        }
    }
    text.retain(|t| !t.trim().is_empty());
    html.retain(|h| !h.trim().is_empty());
    if html.is_empty() {
        return Err(SendError::ContentRejected("no content to send".into()));
    }
    Ok(Rendered {
        text: text.join("\n\n"),
        html: whole_document
            .unwrap_or_else(|| format!("{HTML_HEAD}\n{}\n{HTML_TAIL}", html.join("\n"))),
        subject,
        first_line,
    })
}

/// A `raw` email item: `{"subject", "html", "text"}`, each optional.
#[derive(Debug, Default, PartialEq)]
struct RawEmail {
    /// Subject to use unless metadata gives one.
    subject: Option<String>,
    /// HTML inserted as it is (the tenant wrote it; it is not escaped).
    html: Option<String>,
    /// Plain text.
    text: Option<String>,
}

/// Parses a `raw` item; anything but a JSON object is `content-rejected`.
fn parse_raw(raw: &str) -> Result<RawEmail, SendError> {
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| SendError::ContentRejected(format!("raw content is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(SendError::ContentRejected(
            "raw email content must be an object {\"subject\", \"html\", \"text\"}".into(),
        ));
    }
    let field = |key: &str| {
        json::str_at(&value, key)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    Ok(RawEmail {
        subject: field("subject").map(|s| one_line(&s)),
        html: field("html"),
        text: field("text"),
    })
}

/// HTML-escapes `text` for element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `url` trimmed if its scheme is safe to link (`https`, `http`, and for links also
/// `mailto` and `tel`); `None` for `javascript:`, `data:` and the rest.
fn safe_url(url: &str, image: bool) -> Option<&str> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let schemes: &[&str] = if image {
        &["https://", "http://"]
    } else {
        &["https://", "http://", "mailto:", "tel:"]
    };
    schemes.iter().any(|s| lower.starts_with(s)).then_some(url)
}

/// A link to `url` labelled `label`, styled as a button if asked; just the escaped label
/// (and the URL as text) when the URL is not safe to link.
fn link_html(url: &str, label: &str, button: bool) -> String {
    let Some(url) = safe_url(url, false) else {
        return escape(&format!("{label} ({url})"));
    };
    let style = if button {
        " style=\"display:inline-block;padding:10px 18px;background:#1a73e8;color:#ffffff;\
         text-decoration:none;border-radius:4px\""
    } else {
        ""
    };
    format!("<a href=\"{}\"{style}>{}</a>", escape(url), escape(label))
}

/// Text as HTML paragraphs: blank lines separate paragraphs, single newlines become `<br>`.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>", escape(p).replace('\n', "<br>\n")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A media item as plain text: caption (if any) above the URL.
fn media_text(media: &Media) -> String {
    match media
        .caption
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(caption) => format!("{caption}\n{}", media.url),
        None => media.url.clone(),
    }
}

/// An image with its caption as alt text and below it; a plain link if the URL is not
/// http(s).
fn image_html(media: &Media) -> String {
    let caption = media
        .caption
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let Some(url) = safe_url(&media.url, true) else {
        return format!(
            "<p>{}</p>",
            link_html(&media.url, caption.unwrap_or(&media.url), false)
        );
    };
    let mut html = format!(
        "<p><img src=\"{}\" alt=\"{}\" style=\"max-width:100%;height:auto\"></p>",
        escape(url),
        escape(caption.unwrap_or(""))
    );
    if let Some(caption) = caption {
        html.push_str(&format!("\n<p>{}</p>", escape(caption)));
    }
    html
}

/// A location's label (its address, else the coordinates) and map link.
fn location(geo: &Geo) -> (String, String) {
    let url = format!(
        "https://maps.google.com/?q={},{}",
        geo.latitude, geo.longitude
    );
    let label = geo
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map_or_else(
            || format!("{}, {}", geo.latitude, geo.longitude),
            str::to_owned,
        );
    (label, url)
}

/// The link target of a button, if an email can follow it: URLs as they are, phone
/// numbers as `tel:`. Postback and say buttons need a chat and are left out.
fn button_target(button: &Button) -> Option<String> {
    match &button.action {
        ButtonAction::Url(url) => Some(url.clone()),
        ButtonAction::Phone(phone) => Some(format!("tel:{}", phone.trim())),
        ButtonAction::Postback(_) | ButtonAction::Say(_) => None,
    }
}

/// At most [`MAX_BUTTON_LABEL`] characters of a button label.
fn label(button: &Button) -> String {
    button
        .label
        .chars()
        .take(usize::from(MAX_BUTTON_LABEL))
        .collect()
}

/// The linkable buttons of a card, at most [`MAX_BUTTONS`], as (label, target).
fn card_links(card: &Card) -> Vec<(String, String)> {
    card.buttons
        .iter()
        .filter_map(|b| Some((label(b), button_target(b)?)))
        .take(usize::from(MAX_BUTTONS))
        .collect()
}

/// A card as plain text: title, subtitle, then `label: target` per link.
fn card_text(card: &Card) -> String {
    let mut lines = vec![card.title.trim().to_owned()];
    lines.extend(
        card.subtitle
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    lines.extend(
        card_links(card)
            .into_iter()
            .map(|(label, target)| format!("{label}: {target}")),
    );
    lines.join("\n")
}

/// A card as an HTML block: image, title, subtitle and one button-styled link per button.
fn card_html(card: &Card) -> String {
    let mut html = String::from(
        "<div style=\"border:1px solid #e5e5e5;border-radius:8px;padding:16px;margin:16px 0\">",
    );
    if let Some(url) = card.image_url.as_deref().and_then(|u| safe_url(u, true)) {
        html.push_str(&format!(
            "\n<img src=\"{}\" alt=\"{}\" style=\"max-width:100%;height:auto;border-radius:4px\">",
            escape(url),
            escape(&card.title)
        ));
    }
    html.push_str(&format!(
        "\n<h3 style=\"margin:8px 0\">{}</h3>",
        escape(card.title.trim())
    ));
    if let Some(subtitle) = card
        .subtitle
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        html.push_str(&format!(
            "\n<p style=\"margin:4px 0;color:#555555\">{}</p>",
            escape(subtitle)
        ));
    }
    for (label, target) in card_links(card) {
        html.push_str(&format!("\n<p>{}</p>", link_html(&target, &label, true)));
    }
    html.push_str("\n</div>");
    html
}

/// Choices as plain text: the prompt, then a numbered list (the customer can reply with
/// the number).
fn choices_text(choices: &Choices) -> String {
    let mut text = choices.prompt.trim_end().to_owned();
    for (i, choice) in choices.options.iter().enumerate() {
        text.push_str(&format!("\n{}. {}", i + 1, choice.label));
    }
    text
}

/// Choices as HTML: the prompt and an ordered list.
fn choices_html(choices: &Choices) -> String {
    let items: String = choices
        .options
        .iter()
        .map(|c| format!("<li>{}</li>", escape(&c.label)))
        .collect();
    format!("{}\n<ol>{items}</ol>", paragraphs(&choices.prompt))
}

/// Maps SendGrid's answer to a Mail Send request: the `X-Message-Id`, or why not.
///
/// | answer                                      | result                  |
/// |---------------------------------------------|-------------------------|
/// | 2xx with `X-Message-Id`                     | ok                      |
/// | 2xx without it                              | `ambiguous`             |
/// | 5xx                                         | `retryable`             |
/// | 429                                         | `rate-limited`          |
/// | 401, 403                                    | `permanent` (key)       |
/// | 400 naming the `to` address                 | `recipient-invalid`     |
/// | other 400, 413                              | `content-rejected`      |
/// | anything else                               | `permanent`             |
fn interpret_send_response(resp: &Response) -> Result<String, SendError> {
    if resp.status >= 500 {
        return Err(SendError::Retryable(format!(
            "sendgrid http {}",
            resp.status
        )));
    }
    if resp.status == 429 {
        return Err(SendError::RateLimited(retry_after_ms(resp)));
    }
    if resp.is_success() {
        return resp
            .header("x-message-id")
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                SendError::Ambiguous(format!(
                    "sendgrid http {} without X-Message-Id",
                    resp.status
                ))
            });
    }
    let errors = send_errors(resp);
    let summary = if errors.is_empty() {
        let text = resp.text();
        text.chars().take(MAX_QUOTED_BODY).collect()
    } else {
        errors
            .iter()
            .map(|(field, message)| match field {
                Some(field) => format!("{field}: {message}"),
                None => message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let status = resp.status;
    Err(match status {
        401 | 403 => SendError::Permanent(format!(
            "sendgrid http {status}: the API key was refused; SendGrid API keys do not expire, \
             so replace the `api_key` secret or give the key the Mail Send permission: {summary}"
        )),
        400 if errors
            .iter()
            .any(|(field, message)| is_recipient_error(field.as_deref(), message)) =>
        {
            SendError::RecipientInvalid(format!("sendgrid http 400: {summary}"))
        }
        400 | 413 => SendError::ContentRejected(format!("sendgrid http {status}: {summary}")),
        _ => SendError::Permanent(format!("sendgrid http {status}: {summary}")),
    })
}

/// SendGrid's `{"errors":[{"field","message"}]}` as (field, message) pairs.
fn send_errors(resp: &Response) -> Vec<(Option<String>, String)> {
    let body: Value = resp.json().unwrap_or_default();
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        json::text_at(e, "field").filter(|f| !f.is_empty()),
                        json::text_at(e, "message").unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a 400 error is about the recipient: its field has a `to` segment
/// (`personalizations.0.to.0.email`), or, without a field, its message speaks of the
/// recipient or an email address that is not the sender's or the reply-to.
fn is_recipient_error(field: Option<&str>, message: &str) -> bool {
    match field {
        Some(field) => field.split('.').any(|segment| segment == "to"),
        None => {
            let m = message.to_ascii_lowercase();
            m.contains("recipient")
                || m.contains("to array")
                || (m.contains("email") && !m.contains("from") && !m.contains("reply"))
        }
    }
}

/// `Retry-After` in milliseconds when it holds a positive number of seconds, else
/// [`DEFAULT_RATE_LIMIT_MS`] (an HTTP-date form is not worth a date parser here).
fn retry_after_ms(resp: &Response) -> u64 {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_RATE_LIMIT_MS, |s| {
            s.saturating_mul(clock::SECOND_MS)
        })
}

/// Checks `X-Twilio-Email-Event-Webhook-Signature` (base64 DER ECDSA P-256/SHA-256) over
/// `X-Twilio-Email-Event-Webhook-Timestamp` + raw body against the `webhook_public_key`
/// setting (base64 DER, as SendGrid shows it). Returns the signed timestamp.
fn verify_signature(req: &HttpRequest) -> Result<String, WebhookError> {
    let signature = req
        .header("x-twilio-email-event-webhook-signature")
        .and_then(crypto::base64_decode)
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::BadSignature)?;
    let timestamp = req
        .header("x-twilio-email-event-webhook-timestamp")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(WebhookError::BadSignature)?;
    let Some(key) = config::get("webhook_public_key")
        .as_deref()
        .and_then(public_key_der)
    else {
        log::error(
            "email: setting `webhook_public_key` is missing or not base64; refusing webhooks",
        );
        return Err(WebhookError::BadSignature);
    };
    if crypto::ecdsa_p256_verify(&key, &signed_data(timestamp, &req.body), &signature) {
        Ok(timestamp.to_owned())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// The DER bytes of the configured public key: base64 as SendGrid shows it, or the same
/// wrapped in PEM armour.
fn public_key_der(setting: &str) -> Option<Vec<u8>> {
    let body: String = setting
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .collect();
    crypto::base64_decode(&body).filter(|k| !k.is_empty())
}

/// What SendGrid signs: the timestamp header's text, then the raw body.
fn signed_data(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(timestamp.len() + body.len());
    data.extend_from_slice(timestamp.as_bytes());
    data.extend_from_slice(body);
    data
}

/// The events of one verified webhook body, and how many were incomplete.
#[derive(Debug, Default, PartialEq)]
struct ParsedEvents {
    /// Normalized events.
    events: Vec<InboundEvent>,
    /// Known events that lacked a field they need (`event`, `email` for opt-outs,
    /// `sg_message_id` for statuses), or array items that are not objects.
    incomplete: usize,
}

/// Turns SendGrid's JSON array of events into Weft events. `fallback_ms` (the signed
/// timestamp) dates events without a `timestamp`.
fn parse_events(body: &[u8], fallback_ms: i64) -> Result<ParsedEvents, WebhookError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
    let items = value
        .as_array()
        .ok_or_else(|| WebhookError::Malformed("body is not a JSON array of events".into()))?;
    let mut parsed = ParsedEvents::default();
    for item in items {
        parse_one(item, fallback_ms, &mut parsed);
    }
    Ok(parsed)
}

/// Adds the Weft events for one SendGrid event to `out`.
fn parse_one(item: &Value, fallback_ms: i64, out: &mut ParsedEvents) {
    let Some(event) = json::str_at(item, "event") else {
        out.incomplete += 1;
        return;
    };
    let field = |key: &str| json::text_at(item, key).filter(|v| !v.trim().is_empty());
    let reason = |default: &str| {
        field("reason")
            .or_else(|| field("response"))
            .or_else(|| field("status"))
            .unwrap_or_else(|| default.to_owned())
    };
    let (status, opt_out) = match event {
        "processed" => (DeliveryStatus::Accepted, false),
        "delivered" => (DeliveryStatus::Delivered, false),
        "open" => (DeliveryStatus::Opened, false),
        "click" => (
            DeliveryStatus::Clicked(field("url").unwrap_or_default()),
            false,
        ),
        "bounce" => (
            DeliveryStatus::Bounced(Bounce {
                // SendGrid's `type` is `bounce` (hard) or `blocked` (soft, may pass later).
                permanent: json::str_at(item, "type") != Some("blocked"),
                reason: reason("bounce"),
            }),
            false,
        ),
        "dropped" => (DeliveryStatus::Failed(reason("dropped")), false),
        "spamreport" => (DeliveryStatus::Complained, true),
        "unsubscribe" | "group_unsubscribe" => (DeliveryStatus::Unsubscribed, true),
        // `deferred` is a retry in progress; `group_resubscribe` and others have no
        // Weft status.
        _ => return,
    };
    let recipient = field("email").map(|email| Identity {
        kind: "email".into(),
        value: email.trim().to_owned(),
    });
    let occurred_at = json::path(item, "timestamp")
        .and_then(Value::as_i64)
        .map_or(fallback_ms, |s| s.saturating_mul(1000));
    match field("sg_message_id").map(|id| message_id(&id).to_owned()) {
        Some(id) => {
            let event_id =
                field("sg_event_id").unwrap_or_else(|| format!("{id}:{event}:{occurred_at}"));
            out.events.push(InboundEvent::Status(StatusUpdate {
                provider_event_id: event_id,
                message: MessageRef::Id(id),
                recipient: recipient.clone(),
                status,
                occurred_at,
            }));
        }
        None => out.incomplete += 1,
    }
    if opt_out {
        match recipient {
            Some(who) => out.events.push(InboundEvent::OptedOut(OptOut {
                who,
                scope: "marketing".into(),
            })),
            None => out.incomplete += 1,
        }
    }
}

/// The `X-Message-Id` inside an `sg_message_id`: SendGrid appends `.filter…` (or
/// `.recvd-…`) to it. Cut at `.filter` when present (old ids contain dots of their own),
/// else at the first dot.
fn message_id(sg_message_id: &str) -> &str {
    let id = sg_message_id.trim();
    let end = id
        .find(".filter")
        .or_else(|| id.find('.'))
        .unwrap_or(id.len());
    &id[..end]
}

weft_guest::export_channel_adapter!(Email);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::adapter::Recipient;
    use weft_guest::types::{Choice, TemplateRef};

    /// A provider response with a body and headers.
    fn response(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// The error for a response expected to fail.
    fn err(status: u16, body: &str) -> SendError {
        interpret_send_response(&response(status, body, &[])).unwrap_err()
    }

    /// A message to `lan@example.vn` with the given content, category and metadata.
    fn message(
        content: Vec<Content>,
        category: MessageCategory,
        metadata: &str,
    ) -> OutboundMessage {
        OutboundMessage {
            idempotency_key: "intent-1".into(),
            tracking_id: "trk-1".into(),
            channel: ChannelKind::Email,
            recipient: Recipient {
                profile_id: "p_demo".into(),
                address: Identity {
                    kind: "email".into(),
                    value: "lan@example.vn".into(),
                },
                display_name: Some("Lan".into()),
                last_inbound_at: None,
            },
            category,
            content,
            tag: None,
            metadata: metadata.into(),
        }
    }

    /// Settings with just a sender.
    fn settings() -> MailSettings {
        MailSettings {
            from_email: "shop@example.vn".into(),
            from_name: Some("Shop".into()),
            one_click: true,
            ..MailSettings::default()
        }
    }

    /// A text item.
    fn text(t: &str) -> Content {
        Content::Text(t.into())
    }

    #[test]
    fn maps_sendgrid_answers() {
        assert_eq!(
            interpret_send_response(&response(202, "", &[("X-Message-Id", "abc123")])).unwrap(),
            "abc123"
        );
        assert!(matches!(err(202, ""), SendError::Ambiguous(_)));
        assert!(matches!(err(500, ""), SendError::Retryable(_)));
        assert!(matches!(err(503, "{}"), SendError::Retryable(_)));
        assert_eq!(err(429, ""), SendError::RateLimited(1_000));
        assert_eq!(
            interpret_send_response(&response(429, "", &[("retry-after", "30")])).unwrap_err(),
            SendError::RateLimited(30_000)
        );
        for status in [401, 403] {
            assert!(matches!(
                err(status, r#"{"errors":[{"field":null,"message":"The provided authorization grant is invalid, expired, or revoked"}]}"#),
                SendError::Permanent(m) if m.contains("do not expire")
            ));
        }
        assert!(matches!(
            err(
                400,
                r#"{"errors":[{"field":"personalizations.0.to.0.email","message":"Does not contain a valid address."}]}"#
            ),
            SendError::RecipientInvalid(_)
        ));
        assert!(matches!(
            err(
                400,
                r#"{"errors":[{"message":"The email address is invalid."}]}"#
            ),
            SendError::RecipientInvalid(_)
        ));
        assert!(matches!(
            err(
                400,
                r#"{"errors":[{"field":"from.email","message":"Does not contain a valid address."}]}"#
            ),
            SendError::ContentRejected(_)
        ));
        assert!(matches!(
            err(400, r#"{"errors":[{"field":"subject","message":"The subject is required."}]}"#),
            SendError::ContentRejected(m) if m.contains("subject")
        ));
        assert!(matches!(err(413, "too big"), SendError::ContentRejected(_)));
        assert!(matches!(err(404, "nope"), SendError::Permanent(_)));
    }

    #[test]
    fn recognises_recipient_errors() {
        assert!(is_recipient_error(Some("personalizations.0.to"), "x"));
        assert!(is_recipient_error(
            Some("personalizations.0.to.0.email"),
            "x"
        ));
        assert!(!is_recipient_error(Some("reply_to.email"), "bad email"));
        assert!(!is_recipient_error(Some("from"), "bad email"));
        assert!(is_recipient_error(None, "Invalid recipient"));
        assert!(!is_recipient_error(
            None,
            "The from email does not match a verified Sender Identity"
        ));
        assert!(!is_recipient_error(None, "Content value must be a string"));
    }

    #[test]
    fn validates_recipients() {
        let id = |kind: &str, value: &str| Identity {
            kind: kind.into(),
            value: value.into(),
        };
        assert_eq!(
            recipient_email(&id("email", " lan@example.vn ")).unwrap(),
            "lan@example.vn"
        );
        for bad in [
            "",
            "lan",
            "lan@",
            "@example.vn",
            "lan@example",
            "lan @example.vn",
            "a@b@c.vn",
            "lan@example.vn\r\nBcc: x@y.z",
            "<lan@example.vn>",
            "lan@.vn",
            "lan@example..vn",
        ] {
            assert!(
                matches!(
                    recipient_email(&id("email", bad)),
                    Err(SendError::RecipientInvalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            recipient_email(&id("phone", "+84912345678")),
            Err(SendError::RecipientInvalid(_))
        ));
    }

    #[test]
    fn builds_a_transactional_mail() {
        let msg = message(
            vec![text("Đơn hàng #12 đã xác nhận\nCảm ơn bạn <3")],
            MessageCategory::Transactional,
            r#"{"categories":["order","confirm"]}"#,
        );
        let mut s = settings();
        s.reply_to = Some("help@example.vn".into());
        s.unsubscribe_url = Some("https://example.vn/u".into());
        let mail = build_mail(&msg, "lan@example.vn", &s).unwrap();
        assert_eq!(
            mail["personalizations"],
            json!([{
                "to": [{"email": "lan@example.vn", "name": "Lan"}],
                "custom_args": {"weft_tracking_id": "trk-1", "weft_intent": "intent-1"},
            }])
        );
        assert_eq!(
            mail["from"],
            json!({"email": "shop@example.vn", "name": "Shop"})
        );
        assert_eq!(mail["reply_to"], json!({"email": "help@example.vn"}));
        assert_eq!(mail["subject"], "Đơn hàng #12 đã xác nhận");
        assert_eq!(mail["categories"], json!(["order", "confirm"]));
        assert_eq!(
            mail["content"][0],
            json!({"type": "text/plain", "value": "Đơn hàng #12 đã xác nhận\nCảm ơn bạn <3"})
        );
        assert_eq!(mail["content"][1]["type"], "text/html");
        let html = mail["content"][1]["value"].as_str().unwrap();
        assert!(
            html.contains("<p>Đơn hàng #12 đã xác nhận<br>\nCảm ơn bạn &lt;3</p>"),
            "{html}"
        );
        assert!(
            mail.get("headers").is_none(),
            "no List-Unsubscribe on transactional mail"
        );
        assert!(mail.get("asm").is_none());
    }

    #[test]
    fn marks_marketing_mail_for_unsubscribing() {
        let msg = message(
            vec![text("Sale")],
            MessageCategory::Marketing,
            r#"{"subject":"Ưu đãi\r\nBcc: x@y.z"}"#,
        );
        let mut s = settings();
        s.unsubscribe_url = Some("https://example.vn/u?t={tracking_id}".into());
        s.unsubscribe_group_id = Some(42);
        let mail = build_mail(&msg, "lan@example.vn", &s).unwrap();
        assert_eq!(mail["subject"], "Ưu đãi  Bcc: x@y.z");
        assert_eq!(
            mail["headers"],
            json!({
                "List-Unsubscribe": "<https://example.vn/u?t=trk-1>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            })
        );
        assert_eq!(mail["asm"], json!({"group_id": 42}));
        s.one_click = false;
        s.unsubscribe_group_id = None;
        let mail = build_mail(&msg, "lan@example.vn", &s).unwrap();
        assert_eq!(
            mail["headers"],
            json!({"List-Unsubscribe": "<https://example.vn/u?t=trk-1>"})
        );
        assert!(mail.get("asm").is_none());
    }

    #[test]
    fn picks_the_subject() {
        let subject = |content: Vec<Content>, metadata: &str, default: Option<&str>| {
            let mut s = settings();
            s.default_subject = default.map(Into::into);
            build_mail(
                &message(content, MessageCategory::Service, metadata),
                "lan@example.vn",
                &s,
            )
            .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(
            subject(vec![text("Body")], r#"{"subject":"Meta"}"#, None).unwrap(),
            "Meta"
        );
        assert_eq!(
            subject(
                vec![
                    Content::Raw(r#"{"subject":"Raw","html":"<b>x</b>"}"#.into()),
                    text("Body")
                ],
                "{}",
                None
            )
            .unwrap(),
            "Raw"
        );
        assert_eq!(
            subject(vec![text("\n  \nFirst line\nsecond")], "{}", Some("D")).unwrap(),
            "First line"
        );
        let long = "ư".repeat(100);
        let cut = subject(vec![text(&long)], "{}", None).unwrap();
        assert_eq!(cut.chars().count(), MAX_DERIVED_SUBJECT);
        assert!(cut.ends_with('…'));
        let image = Content::Image(Media {
            url: "https://x.vn/a.png".into(),
            mime: None,
            caption: None,
            filename: None,
        });
        assert_eq!(
            subject(vec![image.clone(), text("Xin chào")], "{}", None).unwrap(),
            "Xin chào"
        );
        assert_eq!(
            subject(vec![image], "{}", Some("Tin mới")).unwrap(),
            "Tin mới"
        );
        assert_eq!(
            subject(
                vec![Content::Raw(r#"{"html":"<b>x</b>"}"#.into())],
                "{}",
                Some("Tin mới")
            )
            .unwrap(),
            "Tin mới"
        );
        assert!(matches!(
            subject(
                vec![Content::Raw(r#"{"html":"<b>x</b>"}"#.into())],
                "{}",
                None
            ),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn renders_cards_safely() {
        let card = Card {
            title: "Áo <dài>".into(),
            subtitle: Some("450.000đ & free ship".into()),
            image_url: Some("https://shop.vn/a.jpg?x=1&y=\"2\"".into()),
            buttons: vec![
                Button {
                    label: "Xem".into(),
                    action: ButtonAction::Url("https://shop.vn/p/1?a=1&b=2".into()),
                },
                Button {
                    label: "Gọi".into(),
                    action: ButtonAction::Phone("+84281234567".into()),
                },
                Button {
                    label: "Hack".into(),
                    action: ButtonAction::Url("javascript:alert(1)".into()),
                },
                Button {
                    label: "Mua".into(),
                    action: ButtonAction::Postback("BUY".into()),
                },
            ],
        };
        let r = render(&[Content::Card(card.clone())]).unwrap();
        assert_eq!(
            r.text,
            "Áo <dài>\n450.000đ & free ship\nXem: https://shop.vn/p/1?a=1&b=2\nGọi: tel:+84281234567\nHack: javascript:alert(1)"
        );
        assert!(r.html.starts_with(HTML_HEAD) && r.html.ends_with(HTML_TAIL));
        assert!(
            r.html
                .contains("<h3 style=\"margin:8px 0\">Áo &lt;dài&gt;</h3>"),
            "{}",
            r.html
        );
        assert!(r.html.contains("450.000đ &amp; free ship"));
        assert!(r
            .html
            .contains("src=\"https://shop.vn/a.jpg?x=1&amp;y=&quot;2&quot;\""));
        assert!(r.html.contains("href=\"https://shop.vn/p/1?a=1&amp;b=2\""));
        assert!(r.html.contains("href=\"tel:+84281234567\""));
        assert!(!r.html.contains("href=\"javascript"), "{}", r.html);
        assert!(r.html.contains("Hack (javascript:alert(1))"));
        assert!(!r.html.contains("Mua"));
        let many = Card {
            buttons: (0..15)
                .map(|i| Button {
                    label: format!("{i}{}", "x".repeat(100)),
                    action: ButtonAction::Url(format!("https://x.vn/{i}")),
                })
                .collect(),
            ..card.clone()
        };
        let links = card_links(&many);
        assert_eq!(links.len(), usize::from(MAX_BUTTONS));
        assert!(links
            .iter()
            .all(|(l, _)| l.chars().count() == usize::from(MAX_BUTTON_LABEL)));
        let carousel = render(&[Content::Carousel(vec![card.clone(), card])]).unwrap();
        assert_eq!(carousel.html.matches("<div style=").count(), 2);
    }

    #[test]
    fn renders_other_items() {
        let choices = Content::Choices(Choices {
            prompt: "Bạn cần gì?".into(),
            options: vec![
                Choice {
                    label: "Đổi <hàng>".into(),
                    value: "swap".into(),
                },
                Choice {
                    label: "Trả hàng".into(),
                    value: "return".into(),
                },
            ],
        });
        let r = render(&[choices]).unwrap();
        assert_eq!(r.text, "Bạn cần gì?\n1. Đổi <hàng>\n2. Trả hàng");
        assert!(r
            .html
            .contains("<p>Bạn cần gì?</p>\n<ol><li>Đổi &lt;hàng&gt;</li><li>Trả hàng</li></ol>"));
        let image = Content::Image(Media {
            url: "https://x.vn/a.png".into(),
            mime: None,
            caption: Some("Mẫu \"mới\"".into()),
            filename: None,
        });
        let r = render(&[image]).unwrap();
        assert_eq!(r.text, "Mẫu \"mới\"\nhttps://x.vn/a.png");
        assert!(r
            .html
            .contains("<img src=\"https://x.vn/a.png\" alt=\"Mẫu &quot;mới&quot;\""));
        let data = Content::Image(Media {
            url: "data:image/png;base64,AA".into(),
            mime: None,
            caption: None,
            filename: None,
        });
        assert!(!render(&[data]).unwrap().html.contains("<img"));
        let file = Content::File(Media {
            url: "https://x.vn/a.pdf".into(),
            mime: None,
            caption: None,
            filename: Some("hoa-don.pdf".into()),
        });
        assert!(render(&[file])
            .unwrap()
            .html
            .contains("<a href=\"https://x.vn/a.pdf\">hoa-don.pdf</a>"));
        let geo = Content::Location(Geo {
            latitude: 10.5,
            longitude: 106.25,
            address: None,
        });
        assert_eq!(
            render(&[geo]).unwrap().text,
            "10.5, 106.25\nhttps://maps.google.com/?q=10.5,106.25"
        );
        let r = render(&[text("a\n\nb")]).unwrap();
        assert!(r.html.contains("<p>a</p>\n<p>b</p>"));
    }

    #[test]
    fn handles_raw_and_refuses_templates() {
        let lone = render(&[Content::Raw(
            r#"{"subject":"S","html":"<html><b>Hi</b></html>","text":"Hi"}"#.into(),
        )])
        .unwrap();
        assert_eq!(
            lone,
            Rendered {
                text: "Hi".into(),
                html: "<html><b>Hi</b></html>".into(),
                subject: Some("S".into()),
                first_line: None,
            }
        );
        let mixed = render(&[
            text("Intro"),
            Content::Raw(r#"{"html":"<b>Hi</b>"}"#.into()),
        ])
        .unwrap();
        assert_eq!(mixed.text, "Intro");
        assert!(mixed.html.contains("<p>Intro</p>\n<b>Hi</b>"));
        let text_only = render(&[Content::Raw(r#"{"text":"a < b"}"#.into())]).unwrap();
        assert!(text_only.html.contains("<p>a &lt; b</p>"));
        for bad in ["nope", "[1]", "\"s\""] {
            assert!(
                matches!(
                    render(&[Content::Raw(bad.into())]),
                    Err(SendError::ContentRejected(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            render(&[Content::Raw("{}".into())]),
            Err(SendError::ContentRejected(_))
        ));
        assert!(matches!(
            render(&[Content::Template(TemplateRef {
                id: "t".into(),
                language: None,
                params: "{}".into()
            })]),
            Err(SendError::ContentRejected(_))
        ));
        assert!(matches!(render(&[]), Err(SendError::ContentRejected(_))));
        assert!(matches!(
            render(&[text("  ")]),
            Err(SendError::ContentRejected(_))
        ));
        let mail = build_mail(
            &message(
                vec![Content::Raw(r#"{"subject":"S","html":"<b>x</b>"}"#.into())],
                MessageCategory::Service,
                "{}",
            ),
            "lan@example.vn",
            &settings(),
        )
        .unwrap();
        assert_eq!(
            mail["content"],
            json!([{"type": "text/html", "value": "<b>x</b>"}]),
            "no empty text/plain part"
        );
    }

    #[test]
    fn builds_the_signed_data_and_reads_keys() {
        assert_eq!(
            signed_data("1700000000", b"[{}]"),
            b"1700000000[{}]".to_vec()
        );
        let key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE";
        let der = public_key_der(key).unwrap();
        assert_eq!(
            public_key_der(&format!(
                "-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----\n"
            ))
            .unwrap(),
            der
        );
        assert_eq!(public_key_der("not base64!"), None);
        assert_eq!(public_key_der(""), None);
    }

    #[test]
    fn cuts_message_ids() {
        assert_eq!(
            message_id(
                "LRzXl66sTYOC5rkMuTjuBQ.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC34B-3.0"
            ),
            "LRzXl66sTYOC5rkMuTjuBQ"
        );
        assert_eq!(
            message_id("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"),
            "14c5d75ce93.dfd.64b469"
        );
        assert_eq!(message_id("abc.recvd-5f54b5d587-xyz"), "abc");
        assert_eq!(message_id("abc"), "abc");
    }

    /// The single status in a one-event body.
    fn status_of(event: Value) -> Option<DeliveryStatus> {
        let parsed = parse_events(json!([event]).to_string().as_bytes(), 0).unwrap();
        parsed.events.into_iter().find_map(|e| match e {
            InboundEvent::Status(s) => Some(s.status),
            _ => None,
        })
    }

    /// A SendGrid event of type `name` with the usual fields plus `extra`.
    fn event(name: &str, extra: Value) -> Value {
        let mut e = json!({
            "email": "lan@example.vn",
            "timestamp": 1_700_000_000,
            "event": name,
            "sg_event_id": format!("ev-{name}"),
            "sg_message_id": "abc123.filterdrecv-1",
        });
        if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(extra.clone());
        }
        e
    }

    #[test]
    fn maps_every_event_type() {
        assert_eq!(
            status_of(event("processed", json!({}))),
            Some(DeliveryStatus::Accepted)
        );
        assert_eq!(
            status_of(event("delivered", json!({}))),
            Some(DeliveryStatus::Delivered)
        );
        assert_eq!(status_of(event("deferred", json!({}))), None);
        assert_eq!(
            status_of(event("open", json!({}))),
            Some(DeliveryStatus::Opened)
        );
        assert_eq!(
            status_of(event("click", json!({"url": "https://shop.vn/p/1"}))),
            Some(DeliveryStatus::Clicked("https://shop.vn/p/1".into()))
        );
        assert_eq!(
            status_of(event(
                "bounce",
                json!({"type": "bounce", "reason": "550 no such user", "status": "5.1.1"})
            )),
            Some(DeliveryStatus::Bounced(Bounce {
                permanent: true,
                reason: "550 no such user".into()
            }))
        );
        assert_eq!(
            status_of(event(
                "bounce",
                json!({"type": "blocked", "status": "4.0.0"})
            )),
            Some(DeliveryStatus::Bounced(Bounce {
                permanent: false,
                reason: "4.0.0".into()
            }))
        );
        assert_eq!(
            status_of(event("dropped", json!({"reason": "Bounced Address"}))),
            Some(DeliveryStatus::Failed("Bounced Address".into()))
        );
        assert_eq!(
            status_of(event("spamreport", json!({}))),
            Some(DeliveryStatus::Complained)
        );
        assert_eq!(
            status_of(event("unsubscribe", json!({}))),
            Some(DeliveryStatus::Unsubscribed)
        );
        assert_eq!(
            status_of(event("group_unsubscribe", json!({"asm_group_id": 42}))),
            Some(DeliveryStatus::Unsubscribed)
        );
        assert_eq!(status_of(event("group_resubscribe", json!({}))), None);
        assert_eq!(status_of(event("something_new", json!({}))), None);
    }

    #[test]
    fn fills_status_fields_and_opt_outs() {
        let body = json!([event("spamreport", json!({}))]).to_string();
        let parsed = parse_events(body.as_bytes(), 0).unwrap();
        let lan = Identity {
            kind: "email".into(),
            value: "lan@example.vn".into(),
        };
        assert_eq!(
            parsed,
            ParsedEvents {
                events: vec![
                    InboundEvent::Status(StatusUpdate {
                        provider_event_id: "ev-spamreport".into(),
                        message: MessageRef::Id("abc123".into()),
                        recipient: Some(lan.clone()),
                        status: DeliveryStatus::Complained,
                        occurred_at: 1_700_000_000_000,
                    }),
                    InboundEvent::OptedOut(OptOut {
                        who: lan.clone(),
                        scope: "marketing".into()
                    }),
                ],
                incomplete: 0,
            }
        );
        // An unsubscribe without a message id still opts out; one without sg_event_id gets
        // a derived, stable event id; one without a timestamp takes the signed one.
        let body = json!([
            {"email": "lan@example.vn", "event": "group_unsubscribe", "timestamp": 5},
            {"event": "open", "sg_message_id": "m1.filter", "timestamp": 6},
            {"event": "delivered", "sg_message_id": "m2", "sg_event_id": "e2"},
            {"email": "x@y.vn"},
            42
        ])
        .to_string();
        let parsed = parse_events(body.as_bytes(), 9_000).unwrap();
        assert_eq!(parsed.incomplete, 3);
        assert_eq!(
            parsed.events,
            vec![
                InboundEvent::OptedOut(OptOut {
                    who: lan,
                    scope: "marketing".into()
                }),
                InboundEvent::Status(StatusUpdate {
                    provider_event_id: "m1:open:6000".into(),
                    message: MessageRef::Id("m1".into()),
                    recipient: None,
                    status: DeliveryStatus::Opened,
                    occurred_at: 6_000,
                }),
                InboundEvent::Status(StatusUpdate {
                    provider_event_id: "e2".into(),
                    message: MessageRef::Id("m2".into()),
                    recipient: None,
                    status: DeliveryStatus::Delivered,
                    occurred_at: 9_000,
                }),
            ]
        );
        assert!(matches!(
            parse_events(b"{}", 0),
            Err(WebhookError::Malformed(_))
        ));
        assert!(matches!(
            parse_events(b"nope", 0),
            Err(WebhookError::Malformed(_))
        ));
        assert_eq!(parse_events(b"[]", 0).unwrap(), ParsedEvents::default());
    }
}
