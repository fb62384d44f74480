//! Example chatbot flow: helps a customer whose payment failed. Started by a
//! `Payment Failed` event (or a keyword, in which case it first asks for the order
//! number), it explains what happened in Vietnamese or English and offers a card: retry
//! the payment through a link, pick another payment method, or talk to the `payments`
//! queue. It hands off on request or after two messages it did not understand, thanks the
//! customer who says they paid, and nudges once after 15 minutes of silence.
//!
//! Reads one setting, `retry_url_base`, to build the retry link when the event carries
//! none. Everything it remembers lives in the session slots.

use serde::{Deserialize, Serialize};
use weft_guest::clock;
use weft_guest::config;
use weft_guest::flow::{
    BotAction, EmittedEvent, EndSpec, ExpectedInput, FlowManifest, Guest, Handoff, InputKind,
    PluginError, Reminder, Session, TurnResult, TurnTrigger, UserInput,
};
use weft_guest::json::{self, json, Value};
use weft_guest::types::{Button, ButtonAction, Card, ChannelKind, Choice, Choices, Content, Event};

// A call allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// Agent queue for handoffs: the payments team can see orders and the payment provider.
const PAYMENTS_QUEUE: &str = "payments";
/// Handoff priority: revenue at risk, but no emergency, so the middle of 0 to 9.
const HANDOFF_PRIORITY: u8 = 5;
/// Messages the bot did not understand in a session before it hands off: two show it cannot help.
const MAX_MISSES: u32 = 2;
/// Id of the reminder, delivered back as the `timer` trigger.
const NUDGE_ID: &str = "nudge";
/// Silence before the reminder: time enough to finish a retry, soon enough to remember the order.
const NUDGE_AFTER_MS: u64 = clock::minutes(15);
/// Postback of the "other payment methods" button; the host returns it as a postback input.
const PB_OTHER: &str = "pay:other";
/// Postback of the "talk to an agent" button; the host returns it as a postback input.
const PB_AGENT: &str = "pay:agent";
/// Labels of the "other payment methods" button, Vietnamese then English; typed, they count too.
const OTHER_LABELS: [&str; 2] = ["Phương thức khác", "Other payment methods"];
/// Labels of the "talk to an agent" button, Vietnamese then English (both hold an agent phrase).
const AGENT_LABELS: [&str; 2] = ["Gặp nhân viên", "Talk to an agent"];
/// Setting that turns an order id into a retry link when the event carries no `retry_url`.
const RETRY_URL_BASE_KEY: &str = "retry_url_base";
/// Currency of an event without `currency`: the platform's home market is Vietnam.
const DEFAULT_CURRENCY: &str = "VND";
/// Currencies shown without decimals, because they have no minor unit in practice.
const ZERO_DECIMAL_CURRENCIES: &[&str] = &["VND", "JPY", "KRW"];
/// Longest order number kept: longer tokens are not order numbers, and it bounds the slots.
const MAX_ORDER_ID_CHARS: usize = 64;
/// Phrases asking for a human, folded (lower case, no diacritics), matched on whole words.
const AGENT_PHRASES: &[&str] = &["nhan vien", "agent", "human"];
/// Phrases saying the payment went through, folded, matched on whole words.
const PAID_PHRASES: &[&str] = &["paid", "da thanh toan"];
/// Words that turn a "paid" phrase into its opposite ("not paid", "chưa thanh toán"),
/// folded: a payment must never be closed as resolved on a negated claim.
const NEGATIONS: &[&str] = &[
    "not", "never", "haven t", "hasn t", "didn t", "can t", "cannot", "chua", "khong",
];

/// Slots kept by the host between turns.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Slots {
    /// `vi` or `en`, fixed on the first turn.
    lang: Option<Lang>,
    /// The order whose payment failed; `None` until the event or the customer tells it.
    order_id: Option<String>,
    /// The amount that failed, in `currency`, if the event told it.
    amount: Option<f64>,
    /// ISO 4217 code of `amount`, upper case.
    currency: Option<String>,
    /// Link that retries the payment, from the event or built from `retry_url_base`.
    retry_url: Option<String>,
    /// Messages the bot did not understand in this session.
    misses: u32,
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

/// What the customer's message asks for.
enum Intent {
    /// Talk to a human.
    Agent,
    /// See other payment methods.
    OtherMethod,
    /// The customer says the payment went through.
    Paid,
    /// An order number, while the bot asks for one.
    OrderId(String),
    /// Anything else.
    Unknown,
}

/// The failed-payment flow.
struct PaymentHelper;

impl Guest for PaymentHelper {
    fn describe() -> FlowManifest {
        FlowManifest {
            name: "Payment helper".into(),
            start_keywords: ["thanh toán", "thanh toan", "payment", "pay"]
                .map(String::from)
                .to_vec(),
            start_events: vec!["Payment Failed".into()],
            channels: vec![
                ChannelKind::WebChat,
                ChannelKind::ZaloOa,
                ChannelKind::Messenger,
                ChannelKind::Whatsapp,
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
            TurnTrigger::Start(event) => start(&mut slots, event.as_ref(), lang)?,
            TurnTrigger::Input(input) => answer(&mut slots, &input, lang)?,
            TurnTrigger::Timer(id) if id == NUDGE_ID => nudge(&slots, lang),
            // Not ours: keep waiting for the same answer.
            TurnTrigger::Timer(_) => (vec![], Some(waiting_for(&slots, lang))),
            TurnTrigger::HandoffEnded(resolution) => {
                let outcome = if resolution.is_empty() {
                    "handoff".to_owned()
                } else {
                    resolution
                };
                (vec![end(&outcome, true)], None)
            }
        };
        Ok(TurnResult {
            actions,
            expect,
            slots: json::to(&slots)?,
        })
    }
}

/// Starts the flow: from a `Payment Failed` event with an order id, the offer card; from
/// a keyword (or an event without an order id), the question for the order number.
fn start(slots: &mut Slots, event: Option<&Event>, lang: Lang) -> Result<Turn, PluginError> {
    if let Some(event) = event {
        let props = event.properties_value();
        slots.order_id = json::text_at(&props, "order_id").and_then(|id| order_id_from(&id));
        slots.amount = amount_from(props.get("amount"));
        slots.currency = Some(
            json::str_at(&props, "currency")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .unwrap_or(DEFAULT_CURRENCY)
                .to_uppercase(),
        );
        slots.retry_url = json::str_at(&props, "retry_url")
            .map(str::trim)
            .filter(|u| is_web_url(u))
            .map(String::from);
    }
    if slots.order_id.is_some() {
        offer(slots, lang)
    } else {
        let ask = lang.pick(
            "Mình có thể giúp bạn về việc thanh toán. Bạn cho mình xin mã đơn hàng nhé?",
            "I can help with your payment. What is your order number?",
        );
        Ok((
            vec![
                BotAction::Reply(vec![Content::Text(ask.into())]),
                schedule_nudge(),
            ],
            Some(expect_order_id(lang)),
        ))
    }
}

/// Answers a message from the customer.
fn answer(slots: &mut Slots, input: &UserInput, lang: Lang) -> Result<Turn, PluginError> {
    match understand(input, slots.order_id.is_none()) {
        Intent::Agent => Ok(handoff(slots, lang, "customer asked for an agent")),
        Intent::OtherMethod => Ok(other_methods(slots, lang)),
        Intent::Paid => paid(slots, lang),
        Intent::OrderId(id) => {
            slots.order_id = Some(id);
            offer(slots, lang)
        }
        Intent::Unknown => {
            slots.misses += 1;
            if slots.misses >= MAX_MISSES {
                return Ok(handoff(slots, lang, "the bot did not understand twice"));
            }
            let content = if slots.order_id.is_none() {
                Content::Text(
                    lang.pick(
                        "Mình chưa thấy mã đơn hàng. Bạn gửi giúp mình mã đơn (ví dụ DH1001) nhé.",
                        "I couldn't find an order number there. Please send it (for example DH1001).",
                    )
                    .into(),
                )
            } else {
                Content::Choices(Choices {
                    prompt: lang
                        .pick(
                            "Xin lỗi, mình chưa hiểu. Bạn chọn một mục bên dưới, hoặc nhắn “đã thanh toán” nếu bạn đã thanh toán lại nhé.",
                            "Sorry, I didn't get that. Pick an option below, or write “paid” once you have paid.",
                        )
                        .into(),
                    options: choices(lang),
                })
            };
            Ok((
                vec![BotAction::Reply(vec![content]), schedule_nudge()],
                Some(waiting_for(slots, lang)),
            ))
        }
    }
}

/// Classifies the input; free text counts as an order number only while the bot asks
/// for one (`wants_order_id`).
fn understand(input: &UserInput, wants_order_id: bool) -> Intent {
    let text = match input {
        UserInput::Postback(p) if p == PB_AGENT => return Intent::Agent,
        UserInput::Postback(p) if p == PB_OTHER => return Intent::OtherMethod,
        UserInput::Text(t) => t,
        UserInput::Postback(_)
        | UserInput::Media(_)
        | UserInput::Location(_)
        | UserInput::Rating(_) => return Intent::Unknown,
    };
    let folded = fold(text);
    // A button label typed out (or passed through as text) counts as the button.
    if OTHER_LABELS.iter().any(|l| fold(l) == folded) {
        return Intent::OtherMethod;
    }
    let padded = format!(" {folded} ");
    let has = |phrase: &&str| padded.contains(&format!(" {phrase} "));
    if AGENT_PHRASES.iter().any(has) {
        return Intent::Agent;
    }
    if PAID_PHRASES.iter().any(has) && !NEGATIONS.iter().any(has) {
        return Intent::Paid;
    }
    if wants_order_id {
        if let Some(id) = text.split_whitespace().find_map(order_id_from) {
            return Intent::OrderId(id);
        }
    }
    Intent::Unknown
}

/// The order number in a token: the token without surrounding punctuation (`#DH1001,` is
/// `DH1001`), if it has a digit and is not too long.
fn order_id_from(token: &str) -> Option<String> {
    let id = token.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_');
    (id.chars().any(|c| c.is_ascii_digit()) && id.chars().count() <= MAX_ORDER_ID_CHARS)
        .then(|| id.to_owned())
}

/// The `amount` property: a non-negative number, or a string holding one.
fn amount_from(value: Option<&Value>) -> Option<f64> {
    let amount = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (amount.is_finite() && amount >= 0.0).then_some(amount)
}

/// Whether `url` is an absolute http(s) link, the only kind a URL button can open.
fn is_web_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// The retry link for `order_id` from the `retry_url_base` setting, if it is set.
fn retry_url_from_config(order_id: &str) -> Option<String> {
    let base = config::get(RETRY_URL_BASE_KEY)?;
    let base = base.trim();
    if !is_web_url(base) {
        return None;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}order_id={}", percent_encode(order_id)))
}

/// Percent-encodes everything but the URL-unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Explains the failed payment and offers the card; emits `Payment Help Offered`.
fn offer(slots: &mut Slots, lang: Lang) -> Result<Turn, PluginError> {
    let order_id = slots.order_id.clone().unwrap_or_default();
    if slots.retry_url.is_none() {
        slots.retry_url = retry_url_from_config(&order_id);
    }
    let amount = formatted_amount(slots, lang);
    let what = match (&amount, lang) {
        (Some(a), Lang::Vi) => {
            format!("Rất tiếc, khoản thanh toán {a} cho đơn hàng {order_id} chưa thành công.")
        }
        (None, Lang::Vi) => {
            format!("Rất tiếc, khoản thanh toán cho đơn hàng {order_id} chưa thành công.")
        }
        (Some(a), Lang::En) => {
            format!("Sorry, your payment of {a} for order {order_id} did not go through.")
        }
        (None, Lang::En) => {
            format!("Sorry, your payment for order {order_id} did not go through.")
        }
    };
    let next = if slots.retry_url.is_some() {
        lang.pick(
            "Bạn có thể thử thanh toán lại, chọn phương thức khác hoặc gặp nhân viên. Thanh toán xong, bạn nhắn “đã thanh toán” cho mình nhé.",
            "You can retry the payment, choose another method or talk to an agent. Once you have paid, just write “paid”.",
        )
    } else {
        lang.pick(
            "Bạn có thể chọn phương thức thanh toán khác hoặc gặp nhân viên.",
            "You can choose another payment method or talk to an agent.",
        )
    };

    let mut buttons = Vec::with_capacity(3);
    if let Some(url) = &slots.retry_url {
        buttons.push(Button {
            label: lang.pick("Thử thanh toán lại", "Retry payment").into(),
            action: ButtonAction::Url(url.clone()),
        });
    }
    buttons.extend(choices(lang).into_iter().map(|c| Button {
        label: c.label,
        action: ButtonAction::Postback(c.value),
    }));
    let card = Card {
        title: match lang {
            Lang::Vi => format!("Thanh toán đơn hàng {order_id}"),
            Lang::En => format!("Payment for order {order_id}"),
        },
        subtitle: amount,
        image_url: None,
        buttons,
    };

    let actions = vec![
        BotAction::Reply(vec![
            Content::Text(format!("{what} {next}")),
            Content::Card(card),
        ]),
        BotAction::Emit(EmittedEvent {
            name: "Payment Help Offered".into(),
            properties: json::to(&json!({ "order_id": order_id }))?,
        }),
        schedule_nudge(),
    ];
    Ok((actions, Some(expect_choice(lang))))
}

/// The amount of the failed payment, formatted for `lang`, if the event told it.
fn formatted_amount(slots: &Slots, lang: Lang) -> Option<String> {
    let currency = slots.currency.as_deref().unwrap_or(DEFAULT_CURRENCY);
    slots.amount.map(|a| format_amount(a, currency, lang))
}

/// `amount` as a reader of `lang` writes it: `1.250.000 ₫` in Vietnamese, `1,250,000 VND`
/// in English; two decimals when a currency with a minor unit has a fraction (`12.50 USD`).
fn format_amount(amount: f64, currency: &str, lang: Lang) -> String {
    let (group_sep, decimal_sep) = match lang {
        Lang::Vi => ('.', ','),
        Lang::En => (',', '.'),
    };
    let decimals = if ZERO_DECIMAL_CURRENCIES.contains(&currency) {
        0
    } else {
        2
    };
    let unit = 10u64.pow(decimals);
    // Callers pass a finite, non-negative amount; `as` saturates anything larger than u64.
    let minor = (amount * unit as f64).round() as u64;
    let (whole, fraction) = (minor / unit, minor % unit);

    let digits = whole.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 8);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(group_sep);
        }
        out.push(d);
    }
    if fraction != 0 {
        out.push(decimal_sep);
        out.push_str(&format!("{fraction:0width$}", width = decimals as usize));
    }
    if lang == Lang::Vi && currency == "VND" {
        out.push_str(" ₫");
    } else {
        out.push(' ');
        out.push_str(currency);
    }
    out
}

/// The two quick replies: other payment methods and a human.
fn choices(lang: Lang) -> Vec<Choice> {
    vec![
        Choice {
            label: lang.pick(OTHER_LABELS[0], OTHER_LABELS[1]).into(),
            value: PB_OTHER.into(),
        },
        Choice {
            label: lang.pick(AGENT_LABELS[0], AGENT_LABELS[1]).into(),
            value: PB_AGENT.into(),
        },
    ]
}

/// Waits for one of the two choices, as free text: the host would re-prompt anything that
/// is not a choice, but "đã thanh toán" or "cho tôi gặp nhân viên" typed here must reach
/// the flow (it matches typed labels itself).
fn expect_choice(lang: Lang) -> ExpectedInput {
    ExpectedInput {
        kind: InputKind::FreeText,
        choices: choices(lang),
        validation: None,
        timeout_ms: None,
        reprompt: Some(
            lang.pick(
                "Bạn chọn “Phương thức khác” hoặc “Gặp nhân viên” giúp mình nhé.",
                "Please pick “Other payment methods” or “Talk to an agent”.",
            )
            .into(),
        ),
    }
}

/// Waits for an order number.
fn expect_order_id(lang: Lang) -> ExpectedInput {
    ExpectedInput {
        kind: InputKind::FreeText,
        choices: vec![],
        validation: None,
        timeout_ms: None,
        reprompt: Some(
            lang.pick(
                "Bạn gửi giúp mình mã đơn hàng (ví dụ DH1001) nhé.",
                "Please send your order number (for example DH1001).",
            )
            .into(),
        ),
    }
}

/// What the bot waits for at this point: the order number until it has one, then a choice.
fn waiting_for(slots: &Slots, lang: Lang) -> ExpectedInput {
    if slots.order_id.is_none() {
        expect_order_id(lang)
    } else {
        expect_choice(lang)
    }
}

/// The reminder sent after a quiet spell; any message from the customer cancels it.
fn schedule_nudge() -> BotAction {
    BotAction::Schedule(Reminder {
        id: NUDGE_ID.into(),
        after_ms: NUDGE_AFTER_MS,
        cancel_on_user_message: true,
    })
}

/// The reminder itself: the retry link when there is one; schedules nothing more.
fn nudge(slots: &Slots, lang: Lang) -> Turn {
    let text = match (&slots.order_id, &slots.retry_url, lang) {
        (None, _, _) => lang
            .pick(
                "Bạn còn đó không? Bạn gửi mã đơn hàng để mình hỗ trợ thanh toán nhé.",
                "Are you still there? Send me your order number and I'll help with the payment.",
            )
            .to_owned(),
        (Some(id), Some(url), Lang::Vi) => format!(
            "Nhắc bạn: đơn hàng {id} vẫn chưa được thanh toán. Bạn có thể thanh toán lại tại đây: {url}"
        ),
        (Some(id), Some(url), Lang::En) => format!(
            "A quick reminder: order {id} is still unpaid. You can retry the payment here: {url}"
        ),
        (Some(id), None, Lang::Vi) => format!(
            "Nhắc bạn: đơn hàng {id} vẫn chưa được thanh toán. Bạn cần mình hỗ trợ gì thêm không?"
        ),
        (Some(id), None, Lang::En) => {
            format!("A quick reminder: order {id} is still unpaid. Can I help with anything else?")
        }
    };
    (
        vec![BotAction::Reply(vec![Content::Text(text)])],
        Some(waiting_for(slots, lang)),
    )
}

/// Hands the conversation to the payments queue.
fn handoff(slots: &Slots, lang: Lang, reason: &str) -> Turn {
    let text = lang.pick(
        "Mình đang chuyển bạn tới nhân viên phụ trách thanh toán, bạn chờ một chút nhé.",
        "An agent from our payments team will join you shortly, one moment please.",
    );
    let summary = match (&slots.order_id, formatted_amount(slots, Lang::En)) {
        (Some(id), Some(amount)) => format!("Payment failed for order {id} ({amount})"),
        (Some(id), None) => format!("Payment failed for order {id}"),
        (None, _) => "Payment failed; order number not given".to_owned(),
    };
    (
        vec![
            BotAction::Reply(vec![Content::Text(text.into())]),
            BotAction::Handoff(Handoff {
                queue: PAYMENTS_QUEUE.into(),
                reason: reason.into(),
                priority: HANDOFF_PRIORITY,
                summary: Some(format!(
                    "{summary}; {} message(s) not understood",
                    slots.misses
                )),
            }),
        ],
        None,
    )
}

/// Lists the other payment methods and ends the session.
fn other_methods(slots: &Slots, lang: Lang) -> Turn {
    let order = match (&slots.order_id, lang) {
        (Some(id), Lang::Vi) => format!("Bạn có thể thanh toán đơn hàng {id} bằng:"),
        (None, Lang::Vi) => "Bạn có thể thanh toán bằng:".to_owned(),
        (Some(id), Lang::En) => format!("You can also pay for order {id} with:"),
        (None, Lang::En) => "You can also pay with:".to_owned(),
    };
    let methods = lang.pick(
        "• Thanh toán khi nhận hàng (COD)\n• Chuyển khoản ngân hàng\n• Ví điện tử MoMo hoặc ZaloPay\nBạn đổi phương thức thanh toán ngay trong trang đơn hàng nhé.",
        "• Cash on delivery (COD)\n• Bank transfer\n• MoMo or ZaloPay e-wallet\nYou can switch the payment method on the order page.",
    );
    (
        vec![
            BotAction::Reply(vec![Content::Text(format!("{order}\n{methods}"))]),
            end("other_method", false),
        ],
        None,
    )
}

/// Thanks the customer who says they paid, emits `Payment Retried` and ends with CSAT.
fn paid(slots: &Slots, lang: Lang) -> Result<Turn, PluginError> {
    let text = match (&slots.order_id, lang) {
        (Some(id), Lang::Vi) => format!("Cảm ơn bạn đã thanh toán lại đơn hàng {id}! Bạn sẽ nhận được xác nhận khi giao dịch hoàn tất."),
        (None, Lang::Vi) => "Cảm ơn bạn đã thanh toán lại! Bạn sẽ nhận được xác nhận khi giao dịch hoàn tất.".to_owned(),
        (Some(id), Lang::En) => format!("Thanks for retrying the payment for order {id}! You'll get a confirmation once it goes through."),
        (None, Lang::En) => "Thanks for retrying the payment! You'll get a confirmation once it goes through.".to_owned(),
    };
    Ok((
        vec![
            BotAction::Reply(vec![Content::Text(text)]),
            BotAction::Emit(EmittedEvent {
                name: "Payment Retried".into(),
                properties: json::to(&json!({ "order_id": slots.order_id }))?,
            }),
            end("resolved", true),
        ],
        None,
    ))
}

/// Ends the session with `outcome`.
fn end(outcome: &str, send_csat: bool) -> BotAction {
    BotAction::End(EndSpec {
        outcome: outcome.into(),
        send_csat,
    })
}

/// Lower-cases, strips Vietnamese diacritics (precomposed or combining) and turns every
/// run of characters that are not letters or digits into one space.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            continue; // a combining mark of a decomposed letter
        }
        let base = match c {
            'đ' => 'd',
            _ if "àáảãạăằắẳẵặâầấẩẫậ".contains(c) => 'a',
            _ if "èéẻẽẹêềếểễệ".contains(c) => 'e',
            _ if "ìíỉĩị".contains(c) => 'i',
            _ if "òóỏõọôồốổỗộơờớởỡợ".contains(c) => 'o',
            _ if "ùúủũụưừứửữự".contains(c) => 'u',
            _ if "ỳýỷỹỵ".contains(c) => 'y',
            _ => c,
        };
        if base.is_alphanumeric() {
            out.push(base);
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim_end().to_owned()
}

weft_guest::export_chatbot_flow!(PaymentHelper);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::serde_json;
    use weft_guest::types::{EventType, Profile};

    /// A session on Zalo OA with `slots` and the conversation `locale`.
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

    /// A `Payment Failed` start with `properties`.
    fn failed(properties: serde_json::Value) -> TurnTrigger {
        TurnTrigger::Start(Some(Event {
            message_id: "m1".into(),
            event_type: EventType::Track,
            name: Some("Payment Failed".into()),
            user_id: Some("u1".into()),
            anonymous_id: None,
            properties: properties.to_string(),
            traits: "{}".into(),
            context: "{}".into(),
            timestamp: 0,
            received_at: 0,
        }))
    }

    /// The usual event: a VND payment with its own retry link.
    fn failed_with_link() -> TurnTrigger {
        failed(serde_json::json!({
            "order_id": "DH1001",
            "amount": 1_250_000,
            "retry_url": "https://shop.example/pay/DH1001",
        }))
    }

    /// Runs a turn on a fresh Vietnamese session with `slots`; no settings.
    fn run(slots: &str, t: TurnTrigger) -> TurnResult {
        config::testing::clear();
        PaymentHelper::turn(session(slots, Some("vi-VN")), t).unwrap()
    }

    /// A typed message.
    fn text(t: &str) -> TurnTrigger {
        TurnTrigger::Input(UserInput::Text(t.into()))
    }

    /// A button press.
    fn postback(p: &str) -> TurnTrigger {
        TurnTrigger::Input(UserInput::Postback(p.into()))
    }

    /// Every reply content of the turn, in order.
    fn contents(r: &TurnResult) -> Vec<&Content> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                BotAction::Reply(c) => Some(c),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every reply of the turn as debug text, for `contains` checks.
    fn replies(r: &TurnResult) -> String {
        format!("{:?}", contents(r))
    }

    /// The card of the turn.
    fn card(r: &TurnResult) -> &Card {
        contents(r)
            .into_iter()
            .find_map(|c| match c {
                Content::Card(card) => Some(card),
                _ => None,
            })
            .expect("a card")
    }

    /// The handoff of the turn, if any.
    fn handoff_of(r: &TurnResult) -> Option<&Handoff> {
        r.actions.iter().find_map(|a| match a {
            BotAction::Handoff(h) => Some(h),
            _ => None,
        })
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
            after_ms: 15 * 60 * 1000,
            cancel_on_user_message: true,
        }))
    }

    /// Slots after an offer for DH1001 (1,250,000 VND) with a retry link.
    fn offered() -> String {
        run("", failed_with_link()).slots
    }

    #[test]
    fn manifest_starts_on_payment_failed_and_payment_keywords() {
        let m = PaymentHelper::describe();
        assert_eq!(m.name, "Payment helper");
        assert_eq!(m.start_events, ["Payment Failed"]);
        assert_eq!(
            m.start_keywords,
            ["thanh toán", "thanh toan", "payment", "pay"]
        );
        assert_eq!(
            m.channels,
            [
                ChannelKind::WebChat,
                ChannelKind::ZaloOa,
                ChannelKind::Messenger,
                ChannelKind::Whatsapp
            ]
        );
        assert_eq!(m.session_timeout_ms, 60 * 60 * 1000);
    }

    #[test]
    fn payment_failed_event_offers_retry_other_methods_and_agent_in_vietnamese() {
        let r = run("", failed_with_link());
        let [Content::Text(t), Content::Card(c)] = contents(&r).as_slice() else {
            panic!("{}", replies(&r))
        };
        assert!(
            t.contains("1.250.000 ₫") && t.contains("DH1001") && t.contains("chưa thành công"),
            "{t}"
        );
        assert_eq!(
            c.buttons,
            [
                Button {
                    label: "Thử thanh toán lại".into(),
                    action: ButtonAction::Url("https://shop.example/pay/DH1001".into()),
                },
                Button {
                    label: "Phương thức khác".into(),
                    action: ButtonAction::Postback("pay:other".into()),
                },
                Button {
                    label: "Gặp nhân viên".into(),
                    action: ButtonAction::Postback("pay:agent".into()),
                },
            ]
        );
        assert_eq!(
            emitted(&r),
            [(
                "Payment Help Offered".to_owned(),
                serde_json::json!({"order_id": "DH1001"})
            )]
        );
        let expect = r.expect.as_ref().unwrap();
        assert_eq!(expect.kind, InputKind::FreeText);
        let values: Vec<_> = expect.choices.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(values, ["pay:other", "pay:agent"]);
        assert!(expect.reprompt.is_some());
        let slots: serde_json::Value = serde_json::from_str(&r.slots).unwrap();
        assert_eq!(slots["order_id"], "DH1001");
        assert_eq!(slots["amount"], 1_250_000.0);
        assert_eq!(slots["currency"], "VND");
        assert_eq!(slots["retry_url"], "https://shop.example/pay/DH1001");
    }

    #[test]
    fn english_session_gets_english_text_amount_and_buttons() {
        config::testing::clear();
        let r = PaymentHelper::turn(session("", Some("en-US")), failed_with_link()).unwrap();
        let text = replies(&r);
        assert!(
            text.contains("1,250,000 VND") && text.contains("did not go through"),
            "{text}"
        );
        let labels: Vec<_> = card(&r).buttons.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            ["Retry payment", "Other payment methods", "Talk to an agent"]
        );
    }

    #[test]
    fn vietnamese_is_the_default_when_no_locale_is_known() {
        config::testing::clear();
        let r = PaymentHelper::turn(session("", None), failed_with_link()).unwrap();
        assert!(replies(&r).contains("chưa thành công"), "{}", replies(&r));
    }

    #[test]
    fn start_schedules_a_fifteen_minute_nudge_cancelled_by_any_message() {
        assert!(schedules_nudge(&run("", failed_with_link())));
        assert!(schedules_nudge(&run("", TurnTrigger::Start(None))));
    }

    #[test]
    fn amounts_are_grouped_by_thousands_in_the_reader_s_style() {
        assert_eq!(format_amount(1_250_000.0, "VND", Lang::Vi), "1.250.000 ₫");
        assert_eq!(format_amount(1_250_000.0, "VND", Lang::En), "1,250,000 VND");
        assert_eq!(format_amount(999.0, "VND", Lang::Vi), "999 ₫");
        assert_eq!(format_amount(0.0, "VND", Lang::En), "0 VND");
        assert_eq!(format_amount(1234.5, "USD", Lang::En), "1,234.50 USD");
        assert_eq!(format_amount(1234.5, "USD", Lang::Vi), "1.234,50 USD");
        assert_eq!(format_amount(20.0, "USD", Lang::En), "20 USD");
    }

    #[test]
    fn currency_defaults_to_vnd_and_is_upper_cased() {
        let r = run(
            "",
            failed(serde_json::json!({"order_id": "A1", "amount": 12.5, "currency": "usd"})),
        );
        assert!(replies(&r).contains("12,50 USD"), "{}", replies(&r));
        let r = run(
            "",
            failed(serde_json::json!({"order_id": "A1", "amount": "500000"})),
        );
        assert!(replies(&r).contains("500.000 ₫"), "{}", replies(&r));
    }

    #[test]
    fn retry_url_is_built_from_the_retry_url_base_setting_when_the_event_has_none() {
        config::testing::clear();
        config::testing::set("retry_url_base", "https://shop.example/pay");
        let r = PaymentHelper::turn(
            session("", Some("vi")),
            failed(serde_json::json!({"order_id": "DH 7/1", "amount": 99000})),
        )
        .unwrap();
        config::testing::clear();
        assert_eq!(
            card(&r).buttons[0].action,
            ButtonAction::Url("https://shop.example/pay?order_id=DH%207%2F1".into())
        );
        let slots: serde_json::Value = serde_json::from_str(&r.slots).unwrap();
        assert_eq!(
            slots["retry_url"],
            "https://shop.example/pay?order_id=DH%207%2F1"
        );
    }

    #[test]
    fn retry_url_base_with_a_query_gets_the_order_id_appended_with_an_ampersand() {
        config::testing::clear();
        config::testing::set("retry_url_base", "https://shop.example/pay?src=chat");
        let r = PaymentHelper::turn(
            session("", Some("vi")),
            failed(serde_json::json!({"order_id": "DH1"})),
        )
        .unwrap();
        config::testing::clear();
        assert_eq!(
            card(&r).buttons[0].action,
            ButtonAction::Url("https://shop.example/pay?src=chat&order_id=DH1".into())
        );
    }

    #[test]
    fn the_event_s_own_retry_url_wins_over_the_setting() {
        config::testing::clear();
        config::testing::set("retry_url_base", "https://other.example/pay");
        let r = PaymentHelper::turn(session("", Some("vi")), failed_with_link()).unwrap();
        config::testing::clear();
        assert_eq!(
            card(&r).buttons[0].action,
            ButtonAction::Url("https://shop.example/pay/DH1001".into())
        );
    }

    #[test]
    fn without_retry_url_or_setting_the_card_has_no_url_button() {
        let r = run("", failed(serde_json::json!({"order_id": "DH1001"})));
        assert!(
            card(&r)
                .buttons
                .iter()
                .all(|b| matches!(b.action, ButtonAction::Postback(_))),
            "{:?}",
            card(&r)
        );
        assert_eq!(card(&r).buttons.len(), 2);
        assert!(!replies(&r).contains("₫"), "no amount: {}", replies(&r));
    }

    #[test]
    fn keyword_start_asks_for_the_order_number_as_free_text() {
        let r = run("", TurnTrigger::Start(None));
        assert!(replies(&r).contains("mã đơn hàng"), "{}", replies(&r));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        assert!(emitted(&r).is_empty());
    }

    #[test]
    fn order_number_after_keyword_start_gets_the_card_without_amount() {
        let asked = run("", TurnTrigger::Start(None));
        config::testing::set("retry_url_base", "https://shop.example/pay");
        let r = PaymentHelper::turn(
            session(&asked.slots, Some("vi")),
            text("Mã đơn của mình là #DH2002."),
        )
        .unwrap();
        config::testing::clear();
        assert_eq!(card(&r).subtitle, None);
        assert_eq!(
            card(&r).buttons[0].action,
            ButtonAction::Url("https://shop.example/pay?order_id=DH2002".into())
        );
        assert!(replies(&r).contains("DH2002"), "{}", replies(&r));
        assert_eq!(
            emitted(&r),
            [(
                "Payment Help Offered".to_owned(),
                serde_json::json!({"order_id": "DH2002"})
            )]
        );
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        assert!(schedules_nudge(&r));
    }

    #[test]
    fn event_without_order_id_asks_for_it_and_keeps_the_amount() {
        let r = run("", failed(serde_json::json!({"amount": 300000})));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        let r = run(&r.slots, text("DH3003"));
        assert_eq!(card(&r).subtitle.as_deref(), Some("300.000 ₫"));
    }

    #[test]
    fn text_without_a_digit_is_not_taken_as_an_order_number() {
        let asked = run("", TurnTrigger::Start(None));
        let r = run(&asked.slots, text("mình không nhớ"));
        assert!(!r
            .actions
            .iter()
            .any(|a| matches!(a, BotAction::Emit(_) | BotAction::Handoff(_))));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        let slots: serde_json::Value = serde_json::from_str(&r.slots).unwrap();
        assert_eq!(slots["misses"], 1);
        assert_eq!(slots["order_id"], serde_json::Value::Null);
    }

    #[test]
    fn agent_postback_hands_off_to_the_payments_queue() {
        let r = run(&offered(), postback("pay:agent"));
        let h = handoff_of(&r).expect("a handoff");
        assert_eq!(h.queue, "payments");
        assert_eq!(h.priority, 5);
        assert_eq!(h.reason, "customer asked for an agent");
        assert!(
            h.summary
                .as_deref()
                .unwrap()
                .starts_with("Payment failed for order DH1001 (1,250,000 VND)"),
            "{:?}",
            h.summary
        );
        assert!(replies(&r).contains("nhân viên"), "{}", replies(&r));
        assert_eq!(r.expect, None);
    }

    #[test]
    fn asking_for_a_human_in_words_hands_off_to_the_payments_queue() {
        for words in [
            "cho mình gặp nhân viên",
            "gap nhan vien",
            "I want an agent",
            "human please",
        ] {
            let r = run(&offered(), text(words));
            assert_eq!(
                handoff_of(&r).map(|h| h.queue.as_str()),
                Some("payments"),
                "{words}"
            );
        }
    }

    #[test]
    fn agent_request_before_the_order_number_hands_off_without_one() {
        let asked = run("", TurnTrigger::Start(None));
        let r = run(&asked.slots, text("nhân viên"));
        let h = handoff_of(&r).expect("a handoff");
        assert!(
            h.summary
                .as_deref()
                .unwrap()
                .contains("order number not given"),
            "{:?}",
            h.summary
        );
    }

    #[test]
    fn other_methods_postback_lists_cod_bank_transfer_and_wallets_then_ends() {
        let r = run(&offered(), postback("pay:other"));
        let text = replies(&r);
        assert!(
            text.contains("COD")
                && text.contains("Chuyển khoản")
                && text.contains("MoMo")
                && text.contains("ZaloPay"),
            "{text}"
        );
        assert_eq!(
            r.actions.last(),
            Some(&BotAction::End(EndSpec {
                outcome: "other_method".into(),
                send_csat: false
            }))
        );
        assert_eq!(r.expect, None);
    }

    #[test]
    fn typed_button_labels_count_as_the_buttons() {
        let r = run(&offered(), text("Phương thức khác"));
        assert!(replies(&r).contains("COD"), "{}", replies(&r));
        let r = run(&offered(), text("other payment methods"));
        assert!(replies(&r).contains("COD"), "{}", replies(&r));
        let r = run(&offered(), text("Gặp nhân viên"));
        assert!(handoff_of(&r).is_some(), "{:?}", r.actions);
    }

    #[test]
    fn saying_paid_thanks_emits_payment_retried_and_ends_resolved_with_csat() {
        for words in [
            "paid",
            "Mình đã thanh toán rồi",
            "da thanh toan",
            "I paid it",
        ] {
            let r = run(&offered(), text(words));
            assert!(replies(&r).contains("Cảm ơn"), "{words}: {}", replies(&r));
            assert_eq!(
                emitted(&r),
                [(
                    "Payment Retried".to_owned(),
                    serde_json::json!({"order_id": "DH1001"})
                )],
                "{words}"
            );
            assert_eq!(
                r.actions.last(),
                Some(&BotAction::End(EndSpec {
                    outcome: "resolved".into(),
                    send_csat: true
                })),
                "{words}"
            );
        }
    }

    #[test]
    fn a_negated_paid_is_not_taken_as_paid() {
        for words in [
            "chưa thanh toán được",
            "đã thanh toán nhưng không được",
            "not paid yet",
            "I haven't paid",
        ] {
            let r = run(&offered(), text(words));
            assert!(
                !r.actions.iter().any(|a| matches!(a, BotAction::End(_))),
                "{words}: {:?}",
                r.actions
            );
        }
    }

    #[test]
    fn first_miss_reprompts_with_the_choices_and_counts_it() {
        let r = run(&offered(), text("hả?"));
        let [Content::Choices(c)] = contents(&r).as_slice() else {
            panic!("{}", replies(&r))
        };
        let values: Vec<_> = c.options.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(values, ["pay:other", "pay:agent"]);
        assert!(handoff_of(&r).is_none());
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
        assert!(schedules_nudge(&r));
        let slots: serde_json::Value = serde_json::from_str(&r.slots).unwrap();
        assert_eq!(slots["misses"], 1);
    }

    #[test]
    fn second_miss_hands_off_to_the_payments_queue() {
        let first = run(&offered(), text("hả?"));
        let r = run(&first.slots, TurnTrigger::Input(UserInput::Rating(3)));
        let h = handoff_of(&r).expect("a handoff");
        assert_eq!(h.queue, "payments");
        assert_eq!(h.reason, "the bot did not understand twice");
        assert!(
            h.summary.as_deref().unwrap().contains("2 message(s)"),
            "{:?}",
            h.summary
        );
    }

    #[test]
    fn nudge_timer_reminds_with_the_retry_link_and_schedules_nothing_more() {
        let r = run(&offered(), TurnTrigger::Timer("nudge".into()));
        let [Content::Text(t)] = contents(&r).as_slice() else {
            panic!("{}", replies(&r))
        };
        assert!(
            t.contains("DH1001") && t.contains("https://shop.example/pay/DH1001"),
            "{t}"
        );
        assert!(!r
            .actions
            .iter()
            .any(|a| matches!(a, BotAction::Schedule(_))));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
    }

    #[test]
    fn nudge_without_a_link_or_an_order_repeats_what_the_bot_waits_for() {
        let no_link = run("", failed(serde_json::json!({"order_id": "DH9"}))).slots;
        let r = run(&no_link, TurnTrigger::Timer("nudge".into()));
        assert!(replies(&r).contains("DH9"), "{}", replies(&r));
        let asked = run("", TurnTrigger::Start(None));
        let r = run(&asked.slots, TurnTrigger::Timer("nudge".into()));
        assert!(replies(&r).contains("mã đơn hàng"), "{}", replies(&r));
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
    }

    #[test]
    fn other_timers_do_nothing() {
        let r = run(&offered(), TurnTrigger::Timer("something-else".into()));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        assert_eq!(r.expect.as_ref().unwrap().kind, InputKind::FreeText);
    }

    #[test]
    fn handoff_ended_ends_with_the_resolution_and_csat() {
        let r = run(&offered(), TurnTrigger::HandoffEnded("refunded".into()));
        assert_eq!(
            r.actions,
            [BotAction::End(EndSpec {
                outcome: "refunded".into(),
                send_csat: true
            })]
        );
        let r = run(&offered(), TurnTrigger::HandoffEnded(String::new()));
        assert_eq!(
            r.actions,
            [BotAction::End(EndSpec {
                outcome: "handoff".into(),
                send_csat: true
            })]
        );
    }

    #[test]
    fn folds_vietnamese_diacritics_and_punctuation() {
        assert_eq!(fold("Đã THANH TOÁN!!"), "da thanh toan");
        assert_eq!(fold("  nhân   viên? "), "nhan vien");
        // Decomposed form: "á" as a + acute accent.
        assert_eq!(fold("toa\u{301}n"), "toan");
    }
}
