//! Host bindings generated from `wit/`: one module for the capability imports and one per
//! plugin world, sharing the capability types through `with:`.

/// Imports of every host capability (the `host-capabilities` world). Every import is
/// `trappable`: the outer `wasmtime::Result` is a trap, the inner `result` the typed error
/// the guest handles. `outbound-http.send` is also `async`: a guest waiting on a provider
/// suspends its fiber instead of holding a thread (see `runtime::invoke::invoke_async`).
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod caps {
    wasmtime::component::bindgen!({
        world: "host-capabilities",
        path: "../wit",
        imports: {
            "weft:plugin/outbound-http.send": async | trappable,
            default: trappable,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Shared types (`weft:plugin/types`).
pub use caps::weft::plugin::types;

/// Generates the bindings of one plugin world, reusing the capability modules of [`caps`]
/// so every type exists once.
macro_rules! kind_world {
    ($(#[$doc:meta])* $module:ident, $world:literal) => {
        $(#[$doc])*
        #[allow(missing_docs)] // generated: the docs live on the WIT items
        pub mod $module {
            wasmtime::component::bindgen!({
                world: $world,
                path: "../wit",
                imports: { default: trappable },
                // Store data must be `Send` for the async `outbound-http.send` import.
                require_store_data_send: true,
                // The whole package maps to `caps`: every import type is generated once.
                with: { "weft:plugin": super::caps::weft::plugin },
                additional_derives: [serde::Serialize, serde::Deserialize],
            });
        }
    };
}

kind_world!(
    /// The `journey-rule` world.
    journey_rule,
    "journey-rule"
);
kind_world!(
    /// The `personalization` world.
    personalization,
    "personalization"
);
kind_world!(
    /// The `channel-adapter` world.
    channel_adapter,
    "channel-adapter"
);
kind_world!(
    /// The `chatbot-flow` world.
    chatbot_flow,
    "chatbot-flow"
);

/// Export-side types of each kind, re-exported under short names.
pub mod exports {
    pub use super::channel_adapter::exports::weft::plugin::adapter;
    pub use super::chatbot_flow::exports::weft::plugin::flow;
    pub use super::journey_rule::exports::weft::plugin::journey;
    pub use super::personalization::exports::weft::plugin::personalize;
}
