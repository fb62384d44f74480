//! Conversions between the error types so `?` works in plugin code.

use crate::types::{CapabilityError, PluginError};

impl PluginError {
    /// `invalid-input`: the host discards the work item.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        PluginError::InvalidInput(message.into())
    }

    /// `not-supported`: the host discards the input quietly.
    pub fn not_supported(message: impl Into<String>) -> Self {
        PluginError::NotSupported(message.into())
    }

    /// `retryable`: the host retries with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        PluginError::Retryable(message.into())
    }

    /// `fatal`: the host parks the work and alerts.
    pub fn fatal(message: impl Into<String>) -> Self {
        PluginError::Fatal(message.into())
    }

    /// The message carried by any case.
    pub fn message(&self) -> &str {
        match self {
            PluginError::InvalidInput(m)
            | PluginError::NotSupported(m)
            | PluginError::Retryable(m)
            | PluginError::Fatal(m) => m,
        }
    }
}

impl CapabilityError {
    /// The message carried by any case.
    pub fn message(&self) -> &str {
        match self {
            CapabilityError::Denied(m)
            | CapabilityError::Invalid(m)
            | CapabilityError::LimitExceeded(m)
            | CapabilityError::Unavailable(m) => m,
        }
    }

    /// Whether retrying later may succeed (`unavailable`).
    pub fn is_transient(&self) -> bool {
        matches!(self, CapabilityError::Unavailable(_))
    }
}

/// `unavailable` → `retryable`; `denied` and `limit-exceeded` → `fatal` (retrying cannot
/// help, someone must look); `invalid` → `fatal` too, since the plugin built the argument.
impl From<CapabilityError> for PluginError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Unavailable(m) => PluginError::Retryable(format!("unavailable: {m}")),
            CapabilityError::Denied(m) => PluginError::Fatal(format!("denied: {m}")),
            CapabilityError::Invalid(m) => PluginError::Fatal(format!("invalid: {m}")),
            CapabilityError::LimitExceeded(m) => PluginError::Fatal(format!("limit exceeded: {m}")),
        }
    }
}

/// Malformed JSON in an input is the caller's fault: `invalid-input`.
impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> Self {
        PluginError::InvalidInput(format!("json: {e}"))
    }
}
