//! The Segment HTTP Tracking API's message format: parsing, validation and normalisation
//! of `track`, `identify`, `page`, `screen`, `group` and `alias` calls, one at a time or in
//! a batch. Pure functions; storage is in [`super`].

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest single event, in bytes of JSON (Segment's limit).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest batch request, in bytes (Segment's limit).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Longest `messageId`, `userId`, `anonymousId`, event or page name we keep: keys stay small.
pub const MAX_ID_BYTES: usize = 512;

/// The six Segment Spec calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Who the user is (updates traits).
    Identify,
    /// What the user did.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user's account or organisation.
    Group,
    /// Links a previous id to a user id.
    Alias,
}

impl MessageType {
    /// The name used in routes and in the `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    /// Parses a `type` value.
    pub fn parse(s: &str) -> Option<MessageType> {
        Some(match s {
            "identify" => MessageType::Identify,
            "track" => MessageType::Track,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "group" => MessageType::Group,
            "alias" => MessageType::Alias,
            _ => return None,
        })
    }
}

/// One accepted message, normalised: ids as strings, times as Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The call.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The sender's id for this message (generated when absent); deduplicated per tenant.
    pub message_id: String,
    /// The brand's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The device's anonymous id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Track: the event name. Page/screen: the page name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Track, page, screen: properties (JSON object).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// Identify, group: traits (JSON object).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    /// The context object, as sent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// Group: the group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Alias: the id being linked to `user_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// When it happened, corrected for client clock skew (Unix ms).
    pub timestamp: i64,
    /// The client's own timestamp, if it sent one (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<i64>,
    /// When the client sent it, if it said (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    /// When Weft received it (Unix ms).
    pub received_at: i64,
    /// Set only on events Weft itself generates for a known profile (a journey's
    /// `set-traits` and `emit`, audience changes): the processor applies them to that
    /// profile directly. Never read from client input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
}

impl Message {
    /// An event Weft itself generates for a known profile (journey `set-traits`/`emit`,
    /// audience changes). `message_id` must be deterministic for its cause.
    pub fn internal(
        profile_id: &str,
        kind: MessageType,
        event: Option<String>,
        properties: Map<String, Value>,
        traits: Map<String, Value>,
        message_id: String,
        now: i64,
    ) -> Message {
        Message {
            kind,
            message_id,
            user_id: None,
            anonymous_id: None,
            event,
            properties,
            traits,
            context: Map::new(),
            group_id: None,
            previous_id: None,
            timestamp: now,
            original_timestamp: None,
            sent_at: None,
            received_at: now,
            profile_id: Some(profile_id.to_string()),
        }
    }
}

/// Why one message was refused. `code` is stable; `message` names the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// Fields of a batch request that apply to every message in it.
#[derive(Debug, Default, Clone)]
pub struct BatchDefaults {
    /// Batch-level `sentAt` (Unix ms).
    pub sent_at: Option<i64>,
    /// Batch-level `context`, merged under each message's own.
    pub context: Option<Map<String, Value>>,
}

/// Parses an ISO-8601 time (RFC 3339, or without an offset meaning UTC) to Unix ms.
pub fn parse_time(v: &Value, field: &str) -> Result<Option<i64>, Rejection> {
    let bad = || {
        Rejection::new(
            "invalid_timestamp",
            format!(
                "`{field}` is not an ISO-8601 time (for example 2026-11-22T09:30:00.000Z): {v}"
            ),
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(Some(t.timestamp_millis()));
            }
            for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                    return Ok(Some(t.and_utc().timestamp_millis()));
                }
            }
            Err(bad())
        }
        _ => Err(bad()),
    }
}

/// An id field: a non-empty string, or a number (as analytics libraries sometimes send).
fn id_field(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    let s = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(Rejection::new(
                "invalid_field",
                format!(
                    "`{field}` must be a string or a number, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(Rejection::new(
            "invalid_field",
            format!(
                "`{field}` is {} bytes; the limit is {MAX_ID_BYTES}",
                s.len()
            ),
        ));
    }
    Ok(Some(s))
}

fn object_field(obj: &Map<String, Value>, field: &str) -> Result<Map<String, Value>, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(Rejection::new(
            "invalid_field",
            format!("`{field}` must be an object, not {}", json_kind(other)),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates and normalises one message.
///
/// `route_type` is the type the route implies (`None` inside a batch, where each message
/// says its own `type`). `raw_len` is the message's size in bytes as sent.
pub fn parse_message(
    value: &Value,
    raw_len: usize,
    route_type: Option<MessageType>,
    defaults: &BatchDefaults,
    received_at: i64,
    new_message_id: impl FnOnce() -> String,
) -> Result<Message, Rejection> {
    if raw_len > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            "event_too_large",
            format!("event is {raw_len} bytes; the limit is {MAX_EVENT_BYTES} bytes per event"),
        ));
    }
    let Value::Object(obj) = value else {
        return Err(Rejection::new(
            "invalid_event",
            format!("an event must be a JSON object, not {}", json_kind(value)),
        ));
    };
    let kind = match (route_type, obj.get("type")) {
        (Some(t), _) => t,
        (None, Some(Value::String(s))) => MessageType::parse(s).ok_or_else(|| {
            Rejection::new(
                "unknown_type",
                format!(
                    "unknown `type` {s:?}; expected identify, track, page, screen, group or alias"
                ),
            )
        })?,
        (None, Some(other)) => {
            return Err(Rejection::new(
                "unknown_type",
                format!("`type` must be a string, not {}", json_kind(other)),
            ))
        }
        (None, None) => return Err(Rejection::new(
            "missing_type",
            "each event in a batch needs a `type` (identify, track, page, screen, group or alias)",
        )),
    };
    let user_id = id_field(obj, "userId")?;
    let anonymous_id = id_field(obj, "anonymousId")?;
    let previous_id = id_field(obj, "previousId")?;
    let group_id = id_field(obj, "groupId")?;
    if kind == MessageType::Alias {
        if user_id.is_none() || previous_id.is_none() {
            return Err(Rejection::new(
                "missing_id",
                "alias needs both `userId` and `previousId`",
            ));
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::new(
            "missing_id",
            format!("{} needs a `userId` or an `anonymousId`", kind.as_str()),
        ));
    }
    if kind == MessageType::Group && group_id.is_none() {
        return Err(Rejection::new("missing_field", "group needs a `groupId`"));
    }
    let event = match kind {
        MessageType::Track => match obj.get("event") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(Rejection::new(
                    "missing_field",
                    "track needs an `event` name",
                ))
            }
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_field",
                    format!("`event` must be a string, not {}", json_kind(other)),
                ))
            }
        },
        MessageType::Page | MessageType::Screen => id_field(obj, "name")?,
        _ => None,
    };
    if event.as_ref().is_some_and(|e| e.len() > MAX_ID_BYTES) {
        return Err(Rejection::new(
            "invalid_field",
            format!("`event` is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    let message_id = id_field(obj, "messageId")?.unwrap_or_else(new_message_id);

    let properties = object_field(obj, "properties")?;
    let traits = object_field(obj, "traits")?;
    let mut context = object_field(obj, "context")?;
    if let Some(base) = &defaults.context {
        for (k, v) in base {
            context.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    let client_ts = match obj.get("timestamp") {
        Some(v) => parse_time(v, "timestamp")?,
        None => None,
    };
    let original_timestamp = match obj.get("originalTimestamp") {
        Some(v) => parse_time(v, "originalTimestamp")?,
        None => None,
    }
    .or(client_ts);
    let sent_at = match obj.get("sentAt") {
        Some(v) => parse_time(v, "sentAt")?,
        None => None,
    }
    .or(defaults.sent_at);
    // Segment's clock-skew correction: the client's clock is off by (sentAt - receivedAt),
    // so shift its timestamp by the same amount.
    let timestamp = match (original_timestamp, sent_at) {
        (Some(orig), Some(sent)) => received_at - (sent - orig),
        (Some(orig), None) => orig,
        (None, _) => received_at,
    };

    Ok(Message {
        kind,
        message_id,
        user_id,
        anonymous_id,
        event,
        properties,
        traits,
        context,
        group_id,
        previous_id,
        timestamp,
        original_timestamp,
        sent_at,
        received_at,
        profile_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn parse(v: Value, t: Option<MessageType>) -> Result<Message, Rejection> {
        let len = v.to_string().len();
        parse_message(&v, len, t, &BatchDefaults::default(), NOW, || "gen".into())
    }

    #[test]
    fn track_needs_an_event_name_and_an_id() {
        let e = parse(json!({"userId": "42"}), Some(MessageType::Track)).unwrap_err();
        assert_eq!(e.code, "missing_field");
        let e = parse(json!({"event": "X"}), Some(MessageType::Track)).unwrap_err();
        assert_eq!(e.code, "missing_id");
        assert!(e.message.contains("userId"));
        let m = parse(
            json!({"event": " X ", "userId": 42}),
            Some(MessageType::Track),
        )
        .unwrap();
        assert_eq!(m.event.as_deref(), Some("X"));
        assert_eq!(m.user_id.as_deref(), Some("42"));
        assert_eq!(m.message_id, "gen");
    }

    #[test]
    fn timestamp_is_corrected_for_client_clock_skew() {
        // The client's clock runs 10 minutes fast: it sent 5 s after the event happened.
        let m = parse(
            json!({"event": "X", "anonymousId": "a", "timestamp": "2026-09-21T20:43:20Z",
                   "sentAt": "2026-09-21T20:43:25Z"}),
            Some(MessageType::Track),
        )
        .unwrap();
        assert_eq!(m.received_at, NOW);
        assert_eq!(m.timestamp, NOW - 5_000);
        // No sentAt: the client's timestamp as is; no timestamp: receivedAt.
        let m = parse(
            json!({"event": "X", "anonymousId": "a", "timestamp": "2026-01-01T00:00:00+07:00"}),
            Some(MessageType::Track),
        )
        .unwrap();
        assert_eq!(m.timestamp, 1_767_200_400_000);
        let m = parse(
            json!({"event": "X", "anonymousId": "a"}),
            Some(MessageType::Track),
        )
        .unwrap();
        assert_eq!(m.timestamp, NOW);
    }

    #[test]
    fn invalid_timestamp_is_named() {
        let e = parse(
            json!({"event": "X", "anonymousId": "a", "sentAt": "yesterday"}),
            Some(MessageType::Track),
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_timestamp");
        assert!(e.message.contains("sentAt"), "{}", e.message);
    }

    #[test]
    fn batch_items_need_a_known_type() {
        let e = parse(json!({"type": "purchase", "userId": "1"}), None).unwrap_err();
        assert_eq!(e.code, "unknown_type");
        assert!(e.message.contains("purchase"));
        let e = parse(json!({"userId": "1"}), None).unwrap_err();
        assert_eq!(e.code, "missing_type");
    }

    #[test]
    fn alias_needs_both_ids_and_group_needs_a_group_id() {
        let e = parse(json!({"userId": "1"}), Some(MessageType::Alias)).unwrap_err();
        assert_eq!(e.code, "missing_id");
        assert!(parse(
            json!({"userId": "1", "previousId": "a"}),
            Some(MessageType::Alias)
        )
        .is_ok());
        let e = parse(json!({"userId": "1"}), Some(MessageType::Group)).unwrap_err();
        assert_eq!(e.code, "missing_field");
    }

    #[test]
    fn oversized_event_is_refused_with_the_limit() {
        let v = json!({"event": "X", "userId": "1"});
        let e = parse_message(
            &v,
            MAX_EVENT_BYTES + 1,
            Some(MessageType::Track),
            &BatchDefaults::default(),
            NOW,
            String::new,
        )
        .unwrap_err();
        assert_eq!(e.code, "event_too_large");
        assert!(e.message.contains("32768"));
        assert!(parse_message(
            &v,
            MAX_EVENT_BYTES,
            Some(MessageType::Track),
            &BatchDefaults::default(),
            NOW,
            String::new
        )
        .is_ok());
    }

    #[test]
    fn wrongly_typed_fields_are_named() {
        let e = parse(
            json!({"event": "X", "userId": "1", "properties": [1]}),
            Some(MessageType::Track),
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.contains("properties"));
        let e = parse(
            json!({"event": "X", "userId": {"a": 1}}),
            Some(MessageType::Track),
        )
        .unwrap_err();
        assert!(e.message.contains("userId"));
    }
}
