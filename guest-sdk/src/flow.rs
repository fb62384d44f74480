//! Kind 4, `chatbot-flow`: one conversational turn at a time.
//!
//! The host keeps the session and its slots, delivers replies through channel adapters and
//! runs human handoff. Implement [`Guest`] and export it with
//! [`export_chatbot_flow!`](crate::export_chatbot_flow).
//!
//! ```no_run
//! use weft_guest::flow::{
//!     BotAction, EndSpec, FlowManifest, Guest, PluginError, Session, TurnResult, TurnTrigger,
//!     UserInput,
//! };
//! use weft_guest::types::{ChannelKind, Content};
//!
//! struct Echo;
//!
//! impl Guest for Echo {
//!     fn describe() -> FlowManifest {
//!         FlowManifest {
//!             name: "Echo".into(),
//!             start_keywords: vec!["echo".into()],
//!             start_events: vec![],
//!             channels: vec![ChannelKind::WebChat],
//!             session_timeout_ms: weft_guest::clock::minutes(60),
//!         }
//!     }
//!
//!     fn turn(s: Session, t: TurnTrigger) -> Result<TurnResult, PluginError> {
//!         let actions = match t {
//!             TurnTrigger::Input(UserInput::Text(text)) => {
//!                 vec![BotAction::Reply(vec![Content::Text(text)])]
//!             }
//!             _ => vec![BotAction::End(EndSpec { outcome: "done".into(), send_csat: false })],
//!         };
//!         Ok(TurnResult { actions, expect: None, slots: s.slots })
//!     }
//! }
//!
//! weft_guest::export_chatbot_flow!(Echo);
//! # fn main() {}
//! ```

use serde::de::DeserializeOwned;

use crate::json::{self, Value};

pub use crate::bindings::chatbot_flow::exports::weft::plugin::flow::*;

impl Session {
    /// The slots as a JSON value (`{}` when empty).
    pub fn slots_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.slots))
    }

    /// The slots parsed into your own type.
    pub fn slots_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        json::from(&self.slots)
    }

    /// Whether the conversation locale (or else the profile's) is Vietnamese.
    pub fn prefers_vietnamese(&self) -> bool {
        match self.locale.as_deref() {
            Some(l) => l.eq_ignore_ascii_case("vi") || l.to_ascii_lowercase().starts_with("vi-"),
            None => self.profile.prefers_vietnamese(),
        }
    }
}
