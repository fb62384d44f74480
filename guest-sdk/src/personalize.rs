//! Kind 2, `personalization`: decides what a page shows within a ~20 ms budget.
//!
//! No outbound HTTP: everything arrives in the [`Request`] or from the profile store.
//! Implement [`Guest`] and export it with
//! [`export_personalization!`](crate::export_personalization).
//!
//! ```no_run
//! use weft_guest::personalize::{Decision, Guest, PluginError, Request};
//!
//! struct Banner;
//!
//! impl Guest for Banner {
//!     fn decide(req: Request) -> Result<Vec<Decision>, PluginError> {
//!         let gold = req
//!             .profile
//!             .as_ref()
//!             .and_then(|p| p.trait_str("tier"))
//!             .is_some_and(|t| t == "gold");
//!         Ok(req
//!             .placements
//!             .iter()
//!             .map(|p| Decision {
//!                 placement_id: p.id.clone(),
//!                 variant_id: if gold { "gold".into() } else { "default".into() },
//!                 experiment_id: None,
//!                 content: "{}".into(),
//!                 items: vec![],
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

use serde::de::DeserializeOwned;

use crate::json::{self, Value};

pub use crate::bindings::personalization::exports::weft::plugin::personalize::*;

impl Request {
    /// The candidates as a JSON value (`null` when empty or malformed).
    pub fn candidates_value(&self) -> Value {
        serde_json::from_str(&self.candidates).unwrap_or(Value::Null)
    }

    /// The candidates parsed into your own type.
    pub fn candidates_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        json::from(&self.candidates)
    }

    /// The candidates as a list, in catalog order: a JSON array as it is, or the `items`
    /// array of an object. Empty text and an object without `items` give an empty list.
    /// Malformed JSON, an `items` that is not an array, or any other JSON value is
    /// `invalid-input`. Parse once per request and share the list between placements.
    ///
    /// ```
    /// # use weft_guest::personalize::{PageContext, Request};
    /// # let mut req = Request {
    /// #     request_id: "r1".into(), profile: None, placements: vec![], recent_events: vec![],
    /// #     page: PageContext { url: None, path: None, referrer: None, title: None,
    /// #         page_type: None, locale: None, device_type: None,
    /// #         campaign: "{}".into(), attributes: "{}".into() },
    /// #     candidates: String::new(), now: 0 };
    /// req.candidates = r#"{"items":[{"id":"sku-1"},{"id":"sku-2"}]}"#.into();
    /// assert_eq!(req.candidate_list().unwrap().len(), 2);
    /// req.candidates = r#"[{"id":"sku-1"}]"#.into();
    /// assert_eq!(req.candidate_list().unwrap()[0]["id"], "sku-1");
    /// req.candidates = String::new();
    /// assert!(req.candidate_list().unwrap().is_empty());
    /// req.candidates = "42".into();
    /// assert!(req.candidate_list().is_err());
    /// ```
    pub fn candidate_list(&self) -> Result<Vec<Value>, PluginError> {
        match json::parse(&self.candidates)? {
            Value::Array(items) => Ok(items),
            Value::Object(mut map) => match map.remove("items") {
                Some(Value::Array(items)) => Ok(items),
                None => Ok(Vec::new()),
                Some(_) => Err(PluginError::invalid_input(
                    "candidates.items is not an array",
                )),
            },
            _ => Err(PluginError::invalid_input(
                "candidates must be a JSON array",
            )),
        }
    }
}

impl Placement {
    /// The placement's constraints as a JSON value (`{}` when empty).
    pub fn constraints_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.constraints))
    }
}
