//! Authentication extractors: the admin token, and tenant secret keys from which every
//! tenant-scoped call derives its tenant.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use super::AppState;
use crate::tenants::{self, KeyKind, SECRET_KEY_PREFIX, WRITE_KEY_PREFIX};

/// A call authenticated with a tenant's secret key.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    /// The tenant the key belongs to.
    pub tenant_id: String,
}

/// A call authenticated with the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

pub(super) fn bearer(parts: &Parts, what: &str) -> Result<String, ApiError> {
    let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            format!("missing Authorization header: send `Authorization: Bearer <{what}>`"),
        ));
    };
    let h = h.to_str().unwrap_or("");
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    let token = h
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match token {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "malformed_credentials",
            format!("malformed Authorization header: expected `Bearer <{what}>`"),
        )),
    }
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts, "tenant secret key")?;
        let looks_secret = tenants::well_formed(&key, SECRET_KEY_PREFIX);
        let looks_write = tenants::well_formed(&key, WRITE_KEY_PREFIX);
        if !looks_secret && !looks_write {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "malformed_credentials",
                "malformed key: a tenant secret key is `wsk_` followed by 32 hex digits",
            ));
        }
        match tenants::lookup_key(&state.db, &key).await? {
            Some(rec) if rec.kind == KeyKind::Secret => Ok(TenantAuth {
                tenant_id: rec.tenant_id,
            }),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_key_kind",
                "this is a tenant write key; the management API needs the tenant's secret key",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "unknown key: no tenant has this secret key",
            )),
        }
    }
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, "admin token")?;
        if tenants::check_admin(&state.db, &token).await? {
            Ok(AdminAuth)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "invalid admin token",
            ))
        }
    }
}
