//! A tenant's chat settings (`GET/PUT /v1/chat/settings`): which websites may open the
//! chat, the default bot, the fallback message, SLA targets and business hours.

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::messaging::policy::LocalTime;
use crate::store::{Backend, Space, StoreError};

/// Where the settings live in the tenant's space.
pub const SETTINGS_KEY: &[u8] = b"chat/settings";

/// Longest fallback message: one chat bubble.
const MAX_FALLBACK_CHARS: usize = 1000;

/// Minutes in a day, for business-hour arithmetic.
const DAY_MINUTES: i64 = 24 * 60;

/// SLA targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// First agent reply after a handoff, ms (default 5 minutes).
    #[serde(default = "default_first_response")]
    pub first_response_ms: u64,
    /// An agent's reply after the customer wrote, ms (default 10 minutes).
    #[serde(default = "default_next_response")]
    pub next_response_ms: u64,
    /// Resolution after a handoff, ms (default 8 hours: one business day).
    #[serde(default = "default_resolution")]
    pub resolution_ms: u64,
}

fn default_first_response() -> u64 {
    5 * 60_000
}
fn default_next_response() -> u64 {
    10 * 60_000
}
fn default_resolution() -> u64 {
    8 * 3_600_000
}

impl Default for Sla {
    fn default() -> Self {
        Sla {
            first_response_ms: default_first_response(),
            next_response_ms: default_next_response(),
            resolution_ms: default_resolution(),
        }
    }
}

/// When agents work. SLA clocks only run inside these hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// IANA time zone.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// ISO weekdays agents work, 1 = Monday … 7 = Sunday.
    #[serde(default = "default_days")]
    pub days: Vec<u8>,
    /// Opening time, `HH:MM`.
    pub start: LocalTime,
    /// Closing time, `HH:MM` (after `start`).
    pub end: LocalTime,
}

fn default_tz() -> String {
    "Asia/Ho_Chi_Minh".into()
}
fn default_days() -> Vec<u8> {
    vec![1, 2, 3, 4, 5, 6]
}

/// A tenant's chat settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Origins (`https://shop.example.vn`) whose pages may open the chat socket.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The flow that greets a new web-chat visitor and answers when no keyword matches.
    #[serde(default)]
    pub default_flow: Option<String>,
    /// Sent when a flow fails; the conversation then goes to the agent queue.
    #[serde(default = "default_fallback")]
    pub fallback_message: String,
    /// Queue for conversations the fallback hands off.
    #[serde(default = "default_queue")]
    pub fallback_queue: String,
    /// Ask for CSAT when an agent resolves a conversation.
    #[serde(default = "yes")]
    pub csat_after_resolution: bool,
    /// Bot session idle timeout when the flow does not set one, ms (default 60 minutes).
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    /// SLA targets.
    #[serde(default)]
    pub sla: Sla,
    /// Business hours; none means SLA clocks run around the clock.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
}

fn default_fallback() -> String {
    "Xin lỗi, hệ thống đang gặp sự cố. Nhân viên sẽ hỗ trợ bạn ngay. \
     (Sorry, something went wrong. An agent will be with you shortly.)"
        .into()
}
fn default_queue() -> String {
    "support".into()
}
fn yes() -> bool {
    true
}
fn default_session_timeout() -> u64 {
    60 * 60_000
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            allowed_origins: Vec::new(),
            default_flow: None,
            fallback_message: default_fallback(),
            fallback_queue: default_queue(),
            csat_after_resolution: true,
            session_timeout_ms: default_session_timeout(),
            sla: Sla::default(),
            business_hours: None,
        }
    }
}

impl ChatSettings {
    /// Checks the settings; the error names the field.
    pub fn validate(&mut self) -> Result<(), String> {
        crate::origins::normalize("allowed_origins", &mut self.allowed_origins)?;
        if self.fallback_message.trim().is_empty()
            || self.fallback_message.chars().count() > MAX_FALLBACK_CHARS
        {
            return Err(format!(
                "fallback_message must have 1 to {MAX_FALLBACK_CHARS} characters"
            ));
        }
        if self.fallback_queue.is_empty() || self.fallback_queue.len() > 64 {
            return Err("fallback_queue must have 1 to 64 characters".into());
        }
        for (name, v) in [
            ("sla.first_response_ms", self.sla.first_response_ms),
            ("sla.next_response_ms", self.sla.next_response_ms),
            ("sla.resolution_ms", self.sla.resolution_ms),
            ("session_timeout_ms", self.session_timeout_ms),
        ] {
            // A minute to thirty days: shorter is a typo, longer is no clock at all.
            if !(60_000..=30 * 86_400_000).contains(&v) {
                return Err(format!(
                    "{name} must be between 60000 (a minute) and 2592000000 (30 days)"
                ));
            }
        }
        if let Some(h) = &self.business_hours {
            if h.time_zone.parse::<Tz>().is_err() {
                return Err(format!(
                    "business_hours.time_zone: unknown time zone `{}`",
                    h.time_zone
                ));
            }
            if h.days.is_empty() || h.days.iter().any(|d| !(1..=7).contains(d)) {
                return Err(
                    "business_hours.days: ISO weekdays 1 (Monday) to 7 (Sunday), at least one"
                        .into(),
                );
            }
            if h.end.minute_of_day() <= h.start.minute_of_day() {
                return Err("business_hours: `end` must be after `start`".into());
            }
        }
        Ok(())
    }

    /// Whether a browser page from `origin` may open the chat.
    pub fn allows_origin(&self, origin: &str) -> bool {
        crate::origins::allows(&self.allowed_origins, origin)
    }

    /// When an SLA clock of `duration_ms` started at `from` runs out, counting business
    /// hours only when they are set.
    pub fn due(&self, from: i64, duration_ms: u64) -> i64 {
        match &self.business_hours {
            None => from.saturating_add(duration_ms as i64),
            Some(h) => business_due(h, from, duration_ms),
        }
    }
}

/// Adds `duration_ms` of business time to `from`.
fn business_due(h: &BusinessHours, from: i64, duration_ms: u64) -> i64 {
    let tz: Tz = h.time_zone.parse().unwrap_or(chrono_tz::Asia::Ho_Chi_Minh);
    let open = i64::from(h.start.minute_of_day());
    let close = i64::from(h.end.minute_of_day());
    let mut left = duration_ms as i64;
    let mut t = from;
    // A year of days at most: a clock never needs more, and a bad config cannot spin.
    for _ in 0..366 {
        let Some(local) = tz.timestamp_millis_opt(t).single() else {
            t += 3_600_000;
            continue;
        };
        let minute = i64::from(local.hour()) * 60 + i64::from(local.minute());
        let day_start = t
            - (minute * 60_000
                + i64::from(local.second()) * 1000
                + i64::from(local.timestamp_subsec_millis()));
        let workday = h
            .days
            .contains(&(local.weekday().number_from_monday() as u8));
        if workday && minute < close {
            let start = day_start + open.max(minute) * 60_000;
            let start = start.max(t);
            let end = day_start + close * 60_000;
            if start + left <= end {
                return start + left;
            }
            left -= end - start.min(end);
        }
        // Next local midnight (DST days are 23 or 25 hours; the loop re-reads the clock).
        t = day_start + DAY_MINUTES * 60_000;
    }
    t
}

/// Reads the settings (defaults when none were saved).
pub fn load(b: &dyn Backend, sp: &Space) -> Result<ChatSettings, StoreError> {
    Ok(b.get_json(sp, SETTINGS_KEY)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> ChatSettings {
        ChatSettings {
            business_hours: Some(BusinessHours {
                time_zone: "Asia/Ho_Chi_Minh".into(),
                days: vec![1, 2, 3, 4, 5],
                start: "08:00".parse().unwrap(),
                end: "17:00".parse().unwrap(),
            }),
            ..ChatSettings::default()
        }
    }

    /// Unix ms of a Vietnam local time.
    fn vn(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono_tz::Asia::Ho_Chi_Minh
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn sla_clock_runs_around_the_clock_without_business_hours() {
        let s = ChatSettings::default();
        assert_eq!(s.due(1_000, 300_000), 301_000);
    }

    #[test]
    fn sla_clock_pauses_outside_business_hours() {
        let s = hours();
        // Friday 2026-11-20 16:58 + 5 min → 2 min on Friday, 3 min on Monday 08:00.
        assert_eq!(
            s.due(vn(2026, 11, 20, 16, 58), 300_000),
            vn(2026, 11, 23, 8, 3)
        );
        // Tuesday 07:00 (before opening) + 5 min → 08:05.
        assert_eq!(
            s.due(vn(2026, 11, 24, 7, 0), 300_000),
            vn(2026, 11, 24, 8, 5)
        );
        // Inside hours: plain addition.
        assert_eq!(
            s.due(vn(2026, 11, 24, 10, 0), 300_000),
            vn(2026, 11, 24, 10, 5)
        );
    }

    #[test]
    fn settings_name_the_bad_field() {
        let mut s = ChatSettings {
            allowed_origins: vec!["shop.example.vn".into()],
            ..ChatSettings::default()
        };
        assert!(s.validate().unwrap_err().contains("allowed_origins"));
        let mut s = ChatSettings {
            allowed_origins: vec!["https://Shop.Example.vn/".into()],
            ..ChatSettings::default()
        };
        s.validate().unwrap();
        assert!(s.allows_origin("https://shop.example.vn"));
        assert!(!s.allows_origin("https://evil.example"));
        let mut s = hours();
        s.business_hours.as_mut().unwrap().end = "07:00".parse().unwrap();
        assert!(s.validate().unwrap_err().contains("end"));
    }
}
