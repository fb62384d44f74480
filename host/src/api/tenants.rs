//! `POST /v1/tenants`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{parse_json, AdminAuth, ApiError, AppState};
use crate::tenants::{self, NewTenant};

/// Body of `POST /v1/tenants` (optional).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    #[serde(default)]
    name: Option<String>,
}

/// Creates a tenant; answers its id, secret key and write key (shown once).
pub(super) async fn create(
    _admin: AdminAuth,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<NewTenant>), ApiError> {
    let req: CreateTenant = if body.is_empty() {
        CreateTenant::default()
    } else {
        parse_json(&body)?
    };
    let name = req.name.unwrap_or_else(|| "unnamed".into());
    if name.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "tenant name must be at most 200 bytes",
        ));
    }
    let t = tenants::create(&s.db, &name, s.clock.now_ms()).await?;
    tracing::info!(tenant = %t.id, "tenant created");
    Ok((StatusCode::CREATED, Json(t)))
}
