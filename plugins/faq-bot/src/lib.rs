//! Example chatbot flow: a keyword FAQ in Vietnamese and English (opening hours, shipping,
//! returns) with quick replies, handoff to the `support` queue on request or after two
//! messages it did not understand, and a CSAT survey at the end.
//!
//! Pure: no host calls. Everything it remembers lives in the session slots.

use serde::{Deserialize, Serialize};
use weft_guest::clock;
use weft_guest::flow::{
    BotAction, EmittedEvent, EndSpec, ExpectedInput, FlowManifest, Guest, Handoff, InputKind,
    PluginError, Session, TurnResult, TurnTrigger, UserInput,
};
use weft_guest::json::{self, json};
use weft_guest::types::{ChannelKind, Choice, Choices, Content};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// Queue that human handoffs go to.
const SUPPORT_QUEUE: &str = "support";
/// Unrecognised messages in a session before the bot hands off.
const MAX_MISSES: u32 = 2;

/// Slots kept by the host between turns.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Slots {
    /// Messages the bot did not understand in this session.
    #[serde(default)]
    misses: u32,
    /// `vi` or `en`, fixed by the first message that tells.
    #[serde(default)]
    lang: Option<Lang>,
    /// Topics answered so far.
    #[serde(default)]
    answered: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Lang {
    Vi,
    En,
}

/// One FAQ topic.
struct Topic {
    id: &'static str,
    /// Keywords without diacritics, lower case, each tagged with its language.
    keywords: &'static [(&'static str, Lang)],
    label_vi: &'static str,
    label_en: &'static str,
    answer_vi: &'static str,
    answer_en: &'static str,
}

const TOPICS: &[Topic] = &[
    Topic {
        id: "hours",
        keywords: &[
            ("gio mo cua", Lang::Vi),
            ("mo cua", Lang::Vi),
            ("gio lam viec", Lang::Vi),
            ("may gio", Lang::Vi),
            ("opening hours", Lang::En),
            ("open", Lang::En),
            ("hours", Lang::En),
        ],
        label_vi: "Giờ mở cửa",
        label_en: "Opening hours",
        answer_vi: "Cửa hàng mở cửa từ 8:00 đến 21:00 hằng ngày, kể cả cuối tuần và ngày lễ.",
        answer_en: "We are open from 8:00 to 21:00 every day, weekends and holidays included.",
    },
    Topic {
        id: "shipping",
        keywords: &[
            ("giao hang", Lang::Vi),
            ("van chuyen", Lang::Vi),
            ("phi ship", Lang::Vi),
            ("shipping", Lang::En),
            ("delivery", Lang::En),
            ("ship", Lang::En),
        ],
        label_vi: "Giao hàng",
        label_en: "Shipping",
        answer_vi: "Giao hàng nội thành trong 1–2 ngày, các tỉnh khác 3–5 ngày. Miễn phí giao hàng cho đơn từ 500.000đ.",
        answer_en: "Delivery takes 1–2 days in the city and 3–5 days elsewhere, free for orders from 500,000 VND.",
    },
    Topic {
        id: "returns",
        keywords: &[
            ("doi tra", Lang::Vi),
            ("tra hang", Lang::Vi),
            ("doi hang", Lang::Vi),
            ("hoan tien", Lang::Vi),
            ("returns", Lang::En),
            ("return", Lang::En),
            ("refund", Lang::En),
            ("exchange", Lang::En),
        ],
        label_vi: "Đổi trả",
        label_en: "Returns",
        answer_vi: "Bạn có thể đổi trả trong 7 ngày kể từ khi nhận hàng, khi sản phẩm còn nguyên tem mác và hoá đơn.",
        answer_en: "You can return or exchange an item within 7 days of delivery, with its tags and receipt.",
    },
];

/// Phrases asking for a human, without diacritics.
const AGENT_WORDS: &[(&str, Lang)] = &[
    ("nhan vien", Lang::Vi),
    ("tu van vien", Lang::Vi),
    ("nguoi that", Lang::Vi),
    ("agent", Lang::En),
    ("human", Lang::En),
    ("staff", Lang::En),
];

/// Whole messages that end the conversation, without diacritics.
const DONE_MESSAGES: &[(&str, Lang)] = &[
    ("khong", Lang::Vi),
    ("khong cam on", Lang::Vi),
    ("cam on", Lang::Vi),
    ("xong", Lang::Vi),
    ("tam biet", Lang::Vi),
    ("no", Lang::En),
    ("no thanks", Lang::En),
    ("thanks", Lang::En),
    ("thank you", Lang::En),
    ("bye", Lang::En),
    ("done", Lang::En),
];

/// Postback values of the quick replies.
const PB_AGENT: &str = "agent";
const PB_DONE: &str = "done";
const PB_TOPIC_PREFIX: &str = "topic:";

/// What the customer asked for.
enum Intent {
    Topic(&'static Topic),
    Agent,
    Done,
    Unknown,
}

struct FaqBot;

impl Guest for FaqBot {
    fn describe() -> FlowManifest {
        FlowManifest {
            name: "FAQ bot".into(),
            start_keywords: [
                "faq",
                "help",
                "hỗ trợ",
                "giờ mở cửa",
                "giao hàng",
                "đổi trả",
                "opening hours",
                "shipping",
                "returns",
            ]
            .map(String::from)
            .to_vec(),
            start_events: vec![],
            channels: vec![
                ChannelKind::ZaloOa,
                ChannelKind::Messenger,
                ChannelKind::Whatsapp,
                ChannelKind::WebChat,
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

        let actions = match t {
            TurnTrigger::Start(_) => {
                let lang = *slots.lang.get_or_insert(default_lang);
                let greeting = match lang {
                    Lang::Vi => "Xin chào! Mình có thể giúp gì cho bạn?",
                    Lang::En => "Hello! How can I help you?",
                };
                return reply_with_menu(vec![], greeting, lang, slots);
            }
            TurnTrigger::Input(input) => {
                let (intent, detected) = understand(&input);
                let lang = *slots.lang.get_or_insert(detected.unwrap_or(default_lang));
                match intent {
                    Intent::Topic(topic) => {
                        slots.answered.push(topic.id.into());
                        let answer = match lang {
                            Lang::Vi => topic.answer_vi,
                            Lang::En => topic.answer_en,
                        };
                        let emit = BotAction::Emit(EmittedEvent {
                            name: "FAQ Answered".into(),
                            properties: json::to(&json!({"topic": topic.id, "lang": lang}))?,
                        });
                        let more = match lang {
                            Lang::Vi => "Bạn còn cần hỏi gì nữa không?",
                            Lang::En => "Anything else?",
                        };
                        return reply_with_menu(
                            vec![emit, BotAction::Reply(vec![Content::Text(answer.into())])],
                            more,
                            lang,
                            slots,
                        );
                    }
                    Intent::Agent => handoff(lang, "customer asked for an agent", &slots, &s),
                    Intent::Done => finish(lang, "resolved"),
                    Intent::Unknown => {
                        slots.misses += 1;
                        if slots.misses >= MAX_MISSES {
                            handoff(lang, "the bot did not understand twice", &slots, &s)
                        } else {
                            let sorry = match lang {
                                Lang::Vi => "Xin lỗi, mình chưa hiểu ý bạn. Bạn chọn một chủ đề bên dưới nhé:",
                                Lang::En => "Sorry, I didn't get that. Please pick a topic below:",
                            };
                            return reply_with_menu(vec![], sorry, lang, slots);
                        }
                    }
                }
            }
            TurnTrigger::Timer(_) => vec![BotAction::End(EndSpec {
                outcome: "timeout".into(),
                send_csat: false,
            })],
            TurnTrigger::HandoffEnded(resolution) => {
                let outcome = if resolution.is_empty() {
                    "handoff".to_owned()
                } else {
                    resolution
                };
                vec![BotAction::End(EndSpec {
                    outcome,
                    send_csat: true,
                })]
            }
        };
        Ok(TurnResult {
            actions,
            expect: None,
            slots: json::to(&slots)?,
        })
    }
}

/// Classifies the input and tells its language when a keyword reveals it.
fn understand(input: &UserInput) -> (Intent, Option<Lang>) {
    let text = match input {
        UserInput::Postback(p) if p == PB_AGENT => return (Intent::Agent, None),
        UserInput::Postback(p) if p == PB_DONE => return (Intent::Done, None),
        UserInput::Postback(p) => {
            if let Some(topic) = p
                .strip_prefix(PB_TOPIC_PREFIX)
                .and_then(|id| TOPICS.iter().find(|t| t.id == id))
            {
                return (Intent::Topic(topic), None);
            }
            p.as_str()
        }
        UserInput::Text(t) => t.as_str(),
        UserInput::Rating(_) | UserInput::Media(_) | UserInput::Location(_) => {
            return (Intent::Unknown, None)
        }
    };
    let folded = fold(text);
    let has_diacritics = has_vietnamese_letters(text);
    let lang_of = |l: Lang| Some(if has_diacritics { Lang::Vi } else { l });

    if let Some((_, l)) = DONE_MESSAGES.iter().find(|(w, _)| folded == *w) {
        return (Intent::Done, lang_of(*l));
    }
    let padded = format!(" {folded} ");
    let has = |phrase: &str| padded.contains(&format!(" {phrase} "));
    if let Some((_, l)) = AGENT_WORDS.iter().find(|(w, _)| has(w)) {
        return (Intent::Agent, lang_of(*l));
    }
    for topic in TOPICS {
        if let Some((_, l)) = topic.keywords.iter().find(|(w, _)| has(w)) {
            return (Intent::Topic(topic), lang_of(*l));
        }
    }
    (
        Intent::Unknown,
        if has_diacritics { Some(Lang::Vi) } else { None },
    )
}

/// Vietnamese letters with diacritics (lower case) and their base letter.
const GROUPS: &[(&str, char)] = &[
    ("àáạảãâầấậẩẫăằắặẳẵ", 'a'),
    ("èéẹẻẽêềếệểễ", 'e'),
    ("ìíịỉĩ", 'i'),
    ("òóọỏõôồốộổỗơờớợởỡ", 'o'),
    ("ùúụủũưừứựửữ", 'u'),
    ("ỳýỵỷỹ", 'y'),
    ("đ", 'd'),
];

/// Whether `text` has a Vietnamese letter with diacritics (precomposed or combining).
fn has_vietnamese_letters(text: &str) -> bool {
    text.chars().flat_map(char::to_lowercase).any(|c| {
        ('\u{300}'..='\u{36f}').contains(&c) || GROUPS.iter().any(|(set, _)| set.contains(c))
    })
}

/// Lower-cases, strips Vietnamese diacritics (precomposed or combining) and collapses
/// everything that is not a letter or digit into single spaces.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            continue; // combining mark of a decomposed letter
        }
        let base = GROUPS
            .iter()
            .find(|(set, _)| set.contains(c))
            .map_or(c, |(_, b)| *b);
        if base.is_alphanumeric() {
            out.push(base);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim().to_owned()
}

/// The quick replies: every topic, a human, and "no thanks".
fn menu(lang: Lang) -> Vec<Choice> {
    let mut choices: Vec<Choice> = TOPICS
        .iter()
        .map(|t| Choice {
            label: match lang {
                Lang::Vi => t.label_vi,
                Lang::En => t.label_en,
            }
            .into(),
            value: format!("{PB_TOPIC_PREFIX}{}", t.id),
        })
        .collect();
    let (agent, done) = match lang {
        Lang::Vi => ("Gặp nhân viên", "Không, cảm ơn"),
        Lang::En => ("Talk to an agent", "No, thanks"),
    };
    choices.push(Choice {
        label: agent.into(),
        value: PB_AGENT.into(),
    });
    choices.push(Choice {
        label: done.into(),
        value: PB_DONE.into(),
    });
    choices
}

/// `actions`, then a prompt with the menu as quick replies; free text stays welcome.
fn reply_with_menu(
    mut actions: Vec<BotAction>,
    prompt: &str,
    lang: Lang,
    slots: Slots,
) -> Result<TurnResult, PluginError> {
    let options = menu(lang);
    actions.push(BotAction::Reply(vec![Content::Choices(Choices {
        prompt: prompt.into(),
        options: options.clone(),
    })]));
    Ok(TurnResult {
        actions,
        expect: Some(ExpectedInput {
            kind: InputKind::FreeText,
            choices: options,
            validation: None,
            timeout_ms: None,
            reprompt: None,
        }),
        slots: json::to(&slots)?,
    })
}

/// Hands off to the support queue with a summary for the agent: language, topics, misses,
/// and the page a web visitor is on.
fn handoff(lang: Lang, reason: &str, slots: &Slots, s: &Session) -> Vec<BotAction> {
    let text = match lang {
        Lang::Vi => "Mình đang chuyển bạn tới nhân viên hỗ trợ, bạn chờ một chút nhé.",
        Lang::En => "I'm connecting you to a member of our support team, one moment please.",
    };
    vec![
        BotAction::Reply(vec![Content::Text(text.into())]),
        BotAction::Handoff(Handoff {
            queue: SUPPORT_QUEUE.into(),
            reason: reason.into(),
            priority: 5,
            summary: Some(format!(
                "FAQ bot ({}): topics answered {:?}, {} message(s) not understood{}",
                if lang == Lang::Vi { "vi" } else { "en" },
                slots.answered,
                slots.misses,
                s.page
                    .as_ref()
                    .map(|p| format!(", on {}", p.url))
                    .unwrap_or_default()
            )),
        }),
    ]
}

fn finish(lang: Lang, outcome: &str) -> Vec<BotAction> {
    let text = match lang {
        Lang::Vi => "Cảm ơn bạn đã liên hệ! Chúc bạn một ngày tốt lành.",
        Lang::En => "Thanks for reaching out! Have a great day.",
    };
    vec![
        BotAction::Reply(vec![Content::Text(text.into())]),
        BotAction::End(EndSpec {
            outcome: outcome.into(),
            send_csat: true,
        }),
    ]
}

weft_guest::export_chatbot_flow!(FaqBot);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::serde_json;
    use weft_guest::types::Profile;

    fn session(slots: &str, locale: Option<&str>) -> Session {
        Session {
            session_id: "s1".into(),
            conversation_id: "c1".into(),
            channel: ChannelKind::ZaloOa,
            profile: Profile {
                profile_id: "p1".into(),
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

    fn text(t: &str) -> TurnTrigger {
        TurnTrigger::Input(UserInput::Text(t.into()))
    }

    fn replies(r: &TurnResult) -> String {
        r.actions
            .iter()
            .filter_map(|a| match a {
                BotAction::Reply(c) => Some(format!("{c:?}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn folds_vietnamese_diacritics() {
        assert_eq!(fold("Giờ MỞ cửa?"), "gio mo cua");
        assert_eq!(fold("Đổi   trả!!"), "doi tra");
        // Decomposed form: "ở" as o + horn + hook.
        assert_eq!(fold("mo\u{31b}\u{309} cu\u{300}a"), "mo cua");
    }

    #[test]
    fn start_greets_with_quick_replies() {
        let r = FaqBot::turn(session("{}", Some("vi-VN")), TurnTrigger::Start(None)).unwrap();
        assert!(replies(&r).contains("Xin chào"));
        assert_eq!(r.expect.unwrap().choices.len(), TOPICS.len() + 2);
    }

    #[test]
    fn answers_vietnamese_and_english_keywords() {
        let r = FaqBot::turn(session("{}", None), text("Cho hỏi giờ mở cửa?")).unwrap();
        assert!(replies(&r).contains("8:00"), "{}", replies(&r));
        let r = FaqBot::turn(session("{}", Some("en")), text("what about shipping")).unwrap();
        assert!(replies(&r).contains("Delivery"), "{}", replies(&r));
        let r = FaqBot::turn(
            session("{}", None),
            TurnTrigger::Input(UserInput::Postback("topic:returns".into())),
        )
        .unwrap();
        assert!(replies(&r).contains("7 ngày"), "{}", replies(&r));
    }

    #[test]
    fn asking_for_a_human_hands_off_to_support() {
        for words in ["cho mình gặp nhân viên", "agent please"] {
            let r = FaqBot::turn(session("{}", None), text(words)).unwrap();
            let handoff = r.actions.iter().find_map(|a| match a {
                BotAction::Handoff(h) => Some(h),
                _ => None,
            });
            assert_eq!(handoff.unwrap().queue, "support", "{words}");
        }
    }

    #[test]
    fn second_miss_hands_off() {
        let r = FaqBot::turn(session("{}", None), text("blah")).unwrap();
        assert!(!r.actions.iter().any(|a| matches!(a, BotAction::Handoff(_))));
        let slots: serde_json::Value = serde_json::from_str(&r.slots).unwrap();
        assert_eq!(slots["misses"], 1);
        let r = FaqBot::turn(session(&r.slots, None), text("blah blah")).unwrap();
        assert!(r.actions.iter().any(|a| matches!(a, BotAction::Handoff(_))));
    }

    #[test]
    fn no_thanks_ends_with_csat() {
        let r = FaqBot::turn(session("{}", None), text("Không, cảm ơn")).unwrap();
        assert!(r.actions.iter().any(|a| matches!(
            a,
            BotAction::End(EndSpec {
                send_csat: true,
                ..
            })
        )));
        let r = FaqBot::turn(
            session("{}", None),
            TurnTrigger::HandoffEnded("resolved".into()),
        )
        .unwrap();
        assert_eq!(
            r.actions,
            [BotAction::End(EndSpec {
                outcome: "resolved".into(),
                send_csat: true
            })]
        );
    }
}
