//! Weft host.
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod audience;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod conversations;
pub mod delivery;
pub mod demo;
pub mod identity;
pub mod ingest;
pub mod journeys;
pub mod kind;
pub mod messaging;
pub mod profiles;
pub mod registry;
pub mod runner;
pub mod runtime;
pub mod samples;
pub mod scaffold;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod worker;
