//! Journey rule: confirm every form submission by email at once (transactional), then,
//! for customers who agreed to marketing email, send one nurture email at 10:00 local
//! time the next day.
//!
//! # Steps
//!
//! - entry (`start`, on `Form Submitted`, one instance per `properties.submission_id`):
//!   1. `send` a transactional confirmation (email, else SMS) naming the form
//!      (`properties.form_name`);
//!   2. with marketing consent for email (the newest `consents` record for channel
//!      `email` and purpose `marketing` is `opted-in`, or the submission itself says
//!      `properties.marketing_opt_in: true`): remember the form in the journey context,
//!      wait for 10:00 local the next day, `goto("nurture")`;
//!   3. without: `exit("confirmed")`.
//! - `nurture`: `send` one marketing email, `exit("nurtured")`.
//!
//! The next-day wait is a `local-time` 10:00 wait when the submission comes after 10:00
//! local (the next 10:00 is tomorrow's), and an `until` tomorrow 10:00 otherwise (a
//! `local-time` wait would fire the same morning). Local time is in `profile.timezone`,
//! else the tenant default `Asia/Ho_Chi_Minh`.
//!
//! # Determinism
//!
//! No randomness, no state; time only from `input.now` and the host clock's time-zone
//! conversions. Intent ids come from the instance and step, so a retried step sends
//! nothing twice.

use serde::{Deserialize, Serialize};
use weft_guest::clock::{self, LocalTime};
use weft_guest::journey::{
    intent_id, Command, Guest, LocalTimeSpec, Manifest, PluginError, ReEntry, SendIntent,
    StepInput, Trigger, WaitSpec,
};
use weft_guest::json::{self, Value};
use weft_guest::types::{
    CapabilityError, ChannelKind, ConsentState, Content, Event, MessageCategory, Profile,
};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// The entry event.
const FORM_EVENT: &str = "Form Submitted";
/// The step that sends the nurture email, run after the wait.
const NURTURE_STEP: &str = "nurture";
/// The consent purpose that allows the nurture email.
const MARKETING_PURPOSE: &str = "marketing";
/// The submission property by which a customer opts in on the form itself.
const OPT_IN_PROPERTY: &str = "marketing_opt_in";
/// Nurture hour, local: the next morning, well after quiet hours end at 07:00.
const NURTURE_HOUR: u8 = 10;
/// Nurture minute, local: on the hour.
const NURTURE_MINUTE: u8 = 0;
/// The tenant's default time zone, used when the profile has none (or an unknown one).
const DEFAULT_TIMEZONE: &str = "Asia/Ho_Chi_Minh";

/// What the entry step remembers for `nurture` (journey context).
#[derive(Debug, Default, Serialize, Deserialize)]
struct FormContext {
    #[serde(default)]
    form_name: Option<String>,
    #[serde(default)]
    submission_id: Option<String>,
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// How the entry step waits for the nurture email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NurtureWait {
    /// Past 10:00 local: the next 10:00 is tomorrow's, so a `local-time` wait.
    NextTen,
    /// At or before 10:00 local: wait until 10:00 on this (tomorrow's) date.
    Until(Date),
}

struct FormConfirmation;

impl Guest for FormConfirmation {
    fn describe() -> Manifest {
        Manifest {
            name: "Form submission confirmation".into(),
            entry_events: vec![FORM_EVENT.into()],
            entry_key: Some("properties.submission_id".into()),
            exit_events: vec![],
            re_entry: ReEntry::EveryEvent,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        match (&input.trigger, input.step_id.as_str()) {
            (Trigger::Entered(event), _) if event.name.as_deref() == Some(FORM_EVENT) => {
                confirm(&input, event)
            }
            (Trigger::Entered(event), _) => Err(PluginError::not_supported(format!(
                "form-confirmation does not start on {:?}",
                name_of(event)
            ))),
            (Trigger::TimerFired(_), NURTURE_STEP) => nurture(&input),
            (Trigger::TimerFired(id), step) => Err(PluginError::not_supported(format!(
                "form-confirmation has no timer {id:?} in step {step:?}"
            ))),
            (Trigger::EventReceived(event), _) => Err(PluginError::not_supported(format!(
                "form-confirmation does not wait for {:?}",
                name_of(event)
            ))),
            (Trigger::MessageOutcome(_), _) => Err(PluginError::not_supported(
                "form-confirmation ignores message outcomes",
            )),
        }
    }
}

/// The entry step: confirm, then wait for the nurture email or end.
fn confirm(input: &StepInput, event: &Event) -> Result<Vec<Command>, PluginError> {
    let props = event.properties_value();
    let form_name = json::text_at(&props, "form_name").filter(|n| !n.trim().is_empty());
    let english = prefers_english(&input.profile);
    let mut commands = vec![Command::Send(SendIntent {
        intent_id: intent_id(input, "confirmation"),
        channel_preference: vec![ChannelKind::Email, ChannelKind::Sms],
        category: MessageCategory::Transactional,
        content: vec![Content::Text(confirmation_text(
            form_name.as_deref(),
            english,
        ))],
    })];
    if !(email_marketing_consent(&input.profile) || opted_in_on_form(&props)) {
        commands.push(Command::Exit("confirmed".into()));
        return Ok(commands);
    }
    commands.push(Command::PatchContext(json::to(&FormContext {
        form_name,
        submission_id: input
            .entry_key
            .clone()
            .or_else(|| json::text_at(&props, "submission_id")),
    })?));
    let (tz, now) = local_now(input)?;
    commands.push(Command::Wait(match nurture_wait(&now) {
        NurtureWait::NextTen => WaitSpec::LocalTime(LocalTimeSpec {
            hour: NURTURE_HOUR,
            minute: NURTURE_MINUTE,
            days_of_week: vec![],
        }),
        NurtureWait::Until(date) => WaitSpec::Until(clock::from_local(
            LocalTime {
                year: date.year,
                month: date.month,
                day: date.day,
                hour: NURTURE_HOUR,
                minute: NURTURE_MINUTE,
                second: 0,
                weekday: 0,
            },
            &tz,
        )?),
    }));
    commands.push(Command::Goto(NURTURE_STEP.into()));
    Ok(commands)
}

/// The event's name for messages.
fn name_of(event: &Event) -> &str {
    event.name.as_deref().unwrap_or("an unnamed event")
}

/// The `nurture` step: one marketing email, then the end.
fn nurture(input: &StepInput) -> Result<Vec<Command>, PluginError> {
    let context: FormContext = if input.journey_context.trim().is_empty() {
        FormContext::default()
    } else {
        input.context_as()?
    };
    Ok(vec![
        Command::Send(SendIntent {
            intent_id: intent_id(input, "nurture"),
            channel_preference: vec![ChannelKind::Email],
            category: MessageCategory::Marketing,
            content: vec![Content::Text(nurture_text(
                context.form_name.as_deref(),
                prefers_english(&input.profile),
            ))],
        }),
        Command::Exit("nurtured".into()),
    ])
}

/// Whether the newest consent record for marketing email is `opted-in`.
fn email_marketing_consent(profile: &Profile) -> bool {
    profile
        .consents
        .iter()
        .filter(|c| {
            c.channel == ChannelKind::Email && c.purpose.eq_ignore_ascii_case(MARKETING_PURPOSE)
        })
        .max_by_key(|c| c.updated_at)
        .is_some_and(|c| c.state == ConsentState::OptedIn)
}

/// Whether the submission carries `marketing_opt_in: true` (or the string `"true"`, as
/// HTML forms post it).
fn opted_in_on_form(props: &Value) -> bool {
    match json::path(props, OPT_IN_PROPERTY) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// How to wait from local time `now` until 10:00 the next day.
fn nurture_wait(now: &LocalTime) -> NurtureWait {
    if (now.hour, now.minute) > (NURTURE_HOUR, NURTURE_MINUTE) {
        NurtureWait::NextTen
    } else {
        NurtureWait::Until(next_day(Date {
            year: now.year,
            month: now.month,
            day: now.day,
        }))
    }
}

/// The calendar day after `date`.
fn next_day(date: Date) -> Date {
    if date.day < days_in_month(date.year, date.month) {
        Date {
            day: date.day + 1,
            ..date
        }
    } else if date.month < 12 {
        Date {
            month: date.month + 1,
            day: 1,
            ..date
        }
    } else {
        Date {
            year: date.year + 1,
            month: 1,
            day: 1,
        }
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
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

fn confirmation_text(form_name: Option<&str>, english: bool) -> String {
    match (english, form_name) {
        (false, Some(form)) => {
            format!("Chúng tôi đã nhận được biểu mẫu “{form}” của bạn. Cảm ơn bạn!")
        }
        (false, None) => "Chúng tôi đã nhận được biểu mẫu của bạn. Cảm ơn bạn!".to_owned(),
        (true, Some(form)) => format!("We have received your “{form}” form. Thank you!"),
        (true, None) => "We have received your form. Thank you!".to_owned(),
    }
}

fn nurture_text(form_name: Option<&str>, english: bool) -> String {
    match (english, form_name) {
        (false, Some(form)) => format!(
            "Cảm ơn bạn đã quan tâm qua biểu mẫu “{form}”! Khám phá thêm sản phẩm và ưu đãi mới nhất của chúng tôi."
        ),
        (false, None) => {
            "Cảm ơn bạn đã quan tâm! Khám phá thêm sản phẩm và ưu đãi mới nhất của chúng tôi."
                .to_owned()
        }
        (true, Some(form)) => format!(
            "Thanks for your interest in “{form}”! Discover our latest products and offers."
        ),
        (true, None) => {
            "Thanks for your interest! Discover our latest products and offers.".to_owned()
        }
    }
}

/// Vietnamese unless the profile's locale is English.
fn prefers_english(profile: &Profile) -> bool {
    profile
        .locale
        .as_deref()
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

weft_guest::export_journey_rule!(FormConfirmation);

#[cfg(test)]
mod tests {
    //! The pure parts. The entry step calls the host clock when it waits, so full steps
    //! are tested against the real host in `tests/integration/journey_plugins.rs`.
    use super::*;
    use weft_guest::json::json;
    use weft_guest::types::Consent;

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

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn waits_until_tomorrow_at_or_before_ten_and_for_ten_after_it() {
        assert_eq!(
            nurture_wait(&at(2026, 11, 22, 9, 59)),
            NurtureWait::Until(date(2026, 11, 23))
        );
        assert_eq!(
            nurture_wait(&at(2026, 11, 22, 10, 0)),
            NurtureWait::Until(date(2026, 11, 23))
        );
        assert_eq!(nurture_wait(&at(2026, 11, 22, 10, 1)), NurtureWait::NextTen);
    }

    #[test]
    fn next_day_rolls_over_months_years_and_leap_days() {
        assert_eq!(next_day(date(2026, 11, 30)), date(2026, 12, 1));
        assert_eq!(next_day(date(2026, 12, 31)), date(2027, 1, 1));
        assert_eq!(next_day(date(2027, 2, 28)), date(2027, 3, 1));
        assert_eq!(next_day(date(2028, 2, 28)), date(2028, 2, 29));
        assert_eq!(next_day(date(2028, 2, 29)), date(2028, 3, 1));
    }

    #[test]
    fn newest_email_marketing_record_decides_consent() {
        let consent = |channel, purpose: &str, state, at| Consent {
            channel,
            purpose: purpose.into(),
            state,
            updated_at: at,
        };
        let mut p = Profile {
            profile_id: "p".into(),
            identities: vec![],
            traits: "{}".into(),
            audiences: vec![],
            timezone: None,
            locale: None,
            consents: vec![
                consent(ChannelKind::Sms, "marketing", ConsentState::OptedIn, 1),
                consent(
                    ChannelKind::Email,
                    "transactional",
                    ConsentState::OptedIn,
                    1,
                ),
            ],
        };
        assert!(!email_marketing_consent(&p));
        p.consents.push(consent(
            ChannelKind::Email,
            "Marketing",
            ConsentState::OptedIn,
            1,
        ));
        assert!(email_marketing_consent(&p));
        p.consents.push(consent(
            ChannelKind::Email,
            "marketing",
            ConsentState::OptedOut,
            2,
        ));
        assert!(!email_marketing_consent(&p));
    }

    #[test]
    fn form_opt_in_is_true_or_the_string_true() {
        assert!(opted_in_on_form(&json!({"marketing_opt_in": true})));
        assert!(opted_in_on_form(&json!({"marketing_opt_in": "TRUE"})));
        assert!(!opted_in_on_form(&json!({"marketing_opt_in": false})));
        assert!(!opted_in_on_form(&json!({"marketing_opt_in": "yes"})));
        assert!(!opted_in_on_form(&json!({})));
    }

    #[test]
    fn confirmation_without_consent_needs_no_host_call() {
        let input = StepInput {
            journey_id: "j".into(),
            instance_id: "i1".into(),
            step_id: "start".into(),
            entry_key: Some("sub-1".into()),
            profile: Profile {
                profile_id: "p".into(),
                identities: vec![],
                traits: "{}".into(),
                audiences: vec![],
                timezone: None,
                locale: Some("vi-VN".into()),
                consents: vec![],
            },
            journey_context: "{}".into(),
            trigger: Trigger::Entered(Event {
                message_id: "m".into(),
                event_type: weft_guest::types::EventType::Track,
                name: Some(FORM_EVENT.into()),
                user_id: None,
                anonymous_id: None,
                properties: r#"{"submission_id":"sub-1","form_name":"Đăng ký tư vấn"}"#.into(),
                traits: "{}".into(),
                context: "{}".into(),
                timestamp: 0,
                received_at: 0,
            }),
            now: 0,
            attempt: 0,
        };
        let out = FormConfirmation::step(input).unwrap();
        assert_eq!(
            out,
            [
                Command::Send(SendIntent {
                    intent_id: "i1:start:confirmation".into(),
                    channel_preference: vec![ChannelKind::Email, ChannelKind::Sms],
                    category: MessageCategory::Transactional,
                    content: vec![Content::Text(
                        "Chúng tôi đã nhận được biểu mẫu “Đăng ký tư vấn” của bạn. Cảm ơn bạn!"
                            .into()
                    )],
                }),
                Command::Exit("confirmed".into()),
            ]
        );
    }
}
