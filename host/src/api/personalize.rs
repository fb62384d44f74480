//! `POST /v1/personalize` (a page asks for decisions; write key, origin allowlist), its
//! CORS preflight, the script pages include, and the tenant's settings and status.
//! The protocol is in `docs/personalize.md`; the work is in [`crate::personalize`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::ingest::{key_from_header, tenant_for};
use super::{body_error, parse_json, AppState, TenantAuth};
use crate::personalize::{DecideError, DecideRequest, PageIn, PutError, Wanted};

/// Largest decision request: a page context with a cart is a few KiB; 16 KiB leaves room
/// and keeps a flood of large bodies cheap to refuse.
pub const MAX_DECIDE_BODY: usize = 16 * 1024;

/// How long a browser may reuse a preflight answer: ten minutes, Chromium's cap is two
/// hours and Firefox's a day, and origins change rarely.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The script pages include.
const SCRIPT: &str = include_str!("../../assets/personalize.js");

/// The decision routes, with their own body limit.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/personalize", post(decide).options(preflight))
        .layer(DefaultBodyLimit::max(MAX_DECIDE_BODY))
}

/// `?writeKey=` on the decision routes.
#[derive(Debug, Deserialize)]
pub(super) struct KeyQuery {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

/// The request body (`docs/personalize.md`).
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(rename = "anonymousId", default)]
    anonymous_id: Option<String>,
    #[serde(rename = "userId", default)]
    user_id: Option<String>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(default)]
    page: PageIn,
    #[serde(default)]
    placements: Vec<Value>,
}

fn wanted(list: Vec<Value>) -> Result<Vec<Wanted>, ApiError> {
    let bad = |i: usize, what: &str| {
        ApiError::bad_request(
            "invalid_placements",
            format!("placements[{i}] {what}: give a placement id or {{\"id\", \"max_items\"}}"),
        )
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(id) => Ok(Wanted {
                id,
                max_items: None,
            }),
            Value::Object(mut m) => {
                let Some(Value::String(id)) = m.remove("id") else {
                    return Err(bad(i, "has no string `id`"));
                };
                let max_items = match m.remove("max_items") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => {
                        match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                            Some(n) => Some(n),
                            None => return Err(bad(i, "has a `max_items` that is not a count")),
                        }
                    }
                    Some(_) => return Err(bad(i, "has a `max_items` that is not a number")),
                };
                if let Some(k) = m.keys().next() {
                    return Err(bad(i, &format!("has an unknown field `{k}`")));
                }
                Ok(Wanted { id, max_items })
            }
            _ => Err(bad(i, "is neither a string nor an object")),
        })
        .collect()
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
}

/// Refuses a browser page whose origin the tenant has not listed.
async fn check_origin(s: &AppState, tenant: &str, origin: Option<&str>) -> Result<(), ApiError> {
    let Some(o) = origin else {
        // Not a browser (a server-side call with the key): CORS does not apply.
        return Ok(());
    };
    if s.personalize.allows_origin(tenant, o).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "origin `{o}` is not in this tenant's personalization allowed_origins (PUT /v1/personalize/settings)"
            ),
        ))
    }
}

/// Lets the allowed `origin` read the response.
fn with_cors(mut resp: Response, origin: Option<&str>) -> Response {
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

fn decide_error(e: DecideError) -> ApiError {
    let msg = e.to_string();
    match e {
        DecideError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "personalization_not_configured", msg)
        }
        DecideError::UnknownPlacement(_) => ApiError::bad_request("unknown_placement", msg),
        DecideError::InvalidPlacements(_) => ApiError::bad_request("invalid_placements", msg),
        DecideError::MissingIdentity => ApiError::bad_request("missing_identity", msg),
        DecideError::Store(e) => ApiError::from(e),
    }
}

/// `POST /v1/personalize`: one decision per placement.
async fn decide(
    State(s): State<AppState>,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let origin = origin(&headers);
    match decide_inner(&s, q, &headers, body, origin).await {
        Ok((resp, allowed)) => with_cors(resp, allowed.then_some(origin).flatten()),
        Err((e, allowed)) => with_cors(e.into_response(), allowed.then_some(origin).flatten()),
    }
}

/// The decision, or the error; the flag says whether the origin may read the answer.
async fn decide_inner(
    s: &AppState,
    q: KeyQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    origin: Option<&str>,
) -> Result<(Response, bool), (ApiError, bool)> {
    let body = body.map_err(|e| (body_error(e, MAX_DECIDE_BODY), false))?;
    let header_key = key_from_header(headers).map_err(|e| (e, false))?;
    let parsed: Result<Body, ApiError> = parse_json(&body);
    let key = q
        .write_key
        .or(header_key)
        .or_else(|| parsed.as_ref().ok().and_then(|b| b.write_key.clone()));
    let parsed = parsed.map_err(|e| (e, false))?;
    let tenant = tenant_for(s, key).await.map_err(|e| (e, false))?;
    check_origin(s, &tenant, origin)
        .await
        .map_err(|e| (e, false))?;
    let req = DecideRequest {
        anonymous_id: parsed.anonymous_id,
        user_id: parsed.user_id,
        page: parsed.page,
        placements: wanted(parsed.placements).map_err(|e| (e, true))?,
    };
    let answer = s
        .personalize
        .decide(&tenant, req)
        .await
        .map_err(|e| (decide_error(e), true))?;
    let mut resp = Json(answer).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((resp, true))
}

/// `OPTIONS /v1/personalize?writeKey=`: the CORS preflight of a page sending JSON.
async fn preflight(
    State(s): State<AppState>,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant_for(&s, q.write_key).await?;
    let origin = origin(&headers);
    check_origin(&s, &tenant, origin).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    Ok(with_cors(resp, origin))
}

/// `GET /v1/personalize.js`.
pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // An hour: pages pick up a new script soon after an upgrade.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `GET /v1/personalize/settings`.
pub(super) async fn get_settings(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    match s.personalize.settings(&auth.tenant_id).await? {
        Some(settings) => Ok(Json(
            serde_json::to_value(settings).map_err(ApiError::internal)?,
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "personalization_not_configured",
            "personalization is not configured for this tenant: PUT /v1/personalize/settings first",
        )),
    }
}

/// `PUT /v1/personalize/settings`.
pub(super) async fn put_settings(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, super::MAX_JSON_BODY))?;
    if body.len() > crate::personalize::settings::MAX_SETTINGS_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "settings_too_large",
            format!(
                "the settings are {} bytes; at most {} (trim the candidates)",
                body.len(),
                crate::personalize::settings::MAX_SETTINGS_BYTES
            ),
        ));
    }
    let doc: Value = parse_json(&body)?;
    let settings = crate::personalize::settings::Settings::from_json(doc)
        .map_err(|m| ApiError::bad_request("invalid_settings", m))?;
    match s.personalize.put_settings(&auth.tenant_id, settings).await {
        Ok(saved) => Ok(Json(
            serde_json::to_value(saved).map_err(ApiError::internal)?,
        )),
        Err(PutError::Invalid(m)) => Err(ApiError::bad_request("invalid_settings", m)),
        Err(e @ PutError::TooLarge(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "settings_too_large",
            e.to_string(),
        )),
        Err(PutError::Store(e)) => Err(e.into()),
    }
}

/// `GET /v1/personalize/status`.
pub(super) async fn status(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.personalize.status(&auth.tenant_id).await?))
}
