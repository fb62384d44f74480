//! Provider webhooks: **every provider callback enters here.** `GET`/`POST
//! /v1/webhooks/{tenant}/{installation}` hands the raw request to the adapter's
//! `handle-webhook` (which checks the signature and answers handshakes); the normalized
//! events it returns are applied here, each provider event once:
//!
//! - a status update moves the delivery log forward (by id, id list or watermark) and
//!   becomes a `Message Delivered` / `Opened` / `Clicked` / `Failed` track event; a report
//!   for a message whose send is not recorded yet waits (`dlvorphan/`) and is applied when it
//!   is; `unsubscribed` and `complained` also withdraw marketing consent;
//! - an inbound message is stored on the sender's conversation
//!   (`conv/<kind>:<value>/<at:020>/<id>`), opens the channel's care window
//!   (`lastin/…`), marks the last message sent there `replied`, and becomes a `Message
//!   Received` event;
//! - follow, unfollow, opt-out and identity hints become events the processor applies to
//!   the profile (consent changes, identity merges), so profiles have one writer.
//!
//! Webhooks of one tenant that arrive while another's events are being applied wait and
//! are then applied together, in arrival order, as one sled batch ([`Group`](crate::store::group::Group)): a batch
//! costs sled two log-buffer writes whatever it holds, and was most of a webhook's cost.
//!
//! The answer goes out only after the effects are durable: a provider that got a 200 may
//! drop its copy.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{log, Attempt, Deliveries};
use crate::ingest::{Message, MessageType};
use crate::kind::PluginKind;
use crate::messaging::outbox::OutboxStatus;
use crate::messaging::policy;
use crate::registry::RegistryError;
use crate::runtime::bindings::exports::adapter::{
    DeliveryStatus, HttpRequest, HttpResponse, InboundEvent, InboundMessage, MessageRef,
    StatusUpdate, WebhookError,
};
use crate::runtime::bindings::types::{Content, Identity};
use crate::runtime::{Call, Output};
use crate::store::{Backend, BatchOp, Space, Staged, StoreError};

/// Events applied per webhook: Meta batches up to ~1,000 entries; more is abuse.
pub const MAX_EVENTS: usize = 1_000;
/// Messages one watermark may cover: a care conversation has a few dozen.
const MAX_WATERMARK_SPAN: usize = 200;
/// Longest inbound text kept on a conversation (characters): the chat limit of the
/// longest-text channel (WhatsApp 4,096) with room to spare.
const MAX_INBOUND_TEXT: usize = 8_192;

/// One webhook's events, waiting in its tenant's group to be applied.
pub(crate) struct WebhookJob {
    plugin: String,
    /// The adapter's channel name (`*` when it did not say).
    channel: String,
    events: Vec<InboundEvent>,
}

/// A status report kept until its message's send is recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Orphan {
    /// The status.
    pub status: OutboxStatus,
    /// When it happened.
    pub at: i64,
    /// Reason or URL.
    pub detail: Option<String>,
}

/// Prefix of reports waiting for the send of `provider_message_id`.
pub fn orphan_prefix(plugin: &str, provider_message_id: &str) -> String {
    format!("dlvorphan/{plugin}/{provider_message_id}/")
}

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookFailure {
    /// No such installation, or it is not a channel adapter.
    #[error("{0}")]
    NotFound(String),
    /// The adapter refused the signature.
    #[error("the webhook signature does not verify")]
    BadSignature,
    /// The adapter found the request too old.
    #[error("the webhook timestamp is too old or too far in the future")]
    StaleTimestamp,
    /// The adapter could not read the body.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// Too many invocations queued.
    #[error("too busy; retry later")]
    Busy,
    /// The adapter trapped or ran out of time; the provider should retry.
    #[error(
        "the adapter failed handling the webhook ({0}); see the installation's invocation records"
    )]
    Adapter(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Deliveries {
    /// Handles one provider request for `tenant`'s installation `plugin`: the adapter's
    /// answer once every event it reported is applied and durable.
    pub async fn webhook(
        &self,
        tenant: &str,
        plugin: &str,
        req: HttpRequest,
    ) -> Result<HttpResponse, WebhookFailure> {
        let not_found = || {
            WebhookFailure::NotFound(format!(
                "no active channel adapter `{plugin}` for tenant `{tenant}`"
            ))
        };
        let active = self.registry.active(tenant, plugin).ok_or_else(not_found)?;
        if active.kind != PluginKind::ChannelAdapter {
            return Err(not_found());
        }
        let me = self
            .me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| WebhookFailure::Adapter("shutting down".into()))?;
        let (tenant_owned, plugin_owned) = (tenant.to_string(), plugin.to_string());
        let applier = me.clone();
        let handled = self
            .registry
            .invoke_then(
                tenant,
                active.clone(),
                Call::AdapterHandleWebhook(req),
                move |inv| me.after_webhook(&tenant_owned, (&plugin_owned, &active), inv),
            )
            .await;
        let (response, job) = match handled {
            Ok(r) => r?,
            Err(RegistryError::Busy) => return Err(WebhookFailure::Busy),
            Err(e) => return Err(WebhookFailure::Adapter(e.to_string())),
        };
        if let Some(job) = job {
            // Webhooks of one tenant that arrive while others' events are being applied
            // wait, without a thread, and are applied together as one write.
            let tenant_owned = tenant.to_string();
            let (queued, inbound) = self
                .webhook_groups
                .of(tenant)
                .submit(job, move |jobs| applier.apply_group(&tenant_owned, jobs))
                .await
                .unwrap_or_else(|lost| Err(lost.into()))?;
            self.db.commit().await?;
            if queued {
                self.ingest.processor().wake(tenant);
            }
            // New customer messages become conversation turns (queued durably above), now
            // rather than at the engine's next tick; the provider has its answer already.
            if let Some(chat) = self.chat.get().and_then(std::sync::Weak::upgrade) {
                if inbound {
                    let tenant = tenant.to_string();
                    tokio::spawn(async move {
                        if let Err(e) = chat.drain_inbound(&tenant).await {
                            tracing::warn!(tenant, error = %e, "inbound messages to the conversation engine");
                        }
                    });
                }
            }
        }
        Ok(response)
    }

    /// The adapter's answer to a webhook, and the events it reported, to be applied
    /// (`None` when there were none). Blocking (may ask the adapter for its capabilities).
    fn after_webhook(
        &self,
        tenant: &str,
        (plugin, active): (&str, &std::sync::Arc<crate::registry::Active>),
        inv: crate::registry::Invoked,
    ) -> Result<(HttpResponse, Option<WebhookJob>), WebhookFailure> {
        let result = match (inv.output, inv.error) {
            (Some(Output::AdapterHandleWebhook(Ok(r))), _) => r,
            (Some(Output::AdapterHandleWebhook(Err(e))), _) => {
                return Err(match e {
                    WebhookError::BadSignature => WebhookFailure::BadSignature,
                    WebhookError::StaleTimestamp => WebhookFailure::StaleTimestamp,
                    WebhookError::Malformed(m) => WebhookFailure::Malformed(m),
                })
            }
            (_, Some(e)) => return Err(WebhookFailure::Adapter(e.code().to_string())),
            (other, None) => {
                return Err(WebhookFailure::Adapter(format!(
                    "unexpected output {other:?}"
                )))
            }
        };
        if result.events.len() > MAX_EVENTS {
            return Err(WebhookFailure::Malformed(format!(
                "{} events in one request; at most {MAX_EVENTS} are accepted",
                result.events.len()
            )));
        }
        if result.events.is_empty() {
            return Ok((result.response, None));
        }
        let channel = self.capabilities(tenant, plugin, active).map_or_else(
            || "*".into(),
            |c| policy::channel_name(c.channel).to_string(),
        );
        let job = WebhookJob {
            plugin: plugin.to_string(),
            channel,
            events: result.events,
        };
        Ok((result.response, Some(job)))
    }

    /// Applies the events of several webhooks of `tenant`, in arrival order, as one sled
    /// batch: each reads what the earlier ones wrote through a staged view. Answers each
    /// as [`apply_events`](Self::apply_events) does; a failed batch fails them all.
    fn apply_group(
        &self,
        tenant: &str,
        jobs: Vec<WebhookJob>,
    ) -> Vec<Result<(bool, bool), StoreError>> {
        let lock = self.log_lock(tenant);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Staged::apply_each(
            self.db.backend().clone(),
            Space::tenant(tenant),
            jobs,
            |staged, sp, job| self.apply_events(staged, sp, job),
        )
    }

    /// Applies one webhook's events, each provider event once, to `b` (the tenant's staged
    /// view; the caller holds the tenant's log lock). Returns whether track events were
    /// queued, and whether new customer messages were.
    fn apply_events(
        &self,
        b: &dyn Backend,
        sp: &Space,
        job: WebhookJob,
    ) -> Result<(bool, bool), StoreError> {
        let WebhookJob {
            plugin,
            channel,
            events,
        } = job;
        let (plugin, channel) = (plugin.as_str(), channel.as_str());
        let now = self.clock.now_ms();
        let mut queued = false;
        let mut inbound = false;
        for event in events {
            queued |= match event {
                InboundEvent::Status(su) => self.apply_status_update(b, sp, plugin, su, now)?,
                InboundEvent::Message(m) => {
                    let new = self.apply_inbound(b, sp, plugin, channel, m, now)?;
                    inbound |= new;
                    new
                }
                InboundEvent::Followed(who) => once_named(
                    b,
                    sp,
                    plugin,
                    &format!("follow:{}:{}:{now}", who.kind, who.value),
                    vec![profile_event(
                        b,
                        &[&who],
                        "Channel Followed",
                        json!({"channel": channel, "installation": plugin}),
                        None,
                        now,
                    )?],
                )?,
                InboundEvent::Unfollowed(who) => once_named(
                    b,
                    sp,
                    plugin,
                    &format!("unfollow:{}:{}:{now}", who.kind, who.value),
                    vec![profile_event(
                        b,
                        &[&who],
                        "Channel Unfollowed",
                        json!({"channel": channel, "installation": plugin}),
                        Some(consent(channel, &["marketing", "transactional"])),
                        now,
                    )?],
                )?,
                InboundEvent::OptedOut(o) => {
                    let purposes: Vec<&str> = match o.scope.as_str() {
                        "all" | "*" => vec!["marketing", "transactional"],
                        other => vec![other],
                    };
                    once_named(
                        b,
                        sp,
                        plugin,
                        &format!("optout:{}:{}:{}:{now}", o.who.kind, o.who.value, o.scope),
                        vec![profile_event(
                            b,
                            &[&o.who],
                            "Channel Opted Out",
                            json!({"channel": channel, "scope": o.scope, "installation": plugin}),
                            Some(consent(channel, &purposes)),
                            now,
                        )?],
                    )?
                }
                InboundEvent::IdentityHint(link) => once_named(
                    b,
                    sp,
                    plugin,
                    &format!(
                        "hint:{}:{}:{}:{}",
                        link.channel_identity.kind,
                        link.channel_identity.value,
                        link.linked.kind,
                        link.linked.value
                    ),
                    vec![profile_event(
                        b,
                        &[&link.channel_identity, &link.linked],
                        "Identity Linked",
                        json!({"channel": channel, "installation": plugin}),
                        None,
                        now,
                    )?],
                )?,
            };
        }
        Ok((queued, inbound))
    }

    /// One status report: finds the messages it covers and moves each forward.
    fn apply_status_update(
        &self,
        b: &dyn Backend,
        sp: &Space,
        plugin: &str,
        su: StatusUpdate,
        now: i64,
    ) -> Result<bool, StoreError> {
        let guard = log::event_key(plugin, &su.provider_event_id);
        if b.get(sp, &guard)?.is_some() {
            return Ok(false);
        }
        let (status, detail) = status_of(&su.status);
        let at = if su.occurred_at > 0 {
            su.occurred_at
        } else {
            now
        };
        let mut out = Attempt {
            ops: Vec::new(),
            events: false,
        };
        let targets: Vec<(Option<String>, String)> = match &su.message {
            MessageRef::Id(id) => vec![(self.intent_of(b, sp, plugin, id)?, id.clone())],
            MessageRef::Ids(ids) => {
                let mut v = Vec::new();
                for id in ids.iter().take(MAX_WATERMARK_SPAN) {
                    v.push((self.intent_of(b, sp, plugin, id)?, id.clone()));
                }
                v
            }
            MessageRef::Watermark(mark) => match &su.recipient {
                Some(r) => {
                    let prefix = log::recipient_prefix(plugin, &r.kind, &r.value);
                    b.scan_prefix_rev(sp, prefix.as_bytes(), MAX_WATERMARK_SPAN)?
                        .into_iter()
                        .filter_map(|(k, _)| {
                            let rest = std::str::from_utf8(&k[prefix.len()..]).ok()?;
                            let (sent, intent) = rest.split_once('/')?;
                            (sent.parse::<i64>().ok()? <= *mark)
                                .then(|| (Some(intent.to_string()), String::new()))
                        })
                        .collect()
                }
                None => {
                    tracing::warn!(plugin, "watermark status without a recipient ignored");
                    Vec::new()
                }
            },
        };
        for (intent, provider_id) in targets {
            match intent {
                Some(intent) => {
                    let Some(mut rec) = log::get(b, sp, &intent)? else {
                        continue;
                    };
                    self.apply_status(b, &mut rec, status.clone(), at, detail.clone(), &mut out)?;
                    if matches!(
                        su.status,
                        DeliveryStatus::Unsubscribed | DeliveryStatus::Complained
                    ) {
                        let purposes = ["marketing"];
                        let ch = rec.channel.clone().unwrap_or_else(|| "*".into());
                        let m = Message {
                            context: consent(&ch, &purposes),
                            ..Message::internal(
                                &rec.profile_id,
                                MessageType::Identify,
                                None,
                                Map::new(),
                                Map::new(),
                                format!("dlv:{}:optout:{at}", rec.intent_id),
                                now,
                            )
                        };
                        out.ops.push(crate::ingest::queue_op(b.next_id()?, &m)?);
                        out.events = true;
                    }
                    out.ops.push(log::put_op(&rec)?);
                }
                None if !provider_id.is_empty() => {
                    // The send is not recorded yet (or never was): keep the report.
                    let orphan = Orphan {
                        status: status.clone(),
                        at,
                        detail: detail.clone(),
                    };
                    let key = format!(
                        "{}{}",
                        orphan_prefix(plugin, &provider_id),
                        su.provider_event_id
                    );
                    out.ops.push(BatchOp::put(
                        key.into_bytes(),
                        serde_json::to_vec(&orphan).map_err(StoreError::Codec)?,
                    ));
                }
                None => {}
            }
        }
        // Applied once, even when it matched nothing.
        once(b, sp, &guard, out.ops)?;
        Ok(out.events)
    }

    fn intent_of(
        &self,
        b: &dyn Backend,
        sp: &Space,
        plugin: &str,
        provider_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(b.get(sp, &log::provider_key(plugin, provider_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// One inbound message: the conversation, the care window, `replied`, and an event.
    fn apply_inbound(
        &self,
        b: &dyn Backend,
        sp: &Space,
        plugin: &str,
        channel: &str,
        m: InboundMessage,
        now: i64,
    ) -> Result<bool, StoreError> {
        let guard = log::event_key(plugin, &format!("msg:{}", m.provider_message_id));
        if b.get(sp, &guard)?.is_some() {
            return Ok(false);
        }
        let at = if m.occurred_at > 0 {
            m.occurred_at
        } else {
            now
        };
        let who = format!("{}:{}", m.sender.kind, m.sender.value);
        let text = text_of(&m.content);
        let stored = json!({
            "provider_message_id": m.provider_message_id,
            "channel": channel,
            "installation": plugin,
            "conversation_id": m.conversation_id,
            "text": text,
            "postback": m.postback,
            "content": serde_json::to_value(&m.content).unwrap_or(Value::Null),
            "at": at,
        });
        let mut ops = vec![
            BatchOp::put(
                format!("conv/{who}/{at:020}/{}", m.provider_message_id).into_bytes(),
                serde_json::to_vec(&stored).map_err(StoreError::Codec)?,
            ),
            BatchOp::put(
                super::last_inbound_key(&m.sender.kind, &m.sender.value),
                at.to_string().into_bytes(),
            ),
        ];
        // The customer answered: the last message sent to them there is `replied`.
        let prefix = log::recipient_prefix(plugin, &m.sender.kind, &m.sender.value);
        let mut out = Attempt {
            ops: Vec::new(),
            events: false,
        };
        if let Some((k, _)) = b
            .scan_prefix_rev(sp, prefix.as_bytes(), 1)?
            .into_iter()
            .next()
        {
            if let Some(intent) = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|r| r.split_once('/'))
                .map(|(_, i)| i.to_string())
            {
                if let Some(mut rec) = log::get(b, sp, &intent)? {
                    if self.apply_status(b, &mut rec, OutboxStatus::Replied, at, None, &mut out)? {
                        out.ops.push(log::put_op(&rec)?);
                    }
                }
            }
        }
        ops.append(&mut out.ops);
        ops.push(profile_event(
            b,
            &[&m.sender],
            "Message Received",
            json!({
                "channel": channel,
                "installation": plugin,
                "text": text,
                "postback": m.postback,
                "provider_message_id": m.provider_message_id,
                "conversation_id": m.conversation_id,
            }),
            None,
            now,
        )?);
        // Queued for the conversation engine in the same batch: a crash after the
        // provider's 200 still runs the bot's turn (the engine's timer loop drains it).
        ops.push(crate::conversations::store::inbound_op(
            b.next_id()?,
            plugin,
            channel,
            &m,
        )?);
        once(b, sp, &guard, ops)?;
        Ok(true)
    }
}

/// The newest inbound messages (at most `limit` per identity) from any of `identities`,
/// newest first: what the customer wrote on every channel.
pub fn inbound_of(
    b: &dyn Backend,
    sp: &Space,
    identities: &[crate::profiles::IdentityRecord],
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let mut out: Vec<Value> = Vec::new();
    for i in identities {
        let prefix = format!("conv/{}:{}/", i.kind, i.value);
        for (_, v) in b.scan_prefix_rev(sp, prefix.as_bytes(), limit)? {
            if let Ok(mut m) = serde_json::from_slice::<Value>(&v) {
                m["from"] = json!({"kind": i.kind, "value": i.value});
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| b["at"].as_i64().cmp(&a["at"].as_i64()));
    out.truncate(limit);
    Ok(out)
}

/// Applies `ops` with the marker `guard` (a provider event id) in one batch, unless the
/// marker exists: the event was applied before. Callers hold the tenant's log lock.
fn once(
    b: &dyn Backend,
    sp: &Space,
    guard: &[u8],
    mut ops: Vec<BatchOp>,
) -> Result<bool, StoreError> {
    if b.get(sp, guard)?.is_some() {
        return Ok(false);
    }
    ops.push(BatchOp::put(guard.to_vec(), Vec::new()));
    b.apply_batch(sp, &ops)?;
    Ok(true)
}

/// [`once`] for a provider event named `key` of `plugin`.
fn once_named(
    b: &dyn Backend,
    sp: &Space,
    plugin: &str,
    key: &str,
    ops: Vec<BatchOp>,
) -> Result<bool, StoreError> {
    once(b, sp, &log::event_key(plugin, key), ops)
}

/// The delivery-log status and detail of a provider's status.
fn status_of(s: &DeliveryStatus) -> (OutboxStatus, Option<String>) {
    match s {
        DeliveryStatus::Accepted | DeliveryStatus::Sent => (OutboxStatus::Sent, None),
        DeliveryStatus::Delivered => (OutboxStatus::Delivered, None),
        DeliveryStatus::Read => (OutboxStatus::Read, None),
        DeliveryStatus::Opened => (OutboxStatus::Opened, None),
        DeliveryStatus::Clicked(url) => (OutboxStatus::Clicked, Some(url.clone())),
        DeliveryStatus::Failed(r) => (OutboxStatus::Failed { reason: r.clone() }, Some(r.clone())),
        DeliveryStatus::Undelivered(r) => (
            OutboxStatus::Undelivered { reason: r.clone() },
            Some(r.clone()),
        ),
        DeliveryStatus::Bounced(bounce) => {
            let reason = format!(
                "{}: {}",
                if bounce.permanent {
                    "permanent"
                } else {
                    "temporary"
                },
                bounce.reason
            );
            (
                OutboxStatus::Bounced {
                    reason: reason.clone(),
                },
                Some(reason),
            )
        }
        // Not a delivery step: recorded in the history, withdraws marketing consent.
        DeliveryStatus::Complained => (OutboxStatus::Delivered, Some("complained".into())),
        DeliveryStatus::Unsubscribed => (OutboxStatus::Delivered, Some("unsubscribed".into())),
    }
}

/// The text of inbound content (texts joined; other kinds named), cut to a sane length.
pub(crate) fn text_of(content: &[Content]) -> String {
    let t = content
        .iter()
        .map(|c| match c {
            Content::Text(t) => t.clone(),
            other => format!("[{}]", super::content::kind(other)),
        })
        .collect::<Vec<_>>()
        .join("\n");
    match t.char_indices().nth(MAX_INBOUND_TEXT) {
        Some((i, _)) => t[..i].to_string(),
        None => t,
    }
}

/// A `context` withdrawing `purposes` on `channel` (Weft's `context.consent.channels`).
fn consent(channel: &str, purposes: &[&str]) -> Map<String, Value> {
    let ps: Map<String, Value> = purposes
        .iter()
        .map(|p| (p.to_string(), Value::Bool(false)))
        .collect();
    let mut channels = Map::new();
    channels.insert(channel.to_string(), Value::Object(ps));
    let mut ctx = Map::new();
    ctx.insert("consent".into(), json!({ "channels": channels }));
    ctx
}

/// The queue op of an event for the profile holding `identities` (the processor resolves,
/// creates or merges it), with `extra` merged into the context.
fn profile_event(
    b: &dyn Backend,
    identities: &[&Identity],
    name: &str,
    props: Value,
    extra: Option<Map<String, Value>>,
    now: i64,
) -> Result<BatchOp, StoreError> {
    let ids: Vec<Value> = identities
        .iter()
        .map(|i| json!({"id": i.value, "type": i.kind}))
        .collect();
    let mut context = extra.unwrap_or_default();
    context.insert("externalIds".into(), Value::Array(ids));
    let seq = b.next_id()?;
    let m = Message {
        user_id: None,
        profile_id: None,
        context,
        ..Message::internal(
            "",
            MessageType::Track,
            Some(name.to_string()),
            props.as_object().cloned().unwrap_or_default(),
            Map::new(),
            format!("wh:{name}:{seq}"),
            now,
        )
    };
    crate::ingest::queue_op(seq, &m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::exports::adapter::Bounce;

    #[test]
    fn provider_statuses_map_to_the_log() {
        assert_eq!(status_of(&DeliveryStatus::Read).0, OutboxStatus::Read);
        let (s, d) = status_of(&DeliveryStatus::Clicked("https://x".into()));
        assert_eq!(
            (s, d.as_deref()),
            (OutboxStatus::Clicked, Some("https://x"))
        );
        let (s, _) = status_of(&DeliveryStatus::Bounced(Bounce {
            permanent: true,
            reason: "no such user".into(),
        }));
        assert_eq!(
            s,
            OutboxStatus::Bounced {
                reason: "permanent: no such user".into()
            }
        );
    }

    #[test]
    fn consent_context_withdraws_each_purpose_on_the_channel() {
        let c = consent("sms", &["marketing", "transactional"]);
        assert_eq!(
            Value::Object(c),
            json!({"consent": {"channels": {"sms": {"marketing": false, "transactional": false}}}})
        );
    }
}
