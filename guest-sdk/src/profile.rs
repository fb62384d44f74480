//! Profiles: the `profile-store` import and helpers on [`Profile`] and [`Event`].
//!
//! The store is scoped by the host to the calling plugin's tenant: there is no tenant
//! argument, so a plugin can never name another tenant's data. Most kinds already receive
//! the profile in their input; the accessors below read it without any import.
//!
//! ```
//! use weft_guest::types::Profile;
//!
//! let p = Profile {
//!     profile_id: "p1".into(),
//!     identities: vec![weft_guest::profile::identity("user_id", "u1")],
//!     traits: r#"{"tier":"gold","points":120}"#.into(),
//!     audiences: vec!["vip".into()],
//!     timezone: None,
//!     locale: Some("vi-VN".into()),
//!     consents: vec![],
//! };
//! assert_eq!(p.trait_str("tier").as_deref(), Some("gold"));
//! assert_eq!(p.identity("user_id"), Some("u1"));
//! assert!(p.in_audience("vip"));
//! assert!(p.prefers_vietnamese());
//! ```

use serde::de::DeserializeOwned;

use crate::json::{self, Value};
use crate::types::{Event, Identity, PluginError, Profile};

pub use crate::bindings::host::weft::plugin::profile_store::{
    get_profile, in_audience, recent_events,
};

/// Builds an [`Identity`] from a namespace and a value.
pub fn identity(kind: &str, value: &str) -> Identity {
    Identity {
        kind: kind.to_owned(),
        value: value.to_owned(),
    }
}

impl Profile {
    /// The traits as a JSON value (`{}` when the host sent none or something odd).
    pub fn traits_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.traits))
    }

    /// The traits parsed into your own type.
    pub fn traits_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        json::from(&self.traits)
    }

    /// The trait at a dotted path rendered as text (strings as they are, numbers and
    /// booleans in JSON form).
    pub fn trait_str(&self, path: &str) -> Option<String> {
        json::text_at(&self.traits_value(), path)
    }

    /// The value of the first identity in namespace `kind`.
    pub fn identity(&self, kind: &str) -> Option<&str> {
        self.identities
            .iter()
            .find(|i| i.kind == kind)
            .map(|i| i.value.as_str())
    }

    /// Whether the profile is in `audience` according to the snapshot in hand (no import).
    pub fn in_audience(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| a == audience)
    }

    /// Whether the profile's locale is Vietnamese (`vi`, `vi-VN`, ...).
    pub fn prefers_vietnamese(&self) -> bool {
        self.locale.as_deref().is_some_and(|l| {
            l.eq_ignore_ascii_case("vi") || l.to_ascii_lowercase().starts_with("vi-")
        })
    }
}

impl Event {
    /// The properties as a JSON value (`{}` when absent or not an object).
    pub fn properties_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.properties))
    }

    /// The properties parsed into your own type.
    pub fn properties_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        json::from(&self.properties)
    }

    /// The property at a dotted path rendered as text.
    pub fn property_str(&self, path: &str) -> Option<String> {
        json::text_at(&self.properties_value(), path)
    }

    /// The traits as a JSON value (`{}` when absent or not an object).
    pub fn traits_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.traits))
    }

    /// The event context as a JSON value (`{}` when absent or not an object).
    pub fn context_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.context))
    }
}
