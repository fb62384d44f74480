//! Sample inputs for every plugin call, shared by the demo, the tests, the benchmarks and
//! the fixture files under `plugins/*/fixtures/` (a test keeps those in sync).

use crate::runtime::bindings::exports::{adapter, flow, journey, personalize};
use crate::runtime::bindings::types::{
    ChannelKind, Event, EventType, Identity, MessageCategory, Profile,
};
use crate::runtime::catalog::{Catalog, CatalogBuilder};
use crate::runtime::Call;

/// 2026-11-22T02:00:00Z, a fixed "now" so samples are reproducible.
pub const NOW_MS: i64 = 1_795_312_800_000;

/// A gold-tier Vietnamese customer.
pub fn profile(tier: &str) -> Profile {
    Profile {
        profile_id: "p_demo".into(),
        identities: vec![
            Identity {
                kind: "user_id".into(),
                value: "42".into(),
            },
            Identity {
                kind: "phone".into(),
                value: "+84901234567".into(),
            },
        ],
        traits: serde_json::json!({"name": "Lan", "tier": tier, "phone": "+84901234567"})
            .to_string(),
        audiences: vec![],
        timezone: Some("Asia/Ho_Chi_Minh".into()),
        locale: Some("vi-VN".into()),
        consents: vec![],
    }
}

/// A `Product Added` track event for cart `c-1001`.
pub fn product_added() -> Event {
    Event {
        message_id: "m-1".into(),
        event_type: EventType::Track,
        name: Some("Product Added".into()),
        user_id: Some("42".into()),
        anonymous_id: None,
        properties: serde_json::json!({"cart_id": "c-1001", "product_id": "sku-7", "name": "Áo dài lụa", "price": 850000, "currency": "VND"}).to_string(),
        traits: "{}".into(),
        context: "{}".into(),
        timestamp: NOW_MS,
        received_at: NOW_MS,
    }
}

/// A journey step input with `trigger` at `step_id`.
pub fn step(
    step_id: &str,
    trigger: journey::Trigger,
    context: &str,
    tier: &str,
) -> journey::StepInput {
    journey::StepInput {
        journey_id: "abandoned-cart".into(),
        instance_id: "ji-1".into(),
        step_id: step_id.into(),
        entry_key: Some("c-1001".into()),
        profile: profile(tier),
        journey_context: context.into(),
        trigger,
        now: NOW_MS,
        attempt: 0,
    }
}

/// The abandoned cart's entry step.
pub fn journey_entered() -> Call {
    Call::JourneyStep(step(
        "start",
        journey::Trigger::Entered(product_added()),
        "{}",
        "gold",
    ))
}

/// The abandoned cart's reminder step, an hour later.
pub fn journey_remind(context: &str) -> Call {
    let mut s = step(
        "remind",
        journey::Trigger::TimerFired("wait-1".into()),
        context,
        "gold",
    );
    s.now = NOW_MS + 3_600_000;
    Call::JourneyStep(s)
}

/// A personalization request for a product page with two candidate offers.
pub fn decide() -> Call {
    Call::PersonalizeDecide {
        req: personalize::Request {
            request_id: "r-1".into(),
            profile: Some(profile("gold")),
            page: personalize::PageContext {
                url: Some("https://shop.example.vn/p/ao-dai".into()),
                path: Some("/p/ao-dai".into()),
                referrer: None,
                title: Some("Áo dài lụa".into()),
                page_type: Some("product".into()),
                locale: Some("vi-VN".into()),
                device_type: Some("mobile".into()),
                campaign: "{}".into(),
                attributes: serde_json::json!({"sku": "sku-7"}).to_string(),
            },
            placements: vec![personalize::Placement {
                id: "hero".into(),
                kind: personalize::PlacementKind::Banner,
                max_items: 2,
                constraints: "{}".into(),
                experiment: None,
            }],
            recent_events: Vec::new(),
            now: NOW_MS,
        },
        catalog: std::sync::Arc::new(catalog(&[
            ("offer-gold", 0.9, Some("offer"), &["tier:gold"]),
            ("offer-all", 0.5, Some("offer"), &["sale"]),
            ("offer-silver", 0.7, Some("offer"), &["tier:silver"]),
        ])),
    }
}

/// A catalog of `(id, score, category, tags)` entries.
pub fn catalog(entries: &[(&str, f32, Option<&str>, &[&str])]) -> Catalog {
    let mut b = CatalogBuilder::new();
    for (id, score, category, tags) in entries {
        b.push(id, *score, *category, tags)
            .expect("a sample catalog is small");
    }
    b.build()
}

/// A Zalo OA text message to user `zalo-user-1`.
pub fn adapter_send(text: &str) -> Call {
    Call::AdapterSend(adapter::OutboundMessage {
        idempotency_key: "intent-1".into(),
        tracking_id: "trk-1".into(),
        channel: ChannelKind::ZaloOa,
        recipient: adapter::Recipient {
            profile_id: "p_demo".into(),
            address: Identity {
                kind: "zalo:oa-1".into(),
                value: "zalo-user-1".into(),
            },
            display_name: Some("Lan".into()),
            last_inbound_at: Some(NOW_MS - 3_600_000),
        },
        category: MessageCategory::Marketing,
        content: vec![crate::runtime::bindings::types::Content::Text(text.into())],
        tag: None,
        metadata: "{}".into(),
    })
}

/// A chatbot turn where the customer asks for opening hours.
pub fn chat_turn(text: &str) -> Call {
    Call::FlowTurn {
        session: flow::Session {
            session_id: "s-1".into(),
            conversation_id: "c-1".into(),
            channel: ChannelKind::WebChat,
            profile: profile("silver"),
            slots: "{}".into(),
            started_at: NOW_MS,
            last_user_at: NOW_MS,
            turn: 1,
            locale: Some("vi-VN".into()),
            page: None,
        },
        trigger: flow::TurnTrigger::Input(flow::UserInput::Text(text.into())),
    }
}

/// The personalization benchmark's request: a gold visitor in the `vip` audience on a
/// product page, placements `hero` (banner with an audience banner) and `recs` (four
/// products), and a catalog of `candidates` products (every tenth for gold members).
pub fn decide_two_placements(candidates: usize) -> Call {
    let Call::PersonalizeDecide { mut req, .. } = decide() else {
        unreachable!("decide() is a personalize call")
    };
    if let Some(p) = req.profile.as_mut() {
        p.audiences = vec!["vip".into()];
    }
    req.placements = vec![
        personalize::Placement {
            id: "hero".into(),
            kind: personalize::PlacementKind::Banner,
            max_items: 1,
            constraints: serde_json::json!({
                "audience_banners": [{"audience": "vip", "variant": "vip-banner",
                    "content": {"headline": "Khách hàng thân thiết: miễn phí vận chuyển"}}],
                "exclude": ["gift-card"]
            })
            .to_string(),
            experiment: None,
        },
        personalize::Placement {
            id: "recs".into(),
            kind: personalize::PlacementKind::ProductList,
            max_items: 4,
            constraints: serde_json::json!({"exclude": ["gift-card"]}).to_string(),
            experiment: None,
        },
    ];
    let categories = ["ao-dai", "vay", "non-la", "khan", "giay"];
    let mut catalog = CatalogBuilder::new();
    for i in 1..=candidates {
        let tags: &[&str] = if i % 10 == 0 { &["tier:gold"] } else { &[] };
        catalog
            .push(
                &format!("sku-{i}"),
                (i % 97) as f32 / 100.0,
                Some(categories[i % categories.len()]),
                tags,
            )
            .expect("a sample catalog is small");
    }
    Call::PersonalizeDecide {
        req,
        catalog: std::sync::Arc::new(catalog.build()),
    }
}
