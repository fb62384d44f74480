//! The native baseline of the personalize benchmark (`bash scripts/bench.sh personalize`):
//! `POST /v1/personalize` with plugins/tier-personalize's decision logic compiled into a
//! minimal axum server, with no sandbox, no store and no per-request instance.
//!
//! ```text
//! cargo run --release -p weft --example personalize_native -- --port 18090 --profiles 100000 [--settings FILE]
//! # the settings document the benchmark PUTs to Weft (placements and 50 candidates)
//! cargo run --release -p weft --example personalize_native -- --print-settings
//! ```
//!
//! It answers the same request JSON with the same response shape as Weft's endpoint
//! (docs/personalize.md); the write key is accepted and not checked. The profiles are an
//! in-memory map of `--profiles` synthetic users `u1..uN`, the same data the benchmark
//! ingests into Weft (keep [`synthetic_traits`] in sync with `examples/loadgen.rs
//! personalize-setup` and `scripts/personalize-vm.js`): tier `gold` when `n % 10 == 0`,
//! `silver` when `n % 10` is 1..=3, no tier otherwise; in the audience `vip` when
//! `n % 7 == 0`.
//!
//! This is the upper bound, written as a native service would be: the settings are parsed
//! once at startup, the catalog into typed entries (id, `f32` score, category, tags) that
//! each keep their whole JSON object pre-encoded as the item payload (as Weft does), and
//! the placements' constraints into excluded ids and validated audience banners with their
//! content pre-encoded. Per request it parses the request JSON (borrowing its strings),
//! looks up the profile, ranks the typed catalog with the plugin's logic and writes the
//! answer, splicing the pre-encoded payloads in. No JSON is parsed but the request's.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// How long the edge may cache a decision for a known visitor: one minute.
const KNOWN_TTL_MS: u32 = 60_000;
/// How long the edge may cache the anonymous default: five minutes.
const ANONYMOUS_TTL_MS: u32 = 300_000;
/// Largest request body, as Weft's endpoint.
const MAX_BODY: usize = 16 * 1024;
/// Most placements in one request, as Weft's endpoint.
const MAX_PLACEMENTS: usize = 20;
/// A placement's `max_items` when the settings leave it out.
const DEFAULT_MAX_ITEMS: u32 = 10;
/// Longest candidate id, category or tag, as Weft's settings.
const MAX_LABEL_BYTES: usize = 128;
/// Most tags on one candidate, as Weft's settings.
const MAX_TAGS: usize = 32;

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The traits of synthetic user `u<n>` (the same as the benchmark ingests into Weft).
fn synthetic_traits(n: u64) -> Value {
    let mut traits = Map::new();
    match n % 10 {
        0 => {
            traits.insert("tier".into(), json!("gold"));
        }
        1..=3 => {
            traits.insert("tier".into(), json!("silver"));
        }
        _ => {}
    }
    traits.insert("vip".into(), json!(n.is_multiple_of(7)));
    Value::Object(traits)
}

/// The audiences of synthetic user `u<n>` (`vip`: the trait `vip` is true).
fn synthetic_audiences(n: u64) -> Vec<String> {
    if n.is_multiple_of(7) {
        vec!["vip".to_string()]
    } else {
        Vec::new()
    }
}

/// The settings document of the benchmark: placements `hero` (a banner with an audience
/// banner for `vip`) and `recs` (a product list of 4), and 50 candidates, every tenth
/// tagged `tier:gold` and every tenth from the fifth `tier:silver`.
fn default_settings() -> Value {
    let categories = ["ao-dai", "non-la", "lua", "tui", "giay"];
    let mut candidates: Vec<Value> = (1..=49)
        .map(|i: u32| {
            let mut c = json!({
                "id": format!("sku-{i}"),
                "score": f64::from((i * 37) % 100) / 100.0,
                "category": categories[(i % 5) as usize],
                "name": format!("Sản phẩm {i}"),
                "price": 150_000 + 10_000 * i,
                "currency": "VND",
                "image": format!("https://cdn.shop.example.vn/p/sku-{i}.jpg"),
                "url": format!("https://shop.example.vn/p/sku-{i}"),
            });
            match i % 10 {
                0 => c["tags"] = json!(["tier:gold"]),
                5 => c["tags"] = json!(["tier:silver"]),
                _ => {}
            }
            c
        })
        .collect();
    candidates.push(json!({"id": "gift-card", "score": 2.0, "category": "gift", "name": "Thẻ quà tặng", "price": 500_000, "currency": "VND"}));
    json!({
        "plugin": "tier-personalize",
        "allowed_origins": ["https://shop.example.vn"],
        "placements": [
            {
                "id": "hero",
                "kind": "banner",
                "max_items": 1,
                "constraints": {
                    "exclude": ["gift-card"],
                    "audience_banners": [
                        {"audience": "vip", "variant": "vip-banner",
                         "content": {"headline": "Khách hàng thân thiết: miễn phí vận chuyển", "image": "https://cdn.shop.example.vn/b/vip.jpg"}}
                    ]
                },
                "default": {"variant": "default", "content": {"headline": "Sản phẩm nổi bật"}, "ttl_ms": 60000}
            },
            {
                "id": "recs",
                "kind": "product-list",
                "max_items": 4,
                "constraints": {"exclude": ["gift-card"]},
                "default": {"variant": "default", "items": [{"id": "sku-1"}, {"id": "sku-2"}]}
            }
        ],
        "candidates": candidates,
    })
}

// ---------------------------------------------------------------------------------------
// The state, built once at startup.

/// One profile of the in-memory store.
struct Profile {
    traits: Value,
    audiences: Vec<String>,
}

/// One catalog entry, typed once: what the plugin gets as a WIT `candidate`, and the whole
/// object pre-encoded as the payload of an item that picks it.
struct CatalogItem {
    id: String,
    score: f32,
    /// Part of the typed record; tier-personalize does not rank by it.
    #[allow(dead_code)]
    category: Option<String>,
    tags: Vec<String>,
    payload: Box<RawValue>,
}

/// One `constraints.audience_banners` entry, validated, its content pre-encoded.
struct AudienceBanner {
    audience: String,
    variant: String,
    content: Box<RawValue>,
    /// `audience=<audience>`.
    reason: String,
}

/// A configured placement with its constraints parsed.
struct Placement {
    id: String,
    max_items: u32,
    /// `constraints.exclude`: the string ids in it.
    excluded: Vec<String>,
    /// `constraints.audience_banners` in priority order, or the error every decision of
    /// this placement fails with (the plugin checks every entry on every request, so a
    /// misconfigured placement fails for every visitor).
    banners: Result<Vec<AudienceBanner>, String>,
}

struct Shared {
    profiles: HashMap<String, Profile>,
    placements: Vec<Placement>,
    catalog: Vec<CatalogItem>,
    /// The content of each tier's variant, indexed by [`Tier::index`].
    tier_content: [Box<RawValue>; 4],
    next_id: AtomicU64,
}

// ---------------------------------------------------------------------------------------
// The decision logic of plugins/tier-personalize/src/lib.rs, ported as its README's
// "Decision logic (exact, for ports)" describes it.

/// Added to a tier-tagged item's score.
const OWN_TIER_BOOST: f32 = 1.0;
/// The tag key of a tier tag: `tier:gold`.
const TIER_TAG: &str = "tier:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Gold,
    Silver,
    Other,
    Anonymous,
}

impl Tier {
    fn of(profile: Option<&Profile>) -> Tier {
        let Some(profile) = profile else {
            return Tier::Anonymous;
        };
        // A string `tier` trait equal to `gold` or `silver` ignoring ASCII case; anything
        // else (missing, not a string) is other.
        match profile.traits.get("tier") {
            Some(Value::String(s)) if s.eq_ignore_ascii_case("gold") => Tier::Gold,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("silver") => Tier::Silver,
            _ => Tier::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn variant_id(self) -> &'static str {
        match self {
            Tier::Gold => "tier-gold",
            Tier::Silver => "tier-silver",
            Tier::Other => "tier-default",
            Tier::Anonymous => "anonymous",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Tier::Gold => "tier=tier-gold",
            Tier::Silver => "tier=tier-silver",
            Tier::Other => "tier=tier-default",
            Tier::Anonymous => "tier=anonymous",
        }
    }

    /// The value after `tier:` of the tags this visitor sees.
    fn name(self) -> Option<&'static str> {
        match self {
            Tier::Gold => Some("gold"),
            Tier::Silver => Some("silver"),
            Tier::Other | Tier::Anonymous => None,
        }
    }

    /// The variant's content (keys in sorted order, as the plugin writes it).
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

/// The ranking score of `c` for a visitor of `tier`, or `None` when `c` is not for them:
/// an item without `tier:` tags (prefix case-sensitive) is for everyone at its score; one
/// with `tier:` tags only for a visitor whose tier one of their values names (ASCII
/// case-insensitively), at score + 1.0 in `f32`, so `tier:bronze` alone is for no one.
fn eligible_score(c: &CatalogItem, tier: Tier) -> Option<f32> {
    let mut tagged = false;
    let mut mine = false;
    for t in c.tags.iter().filter_map(|t| t.strip_prefix(TIER_TAG)) {
        tagged = true;
        mine |= tier.name().is_some_and(|n| t.eq_ignore_ascii_case(n));
    }
    match (tagged, mine) {
        (false, _) => Some(c.score),
        (true, true) => Some(c.score + OWN_TIER_BOOST),
        (true, false) => None,
    }
}

/// A ranked item as the page gets it: the payload is the entry's pre-encoded object.
#[derive(Serialize)]
struct ItemOut<'a> {
    id: &'a str,
    score: f32,
    payload: &'a RawValue,
}

/// One decision as Weft answers it (field order and `f32` scores included).
#[derive(Serialize)]
struct DecisionOut<'a> {
    placement: &'a str,
    variant: &'a str,
    experiment_id: Option<&'a str>,
    content: &'a RawValue,
    items: Vec<ItemOut<'a>>,
    ttl_ms: u32,
    source: &'static str,
    reason: &'a str,
}

/// `pz_` and 20 hex digits, written without an intermediate string.
struct RequestId(u64);

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pz_{:020x}", self.0)
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    request_id: RequestId,
    decisions: Vec<DecisionOut<'a>>,
}

/// A placement of one request: the configured one with the request's `max_items`.
struct Asked<'a> {
    config: &'a Placement,
    max_items: u32,
}

fn decide<'s>(
    s: &'s Shared,
    profile: Option<&'s Profile>,
    placements: &[Asked<'s>],
) -> Result<Vec<DecisionOut<'s>>, &'s str> {
    let tier = Tier::of(profile);
    let audiences = profile.map_or(&[][..], |p| &p.audiences[..]);
    placements
        .iter()
        .map(|p| decide_one(s, p, tier, audiences))
        .collect()
}

/// Highest score first, ties by id (ids are unique, so this is a total order).
fn by_rank(a: &(f32, &CatalogItem), b: &(f32, &CatalogItem)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id))
}

fn decide_one<'s>(
    s: &'s Shared,
    asked: &Asked<'s>,
    tier: Tier,
    audiences: &[String],
) -> Result<DecisionOut<'s>, &'s str> {
    let placement = asked.config;
    let banners = placement.banners.as_ref().map_err(String::as_str)?;
    let banner = banners.iter().find(|b| audiences.contains(&b.audience));

    let mut ranked: Vec<(f32, &CatalogItem)> = Vec::with_capacity(s.catalog.len());
    ranked.extend(
        s.catalog
            .iter()
            .filter(|c| !placement.excluded.contains(&c.id))
            .filter_map(|c| Some((eligible_score(c, tier)?, c))),
    );
    // The top `max_items` only: partition around the cut, then sort what made it.
    let keep = asked.max_items as usize;
    if keep == 0 {
        ranked.clear();
    } else if ranked.len() > keep {
        ranked.select_nth_unstable_by(keep - 1, by_rank);
        ranked.truncate(keep);
    }
    ranked.sort_unstable_by(by_rank);
    let items = ranked
        .into_iter()
        .map(|(score, c)| ItemOut {
            id: &c.id,
            score,
            payload: &c.payload,
        })
        .collect();

    let (variant, content, reason) = match banner {
        Some(b) => (b.variant.as_str(), &*b.content, b.reason.as_str()),
        None => (
            tier.variant_id(),
            &*s.tier_content[tier.index()],
            tier.reason(),
        ),
    };
    Ok(DecisionOut {
        placement: &placement.id,
        variant,
        experiment_id: None,
        content,
        items,
        ttl_ms: tier.ttl_ms(),
        source: "plugin",
        reason,
    })
}

// ---------------------------------------------------------------------------------------
// HTTP.

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// A string of the request, borrowed from the body unless it has escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// A placement as a page asks for it: `"id"` or `{"id": …, "max_items"?: n}`.
struct AskedPlacement<'a> {
    id: Cow<'a, str>,
    max_items: Option<u32>,
}

impl<'de: 'a, 'a> Deserialize<'de> for AskedPlacement<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AskedPlacement<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a placement id or {\"id\", \"max_items\"}")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AskedPlacement {
                    id: Cow::Borrowed(v),
                    max_items: None,
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AskedPlacement {
                    id: Cow::Owned(v.to_owned()),
                    max_items: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut id = None;
                let mut max_items = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "id" => id = Some(map.next_value::<Str<'de>>()?.0),
                        "max_items" => max_items = map.next_value::<Option<u32>>()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
                Ok(AskedPlacement { id, max_items })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The page context: checked for its shape as Weft checks it; tier-personalize does not
/// read it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PageIn<'a> {
    #[serde(default, borrow)]
    url: Option<Str<'a>>,
    #[serde(default, borrow)]
    path: Option<Str<'a>>,
    #[serde(default, borrow)]
    referrer: Option<Str<'a>>,
    #[serde(default, borrow)]
    title: Option<Str<'a>>,
    #[serde(default, borrow)]
    page_type: Option<Str<'a>>,
    #[serde(default, borrow)]
    locale: Option<Str<'a>>,
    #[serde(default, borrow)]
    device_type: Option<Str<'a>>,
    #[serde(default, borrow)]
    campaign: Option<&'a RawValue>,
    #[serde(default, borrow)]
    attributes: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersonalizeRequest<'a> {
    #[serde(default, borrow)]
    anonymous_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    user_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    page: Option<PageIn<'a>>,
    #[serde(default, borrow)]
    placements: Vec<AskedPlacement<'a>>,
}

async fn personalize(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body is over 16 KiB",
        );
    }
    let req: PersonalizeRequest<'_> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    if let Some(page) = &req.page {
        let object = |v: Option<&RawValue>| v.is_none_or(|v| v.get().starts_with('{'));
        if !object(page.campaign) || !object(page.attributes) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "page.campaign and page.attributes must be objects",
            );
        }
    }
    if req.anonymous_id.is_none() && req.user_id.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_identity",
            "anonymousId or userId is required",
        );
    }
    if req.placements.is_empty() || req.placements.len() > MAX_PLACEMENTS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_placements",
            "1 to 20 placements",
        );
    }
    let mut asked: Vec<Asked<'_>> = Vec::with_capacity(req.placements.len());
    for p in &req.placements {
        let id = &*p.id;
        let Some(config) = s.placements.iter().find(|c| c.id == id) else {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown_placement",
                format!("no placement `{id}`"),
            );
        };
        if asked.iter().any(|a| a.config.id == id) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_placements",
                format!("`{id}` twice"),
            );
        }
        let max_items = p
            .max_items
            .map_or(config.max_items, |m| m.min(config.max_items));
        asked.push(Asked { config, max_items });
    }
    let profile = req.user_id.as_ref().and_then(|u| s.profiles.get(&*u.0));
    let request_id = RequestId(s.next_id.fetch_add(1, Ordering::Relaxed));
    let decisions = match decide(&s, profile, &asked) {
        Ok(ds) => ds,
        Err(e) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "decision_failed", e);
        }
    };
    let mut out = Vec::with_capacity(4096);
    let answer = Answer {
        request_id,
        decisions,
    };
    if let Err(e) = serde_json::to_writer(&mut out, &answer) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    }
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

// ---------------------------------------------------------------------------------------
// Loading the settings.

fn raw(v: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("JSON values always encode")
}

/// An id, category or tag: a string of 1 to 128 bytes, as Weft requires.
fn label(v: &Value, field: &str) -> anyhow::Result<String> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= MAX_LABEL_BYTES => Ok(s.to_string()),
        _ => anyhow::bail!("`{field}` must be a string of 1 to {MAX_LABEL_BYTES} bytes"),
    }
}

/// One catalog entry, checked as Weft checks it when the settings are saved.
fn catalog_item(c: &Value) -> anyhow::Result<CatalogItem> {
    let Some(fields) = c.as_object() else {
        anyhow::bail!("not an object");
    };
    let id = label(fields.get("id").unwrap_or(&Value::Null), "id")?;
    let score = match fields.get("score") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0) as f32,
        Some(_) => anyhow::bail!("`score` must be a number"),
    };
    let category = match fields.get("category") {
        None | Some(Value::Null) => None,
        Some(v) => Some(label(v, "category")?),
    };
    let tags = match fields.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_TAGS => list
            .iter()
            .map(|t| label(t, "tags[]"))
            .collect::<anyhow::Result<_>>()?,
        Some(_) => anyhow::bail!("`tags` must be an array of at most {MAX_TAGS} strings"),
    };
    Ok(CatalogItem {
        id,
        score,
        category,
        tags,
        payload: raw(c),
    })
}

/// `constraints.audience_banners` of placement `placement`, every entry checked as the
/// plugin checks it; `Err` is the plugin's message.
fn audience_banners(
    placement: &str,
    constraints: &Map<String, Value>,
) -> Result<Vec<AudienceBanner>, String> {
    let Some(entries) = constraints.get("audience_banners") else {
        return Ok(Vec::new());
    };
    let entries = entries.as_array().ok_or_else(|| {
        format!("placement {placement}: constraints.audience_banners is not an array")
    })?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let invalid = |what: &str| {
                format!("placement {placement}: constraints.audience_banners[{index}] {what}")
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
                None => raw(&json!({})),
                Some(c) if c.is_object() => raw(c),
                Some(_) => return Err(invalid("has a `content` that is not an object")),
            };
            Ok(AudienceBanner {
                audience: audience.to_string(),
                variant: variant.to_string(),
                content,
                reason: format!("audience={audience}"),
            })
        })
        .collect()
}

fn load(settings: &Value, profiles: u64) -> anyhow::Result<Shared> {
    let placements = settings["placements"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("settings have no placements array"))?
        .iter()
        .map(|p| {
            let id = p["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("a placement without an id"))?
                .to_string();
            // Anything but an object counts as `{}`.
            let empty = Map::new();
            let constraints = p
                .get("constraints")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let excluded = constraints
                .get("exclude")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Ok(Placement {
                banners: audience_banners(&id, constraints),
                id,
                max_items: p["max_items"]
                    .as_u64()
                    .map_or(DEFAULT_MAX_ITEMS, |m| m as u32),
                excluded,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let catalog = match settings.get("candidates") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .iter()
            .enumerate()
            .map(|(i, c)| catalog_item(c).map_err(|e| anyhow::anyhow!("candidates[{i}]: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        Some(_) => anyhow::bail!("candidates must be an array of objects"),
    };
    let mut ids = HashSet::new();
    for (i, c) in catalog.iter().enumerate() {
        anyhow::ensure!(
            ids.insert(c.id.as_str()),
            "candidates[{i}]: id `{}` appears twice",
            c.id
        );
    }
    let tier_content = [Tier::Gold, Tier::Silver, Tier::Other, Tier::Anonymous].map(|t| {
        RawValue::from_string(t.content().to_string()).expect("the tier contents are JSON")
    });
    let profiles = (1..=profiles)
        .map(|n| {
            (
                format!("u{n}"),
                Profile {
                    traits: synthetic_traits(n),
                    audiences: synthetic_audiences(n),
                },
            )
        })
        .collect();
    Ok(Shared {
        profiles,
        placements,
        catalog,
        tier_content,
        next_id: AtomicU64::new(1),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--print-settings") {
        println!("{}", serde_json::to_string_pretty(&default_settings())?);
        return Ok(());
    }
    let port: u16 = arg(&args, "--port").map_or(Ok(18090), |v| v.parse())?;
    let profiles: u64 = arg(&args, "--profiles").map_or(Ok(100_000), |v| v.parse())?;
    let settings = match arg(&args, "--settings") {
        Some(path) => serde_json::from_slice(&std::fs::read(&path)?)?,
        None => default_settings(),
    };
    let shared = Arc::new(load(&settings, profiles)?);
    let app = Router::new()
        .route("/v1/personalize", post(personalize))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(shared);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("personalize_native on 127.0.0.1:{port} with {profiles} profiles");
        axum::serve(listener, app).await?;
        Ok(())
    })
}
