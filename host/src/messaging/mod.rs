//! The message pipeline: what the host checks before any send intent reaches a channel.
//!
//! Plugins never call a channel; each send is an intent the host may send, hold or skip
//! (see `../shared/design/domain.md` §4, "Send intents" and "Message pipeline"). This
//! module holds the pieces of that pipeline, each pure and testable on its own:
//!
//! - [`policy`]: consent, quiet hours, frequency caps and the Vietnamese `[QC]` ad prefix,
//!   deciding [`policy::Decision::Send`], [`policy::Decision::Hold`] or
//!   [`policy::Decision::Skip`] for one intent.
//! - [`outbox`]: where a journey's send intents land: the chosen channel and address, the
//!   policy decision, idempotent by intent id. Channel adapters take `queued` entries
//!   from here (channels issue); until then the outbox is the end of the line.

pub mod outbox;
pub mod policy;
