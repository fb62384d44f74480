//! `/v1/profiles/{kind}:{value}`: a minimal tenant-scoped profile API (the journeys issue
//! grows it into the full 360 view).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth};
use crate::profiles::{self, IdentityRecord};
use crate::store::{Backend, Space};

/// Identity kinds scoped to one account, written `<kind>:<account>:<value>`
/// (`zalo:<oa_id>:<user>`, `psid:<page_id>:<psid>`).
const SCOPED_KINDS: &[&str] = &["zalo", "psid"];

pub(super) fn parse_id(id: &str) -> Result<IdentityRecord, ApiError> {
    let split = match id.split_once(':') {
        Some((k, rest)) if SCOPED_KINDS.contains(&k) => rest
            .split_once(':')
            .map(|(scope, v)| (&id[..k.len() + 1 + scope.len()], v)),
        other => other,
    };
    match split {
        Some((k, v)) if !k.is_empty() && !v.is_empty() && k.len() <= 128 && v.len() <= 1024 => {
            // The same normalisation as ingestion: `phone:0901234567` finds +84901234567.
            crate::identity::normalize(k, v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_profile_id",
                    format!("`{v}` is not a usable `{k}` (a placeholder, or malformed)"),
                )
            })
        }
        _ => Err(ApiError::bad_request(
            "invalid_profile_id",
            format!(
                "invalid profile id `{id}`: expected `<kind>:<value>`, for example `user_id:42`"
            ),
        )),
    }
}

/// Runs a blocking profile operation off the async runtime.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&dyn Backend) -> Result<T, profiles::ProfileError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = s.db.clone();
    tokio::task::spawn_blocking(move || f(db.backend().as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "profile_not_found",
        format!("no profile with identity `{id}`"),
    )
}

/// Body of `PUT /v1/profiles/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutProfile {
    #[serde(default)]
    traits: serde_json::Map<String, Value>,
}

/// Creates or updates a profile with traits (merged as identify does).
pub(super) async fn put(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ident = parse_id(&id)?;
    let body = body.map_err(|e| body_error(e, super::MAX_JSON_BODY))?;
    let req: PutProfile = parse_json(&body)?;
    if serde_json::to_vec(&req.traits).map_or(0, |b| b.len()) > 32 * 1024 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "traits_too_large",
            "traits exceed the 32 KB limit",
        ));
    }
    let now = s.clock.now_ms();
    let sp = Space::tenant(&auth.tenant_id);
    let lock = s.ingest.processor().tenant_lock(&auth.tenant_id);
    let rec = blocking(&s, move |b| {
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        profiles::upsert(b, &sp, &[ident], &req.traits, now)
    })
    .await?;
    s.db.commit().await?;
    Ok(Json(json!({ "profile": rec })))
}

/// The 360 view of a profile, found by one of its identities.
pub(super) async fn get(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<profiles::ProfileView>, ApiError> {
    let ident = parse_id(&id)?;
    let sp = Space::tenant(&auth.tenant_id);
    let now = s.clock.now_ms();
    let view = blocking(&s, move |b| {
        match profiles::get_by_identity(b, &sp, &ident.kind, &ident.value)? {
            Some(rec) => {
                let (pid, identities) = (rec.id.clone(), rec.identities.clone());
                let mut view = profiles::view(b, &sp, rec, now)?;
                view.journeys = crate::journeys::Journeys::instances_of(b, &sp, &pid)?;
                view.deliveries =
                    crate::messaging::outbox::for_profile(b, &sp, &pid, profiles::RECENT_EVENTS)?;
                view.conversations = crate::delivery::webhook::inbound_of(
                    b,
                    &sp,
                    &identities,
                    profiles::RECENT_EVENTS,
                )?;
                Ok(Some(view))
            }
            None => Ok(None),
        }
    })
    .await?;
    view.map(Json).ok_or_else(|| not_found(&id))
}

/// Query of `GET /v1/profiles/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Page size (1 to 200, default 50).
    #[serde(default)]
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    before: Option<String>,
}

/// A page of a profile's event history, newest first.
pub(super) async fn events(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let ident = parse_id(&id)?;
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > profiles::MAX_EVENTS_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be 1 to {}", profiles::MAX_EVENTS_PAGE),
        ));
    }
    let sp = Space::tenant(&auth.tenant_id);
    let page = blocking(&s, move |b| {
        match profiles::owner(b, &sp, &ident.kind, &ident.value)? {
            Some(pid) => profiles::events_page(b, &sp, &pid, q.before.as_deref(), limit).map(Some),
            None => Ok(None),
        }
    })
    .await?;
    page.map(|p| Json(json!(p))).ok_or_else(|| not_found(&id))
}

/// Erases a profile and its identity links.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ident = parse_id(&id)?;
    let sp = Space::tenant(&auth.tenant_id);
    // Under the tenant's profile lock, so the event processor cannot write back what is
    // being erased.
    let lock = s.ingest.processor().tenant_lock(&auth.tenant_id);
    let found = blocking(&s, move |b| {
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        profiles::erase_by_identity(b, &sp, &ident.kind, &ident.value)
    })
    .await?;
    if !found {
        return Err(not_found(&id));
    }
    s.db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
