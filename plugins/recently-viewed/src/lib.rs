//! Example personalizer: recommends products from the visitor's recent events.
//!
//! The host hands every request the visitor's latest track and page events (newest first).
//! This plugin reads the `Product Viewed` and `Product Added` track events among them,
//! leaves out what the visitor already saw, what is in the cart and what the placement
//! excludes, and ranks the rest of the candidate catalog with a boost for the categories
//! the visitor browsed. A visitor with no such events gets the popular list instead.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all. It ranks the
//! catalog it is lent through borrowed views (reading each candidate's `id`, `score` and
//! `category`) by catalog index, and leaves each item's payload empty for the host to fill
//! in from the catalog. Allocation is a pointer bump ([`weft_guest::bump_allocator!`]).

use weft_guest::json::{self, Value};
use weft_guest::personalize::{
    Candidate, Catalog, Decision, Guest, Item, Placement, PluginError, Request,
};
use weft_guest::types::{Event, EventType};

weft_guest::bump_allocator!();

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

struct RecentlyViewed;

impl Guest for RecentlyViewed {
    fn decide(req: Request, catalog: Catalog) -> Result<Vec<Decision>, PluginError> {
        let candidates: Vec<Candidate> = catalog.iter().collect();
        let history = History::of(&req.recent_events);
        // Never recommend what the visitor saw or is about to buy.
        let mut seen = cart_skus(&req.page.attributes);
        seen.extend(history.products.iter().cloned());
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
    let constraints = json::object_or_empty(&placement.constraints);
    let excluded: Vec<&str> = constraints
        .get("exclude")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();

    // Rank (score, catalog index) pairs; only the items that made the cut are built.
    let mut ranked: Vec<(f32, usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| !excluded.contains(&c.id) && !seen.iter().any(|s| s == c.id))
        .map(|(i, c)| (c.score + history.boost(c.category), i))
        .collect();
    // Highest score first; ties by id, then catalog order, so the order is stable across
    // calls (a total order, so the unstable sort needs no scratch buffer).
    ranked.sort_unstable_by(|&(sa, a), &(sb, b)| {
        sb.total_cmp(&sa)
            .then_with(|| candidates[a].id.cmp(candidates[b].id))
            .then(a.cmp(&b))
    });
    ranked.truncate(placement.max_items as usize);
    let items = ranked
        .into_iter()
        .map(|(score, i)| Item {
            id: candidates[i].id.to_owned(),
            score,
            // Empty: the host fills in the item's catalog entry.
            payload: String::new(),
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
            now: 0,
        }
    }

    fn candidate(id: &'static str, score: f32, category: Option<&'static str>) -> Entry {
        (id, score, category)
    }

    /// A catalog entry: id, score, category.
    type Entry = (&'static str, f32, Option<&'static str>);

    fn catalog_of(entries: Vec<Entry>) -> Catalog {
        let mut c = Catalog::new();
        for (id, score, category) in entries {
            c.push(id, score, category, &[]);
        }
        c
    }

    fn catalog() -> Catalog {
        catalog_of(vec![
            candidate("ao-1", 0.9, Some("ao-dai")),
            candidate("ao-2", 0.4, Some("ao-dai")),
            candidate("vay-1", 0.8, Some("vay")),
            candidate("vay-2", 0.1, Some("vay")),
            candidate("tui-1", 0.95, Some("tui")),
            candidate("khan-1", 0.0, None),
        ])
    }

    fn decide(req: Request) -> Vec<Decision> {
        RecentlyViewed::decide(req, catalog()).unwrap()
    }

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
        let d = &decide(req)[0];
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
        let d = &decide(req)[0];
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
        let d = &decide(request(vec![added], "{}", "{}", 1))[0];
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
        let d = &decide(request(events, "{}", "{}", 3))[0];
        assert_eq!(d.variant_id, "popular");
        assert_eq!(ids(d), ["tui-1", "ao-1", "vay-1"]);
    }

    #[test]
    fn cart_skus_and_excluded_ids_are_left_out() {
        let d = &decide(request(
            vec![],
            r#"{"cart":[{"sku":"tui-1","quantity":1},"odd",{"qty":2}]}"#,
            r#"{"exclude":["ao-1",3]}"#,
            10,
        ))[0];
        assert_eq!(ids(d), ["vay-1", "ao-2", "vay-2", "khan-1"]);
    }

    #[test]
    fn malformed_cart_is_ignored() {
        for attributes in [r#"{"cart":{"sku":"tui-1"}}"#, "[]", ""] {
            let d = &decide(request(vec![], attributes, "{}", 1))[0];
            assert_eq!(ids(d), ["tui-1"], "{attributes}");
        }
    }

    #[test]
    fn no_views_gives_popular_variant_ranked_by_score_with_long_ttl() {
        let d = &decide(request(vec![], "{}", "{}", 3))[0];
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
        let d = &decide(request(vec![view], "{}", "{}", 1))[0];
        assert_eq!(d.variant_id, "recently-viewed");
        assert_eq!(d.reason.as_deref(), Some("categories=none"));
        assert_eq!(ids(d), ["ao-1"]);
    }

    #[test]
    fn equal_scores_are_ordered_by_id_then_catalog_order() {
        let catalog = vec![
            candidate("b", 0.0, None),
            candidate("c", 0.0, None),
            candidate("a", 0.0, Some("first")),
            candidate("a", 0.0, Some("second")),
        ];
        let d = &RecentlyViewed::decide(request(vec![], "{}", "{}", 10), catalog_of(catalog))
            .unwrap()[0];
        assert_eq!(ids(d), ["a", "a", "b", "c"]);
    }

    #[test]
    fn payload_is_left_empty_for_the_host_to_fill_in() {
        let d = &decide(request(vec![], "{}", "{}", 10))[0];
        assert_eq!(d.items.len(), 6);
        assert!(d.items.iter().all(|i| i.payload.is_empty()));
    }

    #[test]
    fn candidate_without_category_or_in_another_category_gets_no_boost() {
        let req = request(vec![viewed("x-1", "khan")], "{}", "{}", 10);
        let d = &decide(req)[0];
        // khan-1 has no category: its score stays 0 and it ranks last.
        assert_eq!(ids(d).last(), Some(&"khan-1"));
        assert_eq!(d.items.last().unwrap().score, 0.0);
    }

    #[test]
    fn empty_catalog_gives_no_items_but_the_variant_still() {
        let req = request(vec![viewed("x-1", "vay")], "{}", "{}", 10);
        let d = &RecentlyViewed::decide(req, Catalog::new()).unwrap()[0];
        assert!(d.items.is_empty());
        assert_eq!(d.variant_id, "recently-viewed");
    }
}
