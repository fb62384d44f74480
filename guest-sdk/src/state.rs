//! Plugin-private key-value state (`weft:plugin/state`), one namespace per installation.
//!
//! Keys are at most 256 bytes and values at most 64 KiB; larger calls fail with
//! `limit-exceeded` rather than trapping. The raw byte functions are re-exported as they
//! are; the `_json` and `_string` helpers add typing on top.
//!
//! ```no_run
//! use weft_guest::state;
//! # fn run() -> Result<(), weft_guest::PluginError> {
//! let runs = state::increment("runs", 1)?;
//! state::set_json("last", &serde_json::json!({"runs": runs}))?;
//! let last: Option<serde_json::Value> = state::get_json("last")?;
//! # let _ = last; Ok(()) }
//! ```

use serde::{de::DeserializeOwned, Serialize};

use crate::types::PluginError;

pub use crate::bindings::host::weft::plugin::state::{
    compare_and_swap, delete, get, increment, set,
};

/// The JSON value under `key` parsed as `T`, if the key exists.
///
/// A stored value that is not valid JSON for `T` is `fatal`: the plugin wrote it.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            PluginError::Fatal(format!("state `{key}` is not the expected JSON: {e}"))
        }),
    }
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PluginError::Fatal(format!("json: {e}")))?;
    set(key, &bytes)?;
    Ok(())
}

/// The UTF-8 string under `key`, if the key exists; invalid UTF-8 is `fatal`.
pub fn get_string(key: &str) -> Result<Option<String>, PluginError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PluginError::Fatal(format!("state `{key}` is not UTF-8"))),
    }
}

/// Stores a string under `key`.
pub fn set_string(key: &str, value: &str) -> Result<(), PluginError> {
    set(key, value.as_bytes())?;
    Ok(())
}
