//! Per-installation settings and secrets (`weft:plugin/config`).
//!
//! Settings and secrets arrive per call from the host; never cache them in globals (each
//! invocation gets a fresh instance anyway). Secrets are never logged by the host: do not
//! log them yourself.
//!
//! ```no_run
//! use weft_guest::config;
//! # fn run() -> Result<(), weft_guest::PluginError> {
//! let base = config::get_or("api_base", "https://openapi.zalo.me");
//! let token = config::require_secret("access_token")?;
//! # let _ = (base, token); Ok(()) }
//! ```

use crate::types::PluginError;

pub use crate::bindings::host::weft::plugin::config::{get, get_secret, rotate_secret};

/// The setting `key`, or `default` when it is unset or empty.
pub fn get_or(key: &str, default: &str) -> String {
    get(key)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The setting `key`; unset or empty is `fatal` (the installation is misconfigured).
pub fn require(key: &str) -> Result<String, PluginError> {
    get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PluginError::Fatal(format!("config `{key}` is not set")))
}

/// The secret `key`; unset or empty is `fatal` (the installation is misconfigured).
pub fn require_secret(key: &str) -> Result<String, PluginError> {
    get_secret(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PluginError::Fatal(format!("secret `{key}` is not set")))
}
