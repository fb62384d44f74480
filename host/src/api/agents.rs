//! Human handoff: agents and their API. A brand creates agents with its secret key
//! (`POST /v1/agents`); each agent gets a token scoped to that tenant, with which it lists
//! the queue, claims a conversation, replies, resolves, and asks for NPS.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth, MAX_JSON_BODY};
use crate::conversations::store::SurveyKind;
use crate::conversations::{AgentRef, MAX_TEXT_CHARS};
use crate::runtime::bindings::types::Content;
use crate::store::Space;

/// Agent tokens: `wag_` + 32 hex digits.
pub const AGENT_TOKEN_PREFIX: &str = "wag_";

/// Where agent token hashes live (global: a token names its tenant).
const AGENT_KEYS: Space = Space::global("agent-keys");

/// Longest agent display name.
const MAX_AGENT_NAME: usize = 80;

/// Content items per agent reply (as for `POST /v1/messages`).
const MAX_CONTENT_ITEMS: usize = 20;

/// A stored agent token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentKey {
    tenant_id: String,
    agent_id: String,
    name: String,
}

/// An agent as its tenant stores it (the token only as a hash, to revoke it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentRecord {
    id: String,
    name: String,
    created_at: i64,
    token_sha256: String,
}

fn agent_key(id: &str) -> String {
    format!("agent/{id}")
}

/// Agents listed per call: far more than a brand's support team.
const MAX_AGENTS_LISTED: usize = 1000;

/// A call authenticated with an agent token.
#[derive(Debug, Clone)]
pub struct AgentAuth {
    /// The agent's tenant.
    pub tenant_id: String,
    /// The agent.
    pub agent: AgentRef,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = super::auth::bearer(parts, "agent token")?;
        if !crate::tenants::well_formed(&token, AGENT_TOKEN_PREFIX) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "malformed_credentials",
                "malformed agent token: `wag_` followed by 32 hex digits",
            ));
        }
        let rec: Option<AgentKey> = state
            .db
            .get_json(&AGENT_KEYS, crate::tenants::hash_key(&token).as_bytes())
            .await?;
        match rec {
            Some(k) => Ok(AgentAuth {
                tenant_id: k.tenant_id,
                agent: AgentRef {
                    id: k.agent_id,
                    name: k.name,
                },
            }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "unknown agent token",
            )),
        }
    }
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAgent {
    name: String,
}

/// `POST /v1/agents`: creates an agent; answers its token once.
pub(super) async fn create(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let req: NewAgent = parse_json(&body)?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_AGENT_NAME {
        return Err(ApiError::bad_request(
            "invalid_agent",
            format!("`name` must have 1 to {MAX_AGENT_NAME} characters"),
        ));
    }
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("{AGENT_TOKEN_PREFIX}{}", hex::encode(raw));
    let agent_id = format!("ag_{:016x}", s.db.backend().next_id()?);
    let key = AgentKey {
        tenant_id: auth.tenant_id.clone(),
        agent_id: agent_id.clone(),
        name: name.clone(),
    };
    s.db.put_json(
        &AGENT_KEYS,
        crate::tenants::hash_key(&token).as_bytes(),
        &key,
    )
    .await?;
    let rec = AgentRecord {
        id: agent_id.clone(),
        name: name.clone(),
        created_at: s.clock.now_ms(),
        token_sha256: crate::tenants::hash_key(&token),
    };
    s.db.put_json(
        &Space::tenant(&auth.tenant_id),
        agent_key(&agent_id).as_bytes(),
        &rec,
    )
    .await?;
    s.db.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": agent_id, "name": name, "token": token})),
    ))
}

/// `GET /v1/agents`: the tenant's agents (never their tokens).
pub(super) async fn list(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let rows =
        s.db.scan_prefix(
            &Space::tenant(&auth.tenant_id),
            b"agent/",
            MAX_AGENTS_LISTED,
        )
        .await?;
    let agents: Vec<Value> = rows
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice::<AgentRecord>(v).ok())
        .map(|a| json!({"id": a.id, "name": a.name, "created_at": a.created_at}))
        .collect();
    Ok(Json(json!({"agents": agents})))
}

/// `DELETE /v1/agents/{id}`: revokes the agent's token at once.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    let Some(rec) =
        s.db.get_json::<AgentRecord>(&sp, agent_key(&id).as_bytes())
            .await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "agent_not_found",
            format!("no agent `{id}` in this tenant"),
        ));
    };
    s.db.delete(&AGENT_KEYS, rec.token_sha256.as_bytes())
        .await?;
    s.db.delete(&sp, agent_key(&id).as_bytes()).await?;
    s.db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the agent queue.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueQuery {
    /// Only this queue (`support`, `payments`, …).
    queue: Option<String>,
    /// Only `waiting_for_agent` or `with_agent`.
    state: Option<String>,
    /// `me`: only conversations this agent holds.
    agent: Option<String>,
}

/// `GET /v1/agent/queue?queue=&state=&agent=me`: conversations waiting for an agent or
/// held by one, highest priority and oldest handoff first.
pub(super) async fn queue(
    auth: AgentAuth,
    State(s): State<AppState>,
    f: Result<axum::extract::Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(f) =
        f.map_err(|e| ApiError::bad_request("invalid_filter", e.body_text()))?;
    if let Some(st) = &f.state {
        if st != "waiting_for_agent" && st != "with_agent" {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("unknown state `{st}`; one of waiting_for_agent, with_agent"),
            ));
        }
    }
    if let Some(a) = &f.agent {
        if a != "me" {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("unknown agent filter `{a}`; the only one is `me`"),
            ));
        }
    }
    let q = s.conversations.queue(&auth.tenant_id).await?;
    let items: Vec<Value> = q
        .into_iter()
        .filter(|c| f.queue.as_ref().is_none_or(|q| c.queue.as_ref() == Some(q)))
        .filter(|c| f.state.as_deref().is_none_or(|st| c.state.as_str() == st))
        .filter(|c| f.agent.is_none() || c.agent.as_deref() == Some(auth.agent.id.as_str()))
        .map(|c| {
            json!({
                "id": c.id,
                "state": c.state.as_str(),
                "channel": c.channel,
                "queue": c.queue,
                "priority": c.priority,
                "reason": c.handoff_reason,
                "summary": c.summary,
                "agent": c.agent,
                "handed_off_at": c.handed_off_at,
                "last_visitor_at": c.last_visitor_at,
                "sla": c.sla,
                "page": c.page,
            })
        })
        .collect();
    Ok(Json(json!({"conversations": items})))
}

/// `GET /v1/agent/conversations/{id}`: messages, page context and the customer's 360 view.
pub(super) async fn show(
    auth: AgentAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        super::chat::conversation_view(&s, &auth.tenant_id, &id).await?,
    ))
}

/// `POST /v1/agent/conversations/{id}/claim`.
pub(super) async fn claim(
    auth: AgentAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = s
        .conversations
        .claim(&auth.tenant_id, &id, &auth.agent)
        .await?;
    Ok(Json(
        json!({"id": c.id, "state": c.state.as_str(), "agent": c.agent}),
    ))
}

/// Body of an agent reply: `{"text": "…"}` or `{"content": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reply {
    text: Option<String>,
    content: Option<Vec<Content>>,
}

/// `POST /v1/agent/conversations/{id}/messages`.
pub(super) async fn reply(
    auth: AgentAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let r: Reply = parse_json(&body)?;
    let content = match (r.text, r.content) {
        (Some(t), None) => {
            let t = t.trim().to_string();
            if t.is_empty() || t.chars().count() > MAX_TEXT_CHARS {
                return Err(ApiError::bad_request(
                    "invalid_reply",
                    format!("`text` must have 1 to {MAX_TEXT_CHARS} characters"),
                ));
            }
            vec![Content::Text(t)]
        }
        (None, Some(c)) if !c.is_empty() && c.len() <= MAX_CONTENT_ITEMS => c,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_reply",
                format!("`content` must have 1 to {MAX_CONTENT_ITEMS} items"),
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_reply",
                "send exactly one of `text` and `content`",
            ))
        }
    };
    let size = crate::runtime::invoke::json_size(&content);
    // One reply must stay far below the store's value limit.
    if size > 16 * 1024 {
        return Err(ApiError::bad_request(
            "invalid_reply",
            format!("the reply is {size} bytes as JSON; the limit is 16384"),
        ));
    }
    let msg = s
        .conversations
        .agent_reply(&auth.tenant_id, &id, &auth.agent, content)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": msg}))))
}

/// Body of a resolve.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Resolve {
    resolution: Option<String>,
}

/// `POST /v1/agent/conversations/{id}/resolve`.
pub(super) async fn resolve(
    auth: AgentAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let r: Resolve = if body.is_empty() {
        Resolve::default()
    } else {
        parse_json(&body)?
    };
    let resolution = r.resolution.unwrap_or_else(|| "resolved".into());
    if resolution.is_empty() || resolution.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_resolution",
            "`resolution` is a label of 1 to 64 bytes, e.g. `resolved`",
        ));
    }
    let c = s
        .conversations
        .resolve(&auth.tenant_id, &id, &auth.agent, resolution)
        .await?;
    Ok(Json(json!({
        "id": c.id,
        "state": c.state.as_str(),
        "survey": c.survey.map(|s| s.kind.as_str()),
    })))
}

/// Body of a survey request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ask {
    kind: String,
}

/// `POST /v1/agent/conversations/{id}/survey` with `{"kind": "nps"}` or `"csat"`.
pub(super) async fn survey(
    auth: AgentAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, MAX_JSON_BODY))?;
    let a: Ask = parse_json(&body)?;
    let kind = match a.kind.as_str() {
        "csat" => SurveyKind::Csat,
        "nps" => SurveyKind::Nps,
        other => {
            return Err(ApiError::bad_request(
                "invalid_survey",
                format!("unknown survey `{other}`; one of csat, nps"),
            ))
        }
    };
    s.conversations
        .ask_survey(&auth.tenant_id, &id, kind)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"survey": kind.as_str()}))))
}
