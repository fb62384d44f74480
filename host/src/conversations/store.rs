//! What a conversation is on disk. Every key lives in the tenant's own space:
//!
//! | Key | Value |
//! |---|---|
//! | `cv/<conv>` | [`Conversation`]: state, participants, SLA clocks, page context, bot session |
//! | `cvm/<conv>/<seq:016x>` | one [`ChatMessage`], in order |
//! | `cvc/<conv>/<client_id>` | the seq a visitor's `client_id` was stored under (resends are not stored twice) |
//! | `cvx/<channel>/<kind>:<value>` | the current conversation of an address on a channel |
//! | `cvp/<profile>/<conv>` | the conversations of a profile (360 view, erasure) |
//! | `cvq/<conv>` | conversations waiting for or with an agent (the agent queue) |
//! | `cvt/<due:016x>/<conv>/<timer>` | a pending timer: reminder, session timeout, SLA clock |
//! | `cvs/<seq:016x>` | a flow start requested by an event (`Payment Failed`), written by the event processor |
//! | `cvi/<seq:016x>` | a customer's message from a channel adapter, written by the webhook with the message |
//! | `srv/<kind>/<asked_at:016x>/<conv>` | a survey asked, with its answer once given |

use serde::{Deserialize, Serialize};

use crate::runtime::bindings::exports::flow::ExpectedInput;
use crate::runtime::bindings::types::Content;
use crate::store::{Backend, BatchOp, Space, StoreError};

/// Who holds the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvState {
    /// A bot flow answers (or nobody yet).
    Bot,
    /// Handed off; in the agent queue.
    WaitingForAgent,
    /// An agent claimed it.
    WithAgent,
    /// Finished. The visitor's next message opens a new session in the same conversation.
    Resolved,
}

impl ConvState {
    /// The wire name (`waiting_for_agent`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConvState::Bot => "bot",
            ConvState::WaitingForAgent => "waiting_for_agent",
            ConvState::WithAgent => "with_agent",
            ConvState::Resolved => "resolved",
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The customer.
    Visitor,
    /// A chatbot flow.
    Bot,
    /// A human agent.
    Agent,
    /// Weft itself (fallback message, survey question).
    System,
}

/// Where the visitor is on the website (sent by the widget).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageContext {
    /// Page URL.
    #[serde(default)]
    pub url: String,
    /// Referrer.
    #[serde(default)]
    pub referrer: String,
    /// Page title.
    #[serde(default)]
    pub title: String,
    /// Time on the page when the widget last reported, ms.
    #[serde(default)]
    pub time_on_page_ms: u64,
}

/// A reminder a flow scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderState {
    /// The flow's reminder id.
    pub id: String,
    /// When it fires, Unix ms.
    pub due: i64,
    /// Whether the visitor writing cancels it.
    pub cancel_on_user: bool,
}

/// A running chatbot-flow session: what the host keeps between turns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowSession {
    /// The flow plugin.
    pub plugin: String,
    /// Session id, unique in the tenant.
    pub session_id: String,
    /// Slots as the flow last returned them (a JSON object).
    pub slots: String,
    /// What the flow waits for.
    pub expect: Option<ExpectedInput>,
    /// Turns run so far.
    pub turn: u32,
    /// When it started.
    pub started_at: i64,
    /// When the visitor last wrote in it.
    pub last_user_at: i64,
    /// Idle time after which it ends.
    pub timeout_ms: u64,
    /// Pending reminders.
    #[serde(default)]
    pub reminders: Vec<ReminderState>,
    /// Invalid answers in a row (for the re-prompt text).
    #[serde(default)]
    pub invalid_inputs: u32,
}

/// A survey question waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurveyKind {
    /// Customer satisfaction, 1 to 5.
    Csat,
    /// Net promoter score, 0 to 10.
    Nps,
}

impl SurveyKind {
    /// The key and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SurveyKind::Csat => "csat",
            SurveyKind::Nps => "nps",
        }
    }

    /// The answer range.
    pub fn range(self) -> std::ops::RangeInclusive<u8> {
        match self {
            SurveyKind::Csat => 1..=5,
            SurveyKind::Nps => 0..=10,
        }
    }
}

/// A survey asked in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSurvey {
    /// Which survey.
    pub kind: SurveyKind,
    /// When it was asked (its `srv/` key).
    pub asked_at: i64,
}

/// SLA clocks of a handed-off conversation. A due time is set while the clock runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlaClocks {
    /// The first agent reply is due by.
    pub first_response_due: Option<i64>,
    /// The agent's next reply (after the visitor wrote) is due by.
    pub next_response_due: Option<i64>,
    /// Resolution is due by.
    pub resolution_due: Option<i64>,
    /// Breaches so far (`first_response`, `next_response`, `resolution`).
    #[serde(default)]
    pub breaches: Vec<String>,
}

/// Someone who took part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// `visitor`, `bot` or `agent`.
    pub role: String,
    /// Profile id, flow plugin name or agent id.
    pub id: String,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When they joined.
    pub joined_at: i64,
}

/// The address a conversation runs on: an identity of the customer on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Identity kind (`anonymous_id` for web chat, `zalo_user_id`, `psid`, `phone`, …).
    pub kind: String,
    /// Identity value.
    pub value: String,
}

/// A conversation with one customer on one channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    /// `cv_` + 16 hex digits.
    pub id: String,
    /// Channel name (`web-chat`, `zalo-oa`, …).
    pub channel: String,
    /// The customer's address there.
    pub address: Address,
    /// The adapter installation that delivered it (not for web chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    /// The customer's profile, when known (follow merges with `profiles::current_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    /// Who holds it.
    pub state: ConvState,
    /// Agent queue, once handed off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Handoff priority, 0 (low) to 9.
    #[serde(default)]
    pub priority: u8,
    /// Why it was handed off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_reason: Option<String>,
    /// The bot's summary for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The agent holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Everyone who took part.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// The customer last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_visitor_at: Option<i64>,
    /// An agent last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent_at: Option<i64>,
    /// Handed off at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off_at: Option<i64>,
    /// First agent reply after the handoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_at: Option<i64>,
    /// Resolved at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<i64>,
    /// Resolution or session outcome label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// SLA clocks.
    #[serde(default)]
    pub sla: SlaClocks,
    /// Where the visitor is (web chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PageContext>,
    /// Conversation locale (`vi-VN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The running bot session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<FlowSession>,
    /// A survey waiting for its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<PendingSurvey>,
    /// The last flow failure, if the fallback ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Messages stored so far (the next message's seq).
    pub next_seq: u64,
}

impl Conversation {
    /// A new conversation with the bot, opened at `now`: nothing said, no session.
    pub fn new(
        id: String,
        channel: String,
        address: Address,
        installation: Option<String>,
        profile_id: Option<String>,
        locale: Option<String>,
        now: i64,
    ) -> Conversation {
        Conversation {
            id,
            channel,
            address,
            installation,
            profile_id,
            state: ConvState::Bot,
            queue: None,
            priority: 0,
            handoff_reason: None,
            summary: None,
            agent: None,
            participants: Vec::new(),
            created_at: now,
            updated_at: now,
            last_visitor_at: None,
            last_agent_at: None,
            handed_off_at: None,
            first_response_at: None,
            resolved_at: None,
            outcome: None,
            sla: Default::default(),
            page: None,
            locale,
            session: None,
            survey: None,
            last_error: None,
            next_seq: 0,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Position in the conversation, from 0.
    pub id: u64,
    /// Who wrote it.
    pub from: Sender,
    /// Agent display name, for agent messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When, Unix ms.
    pub at: i64,
    /// Channel-neutral content.
    pub content: Vec<Content>,
    /// The widget's id of a visitor message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Kinds of timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimerKind {
    /// A flow reminder.
    Reminder {
        /// Its id.
        id: String,
    },
    /// The bot session may have gone idle.
    SessionTimeout,
    /// An SLA clock: `first_response`, `next_response` or `resolution`.
    Sla {
        /// Which clock.
        clock: String,
    },
}

impl TimerKind {
    fn key_part(&self) -> String {
        match self {
            TimerKind::Reminder { id } => format!("reminder:{id}"),
            TimerKind::SessionTimeout => "session".into(),
            TimerKind::Sla { clock } => format!("sla:{clock}"),
        }
    }
}

/// A conversation's key.
pub fn conv_key(conv: &str) -> Vec<u8> {
    format!("cv/{conv}").into_bytes()
}

/// A message's key.
pub fn message_key(conv: &str, seq: u64) -> Vec<u8> {
    format!("cvm/{conv}/{seq:016x}").into_bytes()
}

/// The prefix of a conversation's messages.
pub fn messages_prefix(conv: &str) -> Vec<u8> {
    format!("cvm/{conv}/").into_bytes()
}

/// A visitor client id's dedup key.
pub fn client_key(conv: &str, client_id: &str) -> Vec<u8> {
    format!("cvc/{conv}/{client_id}").into_bytes()
}

/// The current-conversation key of an address on a channel.
pub fn address_key(channel: &str, a: &Address) -> Vec<u8> {
    format!("cvx/{channel}/{}:{}", a.kind, a.value).into_bytes()
}

/// The profile index key.
pub fn profile_index_key(profile: &str, conv: &str) -> Vec<u8> {
    format!("cvp/{profile}/{conv}").into_bytes()
}

/// The agent-queue key.
pub fn queue_key(conv: &str) -> Vec<u8> {
    format!("cvq/{conv}").into_bytes()
}

/// Prefix of every pending timer.
pub const TIMER_PREFIX: &[u8] = b"cvt/";

/// A timer key: ordered by due time.
pub fn timer_key(due: i64, conv: &str, kind: &TimerKind) -> Vec<u8> {
    format!("cvt/{:016x}/{conv}/{}", due.max(0), kind.key_part()).into_bytes()
}

/// Prefix of event-requested flow starts.
pub const START_PREFIX: &[u8] = b"cvs/";

/// Prefix of customers' messages from channel adapters waiting for their turn.
pub const INBOUND_PREFIX: &[u8] = b"cvi/";

/// A customer's message from a channel adapter, queued for the conversation engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedInbound {
    /// The adapter installation.
    pub installation: String,
    /// Its channel name.
    pub channel: String,
    /// The message.
    pub message: crate::runtime::bindings::exports::adapter::InboundMessage,
}

/// The op that queues an adapter's inbound message for the conversation engine.
pub fn inbound_op(
    seq: u64,
    installation: &str,
    channel: &str,
    m: &crate::runtime::bindings::exports::adapter::InboundMessage,
) -> Result<BatchOp, StoreError> {
    BatchOp::put_json(
        format!("cvi/{seq:016x}"),
        &QueuedInbound {
            installation: installation.to_string(),
            channel: channel.to_string(),
            message: m.clone(),
        },
    )
}

/// A survey record key.
pub fn survey_key(kind: SurveyKind, asked_at: i64, conv: &str) -> Vec<u8> {
    format!("srv/{}/{:016x}/{conv}", kind.as_str(), asked_at.max(0)).into_bytes()
}

/// A survey as stored under `srv/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SurveyRecord {
    /// When it was asked.
    pub asked_at: i64,
    /// The conversation.
    pub conversation_id: String,
    /// The channel it was asked on.
    pub channel: String,
    /// The answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// When it was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
}

/// Reads a conversation.
pub fn get(b: &dyn Backend, sp: &Space, conv: &str) -> Result<Option<Conversation>, StoreError> {
    b.get_json(sp, &conv_key(conv))
}

/// The op that writes a conversation.
pub fn put_op(c: &Conversation) -> Result<BatchOp, StoreError> {
    BatchOp::put_json(conv_key(&c.id), c)
}

/// The newest `limit` messages of a conversation, oldest first.
pub fn recent_messages(
    b: &dyn Backend,
    sp: &Space,
    conv: &str,
    limit: usize,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out: Vec<ChatMessage> = b
        .scan_prefix_rev(sp, &messages_prefix(conv), limit)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    out.reverse();
    Ok(out)
}

/// The conversation ids of a profile.
pub fn of_profile(
    b: &dyn Backend,
    sp: &Space,
    profile: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let prefix = format!("cvp/{profile}/");
    Ok(b.scan_prefix(sp, prefix.as_bytes(), limit)?
        .into_iter()
        .filter_map(|(k, _)| {
            std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .map(str::to_owned)
        })
        .collect())
}

/// The ops that erase every conversation of a profile (right to erasure).
pub fn erase_ops(b: &dyn Backend, sp: &Space, profile: &str) -> Result<Vec<BatchOp>, StoreError> {
    let mut ops = Vec::new();
    for conv in of_profile(b, sp, profile, usize::MAX)? {
        if let Some(c) = get(b, sp, &conv)? {
            ops.push(BatchOp::delete(address_key(&c.channel, &c.address)));
        }
        for prefix in [messages_prefix(&conv), format!("cvc/{conv}/").into_bytes()] {
            for (k, _) in b.scan_prefix(sp, &prefix, usize::MAX)? {
                ops.push(BatchOp::delete(k));
            }
        }
        ops.push(BatchOp::delete(conv_key(&conv)));
        ops.push(BatchOp::delete(queue_key(&conv)));
        ops.push(BatchOp::delete(profile_index_key(profile, &conv)));
    }
    Ok(ops)
}
