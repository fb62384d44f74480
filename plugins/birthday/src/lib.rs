//! Journey rule: wish customers a happy birthday at 09:00 in their own time zone, at most
//! once a year, over Zalo OA (falling back to ZNS, SMS, then email). Gold-tier customers
//! also get a `BDAY-GOLD` coupon, announced with a `Coupon Issued` event.
//!
//! # Entry
//!
//! A birthday is a trait, not an event, so something has to start the journey:
//!
//! - `Birthday Check`: a track event from the host's daily sweeper or from the tenant
//!   (for example a nightly batch that sends it for every profile with a `birthday`
//!   trait). It may arrive any day of the year: the rule waits for the next birthday.
//! - `Audience Entered` with `properties.audience == "birthday-today"`: the host's
//!   synthetic event when the profile joins a computed audience of that name. Any other
//!   audience is `not-supported`, so one installation can listen to `Audience Entered`
//!   without greeting every audience.
//!
//! # Steps
//!
//! - entry (`start`): read the `birthday` trait (`YYYY-MM-DD`, `MM-DD`, `--MM-DD`, or an
//!   ISO datetime whose calendar date, as written, is the birthday). Missing or invalid:
//!   `exit("no-birthday")`. Otherwise find the next celebration date on or after today in
//!   the profile's time zone (`profile.timezone`, else the tenant default
//!   `Asia/Ho_Chi_Minh`), remember it in the journey context, and wait for 09:00 local
//!   that day (a `local-time` wait when it is today before 09:00, an `until` otherwise;
//!   none when it is today at or after 09:00), then `goto("greet")`.
//! - `greet`: re-read the trait (gone: `exit("no-birthday")`; now on another day:
//!   `exit("birthday-changed")`), claim the once-a-year guard in `state`, send the
//!   greeting, emit the gold coupon, `exit("sent")`; or `exit("already-sent")` when another
//!   instance greeted this profile for this year already.
//!
//! A 29 February birthday is celebrated on 28 February in common years.
//!
//! # Determinism
//!
//! No randomness, and time only from `input.now` and the host clock's time-zone
//! conversions. The once-a-year guard stores the claiming instance id, so a retried
//! `greet` of the same instance returns the same commands (and the same intent id, which
//! the host deduplicates) instead of `already-sent`.

use serde::{Deserialize, Serialize};
use weft_guest::clock::{self, LocalTime};
use weft_guest::journey::{
    intent_id, Command, EmittedEvent, Guest, LocalTimeSpec, Manifest, PluginError, ReEntry,
    SendIntent, StepInput, Trigger, WaitSpec,
};
use weft_guest::json::{self, json};
use weft_guest::state;
use weft_guest::types::{
    CapabilityError, ChannelKind, Content, Event, MessageCategory, Profile, TemplateRef,
};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// The entry event a daily sweeper or the tenant sends.
const CHECK_EVENT: &str = "Birthday Check";
/// The host's synthetic event when a profile joins an audience.
const AUDIENCE_ENTERED: &str = "Audience Entered";
/// The only audience whose `Audience Entered` starts this journey.
const BIRTHDAY_AUDIENCE: &str = "birthday-today";
/// The step that sends the greeting, run after the wait.
const GREET_STEP: &str = "greet";
/// The profile trait holding the birthday.
const BIRTHDAY_TRAIT: &str = "birthday";
/// The tenant's default time zone, used when the profile has none (or an unknown one).
const DEFAULT_TIMEZONE: &str = "Asia/Ho_Chi_Minh";
/// Greeting hour, local: after marketing quiet hours (22:00–07:00) and early in the day.
const GREETING_HOUR: u8 = 9;
/// Greeting minute, local: on the hour.
const GREETING_MINUTE: u8 = 0;
/// The ZNS template (approved by Zalo under this name) for channels that only send templates.
const TEMPLATE_ID: &str = "birthday";
/// The coupon gold-tier customers get for their birthday.
const GOLD_CODE: &str = "BDAY-GOLD";
/// The `tier` trait value that earns the coupon (compared ignoring case).
const GOLD_TIER: &str = "gold";
/// Prefix of the once-a-year guard key: `bday:<year>:<profile-id>`.
const GUARD_PREFIX: &str = "bday";
/// A leap year, standing in for the missing year of an `MM-DD` birthday so 29 February is valid.
const ANY_LEAP_YEAR: i32 = 2000;
/// The intent tag of the greeting, so its intent id is `<instance>:greet:greeting`.
const INTENT_TAG: &str = "greeting";

/// What the entry step remembers for `greet` (journey context).
#[derive(Debug, Default, Serialize, Deserialize)]
struct BirthdayContext {
    /// The local date being celebrated, `YYYY-MM-DD`.
    #[serde(default)]
    celebrate_on: Option<String>,
}

/// A calendar date; the derived order is chronological (year, then month, then day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Date {
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    /// `YYYY-MM-DD`.
    fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A birthday: month and day (the birth year plays no part in the greeting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MonthDay {
    month: u8,
    day: u8,
}

/// When to greet, relative to the local time of the entry step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The birthday is today and it is not 09:00 yet: wait for 09:00 local time.
    LaterToday,
    /// The birthday is today and 09:00 has passed: greet at once.
    Now,
    /// The birthday is on a later date: wait until 09:00 local that day.
    On(Date),
}

struct Birthday;

impl Guest for Birthday {
    fn describe() -> Manifest {
        Manifest {
            name: "Birthday greeting".into(),
            entry_events: vec![CHECK_EVENT.into(), AUDIENCE_ENTERED.into()],
            entry_key: None,
            exit_events: vec![],
            re_entry: ReEntry::AfterExit,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        match (&input.trigger, input.step_id.as_str()) {
            (Trigger::Entered(event), _) => enter(&input, event),
            (Trigger::TimerFired(_), GREET_STEP) => greet(&input),
            (Trigger::TimerFired(id), step) => Err(PluginError::not_supported(format!(
                "birthday has no timer {id:?} in step {step:?}"
            ))),
            (Trigger::EventReceived(event), _) => Err(PluginError::not_supported(format!(
                "birthday does not wait for {:?}",
                name_of(event)
            ))),
            (Trigger::MessageOutcome(_), _) => Err(PluginError::not_supported(
                "birthday ignores message outcomes",
            )),
        }
    }
}

/// The entry step: plan the greeting for the next birthday.
fn enter(input: &StepInput, event: &Event) -> Result<Vec<Command>, PluginError> {
    check_entry(event)?;
    let Some(birthday) = birthday_of(&input.profile) else {
        return Ok(vec![Command::Exit("no-birthday".into())]);
    };
    let (tz, now) = local_now(input)?;
    let today = date_of(&now);
    let plan = plan(&now, birthday);
    let celebrate_on = match plan {
        Plan::LaterToday | Plan::Now => today,
        Plan::On(date) => date,
    };
    let mut commands = vec![Command::PatchContext(json::to(&BirthdayContext {
        celebrate_on: Some(celebrate_on.iso()),
    })?)];
    match plan {
        Plan::LaterToday => commands.push(Command::Wait(WaitSpec::LocalTime(LocalTimeSpec {
            hour: GREETING_HOUR,
            minute: GREETING_MINUTE,
            days_of_week: vec![],
        }))),
        Plan::Now => {}
        Plan::On(date) => {
            commands.push(Command::Wait(WaitSpec::Until(greeting_instant(date, &tz)?)))
        }
    }
    commands.push(Command::Goto(GREET_STEP.into()));
    Ok(commands)
}

/// Only `Birthday Check` and `Audience Entered` for `birthday-today` start the journey.
fn check_entry(event: &Event) -> Result<(), PluginError> {
    match event.name.as_deref() {
        Some(CHECK_EVENT) => Ok(()),
        Some(AUDIENCE_ENTERED)
            if event.property_str("audience").as_deref() == Some(BIRTHDAY_AUDIENCE) =>
        {
            Ok(())
        }
        Some(AUDIENCE_ENTERED) => Err(PluginError::not_supported(format!(
            "birthday only starts on audience {BIRTHDAY_AUDIENCE:?}, not {:?}",
            event.property_str("audience").unwrap_or_default()
        ))),
        _ => Err(PluginError::not_supported(format!(
            "birthday does not start on {:?}",
            name_of(event)
        ))),
    }
}

/// The event's name for messages.
fn name_of(event: &Event) -> &str {
    event.name.as_deref().unwrap_or("an unnamed event")
}

/// The `greet` step: guard, greet, coupon, exit.
fn greet(input: &StepInput) -> Result<Vec<Command>, PluginError> {
    let Some(birthday) = birthday_of(&input.profile) else {
        return Ok(vec![Command::Exit("no-birthday".into())]);
    };
    let context: BirthdayContext = if input.journey_context.trim().is_empty() {
        BirthdayContext::default()
    } else {
        input.context_as()?
    };
    let celebrate_on = match context.celebrate_on.as_deref() {
        Some(text) => parse_date(text).ok_or_else(|| {
            PluginError::invalid_input(format!("journey context celebrate_on {text:?}"))
        })?,
        // No context (an instance started by an older version): this year's birthday.
        None => celebration(local_now(input)?.1.year, birthday),
    };
    if celebration(celebrate_on.year, birthday) != celebrate_on {
        return Ok(vec![Command::Exit("birthday-changed".into())]);
    }
    let guard = format!(
        "{GUARD_PREFIX}:{}:{}",
        celebrate_on.year, input.profile.profile_id
    );
    if !claim(&guard, &input.instance_id)? {
        return Ok(vec![Command::Exit("already-sent".into())]);
    }

    let english = prefers_english(&input.profile);
    let gold = is_gold(&input.profile);
    let name = first_name(&input.profile, english);
    let mut commands = vec![Command::Send(SendIntent {
        intent_id: intent_id(input, INTENT_TAG),
        channel_preference: vec![
            ChannelKind::ZaloOa,
            ChannelKind::ZaloZns,
            ChannelKind::Sms,
            ChannelKind::Email,
        ],
        category: MessageCategory::Marketing,
        // ZNS sends only approved templates and the other channels cannot send a ZNS
        // template; the host degrades content to each channel's `content-kinds`, so ZNS
        // gets the template and Zalo OA, SMS and email get the text.
        content: vec![
            Content::Template(TemplateRef {
                id: TEMPLATE_ID.into(),
                language: Some(if english { "en" } else { "vi" }.into()),
                params: json::to(&json!({ "name": template_name(name.as_deref(), english) }))?,
            }),
            Content::Text(greeting_text(name.as_deref(), gold, english)),
        ],
    })];
    if gold {
        commands.push(Command::Emit(EmittedEvent {
            name: "Coupon Issued".into(),
            properties: json::to(&json!({
                "coupon": GOLD_CODE,
                "reason": "birthday",
                "year": celebrate_on.year,
                "journey_id": input.journey_id,
                "instance_id": input.instance_id,
            }))?,
        }));
    }
    commands.push(Command::Exit("sent".into()));
    Ok(commands)
}

/// Claims the once-a-year guard for `owner` (the instance id). True when `owner` holds it:
/// it just claimed it, or it did on an earlier try of the same step.
fn claim(key: &str, owner: &str) -> Result<bool, PluginError> {
    if state::compare_and_swap(key, None, owner.as_bytes())? {
        return Ok(true);
    }
    Ok(state::get(key)?.as_deref() == Some(owner.as_bytes()))
}

/// The profile's time zone and its local time now. An unknown zone falls back to the
/// tenant default, as the host does for `local-time` waits.
fn local_now(input: &StepInput) -> Result<(String, LocalTime), PluginError> {
    if let Some(tz) = input
        .profile
        .timezone
        .as_deref()
        .map(str::trim)
        .filter(|tz| !tz.is_empty())
    {
        match clock::to_local(input.now, tz) {
            Ok(local) => return Ok((tz.to_owned(), local)),
            Err(CapabilityError::Invalid(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((
        DEFAULT_TIMEZONE.to_owned(),
        clock::to_local(input.now, DEFAULT_TIMEZONE)?,
    ))
}

/// 09:00 local on `date` in `tz`, as a UTC timestamp.
fn greeting_instant(date: Date, tz: &str) -> Result<i64, PluginError> {
    let local = LocalTime {
        year: date.year,
        month: date.month,
        day: date.day,
        hour: GREETING_HOUR,
        minute: GREETING_MINUTE,
        second: 0,
        weekday: 0,
    };
    Ok(clock::from_local(local, tz)?)
}

fn date_of(local: &LocalTime) -> Date {
    Date {
        year: local.year,
        month: local.month,
        day: local.day,
    }
}

/// When to greet, given the local time now.
fn plan(now: &LocalTime, birthday: MonthDay) -> Plan {
    let today = date_of(now);
    let this_year = celebration(today.year, birthday);
    if this_year == today {
        if (now.hour, now.minute) < (GREETING_HOUR, GREETING_MINUTE) {
            Plan::LaterToday
        } else {
            Plan::Now
        }
    } else if this_year > today {
        Plan::On(this_year)
    } else {
        Plan::On(celebration(today.year + 1, birthday))
    }
}

/// The day `birthday` is celebrated in `year`: 29 February moves to 28 February in
/// common years.
fn celebration(year: i32, birthday: MonthDay) -> Date {
    let day = if birthday.month == 2 && birthday.day == 29 && !is_leap(year) {
        28
    } else {
        birthday.day
    };
    Date {
        year,
        month: birthday.month,
        day,
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`; `None` for a month outside 1 to 12.
fn days_in_month(year: i32, month: u8) -> Option<u8> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// The profile's birthday, if its `birthday` trait is a string we can read.
fn birthday_of(profile: &Profile) -> Option<MonthDay> {
    let traits = profile.traits_value();
    parse_birthday(json::str_at(&traits, BIRTHDAY_TRAIT)?)
}

/// Reads `YYYY-MM-DD`, `MM-DD`, `--MM-DD`, or an ISO datetime (`YYYY-MM-DDThh:mm...`,
/// whose date as written is taken; the time and offset are ignored).
fn parse_birthday(text: &str) -> Option<MonthDay> {
    let text = text.trim();
    if let Some(date) = parse_date(text) {
        return Some(MonthDay {
            month: date.month,
            day: date.day,
        });
    }
    if text.len() > 10 && text.is_char_boundary(10) {
        let (date, rest) = text.split_at(10);
        // The separator, then at least the hour's first digit.
        if rest.starts_with(['T', 't', ' '])
            && rest.as_bytes().get(1).is_some_and(u8::is_ascii_digit)
        {
            let date = parse_date(date)?;
            return Some(MonthDay {
                month: date.month,
                day: date.day,
            });
        }
    }
    let (month, day) = text.strip_prefix("--").unwrap_or(text).split_once('-')?;
    let (month, day) = (number(month)?, number(day)?);
    // Without a year any real day counts, 29 February included.
    (day >= 1 && day <= days_in_month(ANY_LEAP_YEAR, month)?).then_some(MonthDay { month, day })
}

/// A strict `YYYY-MM-DD` that names a real calendar day.
fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 {
        return None;
    }
    let year: i32 = year
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| year.parse().ok())??;
    let (month, day) = (number(month)?, number(day)?);
    (day >= 1 && day <= days_in_month(year, month)?).then_some(Date { year, month, day })
}

/// A two-digit number.
fn number(text: &str) -> Option<u8> {
    (text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The name to greet: `first_name` (or `firstName`), else from `name`: its last word for
/// Vietnamese (family name first, given name last), its first word for English.
fn first_name(profile: &Profile, english: bool) -> Option<String> {
    let given = ["first_name", "firstName"]
        .iter()
        .filter_map(|key| profile.trait_str(key))
        .map(|n| n.trim().to_owned())
        .find(|n| !n.is_empty());
    if given.is_some() {
        return given;
    }
    let full = profile.trait_str("name")?;
    let mut words = full.split_whitespace();
    let word = if english { words.next() } else { words.last() };
    word.map(str::to_owned)
}

/// The template's `name` parameter: ZNS templates need every parameter, so a missing
/// name becomes "bạn" ("you") or "friend".
fn template_name(name: Option<&str>, english: bool) -> String {
    match (name, english) {
        (Some(name), _) => name.to_owned(),
        (None, false) => "bạn".to_owned(),
        (None, true) => "friend".to_owned(),
    }
}

fn greeting_text(name: Option<&str>, gold: bool, english: bool) -> String {
    let mut text = match (english, name) {
        (false, Some(name)) => format!("Chúc mừng sinh nhật {name}!"),
        (false, None) => "Chúc mừng sinh nhật bạn!".to_owned(),
        (true, Some(name)) => format!("Happy birthday, {name}!"),
        (true, None) => "Happy birthday!".to_owned(),
    };
    if gold {
        text.push_str(&if english {
            format!(" Your birthday gift: code {GOLD_CODE}.")
        } else {
            format!(" Quà sinh nhật của bạn: mã {GOLD_CODE}.")
        });
    }
    text
}

fn is_gold(profile: &Profile) -> bool {
    profile
        .trait_str("tier")
        .is_some_and(|t| t.eq_ignore_ascii_case(GOLD_TIER))
}

/// Vietnamese unless the profile's locale is English.
fn prefers_english(profile: &Profile) -> bool {
    profile
        .locale
        .as_deref()
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

weft_guest::export_journey_rule!(Birthday);

#[cfg(test)]
mod tests {
    //! The pure parts: parsing and date arithmetic. Steps call the host clock and state,
    //! so they are tested against the real host in `tests/integration/journey_plugins.rs`.
    use super::*;

    fn md(month: u8, day: u8) -> MonthDay {
        MonthDay { month, day }
    }

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    fn at(year: i32, month: u8, day: u8, hour: u8, minute: u8) -> LocalTime {
        LocalTime {
            year,
            month,
            day,
            hour,
            minute,
            second: 0,
            weekday: 0,
        }
    }

    #[test]
    fn parses_dates_month_days_and_datetimes() {
        assert_eq!(parse_birthday("1990-11-25"), Some(md(11, 25)));
        assert_eq!(parse_birthday(" 11-25 "), Some(md(11, 25)));
        assert_eq!(parse_birthday("--11-25"), Some(md(11, 25)));
        assert_eq!(parse_birthday("02-29"), Some(md(2, 29)));
        assert_eq!(parse_birthday("1992-02-29"), Some(md(2, 29)));
        assert_eq!(parse_birthday("1990-11-25T00:00:00Z"), Some(md(11, 25)));
        assert_eq!(
            parse_birthday("1990-11-24T17:00:00.000+07:00"),
            Some(md(11, 24))
        );
        assert_eq!(parse_birthday("1990-11-25 08:30"), Some(md(11, 25)));
    }

    #[test]
    fn rejects_what_is_not_a_calendar_day() {
        for bad in [
            "",
            "soon",
            "1990-13-01",
            "1990-02-30",
            "1991-02-29",
            "02-30",
            "00-10",
            "1990-1-5",
            "25/11/1990",
            "+990-11-25",
            "1990-11-25X",
            "1990-11-25T",
        ] {
            assert_eq!(parse_birthday(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plans_today_before_nine_today_after_nine_and_later_dates() {
        assert_eq!(plan(&at(2026, 11, 22, 8, 59), md(11, 22)), Plan::LaterToday);
        assert_eq!(plan(&at(2026, 11, 22, 9, 0), md(11, 22)), Plan::Now);
        assert_eq!(
            plan(&at(2026, 11, 22, 9, 0), md(11, 25)),
            Plan::On(date(2026, 11, 25))
        );
        assert_eq!(
            plan(&at(2026, 11, 22, 9, 0), md(11, 21)),
            Plan::On(date(2027, 11, 21))
        );
        assert_eq!(
            plan(&at(2026, 12, 31, 23, 0), md(1, 1)),
            Plan::On(date(2027, 1, 1))
        );
    }

    #[test]
    fn leap_day_birthdays_move_to_28_february_in_common_years() {
        assert_eq!(celebration(2027, md(2, 29)), date(2027, 2, 28));
        assert_eq!(celebration(2028, md(2, 29)), date(2028, 2, 29));
        assert_eq!(celebration(2100, md(2, 29)), date(2100, 2, 28));
        assert_eq!(celebration(2000, md(2, 29)), date(2000, 2, 29));
        // On 28 February of a common year the leap-day birthday is today.
        assert_eq!(plan(&at(2027, 2, 28, 7, 0), md(2, 29)), Plan::LaterToday);
        // On 1 March it has passed: next year's is 29 February 2028.
        assert_eq!(
            plan(&at(2027, 3, 1, 7, 0), md(2, 29)),
            Plan::On(date(2028, 2, 29))
        );
    }

    #[test]
    fn greets_by_given_name() {
        let profile = |traits: &str, locale: &str| Profile {
            profile_id: "p".into(),
            identities: vec![],
            traits: traits.into(),
            audiences: vec![],
            timezone: None,
            locale: Some(locale.into()),
            consents: vec![],
        };
        let vi = profile(r#"{"name":"Nguyễn Thị Lan"}"#, "vi-VN");
        assert_eq!(first_name(&vi, false).as_deref(), Some("Lan"));
        let en = profile(r#"{"name":"Jane Doe"}"#, "en-US");
        assert_eq!(first_name(&en, true).as_deref(), Some("Jane"));
        let given = profile(r#"{"name":"Nguyễn Thị Lan","first_name":"Lan Anh"}"#, "vi");
        assert_eq!(first_name(&given, false).as_deref(), Some("Lan Anh"));
        assert_eq!(first_name(&profile("{}", "vi"), false), None);
        assert_eq!(
            greeting_text(Some("Lan"), false, false),
            "Chúc mừng sinh nhật Lan!"
        );
        assert_eq!(
            greeting_text(None, true, false),
            "Chúc mừng sinh nhật bạn! Quà sinh nhật của bạn: mã BDAY-GOLD."
        );
    }
}
