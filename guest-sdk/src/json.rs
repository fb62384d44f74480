//! Typed JSON for the `json` fields (traits, properties, contexts, slots, constraints).
//!
//! WIT has no maps, so free-form data crosses the boundary as JSON text that the host has
//! already validated. These helpers parse it into [`Value`] or your own `serde` types and
//! turn values back into text, mapping failures to [`PluginError::InvalidInput`].
//!
//! ```
//! use weft_guest::json::{self, json, Value};
//!
//! #[derive(serde::Deserialize)]
//! struct Props { cart_id: String, name: Option<String> }
//!
//! let text = r#"{"cart_id":"c1","name":"Áo dài","price":450000}"#;
//! let props: Props = json::from(text).unwrap();
//! assert_eq!(props.cart_id, "c1");
//!
//! let v: Value = json::parse(text).unwrap();
//! assert_eq!(json::str_at(&v, "name"), Some("Áo dài"));
//! assert_eq!(json::to(&json!({"ok": true})).unwrap(), r#"{"ok":true}"#);
//! ```

use serde::{de::DeserializeOwned, Serialize};

use crate::types::PluginError;

pub use serde_json::{json, Map, Value};

/// Parses JSON text into `T`; malformed or mismatched input is `invalid-input`.
pub fn from<T: DeserializeOwned>(text: &str) -> Result<T, PluginError> {
    serde_json::from_str(text).map_err(|e| PluginError::InvalidInput(format!("json: {e}")))
}

/// Parses JSON text into a [`Value`]; an empty string counts as `{}`.
pub fn parse(text: &str) -> Result<Value, PluginError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    from(text)
}

/// Parses JSON text that should hold an object; anything else (or empty text) gives `{}`.
///
/// For fields the host documents as objects, where a missing or odd value is no reason to
/// fail the whole call.
pub fn object_or_empty(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Serialises `value` to JSON text; a value that cannot be serialised is `fatal`.
pub fn to<T: Serialize + ?Sized>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value).map_err(|e| PluginError::Fatal(format!("json: {e}")))
}

/// Follows a dotted path (`properties.cart_id`, `items.0.id`) into `value`.
pub fn path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(value, |v, key| match v {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The string at a dotted path, if there is one.
pub fn str_at<'a>(value: &'a Value, at: &str) -> Option<&'a str> {
    path(value, at).and_then(Value::as_str)
}

/// The value at a dotted path rendered as text: strings as they are, numbers and booleans
/// in JSON form; `None` for null, objects, arrays and missing paths.
pub fn text_at(value: &Value, at: &str) -> Option<String> {
    match path(value, at)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
