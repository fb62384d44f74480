//! Example personalizer: recommends products from the visitor's recent events.
//!
//! The host hands every request the visitor's latest track and page events (newest first).
//! This plugin reads the `Product Viewed` and `Product Added` track events among them,
//! leaves out what the visitor already saw, what is in the cart and what the placement
//! excludes, and ranks the rest of the candidate catalog with a boost for the categories
//! the visitor browsed. A visitor with no such events gets the popular list instead.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all.

use serde::Deserialize;
use weft_guest::json::{self, Map, Value};
use weft_guest::personalize::{Decision, Guest, Item, Placement, PluginError, Request};
use weft_guest::types::{Event, EventType};

/// Track event names that show interest in a product.
const VIEW_EVENTS: [&str; 2] = ["Product Viewed", "Product Added"];
/// Browsing history changes with every page view, so cache a personal list for 30 s only.
const RECENTLY_VIEWED_TTL_MS: u32 = 30_000;
/// The popular list is the same for every visitor without history: five minutes.
const POPULAR_TTL_MS: u32 = 300_000;
/// Added for a category the visitor viewed; outranks any catalog score in the usual 0..1.
const VIEWED_CATEGORY_BOOST: f32 = 2.0;
/// Added on top for the most recently viewed category, to break ties between categories.
const LATEST_CATEGORY_BOOST: f32 = 0.5;

/// The variant for a visitor with a viewing history.
const RECENTLY_VIEWED: &str = "recently-viewed";
/// Its content: "You may also like".
const RECENTLY_VIEWED_CONTENT: &str = r#"{"headline":"Có thể bạn cũng thích"}"#;
/// The variant for a visitor without one.
const POPULAR: &str = "popular";
/// Its content: "Best sellers".
const POPULAR_CONTENT: &str = r#"{"headline":"Sản phẩm bán chạy"}"#;

/// What the visitor looked at lately, from their recent events.
#[derive(Debug, Default)]
struct History {
    /// Product ids viewed or added to the cart.
    products: Vec<String>,
    /// Their categories, distinct, most recent first.
    categories: Vec<String>,
}

impl History {
    /// Reads `Product Viewed` / `Product Added` track events (newest first); the product is
    /// `properties.product_id`, else `properties.sku`, and the category
    /// `properties.category`. Other events, and properties that are not a JSON object, are
    /// skipped.
    fn of(events: &[Event]) -> History {
        let mut history = History::default();
        for event in events {
            if event.event_type != EventType::Track
                || !event
                    .name
                    .as_deref()
                    .is_some_and(|n| VIEW_EVENTS.contains(&n))
            {
                continue;
            }
            let props = json::object_or_empty(&event.properties);
            let product = props
                .get("product_id")
                .and_then(id_text)
                .or_else(|| props.get("sku").and_then(id_text));
            if let Some(product) = product {
                if !history.products.contains(&product) {
                    history.products.push(product);
                }
            }
            if let Some(category) = props.get("category").and_then(Value::as_str) {
                if !category.is_empty() && !history.categories.iter().any(|c| c == category) {
                    history.categories.push(category.to_owned());
                }
            }
        }
        history
    }

    fn is_empty(&self) -> bool {
        self.products.is_empty() && self.categories.is_empty()
    }

    /// The boost for an item of `category`.
    fn boost(&self, category: Option<&str>) -> f32 {
        let Some(category) = category else {
            return 0.0;
        };
        match self.categories.iter().position(|c| c == category) {
            Some(0) => VIEWED_CATEGORY_BOOST + LATEST_CATEGORY_BOOST,
            Some(_) => VIEWED_CATEGORY_BOOST,
            None => 0.0,
        }
    }
}

/// A product id or SKU: a non-empty string, or a number in its JSON form.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// SKUs in the cart: `page.attributes.cart`, an array of `{"sku": …}` objects. A missing
/// or malformed cart, and lines without a SKU, are ignored.
fn cart_skus(attributes: &str) -> Vec<String> {
    match json::object_or_empty(attributes).get("cart") {
        Some(Value::Array(lines)) => lines
            .iter()
            .filter_map(|line| line.get("sku").and_then(id_text))
            .collect(),
        _ => Vec::new(),
    }
}

/// One candidate: `{"id": …, "score"?: number, "category"?: string}`, borrowed from the
/// parsed catalog; the whole object travels on as the item's payload.
#[derive(Debug)]
struct Candidate<'a> {
    id: &'a str,
    score: f32,
    category: Option<&'a str>,
    raw: &'a Value,
}

/// The fields of a candidate this plugin reads; the rest is payload.
#[derive(Deserialize)]
struct CandidateFields<'a> {
    id: &'a str,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default, borrow)]
    category: Option<&'a str>,
}

impl<'a> Candidate<'a> {
    fn parse(raw: &'a Value) -> Result<Self, PluginError> {
        let fields = CandidateFields::deserialize(raw)?;
        Ok(Candidate {
            id: fields.id,
            score: fields.score.unwrap_or(0.0),
            category: fields.category,
            raw,
        })
    }
}

struct RecentlyViewed;

impl Guest for RecentlyViewed {
    fn decide(req: Request) -> Result<Vec<Decision>, PluginError> {
        let history = History::of(&req.recent_events);
        // Never recommend what the visitor saw or is about to buy.
        let mut seen = cart_skus(&req.page.attributes);
        seen.extend(history.products.iter().cloned());
        let catalog = req.candidate_list()?;
        let candidates = catalog
            .iter()
            .map(Candidate::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(req
            .placements
            .iter()
            .map(|placement| decide_one(placement, &history, &seen, &candidates))
            .collect())
    }
}

fn decide_one(
    placement: &Placement,
    history: &History,
    seen: &[String],
    candidates: &[Candidate<'_>],
) -> Decision {
    let constraints: Map<String, Value> = json::object_or_empty(&placement.constraints);
    let excluded: Vec<&str> = constraints
        .get("exclude")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();

    let mut ranked: Vec<(f32, &Candidate<'_>)> = candidates
        .iter()
        .filter(|c| !excluded.contains(&c.id) && !seen.iter().any(|s| s == c.id))
        .map(|c| (c.score + history.boost(c.category), c))
        .collect();
    // Highest score first; ties by id so the order is stable across calls.
    ranked.sort_by(|(sa, a), (sb, b)| sb.total_cmp(sa).then_with(|| a.id.cmp(b.id)));
    ranked.truncate(placement.max_items as usize);
    let items = ranked
        .into_iter()
        .map(|(score, c)| Item {
            id: c.id.to_owned(),
            score,
            payload: c.raw.to_string(),
        })
        .collect();

    let (variant_id, content, ttl_ms, reason) = if history.is_empty() {
        (
            POPULAR,
            POPULAR_CONTENT,
            POPULAR_TTL_MS,
            "no recent views".to_owned(),
        )
    } else if history.categories.is_empty() {
        (
            RECENTLY_VIEWED,
            RECENTLY_VIEWED_CONTENT,
            RECENTLY_VIEWED_TTL_MS,
            "categories=none".to_owned(),
        )
    } else {
        (
            RECENTLY_VIEWED,
            RECENTLY_VIEWED_CONTENT,
            RECENTLY_VIEWED_TTL_MS,
            format!("categories={}", history.categories.join(",")),
        )
    };
    Decision {
        placement_id: placement.id.clone(),
        variant_id: variant_id.into(),
        experiment_id: None,
        content: content.into(),
        items,
        ttl_ms,
        reason: Some(reason),
    }
}

weft_guest::export_personalization!(RecentlyViewed);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::personalize::{PageContext, PlacementKind};

    fn event(event_type: EventType, name: &str, properties: &str) -> Event {
        Event {
            message_id: format!("m-{name}"),
            event_type,
            name: Some(name.into()),
            user_id: None,
            anonymous_id: Some("a-1".into()),
            properties: properties.into(),
            traits: "{}".into(),
            context: "{}".into(),
            timestamp: 0,
            received_at: 0,
        }
    }

    fn viewed(product: &str, category: &str) -> Event {
        event(
            EventType::Track,
            "Product Viewed",
            &format!(r#"{{"product_id":"{product}","category":"{category}"}}"#),
        )
    }

    fn request(events: Vec<Event>, attributes: &str, constraints: &str, max_items: u32) -> Request {
        Request {
            request_id: "r1".into(),
            profile: None,
            page: PageContext {
                url: None,
                path: Some("/".into()),
                referrer: None,
                title: None,
                page_type: Some("home".into()),
                locale: None,
                device_type: None,
                campaign: "{}".into(),
                attributes: attributes.into(),
            },
            placements: vec![Placement {
                id: "recs".into(),
                kind: PlacementKind::ProductList,
                max_items,
                constraints: constraints.into(),
                experiment: None,
            }],
            recent_events: events,
            candidates: CANDIDATES.into(),
            now: 0,
        }
    }

    const CANDIDATES: &str = r#"[
        {"id":"ao-1","score":0.9,"category":"ao-dai"},
        {"id":"ao-2","score":0.4,"category":"ao-dai"},
        {"id":"vay-1","score":0.8,"category":"vay"},
        {"id":"vay-2","score":0.1,"category":"vay"},
        {"id":"tui-1","score":0.95,"category":"tui"},
        {"id":"khan-1"}
    ]"#;

    fn ids(d: &Decision) -> Vec<&str> {
        d.items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn viewed_products_are_left_out_and_viewed_categories_lead() {
        // Newest first: vay-2 (vay) is the latest view, ao-1 (ao-dai) the one before.
        let req = request(
            vec![viewed("vay-2", "vay"), viewed("ao-1", "ao-dai")],
            "{}",
            "{}",
            10,
        );
        let d = &RecentlyViewed::decide(req).unwrap()[0];
        // vay-1 0.8+2.5, ao-2 0.4+2.0, tui-1 0.95, khan-1 0.
        assert_eq!(ids(d), ["vay-1", "ao-2", "tui-1", "khan-1"]);
        assert_eq!(d.items[0].score, 0.8 + 2.5);
        assert_eq!(d.variant_id, "recently-viewed");
        assert_eq!(d.content, r#"{"headline":"Có thể bạn cũng thích"}"#);
        assert_eq!(d.ttl_ms, RECENTLY_VIEWED_TTL_MS);
        assert_eq!(d.reason.as_deref(), Some("categories=vay,ao-dai"));
        assert_eq!(d.experiment_id, None);
    }

    #[test]
    fn latest_viewed_category_gets_half_a_point_more() {
        let req = request(
            vec![viewed("x-1", "ao-dai"), viewed("x-2", "vay")],
            "{}",
            "{}",
            2,
        );
        let d = &RecentlyViewed::decide(req).unwrap()[0];
        // ao-1 0.9+2.5 and ao-2 0.4+2.5 beat vay-1 0.8+2.0.
        assert_eq!(ids(d), ["ao-1", "ao-2"]);
    }

    #[test]
    fn product_added_counts_and_sku_stands_in_for_product_id() {
        let added = event(
            EventType::Track,
            "Product Added",
            r#"{"sku":"tui-1","category":"tui"}"#,
        );
        let d = &RecentlyViewed::decide(request(vec![added], "{}", "{}", 1)).unwrap()[0];
        assert_eq!(ids(d), ["ao-1"]);
        assert_eq!(d.variant_id, "recently-viewed");
        assert_eq!(d.reason.as_deref(), Some("categories=tui"));
    }

    #[test]
    fn page_events_and_other_track_events_are_ignored() {
        let events = vec![
            event(
                EventType::Page,
                "Product Viewed",
                r#"{"product_id":"ao-1","category":"ao-dai"}"#,
            ),
            event(
                EventType::Track,
                "Order Completed",
                r#"{"product_id":"vay-1","category":"vay"}"#,
            ),
            event(EventType::Track, "Product Viewed", "not json"),
        ];
        let d = &RecentlyViewed::decide(request(events, "{}", "{}", 3)).unwrap()[0];
        assert_eq!(d.variant_id, "popular");
        assert_eq!(ids(d), ["tui-1", "ao-1", "vay-1"]);
    }

    #[test]
    fn cart_skus_and_excluded_ids_are_left_out() {
        let d = &RecentlyViewed::decide(request(
            vec![],
            r#"{"cart":[{"sku":"tui-1","quantity":1},"odd",{"qty":2}]}"#,
            r#"{"exclude":["ao-1",3]}"#,
            10,
        ))
        .unwrap()[0];
        assert_eq!(ids(d), ["vay-1", "ao-2", "vay-2", "khan-1"]);
    }

    #[test]
    fn malformed_cart_is_ignored() {
        for attributes in [r#"{"cart":{"sku":"tui-1"}}"#, "[]", ""] {
            let d = &RecentlyViewed::decide(request(vec![], attributes, "{}", 1)).unwrap()[0];
            assert_eq!(ids(d), ["tui-1"], "{attributes}");
        }
    }

    #[test]
    fn no_views_gives_popular_variant_ranked_by_score_with_long_ttl() {
        let d = &RecentlyViewed::decide(request(vec![], "{}", "{}", 3)).unwrap()[0];
        assert_eq!(d.variant_id, "popular");
        assert_eq!(d.content, r#"{"headline":"Sản phẩm bán chạy"}"#);
        assert_eq!(d.ttl_ms, POPULAR_TTL_MS);
        assert_eq!(d.reason.as_deref(), Some("no recent views"));
        assert_eq!(ids(d), ["tui-1", "ao-1", "vay-1"]);
    }

    #[test]
    fn views_without_category_still_exclude_and_say_so() {
        let view = event(
            EventType::Track,
            "Product Viewed",
            r#"{"product_id":"tui-1"}"#,
        );
        let d = &RecentlyViewed::decide(request(vec![view], "{}", "{}", 1)).unwrap()[0];
        assert_eq!(d.variant_id, "recently-viewed");
        assert_eq!(d.reason.as_deref(), Some("categories=none"));
        assert_eq!(ids(d), ["ao-1"]);
    }

    #[test]
    fn equal_scores_are_ordered_by_id() {
        let mut req = request(vec![], "{}", "{}", 10);
        req.candidates = r#"{"items":[{"id":"b"},{"id":"c"},{"id":"a"}]}"#.into();
        let d = &RecentlyViewed::decide(req).unwrap()[0];
        assert_eq!(ids(d), ["a", "b", "c"]);
    }

    #[test]
    fn payload_is_the_whole_candidate() {
        let d = &RecentlyViewed::decide(request(vec![], "{}", "{}", 1)).unwrap()[0];
        let payload: Value = json::parse(&d.items[0].payload).unwrap();
        assert_eq!(payload["category"], "tui");
    }

    #[test]
    fn candidates_that_are_not_a_list_are_invalid_input() {
        let mut req = request(vec![], "{}", "{}", 10);
        req.candidates = r#""sku-1""#.into();
        let err = RecentlyViewed::decide(req).unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)), "{err:?}");
    }
}
