//! Journey rule: win back customers who stopped ordering. When a profile enters the
//! `win-back` audience (no `Order Completed` in 30 days, computed by the host), send a
//! marketing email; if no open is reported within three days, follow up over Zalo OA
//! (falling back to ZNS, then SMS).
//!
//! # Steps
//!
//! - entry (`start`, on `Audience Entered` with `properties.audience == "win-back"`; any
//!   other audience is `not-supported`): `send` the email, then wait for `Email Opened` or
//!   `Message Opened` for three days (timer `no-open` on timeout), `goto("followup")`.
//! - `followup` on `timer-fired("no-open")`: `send` the Zalo OA message,
//!   `exit("followed-up")`.
//! - `followup` on `event-received` of an open: `exit("opened")`.
//!
//! `Order Completed` is a manifest exit event: the host ends the instance, cancelling the
//! wait, without calling the rule.
//!
//! # Determinism
//!
//! No clock, no randomness, no state, no host calls: every step is a function of its
//! input, and intent ids come from the instance and step, so a retried step sends nothing
//! twice.

use weft_guest::clock;
use weft_guest::journey::{
    intent_id, Command, Guest, Manifest, PluginError, ReEntry, SendIntent, StepInput, Trigger,
    WaitEvent, WaitSpec,
};
use weft_guest::types::{ChannelKind, Content, Event, MessageCategory, Profile};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// The host's synthetic event when a profile joins an audience.
const AUDIENCE_ENTERED: &str = "Audience Entered";
/// The audience (no `Order Completed` in 30 days) this journey serves.
const WIN_BACK_AUDIENCE: &str = "win-back";
/// A purchase ends the journey: the customer is back.
const ORDER_COMPLETED: &str = "Order Completed";
/// The events that count as the customer opening the win-back message.
const OPEN_EVENTS: [&str; 2] = ["Email Opened", "Message Opened"];
/// The step that follows up (or stops) after the wait.
const FOLLOWUP_STEP: &str = "followup";
/// The timer delivered when nothing was opened in time.
const NO_OPEN_TIMER: &str = "no-open";
/// How long an email gets to be opened: most opens come within a few days.
const OPEN_WAIT_MS: u64 = clock::days(3);

struct WinBack;

impl Guest for WinBack {
    fn describe() -> Manifest {
        Manifest {
            name: "Win-back".into(),
            entry_events: vec![AUDIENCE_ENTERED.into()],
            entry_key: None,
            exit_events: vec![ORDER_COMPLETED.into()],
            re_entry: ReEntry::AfterExit,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        match (&input.trigger, input.step_id.as_str()) {
            (Trigger::Entered(event), _) => enter(&input, event),
            (Trigger::TimerFired(id), FOLLOWUP_STEP) if id == NO_OPEN_TIMER => {
                Ok(follow_up(&input))
            }
            (Trigger::EventReceived(event), FOLLOWUP_STEP)
                if event
                    .name
                    .as_deref()
                    .is_some_and(|n| OPEN_EVENTS.contains(&n)) =>
            {
                Ok(vec![Command::Exit("opened".into())])
            }
            (Trigger::EventReceived(event), _)
                if event.name.as_deref() == Some(ORDER_COMPLETED) =>
            {
                Ok(vec![Command::Exit("purchased".into())])
            }
            (Trigger::TimerFired(id), step) => Err(PluginError::not_supported(format!(
                "win-back has no timer {id:?} in step {step:?}"
            ))),
            (Trigger::EventReceived(event), step) => Err(PluginError::not_supported(format!(
                "win-back does not wait for {:?} in step {step:?}",
                name_of(event)
            ))),
            (Trigger::MessageOutcome(_), _) => Err(PluginError::not_supported(
                "win-back ignores message outcomes",
            )),
        }
    }
}

/// The entry step: the email, then the wait for an open.
fn enter(input: &StepInput, event: &Event) -> Result<Vec<Command>, PluginError> {
    let audience = event.property_str("audience");
    if event.name.as_deref() != Some(AUDIENCE_ENTERED)
        || audience.as_deref() != Some(WIN_BACK_AUDIENCE)
    {
        return Err(PluginError::not_supported(format!(
            "win-back starts only on {AUDIENCE_ENTERED:?} for audience {WIN_BACK_AUDIENCE:?}, \
             not {:?} for {:?}",
            name_of(event),
            audience.unwrap_or_default()
        )));
    }
    let english = prefers_english(&input.profile);
    let name = given_name(&input.profile, english);
    Ok(vec![
        Command::Send(SendIntent {
            intent_id: intent_id(input, "email"),
            channel_preference: vec![ChannelKind::Email],
            category: MessageCategory::Marketing,
            content: vec![Content::Text(email_text(name.as_deref(), english))],
        }),
        Command::Wait(WaitSpec::Event(WaitEvent {
            event_names: OPEN_EVENTS.map(String::from).to_vec(),
            match_entry_key: false,
            timeout_ms: OPEN_WAIT_MS,
            timer_id: NO_OPEN_TIMER.into(),
        })),
        Command::Goto(FOLLOWUP_STEP.into()),
    ])
}

/// The event's name for messages.
fn name_of(event: &Event) -> &str {
    event.name.as_deref().unwrap_or("an unnamed event")
}

/// The follow-up over Zalo OA, then the end.
fn follow_up(input: &StepInput) -> Vec<Command> {
    let english = prefers_english(&input.profile);
    let name = given_name(&input.profile, english);
    vec![
        Command::Send(SendIntent {
            intent_id: intent_id(input, "zalo"),
            channel_preference: vec![ChannelKind::ZaloOa, ChannelKind::ZaloZns, ChannelKind::Sms],
            category: MessageCategory::Marketing,
            content: vec![Content::Text(followup_text(name.as_deref(), english))],
        }),
        Command::Exit("followed-up".into()),
    ]
}

/// The name to greet: `first_name` (or `firstName`), else from `name`: its last word for
/// Vietnamese (family name first, given name last), its first word for English.
fn given_name(profile: &Profile, english: bool) -> Option<String> {
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

fn email_text(name: Option<&str>, english: bool) -> String {
    match (english, name) {
        (false, Some(name)) => format!(
            "{name} ơi, lâu rồi không gặp bạn! Ghé xem những sản phẩm mới nhất của chúng tôi nhé."
        ),
        (false, None) => {
            "Lâu rồi không gặp bạn! Ghé xem những sản phẩm mới nhất của chúng tôi nhé.".to_owned()
        }
        (true, Some(name)) => format!("We miss you, {name}! Come and see what's new."),
        (true, None) => "We miss you! Come and see what's new.".to_owned(),
    }
}

fn followup_text(name: Option<&str>, english: bool) -> String {
    match (english, name) {
        (false, Some(name)) => format!(
            "{name} ơi, chúng tôi nhớ bạn! Nhiều sản phẩm mới đang chờ bạn, ghé cửa hàng nhé."
        ),
        (false, None) => {
            "Chúng tôi nhớ bạn! Nhiều sản phẩm mới đang chờ bạn, ghé cửa hàng nhé.".to_owned()
        }
        (true, Some(name)) => {
            format!("{name}, we still miss you! New arrivals are waiting for you.")
        }
        (true, None) => "We still miss you! New arrivals are waiting for you.".to_owned(),
    }
}

/// Vietnamese unless the profile's locale is English.
fn prefers_english(profile: &Profile) -> bool {
    profile
        .locale
        .as_deref()
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

weft_guest::export_journey_rule!(WinBack);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::types::EventType;

    fn input(trigger: Trigger, step_id: &str) -> StepInput {
        StepInput {
            journey_id: "win-back".into(),
            instance_id: "i1".into(),
            step_id: step_id.into(),
            entry_key: None,
            profile: Profile {
                profile_id: "p1".into(),
                identities: vec![],
                traits: r#"{"name":"Trần Minh Anh"}"#.into(),
                audiences: vec![],
                timezone: None,
                locale: Some("vi-VN".into()),
                consents: vec![],
            },
            journey_context: "{}".into(),
            trigger,
            now: 1_795_312_800_000,
            attempt: 0,
        }
    }

    fn event(name: &str, properties: &str) -> Event {
        Event {
            message_id: "m1".into(),
            event_type: EventType::Track,
            name: Some(name.into()),
            user_id: None,
            anonymous_id: None,
            properties: properties.into(),
            traits: "{}".into(),
            context: "{}".into(),
            timestamp: 0,
            received_at: 0,
        }
    }

    #[test]
    fn entry_emails_and_waits_three_days_for_an_open() {
        let out = WinBack::step(input(
            Trigger::Entered(event(AUDIENCE_ENTERED, r#"{"audience":"win-back"}"#)),
            "start",
        ))
        .unwrap();
        assert_eq!(
            out,
            [
                Command::Send(SendIntent {
                    intent_id: "i1:start:email".into(),
                    channel_preference: vec![ChannelKind::Email],
                    category: MessageCategory::Marketing,
                    content: vec![Content::Text(
                        "Anh ơi, lâu rồi không gặp bạn! Ghé xem những sản phẩm mới nhất của chúng tôi nhé."
                            .into()
                    )],
                }),
                Command::Wait(WaitSpec::Event(WaitEvent {
                    event_names: vec!["Email Opened".into(), "Message Opened".into()],
                    match_entry_key: false,
                    timeout_ms: 259_200_000,
                    timer_id: "no-open".into(),
                })),
                Command::Goto("followup".into()),
            ]
        );
    }

    #[test]
    fn other_audiences_are_not_supported() {
        let err = WinBack::step(input(
            Trigger::Entered(event(AUDIENCE_ENTERED, r#"{"audience":"vip"}"#)),
            "start",
        ))
        .unwrap_err();
        assert!(matches!(err, PluginError::NotSupported(_)), "{err:?}");
    }

    #[test]
    fn no_open_follows_up_and_an_open_exits() {
        let out = WinBack::step(input(Trigger::TimerFired("no-open".into()), "followup")).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Command::Exit("followed-up".into()));
        for name in OPEN_EVENTS {
            let out = WinBack::step(input(Trigger::EventReceived(event(name, "{}")), "followup"))
                .unwrap();
            assert_eq!(out, [Command::Exit("opened".into())]);
        }
    }
}
