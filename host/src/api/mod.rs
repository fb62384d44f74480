//! The HTTP API. **Every request enters through [`router`]**; handlers are thin and call
//! the registry, tenants and profiles modules.
//!
//! | Route | Auth | What |
//! |---|---|---|
//! | `GET /healthz` | none; admin token for the details | liveness; with the token, runtime facts and storage commit stats |
//! | `POST /v1/tenants` | admin token | create a tenant; answers its keys |
//! | `GET /v1/plugins` | secret key | list plugins |
//! | `GET /v1/plugins/{name}` | secret key | a plugin and its versions |
//! | `DELETE /v1/plugins/{name}` | secret key | delete a plugin with its versions, settings, state |
//! | `PUT /v1/plugins/{name}/versions/{version}?kind=&activate=` | secret key | upload a component |
//! | `DELETE /v1/plugins/{name}/versions/{version}` | secret key | delete an inactive version |
//! | `POST /v1/plugins/{name}/versions/{version}/activate` | secret key | activate a version |
//! | `POST /v1/plugins/{name}/rollback` | secret key | re-activate the previous version |
//! | `GET/PUT /v1/plugins/{name}/config` | secret key | settings, secrets (write-only), allowlist |
//! | `POST /v1/plugins/{name}/invoke` | secret key | run the active version on a JSON call |
//! | `GET /v1/plugins/{name}/invocations` | secret key | recent invocation records |
//! | `POST /v1/track`, `identify`, `page`, `screen`, `group`, `alias` | write key | Segment-compatible ingestion of one event |
//! | `POST /v1/batch`, `/v1/import` | write key | a batch of events |
//! | `GET /v1/ingest/status` | secret key | events accepted, processed, dead-lettered since start |
//! | `GET/PUT /v1/messaging/policy` | secret key | the tenant's messaging policy: time zone, quiet hours, caps, opt-in, ad prefix |
//! | `GET/DELETE /v1/profiles/{kind}:{value}` | secret key | the profile's 360 view / erase it and all its data |
//! | `GET /v1/profiles/{kind}:{value}/events?limit=&before=` | secret key | event history, newest first |
//! | `PUT /v1/profiles/{kind}:{value}` | secret key | set traits directly |
//! | `GET/POST /v1/audiences` | secret key | list audiences with counts / define one (backfilled at once) |
//! | `GET/DELETE /v1/audiences/{id}` | secret key | an audience and its count / delete it and its memberships |
//! | `GET /v1/audiences/{id}/members?limit=&before=` | secret key | member profile ids, paged |
//! | `POST /v1/messages` | secret key | send one message to a profile through the policy and the pipeline |
//! | `GET /v1/deliveries?profile=&journey=&channel=&status=&limit=` | secret key | the delivery log, newest first |
//! | `GET /v1/deliveries/{intent}` | secret key | one delivery with its tries, fallbacks and reports |
//! | `POST /v1/deliveries/{intent}/retry` | secret key | put a dead-lettered or ambiguous delivery back in the queue |
//! | `GET /v1/deliveries/funnel?journey=&channel=` | secret key | sent → delivered → opened → clicked → converted |
//! | `GET/POST /v1/webhooks/{tenant}/{installation}[/{*path}]` | provider signature (checked by the adapter) | provider callbacks |
//! | `GET /v1/c/{tenant}/{token}` | the link's signature | a tracked link: records the click, redirects |
//! | `GET /v1/chat/ws?writeKey=&anonymousId=` | write key + origin allowlist | the visitor's web-chat WebSocket (`docs/webchat.md`) |
//! | `GET /v1/chat/widget.js` | none | the embeddable chat widget |
//! | `GET/PUT /v1/chat/settings` | secret key | origins, default flow, fallback message, SLA, business hours |
//! | `GET /v1/conversations?profile=` | secret key | a profile's conversations, or the agent queue |
//! | `GET /v1/conversations/{id}` | secret key | a conversation, its messages, the customer's 360 view |
//! | `GET /v1/reports/csat`, `/v1/reports/nps` `?from=&to=` | secret key | survey scores and response rates |
//! | `GET/POST /v1/agents` | secret key | list agents / create one; answers its token once |
//! | `DELETE /v1/agents/{id}` | secret key | revoke an agent's token |
//! | `GET /v1/agent/queue?queue=&state=&agent=me` | agent token | conversations waiting for or with an agent |
//! | `GET /v1/agent/conversations/{id}` | agent token | messages, page context, 360 view |
//! | `POST /v1/agent/conversations/{id}/claim`, `/messages`, `/resolve`, `/survey` | agent token | take, reply, resolve, ask NPS/CSAT |
//! | `POST /v1/personalize?writeKey=` (and `OPTIONS`) | write key + origin allowlist | one decision per placement for a page view (`docs/personalize.md`) |
//! | `GET /v1/personalize.js` | none | the script pages include to fetch and render decisions |
//! | `GET/PUT /v1/personalize/settings` | secret key | plugin, origins, placements with defaults and experiments, candidates |
//! | `GET /v1/personalize/status` | secret key | requests, defaults served, failures, quarantine, cache counters |

mod agents;
mod audiences;
mod auth;
mod chat;
mod deliveries;
pub mod error;
mod ingest;
mod messages;
mod messaging;
mod personalize;
mod plugins;
mod profiles;
mod tenants;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

pub use auth::{AdminAuth, TenantAuth};
pub use error::ApiError;

use crate::clock::SharedClock;
use crate::ingest::Ingest;
use crate::registry::Registry;
use crate::store::Db;
use crate::tenants::KeyCache;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The plugin registry (and through it the runtime).
    pub registry: Arc<Registry>,
    /// The database.
    pub db: Db,
    /// The host clock.
    pub clock: SharedClock,
    /// Event ingestion and processing.
    pub ingest: Arc<Ingest>,
    /// The journey engine.
    pub journeys: Arc<crate::journeys::Journeys>,
    /// The send pipeline and provider webhooks.
    pub deliveries: Arc<crate::delivery::Deliveries>,
    /// Conversations: web chat, chatbot flows, handoff, surveys.
    pub conversations: Arc<crate::conversations::Conversations>,
    /// Cached API key lookups.
    pub keys: Arc<KeyCache>,
    /// Edge personalization.
    pub personalize: Arc<crate::personalize::Personalizer>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Largest JSON body on non-upload routes: 1 MiB (the biggest, an adapter webhook call, is 640 KiB).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Builds the router. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.registry.runtime().config().max_component_bytes;
    let uploads = Router::new()
        .route(
            "/v1/plugins/{name}/versions/{version}",
            put(plugins::upload).delete(plugins::delete_version),
        )
        .layer(DefaultBodyLimit::max(upload_limit));
    // Ingestion reads its own bodies with Segment's limits (32 KB per event, 500 KB per batch).
    let ingestion = Router::new()
        .route("/v1/track", post(ingest::track))
        .route("/v1/identify", post(ingest::identify))
        .route("/v1/page", post(ingest::page))
        .route("/v1/screen", post(ingest::screen))
        .route("/v1/group", post(ingest::group))
        .route("/v1/alias", post(ingest::alias))
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/import", post(ingest::batch))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/tenants", post(tenants::create))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{name}",
            get(plugins::show).delete(plugins::delete),
        )
        .route(
            "/v1/plugins/{name}/versions/{version}/activate",
            post(plugins::activate),
        )
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route(
            "/v1/plugins/{name}/config",
            get(plugins::get_config).put(plugins::put_config),
        )
        .route("/v1/plugins/{name}/invoke", post(plugins::invoke))
        .route("/v1/plugins/{name}/invocations", get(plugins::invocations))
        .route(
            "/v1/profiles/{id}",
            get(profiles::get)
                .put(profiles::put)
                .delete(profiles::delete),
        )
        .route("/v1/profiles/{id}/events", get(profiles::events))
        .route(
            "/v1/audiences",
            get(audiences::list).post(audiences::create),
        )
        .route(
            "/v1/audiences/{id}",
            get(audiences::show).delete(audiences::delete),
        )
        .route("/v1/audiences/{id}/members", get(audiences::members))
        .route("/v1/ingest/status", get(ingest::status))
        .route(
            "/v1/messaging/policy",
            get(messaging::get).put(messaging::put),
        )
        .route("/v1/messages", post(messages::send))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/deliveries/funnel", get(deliveries::funnel))
        .route("/v1/deliveries/{intent}", get(deliveries::show))
        .route("/v1/deliveries/{intent}/retry", post(deliveries::retry))
        .route("/v1/c/{tenant}/{token}", get(deliveries::click))
        .route(
            "/v1/webhooks/{tenant}/{installation}",
            get(deliveries::webhook).post(deliveries::webhook),
        )
        .route(
            "/v1/webhooks/{tenant}/{installation}/{*path}",
            get(deliveries::webhook).post(deliveries::webhook),
        )
        .route("/v1/chat/ws", get(chat::socket))
        .route("/v1/chat/widget.js", get(chat::widget))
        .route(
            "/v1/chat/settings",
            get(chat::get_settings).put(chat::put_settings),
        )
        .route("/v1/conversations", get(chat::list))
        .route("/v1/conversations/{id}", get(chat::show))
        .route("/v1/reports/{kind}", get(chat::report))
        .route("/v1/agents", get(agents::list).post(agents::create))
        .route("/v1/agents/{id}", axum::routing::delete(agents::delete))
        .route("/v1/agent/queue", get(agents::queue))
        .route("/v1/agent/conversations/{id}", get(agents::show))
        .route("/v1/agent/conversations/{id}/claim", post(agents::claim))
        .route("/v1/agent/conversations/{id}/messages", post(agents::reply))
        .route(
            "/v1/agent/conversations/{id}/resolve",
            post(agents::resolve),
        )
        .route("/v1/agent/conversations/{id}/survey", post(agents::survey))
        .route("/v1/personalize.js", get(personalize::script))
        .route(
            "/v1/personalize/settings",
            get(personalize::get_settings).put(personalize::put_settings),
        )
        .route("/v1/personalize/status", get(personalize::status))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(uploads)
        .merge(ingestion)
        .merge(personalize::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// Logs method, path, status and latency of every request.
async fn trace(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    let (status, latency_us) = (resp.status().as_u16(), t0.elapsed().as_micros() as u64);
    // Page decisions come by the tens of thousands a second: a line each would cost more
    // than the decision. Their failures still log, and `/v1/personalize/status` counts.
    if path == "/v1/personalize" && resp.status().is_success() {
        tracing::debug!(%method, %path, status, latency_us, "request");
    } else {
        tracing::info!(%method, %path, status, latency_us, "request");
    }
    resp
}

/// Liveness for anyone (a load balancer at the edge sends no credentials); with the admin
/// token, also what an operator checks: the allocator, the version and the storage
/// commits. A wrong token is refused as on every admin route.
async fn health(
    axum::extract::State(s): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    admin: Result<AdminAuth, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Ok(Json(serde_json::json!({"status": "ok"})));
    }
    admin?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "allocator": s.registry.runtime().allocator(),
        "version": env!("CARGO_PKG_VERSION"),
        // Disk stalls show here (and in the log) before they show as slow requests.
        "storage": s.db.backend().commit_stats(),
    })))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for `{}`; see the README for the API", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{method}` is not allowed on `{}`", uri.path()),
    )
}

/// Parses a JSON body into `T`, with errors in the stable shape.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; send a JSON document",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

/// Maps a body-read failure (too large, broken stream) to the stable shape.
pub(crate) fn body_error(e: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds the {limit}-byte limit"),
        )
    } else {
        ApiError::bad_request(
            "invalid_body",
            format!("could not read the request body: {e}"),
        )
    }
}

/// Serves `router` on `listener` until ctrl-c / SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing SIGTERM handler");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutting down");
        })
        .await
}
