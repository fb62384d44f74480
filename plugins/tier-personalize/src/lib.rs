//! Example personalizer: picks each placement's variant by the visitor's loyalty tier, or
//! by an audience banner the tenant configured for one of the visitor's audiences, and
//! ranks the host-supplied candidates by tier, capped at the placement's `max-items`.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all. The candidates
//! are parsed once per request and borrowed by every placement; an item's payload is only
//! serialized once it has made the cut.

use serde::Deserialize;
use weft_guest::json::{self, Map, Value};
use weft_guest::personalize::{Decision, Guest, Item, Placement, PluginError, Request};
use weft_guest::types::Profile;

/// How long the edge may cache a decision for a known visitor: one minute.
const KNOWN_TTL_MS: u32 = 60_000;
/// How long the edge may cache the anonymous default: five minutes.
const ANONYMOUS_TTL_MS: u32 = 300_000;
/// Added to a tier-tagged item's score so the visitor's own tier's items lead the list
/// (candidate scores are in 0..1 by convention, so +1.0 outranks every untagged item).
const OWN_TIER_BOOST: f32 = 1.0;

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
        match profile
            .trait_str("tier")
            .map(|t| t.to_ascii_lowercase())
            .as_deref()
        {
            Some("gold") => Tier::Gold,
            Some("silver") => Tier::Silver,
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

    /// The value an item's `tier` field must have to be shown to this visitor.
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
}

/// One candidate: `{"id": …, "score"?: number, "tier"?: "gold" | "silver" | …}`, borrowed
/// from the parsed catalog; the whole object travels on as the item's payload.
#[derive(Debug)]
struct Candidate<'a> {
    id: &'a str,
    score: f32,
    tier: Option<&'a str>,
    raw: &'a Value,
}

/// The fields of a candidate this plugin reads; the rest is payload.
#[derive(Deserialize)]
struct CandidateFields<'a> {
    id: &'a str,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default, borrow)]
    tier: Option<&'a str>,
}

impl<'a> Candidate<'a> {
    fn parse(raw: &'a Value) -> Result<Self, PluginError> {
        let fields = CandidateFields::deserialize(raw)?;
        Ok(Candidate {
            id: fields.id,
            score: fields.score.unwrap_or(0.0),
            tier: fields.tier,
            raw,
        })
    }
}

/// One entry of a placement's `constraints.audience_banners`.
#[derive(Debug)]
struct AudienceBanner<'a> {
    audience: &'a str,
    variant: &'a str,
    content: Option<&'a Value>,
}

impl<'a> AudienceBanner<'a> {
    /// Checks one entry: an object with string `audience` and `variant` and, if present, an
    /// object `content`.
    fn parse(placement: &str, index: usize, entry: &'a Value) -> Result<Self, PluginError> {
        let invalid = |what: &str| {
            PluginError::invalid_input(format!(
                "placement {placement}: constraints.audience_banners[{index}] {what}"
            ))
        };
        let entry = entry
            .as_object()
            .ok_or_else(|| invalid("is not an object"))?;
        let audience = entry
            .get("audience")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("has no string `audience`"))?;
        let variant = entry
            .get("variant")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("has no string `variant`"))?;
        let content = match entry.get("content") {
            None => None,
            Some(c) if c.is_object() => Some(c),
            Some(_) => return Err(invalid("has a `content` that is not an object")),
        };
        Ok(AudienceBanner {
            audience,
            variant,
            content,
        })
    }
}

/// The first `audience_banners` entry (in list order) whose `audience` the visitor is in.
/// Every entry is checked, matched or not, so a misconfigured placement fails for every
/// visitor rather than only for some audiences.
fn audience_banner<'a>(
    placement: &str,
    constraints: &'a Map<String, Value>,
    audiences: &[String],
) -> Result<Option<AudienceBanner<'a>>, PluginError> {
    let Some(entries) = constraints.get("audience_banners") else {
        return Ok(None);
    };
    let entries = entries.as_array().ok_or_else(|| {
        PluginError::invalid_input(format!(
            "placement {placement}: constraints.audience_banners is not an array"
        ))
    })?;
    let mut chosen = None;
    for (index, entry) in entries.iter().enumerate() {
        let banner = AudienceBanner::parse(placement, index, entry)?;
        if chosen.is_none() && audiences.iter().any(|a| a == banner.audience) {
            chosen = Some(banner);
        }
    }
    Ok(chosen)
}

struct TierPersonalize;

impl Guest for TierPersonalize {
    fn decide(req: Request) -> Result<Vec<Decision>, PluginError> {
        let tier = Tier::of(req.profile.as_ref());
        let audiences = req.profile.as_ref().map_or(&[][..], |p| &p.audiences[..]);
        let catalog = req.candidate_list()?;
        let candidates = catalog
            .iter()
            .map(Candidate::parse)
            .collect::<Result<Vec<_>, _>>()?;
        req.placements
            .iter()
            .map(|placement| decide_one(placement, tier, audiences, &candidates))
            .collect()
    }
}

fn decide_one(
    placement: &Placement,
    tier: Tier,
    audiences: &[String],
    candidates: &[Candidate<'_>],
) -> Result<Decision, PluginError> {
    let constraints = json::object_or_empty(&placement.constraints);
    let banner = audience_banner(&placement.id, &constraints, audiences)?;
    let excluded: Vec<&str> = constraints
        .get("exclude")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();

    // Items tagged with a tier are only for that tier; the visitor's own tier's items get
    // a boost so they lead the list. Rank references first, build items for the cut only.
    let mut ranked: Vec<(f32, &Candidate<'_>)> = candidates
        .iter()
        .filter(|c| !excluded.contains(&c.id))
        .filter(|c| match c.tier {
            None => true,
            Some(t) => tier.name().is_some_and(|mine| t.eq_ignore_ascii_case(mine)),
        })
        .map(|c| {
            let boost = if c.tier.is_some() {
                OWN_TIER_BOOST
            } else {
                0.0
            };
            (c.score + boost, c)
        })
        .collect();
    // Highest score first; ties by id so the order is stable across calls (a stable sort:
    // equal score and id keep catalog order).
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

    let (variant_id, content, reason) = match banner {
        Some(b) => (
            b.variant.to_owned(),
            b.content.map_or_else(|| "{}".to_owned(), Value::to_string),
            format!("audience={}", b.audience),
        ),
        None => (
            tier.variant_id().to_owned(),
            tier.content().to_owned(),
            format!("tier={}", tier.variant_id()),
        ),
    };
    Ok(Decision {
        placement_id: placement.id.clone(),
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

    fn request(profile: Option<Profile>, candidates: &str, max_items: u32) -> Request {
        request_with(profile, candidates, max_items, r#"{"exclude":["x"]}"#)
    }

    fn request_with(
        profile: Option<Profile>,
        candidates: &str,
        max_items: u32,
        constraints: &str,
    ) -> Request {
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
            placements: vec![Placement {
                id: "home-products".into(),
                kind: PlacementKind::ProductList,
                max_items,
                constraints: constraints.into(),
                experiment: None,
            }],
            recent_events: vec![],
            candidates: candidates.into(),
            now: 0,
        }
    }

    const CANDIDATES: &str = r#"[
        {"id":"a","score":0.5},
        {"id":"b","score":0.9},
        {"id":"g","score":0.1,"tier":"gold"},
        {"id":"s","score":0.2,"tier":"silver"},
        {"id":"x","score":5.0}
    ]"#;

    fn ids(d: &Decision) -> Vec<&str> {
        d.items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn gold_gets_gold_variant_and_gold_items_first() {
        let out =
            TierPersonalize::decide(request(Some(profile(r#"{"tier":"gold"}"#)), CANDIDATES, 3))
                .unwrap();
        assert_eq!(out[0].variant_id, "tier-gold");
        assert_eq!(ids(&out[0]), ["g", "b", "a"]);
    }

    #[test]
    fn silver_sees_no_gold_items() {
        let out = TierPersonalize::decide(request(
            Some(profile(r#"{"tier":"Silver"}"#)),
            CANDIDATES,
            10,
        ))
        .unwrap();
        assert_eq!(out[0].variant_id, "tier-silver");
        assert_eq!(ids(&out[0]), ["s", "b", "a"]);
    }

    #[test]
    fn anonymous_gets_default_untagged_items_capped() {
        let out = TierPersonalize::decide(request(None, CANDIDATES, 1)).unwrap();
        assert_eq!(out[0].variant_id, "anonymous");
        assert_eq!(ids(&out[0]), ["b"]);
        assert_eq!(out[0].ttl_ms, ANONYMOUS_TTL_MS);
    }

    #[test]
    fn other_tier_and_empty_candidates() {
        let out =
            TierPersonalize::decide(request(Some(profile(r#"{"tier":"bronze"}"#)), "", 5)).unwrap();
        assert_eq!(out[0].variant_id, "tier-default");
        assert!(out[0].items.is_empty());
    }

    #[test]
    fn non_array_candidates_are_invalid_input() {
        let err = TierPersonalize::decide(request(None, "42", 5)).unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)));
    }

    #[test]
    fn candidate_without_string_id_is_invalid_input() {
        let err = TierPersonalize::decide(request(None, r#"[{"score":1}]"#, 5)).unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)), "{err:?}");
    }

    #[test]
    fn candidates_may_come_as_an_items_object_and_payload_is_the_whole_candidate() {
        let out = TierPersonalize::decide(request(
            None,
            r#"{"items":[{"id":"a","score":0.5,"name":"Áo dài","price":450000}]}"#,
            5,
        ))
        .unwrap();
        assert_eq!(ids(&out[0]), ["a"]);
        assert_eq!(out[0].items[0].score, 0.5);
        let payload: Value = json::parse(&out[0].items[0].payload).unwrap();
        assert_eq!(payload["name"], "Áo dài");
        assert_eq!(payload["price"], 450000);
    }

    #[test]
    fn equal_scores_are_ordered_by_id() {
        let out = TierPersonalize::decide(request(
            None,
            r#"[{"id":"c","score":0.5},{"id":"a","score":0.5},{"id":"b"}]"#,
            5,
        ))
        .unwrap();
        assert_eq!(ids(&out[0]), ["a", "c", "b"]);
    }

    #[test]
    fn tier_content_is_the_documented_json_object() {
        use weft_guest::json::json;
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
        let out =
            TierPersonalize::decide(request_with(Some(gold_vip), CANDIDATES, 3, BANNERS)).unwrap();
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
        let out =
            TierPersonalize::decide(request_with(Some(both), CANDIDATES, 10, BANNERS)).unwrap();
        assert_eq!(out[0].variant_id, "tet");
        assert_eq!(out[0].reason.as_deref(), Some("audience=tet-shoppers"));
        assert_eq!(ids(&out[0]), ["s", "b", "a"]);
    }

    #[test]
    fn audience_banner_without_content_gives_empty_object() {
        let newcomer = member_of("{}", &["new"]);
        let out =
            TierPersonalize::decide(request_with(Some(newcomer), CANDIDATES, 10, BANNERS)).unwrap();
        assert_eq!(out[0].variant_id, "welcome");
        assert_eq!(out[0].content, "{}");
    }

    #[test]
    fn visitor_outside_every_audience_gets_tier_variant() {
        let gold = member_of(r#"{"tier":"gold"}"#, &["other", "VIP"]);
        let out =
            TierPersonalize::decide(request_with(Some(gold), CANDIDATES, 3, BANNERS)).unwrap();
        assert_eq!(out[0].variant_id, "tier-gold");
        assert_eq!(out[0].content, Tier::Gold.content());
        assert_eq!(out[0].reason.as_deref(), Some("tier=tier-gold"));
    }

    #[test]
    fn anonymous_visitor_gets_anonymous_variant_despite_audience_banners() {
        let out = TierPersonalize::decide(request_with(None, CANDIDATES, 3, BANNERS)).unwrap();
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
        ] {
            let err = TierPersonalize::decide(request_with(vip(), CANDIDATES, 3, constraints))
                .unwrap_err();
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
