//! Example chatbot flow: lead capture in Vietnamese or English. It asks the visitor's
//! name, then a phone number, and sets both as traits (the host identifies the visitor by
//! the phone trait and merges the anonymous profile into the known one), emits
//! `Lead Captured`, promises a call back, and finally offers an optional choice of
//! interest. Every question gets one gentle reminder after 10 minutes of silence.
//!
//! Host convention it relies on: the host checks an answer against `expect.kind` before
//! the turn and re-prompts by itself, passing a phone number already in E.164
//! (`+84901234567`) and a choice as its postback value. The flow still checks the phone
//! itself and asks again when it is not E.164.
//!
//! Pure: no host calls. Everything it remembers lives in the session slots.

use serde::{Deserialize, Serialize};
use weft_guest::clock;
use weft_guest::flow::{
    BotAction, EmittedEvent, EndSpec, ExpectedInput, FlowManifest, Guest, InputKind, PluginError,
    Reminder, Session, TurnResult, TurnTrigger, UserInput,
};
use weft_guest::json::{self, json};
use weft_guest::types::{ChannelKind, Choice, Choices, Content};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// Id of the reminder, delivered back as the `timer` trigger.
const NUDGE_ID: &str = "nudge";
/// Silence before the reminder: long enough to find a phone number, short enough to still be on the page.
const NUDGE_AFTER_MS: u64 = clock::minutes(10);
/// Longest name kept: enough for any real full name, and it bounds the traits and slots.
const MAX_NAME_CHARS: usize = 80;
/// E.164 allows at most 15 digits after the `+`.
const E164_MAX_DIGITS: usize = 15;
/// The shortest plausible international number (the host's phone normaliser agrees).
const E164_MIN_DIGITS: usize = 8;
/// Outcome of a session that captured a lead, for the host's flow reports.
const OUTCOME: &str = "lead_captured";
/// The interest choices: postback value, Vietnamese label, English label.
const INTERESTS: &[(&str, &str, &str)] = &[
    ("interest:new", "Sản phẩm mới", "New products"),
    ("interest:pricing", "Bảng giá", "Pricing"),
    ("interest:other", "Khác", "Other"),
];

/// Slots kept by the host between turns.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Slots {
    /// `vi` or `en`, fixed on the first turn.
    lang: Option<Lang>,
    /// The question the bot waits on an answer to.
    step: Step,
    /// The visitor's name, trimmed and at most `MAX_NAME_CHARS` characters.
    name: Option<String>,
    /// The visitor's phone number in E.164.
    phone: Option<String>,
    /// The interest postback value, if the visitor picked one.
    interest: Option<String>,
}

/// Where the conversation stands: the question asked last.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    /// Waiting for the visitor's name.
    #[default]
    Name,
    /// Waiting for a phone number.
    Phone,
    /// Waiting for the optional interest choice.
    Interest,
    /// Nothing more to ask.
    Done,
}

/// The language the bot writes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Lang {
    /// Vietnamese.
    Vi,
    /// English.
    En,
}

impl Lang {
    /// `vi` text or `en` text, whichever this language reads.
    fn pick<'a>(self, vi: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }
}

/// What one turn does: the actions in order and the answer the bot then waits for.
type Turn = (Vec<BotAction>, Option<ExpectedInput>);

/// The lead-capture flow.
struct LeadCapture;

impl Guest for LeadCapture {
    fn describe() -> FlowManifest {
        FlowManifest {
            name: "Lead capture".into(),
            start_keywords: [
                "tư vấn",
                "tu van",
                "báo giá",
                "bao gia",
                "quote",
                "contact me",
                "call me",
            ]
            .map(String::from)
            .to_vec(),
            start_events: vec![],
            channels: vec![
                ChannelKind::WebChat,
                ChannelKind::ZaloOa,
                ChannelKind::Messenger,
            ],
            session_timeout_ms: clock::minutes(60),
        }
    }

    fn turn(s: Session, t: TurnTrigger) -> Result<TurnResult, PluginError> {
        let mut slots: Slots = if s.slots.trim().is_empty() {
            Slots::default()
        } else {
            s.slots_as()?
        };
        let default_lang =
            if (s.locale.is_none() && s.profile.locale.is_none()) || s.prefers_vietnamese() {
                Lang::Vi
            } else {
                Lang::En
            };
        let lang = *slots.lang.get_or_insert(default_lang);

        let (actions, expect) = match t {
            TurnTrigger::Start(_) => {
                slots.step = Step::Name;
                let hello = lang.pick(
                    "Xin chào! Mình sẽ giúp bạn kết nối với chuyên viên tư vấn.",
                    "Hi! I'll put you in touch with one of our consultants.",
                );
                ask(vec![], Some(hello), &slots, lang)
            }
            TurnTrigger::Input(input) => answer(&mut slots, &input, lang)?,
            TurnTrigger::Timer(id) if id == NUDGE_ID => nudge(&slots, lang),
            // Not ours: keep waiting for the same answer.
            TurnTrigger::Timer(_) => (vec![], question(&slots, lang).map(|(_, e)| e)),
            TurnTrigger::HandoffEnded(resolution) => {
                let outcome = if resolution.is_empty() {
                    "handoff".to_owned()
                } else {
                    resolution
                };
                slots.step = Step::Done;
                (
                    vec![BotAction::End(EndSpec {
                        outcome,
                        send_csat: true,
                    })],
                    None,
                )
            }
        };
        Ok(TurnResult {
            actions,
            expect,
            slots: json::to(&slots)?,
        })
    }
}

/// Takes the visitor's answer to the current question.
fn answer(slots: &mut Slots, input: &UserInput, lang: Lang) -> Result<Turn, PluginError> {
    if let Some(interest) = interest_of(input, slots.step == Step::Interest) {
        return match slots.step {
            Step::Interest => finish(slots, interest, lang),
            // Picked early (from an earlier message's buttons): keep it, ask on.
            Step::Name | Step::Phone => {
                slots.interest = Some(interest.to_owned());
                Ok(ask(vec![], None, slots, lang))
            }
            Step::Done => Ok((vec![], None)),
        };
    }
    match (slots.step, input) {
        (Step::Name, UserInput::Text(text)) => match clean_name(text) {
            Some(name) => {
                slots.name = Some(name);
                slots.step = Step::Phone;
                Ok(ask(vec![], None, slots, lang))
            }
            None => Ok(ask(vec![], None, slots, lang)),
        },
        (Step::Phone, UserInput::Text(text)) if is_e164(text.trim()) => {
            captured(slots, text.trim(), lang)
        }
        (Step::Phone, _) => {
            let again = Content::Text(phone_reprompt(lang).into());
            Ok(asking(vec![], again, expect_phone(lang)))
        }
        (Step::Done, _) => Ok((vec![], None)),
        // Anything else: the same question again.
        (Step::Name | Step::Interest, _) => Ok(ask(vec![], None, slots, lang)),
    }
}

/// The interest choice in `input`: its postback value at any step; while the interest is
/// asked (`typed_counts`), also a typed label (in either language) or value suffix
/// (`pricing`), as a defence should the host pass text through.
fn interest_of(input: &UserInput, typed_counts: bool) -> Option<&'static str> {
    match input {
        UserInput::Postback(p) => INTERESTS.iter().find(|(v, _, _)| v == p).map(|i| i.0),
        UserInput::Text(t) if typed_counts => {
            let t = t.trim().to_lowercase();
            INTERESTS
                .iter()
                .find(|(v, vi, en)| {
                    t == vi.to_lowercase()
                        || t == en.to_lowercase()
                        || v.strip_prefix("interest:") == Some(t.as_str())
                })
                .map(|i| i.0)
        }
        UserInput::Text(_)
        | UserInput::Media(_)
        | UserInput::Location(_)
        | UserInput::Rating(_) => None,
    }
}

/// The name as kept: whitespace runs collapsed, at most `MAX_NAME_CHARS` characters;
/// `None` if nothing is left.
fn clean_name(text: &str) -> Option<String> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let name: String = collapsed.chars().take(MAX_NAME_CHARS).collect();
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether `phone` is E.164: `+`, then 8 to 15 digits, the first not 0 (no country
/// code starts with 0).
fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// A valid phone number: sets the traits, emits `Lead Captured`, thanks the visitor and
/// asks for the interest (or ends, when it is already known).
fn captured(slots: &mut Slots, phone: &str, lang: Lang) -> Result<Turn, PluginError> {
    slots.phone = Some(phone.to_owned());
    let mut traits = json!({ "phone": phone });
    if let Some(name) = &slots.name {
        traits["name"] = json!(name);
    }
    let mut properties = json!({ "source": "chat" });
    if let Some(interest) = &slots.interest {
        properties["interest"] = json!(interest);
        traits["lead_interest"] = json!(interest);
    }
    let thanks = match (&slots.name, lang) {
        (Some(name), Lang::Vi) => {
            format!("Cảm ơn {name}! Chuyên viên sẽ gọi lại cho bạn trong giờ làm việc.")
        }
        (None, Lang::Vi) => {
            "Cảm ơn bạn! Chuyên viên sẽ gọi lại cho bạn trong giờ làm việc.".to_owned()
        }
        (Some(name), Lang::En) => {
            format!("Thank you, {name}! A consultant will call you back during business hours.")
        }
        (None, Lang::En) => {
            "Thank you! A consultant will call you back during business hours.".to_owned()
        }
    };
    let mut actions = vec![
        BotAction::SetTraits(json::to(&traits)?),
        BotAction::Emit(EmittedEvent {
            name: "Lead Captured".into(),
            properties: json::to(&properties)?,
        }),
        BotAction::Reply(vec![Content::Text(thanks)]),
    ];
    if slots.interest.is_some() {
        slots.step = Step::Done;
        actions.push(end());
        return Ok((actions, None));
    }
    slots.step = Step::Interest;
    Ok(ask(actions, None, slots, lang))
}

/// The interest choice: sets it as a trait and ends the session.
fn finish(slots: &mut Slots, interest: &str, lang: Lang) -> Result<Turn, PluginError> {
    slots.interest = Some(interest.to_owned());
    slots.step = Step::Done;
    let ok = lang.pick(
        "Mình đã ghi nhận, hẹn gặp lại bạn!",
        "Noted, talk to you soon!",
    );
    Ok((
        vec![
            BotAction::SetTraits(json::to(&json!({ "lead_interest": interest }))?),
            BotAction::Reply(vec![Content::Text(ok.into())]),
            end(),
        ],
        None,
    ))
}

/// Ends the session with a captured lead; no CSAT, the visitor has not been helped yet.
fn end() -> BotAction {
    BotAction::End(EndSpec {
        outcome: OUTCOME.into(),
        send_csat: false,
    })
}

/// The question of the current step and the answer it expects; `None` once done.
fn question(slots: &Slots, lang: Lang) -> Option<(Content, ExpectedInput)> {
    match slots.step {
        Step::Name => Some((
            Content::Text(
                lang.pick(
                    "Bạn cho mình biết tên của bạn nhé?",
                    "May I have your name?",
                )
                .into(),
            ),
            expect(InputKind::FreeText, vec![], None),
        )),
        Step::Phone => {
            let ask = match (&slots.name, lang) {
                (Some(name), Lang::Vi) => format!(
                    "Chào {name}! Bạn cho mình xin số điện thoại để chuyên viên gọi lại nhé?"
                ),
                (None, Lang::Vi) => {
                    "Bạn cho mình xin số điện thoại để chuyên viên gọi lại nhé?".to_owned()
                }
                (Some(name), Lang::En) => format!(
                    "Nice to meet you, {name}! What phone number can our consultant call you on?"
                ),
                (None, Lang::En) => "What phone number can our consultant call you on?".to_owned(),
            };
            Some((Content::Text(ask), expect_phone(lang)))
        }
        Step::Interest => {
            let options = interest_choices(lang);
            Some((
                Content::Choices(Choices {
                    prompt: lang
                        .pick(
                            "Bạn đang quan tâm đến điều gì? (không bắt buộc)",
                            "What are you interested in? (optional)",
                        )
                        .into(),
                    options: options.clone(),
                }),
                expect(InputKind::Choice, options, None),
            ))
        }
        Step::Done => None,
    }
}

/// `actions`, then the current question (after `lead_in`, if any) and the nudge; nothing
/// more once done.
fn ask(actions: Vec<BotAction>, lead_in: Option<&str>, slots: &Slots, lang: Lang) -> Turn {
    let Some((content, expect)) = question(slots, lang) else {
        return (actions, None);
    };
    asking(actions, prefixed(lead_in, content), expect)
}

/// `actions`, then `content` as a reply and the nudge, waiting for `expect`.
fn asking(mut actions: Vec<BotAction>, content: Content, expect: ExpectedInput) -> Turn {
    actions.push(BotAction::Reply(vec![content]));
    actions.push(BotAction::Schedule(Reminder {
        id: NUDGE_ID.into(),
        after_ms: NUDGE_AFTER_MS,
        cancel_on_user_message: true,
    }));
    (actions, Some(expect))
}

/// The reminder: the current question once more, after a gentle word; schedules nothing.
fn nudge(slots: &Slots, lang: Lang) -> Turn {
    let Some((content, expect)) = question(slots, lang) else {
        return (vec![], None);
    };
    let still_there = lang.pick("Bạn còn ở đó không?", "Are you still there?");
    (
        vec![BotAction::Reply(vec![prefixed(Some(still_there), content)])],
        Some(expect),
    )
}

/// `content` with `lead_in` and a space before its text or prompt.
fn prefixed(lead_in: Option<&str>, content: Content) -> Content {
    match (lead_in, content) {
        (Some(l), Content::Text(t)) => Content::Text(format!("{l} {t}")),
        (Some(l), Content::Choices(c)) => Content::Choices(Choices {
            prompt: format!("{l} {}", c.prompt),
            options: c.options,
        }),
        (_, content) => content,
    }
}

/// The interest quick replies in `lang`.
fn interest_choices(lang: Lang) -> Vec<Choice> {
    INTERESTS
        .iter()
        .map(|(value, vi, en)| Choice {
            label: lang.pick(vi, en).into(),
            value: (*value).into(),
        })
        .collect()
}

/// Re-asks for a phone number that is not valid.
fn phone_reprompt(lang: Lang) -> &'static str {
    lang.pick(
        "Số điện thoại chưa đúng, bạn nhập lại giúp mình (ví dụ 0901234567) nhé.",
        "That phone number doesn't look right, please type it again (for example 0901234567).",
    )
}

/// Waits for a phone number, with the re-prompt the host sends on an invalid one.
fn expect_phone(lang: Lang) -> ExpectedInput {
    expect(InputKind::Phone, vec![], Some(phone_reprompt(lang).into()))
}

/// An expected answer of `kind`.
fn expect(kind: InputKind, choices: Vec<Choice>, reprompt: Option<String>) -> ExpectedInput {
    ExpectedInput {
        kind,
        choices,
        validation: None,
        timeout_ms: None,
        reprompt,
    }
}

weft_guest::export_chatbot_flow!(LeadCapture);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::serde_json;
    use weft_guest::types::Profile;

    /// A session on the web chat with `slots` and the conversation `locale`.
    fn session(slots: &str, locale: Option<&str>) -> Session {
        Session {
            session_id: "s1".into(),
            conversation_id: "c1".into(),
            channel: ChannelKind::WebChat,
            profile: Profile {
                profile_id: "anon-1".into(),
                identities: vec![],
                traits: "{}".into(),
                audiences: vec![],
                timezone: None,
                locale: None,
                consents: vec![],
            },
            slots: slots.into(),
            started_at: 0,
            last_user_at: 0,
            turn: 1,
            locale: locale.map(String::from),
            page: None,
        }
    }

    /// Runs a turn on a Vietnamese session with `slots`.
    fn run(slots: &str, t: TurnTrigger) -> TurnResult {
        LeadCapture::turn(session(slots, Some("vi-VN")), t).unwrap()
    }

    /// A typed message (or a value the host normalised).
    fn text(t: &str) -> TurnTrigger {
        TurnTrigger::Input(UserInput::Text(t.into()))
    }

    /// A quick-reply press.
    fn postback(p: &str) -> TurnTrigger {
        TurnTrigger::Input(UserInput::Postback(p.into()))
    }

    /// Every reply of the turn as debug text, for `contains` checks.
    fn replies(r: &TurnResult) -> String {
        r.actions
            .iter()
            .filter_map(|a| match a {
                BotAction::Reply(c) => Some(format!("{c:?}")),
                _ => None,
            })
            .collect()
    }

    /// The slots of the turn as JSON.
    fn slots_of(r: &TurnResult) -> serde_json::Value {
        serde_json::from_str(&r.slots).unwrap()
    }

    /// The traits the turn sets, as JSON.
    fn traits_set(r: &TurnResult) -> Vec<serde_json::Value> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                BotAction::SetTraits(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    /// The events the turn emits, as (name, properties).
    fn emitted(r: &TurnResult) -> Vec<(String, serde_json::Value)> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                BotAction::Emit(e) => {
                    Some((e.name.clone(), serde_json::from_str(&e.properties).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether the turn schedules the nudge.
    fn schedules_nudge(r: &TurnResult) -> bool {
        r.actions.contains(&BotAction::Schedule(Reminder {
            id: "nudge".into(),
            after_ms: 10 * 60 * 1000,
            cancel_on_user_message: true,
        }))
    }

    /// Slots once the visitor gave the name "Lan".
    fn named() -> String {
        let started = run("", TurnTrigger::Start(None));
        run(&started.slots, text("  Lan  ")).slots
    }

    /// Slots once the visitor "Lan" gave a valid phone number.
    fn phoned() -> String {
        run(&named(), text("+84901234567")).slots
    }

    #[test]
    fn manifest_starts_on_consulting_and_quote_keywords_without_events() {
        let m = LeadCapture::describe();
        assert_eq!(m.name, "Lead capture");
        assert_eq!(
            m.start_keywords,
            [
                "tư vấn",
                "tu van",
                "báo giá",
                "bao gia",
                "quote",
                "contact me",
                "call me"
            ]
        );
        assert!(m.start_events.is_empty());
        assert_eq!(
            m.channels,
            [
                ChannelKind::WebChat,
                ChannelKind::ZaloOa,
                ChannelKind::Messenger
            ]
        );
        assert_eq!(m.session_timeout_ms, 60 * 60 * 1000);
    }

    #[test]
    fn start_greets_and_asks_the_name_as_free_text() {
        let r = run("", TurnTrigger::Start(None));
        assert!(
            replies(&r).contains("Xin chào") && replies(&r).contains("tên của bạn"),
            "{}",
            replies(&r)
        );
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        assert!(schedules_nudge(&r));
        assert_eq!(slots_of(&r)["step"], "name");
    }

    #[test]
    fn vietnamese_is_the_default_and_english_follows_the_locale() {
        let r = LeadCapture::turn(session("", None), TurnTrigger::Start(None)).unwrap();
        assert!(replies(&r).contains("Xin chào"), "{}", replies(&r));
        let r = LeadCapture::turn(session("", Some("en-GB")), TurnTrigger::Start(None)).unwrap();
        assert!(
            replies(&r).contains("May I have your name"),
            "{}",
            replies(&r)
        );
    }

    #[test]
    fn name_is_trimmed_and_then_the_phone_is_asked_with_a_reprompt() {
        let started = run("", TurnTrigger::Start(None));
        let r = run(&started.slots, text("  Nguyễn   Thị Lan \n"));
        assert_eq!(slots_of(&r)["name"], "Nguyễn Thị Lan");
        assert_eq!(slots_of(&r)["step"], "phone");
        assert!(replies(&r).contains("Nguyễn Thị Lan"), "{}", replies(&r));
        let expect = r.expect.as_ref().unwrap();
        assert_eq!(expect.kind, InputKind::Phone);
        assert_eq!(
            expect.reprompt.as_deref(),
            Some("Số điện thoại chưa đúng, bạn nhập lại giúp mình (ví dụ 0901234567) nhé.")
        );
        assert!(schedules_nudge(&r));
    }

    #[test]
    fn name_is_cut_to_eighty_characters() {
        let started = run("", TurnTrigger::Start(None));
        let long = "Ả".repeat(100);
        let r = run(&started.slots, text(&long));
        assert_eq!(slots_of(&r)["name"].as_str().unwrap().chars().count(), 80);
    }

    #[test]
    fn blank_name_is_asked_again() {
        let started = run("", TurnTrigger::Start(None));
        let r = run(&started.slots, text("   "));
        assert_eq!(slots_of(&r)["step"], "name");
        assert_eq!(slots_of(&r)["name"], serde_json::Value::Null);
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
    }

    #[test]
    fn valid_phone_sets_traits_emits_lead_captured_thanks_and_asks_the_interest() {
        let r = run(&named(), text("+84901234567"));
        assert_eq!(
            traits_set(&r),
            [serde_json::json!({"phone": "+84901234567", "name": "Lan"})]
        );
        assert_eq!(
            emitted(&r),
            [(
                "Lead Captured".to_owned(),
                serde_json::json!({"source": "chat"})
            )]
        );
        assert!(
            replies(&r).contains("Cảm ơn Lan! Chuyên viên sẽ gọi lại cho bạn trong giờ làm việc."),
            "{}",
            replies(&r)
        );
        let Some(BotAction::Reply(last)) =
            r.actions.iter().rfind(|a| matches!(a, BotAction::Reply(_)))
        else {
            panic!("{:?}", r.actions)
        };
        let [Content::Choices(c)] = last.as_slice() else {
            panic!("{last:?}")
        };
        let options: Vec<_> = c
            .options
            .iter()
            .map(|o| (o.label.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            options,
            [
                ("Sản phẩm mới", "interest:new"),
                ("Bảng giá", "interest:pricing"),
                ("Khác", "interest:other")
            ]
        );
        let expect = r.expect.as_ref().unwrap();
        assert_eq!(expect.kind, InputKind::Choice);
        assert_eq!(expect.choices, c.options);
        assert!(schedules_nudge(&r));
        assert_eq!(slots_of(&r)["phone"], "+84901234567");
        assert_eq!(slots_of(&r)["step"], "interest");
    }

    #[test]
    fn english_thanks_by_name() {
        let started = LeadCapture::turn(session("", Some("en")), TurnTrigger::Start(None)).unwrap();
        let named = LeadCapture::turn(session(&started.slots, Some("en")), text("Ann")).unwrap();
        let r = LeadCapture::turn(session(&named.slots, Some("en")), text("+14155550123")).unwrap();
        assert!(
            replies(&r).contains("Thank you, Ann! A consultant will call you back"),
            "{}",
            replies(&r)
        );
        assert!(replies(&r).contains("New products"), "{}", replies(&r));
    }

    #[test]
    fn phone_that_is_not_e164_is_asked_again_without_traits() {
        for bad in [
            "0901234567",
            "+84 901 234 567",
            "+8490123abc",
            "+1234567",
            "+1234567890123456",
            "+0901234567",
            "84901234567",
        ] {
            let r = run(&named(), text(bad));
            assert!(traits_set(&r).is_empty(), "{bad}");
            assert!(emitted(&r).is_empty(), "{bad}");
            assert!(
                replies(&r).contains("Số điện thoại chưa đúng"),
                "{bad}: {}",
                replies(&r)
            );
            assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Phone, "{bad}");
            assert!(schedules_nudge(&r), "{bad}");
            assert_eq!(slots_of(&r)["step"], "phone", "{bad}");
        }
    }

    #[test]
    fn e164_check_accepts_eight_to_fifteen_digits_after_a_plus() {
        assert!(is_e164("+84901234567"));
        assert!(is_e164("+12345678"));
        assert!(is_e164("+123456789012345"));
        assert!(!is_e164("+1234567"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+"));
        assert!(!is_e164("84901234567"));
        assert!(!is_e164("+84-901-234-567"));
        assert!(!is_e164("+٨٤٩٠١٢٣٤٥٦٧")); // Arabic-Indic digits are not ASCII digits
    }

    #[test]
    fn interest_postback_sets_the_trait_and_ends_as_lead_captured_without_csat() {
        let r = run(&phoned(), postback("interest:pricing"));
        assert_eq!(
            traits_set(&r),
            [serde_json::json!({"lead_interest": "interest:pricing"})]
        );
        assert_eq!(
            r.actions.last(),
            Some(&BotAction::End(EndSpec {
                outcome: "lead_captured".into(),
                send_csat: false
            }))
        );
        assert_eq!(r.expect, None);
        assert_eq!(slots_of(&r)["step"], "done");
    }

    #[test]
    fn typed_interest_label_counts_as_the_choice() {
        let r = run(&phoned(), text("bảng giá"));
        assert_eq!(
            traits_set(&r),
            [serde_json::json!({"lead_interest": "interest:pricing"})]
        );
    }

    #[test]
    fn a_name_that_reads_like_an_interest_is_still_a_name() {
        let started = run("", TurnTrigger::Start(None));
        let r = run(&started.slots, text("Khác"));
        assert_eq!(slots_of(&r)["name"], "Khác");
        assert_eq!(slots_of(&r)["interest"], serde_json::Value::Null);
    }

    #[test]
    fn other_text_at_the_interest_question_asks_it_again() {
        let r = run(&phoned(), text("hmm"));
        assert!(traits_set(&r).is_empty());
        assert!(!r.actions.iter().any(|a| matches!(a, BotAction::End(_))));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Choice);
    }

    #[test]
    fn interest_picked_early_goes_into_lead_captured_and_skips_the_question() {
        let r = run(&named(), postback("interest:new"));
        assert_eq!(slots_of(&r)["interest"], "interest:new");
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Phone);
        let r = run(&r.slots, text("+84901234567"));
        assert_eq!(
            emitted(&r),
            [(
                "Lead Captured".to_owned(),
                serde_json::json!({"source": "chat", "interest": "interest:new"})
            )]
        );
        assert_eq!(
            traits_set(&r),
            [
                serde_json::json!({"phone": "+84901234567", "name": "Lan", "lead_interest": "interest:new"})
            ]
        );
        assert_eq!(
            r.actions.last(),
            Some(&BotAction::End(EndSpec {
                outcome: "lead_captured".into(),
                send_csat: false
            }))
        );
    }

    #[test]
    fn nudge_timer_repeats_the_current_question_once_without_rescheduling() {
        let started = run("", TurnTrigger::Start(None));
        let r = run(&started.slots, TurnTrigger::Timer("nudge".into()));
        assert!(
            replies(&r).contains("Bạn còn ở đó không? Bạn cho mình biết tên"),
            "{}",
            replies(&r)
        );
        assert_eq!(r.actions.len(), 1, "{:?}", r.actions);
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);

        let r = run(&named(), TurnTrigger::Timer("nudge".into()));
        assert!(replies(&r).contains("số điện thoại"), "{}", replies(&r));
        assert!(!schedules_nudge(&r));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Phone);

        let r = run(&phoned(), TurnTrigger::Timer("nudge".into()));
        assert!(replies(&r).contains("Bảng giá"), "{}", replies(&r));
        assert!(!schedules_nudge(&r));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Choice);
    }

    #[test]
    fn timers_after_the_end_or_with_other_ids_do_nothing() {
        let done = run(&phoned(), postback("interest:other")).slots;
        let r = run(&done, TurnTrigger::Timer("nudge".into()));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        assert_eq!(r.expect, None);
        let r = run(&named(), TurnTrigger::Timer("other".into()));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::Phone);
    }

    #[test]
    fn input_after_the_end_does_nothing() {
        let done = run(&phoned(), postback("interest:other")).slots;
        let r = run(&done, text("hello?"));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        assert_eq!(r.expect, None);
    }

    #[test]
    fn handoff_ended_ends_with_the_resolution_and_csat() {
        let r = run(&named(), TurnTrigger::HandoffEnded("called_back".into()));
        assert_eq!(
            r.actions,
            [BotAction::End(EndSpec {
                outcome: "called_back".into(),
                send_csat: true
            })]
        );
        let r = run(&named(), TurnTrigger::HandoffEnded(String::new()));
        assert_eq!(
            r.actions,
            [BotAction::End(EndSpec {
                outcome: "handoff".into(),
                send_csat: true
            })]
        );
    }
}
