//! Kind 2, `personalization`: decides what a page shows within a ~20 ms budget.
//!
//! No outbound HTTP: everything arrives in the [`Request`], beside it as the tenant's
//! [`Catalog`], or from the profile store. The catalog crosses into the plugin in one
//! flat piece; [`Catalog::iter`] reads it as [`Candidate`]s (id, base score, category,
//! tags) borrowed from it, so a plugin never parses or copies the catalog. Leave an
//! [`Item`]'s `payload` empty and the host fills in the catalog entry of the item's id.
//! Implement [`Guest`] and export it with
//! [`export_personalization!`](crate::export_personalization).
//!
//! ```no_run
//! use weft_guest::personalize::{Candidate, Catalog, Decision, Guest, Item, PluginError, Request};
//!
//! struct Banner;
//!
//! impl Guest for Banner {
//!     fn decide(req: Request, catalog: Catalog) -> Result<Vec<Decision>, PluginError> {
//!         let gold = req
//!             .profile
//!             .as_ref()
//!             .and_then(|p| p.trait_str("tier"))
//!             .is_some_and(|t| t == "gold");
//!         // Sale items first, then by the catalog's score; rank views, not copies.
//!         let mut ranked: Vec<Candidate> = catalog.iter().collect();
//!         ranked.sort_by(|a, b| {
//!             b.has_tag("sale")
//!                 .cmp(&a.has_tag("sale"))
//!                 .then(b.score.total_cmp(&a.score))
//!         });
//!         Ok(req
//!             .placements
//!             .iter()
//!             .map(|p| Decision {
//!                 placement_id: p.id.clone(),
//!                 variant_id: if gold { "gold".into() } else { "default".into() },
//!                 experiment_id: None,
//!                 content: "{}".into(),
//!                 items: ranked
//!                     .iter()
//!                     .take(p.max_items as usize)
//!                     // Empty payload: the host sends the item's catalog entry.
//!                     .map(|c| Item { id: c.id.into(), score: c.score, payload: String::new() })
//!                     .collect(),
//!                 ttl_ms: 60_000,
//!                 reason: None,
//!             })
//!             .collect())
//!     }
//! }
//!
//! weft_guest::export_personalization!(Banner);
//! # fn main() {}
//! ```

use crate::json::{self, Value};

pub use crate::bindings::personalization::exports::weft::plugin::personalize::*;

/// One catalog item as a plugin ranks it: a view into the [`Catalog`], no copies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// Item id.
    pub id: &'a str,
    /// The catalog's base score; higher ranks first (0 when the entry gives none).
    pub score: f32,
    /// The item's category, if the entry names one.
    pub category: Option<&'a str>,
    /// Its place in the catalog.
    pub index: usize,
    /// Its tags as (start, length) pairs in `text`.
    tags: &'a [u32],
    text: &'a str,
}

/// Numbers per entry in [`Catalog::entries`] (see the WIT `catalog` record).
const ENTRY_WORDS: usize = 6;

/// The category length of an entry without a category.
const NO_CATEGORY: u32 = u32::MAX;

/// The text at `start` of `len` bytes, or `""` when out of range (the host never sends
/// that).
fn span_text(text: &str, start: u32, len: u32) -> &str {
    let start = start as usize;
    text.get(start..start.saturating_add(len as usize))
        .unwrap_or("")
}

impl<'a> Candidate<'a> {
    /// The candidate's tags, in order.
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + 'a {
        let text = self.text;
        self.tags
            .chunks_exact(2)
            .map(move |t| span_text(text, t[0], t[1]))
    }

    /// Whether the candidate carries exactly `tag` (case-sensitive).
    ///
    /// ```
    /// # use weft_guest::personalize::Catalog;
    /// let mut catalog = Catalog::new();
    /// catalog.push("sku-1", 0.5, None, &["sale", "tier:gold"]);
    /// let c = catalog.get(0).unwrap();
    /// assert!(c.has_tag("sale"));
    /// assert!(!c.has_tag("Sale"));
    /// ```
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().any(|t| t == tag)
    }

    /// The values of the candidate's `key:value` tags for `key`, in tag order: for
    /// `tag_values("tier")`, `gold` from a `tier:gold` tag. The key and the `:` must match
    /// exactly; the value is everything after the first `:` (possibly empty).
    ///
    /// ```
    /// # use weft_guest::personalize::Catalog;
    /// let mut catalog = Catalog::new();
    /// catalog.push("sku-1", 0.5, Some("ao-dai"), &["tier:gold", "new", "tier:Silver", "tiers:x"]);
    /// let c = catalog.get(0).unwrap();
    /// assert_eq!(c.tag_values("tier").collect::<Vec<_>>(), ["gold", "Silver"]);
    /// assert_eq!(c.tag_values("color").count(), 0);
    /// ```
    pub fn tag_values<'k>(&self, key: &'k str) -> impl Iterator<Item = &'a str> + 'k
    where
        'a: 'k,
    {
        self.tags()
            .filter_map(move |t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    }
}

impl Catalog {
    /// An empty catalog, for tests and local runs; the host sends the tenant's.
    pub fn new() -> Catalog {
        Catalog {
            text: String::new(),
            entries: Vec::new(),
            scores: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// Appends an entry (for tests and local runs).
    ///
    /// # Panics
    /// When the catalog's strings pass 4 GiB, which its 32-bit offsets cannot address.
    pub fn push(&mut self, id: &str, score: f32, category: Option<&str>, tags: &[&str]) {
        fn append(text: &mut String, s: &str) -> [u32; 2] {
            let span = [
                u32::try_from(text.len()).expect("catalog text under 4 GiB"),
                u32::try_from(s.len()).expect("catalog text under 4 GiB"),
            ];
            text.push_str(s);
            span
        }
        let first_tag = u32::try_from(self.tags.len() / 2).expect("under 4 G tags");
        let tag_count = u32::try_from(tags.len()).expect("under 4 G tags");
        let [id_start, id_len] = append(&mut self.text, id);
        let [cat_start, cat_len] = match category {
            Some(c) => append(&mut self.text, c),
            None => [0, NO_CATEGORY],
        };
        for t in tags {
            let span = append(&mut self.text, t);
            self.tags.extend(span);
        }
        self.entries
            .extend([id_start, id_len, cat_start, cat_len, first_tag, tag_count]);
        self.scores.push(score);
    }

    /// How many entries the catalog holds.
    pub fn len(&self) -> usize {
        self.entries.len() / ENTRY_WORDS
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry at `index`, in catalog order.
    pub fn get(&self, index: usize) -> Option<Candidate<'_>> {
        let e = self
            .entries
            .get(index * ENTRY_WORDS..(index + 1) * ENTRY_WORDS)?;
        let first = e[4] as usize * 2;
        Some(Candidate {
            id: span_text(&self.text, e[0], e[1]),
            score: self.scores.get(index).copied().unwrap_or(0.0),
            category: (e[3] != NO_CATEGORY).then(|| span_text(&self.text, e[2], e[3])),
            index,
            tags: self
                .tags
                .get(first..first.saturating_add(e[5] as usize * 2))
                .unwrap_or(&[]),
            text: &self.text,
        })
    }

    /// The entries in catalog order.
    ///
    /// ```
    /// # use weft_guest::personalize::Catalog;
    /// let mut catalog = Catalog::new();
    /// catalog.push("a", 0.1, None, &[]);
    /// catalog.push("b", 0.9, Some("vay"), &["sale"]);
    /// let best = catalog.iter().max_by(|x, y| x.score.total_cmp(&y.score)).unwrap();
    /// assert_eq!((best.id, best.category, best.index), ("b", Some("vay"), 1));
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Candidate<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl Placement {
    /// The placement's constraints as a JSON value (`{}` when empty).
    pub fn constraints_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.constraints))
    }
}
