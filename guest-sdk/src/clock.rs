//! The host's clock (`weft:plugin/clock`) and duration constants.
//!
//! Plugins get time only from here or from the `now` field of their input, so tests can
//! run hours of journey time in milliseconds. Prefer the input's `now` in journey rules:
//! it keeps a step a pure function of its input and avoids the `clock` import entirely.
//!
//! ```no_run
//! use weft_guest::clock;
//! # fn run() -> Result<(), weft_guest::CapabilityError> {
//! let now = clock::now();
//! let local = clock::to_local(now, "Asia/Ho_Chi_Minh")?;
//! let in_an_hour = clock::after(now, clock::hours(1));
//! # let _ = (local, in_an_hour); Ok(()) }
//! ```

pub use crate::bindings::host::weft::plugin::clock::{from_local, now, to_local, LocalTime};
pub use crate::types::TimestampMs;

/// One second in milliseconds.
pub const SECOND_MS: u64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// One day (24 hours) in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// `n` seconds in milliseconds.
pub const fn seconds(n: u64) -> u64 {
    n * SECOND_MS
}

/// `n` minutes in milliseconds.
pub const fn minutes(n: u64) -> u64 {
    n * MINUTE_MS
}

/// `n` hours in milliseconds.
pub const fn hours(n: u64) -> u64 {
    n * HOUR_MS
}

/// `n` days in milliseconds.
pub const fn days(n: u64) -> u64 {
    n * DAY_MS
}

/// The timestamp `ms` milliseconds after `ts`, saturating at the end of time.
pub fn after(ts: TimestampMs, ms: u64) -> TimestampMs {
    ts.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}
