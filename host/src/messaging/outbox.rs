//! The outbox: one record per send intent (`outbox/<intent id>`), with the channel the host
//! chose, the recipient's address there, and the policy decision. Idempotent: an intent id
//! seen before is ignored, so a retried step never sends twice.
//!
//! Keys in the tenant space: `outbox/<intent>` the record; `outp/<profile>/<at:020>/<intent>`
//! the profile's deliveries (360 view); `mkt/<profile>/<at:020>/<intent>` marketing sends
//! that count toward the frequency cap.

use serde::{Deserialize, Serialize};

use super::policy::{self, Category, Decision, PolicyConfig, SendContext};
use crate::profiles::ProfileRecord;
use crate::runtime::bindings::exports::journey::SendIntent;
use crate::runtime::bindings::types::{ChannelKind, Content};
use crate::store::{Backend, BatchOp, Space, StoreError};

/// Where an outbox entry stands: the delivery log's status. It only moves forward (see
/// [`crate::delivery::log`]): queued or held → sent → delivered → read/opened → clicked →
/// replied; the failures are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Cleared by policy, waiting for its channel adapter (or for a retry).
    Queued,
    /// Held by quiet hours until this time (Unix ms).
    Held {
        /// When the window opens.
        until: i64,
    },
    /// Not sent, and why (`no_consent`, `frequency_capped`, `no_address`, …).
    Skipped {
        /// Stable reason code.
        reason: String,
    },
    /// The provider accepted it.
    Sent,
    /// Delivered to the device or mailbox.
    Delivered,
    /// Read (chat channels).
    Read,
    /// Opened (email).
    Opened,
    /// A link in it was clicked.
    Clicked,
    /// The customer answered on the channel afterwards.
    Replied,
    /// The provider or the adapter refused it for good.
    Failed {
        /// Stable reason code, then `: ` and the provider's words when there are any.
        reason: String,
    },
    /// The provider could not deliver it.
    Undelivered {
        /// Why.
        reason: String,
    },
    /// The email bounced.
    Bounced {
        /// Why.
        reason: String,
    },
    /// Every try failed with a retryable error; it sits on the dead-letter list.
    DeadLettered {
        /// The last error.
        reason: String,
    },
    /// The outcome is unknown (a timeout after the request left): never retried blindly.
    Ambiguous {
        /// What happened.
        reason: String,
    },
}

/// One send intent as the host decided it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The plugin's intent id (the idempotency key).
    pub intent_id: String,
    /// The journey instance that asked.
    pub instance: String,
    /// The journey.
    pub journey: String,
    /// The recipient's profile.
    pub profile_id: String,
    /// The channel chosen (the first preferred one with an address).
    pub channel: Option<String>,
    /// The recipient's address on that channel.
    pub address: Option<String>,
    /// Channels in the plugin's order of preference.
    pub preference: Vec<String>,
    /// Transactional or marketing.
    pub category: Category,
    /// The message.
    pub content: Vec<Content>,
    /// The decision.
    #[serde(flatten)]
    pub status: OutboxStatus,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Delivery progress: tries, the adapter, the provider's id, every status report.
    #[serde(default)]
    pub delivery: crate::delivery::log::DeliveryState,
}

/// Key of the tenant's messaging policy in its space (absent = the defaults).
pub const POLICY_KEY: &[u8] = b"messaging-policy";

/// The tenant's messaging policy: what `PUT /v1/messaging/policy` stored, else the
/// defaults (Vietnamese rules, `Asia/Ho_Chi_Minh`). A stored value that no longer decodes
/// falls back to the defaults with a log line.
pub fn tenant_policy(b: &dyn Backend, sp: &Space) -> Result<PolicyConfig, StoreError> {
    Ok(match b.get(sp, POLICY_KEY)? {
        Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored messaging policy unreadable; using the defaults");
            PolicyConfig::default()
        }),
        None => PolicyConfig::default(),
    })
}

/// Reason code when no preferred channel has an address for the profile.
pub const NO_ADDRESS: &str = "no_address";

/// The profile's address on `channel`, from its identities.
fn address(profile: &ProfileRecord, channel: ChannelKind) -> Option<String> {
    address_identity(profile, channel).map(|i| i.value)
}

/// The profile's identity that addresses it on `channel` (kind and value).
pub fn address_identity(
    profile: &ProfileRecord,
    channel: ChannelKind,
) -> Option<crate::profiles::IdentityRecord> {
    let find =
        |pred: &dyn Fn(&str) -> bool| profile.identities.iter().find(|i| pred(&i.kind)).cloned();
    match channel {
        ChannelKind::Email => find(&|k| k == "email"),
        ChannelKind::Sms | ChannelKind::ZaloZns | ChannelKind::Whatsapp => find(&|k| k == "phone"),
        ChannelKind::ZaloOa => find(&|k| k == "zalo" || k.starts_with("zalo:")),
        ChannelKind::Messenger => find(&|k| k == "psid" || k.starts_with("psid:")),
        ChannelKind::Push => find(&|k| k == "push_token" || k.starts_with("device:")),
        ChannelKind::WebChat => find(&|k| k == "anonymous_id"),
        ChannelKind::Webhook => Some(crate::profiles::IdentityRecord {
            kind: "profile_id".into(),
            value: profile.id.clone(),
        }),
    }
}

/// What the policy says for `profile` on `channel` now.
pub(crate) fn decide(
    b: &dyn Backend,
    sp: &Space,
    cfg: &PolicyConfig,
    category: Category,
    channel: &str,
    profile: &ProfileRecord,
    now: i64,
) -> Result<OutboxStatus, StoreError> {
    // Only a marketing send under a cap looks at earlier sends.
    let marketing_sent_at: Vec<i64> =
        if category == Category::Marketing && cfg.marketing_cap.is_some() {
            let mkt_prefix = format!("mkt/{}/", profile.id);
            b.scan_prefix_rev(sp, mkt_prefix.as_bytes(), MAX_CAP_LOOKBACK)?
                .iter()
                .filter_map(|(k, _)| {
                    std::str::from_utf8(&k[mkt_prefix.len()..])
                        .ok()?
                        .split('/')
                        .next()?
                        .parse()
                        .ok()
                })
                .collect()
        } else {
            Vec::new()
        };
    let decision = policy::decide(
        cfg,
        &SendContext {
            category,
            channel,
            profile,
            marketing_sent_at: &marketing_sent_at,
            now_ms: now,
        },
    );
    Ok(match decision {
        Decision::Send => OutboxStatus::Queued,
        Decision::Hold { until_ms } => OutboxStatus::Held { until: until_ms },
        Decision::Skip { reason } => OutboxStatus::Skipped {
            reason: reason.code().to_string(),
        },
    })
}

/// Recent marketing sends read for the frequency cap: far more than any sane cap.
const MAX_CAP_LOOKBACK: usize = 64;

/// The ops that store `rec` (and count it toward the cap when it goes out as marketing).
fn store_ops(rec: &OutboxRecord, now: i64) -> Result<Vec<BatchOp>, StoreError> {
    let mut ops = vec![BatchOp::put(
        format!("outbox/{}", rec.intent_id).into_bytes(),
        serde_json::to_vec(rec).map_err(StoreError::Codec)?,
    )];
    // Held sends count when they go out; skipped ones never count.
    if rec.category == Category::Marketing && rec.status == OutboxStatus::Queued {
        ops.push(BatchOp::put(
            format!("mkt/{}/{now:020}/{}", rec.profile_id, rec.intent_id).into_bytes(),
            Vec::new(),
        ));
    }
    // Cleared to go: the delivery worker picks it up now.
    if rec.status == OutboxStatus::Queued {
        ops.push(crate::delivery::log::due_op(now, &rec.intent_id));
    }
    Ok(ops)
}

fn hold_of(status: &OutboxStatus) -> Option<i64> {
    match status {
        OutboxStatus::Held { until } => Some(*until),
        _ => None,
    }
}

/// Records one send intent: picks the channel, applies the messaging policy and writes the
/// outbox entry. Returns the ops (empty when the intent id was seen before) and, when quiet
/// hours hold it, the time to look again ([`release`]).
pub fn submit(
    b: &dyn Backend,
    sp: &Space,
    instance: &str,
    journey: &str,
    profile: &ProfileRecord,
    intent: SendIntent,
    now: i64,
) -> Result<(Vec<BatchOp>, Option<i64>), StoreError> {
    if b.get(sp, format!("outbox/{}", intent.intent_id).as_bytes())?
        .is_some()
    {
        return Ok((Vec::new(), None));
    }
    let cfg = tenant_policy(b, sp)?;
    let category = Category::from(intent.category);
    let chosen = intent
        .channel_preference
        .iter()
        .find_map(|c| address(profile, *c).map(|a| (*c, a)));
    let (channel, address, status) = match chosen {
        None => (
            None,
            None,
            OutboxStatus::Skipped {
                reason: NO_ADDRESS.into(),
            },
        ),
        Some((kind, addr)) => {
            let name = policy::channel_name(kind);
            let status = decide(b, sp, &cfg, category, name, profile, now)?;
            (Some(name.to_string()), Some(addr), status)
        }
    };
    let mut content = intent.content;
    if let Some(ch) = &channel {
        for c in &mut content {
            if let Content::Text(t) = c {
                *t = policy::apply_ad_prefix(&cfg, category, ch, t);
            }
        }
    }
    let rec = OutboxRecord {
        intent_id: intent.intent_id.clone(),
        instance: instance.to_string(),
        journey: journey.to_string(),
        profile_id: profile.id.clone(),
        channel,
        address,
        preference: intent
            .channel_preference
            .iter()
            .map(|c| policy::channel_name(*c).to_string())
            .collect(),
        category,
        content,
        status,
        created_at: now,
        delivery: Default::default(),
    };
    let mut ops = store_ops(&rec, now)?;
    ops.push(BatchOp::put(
        format!("outp/{}/{now:020}/{}", profile.id, intent.intent_id).into_bytes(),
        Vec::new(),
    ));
    Ok((ops, hold_of(&rec.status)))
}

/// Looks again at a held intent when its quiet hours end: the policy runs again (consent
/// may have been withdrawn, the cap reached meanwhile). Returns the ops and, if it is
/// held again, when to look next.
pub fn release(
    b: &dyn Backend,
    sp: &Space,
    intent_id: &str,
    now: i64,
) -> Result<(Vec<BatchOp>, Option<i64>), StoreError> {
    let Some(bytes) = b.get(sp, format!("outbox/{intent_id}").as_bytes())? else {
        return Ok((Vec::new(), None));
    };
    let Ok(mut rec) = serde_json::from_slice::<OutboxRecord>(&bytes) else {
        return Ok((Vec::new(), None));
    };
    let (OutboxStatus::Held { .. }, Some(channel)) = (&rec.status, rec.channel.clone()) else {
        return Ok((Vec::new(), None));
    };
    // The profile may have been merged into another since the send was held.
    let Some(profile) = crate::profiles::get_current(b, sp, &rec.profile_id)
        .ok()
        .flatten()
    else {
        rec.status = OutboxStatus::Skipped {
            reason: "profile_erased".into(),
        };
        return Ok((store_ops(&rec, now)?, None));
    };
    // The merge moved its `outp/` entry to that profile; the record follows.
    rec.profile_id = profile.id.clone();
    let cfg = tenant_policy(b, sp)?;
    rec.status = decide(b, sp, &cfg, rec.category, &channel, &profile, now)?;
    Ok((store_ops(&rec, now)?, hold_of(&rec.status)))
}

/// A profile's outbox entries, newest first.
pub fn for_profile(
    b: &dyn Backend,
    sp: &Space,
    profile_id: &str,
    limit: usize,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let prefix = format!("outp/{profile_id}/");
    let mut out = Vec::new();
    for (k, _) in b.scan_prefix_rev(sp, prefix.as_bytes(), limit)? {
        let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some((_, intent)) = rest.split_once('/') else {
            continue;
        };
        if let Some(v) = b.get(sp, format!("outbox/{intent}").as_bytes())? {
            if let Ok(r) = serde_json::from_slice(&v) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{ConsentRecord, IdentityRecord};
    use crate::runtime::bindings::types::MessageCategory;

    /// 2026-11-22 09:00 in Ho Chi Minh City.
    const NOW: i64 = crate::samples::NOW_MS;

    fn profile() -> ProfileRecord {
        let mut p = ProfileRecord::new("p1".into(), NOW);
        p.identities.push(IdentityRecord {
            kind: "phone".into(),
            value: "+84901234567".into(),
        });
        p.consents.push(ConsentRecord {
            channel: "*".into(),
            purpose: "marketing".into(),
            granted: true,
            source: "test".into(),
            at: NOW,
        });
        p
    }

    fn intent(id: &str, channels: Vec<ChannelKind>) -> SendIntent {
        SendIntent {
            intent_id: id.into(),
            channel_preference: channels,
            category: MessageCategory::Marketing,
            content: vec![Content::Text("Xin chào".into())],
        }
    }

    fn with_store(f: impl FnOnce(&dyn Backend, &Space)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _blobs) = crate::store::open(dir.path()).expect("open store");
        f(db.backend().as_ref(), &Space::tenant("t1"));
    }

    #[test]
    fn an_intent_id_is_recorded_once_however_often_it_is_submitted() {
        with_store(|b, sp| {
            let p = profile();
            let (ops, hold) = submit(
                b,
                sp,
                "i1",
                "j",
                &p,
                intent("x:1", vec![ChannelKind::Sms]),
                NOW,
            )
            .unwrap();
            assert!(hold.is_none());
            b.apply_batch(sp, &ops).unwrap();
            // A retried step submits the same intent again: nothing new.
            let (again, _) = submit(
                b,
                sp,
                "i1",
                "j",
                &p,
                intent("x:1", vec![ChannelKind::Sms]),
                NOW,
            )
            .unwrap();
            assert!(again.is_empty());
            let all = for_profile(b, sp, "p1", 10).unwrap();
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].status, OutboxStatus::Queued);
            assert_eq!(all[0].channel.as_deref(), Some("sms"));
        });
    }

    #[test]
    fn the_first_preferred_channel_with_an_address_is_chosen_else_no_address() {
        with_store(|b, sp| {
            let p = profile();
            let (ops, _) = submit(
                b,
                sp,
                "i1",
                "j",
                &p,
                intent("a", vec![ChannelKind::Email, ChannelKind::ZaloZns]),
                NOW,
            )
            .unwrap();
            b.apply_batch(sp, &ops).unwrap();
            let (ops, _) = submit(
                b,
                sp,
                "i1",
                "j",
                &p,
                intent("b", vec![ChannelKind::Email, ChannelKind::Messenger]),
                NOW,
            )
            .unwrap();
            b.apply_batch(sp, &ops).unwrap();
            let all = for_profile(b, sp, "p1", 10).unwrap();
            let by_id = |id: &str| all.iter().find(|r| r.intent_id == id).unwrap().clone();
            assert_eq!(by_id("a").channel.as_deref(), Some("zns"));
            assert_eq!(by_id("a").address.as_deref(), Some("+84901234567"));
            assert_eq!(
                by_id("b").status,
                OutboxStatus::Skipped {
                    reason: NO_ADDRESS.into()
                }
            );
        });
    }

    #[test]
    fn tenant_ad_prefix_is_applied_to_sms_marketing_text() {
        with_store(|b, sp| {
            let cfg = PolicyConfig {
                ad_prefix: Some("[QC]".into()),
                ..PolicyConfig::default()
            };
            b.put(sp, POLICY_KEY, &serde_json::to_vec(&cfg).unwrap())
                .unwrap();
            let (ops, _) = submit(
                b,
                sp,
                "i1",
                "j",
                &profile(),
                intent("q", vec![ChannelKind::Sms]),
                NOW,
            )
            .unwrap();
            b.apply_batch(sp, &ops).unwrap();
            let rec = &for_profile(b, sp, "p1", 10).unwrap()[0];
            assert!(
                matches!(&rec.content[0], Content::Text(t) if t == "[QC] Xin chào"),
                "{:?}",
                rec.content
            );
        });
    }
}
