//! Channel adapter: SMS through Twilio Programmable Messaging (or any API that speaks its
//! Messages resource).
//!
//! - `send` degrades every content item to plain text and posts one message to
//!   `/2010-04-01/Accounts/{account_sid}/Messages.json` through the host's `outbound-http`,
//!   mapping Twilio's answer to `send-ok`/`send-error`.
//! - `handle-webhook` verifies `X-Twilio-Signature` with the host's `crypto` and turns status
//!   callbacks into delivery statuses and inbound SMS into messages, plus an opt-out for
//!   STOP-style keywords.
//! - `refresh-credentials` is not supported: Twilio auth tokens do not expire.
//!
//! Config and secrets are listed in README.md.

use weft_guest::adapter::{
    ChannelCapabilities, DeliveryStatus, Guest, HttpRequest, HttpResponse, InboundEvent,
    InboundMessage, MessageRef, OptOut, OutboundMessage, PluginError, SendError, SendOk,
    StatusGranularity, StatusUpdate, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Request, Response};
use weft_guest::json::{self, Map, Value};
use weft_guest::types::{
    ButtonAction, Card, ChannelKind, Choices, Content, Geo, Identity, Media, MessageCategory,
    TemplateRef,
};
use weft_guest::{clock, config, crypto, log, serde_json};

/// Default API base URL (setting `api_base`).
const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Longest body Twilio accepts: 1600 characters, its concatenation limit (error 21617).
const MAX_TEXT_LEN: usize = 1600;
/// Opt-out hint appended to marketing messages unless the setting `opt_out_hint` says
/// otherwise.
const DEFAULT_OPT_OUT_HINT: &str = "Reply STOP to opt out";
/// Back-off after a 429 without `Retry-After`: Twilio's API throttling clears within seconds.
const DEFAULT_RATE_LIMIT_MS: u64 = clock::seconds(1);
/// Timeout for the provider request; the host lowers it to the time left.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
/// Most characters of a non-JSON error body quoted in an error text: enough to diagnose,
/// short enough for one log line.
const MAX_QUOTED_BODY: usize = 200;
/// Twilio attaches at most 10 media items to one inbound MMS.
const MAX_INBOUND_MEDIA: usize = 10;
/// The answer to every webhook: empty TwiML, so Twilio sends no auto-reply.
const EMPTY_TWIML: &str = "<Response/>";
/// Inbound bodies that mean "stop texting me", after trimming, lower-casing and removing
/// Vietnamese diacritics: Twilio's standard opt-out keywords plus Vietnamese `HUY`/`TU CHOI`.
const OPT_OUT_KEYWORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "huy",
    "tu choi",
];

/// The adapter.
struct Sms;

impl Guest for Sms {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Sms,
            max_text_len: MAX_TEXT_LEN as u32,
            max_buttons: 0,
            max_button_label: 0,
            content_kinds: vec!["text".into()],
            window: None,
            status: StatusGranularity::PerMessage,
            max_send_per_sec: config::get("max_send_per_sec")
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0),
            extra_channels: vec![],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        let to = recipient_phone(&msg.recipient.address)?;
        let hint = match msg.category {
            MessageCategory::Marketing => opt_out_hint(config::get("opt_out_hint")),
            MessageCategory::Transactional | MessageCategory::Service => None,
        };
        let body = finish_body(&render_body(&msg.content)?, hint.as_deref());
        let account = SendSettings::from_config()?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config::get_or("api_base", DEFAULT_API_BASE).trim_end_matches('/'),
            http::url_encode(&account.account_sid)
        );
        let fields = account.form(&to, &body, &msg.tracking_id);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Twilio's Messages API has no idempotency key: a timeout is `ambiguous` (from the
        // SDK's `From<HttpError>`), so the host reconciles instead of resending.
        let req = Request::new("POST", &url)
            .header(
                "authorization",
                &basic_auth(&account.account_sid, &account.auth_token),
            )
            .header("accept", "application/json")
            .form(&fields)
            .timeout_ms(REQUEST_TIMEOUT_MS);
        let resp = http::send(&req)?;
        Ok(SendOk {
            provider_message_id: interpret_send_response(&resp)?,
            accepted_at: clock::now(),
            quota_remaining: None,
        })
    }

    fn handle_webhook(req: HttpRequest) -> Result<WebhookResult, WebhookError> {
        // Twilio calls with POST (parameters in a form body) or, if so configured, GET
        // (parameters in the query, which the signed URL already contains).
        let (params, post_params) = if req.method.eq_ignore_ascii_case("GET") {
            (req.query.clone(), vec![])
        } else {
            let form = parse_form(&req.body)?;
            (form.clone(), form)
        };
        verify_signature(&req, &post_params)?;
        Ok(WebhookResult {
            response: HttpResponse {
                status: 200,
                headers: vec![("content-type".into(), "text/xml".into())],
                body: EMPTY_TWIML.as_bytes().to_vec(),
            },
            events: parse_params(&params, req.received_at)?,
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        Err(PluginError::not_supported(
            "sms: Twilio auth tokens do not expire; replace the `auth_token` secret by hand",
        ))
    }
}

/// What `send` needs from the installation's settings and secrets. No `Debug`, so the
/// token cannot end up in a log line by accident.
struct SendSettings {
    /// Setting `account_sid`: the `AC…` account id, in the URL and the Basic auth user.
    account_sid: String,
    /// Secret `auth_token`: the Basic auth password.
    auth_token: String,
    /// Setting `from_number`: E.164 number or registered alphanumeric brandname.
    from_number: Option<String>,
    /// Setting `messaging_service_sid`: the `MG…` sender pool, preferred over `from_number`.
    messaging_service_sid: Option<String>,
    /// Setting `status_callback_url`: where Twilio posts delivery statuses.
    status_callback_url: Option<String>,
}

impl SendSettings {
    /// Reads the settings; a missing one is a `permanent` error naming it.
    fn from_config() -> Result<Self, SendError> {
        let setting = |key: &str| config::get(key).filter(|v| !v.trim().is_empty());
        let missing = |what: &str| SendError::Permanent(format!("sms: {what} is not set"));
        let settings = SendSettings {
            account_sid: setting("account_sid").ok_or_else(|| missing("config `account_sid`"))?,
            auth_token: config::get_secret("auth_token")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing("secret `auth_token`"))?,
            from_number: setting("from_number"),
            messaging_service_sid: setting("messaging_service_sid"),
            status_callback_url: setting("status_callback_url"),
        };
        if settings.from_number.is_none() && settings.messaging_service_sid.is_none() {
            return Err(missing("config `from_number` or `messaging_service_sid`"));
        }
        Ok(settings)
    }

    /// The form fields of one Messages request: `To`, the sender, `Body`, `StatusCallback`.
    fn form(&self, to: &str, body: &str, tracking_id: &str) -> Vec<(&'static str, String)> {
        let mut fields = vec![("To", to.to_owned())];
        match (&self.messaging_service_sid, &self.from_number) {
            (Some(service), _) => fields.push(("MessagingServiceSid", service.clone())),
            (None, Some(from)) => fields.push(("From", from.clone())),
            (None, None) => {}
        }
        fields.push(("Body", body.to_owned()));
        if let Some(callback) = &self.status_callback_url {
            fields.push(("StatusCallback", callback_url(callback, tracking_id)));
        }
        fields
    }
}

/// `Basic base64(user:password)`.
fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crypto::base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// The status callback URL with `tracking_id=<id>` appended, so statuses can be correlated
/// with Weft's tracking id even before the send result is stored.
fn callback_url(base: &str, tracking_id: &str) -> String {
    if tracking_id.is_empty() {
        return base.to_owned();
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{separator}tracking_id={}",
        http::url_encode(tracking_id)
    )
}

/// The recipient's number in E.164, from a `phone` identity holding a Vietnamese number.
fn recipient_phone(address: &Identity) -> Result<String, SendError> {
    if address.kind != "phone" {
        return Err(SendError::RecipientInvalid(format!(
            "sms needs a phone identity, got `{}`",
            address.kind
        )));
    }
    // The number itself stays out of the message: error texts end up in logs.
    e164_vn(&address.value).ok_or_else(|| {
        SendError::RecipientInvalid(
            "not a Vietnamese phone number (expected +84…, 84… or 0…)".into(),
        )
    })
}

/// A Vietnamese phone number in E.164: `0912345678`, `84912345678`, `+84 912 345 678` and
/// `+84 0912 345 678` all give `+84912345678`. Anything else (letters, another country
/// code, a national number that is not 8 to 10 digits) gives `None`.
fn e164_vn(phone: &str) -> Option<String> {
    let phone = phone.trim();
    if phone.is_empty()
        || !phone
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '.' | '-' | '(' | ')' | '+'))
        || phone.matches('+').count() > 1
        || phone
            .find('+')
            .is_some_and(|plus| phone.find(|c: char| c.is_ascii_digit()) < Some(plus))
    {
        return None;
    }
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let national = match digits.strip_prefix("84") {
        // People often keep the trunk 0 after the country code.
        Some(rest) => rest.strip_prefix('0').unwrap_or(rest),
        None if phone.contains('+') => return None,
        None => digits.strip_prefix('0')?,
    };
    // Vietnamese national numbers have 9 (mobile) or 10 (landline) digits; 8 is kept for
    // older numbers, as in zalo-oa.
    ((8..=10).contains(&national.len()) && !national.starts_with('0'))
        .then(|| format!("+84{national}"))
}

/// A `phone` identity for a number Twilio reports: Vietnamese numbers normalized to E.164,
/// anything else (already E.164 from Twilio, or a short code) as given.
fn phone_identity(raw: &str) -> Identity {
    Identity {
        kind: "phone".into(),
        value: e164_vn(raw).unwrap_or_else(|| raw.trim().to_owned()),
    }
}

/// The opt-out hint for marketing messages: the default when the setting is unset, none
/// when it is set but blank.
fn opt_out_hint(setting: Option<String>) -> Option<String> {
    match setting {
        None => Some(DEFAULT_OPT_OUT_HINT.to_owned()),
        Some(hint) if hint.trim().is_empty() => None,
        Some(hint) => Some(hint.trim().to_owned()),
    }
}

/// The SMS body for all content items, one item per line group; `content-rejected` when
/// nothing printable is left or an item cannot be rendered.
fn render_body(content: &[Content]) -> Result<String, SendError> {
    let mut parts = Vec::with_capacity(content.len());
    for item in content {
        let text = render_item(item)?;
        if !text.trim().is_empty() {
            parts.push(text.trim_end().to_owned());
        }
    }
    if parts.is_empty() {
        return Err(SendError::ContentRejected("no text to send".into()));
    }
    Ok(parts.join("\n"))
}

/// One content item as plain text: SMS shows nothing else.
fn render_item(content: &Content) -> Result<String, SendError> {
    Ok(match content {
        Content::Text(text) => text.clone(),
        Content::Image(media)
        | Content::Video(media)
        | Content::Audio(media)
        | Content::File(media) => media_text(media),
        Content::Location(geo) => location_text(geo),
        Content::Card(card) => card_text(card),
        Content::Carousel(cards) => cards.iter().map(card_text).collect::<Vec<_>>().join("\n\n"),
        Content::Choices(choices) => choices_text(choices),
        Content::Template(template) => render_template(template)?,
        Content::Raw(raw) => raw_text(raw)?,
    })
}

/// A media item: its caption (if any) above its URL.
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

/// A location: its address (if any) above a map link.
fn location_text(geo: &Geo) -> String {
    let link = format!(
        "https://maps.google.com/?q={},{}",
        geo.latitude, geo.longitude
    );
    match geo
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        Some(address) => format!("{address}\n{link}"),
        None => link,
    }
}

/// A card: title, subtitle, then `label: target` for URL and phone buttons (postback and
/// say buttons mean nothing in an SMS and are left out; so is the image).
fn card_text(card: &Card) -> String {
    let mut lines = vec![card.title.clone()];
    lines.extend(
        card.subtitle
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned(),
    );
    lines.extend(card.buttons.iter().filter_map(|b| match &b.action {
        ButtonAction::Url(target) | ButtonAction::Phone(target) => {
            Some(format!("{}: {target}", b.label))
        }
        ButtonAction::Postback(_) | ButtonAction::Say(_) => None,
    }));
    lines.join("\n")
}

/// Choices: the prompt, then a numbered list the customer can answer with a number.
fn choices_text(choices: &Choices) -> String {
    let mut text = choices.prompt.clone();
    for (i, choice) in choices.options.iter().enumerate() {
        text.push_str(&format!("\n{}. {}", i + 1, choice.label));
    }
    text
}

/// A template rendered locally, since SMS has no provider templates: `params.body` (or
/// `params.text`) with every `{{name}}` replaced by `params.name`. No body, or a
/// placeholder without a value, is `content-rejected`.
fn render_template(template: &TemplateRef) -> Result<String, SendError> {
    let params = json::object_or_empty(&template.params);
    let body = ["body", "text"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .ok_or_else(|| {
            SendError::ContentRejected(format!(
                "sms has no provider templates; template `{}` needs a `body` parameter to render",
                template.id
            ))
        })?;
    fill_placeholders(body, &params).map_err(|name| {
        SendError::ContentRejected(format!(
            "template `{}`: no value for placeholder `{name}`",
            template.id
        ))
    })
}

/// `body` with every `{{name}}` (spaces inside the braces allowed) replaced by the string,
/// number or boolean `params[name]`; the first name without such a value on failure.
fn fill_placeholders(body: &str, params: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        let value = match params.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => return Err(name.to_owned()),
        };
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Raw content: a JSON string, or an object with a string `body`, sent as the text.
fn raw_text(raw: &str) -> Result<String, SendError> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::String(text)) => Ok(text),
        Ok(value) => json::str_at(&value, "body")
            .map(str::to_owned)
            .ok_or_else(|| {
                SendError::ContentRejected(
                    "raw sms content must be a JSON string or {\"body\": \"…\"}".into(),
                )
            }),
        Err(e) => Err(SendError::ContentRejected(format!(
            "raw content is not JSON: {e}"
        ))),
    }
}

/// The final body: the text, plus the opt-out hint on its own line when given (and not
/// already in the text), cut to Twilio's 1600 characters so that the hint always survives.
fn finish_body(text: &str, hint: Option<&str>) -> String {
    let text = text.trim_end();
    let hint = hint
        .map(str::trim)
        .filter(|h| !h.is_empty() && !text.to_lowercase().contains(&h.to_lowercase()));
    match hint {
        None => truncate_with_ellipsis(text, MAX_TEXT_LEN),
        Some(hint) => {
            let room = MAX_TEXT_LEN.saturating_sub(hint.chars().count() + 1);
            if room == 0 {
                return truncate_with_ellipsis(hint, MAX_TEXT_LEN);
            }
            format!("{}\n{hint}", truncate_with_ellipsis(text, room))
        }
    }
}

/// At most `max` characters of `text`, ending in `…` when something was cut.
fn truncate_with_ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

/// Maps Twilio's answer to a Messages request: the message `sid`, or why not.
///
/// | answer                                | result                   |
/// |---------------------------------------|--------------------------|
/// | 2xx with `sid`                        | ok                       |
/// | 2xx without `sid`                     | `ambiguous`              |
/// | 5xx                                   | `retryable`              |
/// | 429 or code 20429                     | `rate-limited`           |
/// | code 21211, 21614                     | `recipient-invalid`      |
/// | code 21610                            | `recipient-unreachable`  |
/// | code 30007                            | `content-rejected`       |
/// | code 20003, HTTP 401 and anything else| `permanent`              |
fn interpret_send_response(resp: &Response) -> Result<String, SendError> {
    if resp.status >= 500 {
        return Err(SendError::Retryable(format!("twilio http {}", resp.status)));
    }
    let body: Option<Value> = resp.json().ok();
    let code = body
        .as_ref()
        .and_then(|b| json::text_at(b, "code"))
        .and_then(|c| c.parse::<i64>().ok());
    if resp.status == 429 || code == Some(20429) {
        return Err(SendError::RateLimited(retry_after_ms(resp)));
    }
    if resp.is_success() {
        return body
            .as_ref()
            .and_then(|b| json::str_at(b, "sid"))
            .filter(|sid| !sid.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                SendError::Ambiguous(format!("twilio http {} without a message sid", resp.status))
            });
    }
    let message = body
        .as_ref()
        .and_then(|b| json::text_at(b, "message"))
        .unwrap_or_else(|| truncate_with_ellipsis(&resp.text(), MAX_QUOTED_BODY));
    if code == Some(20003) || (code.is_none() && resp.status == 401) {
        return Err(SendError::Permanent(format!(
            "twilio {}: authentication failed; Twilio auth tokens do not expire, so check the \
             `account_sid` setting and the `auth_token` secret (a token rotated in the Twilio \
             console must be replaced by hand): {message}",
            code.map_or_else(|| "http 401".to_owned(), |c| c.to_string())
        )));
    }
    match code {
        // Twilio's message for these quotes the number; error texts end up in logs.
        Some(21211) => Err(SendError::RecipientInvalid(
            "twilio 21211: the To number is not a valid phone number".into(),
        )),
        Some(21614) => Err(SendError::RecipientInvalid(
            "twilio 21614: the To number is not a mobile number that can receive SMS".into(),
        )),
        Some(21610) => Err(SendError::RecipientUnreachable(
            "twilio 21610: the recipient replied STOP to this sender".into(),
        )),
        Some(30007) => Err(SendError::ContentRejected(format!(
            "twilio 30007: filtered as spam by the carrier: {message}"
        ))),
        Some(code) => Err(SendError::Permanent(format!(
            "twilio http {} code {code}: {message}",
            resp.status
        ))),
        None => Err(SendError::Permanent(format!(
            "twilio http {}: {message}",
            resp.status
        ))),
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

/// Decodes an `application/x-www-form-urlencoded` body into `(name, value)` pairs.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| WebhookError::Malformed("form body is not UTF-8".into()))?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(name)?, form_decode(value)?))
        })
        .collect()
}

/// One form-encoded component: `+` is a space, `%XX` a byte, and the bytes must be UTF-8.
fn form_decode(text: &str) -> Result<String, WebhookError> {
    // The text stays out of the error: form values hold phone numbers and messages.
    let bad = || WebhookError::Malformed("bad %-escape or non-UTF-8 text in form body".into());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
                out.extend(crypto::unhex(hex).ok_or_else(bad)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The URL Twilio signed: the `webhook_url` setting, the request path below the
/// installation's webhook URL (when there is one), and the query string rebuilt from the
/// decoded query parameters with the same encoding `callback_url` uses.
fn signed_url(base: &str, path: &str, query: &[(String, String)]) -> String {
    let mut url = base.trim().to_owned();
    if !path.is_empty() && path != "/" {
        if url.ends_with('/') && path.starts_with('/') {
            url.pop();
        } else if !url.ends_with('/') && !path.starts_with('/') {
            url.push('/');
        }
        url.push_str(path);
    }
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        url.push_str(&http::form_encode(&pairs));
    }
    url
}

/// What Twilio signs: the URL, then every POST parameter's name and value concatenated,
/// sorted by name (and by value for repeated names), byte-wise.
fn signature_base(url: &str, post_params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = post_params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

/// Checks `X-Twilio-Signature: base64(HMAC-SHA1(auth_token, signature_base))` in constant
/// time. Without the `webhook_url` setting or the `auth_token` secret nothing verifies.
fn verify_signature(
    req: &HttpRequest,
    post_params: &[(String, String)],
) -> Result<(), WebhookError> {
    let given = req
        .header("x-twilio-signature")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::BadSignature)?;
    let (Some(base), Some(token)) = (
        config::get("webhook_url").filter(|v| !v.trim().is_empty()),
        config::get_secret("auth_token").filter(|v| !v.is_empty()),
    ) else {
        log::error(
            "sms: setting `webhook_url` or secret `auth_token` is missing; refusing webhooks",
        );
        return Err(WebhookError::BadSignature);
    };
    let data = signature_base(&signed_url(&base, &req.path, &req.query), post_params);
    let expected = crypto::base64_encode(&crypto::hmac_sha1(token.as_bytes(), data.as_bytes()));
    if crypto::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// The events in one verified Twilio request: a status callback or an inbound SMS.
fn parse_params(
    params: &[(String, String)],
    received_at: i64,
) -> Result<Vec<InboundEvent>, WebhookError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    };
    let sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or_else(|| WebhookError::Malformed("missing MessageSid".into()))?;
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .map(str::to_ascii_lowercase);
    match status.as_deref() {
        None | Some("received" | "receiving") => inbound_events(sid, &get, received_at),
        Some(status) => Ok(
            status_event(sid, status, get("ErrorCode"), get("To"), received_at)
                .into_iter()
                .collect(),
        ),
    }
}

/// A status callback as a delivery status; `None` for statuses that say nothing the send
/// result did not (`queued`, `accepted`, `scheduled`, `sending`), `partially_delivered`
/// (some segments only) and unknown ones.
fn status_event(
    sid: &str,
    status: &str,
    error_code: Option<&str>,
    to: Option<&str>,
    received_at: i64,
) -> Option<InboundEvent> {
    let delivery = match status {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "undelivered" => DeliveryStatus::Undelivered(error_reason(error_code, status)),
        "failed" => DeliveryStatus::Failed(error_reason(error_code, status)),
        "canceled" => DeliveryStatus::Failed("canceled before sending".into()),
        _ => return None,
    };
    Some(InboundEvent::Status(StatusUpdate {
        provider_event_id: format!("{sid}:{status}"),
        message: MessageRef::Id(sid.to_owned()),
        recipient: to.map(phone_identity),
        status: delivery,
        // Twilio's callbacks carry no event time; receipt is the closest we know.
        occurred_at: received_at,
    }))
}

/// A failure reason: Twilio's error code with a short explanation for common ones.
fn error_reason(code: Option<&str>, status: &str) -> String {
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return status.to_owned();
    };
    let what = match code {
        "30003" => "unreachable handset",
        "30004" => "message blocked by the recipient or carrier",
        "30005" => "unknown destination handset",
        "30006" => "landline or unreachable carrier",
        "30007" => "filtered as spam by the carrier",
        "30008" => "unknown carrier error",
        "21610" => "recipient replied STOP",
        _ => "see twilio.com/docs/api/errors",
    };
    format!("twilio {code}: {what}")
}

/// An inbound SMS/MMS as a message, plus an opt-out of everything when the body is an
/// opt-out keyword.
fn inbound_events<'a>(
    sid: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
    received_at: i64,
) -> Result<Vec<InboundEvent>, WebhookError> {
    let from = get("From").ok_or_else(|| WebhookError::Malformed("missing From".into()))?;
    let sender = phone_identity(from);
    let mut content = Vec::new();
    let body = get("Body");
    if let Some(text) = body {
        content.push(Content::Text(text.to_owned()));
    }
    let media = get("NumMedia")
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_INBOUND_MEDIA);
    content.extend((0..media).filter_map(|i| {
        let url = get(&format!("MediaUrl{i}"))?.to_owned();
        let mime = get(&format!("MediaContentType{i}")).map(str::to_owned);
        Some(media_content(url, mime))
    }));
    let mut events = vec![InboundEvent::Message(InboundMessage {
        provider_message_id: sid.to_owned(),
        sender: sender.clone(),
        conversation_id: sender.value.clone(),
        content,
        postback: None,
        // Twilio's inbound requests carry no send time; receipt is the closest we know.
        occurred_at: received_at,
    })];
    if body.is_some_and(is_opt_out) {
        events.push(InboundEvent::OptedOut(OptOut {
            who: sender,
            scope: "all".into(),
        }));
    }
    Ok(events)
}

/// Inbound MMS media as content of the kind its MIME type says.
fn media_content(url: String, mime: Option<String>) -> Content {
    let kind = mime
        .as_deref()
        .and_then(|m| m.split('/').next())
        .unwrap_or("");
    let media = Media {
        url,
        mime: mime.clone(),
        caption: None,
        filename: None,
    };
    match kind {
        "image" => Content::Image(media),
        "video" => Content::Video(media),
        "audio" => Content::Audio(media),
        _ => Content::File(media),
    }
}

/// Whether an inbound body is an opt-out keyword (trimmed, any case, with or without
/// Vietnamese diacritics: `Hủy`, `HUY`, `từ chối`).
fn is_opt_out(body: &str) -> bool {
    OPT_OUT_KEYWORDS.contains(&fold_vietnamese(body).as_str())
}

/// Lower-case words of `text` without Vietnamese diacritics (precomposed or combining),
/// joined by single spaces.
fn fold_vietnamese(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars().flat_map(char::to_lowercase) {
            // U+0300..U+036F: combining diacritical marks of decomposed (NFD) text.
            if !('\u{300}'..='\u{36f}').contains(&c) {
                out.push(base_letter(c));
            }
        }
    }
    out
}

/// The base letter of a lower-case Vietnamese letter (`ủ` → `u`, `đ` → `d`); other
/// characters unchanged.
fn base_letter(c: char) -> char {
    const GROUPS: [(char, &str); 7] = [
        ('a', "àáảãạăằắẳẵặâầấẩẫậ"),
        ('e', "èéẻẽẹêềếểễệ"),
        ('i', "ìíỉĩị"),
        ('o', "òóỏõọôồốổỗộơờớởỡợ"),
        ('u', "ùúủũụưừứửữự"),
        ('y', "ỳýỷỹỵ"),
        ('d', "đ"),
    ];
    GROUPS
        .iter()
        .find(|(_, letters)| letters.contains(c))
        .map_or(c, |(base, _)| *base)
}

weft_guest::export_channel_adapter!(Sms);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::types::{Button, Choice};

    /// A provider response with a JSON body and optional headers.
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

    /// Owned `(name, value)` pairs.
    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn maps_twilio_answers() {
        let ok =
            interpret_send_response(&response(201, r#"{"sid":"SM123","status":"queued"}"#, &[]));
        assert_eq!(ok.unwrap(), "SM123");
        assert!(matches!(
            err(201, r#"{"status":"queued"}"#),
            SendError::Ambiguous(_)
        ));
        assert!(matches!(err(201, "<html>"), SendError::Ambiguous(_)));
        assert!(matches!(err(503, "unavailable"), SendError::Retryable(_)));
        assert!(matches!(
            err(500, r#"{"code":20500}"#),
            SendError::Retryable(_)
        ));
        assert_eq!(err(429, ""), SendError::RateLimited(1_000));
        assert_eq!(
            interpret_send_response(&response(429, "", &[("Retry-After", "7")])).unwrap_err(),
            SendError::RateLimited(7_000)
        );
        assert_eq!(
            err(400, r#"{"code":20429,"message":"Too Many Requests"}"#),
            SendError::RateLimited(1_000)
        );
        for code in [21211, 21614] {
            assert!(matches!(
                err(400, &format!(r#"{{"code":{code},"message":"bad To","status":400}}"#)),
                SendError::RecipientInvalid(m) if m.contains(&code.to_string())
            ));
        }
        assert!(matches!(
            err(400, r#"{"code":21610,"message":"unsubscribed"}"#),
            SendError::RecipientUnreachable(_)
        ));
        assert!(matches!(
            err(400, r#"{"code":30007,"message":"filtered"}"#),
            SendError::ContentRejected(_)
        ));
        assert!(matches!(
            err(401, r#"{"code":20003,"message":"Authenticate"}"#),
            SendError::Permanent(m) if m.contains("do not expire")
        ));
        assert!(matches!(
            err(401, "Unauthorized"),
            SendError::Permanent(m) if m.contains("do not expire")
        ));
        assert!(matches!(
            err(400, r#"{"code":21606,"message":"From is not SMS-capable"}"#),
            SendError::Permanent(m) if m.contains("21606")
        ));
        assert!(matches!(err(404, "nope"), SendError::Permanent(_)));
    }

    #[test]
    fn ignores_unusable_retry_after() {
        for value in ["0", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(
                retry_after_ms(&response(429, "", &[("retry-after", value)])),
                DEFAULT_RATE_LIMIT_MS
            );
        }
    }

    #[test]
    fn builds_the_form() {
        let mut s = SendSettings {
            account_sid: "AC1".into(),
            auth_token: "t".into(),
            from_number: Some("+15005550006".into()),
            messaging_service_sid: None,
            status_callback_url: Some("https://weft.example/hooks/t/sms".into()),
        };
        assert_eq!(
            s.form("+84912345678", "hi", "trk 1"),
            vec![
                ("To", "+84912345678".to_owned()),
                ("From", "+15005550006".to_owned()),
                ("Body", "hi".to_owned()),
                (
                    "StatusCallback",
                    "https://weft.example/hooks/t/sms?tracking_id=trk%201".to_owned()
                ),
            ]
        );
        s.messaging_service_sid = Some("MG9".into());
        s.status_callback_url = None;
        assert_eq!(
            s.form("+84912345678", "hi", "trk"),
            vec![
                ("To", "+84912345678".to_owned()),
                ("MessagingServiceSid", "MG9".to_owned()),
                ("Body", "hi".to_owned()),
            ]
        );
        assert_eq!(
            callback_url("https://x/cb?a=1", "t"),
            "https://x/cb?a=1&tracking_id=t"
        );
        assert_eq!(callback_url("https://x/cb", ""), "https://x/cb");
        assert_eq!(basic_auth("AC1", "secret"), "Basic QUMxOnNlY3JldA==");
    }

    #[test]
    fn normalises_vietnamese_phones_only() {
        for ok in [
            "0912345678",
            "84912345678",
            "+84912345678",
            "+84 912 345 678",
            "+84 0912-345-678",
            "(+84) 912.345.678",
        ] {
            assert_eq!(e164_vn(ok).as_deref(), Some("+84912345678"), "{ok}");
        }
        for bad in [
            "",
            "12345",
            "+14155550100",
            "0912abc678",
            "09123456789012",
            "912345678",
            "0+912345678",
        ] {
            assert_eq!(e164_vn(bad), None, "{bad}");
        }
        let phone = |kind: &str, value: &str| Identity {
            kind: kind.into(),
            value: value.into(),
        };
        assert_eq!(
            recipient_phone(&phone("phone", "0912345678")).unwrap(),
            "+84912345678"
        );
        assert!(matches!(
            recipient_phone(&phone("email", "a@b.vn")),
            Err(SendError::RecipientInvalid(_))
        ));
        assert!(matches!(
            recipient_phone(&phone("phone", "+14155550100")),
            Err(SendError::RecipientInvalid(_))
        ));
    }

    #[test]
    fn degrades_content_to_text() {
        let card = Card {
            title: "Áo dài lụa".into(),
            subtitle: Some("450.000đ".into()),
            image_url: Some("https://shop.vn/a.jpg".into()),
            buttons: vec![
                Button {
                    label: "Xem".into(),
                    action: ButtonAction::Url("https://shop.vn/p/1".into()),
                },
                Button {
                    label: "Mua".into(),
                    action: ButtonAction::Postback("BUY".into()),
                },
                Button {
                    label: "Gọi".into(),
                    action: ButtonAction::Phone("+84281234567".into()),
                },
            ],
        };
        assert_eq!(
            render_item(&Content::Card(card.clone())).unwrap(),
            "Áo dài lụa\n450.000đ\nXem: https://shop.vn/p/1\nGọi: +84281234567"
        );
        assert_eq!(
            render_item(&Content::Carousel(vec![card.clone(), card]))
                .unwrap()
                .matches("Áo dài lụa")
                .count(),
            2
        );
        let choices = Content::Choices(Choices {
            prompt: "Bạn cần gì?".into(),
            options: vec![
                Choice {
                    label: "Đổi hàng".into(),
                    value: "swap".into(),
                },
                Choice {
                    label: "Trả hàng".into(),
                    value: "return".into(),
                },
            ],
        });
        assert_eq!(
            render_item(&choices).unwrap(),
            "Bạn cần gì?\n1. Đổi hàng\n2. Trả hàng"
        );
        let image = |caption: Option<&str>| {
            Content::Image(Media {
                url: "https://shop.vn/a.jpg".into(),
                mime: None,
                caption: caption.map(Into::into),
                filename: None,
            })
        };
        assert_eq!(render_item(&image(None)).unwrap(), "https://shop.vn/a.jpg");
        assert_eq!(
            render_item(&image(Some("Mẫu mới"))).unwrap(),
            "Mẫu mới\nhttps://shop.vn/a.jpg"
        );
        assert_eq!(
            render_item(&Content::Location(Geo {
                latitude: 10.5,
                longitude: 106.25,
                address: Some("Q1".into())
            }))
            .unwrap(),
            "Q1\nhttps://maps.google.com/?q=10.5,106.25"
        );
        assert_eq!(
            render_item(&Content::Raw(r#"{"body":"raw"}"#.into())).unwrap(),
            "raw"
        );
        assert_eq!(
            render_item(&Content::Raw(r#""plain""#.into())).unwrap(),
            "plain"
        );
        assert!(matches!(
            render_item(&Content::Raw("{}".into())),
            Err(SendError::ContentRejected(_))
        ));
        assert!(matches!(
            render_item(&Content::Raw("nope".into())),
            Err(SendError::ContentRejected(_))
        ));
        assert_eq!(
            render_body(&[
                Content::Text("Xin chào".into()),
                Content::Text("  ".into()),
                image(None)
            ])
            .unwrap(),
            "Xin chào\nhttps://shop.vn/a.jpg"
        );
        assert!(matches!(
            render_body(&[]),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn renders_templates_from_params_or_refuses() {
        let template = |params: &str| {
            Content::Template(TemplateRef {
                id: "otp".into(),
                language: None,
                params: params.into(),
            })
        };
        assert_eq!(
            render_item(&template(
                r#"{"body":"Mã OTP: {{ code }} ({{ttl}} phút)","code":"123456","ttl":5}"#
            ))
            .unwrap(),
            "Mã OTP: 123456 (5 phút)"
        );
        assert_eq!(
            render_item(&template(r#"{"text":"a {{ b"}"#)).unwrap(),
            "a {{ b"
        );
        assert!(matches!(
            render_item(&template(r#"{"body":"Mã {{code}}"}"#)),
            Err(SendError::ContentRejected(m)) if m.contains("code")
        ));
        assert!(matches!(
            render_item(&template(r#"{"code":"1"}"#)),
            Err(SendError::ContentRejected(_))
        ));
    }

    #[test]
    fn appends_the_opt_out_hint_and_keeps_it_when_cutting() {
        assert_eq!(opt_out_hint(None).as_deref(), Some(DEFAULT_OPT_OUT_HINT));
        assert_eq!(opt_out_hint(Some(" ".into())), None);
        assert_eq!(
            opt_out_hint(Some("Soạn TC gửi 8077".into())).as_deref(),
            Some("Soạn TC gửi 8077")
        );
        assert_eq!(
            finish_body("[QC] Sale\n", Some("Reply STOP to opt out")),
            "[QC] Sale\nReply STOP to opt out"
        );
        assert_eq!(
            finish_body("Sale. reply stop to opt out", Some("Reply STOP to opt out")),
            "Sale. reply stop to opt out"
        );
        assert_eq!(finish_body("OTP 1", None), "OTP 1");
        let long = "ă".repeat(2_000);
        let body = finish_body(&long, Some("Reply STOP to opt out"));
        assert_eq!(body.chars().count(), MAX_TEXT_LEN);
        assert!(body.ends_with("…\nReply STOP to opt out"));
        let body = finish_body(&long, None);
        assert_eq!(body.chars().count(), MAX_TEXT_LEN);
        assert!(body.ends_with('…'));
        assert_eq!(truncate_with_ellipsis("đổi trả", 3), "đổ…");
        assert_eq!(truncate_with_ellipsis("ab", 2), "ab");
    }

    #[test]
    fn decodes_forms() {
        assert_eq!(
            parse_form(b"Body=H%E1%BB%A7y+nh%C3%A9&From=%2B84912345678&Empty=&Flag").unwrap(),
            pairs(&[
                ("Body", "Hủy nhé"),
                ("From", "+84912345678"),
                ("Empty", ""),
                ("Flag", "")
            ])
        );
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%4").is_err());
        assert!(parse_form(b"a=%ff").is_err());
    }

    #[test]
    fn builds_the_signature_base() {
        // URL, then the POST parameters sorted by name, each name followed by its value.
        let params = pairs(&[
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(
            signature_base("https://example.com/myapp", &params),
            "https://example.com/myappCallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"
        );
        assert_eq!(
            signature_base("u", &pairs(&[("b", "2"), ("a", "z"), ("a", "y")])),
            "uayazb2"
        );
        let query = pairs(&[("tracking_id", "trk 1")]);
        assert_eq!(
            signed_url("https://weft.example/hooks/t/sms", "", &query),
            "https://weft.example/hooks/t/sms?tracking_id=trk%201"
        );
        assert_eq!(
            signed_url("https://weft.example/hooks/t/sms/", "/status", &[]),
            "https://weft.example/hooks/t/sms/status"
        );
        assert_eq!(
            signed_url("https://w/h", "status", &[]),
            "https://w/h/status"
        );
        assert_eq!(
            signed_url("https://w/h?x=1", "/", &query),
            "https://w/h?x=1&tracking_id=trk%201"
        );
    }

    #[test]
    fn parses_status_callbacks() {
        let params = pairs(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("To", "+84912345678"),
            ("From", "+15005550006"),
        ]);
        assert_eq!(
            parse_params(&params, 42).unwrap(),
            vec![InboundEvent::Status(StatusUpdate {
                provider_event_id: "SM1:undelivered".into(),
                message: MessageRef::Id("SM1".into()),
                recipient: Some(Identity {
                    kind: "phone".into(),
                    value: "+84912345678".into()
                }),
                status: DeliveryStatus::Undelivered("twilio 30003: unreachable handset".into()),
                occurred_at: 42,
            })]
        );
        let status = |s: &str| match parse_params(
            &pairs(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", s),
                ("SmsStatus", s),
            ]),
            1,
        )
        .unwrap()
        .pop()
        {
            Some(InboundEvent::Status(update)) => Some(update.status),
            _ => None,
        };
        assert_eq!(status("sent"), Some(DeliveryStatus::Sent));
        assert_eq!(status("delivered"), Some(DeliveryStatus::Delivered));
        assert_eq!(status("read"), Some(DeliveryStatus::Read));
        assert_eq!(
            status("failed"),
            Some(DeliveryStatus::Failed("failed".into()))
        );
        assert!(matches!(
            status("canceled"),
            Some(DeliveryStatus::Failed(_))
        ));
        for skipped in [
            "queued",
            "accepted",
            "sending",
            "scheduled",
            "partially_delivered",
            "weird",
        ] {
            assert_eq!(status(skipped), None, "{skipped}");
        }
        assert!(matches!(
            parse_params(&pairs(&[("MessageStatus", "sent")]), 1),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn parses_inbound_sms_and_opt_outs() {
        let inbound = |body: &str| {
            parse_params(
                &pairs(&[
                    ("MessageSid", "SM9"),
                    ("SmsStatus", "received"),
                    ("From", "+84912345678"),
                    ("To", "+15005550006"),
                    ("Body", body),
                ]),
                7,
            )
            .unwrap()
        };
        let sender = Identity {
            kind: "phone".into(),
            value: "+84912345678".into(),
        };
        assert_eq!(
            inbound("Cho hỏi giờ mở cửa?"),
            vec![InboundEvent::Message(InboundMessage {
                provider_message_id: "SM9".into(),
                sender: sender.clone(),
                conversation_id: "+84912345678".into(),
                content: vec![Content::Text("Cho hỏi giờ mở cửa?".into())],
                postback: None,
                occurred_at: 7,
            })]
        );
        for stop in [
            "STOP",
            " stop ",
            "StopAll",
            "UNSUBSCRIBE",
            "cancel",
            "End",
            "quit",
            "HUY",
            "Hủy",
            "huỷ",
            "TU CHOI",
            "từ  chối",
            "Hu\u{309}y",
        ] {
            let events = inbound(stop);
            assert_eq!(events.len(), 2, "{stop:?}");
            assert_eq!(
                events[1],
                InboundEvent::OptedOut(OptOut {
                    who: sender.clone(),
                    scope: "all".into()
                })
            );
        }
        for not_stop in ["stop sending me ads", "STOPP", "dừng"] {
            assert_eq!(inbound(not_stop).len(), 1, "{not_stop:?}");
        }
        let mms = parse_params(
            &pairs(&[
                ("SmsSid", "MM1"),
                ("From", "0912345678"),
                ("NumMedia", "2"),
                ("MediaUrl0", "https://api.twilio.com/m/0"),
                ("MediaContentType0", "image/jpeg"),
                ("MediaUrl1", "https://api.twilio.com/m/1"),
                ("MediaContentType1", "application/pdf"),
            ]),
            1,
        )
        .unwrap();
        let InboundEvent::Message(m) = &mms[0] else {
            panic!("{mms:?}")
        };
        assert_eq!(m.sender.value, "+84912345678");
        assert!(
            matches!(&m.content[..], [Content::Image(_), Content::File(f)] if f.mime.as_deref() == Some("application/pdf"))
        );
        assert!(matches!(
            parse_params(&pairs(&[("MessageSid", "SM1"), ("Body", "hi")]), 1),
            Err(WebhookError::Malformed(_))
        ));
    }
}
