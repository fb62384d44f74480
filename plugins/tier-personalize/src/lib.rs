//! Example personalizer: picks each placement's variant by the visitor's loyalty tier and
//! ranks the host-supplied candidates, capped at the placement's `max-items`.
//!
//! Pure and fast: no host calls, so it imports no Weft capability at all.

use serde::Deserialize;
use weft_guest::json::{self, json, Value};
use weft_guest::personalize::{Decision, Guest, Item, Placement, PluginError, Request};
use weft_guest::types::Profile;

/// How long the edge may cache a decision for a known visitor: one minute.
const KNOWN_TTL_MS: u32 = 60_000;
/// How long the edge may cache the anonymous default: five minutes.
const ANONYMOUS_TTL_MS: u32 = 300_000;

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

    /// Template variables for content blocks, banners and offers.
    fn content(self) -> Value {
        match self {
            Tier::Gold => {
                json!({"tier": "gold", "headline": "Ưu đãi riêng cho thành viên Vàng", "discount_percent": 10})
            }
            Tier::Silver => {
                json!({"tier": "silver", "headline": "Ưu đãi cho thành viên Bạc", "discount_percent": 5})
            }
            Tier::Other => json!({"tier": "member", "headline": "Sản phẩm dành cho bạn"}),
            Tier::Anonymous => json!({"tier": "anonymous", "headline": "Sản phẩm nổi bật"}),
        }
    }
}

/// One candidate: `{"id": …, "score"?: number, "tier"?: "gold" | "silver" | …}`; any other
/// fields travel on as the item's payload.
#[derive(Debug, Deserialize)]
struct Candidate {
    id: String,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default)]
    tier: Option<String>,
}

struct TierPersonalize;

impl Guest for TierPersonalize {
    fn decide(req: Request) -> Result<Vec<Decision>, PluginError> {
        let tier = Tier::of(req.profile.as_ref());
        let candidates = parse_candidates(&req.candidates)?;
        Ok(req
            .placements
            .iter()
            .map(|placement| decide_one(placement, tier, &candidates))
            .collect())
    }
}

/// Candidates are a JSON array, or an object with an `items` array; empty means none.
fn parse_candidates(text: &str) -> Result<Vec<(Candidate, Value)>, PluginError> {
    let value = json::parse(text)?;
    let list = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            None => Vec::new(),
            Some(_) => {
                return Err(PluginError::invalid_input(
                    "candidates.items is not an array",
                ))
            }
        },
        _ => {
            return Err(PluginError::invalid_input(
                "candidates must be a JSON array",
            ))
        }
    };
    list.into_iter()
        .map(|raw| {
            let candidate: Candidate = json::from(&raw.to_string())?;
            Ok((candidate, raw))
        })
        .collect()
}

fn decide_one(placement: &Placement, tier: Tier, candidates: &[(Candidate, Value)]) -> Decision {
    let excluded: Vec<String> = placement
        .constraints_value()
        .get("exclude")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();

    // Items tagged with a tier are only for that tier; the visitor's own tier's items get
    // a boost of 1.0 so they lead the list.
    let mut items: Vec<Item> = candidates
        .iter()
        .filter(|(c, _)| !excluded.contains(&c.id))
        .filter(|(c, _)| match c.tier.as_deref() {
            None => true,
            Some(t) => tier.name().is_some_and(|mine| t.eq_ignore_ascii_case(mine)),
        })
        .map(|(c, raw)| Item {
            id: c.id.clone(),
            score: c.score.unwrap_or(0.0) + if c.tier.is_some() { 1.0 } else { 0.0 },
            payload: raw.to_string(),
        })
        .collect();
    // Highest score first; ties by id so the order is stable across calls.
    items.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    items.truncate(placement.max_items as usize);

    Decision {
        placement_id: placement.id.clone(),
        variant_id: tier.variant_id().into(),
        experiment_id: None,
        content: tier.content().to_string(),
        items,
        ttl_ms: if tier == Tier::Anonymous {
            ANONYMOUS_TTL_MS
        } else {
            KNOWN_TTL_MS
        },
        reason: Some(format!("tier={}", tier.variant_id())),
    }
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

    fn request(profile: Option<Profile>, candidates: &str, max_items: u32) -> Request {
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
                constraints: r#"{"exclude":["x"]}"#.into(),
            }],
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
}
