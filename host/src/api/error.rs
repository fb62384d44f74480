//! The one HTTP error type. Every error body has the same shape:
//! `{"error": {"code": "...", "message": "..."}}`. Caller faults are 4xx with a message
//! naming the problem; host faults are a generic 500 whose detail goes to the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::registry::RegistryError;
use crate::store::StoreError;

/// An HTTP error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message naming the problem.
    pub message: String,
}

impl ApiError {
    /// A 4xx (or any) error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 500 that logs `detail` and shows nothing of it.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the details are in the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ValueTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                e.to_string(),
            ),
            other => {
                ApiError::internal(format!("{other}: {:?}", std::error::Error::source(&other)))
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as R;
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            R::InvalidName(_) => ApiError::new(S::BAD_REQUEST, "invalid_name", msg),
            R::InvalidVersion(_) => ApiError::new(S::BAD_REQUEST, "invalid_version", msg),
            R::UnknownKind(_) => ApiError::new(S::BAD_REQUEST, "unknown_kind", msg),
            R::MissingKind => ApiError::new(S::BAD_REQUEST, "missing_kind", msg),
            R::Validation(v) => {
                use crate::runtime::ValidationError as V;
                let (status, code) = match v {
                    V::NotWasm => (S::UNPROCESSABLE_ENTITY, "not_wasm"),
                    V::CoreModule => (S::UNPROCESSABLE_ENTITY, "core_module"),
                    V::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "component_too_large"),
                    V::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "invalid_component"),
                    V::ForbiddenImport { .. } => (S::UNPROCESSABLE_ENTITY, "forbidden_import"),
                    V::MissingExport { .. } => (S::UNPROCESSABLE_ENTITY, "missing_export"),
                    V::TypeMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "world_mismatch"),
                };
                ApiError::new(status, code, msg)
            }
            R::VersionExists { .. } => ApiError::new(S::CONFLICT, "version_exists", msg),
            R::KindMismatch { .. } => ApiError::new(S::CONFLICT, "kind_mismatch", msg),
            R::PluginNotFound(_) => ApiError::new(S::NOT_FOUND, "plugin_not_found", msg),
            R::VersionNotFound { .. } => ApiError::new(S::NOT_FOUND, "version_not_found", msg),
            R::NoActiveVersion(_) => ApiError::new(S::CONFLICT, "no_active_version", msg),
            R::NoPreviousVersion(_) => ApiError::new(S::CONFLICT, "no_previous_version", msg),
            R::VersionActive { .. } => ApiError::new(S::CONFLICT, "version_active", msg),
            R::TooManyVersions(_) => ApiError::new(S::CONFLICT, "too_many_versions", msg),
            R::InvalidSettings(_) => ApiError::new(S::BAD_REQUEST, "invalid_settings", msg),
            R::InvalidCall(_) => ApiError::new(S::BAD_REQUEST, "invalid_call", msg),
            R::Busy => ApiError::new(S::TOO_MANY_REQUESTS, "busy", msg),
            R::Store(s) => ApiError::from(s),
            R::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}
