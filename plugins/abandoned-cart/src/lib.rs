//! Example journey rule: an hour after a product lands in a cart, remind the customer over
//! Zalo OA (falling back to ZNS, then SMS); gold-tier customers also get a 10% code.
//!
//! Deterministic: no clock, no randomness, no host calls. Everything comes from the step
//! input, so a retried step returns the same commands and the same intent id.

use serde::{Deserialize, Serialize};
use weft_guest::clock;
use weft_guest::journey::{
    intent_id, Command, EmittedEvent, Guest, Manifest, PluginError, ReEntry, SendIntent, StepInput,
    Trigger, WaitSpec,
};
use weft_guest::json::{self, json};
use weft_guest::types::{ChannelKind, Content, MessageCategory, Profile, TemplateRef};

// A step allocates a few KiB and keeps nothing between calls: a pointer bump is the
// cheapest allocator for it (see weft_guest::bump).
weft_guest::bump_allocator!();

/// The step that sends the reminder, run after the wait.
const REMIND_STEP: &str = "remind";
/// How long a cart stays quiet before the reminder: one hour.
const WAIT_MS: u64 = clock::hours(1);
/// The code gold-tier customers get.
const GOLD_CODE: &str = "GOLD10";
/// The discount the code gives, in percent.
const GOLD_DISCOUNT_PERCENT: u32 = 10;

/// What the rule remembers between entry and reminder (journey context).
#[derive(Debug, Default, Serialize, Deserialize)]
struct CartContext {
    #[serde(default)]
    cart_id: Option<String>,
    #[serde(default)]
    product: Option<Product>,
}

/// The product from the entry event's properties.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Product {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    product_id: Option<String>,
}

struct AbandonedCart;

impl Guest for AbandonedCart {
    fn describe() -> Manifest {
        Manifest {
            name: "Abandoned cart reminder".into(),
            entry_events: vec!["Product Added".into()],
            entry_key: Some("properties.cart_id".into()),
            exit_events: vec!["Order Completed".into()],
            re_entry: ReEntry::AfterExit,
        }
    }

    fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
        match &input.trigger {
            Trigger::Entered(event) => {
                let props = event.properties_value();
                let context = CartContext {
                    cart_id: input
                        .entry_key
                        .clone()
                        .or_else(|| json::text_at(&props, "cart_id")),
                    product: Some(Product {
                        name: json::text_at(&props, "name"),
                        product_id: json::text_at(&props, "product_id"),
                    }),
                };
                Ok(vec![
                    Command::PatchContext(json::to(&context)?),
                    Command::Wait(WaitSpec::DurationMs(WAIT_MS)),
                    Command::Goto(REMIND_STEP.into()),
                ])
            }
            Trigger::TimerFired(_) => remind(&input),
            Trigger::EventReceived(event) if event.name.as_deref() == Some("Order Completed") => {
                Ok(vec![Command::Exit("purchased".into())])
            }
            Trigger::EventReceived(event) => Err(PluginError::not_supported(format!(
                "abandoned-cart does not wait for {:?}",
                event.name
            ))),
            Trigger::MessageOutcome(_) => Err(PluginError::not_supported(
                "abandoned-cart ignores message outcomes",
            )),
        }
    }
}

/// Sends the reminder (with a coupon for gold) and ends the instance.
fn remind(input: &StepInput) -> Result<Vec<Command>, PluginError> {
    let context: CartContext = if input.journey_context.trim().is_empty() {
        CartContext::default()
    } else {
        input.context_as()?
    };
    let product = context.product.unwrap_or_default();
    let gold = is_gold(&input.profile);
    let english = prefers_english(&input.profile);

    let mut content = vec![Content::Text(reminder_text(
        product.name.as_deref(),
        gold,
        english,
    ))];
    // ZNS (the fallback outside Zalo OA's 48 h window) sends only registered templates.
    if let Some(id) = weft_guest::config::get("zns_template_id").filter(|t| !t.is_empty()) {
        content.push(Content::Template(TemplateRef {
            id,
            language: Some(if english { "en" } else { "vi" }.into()),
            params: json::to(&json!({
                "customer_name": input.profile.trait_str("name").unwrap_or_default(),
                "product_name": product.name.clone().unwrap_or_default(),
                "discount_code": if gold { GOLD_CODE } else { "" },
            }))?,
        }));
    }
    let mut commands = vec![Command::Send(SendIntent {
        intent_id: intent_id(input, "reminder"),
        channel_preference: vec![ChannelKind::ZaloOa, ChannelKind::ZaloZns, ChannelKind::Sms],
        category: MessageCategory::Marketing,
        content,
    })];
    if gold {
        commands.push(Command::Emit(EmittedEvent {
            name: "Coupon Issued".into(),
            properties: json::to(&json!({
                "coupon": GOLD_CODE,
                "discount_percent": GOLD_DISCOUNT_PERCENT,
                "cart_id": context.cart_id,
                "product_id": product.product_id,
                "product_name": product.name,
                "journey_id": input.journey_id,
                "instance_id": input.instance_id,
            }))?,
        }));
    }
    commands.push(Command::Exit("reminded".into()));
    Ok(commands)
}

fn is_gold(profile: &Profile) -> bool {
    profile
        .trait_str("tier")
        .is_some_and(|t| t.eq_ignore_ascii_case("gold"))
}

/// Vietnamese unless the profile's locale is English.
fn prefers_english(profile: &Profile) -> bool {
    profile
        .locale
        .as_deref()
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

fn reminder_text(product: Option<&str>, gold: bool, english: bool) -> String {
    let mut text = match (english, product) {
        (false, Some(name)) => {
            format!("Bạn còn quên {name} trong giỏ hàng. Hoàn tất đơn hàng ngay nhé!")
        }
        (false, None) => "Bạn còn sản phẩm trong giỏ hàng. Hoàn tất đơn hàng ngay nhé!".to_owned(),
        (true, Some(name)) => format!("You left {name} in your cart. Complete your order now!"),
        (true, None) => "You left something in your cart. Complete your order now!".to_owned(),
    };
    if gold {
        text.push_str(&if english {
            format!(" Use code {GOLD_CODE} for {GOLD_DISCOUNT_PERCENT}% off.")
        } else {
            format!(" Nhập mã {GOLD_CODE} để được giảm {GOLD_DISCOUNT_PERCENT}%.")
        });
    }
    text
}

weft_guest::export_journey_rule!(AbandonedCart);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::serde_json;
    use weft_guest::types::{Event, EventType};

    fn input(trigger: Trigger, step_id: &str, traits: &str, context: &str) -> StepInput {
        StepInput {
            journey_id: "j1".into(),
            instance_id: "i1".into(),
            step_id: step_id.into(),
            entry_key: Some("cart-42".into()),
            profile: Profile {
                profile_id: "p1".into(),
                identities: vec![],
                traits: traits.into(),
                audiences: vec![],
                timezone: None,
                locale: Some("vi-VN".into()),
                consents: vec![],
            },
            journey_context: context.into(),
            trigger,
            now: 1_700_000_000_000,
            attempt: 0,
        }
    }

    fn product_added() -> Event {
        Event {
            message_id: "m1".into(),
            event_type: EventType::Track,
            name: Some("Product Added".into()),
            user_id: Some("u1".into()),
            anonymous_id: None,
            properties: r#"{"cart_id":"cart-42","product_id":"sku-1","name":"Áo dài lụa"}"#.into(),
            traits: "{}".into(),
            context: "{}".into(),
            timestamp: 1_700_000_000_000,
            received_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn entry_remembers_the_product_and_waits_an_hour() {
        let out = AbandonedCart::step(input(
            Trigger::Entered(product_added()),
            "start",
            "{}",
            "{}",
        ))
        .unwrap();
        let Command::PatchContext(ctx) = &out[0] else {
            panic!("{out:?}")
        };
        let ctx: serde_json::Value = serde_json::from_str(ctx).unwrap();
        assert_eq!(ctx["product"]["name"], "Áo dài lụa");
        assert_eq!(ctx["cart_id"], "cart-42");
        assert_eq!(out[1], Command::Wait(WaitSpec::DurationMs(3_600_000)));
        assert_eq!(out[2], Command::Goto("remind".into()));
    }

    const CONTEXT: &str =
        r#"{"cart_id":"cart-42","product":{"name":"Áo dài lụa","product_id":"sku-1"}}"#;

    #[test]
    fn reminder_for_silver_names_the_product_and_has_no_coupon() {
        let out = AbandonedCart::step(input(
            Trigger::TimerFired("t".into()),
            "remind",
            r#"{"tier":"silver"}"#,
            CONTEXT,
        ))
        .unwrap();
        assert_eq!(out.len(), 2);
        let Command::Send(intent) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(intent.intent_id, "i1:remind:reminder");
        assert_eq!(
            intent.channel_preference,
            [ChannelKind::ZaloOa, ChannelKind::ZaloZns, ChannelKind::Sms]
        );
        assert_eq!(intent.category, MessageCategory::Marketing);
        let [Content::Text(text)] = intent.content.as_slice() else {
            panic!()
        };
        assert!(
            text.contains("Áo dài lụa") && !text.contains(GOLD_CODE),
            "{text}"
        );
        assert_eq!(out[1], Command::Exit("reminded".into()));
    }

    #[test]
    fn reminder_carries_the_zns_template_when_one_is_configured() {
        weft_guest::config::testing::set("zns_template_id", "231241");
        let out = AbandonedCart::step(input(
            Trigger::TimerFired("t".into()),
            "remind",
            r#"{"tier":"gold","name":"Lan"}"#,
            CONTEXT,
        ))
        .unwrap();
        weft_guest::config::testing::clear();
        let Command::Send(intent) = &out[0] else {
            panic!("{out:?}")
        };
        let [Content::Text(_), Content::Template(t)] = intent.content.as_slice() else {
            panic!("{:?}", intent.content)
        };
        assert_eq!(t.id, "231241");
        assert_eq!(t.language.as_deref(), Some("vi"));
        let params: serde_json::Value = serde_json::from_str(&t.params).unwrap();
        assert_eq!(
            params,
            serde_json::json!({"customer_name": "Lan", "product_name": "Áo dài lụa", "discount_code": GOLD_CODE})
        );
    }

    #[test]
    fn reminder_for_gold_carries_the_code_and_emits_coupon_issued() {
        let out = AbandonedCart::step(input(
            Trigger::TimerFired("t".into()),
            "remind",
            r#"{"tier":"gold"}"#,
            CONTEXT,
        ))
        .unwrap();
        assert_eq!(out.len(), 3);
        let Command::Send(intent) = &out[0] else {
            panic!()
        };
        let [Content::Text(text)] = intent.content.as_slice() else {
            panic!()
        };
        assert!(text.contains("GOLD10") && text.contains("10%"), "{text}");
        let Command::Emit(event) = &out[1] else {
            panic!()
        };
        assert_eq!(event.name, "Coupon Issued");
        let props: serde_json::Value = serde_json::from_str(&event.properties).unwrap();
        assert_eq!(props["coupon"], "GOLD10");
        assert_eq!(props["cart_id"], "cart-42");
        assert_eq!(out[2], Command::Exit("reminded".into()));
    }

    #[test]
    fn retried_step_returns_identical_commands() {
        let a = AbandonedCart::step(input(
            Trigger::TimerFired("t".into()),
            "remind",
            r#"{"tier":"gold"}"#,
            CONTEXT,
        ))
        .unwrap();
        let mut retry = input(
            Trigger::TimerFired("t".into()),
            "remind",
            r#"{"tier":"gold"}"#,
            CONTEXT,
        );
        retry.attempt = 3;
        assert_eq!(a, AbandonedCart::step(retry).unwrap());
    }

    #[test]
    fn purchase_exits() {
        let mut event = product_added();
        event.name = Some("Order Completed".into());
        let out = AbandonedCart::step(input(
            Trigger::EventReceived(event),
            "remind",
            "{}",
            CONTEXT,
        ))
        .unwrap();
        assert_eq!(out, [Command::Exit("purchased".into())]);
    }
}
