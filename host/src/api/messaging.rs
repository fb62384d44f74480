//! `GET` / `PUT /v1/messaging/policy`: the tenant's messaging policy — default time zone,
//! quiet hours and what happens to sends inside them, the marketing frequency cap and its
//! window, whether marketing needs explicit opt-in, and the advertising prefix.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;

use super::{ApiError, AppState, TenantAuth};
use crate::messaging::outbox::{tenant_policy, POLICY_KEY};
use crate::messaging::policy::PolicyConfig;
use crate::store::Space;

/// The policy in force (the defaults until one is stored).
pub(super) async fn get(
    auth: TenantAuth,
    State(s): State<AppState>,
) -> Result<Json<PolicyConfig>, ApiError> {
    let sp = Space::tenant(&auth.tenant_id);
    let cfg = s.db.run(move |b| tenant_policy(b, &sp)).await?;
    Ok(Json(cfg))
}

/// Replaces the policy; absent fields take their defaults. Answers the stored policy.
pub(super) async fn put(
    auth: TenantAuth,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Json<PolicyConfig>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; send the policy as a JSON object",
        ));
    }
    let cfg: PolicyConfig = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_policy",
            format!("invalid messaging policy: {}", name_the_field(&body, e)),
        )
    })?;
    cfg.validate().map_err(|e| {
        ApiError::bad_request("invalid_policy", format!("invalid messaging policy: {e}"))
    })?;
    let bytes = serde_json::to_vec(&cfg).map_err(ApiError::internal)?;
    s.db.put(&Space::tenant(&auth.tenant_id), POLICY_KEY, &bytes)
        .await?;
    s.db.commit().await?;
    Ok(Json(cfg))
}

/// serde's message, prefixed with the offending field when it does not name it (type
/// errors say "expected u32" without saying where): each field is tried on its own.
fn name_the_field(body: &[u8], e: serde_json::Error) -> String {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) {
        for (k, v) in fields {
            let one = serde_json::Value::Object(serde_json::Map::from_iter([(k.clone(), v)]));
            if let Err(err) = serde_json::from_value::<PolicyConfig>(one) {
                let msg = err.to_string();
                return if msg.contains(&k) {
                    msg
                } else {
                    format!("`{k}`: {msg}")
                };
            }
        }
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_errors_name_the_field() {
        let body = br#"{"marketing_cap":"three"}"#;
        let e = serde_json::from_slice::<super::PolicyConfig>(body).unwrap_err();
        let msg = super::name_the_field(body, e);
        assert!(msg.contains("marketing_cap"), "{msg}");
    }
}
