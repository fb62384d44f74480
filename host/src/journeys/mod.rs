//! The journey engine: **where journey-rule plugins are invoked.** The host owns the
//! durable state machine — instances, waits, timers, exits, retries — and a journey
//! plugin only decides what to do at a step (see `wit/journey.wit`).
//!
//! Flow:
//! 1. The event processor calls [`route`] for every processed event: entry events of an
//!    active journey, exit events of running instances and events an instance waits for
//!    become work items (`jl/<lane>/<seq>`) in the same atomic batch as the event itself.
//!    A profile's items always go to the same one of [`engine::WORK_LANES`] lanes.
//! 2. The [`Journeys`] runner takes each lane's work items in order (one loop per tenant
//!    and lane, so one instance never runs two steps at once, while different profiles'
//!    work runs on several cores), invokes the plugin's `step`,
//!    and applies the commands in one batch: instance state, waits, sends (through the
//!    messaging policy into the outbox), traits and emitted events (queued back into
//!    ingestion, so they update the profile and can trigger journeys).
//! 3. When the processor merges two profiles, each instance of the merged-away one gets a
//!    `Rehome` item in its lane: its indexes move to the winner, and later work for it
//!    runs in the winner's lane (work found in another lane than its instance's profile
//!    moves there first, so an instance still runs one step at a time).
//! 4. Waits with a time are timers in the global `timers` space, keyed by due time; the
//!    scheduler turns due timers into work items exactly once (`fd/` guards, kept one to
//!    two days by `store::markers`), and a timer whose instance moved on (token mismatch)
//!    is ignored.
//!
//! Keys in the tenant space: `ji/<instance>` instance; `jkey/<journey>/<profile>/<entry
//! key>` latest instance (re-entry policy); `jact/<profile>/<instance>` the profile's
//! running instances; `jwait/<profile>/<event>/<instance>` event waits; `jl/<lane>/<seq>`
//! work (`jq/<seq>` before lanes: moved into the lanes by the runner).

pub mod engine;

pub use engine::{route, Instance, InstanceStatus, Journeys};
