//! The delivery log: one record per send intent (the outbox record, `outbox/<intent>`), whose
//! status only moves forward, plus the indexes that let provider reports find it.
//!
//! Status order: queued / held → sent → delivered → read or opened → clicked → replied.
//! Failures (failed, undelivered, bounced) apply only before delivery; skipped, failed,
//! undelivered, bounced and dead-lettered are final. A report that would move a message
//! backwards — `delivered` after `read`, anything after `failed` — is kept in the history and
//! changes nothing else, so out-of-order webhooks end in the right state.
//!
//! Keys in the tenant space:
//! - `dlvdue/<due:020>/<intent>`: a send attempt due at `due` (Unix ms);
//! - `dlvpm/<plugin>/<provider message id>` → intent: finds a message from a status report;
//! - `dlvrc/<plugin>/<identity>/<sent:020>/<intent>`: messages per recipient, for watermarks;
//! - `dlvev/<plugin>/<hash of the provider event id>`: a provider event already applied.

use serde::{Deserialize, Serialize};

use crate::messaging::outbox::{OutboxRecord, OutboxStatus};
use crate::store::{Backend, BatchOp, Space, StoreError};

/// Status reports kept per message: a message sees a handful (sent, delivered, read,
/// clicks); 32 keeps duplicates and retries visible without letting a record grow.
pub const MAX_HISTORY: usize = 32;

/// One status report or decision, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The status code reported (`sent`, `delivered`, `read`, `failed`, `retry`, …).
    pub status: String,
    /// When it happened, Unix ms.
    pub at: i64,
    /// The reason, the clicked URL or the error, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Whether it changed the message's status (false: out of order or a duplicate).
    pub applied: bool,
}

/// Delivery progress of one send intent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Send attempts made on the current channel.
    #[serde(default)]
    pub attempts: u32,
    /// The adapter installation (plugin name) that sent it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub installation: Option<String>,
    /// The provider's id for the message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_message_id: Option<String>,
    /// When the provider accepted it, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sent_at: Option<i64>,
    /// When the next attempt is due, while a retry waits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_attempt_at: Option<i64>,
    /// Channels given up before the current one, each as `channel: reason`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fallbacks: Vec<String>,
    /// The original URLs of the message's tracked links, in link order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub links: Vec<String>,
    /// Every report and decision, oldest first (at most [`MAX_HISTORY`]).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<StatusEvent>,
}

/// The stable code of a status, as `GET /v1/deliveries?status=` takes it.
pub fn code(s: &OutboxStatus) -> &'static str {
    match s {
        OutboxStatus::Queued => "queued",
        OutboxStatus::Held { .. } => "held",
        OutboxStatus::Skipped { .. } => "skipped",
        OutboxStatus::Sent => "sent",
        OutboxStatus::Delivered => "delivered",
        OutboxStatus::Read => "read",
        OutboxStatus::Opened => "opened",
        OutboxStatus::Clicked => "clicked",
        OutboxStatus::Replied => "replied",
        OutboxStatus::Failed { .. } => "failed",
        OutboxStatus::Undelivered { .. } => "undelivered",
        OutboxStatus::Bounced { .. } => "bounced",
        OutboxStatus::DeadLettered { .. } => "dead_lettered",
        OutboxStatus::Ambiguous { .. } => "ambiguous",
    }
}

/// Every status code, for validating filters.
pub const CODES: &[&str] = &[
    "queued",
    "held",
    "skipped",
    "sent",
    "delivered",
    "read",
    "opened",
    "clicked",
    "replied",
    "failed",
    "undelivered",
    "bounced",
    "dead_lettered",
    "ambiguous",
];

/// Position on the way to the customer; `None` for final failures.
pub fn progress(s: &OutboxStatus) -> Option<u8> {
    match s {
        OutboxStatus::Queued | OutboxStatus::Held { .. } | OutboxStatus::Ambiguous { .. } => {
            Some(0)
        }
        OutboxStatus::Sent => Some(1),
        OutboxStatus::Delivered => Some(2),
        OutboxStatus::Read | OutboxStatus::Opened => Some(3),
        OutboxStatus::Clicked => Some(4),
        OutboxStatus::Replied => Some(5),
        OutboxStatus::Skipped { .. }
        | OutboxStatus::Failed { .. }
        | OutboxStatus::Undelivered { .. }
        | OutboxStatus::Bounced { .. }
        | OutboxStatus::DeadLettered { .. } => None,
    }
}

/// Whether a message now at `current` moves to `next`: forward only; a failure only before
/// delivery; nothing after a final state.
pub fn moves_forward(current: &OutboxStatus, next: &OutboxStatus) -> bool {
    if let OutboxStatus::Ambiguous { .. } = next {
        // Only a send's own outcome is ambiguous, and only while it was queued.
        return matches!(current, OutboxStatus::Queued | OutboxStatus::Held { .. });
    }
    match (progress(current), progress(next)) {
        (None, _) => false,
        (Some(now), Some(then)) => then > now,
        (Some(now), None) => now < 2,
    }
}

/// Applies a reported `status` at `at` to `rec`: records it in the history and moves the
/// status if it goes forward. Returns whether the status changed.
pub fn report(
    rec: &mut OutboxRecord,
    status: OutboxStatus,
    at: i64,
    detail: Option<String>,
) -> bool {
    let applied = moves_forward(&rec.status, &status);
    note(rec, code(&status), at, detail, applied);
    if applied {
        rec.status = status;
    }
    applied
}

/// Adds a history entry (dropping the oldest past [`MAX_HISTORY`]).
pub fn note(rec: &mut OutboxRecord, status: &str, at: i64, detail: Option<String>, applied: bool) {
    let h = &mut rec.delivery.history;
    if h.len() >= MAX_HISTORY {
        h.remove(0);
    }
    h.push(StatusEvent {
        status: status.to_string(),
        at,
        detail,
        applied,
    });
}

/// The op that stores `rec`.
pub fn put_op(rec: &OutboxRecord) -> Result<BatchOp, StoreError> {
    Ok(BatchOp::put(
        record_key(&rec.intent_id),
        serde_json::to_vec(rec).map_err(StoreError::Codec)?,
    ))
}

/// Key of an intent's record.
pub fn record_key(intent: &str) -> Vec<u8> {
    format!("outbox/{intent}").into_bytes()
}

/// Loads an intent's record.
pub fn get(b: &dyn Backend, sp: &Space, intent: &str) -> Result<Option<OutboxRecord>, StoreError> {
    Ok(b.get(sp, &record_key(intent))?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Prefix of due attempts.
pub const DUE_PREFIX: &[u8] = b"dlvdue/";

/// The op that makes an attempt for `intent` due at `at`.
pub fn due_op(at: i64, intent: &str) -> BatchOp {
    BatchOp::put(due_key(at, intent), Vec::new())
}

/// Key of an attempt due at `at`.
pub fn due_key(at: i64, intent: &str) -> Vec<u8> {
    format!("dlvdue/{:020}/{intent}", at.max(0)).into_bytes()
}

/// Parses a due key into (due, intent).
pub fn parse_due(key: &[u8]) -> Option<(i64, String)> {
    let rest = std::str::from_utf8(key.strip_prefix(DUE_PREFIX)?).ok()?;
    let (at, intent) = rest.split_once('/')?;
    Some((at.parse().ok()?, intent.to_string()))
}

/// Key finding a message by its provider id.
pub fn provider_key(plugin: &str, provider_message_id: &str) -> Vec<u8> {
    format!("dlvpm/{plugin}/{provider_message_id}").into_bytes()
}

/// Prefix of one recipient's messages through `plugin`.
pub fn recipient_prefix(plugin: &str, kind: &str, value: &str) -> String {
    format!("dlvrc/{plugin}/{kind}:{value}/")
}

/// Key of one message in its recipient's list.
pub fn recipient_key(plugin: &str, kind: &str, value: &str, sent_at: i64, intent: &str) -> Vec<u8> {
    format!(
        "{}{:020}/{intent}",
        recipient_prefix(plugin, kind, value),
        sent_at.max(0)
    )
    .into_bytes()
}

/// Key marking a provider event as applied. The id is hashed: providers build event ids
/// from phone numbers and user ids, and the marker outlives an erased profile.
pub fn event_key(plugin: &str, provider_event_id: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(provider_event_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("dlvev/{plugin}/{hex}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: OutboxStatus) -> OutboxRecord {
        OutboxRecord {
            intent_id: "i1".into(),
            instance: "ji".into(),
            journey: "j".into(),
            profile_id: "p".into(),
            channel: Some("sms".into()),
            address: Some("+84901234567".into()),
            preference: vec!["sms".into()],
            category: crate::messaging::policy::Category::Marketing,
            content: vec![],
            status,
            created_at: 0,
            delivery: DeliveryState::default(),
        }
    }

    fn failed() -> OutboxStatus {
        OutboxStatus::Failed { reason: "x".into() }
    }

    #[test]
    fn statuses_only_move_forward() {
        let mut r = rec(OutboxStatus::Sent);
        assert!(report(&mut r, OutboxStatus::Read, 2, None));
        assert!(
            !report(&mut r, OutboxStatus::Delivered, 3, None),
            "read before delivered"
        );
        assert_eq!(r.status, OutboxStatus::Read);
        assert!(report(
            &mut r,
            OutboxStatus::Clicked,
            4,
            Some("https://x".into())
        ));
        assert!(
            !report(&mut r, failed(), 5, None),
            "no failure after delivery"
        );
        assert_eq!(r.status, OutboxStatus::Clicked);
        assert_eq!(r.delivery.history.len(), 4, "every report is kept");
        assert!(!r.delivery.history[1].applied);
    }

    #[test]
    fn failures_are_final_and_apply_only_before_delivery() {
        let mut r = rec(OutboxStatus::Sent);
        assert!(report(&mut r, failed(), 1, None));
        assert!(
            !report(&mut r, OutboxStatus::Delivered, 2, None),
            "delivered after failed"
        );
        assert!(!report(&mut r, OutboxStatus::Read, 3, None));
        assert_eq!(code(&r.status), "failed");
        let mut d = rec(OutboxStatus::Delivered);
        assert!(!report(
            &mut d,
            OutboxStatus::Bounced { reason: "x".into() },
            1,
            None
        ));
        let mut s = rec(OutboxStatus::Skipped {
            reason: "no_consent".into(),
        });
        assert!(!report(&mut s, OutboxStatus::Sent, 1, None));
        let ambiguous = || OutboxStatus::Ambiguous { reason: "?".into() };
        let mut q = rec(OutboxStatus::Queued);
        assert!(report(&mut q, ambiguous(), 1, None));
        assert!(
            report(&mut q, OutboxStatus::Delivered, 2, None),
            "a report settles it"
        );
        assert!(!report(&mut q, ambiguous(), 3, None));
    }

    #[test]
    fn history_is_capped() {
        let mut r = rec(OutboxStatus::Sent);
        for i in 0..(MAX_HISTORY as i64 + 5) {
            report(&mut r, OutboxStatus::Delivered, i, None);
        }
        assert_eq!(r.delivery.history.len(), MAX_HISTORY);
        assert_eq!(r.delivery.history[0].at, 5);
    }

    #[test]
    fn codes_cover_every_status_and_due_keys_parse() {
        assert_eq!(CODES.len(), 14);
        assert_eq!(
            parse_due(&due_key(1_795_312_800_000, "a/b")),
            Some((1_795_312_800_000, "a/b".to_string()))
        );
        assert!(due_key(1, "z") < due_key(20, "a"), "keys sort by due time");
    }
}
