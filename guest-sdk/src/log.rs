//! Structured logging through the host's `log` import.
//!
//! Lines go to the host's tracing output and to the invocation record; the host truncates
//! each message to 1,000 bytes and keeps an invocation's first 100 lines. A plugin that
//! never logs does not import `weft:plugin/log`.
//!
//! ```no_run
//! use weft_guest::log;
//!
//! log::info!("reminder sent for cart {}", "c1");
//! log::warn!("no product name");
//! log::emit(log::Level::Debug, "with fields", &[("cart_id", "c1"), ("step", "remind")]);
//! ```

pub use crate::bindings::host::weft::plugin::log::Level;

use crate::bindings::host::weft::plugin::log as raw;

/// Emits `message` at `level` with structured `(key, value)` fields.
pub fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    raw::emit(level, message, &fields);
}

/// Emits `message` at debug level.
pub fn debug(message: &str) {
    raw::emit(Level::Debug, message, &[]);
}

/// Emits `message` at info level.
pub fn info(message: &str) {
    raw::emit(Level::Info, message, &[]);
}

/// Emits `message` at warn level.
pub fn warn(message: &str) {
    raw::emit(Level::Warn, message, &[]);
}

/// Emits `message` at error level.
pub fn error(message: &str) {
    raw::emit(Level::Error, message, &[]);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weft_log_debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weft_log_info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weft_log_warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weft_log_error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}

/// `debug!("fmt", args…)`: formats like `format!` and logs at debug level.
#[doc(inline)]
pub use crate::__weft_log_debug as debug;
/// `error!("fmt", args…)`: formats like `format!` and logs at error level.
#[doc(inline)]
pub use crate::__weft_log_error as error;
/// `info!("fmt", args…)`: formats like `format!` and logs at info level.
#[doc(inline)]
pub use crate::__weft_log_info as info;
/// `warn!("fmt", args…)`: formats like `format!` and logs at warn level.
#[doc(inline)]
pub use crate::__weft_log_warn as warn;
