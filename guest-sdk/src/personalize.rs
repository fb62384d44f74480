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
}

impl Placement {
    /// The placement's constraints as a JSON value (`{}` when empty).
    pub fn constraints_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.constraints))
    }
}
