//! Audiences: per-tenant segments of profiles defined by a JSON predicate.
//!
//! This module holds the pure predicate language ([`predicate`]): parsing with path-aware
//! errors, evaluation against a profile's [`Facts`], and the metadata the engine needs to
//! decide when to re-evaluate an audience. Definitions, storage and membership tracking are
//! in [`engine`].

pub mod engine;
pub mod predicate;

pub use predicate::{Facts, Predicate, PredicateError};
