//! Meta's webhook conventions, shared by the Messenger and WhatsApp Cloud adapters: the
//! `hub.challenge` subscription handshake and the `X-Hub-Signature-256` body signature.
//! Both read the installation's `verify_token` and `app_secret` secrets.

use crate::adapter::{HttpRequest, HttpResponse, WebhookError, WebhookResult};
use crate::{config, crypto, log};

/// Answers a GET: echoes `hub.challenge` for `hub.mode=subscribe` when `hub.verify_token`
/// matches the `verify_token` secret; a GET without a challenge gets a plain 200.
pub fn verification_handshake(
    req: &HttpRequest,
    plugin: &str,
) -> Result<WebhookResult, WebhookError> {
    let Some(challenge) = req.query_param("hub.challenge") else {
        return Ok(WebhookResult {
            response: HttpResponse::text(200, "ok"),
            events: vec![],
        });
    };
    if req.query_param("hub.mode") != Some("subscribe") {
        return Err(WebhookError::Malformed(
            "hub.mode must be `subscribe`".into(),
        ));
    }
    let Some(expected) = config::get_secret("verify_token").filter(|t| !t.is_empty()) else {
        log::error(&format!(
            "{plugin}: secret `verify_token` is not set; refusing the subscription"
        ));
        return Err(WebhookError::BadSignature);
    };
    let given = req.query_param("hub.verify_token").unwrap_or_default();
    if !crypto::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(WebhookError::BadSignature);
    }
    Ok(WebhookResult {
        response: HttpResponse::text(200, challenge),
        events: vec![],
    })
}

/// The MAC in an `X-Hub-Signature-256: sha256=<hex>` header (32 bytes), if well formed.
pub fn signature_from_header(header: Option<&str>) -> Option<Vec<u8>> {
    let value = header?.trim();
    let hex = value
        .strip_prefix("sha256=")
        .or_else(|| value.strip_prefix("SHA256="))?;
    crypto::unhex(hex).filter(|mac| mac.len() == 32)
}

/// Checks `X-Hub-Signature-256` = HMAC-SHA256 of the raw body under the `app_secret`
/// secret, compared in constant time.
pub fn verify_signature(req: &HttpRequest, plugin: &str) -> Result<(), WebhookError> {
    let given = signature_from_header(req.header("x-hub-signature-256"))
        .ok_or(WebhookError::BadSignature)?;
    let Some(secret) = config::get_secret("app_secret").filter(|s| !s.is_empty()) else {
        log::error(&format!(
            "{plugin}: secret `app_secret` is not set; refusing webhooks"
        ));
        return Err(WebhookError::BadSignature);
    };
    let expected = crypto::hmac_sha256(secret.as_bytes(), &req.body);
    if crypto::constant_time_eq(&expected, &given) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::signature_from_header;

    #[test]
    fn parses_signature_headers() {
        let hex = "a".repeat(64);
        assert_eq!(
            signature_from_header(Some(&format!("sha256={hex}"))),
            Some(vec![0xaa; 32])
        );
        assert_eq!(
            signature_from_header(Some(&format!(" sha256={} ", hex.to_uppercase()))),
            Some(vec![0xaa; 32])
        );
        assert_eq!(signature_from_header(Some(&hex)), None, "prefix required");
        assert_eq!(signature_from_header(Some("sha256=abcd")), None, "32 bytes");
        assert_eq!(signature_from_header(Some("sha1=abcd")), None);
        assert_eq!(signature_from_header(Some("sha256=zz")), None);
        assert_eq!(signature_from_header(None), None);
        let hex = "0f".repeat(32);
        assert_eq!(
            signature_from_header(Some(&format!("sha256={hex}"))),
            Some(vec![0x0f; 32])
        );
    }
}
