//! The messaging policy the host applies to every send intent: consent, quiet hours,
//! frequency caps and the Vietnamese ad prefix. Pure logic: callers pass the profile, the
//! earlier marketing sends and the current time; nothing here reads storage or a clock.
//!
//! [`decide`] runs the checks in the order of the domain's message pipeline
//! (`../shared/design/domain.md` §4) and stops at the first that blocks:
//!
//! 1. **Consent.** Decree 13/2023/NĐ-CP (to verify: legal summaries) requires explicit,
//!    purpose-specific, withdrawable consent for marketing. A marketing send therefore needs
//!    a granted `(channel, "marketing")` or `("*", "marketing")` entry (the exact channel wins
//!    over `*`): withdrawn gives [`SkipReason::ConsentWithdrawn`], no entry gives
//!    [`SkipReason::NoConsent`] unless [`PolicyConfig::marketing_requires_opt_in`] is off.
//!    Transactional messages need no opt-in and are skipped only when the transactional
//!    purpose is explicitly withdrawn.
//! 2. **Quiet hours** (marketing only). Decree 91/2020/NĐ-CP (to verify: press summaries;
//!    check Decree 147/2024 and later amendments) allows advertising SMS and email only
//!    07:00–22:00, so by default marketing inside 22:00–07:00 in the profile's time zone is
//!    held until the window opens ([`Decision::Hold`]), or skipped with
//!    [`SkipReason::QuietHours`] under [`QuietFallback::Abort`].
//! 3. **Frequency cap** (marketing only). Decree 91/2020 (to verify) allows at most three
//!    advertising SMS and three advertising emails per recipient in any 24 h; Weft caps
//!    marketing at three sends per profile per local calendar day by default (Braze-style
//!    counting, [`CapWindow::LocalDay`]) or per rolling 24 h ([`CapWindow::Rolling24h`]).
//!    The design doc notes the two readings differ (calendar days allow up to six sends
//!    across midnight); which one the decree means is still to verify.
//!
//! Transactional messages are exempt from quiet hours and caps. Time zones come from the
//! profile, else the tenant default; an unknown name falls back to the tenant default
//! (and an unknown tenant default to UTC). Local times are resolved with `chrono-tz`, so
//! window openings and local midnights stay correct across DST changes: a wall-clock time
//! skipped by a DST gap resolves to the first instant after the gap, and a repeated one to
//! its next occurrence.
//!
//! [`apply_ad_prefix`] adds the Decree 91/2020 `[QC]`/`[AD]` marker (to verify) to marketing
//! text on the configured channels, SMS by default.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize};

use crate::profiles::ProfileRecord;
use crate::runtime::bindings::types::{ChannelKind, MessageCategory};

/// Tenant time zone when none is configured: Weft's first market is Vietnam.
pub const DEFAULT_TIMEZONE: &str = "Asia/Ho_Chi_Minh";
/// Default quiet hours start: Decree 91/2020 allows ad SMS and email only until 22:00 (to verify).
pub const DEFAULT_QUIET_START: LocalTime = LocalTime {
    hour: 22,
    minute: 0,
};
/// Default quiet hours end: Decree 91/2020 allows ad SMS and email only from 07:00 (to verify).
pub const DEFAULT_QUIET_END: LocalTime = LocalTime { hour: 7, minute: 0 };
/// Default marketing sends per profile per window: Decree 91/2020 allows three ad SMS and
/// three ad emails per recipient per 24 h (to verify).
pub const DEFAULT_MARKETING_CAP: u32 = 3;
/// Length of the [`CapWindow::Rolling24h`] window: Decree 91/2020's "any 24 h" (to verify).
pub const ROLLING_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Channels whose marketing text gets the ad prefix by default: Decree 91/2020's rule is
/// about advertising SMS (to verify).
pub const DEFAULT_AD_PREFIX_CHANNELS: &[&str] = &["sms"];
/// Markers Decree 91/2020 accepts at the start of an ad SMS (to verify): text starting with
/// either is already prefixed.
pub const AD_MARKERS: &[&str] = &["[QC]", "[AD]"];
/// Consent purpose checked for [`Category::Marketing`].
pub const PURPOSE_MARKETING: &str = "marketing";
/// Consent purpose checked for [`Category::Transactional`].
pub const PURPOSE_TRANSACTIONAL: &str = "transactional";
/// Channel wildcard, as in consent records and [`PolicyConfig::ad_prefix_channels`].
pub const ANY_CHANNEL: &str = "*";
/// Every channel name [`channel_name`] returns, as used in consent records.
pub const CHANNEL_NAMES: &[&str] = &[
    "zalo-oa",
    "zns",
    "messenger",
    "whatsapp",
    "sms",
    "email",
    "push",
    "web-chat",
    "webhook",
];

/// Minutes in an hour, for minute-of-day arithmetic.
const MINUTES_PER_HOUR: u32 = 60;
/// Hours in a day: valid hours are `0..HOURS_PER_DAY`.
const HOURS_PER_DAY: u8 = 24;
/// Minutes in an hour: valid minutes are `0..MINUTES_PER_HOUR_U8`.
const MINUTES_PER_HOUR_U8: u8 = 60;
/// Longest DST gap searched forward, in minutes: the longest in tzdb is Samoa's skipped
/// 30 December 2011 (24 h), plus slack.
const MAX_GAP_MINUTES: u32 = 25 * 60;
/// Days around the local date searched for the next window opening: one back covers a
/// fall-back across midnight, two ahead a wrapping window plus a skipped day.
const OPENING_SEARCH_DAYS: std::ops::RangeInclusive<i64> = -1..=2;
/// Re-check delay when the window opening cannot be computed (an instant outside chrono's
/// ±262,000-year range): a day, so the message is neither lost nor sent in quiet hours.
const FALLBACK_HOLD_MS: i64 = ROLLING_WINDOW_MS;

/// Errors of reading or checking a [`PolicyConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A local time is not of the form `HH:MM`.
    #[error("invalid local time {0:?}: expected HH:MM on a 24-hour clock, such as \"22:00\"")]
    TimeFormat(String),
    /// A local time's hour is 24 or more.
    #[error("invalid local time {input:?}: hour {hour} is out of range 00-23")]
    HourOutOfRange {
        /// The text as given.
        input: String,
        /// The hour read from it.
        hour: u8,
    },
    /// A local time's minute is 60 or more.
    #[error("invalid local time {input:?}: minute {minute} is out of range 00-59")]
    MinuteOutOfRange {
        /// The text as given.
        input: String,
        /// The minute read from it.
        minute: u8,
    },
    /// Quiet hours start and end at the same time, which would be an empty window.
    #[error(
        "quiet hours start and end are both {0}: the window would be empty; omit quiet_hours \
         (or set it to null) to disable quiet hours"
    )]
    EmptyQuietHours(LocalTime),
    /// A time zone is not an IANA name known to chrono-tz.
    #[error("unknown time zone {0:?}: expected an IANA name such as \"Asia/Ho_Chi_Minh\"")]
    UnknownTimeZone(String),
    /// The ad prefix is empty or only whitespace.
    #[error("ad_prefix is blank: set a marker such as \"[QC]\", or omit it to add none")]
    BlankAdPrefix,
    /// An `ad_prefix_channels` entry is not a channel name.
    #[error(
        "unknown channel {0:?} in ad_prefix_channels: expected \"*\" or one of {CHANNEL_NAMES:?}"
    )]
    UnknownChannel(String),
}

/// A wall-clock time of day with minute precision, written `HH:MM` (24-hour clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalTime {
    hour: u8,
    minute: u8,
}

impl LocalTime {
    /// A time of day; fails unless `hour < 24` and `minute < 60`.
    pub fn new(hour: u8, minute: u8) -> Result<LocalTime, PolicyError> {
        let input = || format!("{hour:02}:{minute:02}");
        if hour >= HOURS_PER_DAY {
            return Err(PolicyError::HourOutOfRange {
                input: input(),
                hour,
            });
        }
        if minute >= MINUTES_PER_HOUR_U8 {
            return Err(PolicyError::MinuteOutOfRange {
                input: input(),
                minute,
            });
        }
        Ok(LocalTime { hour, minute })
    }

    /// The hour, 0–23.
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0–59.
    pub fn minute(self) -> u8 {
        self.minute
    }

    /// Minutes since midnight.
    pub fn minute_of_day(self) -> u32 {
        u32::from(self.hour) * MINUTES_PER_HOUR + u32::from(self.minute)
    }

    /// The chrono time of day.
    fn naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(self.hour.into(), self.minute.into(), 0).unwrap_or(NaiveTime::MIN)
    }
}

impl FromStr for LocalTime {
    type Err = PolicyError;

    /// Parses exactly `HH:MM` (two digits each), such as `"07:00"` or `"22:30"`.
    fn from_str(s: &str) -> Result<LocalTime, PolicyError> {
        let format_error = || PolicyError::TimeFormat(s.to_owned());
        let b = s.as_bytes();
        let two_digits = |hi: u8, lo: u8| {
            (hi.is_ascii_digit() && lo.is_ascii_digit()).then(|| (hi - b'0') * 10 + (lo - b'0'))
        };
        let [h1, h2, b':', m1, m2] = b else {
            return Err(format_error());
        };
        let hour = two_digits(*h1, *h2).ok_or_else(format_error)?;
        let minute = two_digits(*m1, *m2).ok_or_else(format_error)?;
        LocalTime::new(hour, minute).map_err(|e| match e {
            PolicyError::HourOutOfRange { hour, .. } => PolicyError::HourOutOfRange {
                input: s.to_owned(),
                hour,
            },
            PolicyError::MinuteOutOfRange { minute, .. } => PolicyError::MinuteOutOfRange {
                input: s.to_owned(),
                minute,
            },
            other => other,
        })
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl TryFrom<String> for LocalTime {
    type Error = PolicyError;

    fn try_from(s: String) -> Result<LocalTime, PolicyError> {
        s.parse()
    }
}

impl From<LocalTime> for String {
    fn from(t: LocalTime) -> String {
        t.to_string()
    }
}

/// A daily window, in the profile's local time, in which marketing is not sent. It covers
/// `start` up to but excluding `end`, and wraps midnight when `end` is earlier than `start`
/// (22:00–07:00); 12:00–13:00 is a plain midday window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawQuietHours")]
pub struct QuietHours {
    /// First quiet minute, for example 22:00.
    pub start: LocalTime,
    /// First minute marketing may go out again, for example 07:00.
    pub end: LocalTime,
}

/// Quiet hours as written in config, before the empty-window check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuietHours {
    start: LocalTime,
    end: LocalTime,
}

impl TryFrom<RawQuietHours> for QuietHours {
    type Error = PolicyError;

    fn try_from(raw: RawQuietHours) -> Result<QuietHours, PolicyError> {
        QuietHours::new(raw.start, raw.end)
    }
}

impl QuietHours {
    /// A window from `start` to `end`; fails when they are equal (an empty window).
    pub fn new(start: LocalTime, end: LocalTime) -> Result<QuietHours, PolicyError> {
        if start == end {
            return Err(PolicyError::EmptyQuietHours(start));
        }
        Ok(QuietHours { start, end })
    }

    /// Whether the window wraps midnight (`end` earlier than `start`).
    pub fn wraps_midnight(&self) -> bool {
        self.end < self.start
    }

    /// Whether `t` is inside the window. A window with `start == end` contains nothing.
    pub fn contains(&self, t: LocalTime) -> bool {
        self.contains_minute(t.minute_of_day())
    }

    /// Whether the minute of day `m` is inside the window.
    fn contains_minute(&self, m: u32) -> bool {
        let (start, end) = (self.start.minute_of_day(), self.end.minute_of_day());
        if start <= end {
            start <= m && m < end
        } else {
            m >= start || m < end
        }
    }
}

impl Default for QuietHours {
    /// 22:00–07:00, the Decree 91/2020 advertising curfew (to verify).
    fn default() -> QuietHours {
        QuietHours {
            start: DEFAULT_QUIET_START,
            end: DEFAULT_QUIET_END,
        }
    }
}

/// What happens to marketing that falls inside quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietFallback {
    /// Hold it and send when the window opens (`next_available_time`, the default).
    #[default]
    NextAvailableTime,
    /// Skip it with [`SkipReason::QuietHours`] (`abort`).
    Abort,
}

/// How marketing sends are counted toward [`PolicyConfig::marketing_cap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CapWindow {
    /// Per calendar day in the profile's time zone, resetting at local midnight
    /// (`local_day`, the default; Braze global capping).
    #[default]
    #[serde(rename = "local_day")]
    LocalDay,
    /// Over the last 24 hours (`rolling_24h`; the literal reading of Decree 91/2020).
    #[serde(rename = "rolling_24h")]
    Rolling24h,
}

/// A tenant's messaging policy, read from tenant settings or config. Every field is
/// optional; an absent field takes the default shown, which together follow the Vietnamese
/// rules in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// IANA time zone for profiles without a valid one. Default `"Asia/Ho_Chi_Minh"`.
    #[serde(default = "default_timezone", deserialize_with = "de_time_zone")]
    pub default_timezone: String,
    /// Local window in which marketing is held, `{ start = "HH:MM", end = "HH:MM" }`;
    /// `null` disables it. Default 22:00–07:00.
    #[serde(default = "default_quiet_hours")]
    pub quiet_hours: Option<QuietHours>,
    /// What to do with marketing inside quiet hours. Default `"next_available_time"`.
    #[serde(default)]
    pub quiet_fallback: QuietFallback,
    /// Marketing sends per profile per [`cap_window`](Self::cap_window), over all channels;
    /// `null` disables the cap. Default 3.
    #[serde(default = "default_marketing_cap")]
    pub marketing_cap: Option<u32>,
    /// How the cap counts. Default `"local_day"`.
    #[serde(default)]
    pub cap_window: CapWindow,
    /// Whether marketing needs a granted marketing consent (true) or only the absence of a
    /// withdrawn one (false). Default true.
    #[serde(default = "default_marketing_requires_opt_in")]
    pub marketing_requires_opt_in: bool,
    /// Marker prepended to marketing text on [`ad_prefix_channels`](Self::ad_prefix_channels),
    /// such as `"[QC]"`; must not be blank. Default none.
    #[serde(default, deserialize_with = "de_ad_prefix")]
    pub ad_prefix: Option<String>,
    /// Channel names that get [`ad_prefix`](Self::ad_prefix), or `"*"` for all.
    /// Default `["sms"]`.
    #[serde(
        default = "default_ad_prefix_channels",
        deserialize_with = "de_channels"
    )]
    pub ad_prefix_channels: Vec<String>,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

fn default_quiet_hours() -> Option<QuietHours> {
    Some(QuietHours::default())
}

fn default_marketing_cap() -> Option<u32> {
    Some(DEFAULT_MARKETING_CAP)
}

fn default_marketing_requires_opt_in() -> bool {
    true
}

fn default_ad_prefix_channels() -> Vec<String> {
    DEFAULT_AD_PREFIX_CHANNELS
        .iter()
        .map(|c| (*c).to_owned())
        .collect()
}

fn check_time_zone(name: &str) -> Result<(), PolicyError> {
    name.parse::<Tz>()
        .map(|_| ())
        .map_err(|_| PolicyError::UnknownTimeZone(name.to_owned()))
}

fn check_ad_prefix(prefix: Option<&str>) -> Result<(), PolicyError> {
    match prefix {
        Some(p) if p.trim().is_empty() => Err(PolicyError::BlankAdPrefix),
        _ => Ok(()),
    }
}

fn check_channels(channels: &[String]) -> Result<(), PolicyError> {
    match channels
        .iter()
        .find(|c| c.as_str() != ANY_CHANNEL && !CHANNEL_NAMES.contains(&c.as_str()))
    {
        Some(c) => Err(PolicyError::UnknownChannel(c.clone())),
        None => Ok(()),
    }
}

fn de_time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_time_zone(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

fn de_ad_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let prefix = Option::<String>::deserialize(d)?;
    check_ad_prefix(prefix.as_deref()).map_err(serde::de::Error::custom)?;
    Ok(prefix)
}

fn de_channels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let channels = Vec::<String>::deserialize(d)?;
    check_channels(&channels).map_err(serde::de::Error::custom)?;
    Ok(channels)
}

impl Default for PolicyConfig {
    /// The serde defaults: the Vietnamese rules of the module docs.
    fn default() -> PolicyConfig {
        PolicyConfig {
            default_timezone: default_timezone(),
            quiet_hours: default_quiet_hours(),
            quiet_fallback: QuietFallback::default(),
            marketing_cap: default_marketing_cap(),
            cap_window: CapWindow::default(),
            marketing_requires_opt_in: default_marketing_requires_opt_in(),
            ad_prefix: None,
            ad_prefix_channels: default_ad_prefix_channels(),
        }
    }
}

impl PolicyConfig {
    /// Checks a config built in code the way deserialising checks one read from text:
    /// a known time zone, non-empty quiet hours, a non-blank prefix, known channel names.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_time_zone(&self.default_timezone)?;
        if let Some(q) = &self.quiet_hours {
            QuietHours::new(q.start, q.end)?;
        }
        check_ad_prefix(self.ad_prefix.as_deref())?;
        check_channels(&self.ad_prefix_channels)
    }
}

/// Why a message is sent, as far as the policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Caused by the customer or part of an open conversation: no opt-in, quiet hours or cap.
    Transactional,
    /// Promotional: needs consent and obeys quiet hours and the cap.
    Marketing,
}

impl Category {
    /// The consent purpose checked for this category.
    pub fn consent_purpose(self) -> &'static str {
        match self {
            Category::Transactional => PURPOSE_TRANSACTIONAL,
            Category::Marketing => PURPOSE_MARKETING,
        }
    }
}

impl From<MessageCategory> for Category {
    /// `service` (care inside an open conversation) is not promotional, so it is treated
    /// as transactional: exempt from quiet hours and caps.
    fn from(c: MessageCategory) -> Category {
        match c {
            MessageCategory::Transactional | MessageCategory::Service => Category::Transactional,
            MessageCategory::Marketing => Category::Marketing,
        }
    }
}

/// The channel name used in consent records for a WIT channel kind.
pub fn channel_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::ZaloOa => "zalo-oa",
        ChannelKind::ZaloZns => "zns",
        ChannelKind::Messenger => "messenger",
        ChannelKind::Whatsapp => "whatsapp",
        ChannelKind::Sms => "sms",
        ChannelKind::Email => "email",
        ChannelKind::Push => "push",
        ChannelKind::WebChat => "web-chat",
        ChannelKind::Webhook => "webhook",
    }
}

/// The channel kind of a consent-record channel name (the inverse of [`channel_name`]).
pub fn channel_kind(name: &str) -> Option<ChannelKind> {
    [
        ChannelKind::ZaloOa,
        ChannelKind::ZaloZns,
        ChannelKind::Messenger,
        ChannelKind::Whatsapp,
        ChannelKind::Sms,
        ChannelKind::Email,
        ChannelKind::Push,
        ChannelKind::WebChat,
        ChannelKind::Webhook,
    ]
    .into_iter()
    .find(|k| channel_name(*k) == name)
}

/// Everything [`decide`] needs about one send intent.
#[derive(Debug, Clone, Copy)]
pub struct SendContext<'a> {
    /// The message's category.
    pub category: Category,
    /// The channel name as in consent records (see [`channel_name`]).
    pub channel: &'a str,
    /// The recipient: its time zone and consents.
    pub profile: &'a ProfileRecord,
    /// Unix ms of this profile's earlier marketing sends that count toward the cap, on any
    /// channel, in any order. Sends at or after the window start count, later ones too.
    pub marketing_sent_at: &'a [i64],
    /// The current time, Unix ms.
    pub now_ms: i64,
}

/// What to do with a send intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Send now.
    Send,
    /// Quiet hours: decide again at `until_ms` (Unix ms), when the window opens in the
    /// profile's time zone.
    Hold {
        /// When to decide again, Unix ms.
        until_ms: i64,
    },
    /// Do not send.
    Skip {
        /// Why.
        reason: SkipReason,
    },
}

/// Why a send intent was skipped; [`Display`](fmt::Display) and serde give the stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Marketing without a granted consent while opt-in is required (`no_consent`).
    NoConsent,
    /// The consent for the message's purpose is withdrawn (`consent_withdrawn`).
    ConsentWithdrawn,
    /// The marketing cap for the current window is used up (`frequency_capped`).
    FrequencyCapped,
    /// Inside quiet hours with [`QuietFallback::Abort`] (`quiet_hours`).
    QuietHours,
}

impl SkipReason {
    /// The stable code: `no_consent`, `consent_withdrawn`, `frequency_capped`, `quiet_hours`.
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::NoConsent => "no_consent",
            SkipReason::ConsentWithdrawn => "consent_withdrawn",
            SkipReason::FrequencyCapped => "frequency_capped",
            SkipReason::QuietHours => "quiet_hours",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The time zone to use: `name` if it is a known IANA zone, else the tenant default, else UTC.
pub fn time_zone(cfg: &PolicyConfig, name: Option<&str>) -> Tz {
    name.and_then(|n| n.parse::<Tz>().ok())
        .or_else(|| cfg.default_timezone.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

/// Decides one send intent: consent, then quiet hours and the frequency cap for marketing
/// (see the module docs). Transactional messages pass unless their consent is withdrawn.
pub fn decide(cfg: &PolicyConfig, ctx: &SendContext<'_>) -> Decision {
    let skip = |reason| Decision::Skip { reason };
    match (
        ctx.category,
        ctx.profile
            .consent(ctx.channel, ctx.category.consent_purpose()),
    ) {
        (_, Some(false)) => return skip(SkipReason::ConsentWithdrawn),
        (Category::Marketing, None) if cfg.marketing_requires_opt_in => {
            return skip(SkipReason::NoConsent)
        }
        _ => {}
    }
    if ctx.category == Category::Transactional {
        return Decision::Send;
    }
    let tz = time_zone(cfg, ctx.profile.timezone.as_deref());
    if let Some(quiet) = &cfg.quiet_hours {
        if let Some(until_ms) = quiet_until(quiet, tz, ctx.now_ms) {
            return match cfg.quiet_fallback {
                QuietFallback::NextAvailableTime => Decision::Hold { until_ms },
                QuietFallback::Abort => skip(SkipReason::QuietHours),
            };
        }
    }
    if let Some(cap) = cfg.marketing_cap {
        let start = window_start(cfg.cap_window, tz, ctx.now_ms);
        let sent = ctx
            .marketing_sent_at
            .iter()
            .filter(|&&t| t >= start)
            .count();
        if sent >= usize::try_from(cap).unwrap_or(usize::MAX) {
            return skip(SkipReason::FrequencyCapped);
        }
    }
    Decision::Send
}

/// Prefixes marketing text with [`PolicyConfig::ad_prefix`] and a space when `channel` is in
/// [`PolicyConfig::ad_prefix_channels`] (or that list holds `"*"`). Idempotent: text that
/// already starts (after leading whitespace) with the prefix or another [`AD_MARKERS`]
/// marker is returned unchanged, as is transactional text.
pub fn apply_ad_prefix(
    cfg: &PolicyConfig,
    category: Category,
    channel: &str,
    text: &str,
) -> String {
    let Some(prefix) = cfg
        .ad_prefix
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    else {
        return text.to_owned();
    };
    let channel_needs_it = cfg
        .ad_prefix_channels
        .iter()
        .any(|c| c == channel || c == ANY_CHANNEL);
    if category != Category::Marketing || !channel_needs_it {
        return text.to_owned();
    }
    let body = text.trim_start();
    if body.starts_with(prefix) || AD_MARKERS.iter().any(|m| body.starts_with(m)) {
        return text.to_owned();
    }
    if text.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix} {text}")
    }
}

/// The start (Unix ms) of the cap window containing `now_ms` for a profile in time zone
/// `tz` (unknown names fall back as in [`time_zone`]): the first instant of the local day
/// for [`CapWindow::LocalDay`], `now_ms - 24 h` for [`CapWindow::Rolling24h`]. Sends at or
/// after it count toward the cap.
pub fn cap_window_start(cfg: &PolicyConfig, tz: &str, now_ms: i64) -> i64 {
    window_start(cfg.cap_window, time_zone(cfg, Some(tz)), now_ms)
}

fn window_start(window: CapWindow, tz: Tz, now_ms: i64) -> i64 {
    match window {
        CapWindow::LocalDay => local_day_start(tz, now_ms),
        CapWindow::Rolling24h => now_ms.saturating_sub(ROLLING_WINDOW_MS),
    }
}

/// `ms` in `tz`, or `None` outside chrono's range.
fn to_local(tz: Tz, ms: i64) -> Option<DateTime<Tz>> {
    DateTime::from_timestamp_millis(ms).map(|d| d.with_timezone(&tz))
}

/// The first instant of the local calendar day containing `now_ms` (local midnight, or the
/// end of a DST gap that swallows midnight).
fn local_day_start(tz: Tz, now_ms: i64) -> i64 {
    to_local(tz, now_ms)
        .and_then(|local| instants_at(tz, local.date_naive().and_time(NaiveTime::MIN)).min())
        .map_or(now_ms, |start| start.min(now_ms))
}

/// When the quiet window containing `now_ms` opens, or `None` when `now_ms` is outside it.
fn quiet_until(quiet: &QuietHours, tz: Tz, now_ms: i64) -> Option<i64> {
    let local = to_local(tz, now_ms)?;
    let minute = local.hour() * MINUTES_PER_HOUR + local.minute();
    if !quiet.contains_minute(minute) {
        return None;
    }
    let until = next_occurrence(tz, local.date_naive(), quiet.end.naive(), now_ms);
    Some(until.unwrap_or_else(|| now_ms.saturating_add(FALLBACK_HOLD_MS)))
}

/// The earliest instant after `after_ms` whose wall-clock time in `tz` is `time`, searching
/// the days around `date`.
fn next_occurrence(tz: Tz, date: NaiveDate, time: NaiveTime, after_ms: i64) -> Option<i64> {
    OPENING_SEARCH_DAYS
        .filter_map(|offset| date.checked_add_signed(Duration::days(offset)))
        .flat_map(|d| instants_at(tz, d.and_time(time)))
        .filter(|&t| t > after_ms)
        .min()
}

/// The instants (Unix ms) whose wall-clock time in `tz` is `naive`: one, two when the time
/// repeats (DST fall-back), or for a time skipped by a DST gap, the first instant after it.
pub(crate) fn instants_at(tz: Tz, naive: NaiveDateTime) -> impl Iterator<Item = i64> {
    let pair = match tz.from_local_datetime(&naive) {
        LocalResult::Single(d) => [Some(d.timestamp_millis()), None],
        LocalResult::Ambiguous(a, b) => [Some(a.timestamp_millis()), Some(b.timestamp_millis())],
        LocalResult::None => [first_after_gap(tz, naive), None],
    };
    pair.into_iter().flatten()
}

/// The first instant after a DST gap containing `naive`: the earliest valid wall-clock
/// minute after it.
fn first_after_gap(tz: Tz, naive: NaiveDateTime) -> Option<i64> {
    (1..=MAX_GAP_MINUTES).find_map(|m| {
        match tz.from_local_datetime(&(naive + Duration::minutes(m.into()))) {
            LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => Some(d.timestamp_millis()),
            LocalResult::None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::ConsentRecord;

    /// One hour in ms.
    const HOUR_MS: i64 = 3_600_000;
    /// Asia/Ho_Chi_Minh is UTC+7 all year (no DST).
    const VN_OFFSET_MS: i64 = 7 * HOUR_MS;

    /// Unix ms of a UTC wall-clock time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    /// Unix ms of a Vietnam (UTC+7) wall-clock time, computed without chrono-tz.
    fn vn(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        utc(y, mo, d, h, mi) - VN_OFFSET_MS
    }

    fn profile(tz: Option<&str>, consents: &[(&str, &str, bool)]) -> ProfileRecord {
        let mut p = ProfileRecord::new("p_1".to_owned(), 0);
        p.timezone = tz.map(str::to_owned);
        p.consents = consents
            .iter()
            .map(|(channel, purpose, granted)| ConsentRecord {
                channel: (*channel).to_owned(),
                purpose: (*purpose).to_owned(),
                granted: *granted,
                source: "api".to_owned(),
                at: 0,
            })
            .collect();
        p
    }

    /// A profile opted in to marketing on every channel.
    fn opted_in(tz: Option<&str>) -> ProfileRecord {
        profile(tz, &[("*", "marketing", true)])
    }

    fn decide_at(
        cfg: &PolicyConfig,
        category: Category,
        channel: &str,
        p: &ProfileRecord,
        sent: &[i64],
        now_ms: i64,
    ) -> Decision {
        decide(
            cfg,
            &SendContext {
                category,
                channel,
                profile: p,
                marketing_sent_at: sent,
                now_ms,
            },
        )
    }

    fn marketing(cfg: &PolicyConfig, p: &ProfileRecord, sent: &[i64], now_ms: i64) -> Decision {
        decide_at(cfg, Category::Marketing, "sms", p, sent, now_ms)
    }

    fn skipped(reason: SkipReason) -> Decision {
        Decision::Skip { reason }
    }

    fn no_quiet_hours() -> PolicyConfig {
        PolicyConfig {
            quiet_hours: None,
            ..PolicyConfig::default()
        }
    }

    fn t(s: &str) -> LocalTime {
        s.parse().unwrap()
    }

    #[test]
    fn marketing_at_21_55_local_is_sent_and_at_22_00_is_held_until_07_00() {
        let cfg = PolicyConfig::default();
        let p = opted_in(None);
        let at_21_55 = vn(2025, 3, 10, 21, 55);
        assert_eq!(at_21_55, 1_741_618_500_000, "2025-03-10T14:55:00Z");
        assert_eq!(marketing(&cfg, &p, &[], at_21_55), Decision::Send);
        let at_22_00 = vn(2025, 3, 10, 22, 0);
        assert_eq!(marketing(&cfg, &p, &[], at_22_00 - 1), Decision::Send);
        let next_07_00 = vn(2025, 3, 11, 7, 0);
        assert_eq!(next_07_00, 1_741_651_200_000, "2025-03-11T00:00:00Z");
        assert_eq!(
            marketing(&cfg, &p, &[], at_22_00),
            Decision::Hold {
                until_ms: next_07_00
            }
        );
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 23, 59)),
            Decision::Hold {
                until_ms: next_07_00
            }
        );
    }

    #[test]
    fn held_message_at_05_30_goes_out_at_07_00_same_day() {
        let cfg = PolicyConfig::default();
        let p = opted_in(None);
        let same_day_07_00 = vn(2025, 3, 11, 7, 0);
        for (h, m) in [(0, 0), (5, 30), (6, 59)] {
            assert_eq!(
                marketing(&cfg, &p, &[], vn(2025, 3, 11, h, m)),
                Decision::Hold {
                    until_ms: same_day_07_00
                },
                "{h:02}:{m:02}"
            );
        }
        assert_eq!(marketing(&cfg, &p, &[], same_day_07_00), Decision::Send);
    }

    #[test]
    fn quiet_hours_abort_fallback_skips() {
        let cfg = PolicyConfig {
            quiet_fallback: QuietFallback::Abort,
            ..PolicyConfig::default()
        };
        let p = opted_in(None);
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 22, 30)),
            skipped(SkipReason::QuietHours)
        );
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 21, 0)),
            Decision::Send
        );
    }

    #[test]
    fn non_wrapping_quiet_hours_hold_only_inside_the_window() {
        let cfg = PolicyConfig {
            quiet_hours: Some(QuietHours::new(t("12:00"), t("13:00")).unwrap()),
            ..PolicyConfig::default()
        };
        let p = opted_in(None);
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 11, 59)),
            Decision::Send
        );
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 12, 0)),
            Decision::Hold {
                until_ms: vn(2025, 3, 10, 13, 0)
            }
        );
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 13, 0)),
            Decision::Send
        );
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 23, 0)),
            Decision::Send
        );
    }

    #[test]
    fn disabled_quiet_hours_send_marketing_at_night() {
        let p = opted_in(None);
        assert_eq!(
            marketing(&no_quiet_hours(), &p, &[], vn(2025, 3, 10, 23, 0)),
            Decision::Send
        );
    }

    #[test]
    fn quiet_hours_use_the_profile_time_zone_not_the_tenant_default() {
        let cfg = PolicyConfig::default();
        let london = opted_in(Some("Europe/London"));
        // 16:00 in London (UTC+0 in January), 23:00 in Ho Chi Minh City.
        assert_eq!(
            marketing(&cfg, &london, &[], utc(2025, 1, 15, 16, 0)),
            Decision::Send
        );
        assert_eq!(
            marketing(&cfg, &opted_in(None), &[], utc(2025, 1, 15, 16, 0)),
            Decision::Hold {
                until_ms: vn(2025, 1, 16, 7, 0)
            }
        );
        // 22:30 in London: held until 07:00 London time.
        assert_eq!(
            marketing(&cfg, &london, &[], utc(2025, 1, 15, 22, 30)),
            Decision::Hold {
                until_ms: utc(2025, 1, 16, 7, 0)
            }
        );
    }

    #[test]
    fn unknown_time_zone_falls_back_to_the_tenant_default() {
        let p = opted_in(Some("Mars/Olympus_Mons"));
        let cfg = PolicyConfig::default();
        assert_eq!(
            marketing(&cfg, &p, &[], vn(2025, 3, 10, 22, 0)),
            Decision::Hold {
                until_ms: vn(2025, 3, 11, 7, 0)
            }
        );
        let london_tenant = PolicyConfig {
            default_timezone: "Europe/London".to_owned(),
            ..PolicyConfig::default()
        };
        assert_eq!(
            marketing(&london_tenant, &p, &[], utc(2025, 1, 15, 22, 30)),
            Decision::Hold {
                until_ms: utc(2025, 1, 16, 7, 0)
            }
        );
        assert_eq!(
            cap_window_start(&cfg, "Mars/Olympus_Mons", vn(2025, 3, 10, 15, 0)),
            vn(2025, 3, 10, 0, 0)
        );
        // A valid profile zone is not replaced.
        assert_eq!(time_zone(&cfg, Some("Europe/London")), Tz::Europe__London);
        assert_eq!(time_zone(&cfg, Some("")), Tz::Asia__Ho_Chi_Minh);
    }

    #[test]
    fn hold_until_is_dst_safe_across_spring_forward() {
        // New York springs forward at 02:00 on 2025-03-09: 23:00 EST to 07:00 EDT is 7 h.
        let cfg = PolicyConfig::default();
        let p = opted_in(Some("America/New_York"));
        let at_23_00_est = utc(2025, 3, 9, 4, 0);
        let at_07_00_edt = utc(2025, 3, 9, 11, 0);
        assert_eq!(at_07_00_edt, 1_741_518_000_000);
        assert_eq!(
            marketing(&cfg, &p, &[], at_23_00_est),
            Decision::Hold {
                until_ms: at_07_00_edt
            }
        );
    }

    #[test]
    fn window_opening_inside_a_dst_gap_is_the_end_of_the_gap() {
        // 02:30 does not exist in New York on 2025-03-09: the window opens at 03:00 EDT.
        let cfg = PolicyConfig {
            quiet_hours: Some(QuietHours::new(t("22:00"), t("02:30")).unwrap()),
            ..PolicyConfig::default()
        };
        let p = opted_in(Some("America/New_York"));
        assert_eq!(
            marketing(&cfg, &p, &[], utc(2025, 3, 9, 6, 0)),
            Decision::Hold {
                until_ms: utc(2025, 3, 9, 7, 0)
            }
        );
    }

    #[test]
    fn window_opening_at_a_repeated_time_is_its_next_occurrence() {
        // New York falls back from 02:00 EDT to 01:00 EST on 2025-11-02: 01:30 happens twice.
        let cfg = PolicyConfig {
            quiet_hours: Some(QuietHours::new(t("22:00"), t("01:30")).unwrap()),
            ..PolicyConfig::default()
        };
        let p = opted_in(Some("America/New_York"));
        // 00:30 EDT: the first 01:30 (EDT).
        assert_eq!(
            marketing(&cfg, &p, &[], utc(2025, 11, 2, 4, 30)),
            Decision::Hold {
                until_ms: utc(2025, 11, 2, 5, 30)
            }
        );
        // 01:15 EST, after the fall-back: the second 01:30 (EST).
        assert_eq!(
            marketing(&cfg, &p, &[], utc(2025, 11, 2, 6, 15)),
            Decision::Hold {
                until_ms: utc(2025, 11, 2, 6, 30)
            }
        );
    }

    #[test]
    fn fourth_marketing_send_on_one_local_day_is_frequency_capped_and_the_cap_resets_at_local_midnight(
    ) {
        let cfg = PolicyConfig::default();
        let p = opted_in(None);
        let yesterday = vn(2025, 3, 9, 21, 0);
        let three_today = [
            yesterday,
            vn(2025, 3, 10, 7, 30),
            vn(2025, 3, 10, 9, 0),
            vn(2025, 3, 10, 12, 0),
        ];
        let at_15_00 = vn(2025, 3, 10, 15, 0);
        assert_eq!(
            marketing(&cfg, &p, &three_today[..3], at_15_00),
            Decision::Send
        );
        assert_eq!(
            marketing(&cfg, &p, &three_today, at_15_00),
            skipped(SkipReason::FrequencyCapped)
        );
        assert_eq!(
            marketing(&cfg, &p, &three_today, vn(2025, 3, 11, 7, 0)),
            Decision::Send
        );

        // The reset is at local midnight (17:00 UTC), not UTC midnight.
        let night = no_quiet_hours();
        assert_eq!(
            marketing(&night, &p, &three_today, vn(2025, 3, 10, 23, 59)),
            skipped(SkipReason::FrequencyCapped)
        );
        assert_eq!(
            marketing(&night, &p, &three_today, vn(2025, 3, 11, 0, 0)),
            Decision::Send
        );
        assert_eq!(
            cap_window_start(&cfg, DEFAULT_TIMEZONE, at_15_00),
            utc(2025, 3, 9, 17, 0)
        );
    }

    #[test]
    fn rolling_window_counts_the_last_24_hours() {
        let cfg = PolicyConfig {
            cap_window: CapWindow::Rolling24h,
            quiet_hours: None,
            ..PolicyConfig::default()
        };
        let p = opted_in(None);
        let sent = [
            vn(2025, 3, 10, 20, 0),
            vn(2025, 3, 10, 21, 0),
            vn(2025, 3, 10, 23, 0),
        ];
        // A new local day, but three sends in the last 24 h.
        assert_eq!(
            marketing(&cfg, &p, &sent, vn(2025, 3, 11, 8, 0)),
            skipped(SkipReason::FrequencyCapped)
        );
        assert_eq!(
            marketing(&cfg, &p, &sent, vn(2025, 3, 11, 20, 0)),
            skipped(SkipReason::FrequencyCapped),
            "a send exactly 24 h old still counts"
        );
        assert_eq!(
            marketing(&cfg, &p, &sent, vn(2025, 3, 11, 20, 0) + 1),
            Decision::Send
        );
        let now = vn(2025, 3, 11, 8, 0);
        assert_eq!(
            cap_window_start(&cfg, DEFAULT_TIMEZONE, now),
            now - ROLLING_WINDOW_MS
        );
    }

    #[test]
    fn local_midnight_inside_a_dst_gap_is_the_first_instant_of_the_day() {
        // Santiago skips 2024-09-08 00:00-00:59: the day starts at 01:00 -03 (04:00 UTC).
        let cfg = PolicyConfig::default();
        assert_eq!(
            cap_window_start(&cfg, "America/Santiago", utc(2024, 9, 8, 15, 0)),
            1_725_768_000_000
        );
    }

    #[test]
    fn disabled_cap_allows_any_number_of_marketing_sends() {
        let cfg = PolicyConfig {
            marketing_cap: None,
            ..PolicyConfig::default()
        };
        let sent = [vn(2025, 3, 10, 8, 0); 10];
        let p = opted_in(None);
        assert_eq!(
            marketing(&cfg, &p, &sent, vn(2025, 3, 10, 15, 0)),
            Decision::Send
        );
    }

    #[test]
    fn transactional_is_exempt_from_quiet_hours_and_caps() {
        let p = profile(None, &[]);
        let sent = [vn(2025, 3, 10, 8, 0); 5];
        let at_23_00 = vn(2025, 3, 10, 23, 0);
        for fallback in [QuietFallback::NextAvailableTime, QuietFallback::Abort] {
            let cfg = PolicyConfig {
                quiet_fallback: fallback,
                ..PolicyConfig::default()
            };
            assert_eq!(
                decide_at(&cfg, Category::Transactional, "email", &p, &sent, at_23_00),
                Decision::Send
            );
            assert_ne!(
                marketing(&cfg, &opted_in(None), &sent, at_23_00),
                Decision::Send
            );
        }
    }

    #[test]
    fn transactional_skipped_only_when_transactional_consent_is_withdrawn() {
        let cfg = PolicyConfig::default();
        let now = vn(2025, 3, 10, 10, 0);
        let tx = |p: &ProfileRecord, channel| {
            decide_at(&cfg, Category::Transactional, channel, p, &[], now)
        };
        let no_marketing = profile(None, &[("*", "marketing", false)]);
        assert_eq!(tx(&no_marketing, "email"), Decision::Send);
        let no_email_tx = profile(None, &[("email", "transactional", false)]);
        assert_eq!(
            tx(&no_email_tx, "email"),
            skipped(SkipReason::ConsentWithdrawn)
        );
        assert_eq!(tx(&no_email_tx, "sms"), Decision::Send);
        let no_tx = profile(None, &[("*", "transactional", false)]);
        assert_eq!(tx(&no_tx, "sms"), skipped(SkipReason::ConsentWithdrawn));
    }

    #[test]
    fn service_messages_are_treated_as_transactional() {
        assert_eq!(
            Category::from(MessageCategory::Service),
            Category::Transactional
        );
        assert_eq!(
            Category::from(MessageCategory::Transactional),
            Category::Transactional
        );
        assert_eq!(
            Category::from(MessageCategory::Marketing),
            Category::Marketing
        );
    }

    #[test]
    fn marketing_without_opt_in_is_skipped_no_consent() {
        let cfg = PolicyConfig::default();
        let now = vn(2025, 3, 10, 10, 0);
        let none = profile(None, &[]);
        assert_eq!(
            marketing(&cfg, &none, &[], now),
            skipped(SkipReason::NoConsent)
        );
        let other_purpose = profile(None, &[("sms", "transactional", true)]);
        assert_eq!(
            marketing(&cfg, &other_purpose, &[], now),
            skipped(SkipReason::NoConsent)
        );
        let email_only = profile(None, &[("email", "marketing", true)]);
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "sms", &email_only, &[], now),
            skipped(SkipReason::NoConsent)
        );
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "email", &email_only, &[], now),
            Decision::Send
        );
    }

    #[test]
    fn marketing_without_a_consent_record_is_sent_when_opt_in_is_not_required() {
        let cfg = PolicyConfig {
            marketing_requires_opt_in: false,
            ..PolicyConfig::default()
        };
        let none = profile(None, &[]);
        assert_eq!(
            marketing(&cfg, &none, &[], vn(2025, 3, 10, 10, 0)),
            Decision::Send
        );
    }

    #[test]
    fn withdrawn_marketing_consent_is_skipped_even_when_opt_in_not_required() {
        let withdrawn = profile(None, &[("sms", "marketing", false)]);
        let now = vn(2025, 3, 10, 10, 0);
        for requires in [false, true] {
            let cfg = PolicyConfig {
                marketing_requires_opt_in: requires,
                ..PolicyConfig::default()
            };
            assert_eq!(
                marketing(&cfg, &withdrawn, &[], now),
                skipped(SkipReason::ConsentWithdrawn),
                "requires opt-in: {requires}"
            );
        }
    }

    #[test]
    fn channel_specific_consent_overrides_wildcard() {
        let cfg = PolicyConfig::default();
        let now = vn(2025, 3, 10, 10, 0);
        let sms_only = profile(
            None,
            &[("*", "marketing", false), ("sms", "marketing", true)],
        );
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "sms", &sms_only, &[], now),
            Decision::Send
        );
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "email", &sms_only, &[], now),
            skipped(SkipReason::ConsentWithdrawn)
        );
        let all_but_email = profile(
            None,
            &[("email", "marketing", false), ("*", "marketing", true)],
        );
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "email", &all_but_email, &[], now),
            skipped(SkipReason::ConsentWithdrawn)
        );
        assert_eq!(
            decide_at(&cfg, Category::Marketing, "zns", &all_but_email, &[], now),
            Decision::Send
        );
    }

    #[test]
    fn checks_run_in_pipeline_order_consent_then_quiet_hours_then_cap() {
        let cfg = PolicyConfig::default();
        let capped = [vn(2025, 3, 10, 8, 0); 3];
        let at_22_30 = vn(2025, 3, 10, 22, 30);
        let withdrawn = profile(None, &[("*", "marketing", false)]);
        assert_eq!(
            marketing(&cfg, &withdrawn, &capped, at_22_30),
            skipped(SkipReason::ConsentWithdrawn)
        );
        let p = opted_in(None);
        assert_eq!(
            marketing(&cfg, &p, &capped, at_22_30),
            Decision::Hold {
                until_ms: vn(2025, 3, 11, 7, 0)
            }
        );
        let abort = PolicyConfig {
            quiet_fallback: QuietFallback::Abort,
            ..PolicyConfig::default()
        };
        assert_eq!(
            marketing(&abort, &p, &capped, at_22_30),
            skipped(SkipReason::QuietHours)
        );
        assert_eq!(
            marketing(&cfg, &p, &capped, vn(2025, 3, 10, 21, 0)),
            skipped(SkipReason::FrequencyCapped)
        );
    }

    #[test]
    fn ad_prefix_is_added_once_on_sms_marketing_only() {
        let cfg = PolicyConfig {
            ad_prefix: Some("[QC]".to_owned()),
            ..PolicyConfig::default()
        };
        let once = apply_ad_prefix(&cfg, Category::Marketing, "sms", "Giảm 50% hôm nay");
        assert_eq!(once, "[QC] Giảm 50% hôm nay");
        assert_eq!(
            apply_ad_prefix(&cfg, Category::Marketing, "sms", &once),
            once
        );
        assert_eq!(
            apply_ad_prefix(&cfg, Category::Marketing, "sms", "[AD] Sale"),
            "[AD] Sale"
        );
        assert_eq!(
            apply_ad_prefix(&cfg, Category::Transactional, "sms", "OTP 123456"),
            "OTP 123456"
        );
        assert_eq!(
            apply_ad_prefix(&cfg, Category::Marketing, "email", "Sale"),
            "Sale"
        );
        assert_eq!(
            apply_ad_prefix(&PolicyConfig::default(), Category::Marketing, "sms", "Sale"),
            "Sale",
            "no prefix configured by default"
        );
    }

    #[test]
    fn ad_prefix_wildcard_channel_prefixes_every_channel() {
        let cfg = PolicyConfig {
            ad_prefix: Some("[QC]".to_owned()),
            ad_prefix_channels: vec!["*".to_owned()],
            ..PolicyConfig::default()
        };
        for channel in CHANNEL_NAMES {
            assert_eq!(
                apply_ad_prefix(&cfg, Category::Marketing, channel, "Sale"),
                "[QC] Sale",
                "{channel}"
            );
        }
    }

    #[test]
    fn config_rejects_invalid_times() {
        for (text, needle) in [
            ("25:00", "hour 25 is out of range 00-23"),
            ("24:00", "hour 24 is out of range 00-23"),
            ("22:60", "minute 60 is out of range 00-59"),
            ("7:00", "expected HH:MM"),
            ("22-00", "expected HH:MM"),
            ("ab:cd", "expected HH:MM"),
            ("", "expected HH:MM"),
            ("22:00:00", "expected HH:MM"),
        ] {
            let json = format!(r#"{{"quiet_hours": {{"start": "{text}", "end": "07:00"}}}}"#);
            let err = serde_json::from_str::<PolicyConfig>(&json).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
            assert!(
                err.to_string().contains(&format!("{text:?}")),
                "{text}: {err}"
            );
        }
        let err = serde_json::from_str::<PolicyConfig>(
            r#"{"quiet_hours": {"start": "22:00", "end": "22:00"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("window would be empty"), "{err}");
        assert!(QuietHours::new(t("22:00"), t("22:00")).is_err());
        assert!(LocalTime::new(23, 59).is_ok());
        assert!(LocalTime::new(24, 0).is_err());
        assert_eq!(t("07:05").to_string(), "07:05");
        assert_eq!((t("07:05").hour(), t("07:05").minute()), (7, 5));
    }

    #[test]
    fn config_rejects_unknown_fields_time_zones_channels_and_blank_prefixes() {
        for (json, needle) in [
            (r#"{"quiet_hour": null}"#, "unknown field `quiet_hour`"),
            (
                r#"{"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "UTC"}}"#,
                "unknown field `tz`",
            ),
            (
                r#"{"default_timezone": "Mars/Olympus_Mons"}"#,
                "unknown time zone",
            ),
            (
                r#"{"ad_prefix_channels": ["SMS"]}"#,
                "unknown channel \"SMS\"",
            ),
            (r#"{"ad_prefix": "  "}"#, "ad_prefix is blank"),
            (r#"{"cap_window": "rolling"}"#, "unknown variant `rolling`"),
        ] {
            let err = serde_json::from_str::<PolicyConfig>(json).unwrap_err();
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
        let bad = PolicyConfig {
            default_timezone: "Nowhere".to_owned(),
            ..PolicyConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(PolicyError::UnknownTimeZone("Nowhere".to_owned()))
        );
    }

    #[test]
    fn config_reads_overrides_from_toml_and_null_disables_limits() {
        let cfg: PolicyConfig = toml::from_str(
            r#"
            default_timezone = "Asia/Bangkok"
            quiet_fallback = "abort"
            cap_window = "rolling_24h"
            marketing_cap = 5
            marketing_requires_opt_in = false
            ad_prefix = "[QC]"
            ad_prefix_channels = ["sms", "zns"]
            [quiet_hours]
            start = "21:00"
            end = "08:00"
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg,
            PolicyConfig {
                default_timezone: "Asia/Bangkok".to_owned(),
                quiet_hours: Some(QuietHours::new(t("21:00"), t("08:00")).unwrap()),
                quiet_fallback: QuietFallback::Abort,
                marketing_cap: Some(5),
                cap_window: CapWindow::Rolling24h,
                marketing_requires_opt_in: false,
                ad_prefix: Some("[QC]".to_owned()),
                ad_prefix_channels: vec!["sms".to_owned(), "zns".to_owned()],
            }
        );
        assert_eq!(cfg.validate(), Ok(()));
        let off: PolicyConfig =
            serde_json::from_str(r#"{"quiet_hours": null, "marketing_cap": null}"#).unwrap();
        assert_eq!((off.quiet_hours, off.marketing_cap), (None, None));
        let round_trip: PolicyConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(round_trip, cfg);
    }

    #[test]
    fn defaults_match_decree_91() {
        let cfg = PolicyConfig::default();
        assert_eq!(serde_json::from_str::<PolicyConfig>("{}").unwrap(), cfg);
        assert_eq!(toml::from_str::<PolicyConfig>("").unwrap(), cfg);
        assert_eq!(cfg.default_timezone, "Asia/Ho_Chi_Minh");
        let quiet = cfg.quiet_hours.unwrap();
        assert_eq!(
            (quiet.start.to_string(), quiet.end.to_string()),
            ("22:00".into(), "07:00".into())
        );
        assert!(quiet.wraps_midnight());
        assert!(quiet.contains(t("22:00")) && quiet.contains(t("06:59")));
        assert!(!quiet.contains(t("07:00")) && !quiet.contains(t("21:59")));
        assert_eq!(cfg.quiet_fallback, QuietFallback::NextAvailableTime);
        assert_eq!(cfg.marketing_cap, Some(3));
        assert_eq!(cfg.cap_window, CapWindow::LocalDay);
        assert!(cfg.marketing_requires_opt_in);
        assert_eq!(cfg.ad_prefix, None);
        assert_eq!(cfg.ad_prefix_channels, vec!["sms".to_owned()]);
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn skip_reasons_and_decisions_have_stable_codes() {
        for (reason, code) in [
            (SkipReason::NoConsent, "no_consent"),
            (SkipReason::ConsentWithdrawn, "consent_withdrawn"),
            (SkipReason::FrequencyCapped, "frequency_capped"),
            (SkipReason::QuietHours, "quiet_hours"),
        ] {
            assert_eq!(reason.to_string(), code);
            assert_eq!(serde_json::to_value(reason).unwrap(), code);
        }
        assert_eq!(
            serde_json::to_value(Decision::Hold { until_ms: 5 }).unwrap(),
            serde_json::json!({"decision": "hold", "until_ms": 5})
        );
        assert_eq!(
            serde_json::to_value(skipped(SkipReason::FrequencyCapped)).unwrap(),
            serde_json::json!({"decision": "skip", "reason": "frequency_capped"})
        );
        assert_eq!(
            serde_json::to_value(Decision::Send).unwrap(),
            serde_json::json!({"decision": "send"})
        );
    }

    #[test]
    fn channel_names_match_consent_channels() {
        let all = [
            (ChannelKind::ZaloOa, "zalo-oa"),
            (ChannelKind::ZaloZns, "zns"),
            (ChannelKind::Messenger, "messenger"),
            (ChannelKind::Whatsapp, "whatsapp"),
            (ChannelKind::Sms, "sms"),
            (ChannelKind::Email, "email"),
            (ChannelKind::Push, "push"),
            (ChannelKind::WebChat, "web-chat"),
            (ChannelKind::Webhook, "webhook"),
        ];
        for (kind, name) in all {
            assert_eq!(channel_name(kind), name);
            assert_eq!(channel_kind(name), Some(kind));
            assert!(CHANNEL_NAMES.contains(&name));
        }
        assert_eq!(all.len(), CHANNEL_NAMES.len());
        assert_eq!(channel_kind("fax"), None);
    }
}
