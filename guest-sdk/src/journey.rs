//! Kind 1, `journey-rule`: decides the next steps of an automated journey.
//!
//! A journey rule is a pure decision function. The host keeps instances, timers and state
//! durable, performs every send, and enforces consent, caps and quiet hours; the rule
//! returns [`Command`]s. Implement [`Guest`] and export it with
//! [`export_journey_rule!`](crate::export_journey_rule).
//!
//! Keep steps deterministic: use `input.now` rather than the clock, and derive intent ids
//! from the instance and step ([`intent_id`]) so a retried step sends nothing twice.
//!
//! ```no_run
//! use weft_guest::journey::{
//!     intent_id, Command, Guest, Manifest, PluginError, ReEntry, SendIntent, StepInput,
//!     Trigger, WaitSpec,
//! };
//! use weft_guest::types::{ChannelKind, Content, MessageCategory};
//!
//! struct Welcome;
//!
//! impl Guest for Welcome {
//!     fn describe() -> Manifest {
//!         Manifest {
//!             name: "Welcome".into(),
//!             entry_events: vec!["Signed Up".into()],
//!             entry_key: None,
//!             exit_events: vec!["Account Deleted".into()],
//!             re_entry: ReEntry::Never,
//!         }
//!     }
//!
//!     fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
//!         match input.trigger {
//!             Trigger::Entered(_) => Ok(vec![
//!                 Command::Wait(WaitSpec::DurationMs(weft_guest::clock::days(1))),
//!                 Command::Goto("hello".into()),
//!             ]),
//!             Trigger::TimerFired(_) => Ok(vec![
//!                 Command::Send(SendIntent {
//!                     intent_id: intent_id(&input, "hello"),
//!                     channel_preference: vec![ChannelKind::ZaloOa, ChannelKind::Email],
//!                     category: MessageCategory::Marketing,
//!                     content: vec![Content::Text("Xin chào!".into())],
//!                 }),
//!                 Command::Exit("welcomed".into()),
//!             ]),
//!             _ => Err(PluginError::not_supported("unexpected trigger")),
//!         }
//!     }
//! }
//!
//! weft_guest::export_journey_rule!(Welcome);
//! # fn main() {}
//! ```

use serde::de::DeserializeOwned;

use crate::json::{self, Value};

pub use crate::bindings::journey_rule::exports::weft::plugin::journey::*;

/// A deterministic send-intent id: `<instance-id>:<step-id>:<tag>`.
///
/// It depends on the instance and step, never on the attempt, so the host deduplicates a
/// send that a retried step returns again.
pub fn intent_id(input: &StepInput, tag: &str) -> String {
    format!("{}:{}:{}", input.instance_id, input.step_id, tag)
}

impl StepInput {
    /// The journey context as a JSON value (`{}` when empty).
    pub fn context_value(&self) -> Value {
        Value::Object(json::object_or_empty(&self.journey_context))
    }

    /// The journey context parsed into your own type.
    pub fn context_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        json::from(&self.journey_context)
    }

    /// The event that started the instance, when this step runs on entry.
    pub fn entry_event(&self) -> Option<&Event> {
        match &self.trigger {
            Trigger::Entered(e) => Some(e),
            _ => None,
        }
    }
}
