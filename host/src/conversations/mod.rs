//! Conversations: live web chat, chatbot-flow plugins, human handoff with SLA clocks, and
//! CSAT/NPS surveys. **Every change to a conversation goes through [`Conversations`]**:
//! a visitor's message, a flow turn, an agent's claim, reply or resolve, a timer.
//!
//! - One conversation never runs two changes at once: each holds a lock stripe chosen by
//!   the conversation id (no global lock).
//! - What the visitor wrote is stored and fsynced before it is acknowledged and before any
//!   flow runs; a failing or slow flow gets the tenant's fallback message and the agent
//!   queue, never a lost message.
//! - Frames to open sockets ([`hub`]) and events to the profile ([`crate::ingest`]) go out
//!   only after the commit that stores them.
//! - Bot and agent replies on channels other than web chat take the send pipeline
//!   ([`crate::delivery`]).
//!
//! Storage layout: [`store`]. Input checks: [`validate`]. Settings, SLA and business
//! hours: [`settings`]. Surveys and reports: [`surveys`].

pub mod hub;
pub mod settings;
pub mod store;
pub mod surveys;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::clock::SharedClock;
use crate::ingest::segment::{Message, MessageType};
use crate::ingest::Ingest;
use crate::kind::PluginKind;
use crate::messaging::policy;
use crate::registry::{Active, Registry};
use crate::runtime::bindings::exports::flow::{
    self, BotAction, ExpectedInput, FlowManifest, InputKind, TurnResult, TurnTrigger, UserInput,
};
use crate::runtime::bindings::types::{ChannelKind, Choices, Content};
use crate::runtime::invoke::{Call, Output};
use crate::store::group::Groups;
use crate::store::{Backend, BatchOp, Db, Space, StoreError};

use hub::Hub;
use settings::ChatSettings;
use store::{
    Address, ChatMessage, ConvState, Conversation, FlowSession, Participant, ReminderState, Sender,
    SurveyKind, TimerKind,
};

/// Lock stripes: one per conversation hash; 256 makes two busy conversations sharing one
/// rare on a 2-core edge box while costing a few KiB.
const STRIPES: usize = 256;

/// Messages a socket gets on `ready`: enough to resume a chat, small enough for one frame.
pub const HISTORY_ON_READY: usize = 50;

/// How often timers (reminders, session timeouts, SLA clocks) and event starts are checked:
/// their targets are minutes, so a quarter second is precise enough and costs nothing.
const TICK: Duration = Duration::from_millis(250);

/// Timers fired per tenant per tick; the rest wait for the next tick.
const TIMERS_PER_TICK: usize = 256;

/// Largest slots object a flow may keep between turns: it is stored in the conversation
/// record, which must stay far below the store's 64 KiB value limit.
const MAX_SLOTS_BYTES: usize = 16 * 1024;

/// Bot actions applied per turn: a flow answering with more is broken.
const MAX_ACTIONS: usize = 32;

/// Longest text a visitor or agent message may carry, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// How long an adapter's inbound message waits for the event processor to link its
/// sender to a profile before the turn runs anyway.
const INBOUND_PROFILE_WAIT: Duration = Duration::from_secs(5);

/// The reminder id the host uses for an expected input's `timeout-ms`.
const EXPECT_TIMEOUT_ID: &str = "expect-timeout";

/// Why a conversation operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such conversation in the tenant.
    #[error("no conversation `{0}`")]
    NotFound(String),
    /// The conversation is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::profiles::ProfileError> for ChatError {
    fn from(e: crate::profiles::ProfileError) -> Self {
        ChatError::Store(e.into())
    }
}

/// What a visitor sent, as the socket parsed it.
#[derive(Debug, Clone)]
pub struct VisitorInput {
    /// The input.
    pub input: UserInput,
    /// What to show in the transcript (the text, or a pressed button's label).
    pub shown: String,
    /// The widget's message id, if any.
    pub client_id: Option<String>,
}

/// The result of storing a visitor's message.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// The message's id in the conversation.
    pub id: u64,
    /// Whether this `client_id` was stored before (nothing new was stored).
    pub duplicate: bool,
}

/// A conversation opened or resumed by a socket.
#[derive(Debug)]
pub struct Opened {
    /// The conversation.
    pub conversation: Conversation,
    /// Its newest messages, oldest first.
    pub history: Vec<ChatMessage>,
}

/// An agent as the agent API authenticated it.
#[derive(Debug, Clone)]
pub struct AgentRef {
    /// Agent id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// The conversation engine.
pub struct Conversations {
    db: Db,
    clock: SharedClock,
    registry: Arc<Registry>,
    ingest: Arc<Ingest>,
    deliveries: Arc<crate::delivery::Deliveries>,
    /// Open web-chat sockets.
    pub hub: Arc<Hub>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    /// Flow manifests by (tenant, plugin, version): `describe` runs once per version.
    manifests: RwLock<HashMap<(String, String, String), Arc<FlowManifest>>>,
    /// Open visitor sockets and their cap.
    sockets: Arc<SocketCount>,
    /// Per tenant: changes waiting to be written, one write per group ([`Group::submit`](crate::store::group::Group::submit)).
    persists: Groups<PersistJob, Result<Conversation, StoreError>>,
}

/// One change's writes, waiting in its tenant's group.
struct PersistJob {
    conv: Conversation,
    ops: Vec<BatchOp>,
    events: Vec<Message>,
}

impl PersistJob {
    /// Completes the writes (the profile index once the visitor has a profile, the queued
    /// events, the conversation itself) and returns them with the conversation.
    fn finish(
        self,
        b: &dyn Backend,
        sp: &Space,
    ) -> Result<(Vec<BatchOp>, Conversation), StoreError> {
        let PersistJob {
            mut conv,
            mut ops,
            events,
        } = self;
        if conv.profile_id.is_none() {
            let a = &conv.address;
            if let Some(p) = crate::profiles::owner(b, sp, &a.kind, &a.value)? {
                ops.push(BatchOp::put(
                    store::profile_index_key(&p, &conv.id),
                    Vec::new(),
                ));
                conv.profile_id = Some(p);
            }
        }
        for m in &events {
            ops.push(crate::ingest::queue_op(b.next_id()?, m)?);
        }
        ops.push(store::put_op(&conv)?);
        // Checked here, so that one change over a size limit fails only its own turn.
        ops.iter().try_for_each(BatchOp::check)?;
        Ok((ops, conv))
    }
}

/// Writes the changes of several turns of one tenant as one batch; a change whose writes
/// cannot be made fails alone, a failed batch fails them all.
fn persist_group(
    b: &dyn Backend,
    sp: &Space,
    jobs: Vec<PersistJob>,
) -> Vec<Result<Conversation, StoreError>> {
    let mut all = Vec::new();
    let mut answers: Vec<Result<Conversation, StoreError>> = jobs
        .into_iter()
        .map(|j| {
            j.finish(b, sp).map(|(ops, conv)| {
                all.extend(ops);
                conv
            })
        })
        .collect();
    if !all.is_empty() {
        if let Err(e) = b.apply_batch(sp, &all) {
            for a in answers.iter_mut().filter(|a| a.is_ok()) {
                *a = Err(e.shared());
            }
        }
    }
    answers
}

/// Shards of the per-tenant socket counts (touched once per connection, not per message).
const SOCKET_SHARDS: usize = 16;

/// Visitor sockets open now, against the server's and each tenant's cap.
#[derive(Debug)]
struct SocketCount {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    per_tenant: Vec<std::sync::Mutex<HashMap<String, usize>>>,
    max_per_tenant: usize,
}

impl SocketCount {
    fn shard(&self, tenant: &str) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        let i = tenant
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31) ^ b as usize);
        self.per_tenant[i % SOCKET_SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open visitor socket; dropping it frees its place.
#[derive(Debug)]
pub struct SocketSlot(Arc<SocketCount>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One of a tenant's open visitor sockets; dropping it frees the tenant's place.
#[derive(Debug)]
pub struct TenantSocketSlot(Arc<SocketCount>, String);

impl Drop for TenantSocketSlot {
    fn drop(&mut self) {
        let mut shard = self.0.shard(&self.1);
        if let Some(n) = shard.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.1);
            }
        }
    }
}

impl std::fmt::Debug for Conversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversations").finish_non_exhaustive()
    }
}

/// Everything one change does, applied in one batch and one commit.
struct Txn {
    tenant: String,
    sp: Space,
    conv: Conversation,
    now: i64,
    ops: Vec<BatchOp>,
    frames: Vec<Value>,
    events: Vec<Message>,
    outbound: Vec<Vec<Content>>,
    /// Events emitted so far in this change.
    emitted: u32,
    /// The customer's profile, when the change read it already (one turn uses it once).
    profile: Option<crate::runtime::bindings::types::Profile>,
}

impl Txn {
    fn new(tenant: &str, conv: Conversation, now: i64) -> Txn {
        Txn {
            tenant: tenant.to_string(),
            sp: Space::tenant(tenant),
            conv,
            now,
            ops: Vec::new(),
            frames: Vec::new(),
            events: Vec::new(),
            outbound: Vec::new(),
            emitted: 0,
            profile: None,
        }
    }

    fn is_web(&self) -> bool {
        self.conv.channel == policy::channel_name(ChannelKind::WebChat)
    }

    /// Stores a message and queues its frame (and, off web chat, its delivery).
    fn message(
        &mut self,
        from: Sender,
        agent: Option<String>,
        content: Vec<Content>,
        client_id: Option<String>,
    ) -> Result<u64, StoreError> {
        let id = self.conv.next_seq;
        self.conv.next_seq += 1;
        let m = ChatMessage {
            id,
            from,
            agent,
            at: self.now,
            content,
            client_id,
        };
        self.ops.push(BatchOp::put_json(
            store::message_key(&self.conv.id, id),
            &m,
        )?);
        if from != Sender::Visitor {
            if !self.is_web() {
                self.outbound.push(m.content.clone());
            }
            self.frames.push(message_frame(&m));
        }
        Ok(id)
    }

    fn state(&mut self, s: ConvState) {
        if self.conv.state == s {
            return;
        }
        self.conv.state = s;
        self.frames.push(json!({
            "type": "state",
            "state": s.as_str(),
            "agent": agent_name(&self.conv),
        }));
        match s {
            ConvState::WaitingForAgent | ConvState::WithAgent => self
                .ops
                .push(BatchOp::put(store::queue_key(&self.conv.id), Vec::new())),
            ConvState::Bot | ConvState::Resolved => self
                .ops
                .push(BatchOp::delete(store::queue_key(&self.conv.id))),
        }
    }

    fn timer(&mut self, due: i64, kind: TimerKind) -> Result<(), StoreError> {
        let key = store::timer_key(due, &self.conv.id, &kind);
        self.ops.push(BatchOp::put_json(key, &kind)?);
        Ok(())
    }

    /// Queues a track event on the customer's profile.
    fn track(&mut self, name: &str, properties: Map<String, Value>) {
        let m = self.event(
            MessageType::Track,
            Some(name.to_string()),
            properties,
            Map::new(),
        );
        self.events.push(m);
    }

    /// Queues an identify with `traits` (a phone or email here links the visitor to the
    /// known profile that has it: the identity resolver merges them).
    fn identify(&mut self, traits: Map<String, Value>) {
        let m = self.event(MessageType::Identify, None, Map::new(), traits);
        self.events.push(m);
    }

    fn event(
        &mut self,
        kind: MessageType,
        name: Option<String>,
        properties: Map<String, Value>,
        traits: Map<String, Value>,
    ) -> Message {
        self.emitted += 1;
        // Unique per event: changes are not retried, and two changes between the same
        // messages (a handoff, then an SLA breach) must not share an id.
        let message_id = format!(
            "chat:{}:{}:{:016x}",
            self.conv.id,
            self.emitted,
            rand::random::<u64>()
        );
        let profile = self.conv.profile_id.clone().unwrap_or_default();
        let mut m = Message::internal(
            &profile, kind, name, properties, traits, message_id, self.now,
        );
        if self.conv.address.kind == crate::identity::ANONYMOUS_ID {
            // A web visitor is known by the anonymous id; the resolver finds (or makes,
            // or merges) the profile.
            m.profile_id = None;
            m.anonymous_id = Some(self.conv.address.value.clone());
            if let Some(p) = &self.conv.page {
                m.context.insert(
                    "page".into(),
                    json!({"url": p.url, "referrer": p.referrer, "title": p.title}),
                );
            }
        }
        m
    }
}

fn message_frame(m: &ChatMessage) -> Value {
    json!({
        "type": "message",
        "id": m.id,
        "from": m.from,
        "agent": m.agent,
        "at": m.at,
        "content": m.content,
    })
}

/// The frame a socket gets first.
pub fn ready_frame(o: &Opened) -> Value {
    json!({
        "type": "ready",
        "conversation_id": o.conversation.id,
        "state": o.conversation.state.as_str(),
        "agent": agent_name(&o.conversation),
        "history": o.history,
    })
}

/// The display name of the agent holding the conversation.
fn agent_name(c: &Conversation) -> Option<String> {
    let a = c.agent.as_ref()?;
    c.participants
        .iter()
        .rev()
        .find(|p| p.role == "agent" && &p.id == a)
        .and_then(|p| p.name.clone())
}

fn text(t: impl Into<String>) -> Content {
    Content::Text(t.into())
}

fn vietnamese(conv: &Conversation) -> bool {
    conv.locale
        .as_deref()
        .is_none_or(|l| l.to_ascii_lowercase().starts_with("vi"))
}

impl Conversations {
    /// Starts the engine and its timer loop.
    pub fn start(
        db: Db,
        clock: SharedClock,
        registry: Arc<Registry>,
        ingest: Arc<Ingest>,
        deliveries: Arc<crate::delivery::Deliveries>,
        limits: &crate::config::ChatConfig,
    ) -> Arc<Conversations> {
        let c = Arc::new(Conversations {
            sockets: Arc::new(SocketCount {
                open: std::sync::atomic::AtomicUsize::new(0),
                max: limits.max_sockets,
                per_tenant: (0..SOCKET_SHARDS)
                    .map(|_| std::sync::Mutex::new(HashMap::new()))
                    .collect(),
                max_per_tenant: limits.max_sockets_per_tenant,
            }),
            db,
            clock,
            registry,
            ingest: ingest.clone(),
            deliveries,
            hub: Arc::new(Hub::default()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
            manifests: RwLock::new(HashMap::new()),
            persists: Groups::default(),
        });
        ingest.processor().set_conversations(&c);
        c.deliveries.set_conversations(&c);
        let weak = Arc::downgrade(&c);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { return };
                if let Err(e) = c.tick().await {
                    tracing::warn!(error = %e, "conversation timers");
                }
            }
        });
        c
    }

    /// A place for one more visitor socket, or `None` at the server's cap.
    pub fn socket_slot(&self) -> Option<SocketSlot> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.sockets;
        s.open
            .fetch_update(Relaxed, Relaxed, |n| (n < s.max).then_some(n + 1))
            .ok()
            .map(|_| SocketSlot(s.clone()))
    }

    /// A place for one more socket of `tenant`, or `None` at the tenant's cap.
    pub fn tenant_socket_slot(&self, tenant: &str) -> Option<TenantSocketSlot> {
        let s = &self.sockets;
        let mut shard = s.shard(tenant);
        let n = shard.entry(tenant.to_string()).or_insert(0);
        if *n >= s.max_per_tenant {
            return None;
        }
        *n += 1;
        Some(TenantSocketSlot(s.clone(), tenant.to_string()))
    }

    fn stripe(&self, tenant: &str, conv: &str) -> &tokio::sync::Mutex<()> {
        &self.stripes[(self.hasher.hash_one((tenant, conv)) as usize) % STRIPES]
    }

    /// The tenant's chat settings.
    pub async fn settings(&self, tenant: &str) -> Result<ChatSettings, StoreError> {
        let sp = Space::tenant(tenant);
        self.db.run(move |b| settings::load(b, &sp)).await
    }

    /// Saves the tenant's chat settings (already validated).
    pub async fn save_settings(&self, tenant: &str, s: &ChatSettings) -> Result<(), StoreError> {
        self.db
            .put_json(&Space::tenant(tenant), settings::SETTINGS_KEY, s)
            .await?;
        self.db.commit().await
    }

    /// Reads a conversation.
    pub async fn get(&self, tenant: &str, conv: &str) -> Result<Conversation, ChatError> {
        let sp = Space::tenant(tenant);
        let id = conv.to_string();
        self.db
            .run(move |b| store::get(b, &sp, &id))
            .await?
            .ok_or_else(|| ChatError::NotFound(conv.to_string()))
    }

    /// The newest `limit` messages, oldest first.
    pub async fn messages(
        &self,
        tenant: &str,
        conv: &str,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let sp = Space::tenant(tenant);
        let id = conv.to_string();
        self.db
            .run(move |b| store::recent_messages(b, &sp, &id, limit))
            .await
    }

    /// Conversations in the agent queue (waiting or with an agent), oldest handoff first.
    pub async fn queue(&self, tenant: &str) -> Result<Vec<Conversation>, StoreError> {
        let sp = Space::tenant(tenant);
        self.db
            .run(move |b| {
                let mut out = Vec::new();
                // The queue of one tenant: bounded by how many chats its agents hold open.
                for (k, _) in b.scan_prefix(&sp, b"cvq/", 10_000)? {
                    let id = String::from_utf8_lossy(&k[4..]).into_owned();
                    if let Some(c) = store::get(b, &sp, &id)? {
                        out.push(c);
                    }
                }
                out.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.handed_off_at));
                Ok(out)
            })
            .await
    }

    /// Opens the visitor's current web-chat conversation, or a new one.
    pub async fn open_web(
        &self,
        tenant: &str,
        anonymous_id: &str,
        page: store::PageContext,
        locale: Option<String>,
    ) -> Result<Opened, ChatError> {
        let address = Address {
            kind: crate::identity::ANONYMOUS_ID.into(),
            value: anonymous_id.to_string(),
        };
        let channel = policy::channel_name(ChannelKind::WebChat);
        let (conv, is_new) = self
            .current_or_new(tenant, channel, address, None, locale.clone())
            .await?;
        let _held = self.stripe(tenant, &conv.id).lock().await;
        let mut c = self.get(tenant, &conv.id).await?;
        c.page = Some(page);
        if locale.is_some() {
            c.locale = locale;
        }
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        if is_new {
            txn.track(
                "Chat Started",
                as_map(json!({"conversation_id": txn.conv.id, "channel": channel})),
            );
            let settings = self.settings(tenant).await?;
            if let Some(flow) = settings.default_flow.clone() {
                self.start_session(&mut txn, &settings, &flow, TurnTrigger::Start(None))
                    .await?;
            }
        }
        let conversation = self.commit(txn).await?;
        let history = self
            .messages(tenant, &conversation.id, HISTORY_ON_READY)
            .await?;
        Ok(Opened {
            conversation,
            history,
        })
    }

    /// Updates the page the visitor is on.
    pub async fn page(
        &self,
        tenant: &str,
        conv: &str,
        page: store::PageContext,
    ) -> Result<(), ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let mut c = self.get(tenant, conv).await?;
        c.page = Some(page);
        c.updated_at = self.clock.now_ms();
        let sp = Space::tenant(tenant);
        self.db
            .run(move |b| b.apply_batch(&sp, &[store::put_op(&c)?]))
            .await?;
        // Page context is a hint, not something the visitor wrote: no fsync wait.
        Ok(())
    }

    /// The current conversation of `address` on `channel`, created when there is none.
    async fn current_or_new(
        &self,
        tenant: &str,
        channel: &str,
        address: Address,
        installation: Option<String>,
        locale: Option<String>,
    ) -> Result<(Conversation, bool), ChatError> {
        let sp = Space::tenant(tenant);
        let now = self.clock.now_ms();
        let channel = channel.to_string();
        let r = self
            .db
            .run(move |b| {
                let xkey = store::address_key(&channel, &address);
                if let Some(id) = b.get(&sp, &xkey)? {
                    if let Some(c) = store::get(b, &sp, &String::from_utf8_lossy(&id))? {
                        return Ok((c, false));
                    }
                }
                let profile_id = crate::profiles::owner(b, &sp, &address.kind, &address.value)
                    .map_err(StoreError::from)?;
                let id = format!("cv_{:016x}", b.next_id()?);
                let c = Conversation::new(
                    id.clone(),
                    channel,
                    address,
                    installation,
                    profile_id.clone(),
                    locale,
                    now,
                );
                let mut ops = vec![store::put_op(&c)?, BatchOp::put(xkey, id.clone())];
                if let Some(p) = &profile_id {
                    ops.push(BatchOp::put(store::profile_index_key(p, &id), Vec::new()));
                }
                // Two sockets of one visitor may race here: the first one's id wins.
                let raced = b.get(&sp, &store::address_key(&c.channel, &c.address))?;
                if let Some(existing) = raced {
                    if let Some(c) = store::get(b, &sp, &String::from_utf8_lossy(&existing))? {
                        return Ok((c, false));
                    }
                }
                b.apply_batch(&sp, &ops)?;
                Ok((c, true))
            })
            .await?;
        Ok(r)
    }

    /// Stores a visitor's message durably (acknowledge it after this returns), then runs
    /// what it triggers: a survey answer, a bot turn, or nothing while an agent holds the
    /// conversation. `on_stored` runs between the two, with the stored id.
    pub async fn visitor(
        &self,
        tenant: &str,
        conv: &str,
        v: VisitorInput,
        on_stored: impl FnOnce(Stored) + Send,
    ) -> Result<(), ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        // One read for the conversation, a resend's first id, and the settings.
        let sp = Space::tenant(tenant);
        let (id, cid) = (conv.to_string(), v.client_id.clone());
        let (c, first_id, settings) = self
            .db
            .run(move |b| {
                let c = store::get(b, &sp, &id)?;
                let first = match &cid {
                    Some(cid) => b.get(&sp, &store::client_key(&id, cid))?,
                    None => None,
                };
                // The profile the flow will see, read here to save a second trip.
                let profile = match &c {
                    Some(c) if c.session.is_some() => customer(b, &sp, c)?,
                    _ => None,
                };
                Ok((c.map(|c| (c, profile)), first, settings::load(b, &sp)?))
            })
            .await?;
        let (c, profile) = c.ok_or_else(|| ChatError::NotFound(conv.to_string()))?;
        // A resend after a reconnect: answer with the first id, store nothing.
        if let Some(first) = first_id {
            let id = std::str::from_utf8(&first)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            on_stored(Stored {
                id,
                duplicate: true,
            });
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut txn = Txn::new(tenant, c, now);
        txn.profile = profile;
        let id = txn.message(
            Sender::Visitor,
            None,
            vec![text(v.shown.clone())],
            v.client_id.clone(),
        )?;
        if let Some(cid) = &v.client_id {
            txn.ops
                .push(BatchOp::put(store::client_key(conv, cid), id.to_string()));
        }
        txn.conv.last_visitor_at = Some(now);
        if let Some(s) = &mut txn.conv.session {
            s.last_user_at = now;
            s.reminders.retain(|r| !r.cancel_on_user);
        }
        if txn.conv.state == ConvState::WithAgent && txn.conv.sla.next_response_due.is_none() {
            let due = settings.due(now, settings.sla.next_response_ms);
            txn.conv.sla.next_response_due = Some(due);
            txn.timer(
                due,
                TimerKind::Sla {
                    clock: "next_response".into(),
                },
            )?;
        }
        // The message and what it triggered are stored in one batch and one fsync, before
        // the ack and before any reply is shown. A flow's failure is handled inside the
        // turn (fallback); a crash before the fsync loses only an unacknowledged message,
        // which the widget sends again.
        self.react(&mut txn, &settings, v.input).await?;
        self.persist(&mut txn).await?;
        on_stored(Stored {
            id,
            duplicate: false,
        });
        self.dispatch(txn).await;
        Ok(())
    }

    /// Runs the turns of the customers' messages that channel adapters delivered and the
    /// webhook queued (`cvi/`), oldest first; each leaves the queue once its turn is stored.
    /// Called after each webhook and by the timer loop (after a crash, for instance).
    pub async fn drain_inbound(&self, tenant: &str) -> Result<usize, ChatError> {
        let sp = Space::tenant(tenant);
        let mut done = 0;
        loop {
            let batch = self
                .db
                .scan_prefix(&sp, store::INBOUND_PREFIX, TIMERS_PER_TICK)
                .await?;
            if batch.is_empty() {
                return Ok(done);
            }
            for (key, value) in batch {
                match serde_json::from_slice::<store::QueuedInbound>(&value) {
                    Ok(q) => match self
                        .inbound(tenant, &q.installation, &q.channel, q.message)
                        .await
                    {
                        // Erased meanwhile: nothing left to answer.
                        Ok(()) | Err(ChatError::NotFound(_)) => {}
                        // Storage trouble: the message stays queued for the next tick.
                        Err(e) => return Err(e),
                    },
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "undecodable queued inbound message dropped")
                    }
                }
                // The turn is stored (or was a resend of a stored one): dequeue.
                self.db.delete(&sp, &key).await?;
                done += 1;
            }
        }
    }

    /// A customer's message that a channel adapter delivered (Zalo OA, Messenger, …),
    /// already stored by the webhook: the same turn as a web visitor's, with replies going
    /// out through the send pipeline. The provider's message id keeps it to one turn.
    pub async fn inbound(
        &self,
        tenant: &str,
        installation: &str,
        channel: &str,
        m: crate::runtime::bindings::exports::adapter::InboundMessage,
    ) -> Result<(), ChatError> {
        let input = match (&m.postback, m.content.first()) {
            (Some(p), _) => UserInput::Postback(p.clone()),
            (None, Some(Content::Text(t))) => UserInput::Text(t.clone()),
            (
                None,
                Some(
                    Content::Image(media)
                    | Content::Video(media)
                    | Content::Audio(media)
                    | Content::File(media),
                ),
            ) => UserInput::Media(media.clone()),
            (None, Some(Content::Location(g))) => UserInput::Location(g.clone()),
            _ => return Ok(()),
        };
        // The sender's profile is made by the event processor from the webhook's event;
        // wait for it, so replies have an address (bounded: a busy processor only delays
        // the profile link, not the turn).
        let _ =
            tokio::time::timeout(INBOUND_PROFILE_WAIT, self.ingest.processor().drain(tenant)).await;
        let address = Address {
            kind: m.sender.kind.clone(),
            value: m.sender.value.clone(),
        };
        let (conv, _) = self
            .current_or_new(
                tenant,
                channel,
                address,
                Some(installation.to_string()),
                None,
            )
            .await?;
        let shown = crate::delivery::webhook::text_of(&m.content);
        let shown = match (&m.postback, shown.is_empty()) {
            (Some(p), true) => p.clone(),
            _ => shown,
        };
        self.visitor(
            tenant,
            &conv.id,
            VisitorInput {
                input,
                shown,
                client_id: Some(format!("in:{}", m.provider_message_id)),
            },
            |_| {},
        )
        .await
    }

    /// What a stored visitor input triggers.
    async fn react(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        input: UserInput,
    ) -> Result<(), ChatError> {
        if let Some(s) = txn.conv.survey {
            if let Some(score) = survey_answer(s.kind, &input) {
                return surveys::answer(txn, s, score);
            }
            // Not an answer: the visitor moved on; the survey stays unanswered.
            txn.conv.survey = None;
        }
        match txn.conv.state {
            ConvState::WaitingForAgent | ConvState::WithAgent => return Ok(()),
            ConvState::Bot | ConvState::Resolved => {}
        }
        if let Some(session) = txn.conv.session.clone() {
            let input = match &session.expect {
                Some(e) => match validate::check(e, input) {
                    Ok(i) => i,
                    Err(why) => return self.reprompt(txn, e, why),
                },
                None => input,
            };
            if let Some(s) = &mut txn.conv.session {
                s.invalid_inputs = 0;
            }
            return self
                .turn(txn, settings, &session.plugin, TurnTrigger::Input(input))
                .await;
        }
        // No session: a keyword starts its flow; else the default flow reads the input;
        // with no bot at all the conversation goes to the agents.
        let typed = match &input {
            UserInput::Text(t) => Some(validate::fold(t)),
            _ => None,
        };
        let channel = policy::channel_kind(&txn.conv.channel);
        if let Some(t) = typed {
            if let Some(plugin) = self.keyword_flow(&txn.tenant, channel, &t).await {
                return self
                    .start_session(txn, settings, &plugin, TurnTrigger::Start(None))
                    .await;
            }
        }
        match settings.default_flow.clone() {
            Some(flow) if self.registry.active(&txn.tenant, &flow).is_some() => {
                self.start_session(txn, settings, &flow, TurnTrigger::Input(input))
                    .await
            }
            _ => {
                txn.state(ConvState::Bot);
                self.handoff(
                    txn,
                    settings,
                    flow::Handoff {
                        queue: settings.fallback_queue.clone(),
                        reason: "no bot for this conversation".into(),
                        priority: 0,
                        summary: None,
                    },
                )
            }
        }
    }

    fn reprompt(
        &self,
        txn: &mut Txn,
        e: &ExpectedInput,
        why: validate::Invalid,
    ) -> Result<(), ChatError> {
        let vi = vietnamese(&txn.conv);
        let default = match (why, vi) {
            (validate::Invalid::Pattern, true) => {
                "Câu trả lời chưa đúng định dạng, bạn nhập lại giúp mình nhé."
            }
            (validate::Invalid::Pattern, false) => "That doesn't look right; please try again.",
            (validate::Invalid::Kind(k), true) => match k {
                InputKind::Phone => {
                    "Số điện thoại chưa hợp lệ, bạn nhập lại giúp mình (ví dụ 0901234567) nhé."
                }
                InputKind::Email => "Email chưa hợp lệ, bạn nhập lại giúp mình nhé.",
                InputKind::Number => "Bạn nhập một con số giúp mình nhé.",
                InputKind::Date => "Bạn nhập ngày theo dạng ngày/tháng/năm giúp mình nhé.",
                InputKind::Choice => "Bạn chọn một trong các lựa chọn bên dưới nhé.",
                InputKind::Rating => "Bạn chọn một điểm số giúp mình nhé.",
                _ => "Bạn nhập lại giúp mình nhé.",
            },
            (validate::Invalid::Kind(k), false) => match k {
                InputKind::Phone => {
                    "That phone number doesn't look valid; please try again (e.g. 0901234567)."
                }
                InputKind::Email => "That email address doesn't look valid; please try again.",
                InputKind::Number => "Please enter a number.",
                InputKind::Date => "Please enter a date as day/month/year.",
                InputKind::Choice => "Please pick one of the options below.",
                InputKind::Rating => "Please pick a score.",
                _ => "Please try again.",
            },
        };
        let prompt = e.reprompt.clone().unwrap_or_else(|| default.to_string());
        let mut content = vec![text(prompt)];
        if e.kind == InputKind::Choice && !e.choices.is_empty() {
            content.push(Content::Choices(Choices {
                prompt: String::new(),
                options: e.choices.clone(),
            }));
        }
        txn.message(Sender::Bot, None, content, None)?;
        if let Some(s) = &mut txn.conv.session {
            s.invalid_inputs += 1;
        }
        txn.frames.push(expect_frame(e, None));
        Ok(())
    }

    /// The first flow whose start keywords occur in `folded` (plugin-name order).
    async fn keyword_flow(
        &self,
        tenant: &str,
        channel: Option<ChannelKind>,
        folded: &str,
    ) -> Option<String> {
        let mut flows = self.flows(tenant).await;
        flows.sort_by(|a, b| a.0.cmp(&b.0));
        flows.into_iter().find_map(|(name, m)| {
            let on_channel =
                channel.is_none_or(|c| m.channels.is_empty() || m.channels.contains(&c));
            let hit = m.start_keywords.iter().any(|k| {
                let k = validate::fold(k);
                !k.is_empty() && contains_words(folded, &k)
            });
            (on_channel && hit).then_some(name)
        })
    }

    /// The tenant's active flows with their manifests (describing new versions once).
    pub async fn flows(&self, tenant: &str) -> Vec<(String, Arc<FlowManifest>)> {
        let mut out = Vec::new();
        for (name, active) in self.registry.actives(tenant) {
            if active.kind != PluginKind::ChatbotFlow {
                continue;
            }
            if let Some(m) = self.manifest(tenant, &name, &active).await {
                out.push((name, m));
            }
        }
        out
    }

    async fn manifest(
        &self,
        tenant: &str,
        name: &str,
        active: &Arc<Active>,
    ) -> Option<Arc<FlowManifest>> {
        let key = (tenant.to_string(), name.to_string(), active.version.clone());
        if let Some(m) = self
            .manifests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Some(m.clone());
        }
        let inv = self
            .registry
            .invoke(tenant, active.clone(), Call::FlowDescribe)
            .await
            .ok()?;
        match inv.output {
            Some(Output::FlowDescribe(m)) => {
                let m = Arc::new(m);
                self.manifests
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, m.clone());
                Some(m)
            }
            _ => {
                tracing::warn!(tenant, plugin = name, error = ?inv.error, "flow describe failed");
                None
            }
        }
    }

    /// Event names that start a flow of `tenant` (from manifests already described: the
    /// timer loop describes new versions within a tick).
    pub fn start_events(&self, tenant: &str) -> HashSet<String> {
        let active: HashSet<(String, String)> = self
            .registry
            .actives(tenant)
            .into_iter()
            .filter(|(_, a)| a.kind == PluginKind::ChatbotFlow)
            .map(|(n, a)| (n, a.version.clone()))
            .collect();
        self.manifests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|((t, n, v), _)| t == tenant && active.contains(&(n.clone(), v.clone())))
            .flat_map(|(_, m)| m.start_events.iter().cloned())
            .collect()
    }

    /// Starts a session of `plugin` and runs its first turn.
    async fn start_session(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        plugin: &str,
        trigger: TurnTrigger,
    ) -> Result<(), ChatError> {
        let timeout_ms = match self.registry.active(&txn.tenant, plugin) {
            Some(a) => match self.manifest(&txn.tenant, plugin, &a).await {
                Some(m) if m.session_timeout_ms > 0 => m.session_timeout_ms,
                _ => settings.session_timeout_ms,
            },
            None => settings.session_timeout_ms,
        };
        let session_id = format!("ss_{:016x}", self.db.backend().next_id()?);
        txn.conv.session = Some(FlowSession {
            plugin: plugin.to_string(),
            session_id,
            slots: "{}".into(),
            expect: None,
            turn: 0,
            started_at: txn.now,
            last_user_at: txn.now,
            timeout_ms,
            reminders: Vec::new(),
            invalid_inputs: 0,
        });
        txn.state(ConvState::Bot);
        txn.conv.outcome = None;
        if !txn
            .conv
            .participants
            .iter()
            .any(|p| p.role == "bot" && p.id == plugin)
        {
            txn.conv.participants.push(Participant {
                role: "bot".into(),
                id: plugin.to_string(),
                name: None,
                joined_at: txn.now,
            });
        }
        self.turn(txn, settings, plugin, trigger).await
    }

    /// Runs one turn of the session's flow and applies its actions; a failure runs the
    /// fallback (the tenant's message, then the agent queue).
    async fn turn(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        plugin: &str,
        trigger: TurnTrigger,
    ) -> Result<(), ChatError> {
        let Some(active) = self.registry.active(&txn.tenant, plugin) else {
            return self.fallback(txn, settings, format!("flow `{plugin}` is not installed"));
        };
        let Some(session) = txn.conv.session.clone() else {
            return Ok(());
        };
        let wit_session = self.wit_session(txn, &session).await?;
        let call = Call::FlowTurn {
            session: wit_session,
            trigger,
        };
        let inv = match self.registry.invoke(&txn.tenant, active, call).await {
            Ok(inv) => inv,
            Err(e) => return self.fallback(txn, settings, format!("flow `{plugin}`: {e}")),
        };
        let result = match (inv.output, inv.error) {
            (Some(Output::FlowTurn(Ok(r))), _) => r,
            (Some(Output::FlowTurn(Err(e))), _) => {
                return self.fallback(
                    txn,
                    settings,
                    format!("flow `{plugin}` returned an error: {e:?}"),
                )
            }
            (_, Some(e)) => {
                return self.fallback(txn, settings, format!("flow `{plugin}`: {e}"));
            }
            _ => return self.fallback(txn, settings, format!("flow `{plugin}`: no output")),
        };
        self.apply(txn, settings, result).await
    }

    async fn wit_session(
        &self,
        txn: &mut Txn,
        s: &FlowSession,
    ) -> Result<flow::Session, ChatError> {
        let profile = match txn.profile.take() {
            Some(p) => Some(p),
            None => {
                let (sp, conv) = (txn.sp.clone(), txn.conv.clone());
                self.db.run(move |b| customer(b, &sp, &conv)).await?
            }
        };
        let profile = profile.unwrap_or_else(|| crate::runtime::bindings::types::Profile {
            profile_id: String::new(),
            identities: vec![crate::runtime::bindings::types::Identity {
                kind: txn.conv.address.kind.clone(),
                value: txn.conv.address.value.clone(),
            }],
            traits: "{}".into(),
            audiences: Vec::new(),
            timezone: None,
            locale: txn.conv.locale.clone(),
            consents: Vec::new(),
        });
        Ok(flow::Session {
            session_id: s.session_id.clone(),
            conversation_id: txn.conv.id.clone(),
            channel: policy::channel_kind(&txn.conv.channel).unwrap_or(ChannelKind::WebChat),
            profile,
            slots: s.slots.clone(),
            started_at: s.started_at,
            last_user_at: s.last_user_at,
            turn: s.turn,
            locale: txn.conv.locale.clone(),
            page: txn.conv.page.as_ref().map(|p| flow::PageContext {
                url: p.url.clone(),
                referrer: p.referrer.clone(),
                title: p.title.clone(),
                time_on_page_ms: p.time_on_page_ms,
            }),
        })
    }

    /// Applies a turn's actions in order.
    async fn apply(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        r: TurnResult,
    ) -> Result<(), ChatError> {
        if r.actions.len() > MAX_ACTIONS {
            return self.fallback(
                txn,
                settings,
                format!(
                    "the flow returned {} actions; at most {MAX_ACTIONS}",
                    r.actions.len()
                ),
            );
        }
        if r.slots.len() > MAX_SLOTS_BYTES {
            return self.fallback(
                txn,
                settings,
                format!(
                    "the flow's slots are {} bytes; at most {MAX_SLOTS_BYTES}",
                    r.slots.len()
                ),
            );
        }
        if let Some(s) = &mut txn.conv.session {
            s.turn += 1;
            s.slots = if r.slots.trim().is_empty() {
                "{}".into()
            } else {
                r.slots.clone()
            };
            s.expect = r.expect.clone();
        }
        let mut ended = None;
        for action in r.actions {
            match action {
                BotAction::Reply(content) => {
                    if !content.is_empty() {
                        txn.message(Sender::Bot, None, content, None)?;
                    }
                }
                BotAction::SetTraits(traits) => {
                    if let Ok(Value::Object(t)) = serde_json::from_str::<Value>(&traits) {
                        txn.identify(t);
                    }
                }
                BotAction::Emit(e) => {
                    let props = serde_json::from_str::<Value>(&e.properties)
                        .ok()
                        .map(as_map)
                        .unwrap_or_default();
                    txn.track(&e.name, props);
                }
                BotAction::Handoff(h) => self.handoff(txn, settings, h)?,
                BotAction::Schedule(rem) => {
                    let due = txn.now.saturating_add(rem.after_ms as i64);
                    if let Some(s) = &mut txn.conv.session {
                        s.reminders.retain(|x| x.id != rem.id);
                        s.reminders.push(ReminderState {
                            id: rem.id.clone(),
                            due,
                            cancel_on_user: rem.cancel_on_user_message,
                        });
                    }
                    txn.timer(due, TimerKind::Reminder { id: rem.id })?;
                }
                BotAction::Cancel(id) => {
                    if let Some(s) = &mut txn.conv.session {
                        s.reminders.retain(|x| x.id != id);
                    }
                }
                BotAction::End(spec) => ended = Some(spec),
            }
        }
        if let Some(spec) = ended {
            let plugin = txn.conv.session.take().map(|s| s.plugin);
            txn.conv.outcome = Some(spec.outcome.clone());
            txn.track(
                "Chat Bot Session Ended",
                as_map(json!({"conversation_id": txn.conv.id, "flow": plugin, "outcome": spec.outcome})),
            );
            if txn.conv.state == ConvState::Bot {
                txn.state(ConvState::Resolved);
                txn.conv.resolved_at = Some(txn.now);
            }
            if spec.send_csat {
                surveys::ask(txn, SurveyKind::Csat)?;
            }
            return Ok(());
        }
        if let Some(s) = txn.conv.session.clone() {
            if let Some(e) = &s.expect {
                if let Some(ms) = e.timeout_ms {
                    let due = txn.now.saturating_add(ms as i64);
                    if let Some(sess) = &mut txn.conv.session {
                        sess.reminders.retain(|x| x.id != EXPECT_TIMEOUT_ID);
                        sess.reminders.push(ReminderState {
                            id: EXPECT_TIMEOUT_ID.into(),
                            due,
                            cancel_on_user: true,
                        });
                    }
                    txn.timer(
                        due,
                        TimerKind::Reminder {
                            id: EXPECT_TIMEOUT_ID.into(),
                        },
                    )?;
                }
                txn.frames.push(expect_frame(e, None));
            }
            // One idle-clock timer per session, set on its first turn: when it fires early
            // (the visitor wrote since) it sets itself again for the new idle deadline.
            if s.turn == 1 {
                txn.timer(
                    s.last_user_at.max(txn.now) + s.timeout_ms as i64,
                    TimerKind::SessionTimeout,
                )?;
            }
        }
        Ok(())
    }

    /// Hands the conversation to the agents: queue, SLA clocks, state frame, event.
    fn handoff(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        h: flow::Handoff,
    ) -> Result<(), ChatError> {
        if matches!(
            txn.conv.state,
            ConvState::WaitingForAgent | ConvState::WithAgent
        ) {
            return Ok(());
        }
        let now = txn.now;
        txn.conv.queue = Some(if h.queue.is_empty() {
            settings.fallback_queue.clone()
        } else {
            h.queue.clone()
        });
        txn.conv.priority = h.priority.min(9);
        txn.conv.handoff_reason = Some(h.reason.clone());
        txn.conv.summary = h.summary.clone();
        txn.conv.handed_off_at = Some(now);
        txn.conv.first_response_at = None;
        txn.conv.resolved_at = None;
        txn.conv.agent = None;
        let first = settings.due(now, settings.sla.first_response_ms);
        let resolution = settings.due(now, settings.sla.resolution_ms);
        txn.conv.sla = store::SlaClocks {
            first_response_due: Some(first),
            next_response_due: None,
            resolution_due: Some(resolution),
            breaches: Vec::new(),
        };
        txn.timer(
            first,
            TimerKind::Sla {
                clock: "first_response".into(),
            },
        )?;
        txn.timer(
            resolution,
            TimerKind::Sla {
                clock: "resolution".into(),
            },
        )?;
        if let Some(s) = &mut txn.conv.session {
            s.expect = None;
            s.reminders.clear();
        }
        txn.state(ConvState::WaitingForAgent);
        let queue = txn.conv.queue.clone();
        txn.track(
            "Chat Handed Off",
            as_map(json!({
                "conversation_id": txn.conv.id,
                "queue": queue,
                "reason": h.reason,
                "priority": h.priority,
            })),
        );
        Ok(())
    }

    /// A flow failed: the tenant's fallback message, then the agent queue. The session
    /// ends (the flow cannot be trusted with the next turn).
    fn fallback(
        &self,
        txn: &mut Txn,
        settings: &ChatSettings,
        why: String,
    ) -> Result<(), ChatError> {
        tracing::warn!(tenant = %txn.tenant, conversation = %txn.conv.id, error = %why, "flow failed; fallback to agents");
        txn.conv.session = None;
        txn.conv.last_error = Some(why.clone());
        txn.message(
            Sender::System,
            None,
            vec![text(settings.fallback_message.clone())],
            None,
        )?;
        self.handoff(
            txn,
            settings,
            flow::Handoff {
                queue: settings.fallback_queue.clone(),
                reason: format!("bot failed: {why}"),
                priority: 5,
                summary: None,
            },
        )
    }

    /// Writes a change in one batch, waits for its fsync, then publishes its frames, wakes
    /// the event processor and hands replies to the send pipeline.
    async fn commit(&self, mut txn: Txn) -> Result<Conversation, ChatError> {
        self.persist(&mut txn).await?;
        Ok(self.dispatch(txn).await)
    }

    /// Writes the change — the conversation, its messages and timers, and its events for
    /// the profile — in one batch, and waits for the fsync that covers it.
    async fn persist(&self, txn: &mut Txn) -> Result<(), ChatError> {
        txn.conv.updated_at = txn.now;
        let sp = txn.sp.clone();
        let events = std::mem::take(&mut txn.events);
        let queued = events.len();
        let job = PersistJob {
            conv: txn.conv.clone(),
            ops: std::mem::take(&mut txn.ops),
            events,
        };
        let backend = self.db.backend().clone();
        // Turns of one tenant that arrive while others are being written wait, without a
        // thread, and are written together.
        let conv = self
            .persists
            .of(&txn.tenant)
            .submit(job, move |jobs| persist_group(&*backend, &sp, jobs))
            .await
            .unwrap_or_else(|lost| Err(lost.into()))?;
        txn.conv = conv;
        self.db.commit().await?;
        if queued > 0 {
            let p = self.ingest.processor();
            p.counters(&txn.tenant)
                .accepted
                .fetch_add(queued as u64, std::sync::atomic::Ordering::Relaxed);
            p.wake(&txn.tenant);
        }
        Ok(())
    }

    /// After [`persist`](Self::persist): frames to the open sockets, replies to the send
    /// pipeline.
    async fn dispatch(&self, mut txn: Txn) -> Conversation {
        for f in &txn.frames {
            self.hub
                .publish(&txn.tenant, &txn.conv.id, f.to_string().into());
        }
        for content in std::mem::take(&mut txn.outbound) {
            if let Err(e) = self.send_out(&txn, content).await {
                tracing::warn!(tenant = %txn.tenant, conversation = %txn.conv.id, error = %e, "sending a chat reply");
            }
        }
        txn.conv
    }

    /// Sends a reply on the conversation's channel through the policy and the pipeline.
    async fn send_out(&self, txn: &Txn, content: Vec<Content>) -> Result<(), StoreError> {
        let Some(channel) = policy::channel_kind(&txn.conv.channel) else {
            return Ok(());
        };
        let Some(pid) = txn.conv.profile_id.clone() else {
            return Ok(());
        };
        let sp = txn.sp.clone();
        let now = txn.now;
        let intent_id = format!("chat_{}_{:016x}", txn.conv.id, rand::random::<u64>());
        let intent = crate::runtime::bindings::exports::journey::SendIntent {
            intent_id: intent_id.clone(),
            channel_preference: vec![channel],
            category: crate::runtime::bindings::types::MessageCategory::Service,
            content,
        };
        let conv = txn.conv.id.clone();
        let created = self
            .db
            .run(move |b| {
                let pid = crate::profiles::current_id(b, &sp, &pid)?;
                let Some(profile) = crate::profiles::get(b, &sp, &pid).map_err(StoreError::from)?
                else {
                    return Ok(false);
                };
                let (mut ops, hold) =
                    crate::messaging::outbox::submit(b, &sp, &conv, "chat", &profile, intent, now)?;
                if let Some(until) = hold {
                    // Quiet hours: the delivery worker looks again when they end.
                    ops.push(crate::delivery::log::due_op(until, &intent_id));
                }
                let created = !ops.is_empty();
                b.apply_batch(&sp, &ops)?;
                Ok(created)
            })
            .await?;
        if created {
            self.db.commit().await?;
            self.deliveries.wake(&txn.tenant);
        }
        Ok(())
    }

    /// An agent takes a conversation from the queue.
    pub async fn claim(
        &self,
        tenant: &str,
        conv: &str,
        agent: &AgentRef,
    ) -> Result<Conversation, ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let c = self.get(tenant, conv).await?;
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        self.take(&mut txn, agent)?;
        self.commit(txn).await
    }

    fn take(&self, txn: &mut Txn, agent: &AgentRef) -> Result<(), ChatError> {
        match txn.conv.state {
            ConvState::WaitingForAgent => {}
            ConvState::WithAgent if txn.conv.agent.as_deref() == Some(&agent.id) => return Ok(()),
            ConvState::WithAgent => {
                return Err(ChatError::Conflict(format!(
                    "conversation `{}` is already with another agent",
                    txn.conv.id
                )))
            }
            s => {
                return Err(ChatError::Conflict(format!(
                    "conversation `{}` is `{}`, not waiting for an agent",
                    txn.conv.id,
                    s.as_str()
                )))
            }
        }
        txn.conv.agent = Some(agent.id.clone());
        txn.conv.participants.push(Participant {
            role: "agent".into(),
            id: agent.id.clone(),
            name: Some(agent.name.clone()),
            joined_at: txn.now,
        });
        txn.state(ConvState::WithAgent);
        Ok(())
    }

    /// An agent replies (claiming a waiting conversation first).
    pub async fn agent_reply(
        &self,
        tenant: &str,
        conv: &str,
        agent: &AgentRef,
        content: Vec<Content>,
    ) -> Result<u64, ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let c = self.get(tenant, conv).await?;
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        self.take(&mut txn, agent)?;
        let id = txn.message(Sender::Agent, Some(agent.name.clone()), content, None)?;
        txn.conv.last_agent_at = Some(txn.now);
        if txn.conv.first_response_at.is_none() {
            txn.conv.first_response_at = Some(txn.now);
            txn.conv.sla.first_response_due = None;
        }
        txn.conv.sla.next_response_due = None;
        self.commit(txn).await?;
        Ok(id)
    }

    /// An agent resolves the conversation: the paused flow hears `handoff-ended`, and a CSAT
    /// survey goes out unless the tenant turned it off.
    pub async fn resolve(
        &self,
        tenant: &str,
        conv: &str,
        agent: &AgentRef,
        resolution: String,
    ) -> Result<Conversation, ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let c = self.get(tenant, conv).await?;
        let settings = self.settings(tenant).await?;
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        if txn.conv.state == ConvState::WaitingForAgent {
            self.take(&mut txn, agent)?;
        }
        if txn.conv.state != ConvState::WithAgent || txn.conv.agent.as_deref() != Some(&agent.id) {
            return Err(ChatError::Conflict(format!(
                "conversation `{conv}` is `{}`{}; only its agent can resolve it",
                txn.conv.state.as_str(),
                if txn.conv.state == ConvState::WithAgent {
                    " with another agent"
                } else {
                    ""
                }
            )));
        }
        txn.conv.resolved_at = Some(txn.now);
        txn.conv.outcome = Some(resolution.clone());
        txn.conv.sla.first_response_due = None;
        txn.conv.sla.next_response_due = None;
        txn.conv.sla.resolution_due = None;
        txn.state(ConvState::Resolved);
        txn.track(
            "Chat Resolved",
            as_map(json!({"conversation_id": txn.conv.id, "agent": agent.id, "resolution": resolution})),
        );
        if let Some(s) = txn.conv.session.clone() {
            self.turn(
                &mut txn,
                &settings,
                &s.plugin,
                TurnTrigger::HandoffEnded(resolution),
            )
            .await?;
            // The flow may have handed off again or kept going; a fallback re-queued it.
            if txn.conv.state != ConvState::Resolved {
                return self.commit(txn).await;
            }
        }
        if settings.csat_after_resolution && txn.conv.survey.is_none() {
            surveys::ask(&mut txn, SurveyKind::Csat)?;
        }
        self.commit(txn).await
    }

    /// Asks a survey now (NPS on demand, or CSAT again).
    pub async fn ask_survey(
        &self,
        tenant: &str,
        conv: &str,
        kind: SurveyKind,
    ) -> Result<(), ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let c = self.get(tenant, conv).await?;
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        surveys::ask(&mut txn, kind)?;
        self.commit(txn).await?;
        Ok(())
    }

    /// Fires due timers and event-requested starts of every tenant with conversations.
    pub async fn tick(&self) -> Result<usize, ChatError> {
        let now = self.clock.now_ms();
        let mut fired = 0;
        let mut tenants: HashSet<String> = self
            .registry
            .tenants_with(PluginKind::ChatbotFlow)
            .into_iter()
            .collect();
        for t in &tenants {
            // Describe new flow versions so their start events are known.
            let _ = self.flows(t).await;
        }
        let all = crate::tenants::list(&self.db).await?;
        tenants.extend(all.into_iter().map(|t| t.id));
        for tenant in tenants {
            let sp = Space::tenant(&tenant);
            let due: Vec<(Vec<u8>, Vec<u8>)> = {
                let sp = sp.clone();
                self.db
                    .run(move |b| {
                        let mut out = Vec::new();
                        for (k, v) in b.scan_prefix(&sp, store::TIMER_PREFIX, TIMERS_PER_TICK)? {
                            let at = std::str::from_utf8(&k[4..20])
                                .ok()
                                .and_then(|h| i64::from_str_radix(h, 16).ok())
                                .unwrap_or(i64::MAX);
                            if at > now {
                                break;
                            }
                            out.push((k, v));
                        }
                        for (k, v) in b.scan_prefix(&sp, store::START_PREFIX, TIMERS_PER_TICK)? {
                            out.push((k, v));
                        }
                        Ok(out)
                    })
                    .await?
            };
            if let Err(e) = self.drain_inbound(&tenant).await {
                tracing::warn!(tenant, error = %e, "inbound messages to conversations");
            }
            for (key, value) in due {
                if key.starts_with(store::START_PREFIX) {
                    if let Err(e) = self.event_start(&tenant, &value).await {
                        tracing::warn!(tenant, error = %e, "starting a flow from an event");
                    }
                } else {
                    let conv = std::str::from_utf8(&key[21..])
                        .ok()
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or("")
                        .to_string();
                    if let Ok(kind) = serde_json::from_slice::<TimerKind>(&value) {
                        if let Err(e) = self.fire(&tenant, &conv, kind).await {
                            tracing::warn!(tenant, conversation = conv, error = %e, "firing a chat timer");
                        }
                    }
                }
                self.db.delete(&sp, &key).await?;
                fired += 1;
            }
        }
        Ok(fired)
    }

    /// One timer. Timers are not cancelled in place: each checks, when it fires, that what
    /// it times still holds (the reminder is still scheduled for then, the clock still runs).
    async fn fire(&self, tenant: &str, conv: &str, kind: TimerKind) -> Result<(), ChatError> {
        let _held = self.stripe(tenant, conv).lock().await;
        let Ok(c) = self.get(tenant, conv).await else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let settings = self.settings(tenant).await?;
        let mut txn = Txn::new(tenant, c, now);
        match kind {
            TimerKind::Reminder { id } => {
                let Some(s) = txn.conv.session.clone() else {
                    return Ok(());
                };
                let Some(r) = s.reminders.iter().find(|r| r.id == id && r.due <= now) else {
                    return Ok(());
                };
                let rid = r.id.clone();
                if let Some(sess) = &mut txn.conv.session {
                    sess.reminders.retain(|x| x.id != rid);
                }
                if txn.conv.state != ConvState::Bot {
                    return Ok(());
                }
                self.turn(&mut txn, &settings, &s.plugin, TurnTrigger::Timer(rid))
                    .await?;
            }
            TimerKind::SessionTimeout => {
                let Some(s) = txn.conv.session.clone() else {
                    return Ok(());
                };
                if txn.conv.state != ConvState::Bot {
                    return Ok(());
                }
                let idle_until = s.last_user_at + s.timeout_ms as i64;
                if idle_until > now {
                    // The visitor wrote since this was set: wait for the new deadline.
                    txn.timer(idle_until, TimerKind::SessionTimeout)?;
                    self.persist(&mut txn).await?;
                    return Ok(());
                }
                txn.conv.session = None;
                txn.conv.outcome = Some("timeout".into());
                txn.conv.resolved_at = Some(now);
                txn.state(ConvState::Resolved);
                txn.track(
                    "Chat Bot Session Ended",
                    as_map(
                        json!({"conversation_id": conv, "flow": s.plugin, "outcome": "timeout"}),
                    ),
                );
            }
            TimerKind::Sla { clock } => {
                let due = match clock.as_str() {
                    "first_response" => txn.conv.sla.first_response_due,
                    "next_response" => txn.conv.sla.next_response_due,
                    "resolution" => txn.conv.sla.resolution_due,
                    _ => None,
                };
                let open = matches!(
                    txn.conv.state,
                    ConvState::WaitingForAgent | ConvState::WithAgent
                );
                let Some(due) = due.filter(|d| *d <= now && open) else {
                    return Ok(());
                };
                if txn.conv.sla.breaches.contains(&clock) {
                    return Ok(());
                }
                txn.conv.sla.breaches.push(clock.clone());
                let queue = txn.conv.queue.clone();
                let agent = txn.conv.agent.clone();
                txn.track(
                    "SLA Breached",
                    as_map(json!({
                        "conversation_id": conv,
                        "sla": clock,
                        "due_at": due,
                        "queue": queue,
                        "agent": agent,
                    })),
                );
            }
        }
        self.commit(txn).await?;
        Ok(())
    }

    /// Starts the flows an event names (`Payment Failed`) for the event's profile.
    async fn event_start(&self, tenant: &str, value: &[u8]) -> Result<(), ChatError> {
        let Ok(m) = serde_json::from_slice::<Message>(value) else {
            return Ok(());
        };
        let Some(name) = m.event.clone() else {
            return Ok(());
        };
        let flows: Vec<(String, Arc<FlowManifest>)> = self
            .flows(tenant)
            .await
            .into_iter()
            .filter(|(_, f)| f.start_events.contains(&name))
            .collect();
        let Some((plugin, manifest)) = flows.into_iter().min_by(|a, b| a.0.cmp(&b.0)) else {
            return Ok(());
        };
        // Where to talk: the visitor's web chat when the flow runs there and the event came
        // with an anonymous id; else the first of the flow's channels the profile has an
        // address on.
        let sp = Space::tenant(tenant);
        let m2 = m.clone();
        let channels = manifest.channels.clone();
        let target = self
            .db
            .run(move |b| {
                let pid = match (&m2.profile_id, &m2.user_id, &m2.anonymous_id) {
                    (Some(p), _, _) => Some(crate::profiles::current_id(b, &sp, p)?),
                    (None, Some(u), _) => {
                        crate::profiles::owner(b, &sp, crate::identity::USER_ID, u)
                            .map_err(StoreError::from)?
                    }
                    (None, None, Some(a)) => {
                        crate::profiles::owner(b, &sp, crate::identity::ANONYMOUS_ID, a)
                            .map_err(StoreError::from)?
                    }
                    _ => None,
                };
                let Some(pid) = pid else { return Ok(None) };
                let Some(profile) = crate::profiles::get(b, &sp, &pid).map_err(StoreError::from)?
                else {
                    return Ok(None);
                };
                for ch in &channels {
                    if *ch == ChannelKind::WebChat {
                        let anon = m2.anonymous_id.clone().or_else(|| {
                            profile
                                .identities
                                .iter()
                                .find(|i| i.kind == crate::identity::ANONYMOUS_ID)
                                .map(|i| i.value.clone())
                        });
                        if let Some(a) = anon {
                            return Ok(Some((
                                *ch,
                                Address {
                                    kind: crate::identity::ANONYMOUS_ID.into(),
                                    value: a,
                                },
                            )));
                        }
                    } else if let Some(i) =
                        crate::messaging::outbox::address_identity(&profile, *ch)
                    {
                        return Ok(Some((
                            *ch,
                            Address {
                                kind: i.kind,
                                value: i.value,
                            },
                        )));
                    }
                }
                Ok(None)
            })
            .await?;
        let Some((channel, address)) = target else {
            tracing::info!(tenant, event = name, "no channel to start the flow on");
            return Ok(());
        };
        let (c, _) = self
            .current_or_new(tenant, policy::channel_name(channel), address, None, None)
            .await?;
        let _held = self.stripe(tenant, &c.id).lock().await;
        let c = self.get(tenant, &c.id).await?;
        if matches!(c.state, ConvState::WaitingForAgent | ConvState::WithAgent) {
            // A person is already on it; a bot does not barge in.
            return Ok(());
        }
        let settings = self.settings(tenant).await?;
        let mut txn = Txn::new(tenant, c, self.clock.now_ms());
        let event = crate::journeys::engine::to_wit_event(&m);
        self.start_session(
            &mut txn,
            &settings,
            &plugin,
            TurnTrigger::Start(Some(event)),
        )
        .await?;
        self.commit(txn).await?;
        Ok(())
    }
}

/// The customer's profile as a flow sees it (following merges), if there is one yet.
fn customer(
    b: &dyn crate::store::Backend,
    sp: &Space,
    c: &Conversation,
) -> Result<Option<crate::runtime::bindings::types::Profile>, StoreError> {
    let id = match &c.profile_id {
        Some(p) => Some(crate::profiles::current_id(b, sp, p)?),
        None => crate::profiles::owner(b, sp, &c.address.kind, &c.address.value)
            .map_err(StoreError::from)?,
    };
    Ok(match id {
        Some(id) => crate::profiles::get(b, sp, &id)
            .map_err(StoreError::from)?
            .map(|r| crate::profiles::to_wit(&r)),
        None => None,
    })
}

/// The frame that tells the widget what the bot waits for.
fn expect_frame(e: &ExpectedInput, scale: Option<SurveyKind>) -> Value {
    let kind = match e.kind {
        InputKind::FreeText => "free_text",
        InputKind::Number => "number",
        InputKind::Email => "email",
        InputKind::Phone => "phone",
        InputKind::Date => "date",
        InputKind::Choice => "choice",
        InputKind::Rating => "rating",
        InputKind::File => "file",
        InputKind::None => "none",
    };
    json!({"type": "expect", "kind": kind, "scale": scale.map(SurveyKind::as_str)})
}

/// A survey answer in whatever form the channel delivered it: a rating, a quick reply
/// (`csat:4`), or the digits typed.
fn survey_answer(kind: SurveyKind, input: &UserInput) -> Option<u8> {
    let n = match input {
        UserInput::Rating(r) => Some(*r),
        // A quick reply's value comes back as a postback, or as text on channels whose
        // buttons send their payload as the customer's message (Zalo's `oa.query`).
        UserInput::Postback(t) | UserInput::Text(t) => {
            let t = t.trim();
            t.strip_prefix(kind.as_str())
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or(t)
                .parse()
                .ok()
        }
        _ => None,
    }?;
    kind.range().contains(&n).then_some(n)
}

/// Whether `needle` occurs in `hay` on word boundaries (both folded).
fn contains_words(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_whole_words_only() {
        assert!(contains_words("toi muon tu van gap", "tu van"));
        assert!(contains_words("faq", "faq"));
        assert!(!contains_words("payments", "pay"));
        assert!(!contains_words("shipping", "ship"));
    }

    #[test]
    fn survey_answers_come_as_ratings_quick_replies_or_digits() {
        assert_eq!(
            survey_answer(SurveyKind::Csat, &UserInput::Rating(5)),
            Some(5)
        );
        assert_eq!(
            survey_answer(SurveyKind::Csat, &UserInput::Postback("csat:4".into())),
            Some(4)
        );
        assert_eq!(
            survey_answer(SurveyKind::Csat, &UserInput::Text(" 3 ".into())),
            Some(3)
        );
        assert_eq!(survey_answer(SurveyKind::Csat, &UserInput::Rating(0)), None);
        assert_eq!(
            survey_answer(SurveyKind::Nps, &UserInput::Rating(0)),
            Some(0)
        );
        assert_eq!(
            survey_answer(SurveyKind::Nps, &UserInput::Text("11".into())),
            None
        );
        assert_eq!(
            survey_answer(SurveyKind::Csat, &UserInput::Text("thanks".into())),
            None
        );
    }

    fn conversation(id: &str) -> Conversation {
        Conversation::new(
            id.into(),
            "web-chat".into(),
            store::Address {
                kind: "anonymous_id".into(),
                value: format!("anon-{id}"),
            },
            None,
            None,
            None,
            crate::samples::NOW_MS,
        )
    }

    #[test]
    fn a_turn_over_a_size_limit_fails_alone_and_the_rest_of_its_group_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = crate::store::SledBackend::open(&dir.path().join("sled")).expect("open sled");
        let sp = Space::tenant("t1");
        let job = |id: &str, value_len: usize| PersistJob {
            conv: conversation(id),
            ops: vec![BatchOp::put(format!("x/{id}"), vec![b'v'; value_len])],
            events: Vec::new(),
        };
        let answers = persist_group(
            &b,
            &sp,
            vec![
                job("cv_1", 10),
                job("cv_2", crate::store::MAX_VALUE_BYTES + 1),
                job("cv_3", 10),
            ],
        );
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(
            matches!(answers[1], Err(StoreError::ValueTooLarge { .. })),
            "{:?}",
            answers[1]
        );
        for (id, written) in [("cv_1", true), ("cv_2", false), ("cv_3", true)] {
            assert_eq!(
                store::get(&b, &sp, id).expect("read").is_some(),
                written,
                "{id}"
            );
            assert_eq!(
                b.get(&sp, format!("x/{id}").as_bytes())
                    .expect("read")
                    .is_some(),
                written,
                "{id}'s own write"
            );
        }
    }
}
