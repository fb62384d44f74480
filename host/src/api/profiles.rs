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

fn parse_id(id: &str) -> Result<IdentityRecord, ApiError> {
    match id.split_once(':') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() && k.len() <= 128 && v.len() <= 1024 => {
            Ok(IdentityRecord {
                kind: k.to_string(),
                value: v.to_string(),
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
    let rec = blocking(&s, move |b| {
        profiles::upsert(b, &sp, &[ident], &req.traits, now)
    })
    .await?;
    s.db.commit().await?;
    Ok(Json(json!({ "profile": rec })))
}

/// Reads a profile by one of its identities.
pub(super) async fn get(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ident = parse_id(&id)?;
    let sp = Space::tenant(&auth.tenant_id);
    let rec = blocking(&s, move |b| {
        profiles::get_by_identity(b, &sp, &ident.kind, &ident.value)
    })
    .await?;
    rec.map(|r| Json(json!({ "profile": r })))
        .ok_or_else(|| not_found(&id))
}

/// Erases a profile and its identity links.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ident = parse_id(&id)?;
    let sp = Space::tenant(&auth.tenant_id);
    let found = blocking(&s, move |b| {
        profiles::erase_by_identity(b, &sp, &ident.kind, &ident.value)
    })
    .await?;
    if !found {
        return Err(not_found(&id));
    }
    s.db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
