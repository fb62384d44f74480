//! Guest SDK for Weft plugins: Rust bindings for the `weft:plugin@0.1.0` WIT package plus
//! small, idiomatic helpers.
//!
//! # The contract
//!
//! A Weft plugin is a WebAssembly component built for `wasm32-wasip2` (a `cdylib` crate;
//! Rust emits a component directly). It implements exactly one of four kinds, each a WIT
//! world in `wit/world.wit`:
//!
//! | kind              | exports                       | Rust trait             | export macro                  |
//! |-------------------|-------------------------------|------------------------|-------------------------------|
//! | `journey-rule`    | `weft:plugin/journey`         | [`journey::Guest`]     | [`export_journey_rule!`]      |
//! | `personalization` | `weft:plugin/personalize`     | [`personalize::Guest`] | [`export_personalization!`]   |
//! | `channel-adapter` | `weft:plugin/adapter`         | [`adapter::Guest`]     | [`export_channel_adapter!`]   |
//! | `chatbot-flow`    | `weft:plugin/flow`            | [`flow::Guest`]        | [`export_chatbot_flow!`]      |
//!
//! Every kind may import `profile-store`, `state`, `config`, `clock` and `log`; only
//! channel adapters may also import `crypto` and `outbound-http`. The host refuses, at
//! upload, a component that imports anything outside its kind's world, naming the import.
//! Beyond `weft:plugin`, the host grants a minimal WASI subset (`wasi:io`, `wasi:cli`
//! stdio/environment/exit, `wasi:clocks`, `wasi:random`); never `wasi:filesystem`,
//! `wasi:sockets` or `wasi:http`.
//!
//! What this crate guarantees:
//!
//! - **A plugin imports only what it calls.** The bindings for all host capabilities are
//!   generated once (module [`bindings::host`]) and every helper here is a plain function,
//!   so an import the plugin never calls is dropped when the component is linked. A
//!   journey rule that never logs has no `weft:plugin/log` import; a journey rule can never
//!   end up importing `crypto` or `outbound-http` through this crate.
//! - **Nothing here touches the filesystem, the network, the environment or ambient
//!   time.** Time comes from [`clock`] (the host's clock) or the `now` field of an input,
//!   so journeys, personalizers and flows stay deterministic and replayable.
//! - **Errors are values.** Host capabilities return [`CapabilityError`]; plugins return
//!   [`PluginError`] (or the adapter's `SendError`/`WebhookError`). `From` conversions make
//!   `?` work across them: a capability that is `unavailable` becomes `retryable`, one that
//!   is `denied` or `limit-exceeded` becomes `fatal`, and malformed JSON becomes
//!   `invalid-input`.
//! - **Allocation can be nearly free.** An instance lives for one call, so a plugin that
//!   allocates a bounded amount can swap the general-purpose allocator for a bump
//!   allocator with [`bump_allocator!`] (see [`bump`] for the tradeoff).
//! - **JSON stays JSON.** WIT has no maps, so traits, properties and contexts cross the
//!   boundary as JSON text ([`types::Json`]). [`json`] parses them into
//!   [`serde_json::Value`] or your own `serde` types and back.
//!
//! # A journey rule in full
//!
//! ```no_run
//! use weft_guest::journey::{Command, Guest, Manifest, PluginError, ReEntry, StepInput};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn describe() -> Manifest {
//!         Manifest {
//!             name: "Hello".into(),
//!             entry_events: vec!["Signed Up".into()],
//!             entry_key: None,
//!             exit_events: vec![],
//!             re_entry: ReEntry::Never,
//!         }
//!     }
//!
//!     fn step(input: StepInput) -> Result<Vec<Command>, PluginError> {
//!         weft_guest::log::info!("step {} of {}", input.step_id, input.instance_id);
//!         Ok(vec![Command::Exit("done".into())])
//!     }
//! }
//!
//! weft_guest::export_journey_rule!(Hello);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`. Each kind's module
//! ([`journey`], [`personalize`], [`adapter`], [`flow`]) has its own compiled example.
#![deny(missing_docs)]

// Lets the generated bindings name themselves `weft_guest::…` both inside this crate and in
// the plugins that expand the export macros.
extern crate self as weft_guest;

pub mod bindings;

pub mod adapter;
pub mod bump;
pub mod clock;
pub mod config;
pub mod crypto;
mod error;
pub mod flow;
pub mod http;
pub mod journey;
pub mod json;
pub mod log;
pub mod meta;
pub mod personalize;
pub mod profile;
pub mod state;

/// The shared vocabulary of every kind (`weft:plugin/types`): events, profiles, content,
/// errors. Generated once and shared by all four worlds.
pub mod types {
    pub use crate::bindings::host::weft::plugin::types::*;
}

pub use types::{CapabilityError, PluginError};

/// `serde`, re-exported so plugins can name it without their own dependency.
pub use serde;
/// `serde_json`, re-exported so plugins can name it without their own dependency.
pub use serde_json;

/// Everything most plugins need: `use weft_guest::prelude::*;`.
pub mod prelude {
    pub use crate::json::{json, Value};
    pub use crate::types::{
        CapabilityError, ChannelKind, Content, Event, Identity, MessageCategory, PluginError,
        Profile,
    };
    pub use crate::{clock, config, json, log, profile, state};
}

/// Exports a type implementing [`journey::Guest`] as the component's `weft:plugin/journey`.
///
/// Use once per plugin, at the crate root, with a type name in scope:
/// `weft_guest::export_journey_rule!(MyRule);`. See [`journey`] for a full example.
#[macro_export]
macro_rules! export_journey_rule {
    ($ty:ident) => {
        $crate::bindings::journey_rule::__weft_export_journey_rule!(
            $ty with_types_in $crate::bindings::journey_rule
        );
    };
}

/// Exports a type implementing [`personalize::Guest`] as the component's
/// `weft:plugin/personalize`. See [`personalize`] for a full example.
#[macro_export]
macro_rules! export_personalization {
    ($ty:ident) => {
        $crate::bindings::personalization::__weft_export_personalization!(
            $ty with_types_in $crate::bindings::personalization
        );
    };
}

/// Exports a type implementing [`adapter::Guest`] as the component's `weft:plugin/adapter`.
/// See [`adapter`] for a full example.
#[macro_export]
macro_rules! export_channel_adapter {
    ($ty:ident) => {
        $crate::bindings::channel_adapter::__weft_export_channel_adapter!(
            $ty with_types_in $crate::bindings::channel_adapter
        );
    };
}

/// Exports a type implementing [`flow::Guest`] as the component's `weft:plugin/flow`.
/// See [`flow`] for a full example.
#[macro_export]
macro_rules! export_chatbot_flow {
    ($ty:ident) => {
        $crate::bindings::chatbot_flow::__weft_export_chatbot_flow!(
            $ty with_types_in $crate::bindings::chatbot_flow
        );
    };
}
