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
use crate::store::Space;

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
    let db = s.db.clone();
    let now = s.clock.now_ms();
    let tenant = auth.tenant_id.clone();
    let rec = tokio::task::spawn_blocking(move || {
        profiles::upsert(
            db.backend().as_ref(),
            &Space::tenant(&tenant),
            &[ident],
            &req.traits,
            now,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
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
    let db = s.db.clone();
    let rec = tokio::task::spawn_blocking(move || {
        profiles::get_by_identity(
            db.backend().as_ref(),
            &Space::tenant(&auth.tenant_id),
            &ident.kind,
            &ident.value,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    match rec {
        Some(r) => Ok(Json(json!({ "profile": r }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile with identity `{id}`"),
        )),
    }
}

/// Erases a profile and its identity links.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ident = parse_id(&id)?;
    let db = s.db.clone();
    let found = tokio::task::spawn_blocking(move || {
        profiles::erase_by_identity(
            db.backend().as_ref(),
            &Space::tenant(&auth.tenant_id),
            &ident.kind,
            &ident.value,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile with identity `{id}`"),
        ));
    }
    s.db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
