//! Weft host.
#![deny(missing_docs)]

pub mod api;
pub mod clock;
pub mod config;
pub mod kind;
pub mod profiles;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod tenants;
