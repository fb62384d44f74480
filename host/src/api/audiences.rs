//! `/v1/audiences`: define, list, inspect and delete audiences (secret key).
//!
//! Creating an audience backfills it synchronously: every existing profile is evaluated
//! under the tenant's profile lock before the 201, which carries the member count. The
//! backfill does **not** emit `Audience Entered` events for the profiles already
//! qualifying: journeys triggered by an audience enrol its future entrants, not everyone
//! who matched on the day it was defined. Membership changes after creation (as events
//! arrive, and by the periodic sweep of time-sensitive audiences) do emit them.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth};
use crate::audience::engine::{self, AudienceDef, AudienceError};
use crate::audience::Predicate;
use crate::store::{Backend, Space};

/// Default page size of `/members`.
const DEFAULT_MEMBERS_PAGE: usize = 100;
/// Longest `before` cursor accepted: a profile id is far shorter.
const MAX_CURSOR_BYTES: usize = 256;

impl From<AudienceError> for ApiError {
    fn from(e: AudienceError) -> Self {
        use AudienceError as A;
        let msg = e.to_string();
        match e {
            A::InvalidId { .. } => ApiError::bad_request("invalid_id", msg),
            A::InvalidName(_) | A::InvalidPredicate(_) => {
                ApiError::bad_request("invalid_audience", msg)
            }
            A::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "audience_too_large", msg)
            }
            A::Exists(_) => ApiError::new(StatusCode::CONFLICT, "audience_exists", msg),
            A::TooMany { .. } => ApiError::new(StatusCode::CONFLICT, "too_many_audiences", msg),
            A::Store(s) => ApiError::from(s),
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "audience_not_found",
        format!("no audience `{id}`"),
    )
}

/// Runs a blocking audience operation off the async runtime.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&dyn Backend) -> Result<T, AudienceError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = s.db.clone();
    tokio::task::spawn_blocking(move || f(db.backend().as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// An audience as answered: the definition and its member count.
fn view(def: &AudienceDef, count: u64) -> Value {
    json!({
        "id": def.id,
        "name": def.name,
        "predicate": def.predicate,
        "created_at": def.created_at,
        "count": count,
    })
}

/// Body of `POST /v1/audiences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAudience {
    id: String,
    name: String,
    predicate: Value,
}

/// Creates an audience and backfills it; answers 201 with the definition and its count.
pub(super) async fn create(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, super::MAX_JSON_BODY))?;
    let raw: Value = parse_json(&body)?;
    let req: CreateAudience = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request("invalid_audience", format!("invalid audience: {e}")))?;
    // Cheap checks first, in the order of the fields, before taking the tenant lock.
    engine::validate_id(&req.id)?;
    engine::validate_name(&req.name)?;
    let predicate = Predicate::parse(&req.predicate).map_err(AudienceError::from)?;
    let sp = Space::tenant(&auth.tenant_id);
    let now = s.clock.now_ms();
    // The profile lock keeps the event processor out while members are backfilled, so no
    // profile changes between its evaluation and the count.
    let lock = s.ingest.processor().tenant_lock(&auth.tenant_id);
    let (def, count) = blocking(&s, move |b| {
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let def = engine::create(b, &sp, &req.id, &req.name, predicate, now)?;
        // Backfill without events (see the module docs).
        if let Err(e) = engine::sweep(b, &sp, std::slice::from_ref(&def), now) {
            if let Err(cleanup) = engine::delete(b, &sp, &def.id) {
                tracing::error!(audience = %def.id, error = %cleanup, "removing a half-created audience failed");
            }
            return Err(e.into());
        }
        let count = engine::count(b, &sp, &def.id)?;
        Ok((def, count))
    })
    .await?;
    s.db.commit().await?;
    tracing::info!(tenant = %auth.tenant_id, audience = %def.id, count, "audience created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "audience": view(&def, count) })),
    ))
}

/// Every audience of the tenant with its member count, by id.
pub(super) async fn list(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    let all = blocking(&s, move |b| Ok(engine::list(b, &sp)?)).await?;
    let audiences: Vec<Value> = all.iter().map(|(def, n)| view(def, *n)).collect();
    Ok(Json(json!({ "audiences": audiences })))
}

/// One audience with its member count.
pub(super) async fn show(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    let key = id.clone();
    let found = blocking(&s, move |b| match engine::get(b, &sp, &key)? {
        Some(def) => {
            let n = engine::count(b, &sp, &def.id)?;
            Ok(Some((def, n)))
        }
        None => Ok(None),
    })
    .await?;
    let (def, n) = found.ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({ "audience": view(&def, n) })))
}

/// Query of `GET /v1/audiences/{id}/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MembersQuery {
    /// Page size (1 to [`engine::MAX_MEMBERS_PAGE`], default [`DEFAULT_MEMBERS_PAGE`]).
    #[serde(default)]
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    before: Option<String>,
}

/// A page of an audience's members (profile ids, descending), with the next page's cursor.
pub(super) async fn members(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_MEMBERS_PAGE);
    if limit == 0 || limit > engine::MAX_MEMBERS_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be 1 to {}", engine::MAX_MEMBERS_PAGE),
        ));
    }
    if q.before
        .as_ref()
        .is_some_and(|c| c.len() > MAX_CURSOR_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`before` is longer than {MAX_CURSOR_BYTES} bytes; pass a `next` cursor"),
        ));
    }
    let sp = Space::tenant(&auth.tenant_id);
    let key = id.clone();
    let page = blocking(&s, move |b| {
        if engine::get(b, &sp, &key)?.is_none() {
            return Ok(None);
        }
        let (members, next) = engine::members_page(b, &sp, &key, q.before.as_deref(), limit)?;
        Ok(Some((members, next)))
    })
    .await?;
    let (members, next) = page.ok_or_else(|| not_found(&id))?;
    let mut out = json!({ "members": members });
    if let Some(next) = next {
        out["next"] = json!(next);
    }
    Ok(Json(out))
}

/// Deletes an audience with its members and count.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    // Under the profile lock, so the event processor cannot add members while they go.
    let lock = s.ingest.processor().tenant_lock(&auth.tenant_id);
    let key = id.clone();
    let found = blocking(&s, move |b| {
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(engine::delete(b, &sp, &key)?)
    })
    .await?;
    if !found {
        return Err(not_found(&id));
    }
    s.db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
