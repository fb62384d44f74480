//! Example personalizer: picks each placement's variant by the visitor's loyalty tier, or
//! by an audience banner the tenant configured for one of the visitor's audiences, and
//! ranks the host's candidate catalog by tier (`tier:gold` / `tier:silver` tags), capped at
//! the placement's `max-items`.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all. It works on the
//! catalog it is lent, through borrowed views: eligibility and scores are worked out once per request as a list
//! of small records borrowing each candidate's id, each placement keeps its best
//! `max-items` of them in a heap in one pass, and only the items that made the cut are
//! built, with an empty payload the host fills in from the catalog. The profile traits are
//! read once per request and each placement's constraints once, for just the keys used.
//! Allocation is a pointer bump ([`weft_guest::bump_allocator!`]).

mod parse;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use weft_guest::personalize::{
    Candidate, Catalog, Decision, Guest, Item, Placement, PluginError, Request,
};
use weft_guest::types::Profile;

use parse::Constraints;

weft_guest::bump_allocator!();

/// How long the edge may cache a decision for a known visitor: one minute.
const KNOWN_TTL_MS: u32 = 60_000;
/// How long the edge may cache the anonymous default: five minutes.
const ANONYMOUS_TTL_MS: u32 = 300_000;
/// Added to a tier-tagged item's score so the visitor's own tier's items lead the list
/// (candidate scores are in 0..1 by convention, so +1.0 outranks every untagged item).
const OWN_TIER_BOOST: f32 = 1.0;
/// The tag key that reserves an item for a tier: `tier:gold`, `tier:silver`.
const TIER_TAG: &str = "tier";

/// The visitor's tier, from the `tier` trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Gold,
    Silver,
    /// A known profile with another tier, or none.
    Other,
    /// No profile.
    Anonymous,
}

impl Tier {
    fn of(profile: Option<&Profile>) -> Tier {
        let Some(profile) = profile else {
            return Tier::Anonymous;
        };
        match parse::tier_trait(&profile.traits) {
            Some(t) if t.eq_ignore_ascii_case("gold") => Tier::Gold,
            Some(t) if t.eq_ignore_ascii_case("silver") => Tier::Silver,
            _ => Tier::Other,
        }
    }

    fn variant_id(self) -> &'static str {
        match self {
            Tier::Gold => "tier-gold",
            Tier::Silver => "tier-silver",
            Tier::Other => "tier-default",
            Tier::Anonymous => "anonymous",
        }
    }

    /// The decision's `reason` without an audience banner: `tier=<variant-id>`.
    fn reason(self) -> &'static str {
        match self {
            Tier::Gold => "tier=tier-gold",
            Tier::Silver => "tier=tier-silver",
            Tier::Other => "tier=tier-default",
            Tier::Anonymous => "tier=anonymous",
        }
    }

    /// The value a `tier:<value>` tag must have (any ASCII case) to show the item to this
    /// visitor.
    fn name(self) -> Option<&'static str> {
        match self {
            Tier::Gold => Some("gold"),
            Tier::Silver => Some("silver"),
            Tier::Other | Tier::Anonymous => None,
        }
    }

    /// Template variables for content blocks, banners and offers, as JSON text (keys in
    /// sorted order, as `serde_json` writes them; built once at compile time).
    fn content(self) -> &'static str {
        match self {
            Tier::Gold => {
                r#"{"discount_percent":10,"headline":"Ưu đãi riêng cho thành viên Vàng","tier":"gold"}"#
            }
            Tier::Silver => {
                r#"{"discount_percent":5,"headline":"Ưu đãi cho thành viên Bạc","tier":"silver"}"#
            }
            Tier::Other => r#"{"headline":"Sản phẩm dành cho bạn","tier":"member"}"#,
            Tier::Anonymous => r#"{"headline":"Sản phẩm nổi bật","tier":"anonymous"}"#,
        }
    }

    fn ttl_ms(self) -> u32 {
        if self == Tier::Anonymous {
            ANONYMOUS_TTL_MS
        } else {
            KNOWN_TTL_MS
        }
    }

    /// The score this visitor ranks `c` by, or `None` when `c` is not for them. Untagged
    /// items are for everyone at their own score; an item with `tier:` tags only for a
    /// visitor whose tier one of them names, boosted.
    fn score(self, c: &Candidate<'_>) -> Option<f32> {
        let mut tagged = false;
        for value in c.tag_values(TIER_TAG) {
            if self
                .name()
                .is_some_and(|mine| value.eq_ignore_ascii_case(mine))
            {
                return Some(c.score + OWN_TIER_BOOST);
            }
            tagged = true;
        }
        (!tagged).then_some(c.score)
    }
}

/// A candidate the visitor may see, with its ranking score; borrows the candidate's id.
#[derive(Debug, Clone, Copy)]
struct Ranked<'a> {
    score: f32,
    /// `score` as an integer that orders like `f32::total_cmp`, reversed (a higher score
    /// is a smaller key): one integer comparison per pair.
    key: u32,
    id: &'a str,
    /// Its place in the catalog.
    index: usize,
}

impl<'a> Ranked<'a> {
    fn new(score: f32, id: &'a str, index: usize) -> Ranked<'a> {
        // IEEE 754 bits order like the numbers once negative values have every bit
        // flipped and non-negative ones the sign bit set (the mapping `total_cmp` uses).
        let bits = score.to_bits();
        let ascending = if bits >> 31 == 1 {
            !bits
        } else {
            bits | 1 << 31
        };
        Ranked {
            score,
            key: !ascending,
            id,
            index,
        }
    }
}

/// The rank order: `a < b` when `a` ranks before `b`, that is a higher score, then a lower
/// id (byte-wise), then an earlier place in the catalog. It is total, so the result does
/// not depend on the algorithm: the best `n` are exactly the head of a full stable sort.
impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.id.cmp(other.id))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ranked<'_> {}

/// Ranks the candidates for one visitor; built once per request, shared by its placements.
struct Ranking<'a> {
    /// The eligible candidates, in catalog order.
    eligible: Vec<Ranked<'a>>,
    /// A placement's best candidates while it is ranked (its buffer reused).
    best: BinaryHeap<Ranked<'a>>,
}

impl<'a> Ranking<'a> {
    fn new(catalog: &'a Catalog, tier: Tier) -> Ranking<'a> {
        let eligible: Vec<Ranked> = catalog
            .iter()
            .filter_map(|c| Some(Ranked::new(tier.score(&c)?, c.id, c.index)))
            .collect();
        // The most a placement can keep: every eligible candidate.
        let best = BinaryHeap::with_capacity(eligible.len());
        Ranking { eligible, best }
    }

    /// The placement's items: eligible candidates minus `excluded`, in rank order, cut to
    /// `max_items`; payloads are left empty for the host to fill in.
    ///
    /// One pass keeps the best `max_items` in a heap whose top is the worst of them: a
    /// candidate that does not beat it costs one comparison, one that does `log max_items`,
    /// and only the kept ones are sorted at the end.
    fn items(&mut self, excluded: &[impl AsRef<str>], max_items: u32) -> Vec<Item> {
        let keep = max_items as usize;
        let is_excluded = |r: &Ranked| excluded.iter().any(|e| e.as_ref() == r.id);
        let best = &mut self.best;
        best.clear();
        for r in &self.eligible {
            if best.len() < keep {
                if !is_excluded(r) {
                    best.push(*r);
                }
            } else if let Some(mut worst) = best.peek_mut() {
                if r < &*worst && !is_excluded(r) {
                    // Replacing the top moves it down to its place when `worst` drops.
                    *worst = *r;
                }
            }
        }
        let mut sorted = std::mem::take(best).into_sorted_vec();
        let items = sorted
            .iter()
            .map(|r| Item {
                id: r.id.to_owned(),
                score: r.score,
                payload: String::new(),
            })
            .collect();
        // Hand the buffer back for the next placement.
        sorted.clear();
        *best = BinaryHeap::from(sorted);
        items
    }
}

struct TierPersonalize;

impl Guest for TierPersonalize {
    fn decide(req: Request, catalog: Catalog) -> Result<Vec<Decision>, PluginError> {
        let Request {
            profile,
            placements,
            ..
        } = req;
        let tier = Tier::of(profile.as_ref());
        let audiences = profile.as_ref().map_or(&[][..], |p| &p.audiences[..]);
        let mut ranking = Ranking::new(&catalog, tier);
        placements
            .into_iter()
            .map(|placement| decide_one(placement, tier, audiences, &mut ranking))
            .collect()
    }
}

fn decide_one(
    placement: Placement,
    tier: Tier,
    audiences: &[String],
    ranking: &mut Ranking<'_>,
) -> Result<Decision, PluginError> {
    let constraints = Constraints::read(&placement.constraints, audiences);
    let banner = constraints.banner.map_err(|problem| {
        PluginError::invalid_input(format!(
            "placement {}: constraints.audience_banners{}",
            placement.id,
            problem.describe()
        ))
    })?;
    let items = ranking.items(&constraints.exclude, placement.max_items);

    let (variant_id, content, reason) = match banner {
        Some(b) => (
            b.variant.into_owned(),
            match b.content {
                // Re-serialized compactly with keys sorted, as written by `serde_json`.
                Some(raw) => weft_guest::json::parse(raw.get())?.to_string(),
                None => "{}".to_owned(),
            },
            ["audience=", &b.audience].concat(),
        ),
        None => (
            tier.variant_id().to_owned(),
            tier.content().to_owned(),
            tier.reason().to_owned(),
        ),
    };
    Ok(Decision {
        placement_id: placement.id,
        variant_id,
        experiment_id: None,
        content,
        items,
        ttl_ms: tier.ttl_ms(),
        reason: Some(reason),
    })
}

weft_guest::export_personalization!(TierPersonalize);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::json::{self, json, Value};
    use weft_guest::personalize::{PageContext, PlacementKind};

    fn profile(traits: &str) -> Profile {
        Profile {
            profile_id: "p1".into(),
            identities: vec![],
            traits: traits.into(),
            audiences: vec![],
            timezone: None,
            locale: None,
            consents: vec![],
        }
    }

    fn member_of(traits: &str, audiences: &[&str]) -> Profile {
        Profile {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ..profile(traits)
        }
    }

    fn placement(id: &str, max_items: u32, constraints: &str) -> Placement {
        Placement {
            id: id.into(),
            kind: PlacementKind::ProductList,
            max_items,
            constraints: constraints.into(),
            experiment: None,
        }
    }

    fn request_for(profile: Option<Profile>, placements: Vec<Placement>) -> Request {
        Request {
            request_id: "r1".into(),
            profile,
            page: PageContext {
                url: None,
                path: Some("/".into()),
                referrer: None,
                title: None,
                page_type: Some("home".into()),
                locale: None,
                device_type: None,
                campaign: "{}".into(),
                attributes: "{}".into(),
            },
            placements,
            recent_events: vec![],
            now: 0,
        }
    }

    fn request_with(profile: Option<Profile>, max_items: u32, constraints: &str) -> Request {
        request_for(
            profile,
            vec![placement("home-products", max_items, constraints)],
        )
    }

    fn request(profile: Option<Profile>, max_items: u32) -> Request {
        request_with(profile, max_items, r#"{"exclude":["x"]}"#)
    }

    /// A catalog entry: id, score, tags.
    type Entry = (String, f32, Vec<&'static str>);

    fn candidate(id: &str, score: f32, tags: &[&'static str]) -> Entry {
        (id.to_owned(), score, tags.to_vec())
    }

    fn catalog_of(entries: Vec<Entry>) -> Catalog {
        let mut c = Catalog::new();
        for (id, score, tags) in &entries {
            c.push(id, *score, None, tags);
        }
        c
    }

    fn catalog() -> Catalog {
        catalog_of(vec![
            candidate("a", 0.5, &[]),
            candidate("b", 0.9, &["sale"]),
            candidate("g", 0.1, &["new", "tier:gold"]),
            candidate("s", 0.2, &["tier:silver"]),
            candidate("x", 5.0, &[]),
        ])
    }

    fn decide(req: Request) -> Vec<Decision> {
        TierPersonalize::decide(req, catalog()).unwrap()
    }

    fn ids(d: &Decision) -> Vec<&str> {
        d.items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn gold_gets_gold_variant_and_gold_items_first() {
        let out = decide(request(Some(profile(r#"{"tier":"gold"}"#)), 3));
        assert_eq!(out[0].variant_id, "tier-gold");
        assert_eq!(ids(&out[0]), ["g", "b", "a"]);
        assert_eq!(out[0].items[0].score, 0.1 + OWN_TIER_BOOST);
        assert_eq!(out[0].items[1].score, 0.9);
    }

    #[test]
    fn silver_in_any_case_sees_silver_items_and_no_gold_ones() {
        let out = decide(request(Some(profile(r#"{"tier":"Silver"}"#)), 10));
        assert_eq!(out[0].variant_id, "tier-silver");
        assert_eq!(ids(&out[0]), ["s", "b", "a"]);
    }

    #[test]
    fn anonymous_gets_untagged_items_capped_and_long_ttl() {
        let out = decide(request(None, 1));
        assert_eq!(out[0].variant_id, "anonymous");
        assert_eq!(ids(&out[0]), ["b"]);
        assert_eq!(out[0].ttl_ms, ANONYMOUS_TTL_MS);
    }

    #[test]
    fn other_tier_sees_only_untagged_items_and_empty_catalog_gives_no_items() {
        let bronze = || Some(profile(r#"{"tier":"bronze"}"#));
        let out = decide(request(bronze(), 5));
        assert_eq!(out[0].variant_id, "tier-default");
        assert_eq!(out[0].ttl_ms, KNOWN_TTL_MS);
        assert_eq!(ids(&out[0]), ["b", "a"]);
        let out = TierPersonalize::decide(request(bronze(), 5), Catalog::new()).unwrap();
        assert!(out[0].items.is_empty());
    }

    #[test]
    fn max_items_zero_gives_no_items() {
        let out = decide(request(Some(profile(r#"{"tier":"gold"}"#)), 0));
        assert!(out[0].items.is_empty());
    }

    #[test]
    fn tier_tag_value_matches_in_any_ascii_case_but_its_key_only_exactly() {
        let catalog = vec![
            candidate("upper", 0.1, &["tier:GOLD"]),
            // Not a tier tag: the key is case-sensitive, so this is an untagged item.
            candidate("key-case", 0.2, &["Tier:silver"]),
            candidate("spaced", 0.3, &["tier: gold"]),
        ];
        let out = TierPersonalize::decide(
            request(Some(profile(r#"{"tier":"gold"}"#)), 5),
            catalog_of(catalog),
        )
        .unwrap();
        assert_eq!(ids(&out[0]), ["upper", "key-case"]);
        assert_eq!(out[0].items[0].score, 0.1 + OWN_TIER_BOOST);
        assert_eq!(out[0].items[1].score, 0.2);
    }

    #[test]
    fn item_tagged_for_two_tiers_is_for_both_and_boosted_once() {
        let catalog = || catalog_of(vec![candidate("both", 0.5, &["tier:gold", "tier:silver"])]);
        for tier in ["gold", "silver"] {
            let req = request(Some(profile(&format!(r#"{{"tier":"{tier}"}}"#))), 5);
            let out = TierPersonalize::decide(req, catalog()).unwrap();
            assert_eq!(out[0].items[0].score, 0.5 + OWN_TIER_BOOST, "{tier}");
        }
        let out = TierPersonalize::decide(request(None, 5), catalog()).unwrap();
        assert!(out[0].items.is_empty());
    }

    #[test]
    fn item_tagged_for_an_unknown_tier_is_shown_to_no_one() {
        let catalog = || {
            catalog_of(vec![
                candidate("bronze", 0.9, &["tier:bronze"]),
                candidate("blank", 0.8, &["tier:"]),
            ])
        };
        for traits in [r#"{"tier":"gold"}"#, r#"{"tier":"bronze"}"#, "{}"] {
            let req = request(Some(profile(traits)), 5);
            let out = TierPersonalize::decide(req, catalog()).unwrap();
            assert!(out[0].items.is_empty(), "{traits}");
        }
    }

    #[test]
    fn payload_is_left_empty_for_the_host_to_fill_in() {
        let out = decide(request(None, 5));
        assert!(!out[0].items.is_empty());
        assert!(out[0].items.iter().all(|i| i.payload.is_empty()));
    }

    #[test]
    fn equal_scores_are_ordered_by_id() {
        let catalog = vec![
            candidate("c", 0.5, &[]),
            candidate("a", 0.5, &[]),
            candidate("b", 0.0, &[]),
            candidate("ab", 0.5, &[]),
        ];
        let out = TierPersonalize::decide(request(None, 5), catalog_of(catalog)).unwrap();
        assert_eq!(ids(&out[0]), ["a", "ab", "c", "b"]);
    }

    #[test]
    fn equal_score_and_id_rank_by_place_in_the_catalog() {
        let first = Ranked::new(0.5, "a", 1);
        let later = Ranked::new(0.5, "a", 3);
        assert!(first < later);
        assert!(Ranked::new(0.6, "z", 9) < first, "score decides first");
        assert!(Ranked::new(0.5, "A", 9) < first, "then the id, byte-wise");
    }

    #[test]
    fn top_items_equal_the_head_of_a_full_stable_sort() {
        // 200 candidates with many equal scores and ids, some tier-tagged.
        let entries: Vec<Entry> = (0..200u32)
            .map(|i| {
                let tags: &[&str] = match i % 6 {
                    0 => &["tier:gold"],
                    1 => &["tier:silver"],
                    _ => &[],
                };
                candidate(&format!("sku-{}", i % 37), (i % 7) as f32 / 10.0, tags)
            })
            .collect();
        let catalog = catalog_of(entries);
        let tier = Tier::Gold;
        let mut expected: Vec<(f32, &str)> = catalog
            .iter()
            .filter_map(|c| Some((tier.score(&c)?, c.id)))
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        for max_items in [1, 2, 5, 17, 100, 150, 1000] {
            let req = request_with(Some(profile(r#"{"tier":"gold"}"#)), max_items, "{}");
            let out = TierPersonalize::decide(req, catalog.clone()).unwrap();
            let got: Vec<(f32, &str)> = out[0]
                .items
                .iter()
                .map(|i| (i.score, i.id.as_str()))
                .collect();
            let want = &expected[..expected.len().min(max_items as usize)];
            assert_eq!(got, want, "max_items {max_items}");
        }
    }

    #[test]
    fn rank_key_orders_scores_like_total_cmp_reversed() {
        let scores = [
            f32::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
            0.49,
            0.5,
            1.5,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
        ];
        for a in scores {
            for b in scores {
                let (ka, kb) = (Ranked::new(a, "", 0).key, Ranked::new(b, "", 0).key);
                assert_eq!(ka.cmp(&kb), b.total_cmp(&a), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn exclude_drops_string_ids_and_ignores_everything_else() {
        for (constraints, expected) in [
            (
                r#"{"exclude":["b",7,null,{"id":"a"},"s"]}"#,
                &["x", "a"][..],
            ),
            (r#"{"exclude":"b"}"#, &["x", "b", "a"][..]),
            (r#"{"exclude":{"b":true}}"#, &["x", "b", "a"][..]),
            // Of a key given twice, the last one counts.
            (r#"{"exclude":["a"],"exclude":["x"]}"#, &["b", "a"][..]),
        ] {
            let out = decide(request_with(None, 10, constraints));
            assert_eq!(ids(&out[0]), expected, "{constraints}");
        }
    }

    #[test]
    fn malformed_or_non_object_constraints_count_as_empty() {
        let banners = r#"{"exclude":["x"],"audience_banners":7"#;
        for constraints in ["", "not json", "[1,2]", r#""x""#, banners] {
            let out = decide(request_with(
                Some(member_of("{}", &["vip"])),
                10,
                constraints,
            ));
            assert_eq!(out[0].variant_id, "tier-default", "{constraints}");
            assert_eq!(ids(&out[0]), ["x", "b", "a"], "{constraints}");
        }
    }

    #[test]
    fn tier_trait_counts_only_as_a_string_in_any_case() {
        for (traits, tier) in [
            (r#"{"tier":"GOLD","name":"Lan"}"#, Tier::Gold),
            (r#"{"name":{"tier":"gold"},"tier":"silver"}"#, Tier::Silver),
            (r#"{"tier":"\u0067old"}"#, Tier::Gold),
            (r#"{"tier":"gold","tier":"silver"}"#, Tier::Silver),
            (r#"{"tier":["gold"]}"#, Tier::Other),
            (r#"{"tier":1}"#, Tier::Other),
            (r#"{"tier":null}"#, Tier::Other),
            (r#"{"tier":"gold"} trailing"#, Tier::Other),
            (r#"["tier","gold"]"#, Tier::Other),
            ("", Tier::Other),
        ] {
            assert_eq!(Tier::of(Some(&profile(traits))), tier, "{traits}");
        }
        assert_eq!(Tier::of(None), Tier::Anonymous);
    }

    #[test]
    fn each_placement_gets_its_own_decision_in_order() {
        let req = request_for(
            Some(profile(r#"{"tier":"gold"}"#)),
            vec![
                placement("hero", 1, r#"{"exclude":["g"]}"#),
                placement("recs", 3, "{}"),
            ],
        );
        let out = decide(req);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].placement_id, "hero");
        assert_eq!(ids(&out[0]), ["x"]);
        assert_eq!(out[1].placement_id, "recs");
        assert_eq!(ids(&out[1]), ["x", "g", "b"]);
    }

    #[test]
    fn tier_content_is_the_documented_json_object() {
        let expected = [
            (
                Tier::Gold,
                json!({"tier": "gold", "headline": "Ưu đãi riêng cho thành viên Vàng", "discount_percent": 10}),
            ),
            (
                Tier::Silver,
                json!({"tier": "silver", "headline": "Ưu đãi cho thành viên Bạc", "discount_percent": 5}),
            ),
            (
                Tier::Other,
                json!({"tier": "member", "headline": "Sản phẩm dành cho bạn"}),
            ),
            (
                Tier::Anonymous,
                json!({"tier": "anonymous", "headline": "Sản phẩm nổi bật"}),
            ),
        ];
        for (tier, value) in expected {
            // Byte for byte what serde_json writes, so the text is what it always was.
            assert_eq!(tier.content(), value.to_string(), "{tier:?}");
        }
    }

    const BANNERS: &str = r#"{"exclude":["x"],"audience_banners":[
        {"audience":"tet-shoppers","variant":"tet","content":{"headline":"Tết sale"}},
        {"audience":"vip","variant":"vip-hero","content":{"headline":"VIP"}},
        {"audience":"new","variant":"welcome"}
    ]}"#;

    #[test]
    fn gold_visitor_in_audience_gets_audience_banner_and_tier_ranking() {
        let gold_vip = member_of(r#"{"tier":"gold"}"#, &["vip"]);
        let out = decide(request_with(Some(gold_vip), 3, BANNERS));
        assert_eq!(out[0].variant_id, "vip-hero");
        assert_eq!(out[0].content, r#"{"headline":"VIP"}"#);
        assert_eq!(out[0].reason.as_deref(), Some("audience=vip"));
        assert_eq!(out[0].ttl_ms, KNOWN_TTL_MS);
        assert_eq!(out[0].experiment_id, None);
        // Items exactly as for any gold visitor.
        assert_eq!(ids(&out[0]), ["g", "b", "a"]);
    }

    #[test]
    fn first_matching_audience_banner_in_list_order_wins() {
        // The profile lists `vip` first, but `tet-shoppers` comes first in the constraint.
        let both = member_of(r#"{"tier":"silver"}"#, &["vip", "tet-shoppers"]);
        let out = decide(request_with(Some(both), 10, BANNERS));
        assert_eq!(out[0].variant_id, "tet");
        assert_eq!(out[0].reason.as_deref(), Some("audience=tet-shoppers"));
        assert_eq!(ids(&out[0]), ["s", "b", "a"]);
    }

    #[test]
    fn audience_banner_without_content_gives_empty_object() {
        let newcomer = member_of("{}", &["new"]);
        let out = decide(request_with(Some(newcomer), 10, BANNERS));
        assert_eq!(out[0].variant_id, "welcome");
        assert_eq!(out[0].content, "{}");
    }

    #[test]
    fn audience_banner_content_is_reserialized_compactly_with_sorted_keys() {
        let constraints = r#"{"audience_banners":[{"content": { "z": [1, 2], "a": "\u0041" },
            "variant":"v","audience":"vip"}]}"#;
        let out = decide(request_with(
            Some(member_of("{}", &["vip"])),
            1,
            constraints,
        ));
        assert_eq!(out[0].content, r#"{"a":"A","z":[1,2]}"#);
        let parsed: Value = json::parse(&out[0].content).unwrap();
        assert_eq!(parsed, json!({"a": "A", "z": [1, 2]}));
    }

    #[test]
    fn visitor_outside_every_audience_gets_tier_variant() {
        let gold = member_of(r#"{"tier":"gold"}"#, &["other", "VIP"]);
        let out = decide(request_with(Some(gold), 3, BANNERS));
        assert_eq!(out[0].variant_id, "tier-gold");
        assert_eq!(out[0].content, Tier::Gold.content());
        assert_eq!(out[0].reason.as_deref(), Some("tier=tier-gold"));
    }

    #[test]
    fn anonymous_visitor_gets_anonymous_variant_despite_audience_banners() {
        let out = decide(request_with(None, 3, BANNERS));
        assert_eq!(out[0].variant_id, "anonymous");
        assert_eq!(out[0].ttl_ms, ANONYMOUS_TTL_MS);
    }

    #[test]
    fn malformed_audience_banners_are_invalid_input_naming_the_problem() {
        let vip = || Some(member_of("{}", &["vip"]));
        for (constraints, problem) in [
            (
                r#"{"audience_banners":{"vip":"x"}}"#,
                "constraints.audience_banners is not an array",
            ),
            (
                r#"{"audience_banners":null}"#,
                "constraints.audience_banners is not an array",
            ),
            (
                r#"{"audience_banners":[{"audience":"vip","variant":"v"},"vip"]}"#,
                "constraints.audience_banners[1] is not an object",
            ),
            (
                r#"{"audience_banners":[{"variant":"v"}]}"#,
                "constraints.audience_banners[0] has no string `audience`",
            ),
            (
                r#"{"audience_banners":[{"audience":"vip","variant":7}]}"#,
                "constraints.audience_banners[0] has no string `variant`",
            ),
            (
                r#"{"audience_banners":[{"audience":"vip","variant":"v","content":"hi"}]}"#,
                "constraints.audience_banners[0] has a `content` that is not an object",
            ),
            (
                r#"{"audience_banners":[{"audience":"vip","variant":"v","content":null}]}"#,
                "constraints.audience_banners[0] has a `content` that is not an object",
            ),
            (
                // The first problem in entry order wins, then in field order.
                r#"{"audience_banners":[{"audience":"a","variant":"v"},{"content":1},[]]}"#,
                "constraints.audience_banners[1] has no string `audience`",
            ),
        ] {
            for visitor in [vip(), None] {
                let req = request_with(visitor, 3, constraints);
                let err = TierPersonalize::decide(req, catalog()).unwrap_err();
                let PluginError::InvalidInput(message) = &err else {
                    panic!("{constraints}: {err:?}");
                };
                assert_eq!(
                    message,
                    &format!("placement home-products: {problem}"),
                    "{constraints}"
                );
            }
        }
    }
}
