//! Kind 2, `personalization`: decides what a page shows within a ~20 ms budget.
//!
//! No outbound HTTP: everything arrives in the [`Request`], beside it as the tenant's
//! catalog of [`Candidate`]s, or from the profile store. Candidates are typed records
//! (id, base score, category, tags), so a plugin never parses the catalog; leave an
//! [`Item`]'s `payload` empty and the host fills in the catalog entry of the item's id.
//! Implement [`Guest`] and export it with
//! [`export_personalization!`](crate::export_personalization).
//!
//! ```no_run
//! use weft_guest::personalize::{Candidate, Decision, Guest, Item, PluginError, Request};
//!
//! struct Banner;
//!
//! impl Guest for Banner {
//!     fn decide(req: Request, candidates: Vec<Candidate>) -> Result<Vec<Decision>, PluginError> {
//!         let gold = req
//!             .profile
//!             .as_ref()
//!             .and_then(|p| p.trait_str("tier"))
//!             .is_some_and(|t| t == "gold");
//!         // Sale items first, then by the catalog's score; rank references, not copies.
//!         let mut ranked: Vec<&Candidate> = candidates.iter().collect();
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
//!                     .map(|c| Item { id: c.id.clone(), score: c.score, payload: String::new() })
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

impl Candidate {
    /// Whether the candidate carries exactly `tag` (case-sensitive).
    ///
    /// ```
    /// # use weft_guest::personalize::Candidate;
    /// let c = Candidate {
    ///     id: "sku-1".into(), score: 0.5, category: None,
    ///     tags: vec!["sale".into(), "tier:gold".into()],
    /// };
    /// assert!(c.has_tag("sale"));
    /// assert!(!c.has_tag("Sale"));
    /// ```
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The values of the candidate's `key:value` tags for `key`, in tag order: for
    /// `tag_values("tier")`, `gold` from a `tier:gold` tag. The key and the `:` must match
    /// exactly; the value is everything after the first `:` (possibly empty).
    ///
    /// ```
    /// # use weft_guest::personalize::Candidate;
    /// let c = Candidate {
    ///     id: "sku-1".into(), score: 0.5, category: Some("ao-dai".into()),
    ///     tags: vec!["tier:gold".into(), "new".into(), "tier:Silver".into(), "tiers:x".into()],
    /// };
    /// assert_eq!(c.tag_values("tier").collect::<Vec<_>>(), ["gold", "Silver"]);
    /// assert_eq!(c.tag_values("color").count(), 0);
    /// ```
    pub fn tag_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags
            .iter()
            .filter_map(move |t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    }
}

impl Placement {
    /// The placement's constraints as a JSON value (`{}` when empty).
    pub fn constraints_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.constraints))
    }
}
