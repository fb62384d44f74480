//! Host bindings generated from `wit/`: one module for the capability imports and one per
//! plugin world, sharing the capability types through `with:`.

/// Imports of every host capability (the `host-capabilities` world). Every import is
/// `trappable`: the outer `wasmtime::Result` is a trap, the inner `result` the typed error
/// the guest handles.
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod caps {
    wasmtime::component::bindgen!({
        world: "host-capabilities",
        path: "../wit",
        imports: { default: trappable },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Shared types (`weft:plugin/types`).
pub use caps::weft::plugin::types;

/// The `journey-rule` world.
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod journey_rule {
    wasmtime::component::bindgen!({
        world: "journey-rule",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "weft:plugin/types": super::caps::weft::plugin::types,
            "weft:plugin/profile-store": super::caps::weft::plugin::profile_store,
            "weft:plugin/state": super::caps::weft::plugin::state,
            "weft:plugin/config": super::caps::weft::plugin::config,
            "weft:plugin/clock": super::caps::weft::plugin::clock,
            "weft:plugin/log": super::caps::weft::plugin::log,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The `personalization` world.
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod personalization {
    wasmtime::component::bindgen!({
        world: "personalization",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "weft:plugin/types": super::caps::weft::plugin::types,
            "weft:plugin/profile-store": super::caps::weft::plugin::profile_store,
            "weft:plugin/state": super::caps::weft::plugin::state,
            "weft:plugin/config": super::caps::weft::plugin::config,
            "weft:plugin/clock": super::caps::weft::plugin::clock,
            "weft:plugin/log": super::caps::weft::plugin::log,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The `channel-adapter` world.
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod channel_adapter {
    wasmtime::component::bindgen!({
        world: "channel-adapter",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "weft:plugin/types": super::caps::weft::plugin::types,
            "weft:plugin/profile-store": super::caps::weft::plugin::profile_store,
            "weft:plugin/state": super::caps::weft::plugin::state,
            "weft:plugin/config": super::caps::weft::plugin::config,
            "weft:plugin/clock": super::caps::weft::plugin::clock,
            "weft:plugin/log": super::caps::weft::plugin::log,
            "weft:plugin/crypto": super::caps::weft::plugin::crypto,
            "weft:plugin/outbound-http": super::caps::weft::plugin::outbound_http,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The `chatbot-flow` world.
#[allow(missing_docs)] // generated: the docs live on the WIT items
pub mod chatbot_flow {
    wasmtime::component::bindgen!({
        world: "chatbot-flow",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "weft:plugin/types": super::caps::weft::plugin::types,
            "weft:plugin/profile-store": super::caps::weft::plugin::profile_store,
            "weft:plugin/state": super::caps::weft::plugin::state,
            "weft:plugin/config": super::caps::weft::plugin::config,
            "weft:plugin/clock": super::caps::weft::plugin::clock,
            "weft:plugin/log": super::caps::weft::plugin::log,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Export-side types of each kind, re-exported under short names.
pub mod exports {
    pub use super::channel_adapter::exports::weft::plugin::adapter;
    pub use super::chatbot_flow::exports::weft::plugin::flow;
    pub use super::journey_rule::exports::weft::plugin::journey;
    pub use super::personalization::exports::weft::plugin::personalize;
}
