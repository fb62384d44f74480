//! The delivery log and provider webhooks:
//! - `GET /v1/deliveries?profile=&journey=&channel=&status=&limit=`: send intents, newest
//!   first, with their status, tries, fallbacks and every provider report;
//! - `GET /v1/deliveries/{intent}`: one of them; `POST /v1/deliveries/{intent}/retry` puts
//!   a dead-lettered or ambiguous one back in the queue;
//! - `GET /v1/deliveries/funnel?journey=&channel=`: per journey and channel, how many were
//!   sent, delivered, opened, clicked and converted;
//! - `GET`/`POST /v1/webhooks/{tenant}/{installation}[/{*path}]`: a provider's callback,
//!   handed to the adapter (no key: the adapter checks the provider's signature);
//! - `GET /v1/c/{tenant}/{token}`: a tracked link (see [`crate::delivery::links`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, AppState, TenantAuth};
use crate::delivery::log;
use crate::delivery::webhook::WebhookFailure;
use crate::delivery::RetryOutcome;
use crate::messaging::outbox::{OutboxRecord, OutboxStatus};
use crate::messaging::policy::CHANNEL_NAMES;
use crate::runtime::bindings::exports::adapter::HttpRequest;
use crate::store::{Backend, Space, StoreError};

/// Default page size.
const DEFAULT_LIMIT: usize = 50;
/// Largest page: 500 records of a few KB each keeps an answer under a few MB.
const MAX_LIMIT: usize = 500;
/// Records a filtered listing or a funnel reads at most: bounds the cost of one request on
/// a large tenant (the answer says when it stopped early).
const MAX_SCAN: usize = 100_000;
/// A conversion counts within 7 days of the send (a common attribution window).
const CONVERSION_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
/// The event that counts as a conversion.
const CONVERSION_EVENT: &str = "Order Completed";
/// Headers and query pairs passed to an adapter: providers send about twenty.
const MAX_WEBHOOK_FIELDS: usize = 100;

/// `GET /v1/deliveries` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    profile: Option<String>,
    journey: Option<String>,
    channel: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// A page of deliveries.
#[derive(Debug, Serialize)]
pub(super) struct Listing {
    deliveries: Vec<OutboxRecord>,
    /// True when [`MAX_SCAN`] records were read before the page filled.
    truncated: bool,
}

fn check_channel(c: &Option<String>) -> Result<(), ApiError> {
    match c {
        Some(c) if !CHANNEL_NAMES.contains(&c.as_str()) => Err(ApiError::bad_request(
            "invalid_filter",
            format!("unknown channel `{c}`; one of {}", CHANNEL_NAMES.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// Lists deliveries.
pub(super) async fn list(
    auth: TenantAuth,
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Listing>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_filter", e.body_text()))?;
    check_channel(&q.channel)?;
    if let Some(st) = &q.status {
        if !log::CODES.contains(&st.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("unknown status `{st}`; one of {}", log::CODES.join(", ")),
            ));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let profile = match &q.profile {
        Some(p) => Some(super::profiles::parse_id(p)?),
        None => None,
    };
    let sp = Space::tenant(&auth.tenant_id);
    let listing =
        s.db.run(move |b| {
            let keep = |r: &OutboxRecord| {
                q.journey.as_ref().is_none_or(|j| &r.journey == j)
                    && q.channel
                        .as_ref()
                        .is_none_or(|c| r.channel.as_ref() == Some(c))
                    && q.status
                        .as_ref()
                        .is_none_or(|st| log::code(&r.status) == st)
            };
            let (mut records, truncated) = match profile {
                Some(id) => {
                    let Some(pid) = crate::profiles::owner(b, &sp, &id.kind, &id.value)? else {
                        return Ok(Listing {
                            deliveries: Vec::new(),
                            truncated: false,
                        });
                    };
                    let all = crate::messaging::outbox::for_profile(b, &sp, &pid, MAX_SCAN)?;
                    let t = all.len() >= MAX_SCAN;
                    (all.into_iter().filter(|r| keep(r)).collect::<Vec<_>>(), t)
                }
                None => {
                    let all = scan_all(b, &sp)?;
                    let t = all.len() >= MAX_SCAN;
                    (all.into_iter().filter(|r| keep(r)).collect(), t)
                }
            };
            records.sort_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then_with(|| b.intent_id.cmp(&a.intent_id))
            });
            records.truncate(limit);
            Ok(Listing {
                deliveries: records,
                truncated,
            })
        })
        .await?;
    Ok(Json(listing))
}

/// Every delivery record of the tenant, up to [`MAX_SCAN`].
fn scan_all(b: &dyn Backend, sp: &Space) -> Result<Vec<OutboxRecord>, StoreError> {
    Ok(b.scan_prefix(sp, b"outbox/", MAX_SCAN)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// One delivery.
pub(super) async fn show(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(intent): Path<String>,
) -> Result<Json<OutboxRecord>, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    let id = intent.clone();
    match s.db.run(move |b| log::get(b, &sp, &id)).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "delivery_not_found",
            format!("no delivery with intent id `{intent}`"),
        )),
    }
}

/// Puts a dead-lettered or ambiguous delivery back in the queue.
pub(super) async fn retry(
    auth: TenantAuth,
    State(s): State<AppState>,
    Path(intent): Path<String>,
) -> Result<(StatusCode, Json<OutboxRecord>), ApiError> {
    match s.deliveries.retry(&auth.tenant_id, &intent).await? {
        RetryOutcome::Queued(rec) => Ok((StatusCode::ACCEPTED, Json(*rec))),
        RetryOutcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "delivery_not_found",
            format!("no delivery with intent id `{intent}`"),
        )),
        RetryOutcome::NotRetryable(code) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "delivery `{intent}` is `{code}`; only dead_lettered and ambiguous deliveries are retried"
            ),
        )),
    }
}

/// `GET /v1/deliveries/funnel` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FunnelQuery {
    journey: Option<String>,
    channel: Option<String>,
}

/// One row of the funnel: how many intents reached each step.
#[derive(Debug, Default, Serialize)]
pub(super) struct FunnelRow {
    journey: String,
    channel: String,
    intents: u64,
    sent: u64,
    delivered: u64,
    opened: u64,
    clicked: u64,
    converted: u64,
    failed: u64,
    skipped: u64,
}

/// The funnel per journey and channel. A message counts at every step it passed (a `read`
/// with no `delivered` report was delivered); converted means the profile completed an
/// order within 7 days after the send.
pub(super) async fn funnel(
    auth: TenantAuth,
    State(s): State<AppState>,
    q: Result<Query<FunnelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_filter", e.body_text()))?;
    check_channel(&q.channel)?;
    let sp = Space::tenant(&auth.tenant_id);
    let (rows, truncated) =
        s.db.run(move |b| {
            let all = scan_all(b, &sp)?;
            let truncated = all.len() >= MAX_SCAN;
            let mut rows: BTreeMap<(String, String), FunnelRow> = BTreeMap::new();
            for r in all {
                let channel = r.channel.clone().unwrap_or_else(|| "none".into());
                if q.journey.as_ref().is_some_and(|j| &r.journey != j)
                    || q.channel.as_ref().is_some_and(|c| &channel != c)
                {
                    continue;
                }
                let row = rows
                    .entry((r.journey.clone(), channel.clone()))
                    .or_insert_with(|| FunnelRow {
                        journey: r.journey.clone(),
                        channel,
                        ..FunnelRow::default()
                    });
                row.intents += 1;
                let reached = |step: u8| log::progress(&r.status).is_some_and(|p| p >= step);
                let failed_after_send = matches!(
                    r.status,
                    OutboxStatus::Failed { .. }
                        | OutboxStatus::Undelivered { .. }
                        | OutboxStatus::Bounced { .. }
                ) && r.delivery.sent_at.is_some();
                row.sent += u64::from(reached(1) || failed_after_send);
                row.delivered += u64::from(reached(2));
                row.opened += u64::from(reached(3));
                row.clicked += u64::from(reached(4));
                row.failed += u64::from(matches!(
                    r.status,
                    OutboxStatus::Failed { .. }
                        | OutboxStatus::Undelivered { .. }
                        | OutboxStatus::Bounced { .. }
                        | OutboxStatus::DeadLettered { .. }
                ));
                row.skipped += u64::from(matches!(r.status, OutboxStatus::Skipped { .. }));
                if let Some(sent) = r.delivery.sent_at {
                    row.converted += u64::from(converted(b, &sp, &r.profile_id, sent)?);
                }
            }
            Ok((rows.into_values().collect::<Vec<_>>(), truncated))
        })
        .await?;
    Ok(Json(json!({"funnel": rows, "truncated": truncated})))
}

/// Whether `profile` completed an order within the window after `sent`.
fn converted(b: &dyn Backend, sp: &Space, profile: &str, sent: i64) -> Result<bool, StoreError> {
    let Some(v) = b.get(sp, &crate::profiles::stats_key(profile, CONVERSION_EVENT))? else {
        return Ok(false);
    };
    let stats: crate::profiles::EventStats = serde_json::from_slice(&v).unwrap_or_default();
    // The days map counts orders per day: any day from the send's day through the window.
    let (from, to) = (
        sent.div_euclid(crate::profiles::DAY_MS),
        (sent + CONVERSION_WINDOW_MS).div_euclid(crate::profiles::DAY_MS),
    );
    Ok(stats.last.is_some_and(|l| l >= sent) && stats.days.range(from..=to).next().is_some())
}

/// A click on a tracked link: recorded, then redirected to the original URL.
pub(super) async fn click(
    State(s): State<AppState>,
    Path((tenant, token)): Path<(String, String)>,
) -> Response {
    match s.deliveries.click(&tenant, &token).await {
        Ok(Some(url)) => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", url)
            .header("cache-control", "no-store")
            .body(axum::body::Body::empty())
            .unwrap_or_else(|e| ApiError::internal(e).into_response()),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "link_not_found",
            "no such link (it may have been erased with its profile)",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A provider's callback: handed to the installation's adapter.
pub(super) async fn webhook(
    State(s): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(tenant), Some(installation)) = (params.get("tenant"), params.get("installation"))
    else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    };
    let req = HttpRequest {
        method: method.to_string(),
        path: params
            .get("path")
            .map(|p| format!("/{p}"))
            .unwrap_or_default(),
        query: query
            .as_deref()
            .map(|q| {
                url_pairs(q)
                    .take(MAX_WEBHOOK_FIELDS)
                    .collect::<Vec<(String, String)>>()
            })
            .unwrap_or_default(),
        headers: headers
            .iter()
            .take(MAX_WEBHOOK_FIELDS)
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        received_at: s.clock.now_ms(),
    };
    match s.deliveries.webhook(tenant, installation, req).await {
        Ok(r) => {
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK));
            for (k, v) in r.headers.iter().take(MAX_WEBHOOK_FIELDS) {
                resp = resp.header(k.as_str(), v.as_str());
            }
            resp.body(axum::body::Body::from(r.body))
                .unwrap_or_else(|e| ApiError::internal(e).into_response())
        }
        Err(e) => failure(e).into_response(),
    }
}

fn failure(e: WebhookFailure) -> ApiError {
    let msg = e.to_string();
    match e {
        WebhookFailure::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_installation", msg)
        }
        WebhookFailure::BadSignature => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", msg)
        }
        WebhookFailure::StaleTimestamp => {
            ApiError::new(StatusCode::UNAUTHORIZED, "stale_timestamp", msg)
        }
        WebhookFailure::Malformed(_) => ApiError::bad_request("malformed_webhook", msg),
        WebhookFailure::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg),
        // 502: the plugin failed, not the host; the provider will retry.
        WebhookFailure::Adapter(_) => ApiError::new(StatusCode::BAD_GATEWAY, "adapter_failed", msg),
        WebhookFailure::Store(e) => ApiError::from(e),
    }
}

/// `a=1&b=x%20y` as decoded pairs (form encoding: `+` is a space; invalid escapes stay
/// as they are).
fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let pairs: Vec<_> =
            url_pairs("hub.mode=subscribe&hub.challenge=a%20b+c&x&bad=%zz%4").collect();
        assert_eq!(
            pairs,
            [
                ("hub.mode".to_string(), "subscribe".to_string()),
                ("hub.challenge".into(), "a b c".into()),
                ("x".into(), "".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }
}
