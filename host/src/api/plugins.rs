//! `/v1/plugins`: upload, list, show, activate, roll back, delete, configure, invoke.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_error, parse_json, ApiError, AppState, TenantAuth};
use crate::kind::PluginKind;
use crate::registry::{RegistryError, SettingsUpdate};

/// Query of the upload route.
#[derive(Debug, Deserialize)]
pub(super) struct UploadQuery {
    kind: Option<String>,
    #[serde(default)]
    activate: Option<bool>,
}

/// `PUT /v1/plugins/{name}/versions/{version}?kind=<kind>[&activate=true]`.
pub(super) async fn upload(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let kind: PluginKind = q
        .kind
        .as_deref()
        .ok_or(RegistryError::MissingKind)?
        .parse()
        .map_err(RegistryError::from)?;
    let limit = s.registry.runtime().config().max_component_bytes;
    let body = body.map_err(|e| match body_error(e, limit) {
        e if e.status == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "component_too_large",
            format!("component exceeds the {limit}-byte upload limit"),
        ),
        e => e,
    })?;
    let now = s.clock.now_ms();
    let rec = s
        .registry
        .upload(&auth.tenant_id, &name, &version, kind, body, now)
        .await?;
    tracing::info!(tenant = %auth.tenant_id, plugin = %name, %version, %kind, ready_us = rec.ready_us, "plugin version uploaded");
    let mut out = json!({ "plugin": name, "version": rec });
    if q.activate.unwrap_or(false) {
        let p = s
            .registry
            .activate(&auth.tenant_id, &name, &version, now)
            .await?;
        out["active"] = json!(p.active);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /v1/plugins`.
pub(super) async fn list(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let plugins = s.registry.list(&auth.tenant_id).await?;
    Ok(Json(json!({ "plugins": plugins })))
}

/// `GET /v1/plugins/{name}`.
pub(super) async fn show(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = s.registry.plugin(&auth.tenant_id, &name).await?;
    let versions = s.registry.versions(&auth.tenant_id, &name).await?;
    Ok(Json(json!({ "plugin": p, "versions": versions })))
}

/// `DELETE /v1/plugins/{name}`.
pub(super) async fn delete(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.registry.delete_plugin(&auth.tenant_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/plugins/{name}/versions/{version}`.
pub(super) async fn delete_version(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.registry
        .delete_version(&auth.tenant_id, &name, &version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/plugins/{name}/versions/{version}/activate`.
pub(super) async fn activate(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = s
        .registry
        .activate(&auth.tenant_id, &name, &version, s.clock.now_ms())
        .await?;
    Ok(Json(json!({ "plugin": p })))
}

/// `POST /v1/plugins/{name}/rollback`.
pub(super) async fn rollback(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = s
        .registry
        .rollback(&auth.tenant_id, &name, s.clock.now_ms())
        .await?;
    Ok(Json(json!({ "plugin": p })))
}

/// `GET /v1/plugins/{name}/config`: secret names only, never values.
pub(super) async fn get_config(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = s.registry.settings(&auth.tenant_id, &name).await?;
    Ok(Json(json!(v)))
}

/// `PUT /v1/plugins/{name}/config`.
pub(super) async fn put_config(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, super::MAX_JSON_BODY))?;
    let update: SettingsUpdate = parse_json(&body)?;
    let v = s.registry.configure(&auth.tenant_id, &name, update).await?;
    Ok(Json(json!(v)))
}

/// `POST /v1/plugins/{name}/invoke`: body `{"call": "...", "input": ...}`.
pub(super) async fn invoke(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, super::MAX_JSON_BODY))?;
    let r = s.registry.invoke_json(&auth.tenant_id, &name, body).await?;
    Ok(Json(json!(r)))
}

/// Query of the invocation list.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
}

/// `GET /v1/plugins/{name}/invocations?limit=N` (newest first, at most 200).
pub(super) async fn invocations(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).min(200);
    let r = s
        .registry
        .invocations(&auth.tenant_id, &name, limit)
        .await?;
    Ok(Json(json!({ "invocations": r })))
}
