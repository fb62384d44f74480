//! A tenant's personalization settings (`GET/PUT /v1/personalize/settings`): which plugin
//! decides, which websites may ask, the placements pages may request with their default
//! content and experiments, and the candidate catalog handed to the plugin.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::runtime::bindings::exports::personalize as wit;
use crate::runtime::catalog::{self, Candidate, Catalog, CatalogBuilder};

/// Where the settings live in the tenant's space.
pub const SETTINGS_KEY: &[u8] = b"pz/settings";

/// Largest settings document: it is one sled value, kept under the 64 KiB value cap.
pub const MAX_SETTINGS_BYTES: usize = 60 * 1024;

/// Most placements a tenant configures: a site has a few dozen slots, not thousands.
const MAX_PLACEMENTS: usize = 100;

/// Most items one placement may show: a carousel, not a catalog page.
const MAX_ITEMS: u32 = 100;

/// Items a placement shows when `max_items` is not given.
const DEFAULT_MAX_ITEMS: u32 = 10;

/// How long a page may cache a default decision: one minute, as the example plugins do
/// for known visitors.
const DEFAULT_TTL_MS: u32 = 60_000;

/// Most variants in one experiment: beyond ten, no arm gets enough traffic to measure.
const MAX_VARIANTS: usize = 10;

/// Largest variant weight; weights are relative, so 10,000 allows 0.01% arms.
const MAX_WEIGHT: u32 = 10_000;

/// Longest candidate id, category or tag: SKUs and labels, not prose.
const MAX_LABEL_BYTES: usize = 128;

/// Most tags on one candidate.
const MAX_TAGS: usize = 32;

/// What a placement holds (the WIT `placement-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// A block of content.
    ContentBlock,
    /// An offer or coupon.
    Offer,
    /// A ranked list of products.
    ProductList,
    /// A banner.
    Banner,
    /// A variant of a message.
    MessageVariant,
}

impl From<PlacementKind> for wit::PlacementKind {
    fn from(k: PlacementKind) -> Self {
        match k {
            PlacementKind::ContentBlock => wit::PlacementKind::ContentBlock,
            PlacementKind::Offer => wit::PlacementKind::Offer,
            PlacementKind::ProductList => wit::PlacementKind::ProductList,
            PlacementKind::Banner => wit::PlacementKind::Banner,
            PlacementKind::MessageVariant => wit::PlacementKind::MessageVariant,
        }
    }
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Variant id.
    pub id: String,
    /// Relative share of visitors (1–10,000).
    pub weight: u32,
}

/// An A/B test on a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment id, recorded on `Experiment Viewed`.
    pub id: String,
    /// Its arms.
    pub variants: Vec<Variant>,
}

/// An item of a default decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultItem {
    /// Item id.
    pub id: String,
    /// Score.
    #[serde(default)]
    pub score: f32,
    /// Item data.
    #[serde(default)]
    pub payload: Value,
}

/// What a page gets when the plugin cannot answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDecision {
    /// Variant id.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Block or template variables.
    #[serde(default)]
    pub content: Map<String, Value>,
    /// Items.
    #[serde(default)]
    pub items: Vec<DefaultItem>,
    /// How long the page may cache it.
    #[serde(default = "default_ttl")]
    pub ttl_ms: u32,
}

fn default_variant() -> String {
    "default".into()
}
fn default_ttl() -> u32 {
    DEFAULT_TTL_MS
}
fn default_max_items() -> u32 {
    DEFAULT_MAX_ITEMS
}

impl Default for DefaultDecision {
    fn default() -> Self {
        DefaultDecision {
            variant: default_variant(),
            content: Map::new(),
            items: Vec::new(),
            ttl_ms: DEFAULT_TTL_MS,
        }
    }
}

/// A slot pages may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Id the page uses.
    pub id: String,
    /// What it holds.
    pub kind: PlacementKind,
    /// Most items.
    #[serde(default = "default_max_items")]
    pub max_items: u32,
    /// Passed to the plugin.
    #[serde(default)]
    pub constraints: Map<String, Value>,
    /// An A/B test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
    /// The fail-open answer.
    #[serde(default)]
    pub default: DefaultDecision,
}

/// A tenant's personalization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The personalization plugin to run; `None` means the tenant's only active one.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Origins whose pages may call `/v1/personalize`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Placements.
    #[serde(default)]
    pub placements: Vec<PlacementConfig>,
    /// The catalog every request hands to the plugin: objects with a string `id` and
    /// optional `score`, `category` and `tags`; the whole object is the item's payload.
    #[serde(default)]
    pub candidates: Vec<Map<String, Value>>,
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{id}`: use 1 to 64 of a-z, 0-9, `-`, `_` and `.`"
        ))
    }
}

impl Settings {
    /// Reads settings from a JSON document; a wrong type or an unknown field is named.
    pub fn from_json(v: Value) -> Result<Settings, String> {
        let Value::Object(map) = v else {
            return Err("the settings must be a JSON object".into());
        };
        let mut s = Settings::default();
        for (k, v) in map {
            let wrong = |e: serde_json::Error| format!("{k}: {e}");
            match k.as_str() {
                "plugin" => s.plugin = serde_json::from_value(v).map_err(wrong)?,
                "allowed_origins" => s.allowed_origins = serde_json::from_value(v).map_err(wrong)?,
                "placements" => s.placements = serde_json::from_value(v).map_err(wrong)?,
                "candidates" => s.candidates = serde_json::from_value(v).map_err(wrong)?,
                other => {
                    return Err(format!(
                        "unknown field `{other}`; expected plugin, allowed_origins, placements or candidates"
                    ))
                }
            }
        }
        Ok(s)
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&mut self) -> Result<(), String> {
        if let Some(p) = &self.plugin {
            crate::registry::check_name(p).map_err(|e| format!("plugin: {e}"))?;
        }
        crate::origins::normalize("allowed_origins", &mut self.allowed_origins)?;
        if self.placements.len() > MAX_PLACEMENTS {
            return Err(format!(
                "placements has {} entries; at most {MAX_PLACEMENTS}",
                self.placements.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.placements {
            check_id("placement id", &p.id)?;
            if !seen.insert(p.id.as_str()) {
                return Err(format!("placement `{}` is listed twice", p.id));
            }
            if p.max_items > MAX_ITEMS {
                return Err(format!(
                    "placement `{}`: max_items {} exceeds {MAX_ITEMS}",
                    p.id, p.max_items
                ));
            }
            if p.default.items.len() > p.max_items as usize {
                return Err(format!(
                    "placement `{}`: the default has {} items but max_items is {}",
                    p.id,
                    p.default.items.len(),
                    p.max_items
                ));
            }
            if let Some(e) = &p.experiment {
                check_id("experiment id", &e.id)?;
                if !(2..=MAX_VARIANTS).contains(&e.variants.len()) {
                    return Err(format!(
                        "experiment `{}`: give 2 to {MAX_VARIANTS} variants",
                        e.id
                    ));
                }
                let mut ids = std::collections::HashSet::new();
                for v in &e.variants {
                    check_id("variant id", &v.id)?;
                    if !ids.insert(v.id.as_str()) {
                        return Err(format!("experiment `{}`: variant `{}` twice", e.id, v.id));
                    }
                    if !(1..=MAX_WEIGHT).contains(&v.weight) {
                        return Err(format!(
                            "experiment `{}`: variant `{}` weight must be 1 to {MAX_WEIGHT}",
                            e.id, v.id
                        ));
                    }
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, c) in self.candidates.iter().enumerate() {
            let candidate = to_candidate(c).map_err(|e| format!("candidates[{i}]: {e}"))?;
            if !ids.insert(candidate.id) {
                return Err(format!("candidates[{i}]: id `{}` appears twice", c["id"]));
            }
        }
        Ok(())
    }
}

fn label(v: &Value, field: &str) -> Result<String, String> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= MAX_LABEL_BYTES => Ok(s.to_string()),
        _ => Err(format!(
            "`{field}` must be a string of 1 to {MAX_LABEL_BYTES} bytes"
        )),
    }
}

/// The fields ranking reads from a catalog entry; the error names the bad field.
fn to_candidate(c: &Map<String, Value>) -> Result<Candidate, String> {
    let id = label(c.get("id").unwrap_or(&Value::Null), "id")?;
    let score = match c.get("score") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0) as f32,
        Some(_) => return Err("`score` must be a number".into()),
    };
    let category = match c.get("category") {
        None | Some(Value::Null) => None,
        Some(v) => Some(label(v, "category")?),
    };
    let tags = match c.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_TAGS => list
            .iter()
            .map(|t| label(t, "tags[]"))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "`tags` must be an array of at most {MAX_TAGS} strings"
            ))
        }
    };
    Ok(Candidate {
        id,
        score,
        category,
        tags,
    })
}

/// The settings ready for the hot path: WIT placements built once, defaults encoded once.
#[derive(Debug)]
pub struct Compiled {
    /// As stored.
    pub settings: Settings,
    /// Placement index by id.
    pub index: HashMap<String, usize>,
    /// The WIT placement of each configured placement (experiment filled per request).
    pub wit: Vec<wit::Placement>,
    /// Each placement's default decision as JSON fragments (`content` and `items`).
    pub defaults: Vec<EncodedDefault>,
    /// The catalog as the plugin receives it, built once.
    pub catalog: std::sync::Arc<Catalog>,
    /// Each candidate's whole entry, as the payload of an item the plugin left empty.
    pub payloads: HashMap<String, Box<serde_json::value::RawValue>>,
}

/// A default decision with its JSON parts pre-encoded.
#[derive(Debug)]
pub struct EncodedDefault {
    /// Variant id.
    pub variant: String,
    /// `content` as JSON.
    pub content: Box<serde_json::value::RawValue>,
    /// `items` as JSON.
    pub items: Box<serde_json::value::RawValue>,
    /// TTL.
    pub ttl_ms: u32,
}

fn raw(v: &impl Serialize) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).expect("JSON values always encode")
}

impl Compiled {
    /// Prepares validated settings.
    pub fn new(settings: Settings) -> Compiled {
        let index = settings
            .placements
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let wit = settings
            .placements
            .iter()
            .map(|p| wit::Placement {
                id: p.id.clone(),
                kind: p.kind.into(),
                max_items: p.max_items,
                constraints: Value::Object(p.constraints.clone()).to_string(),
                experiment: None,
            })
            .collect();
        let defaults = settings
            .placements
            .iter()
            .map(|p| EncodedDefault {
                variant: p.default.variant.clone(),
                content: raw(&p.default.content),
                items: raw(&p.default.items),
                ttl_ms: p.default.ttl_ms,
            })
            .collect();
        // Validated settings hold at most 60 KiB, far below the catalog's 4 GiB limit.
        let candidates = settings
            .candidates
            .iter()
            .filter_map(|c| to_candidate(c).ok());
        let catalog = catalog::from_candidates(candidates).unwrap_or_else(|_| {
            tracing::error!("personalization catalog over 4 GiB; the plugin gets none");
            CatalogBuilder::new().build()
        });
        let payloads = settings
            .candidates
            .iter()
            .filter_map(|c| Some((c.get("id")?.as_str()?.to_string(), raw(c))))
            .collect();
        Compiled {
            settings,
            index,
            wit,
            defaults,
            catalog: std::sync::Arc::new(catalog),
            payloads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Settings, String> {
        let mut s = Settings::from_json(v)?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn candidates_become_typed_records_and_keep_their_payload() {
        let s = parse(json!({"candidates": [
            {"id": "sku-1", "score": 0.5, "category": "ao-dai", "tags": ["tier:gold"], "price": 10},
            {"id": "sku-2"}
        ]}))
        .unwrap();
        let c = Compiled::new(s);
        let got: Vec<Candidate> = catalog::candidates(&c.catalog).collect();
        assert_eq!(got[0].id, "sku-1");
        assert_eq!(got[0].score, 0.5);
        assert_eq!(got[0].category.as_deref(), Some("ao-dai"));
        assert_eq!(got[0].tags, ["tier:gold"]);
        assert_eq!(got[1].score, 0.0);
        assert_eq!(got[1].category, None);
        assert!(c.payloads["sku-1"].get().contains("\"price\":10"));
    }

    #[test]
    fn defaults_fill_in_and_origins_are_normalized() {
        let s = parse(json!({
            "allowed_origins": ["https://Shop.example.vn/"],
            "placements": [{"id": "hero", "kind": "banner"}]
        }))
        .unwrap();
        assert_eq!(s.allowed_origins, ["https://shop.example.vn"]);
        assert_eq!(s.placements[0].max_items, DEFAULT_MAX_ITEMS);
        assert_eq!(s.placements[0].default.variant, "default");
        let c = Compiled::new(s);
        assert!(c.catalog.entries.is_empty());
        assert_eq!(c.index["hero"], 0);
    }

    #[test]
    fn rejects_duplicate_placements_bad_ids_and_weights_naming_them() {
        let dup = parse(json!({"placements": [
            {"id": "hero", "kind": "banner"}, {"id": "hero", "kind": "offer"}
        ]}));
        assert!(dup.unwrap_err().contains("`hero` is listed twice"));
        let bad = parse(json!({"placements": [{"id": "Hero!", "kind": "banner"}]}));
        assert!(bad.unwrap_err().contains("`Hero!`"));
        let weight = parse(json!({"placements": [{"id": "hero", "kind": "banner",
            "experiment": {"id": "x", "variants": [{"id": "a", "weight": 0}, {"id": "b", "weight": 1}]}}]}));
        assert!(weight.unwrap_err().contains("weight"));
        let one = parse(json!({"placements": [{"id": "hero", "kind": "banner",
            "experiment": {"id": "x", "variants": [{"id": "a", "weight": 1}]}}]}));
        assert!(one.unwrap_err().contains("2 to"));
        let kind = parse(json!({"placements": [{"id": "hero", "kind": "popup"}]}));
        assert!(kind.unwrap_err().contains("popup"));
        let cands = parse(json!({"candidates": 3}));
        assert!(cands.unwrap_err().contains("candidates"));
        let no_id = parse(json!({"candidates": [{"id": "a"}, {"name": "x"}]}));
        assert!(no_id.unwrap_err().contains("candidates[1]: `id`"));
        let twice = parse(json!({"candidates": [{"id": "a"}, {"id": "a"}]}));
        assert!(twice.unwrap_err().contains("twice"));
        let tags = parse(json!({"candidates": [{"id": "a", "tags": "gold"}]}));
        assert!(tags.unwrap_err().contains("`tags`"));
    }
}
