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

pub use crate::bindings::host::weft::plugin::config::rotate_secret;
#[cfg(target_arch = "wasm32")]
pub use crate::bindings::host::weft::plugin::config::{get, get_secret};
#[cfg(not(target_arch = "wasm32"))]
pub use testing::{get, get_secret};

/// Settings for native unit tests: off wasm32 there is no host, so [`get`] and
/// [`get_secret`] read a per-thread table that tests fill with [`testing::set`] and
/// [`testing::set_secret`] (empty by default: every key unset).
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
        static SECRETS: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    }

    /// The test setting `key`.
    pub fn get(key: &str) -> Option<String> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }

    /// The test secret `key`.
    pub fn get_secret(key: &str) -> Option<String> {
        SECRETS.with(|c| c.borrow().get(key).cloned())
    }

    /// Sets a setting for this thread's tests.
    pub fn set(key: &str, value: &str) {
        CONFIG.with(|c| c.borrow_mut().insert(key.to_owned(), value.to_owned()));
    }

    /// Sets a secret for this thread's tests.
    pub fn set_secret(key: &str, value: &str) {
        SECRETS.with(|c| c.borrow_mut().insert(key.to_owned(), value.to_owned()));
    }

    /// Unsets every setting and secret of this thread.
    pub fn clear() {
        CONFIG.with(|c| c.borrow_mut().clear());
        SECRETS.with(|c| c.borrow_mut().clear());
    }
}

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
