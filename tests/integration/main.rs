//! Weft's integration tests, one binary with a module per area (link time matters: every
//! test binary links wasmtime).

mod api;
mod audiences;
mod channels;
mod chat;
mod durability;
mod exports;
mod ingest;
mod journey_plugins;
mod journeys;
mod lifecycle;
mod limits;
mod personalize;
mod personalize_browser;
mod plugin_units;
mod runner;
mod sandbox;
mod scaffold;
mod smoke;
mod widget_browser;
