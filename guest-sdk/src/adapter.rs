//! Kind 3, `channel-adapter`: formats channel-neutral messages for one provider, sends
//! them through [`http`](crate::http), and turns the provider's webhooks into events.
//!
//! The only kind granted `outbound-http` and `crypto`. Implement [`Guest`] and export it
//! with [`export_channel_adapter!`](crate::export_channel_adapter).
//!
//! ```no_run
//! use weft_guest::adapter::{
//!     ChannelCapabilities, Guest, HttpRequest, HttpResponse, OutboundMessage, PluginError,
//!     SendError, SendOk, StatusGranularity, WebhookError, WebhookResult,
//! };
//! use weft_guest::http::{self, Request};
//! use weft_guest::types::{ChannelKind, Content};
//!
//! struct Hook;
//!
//! impl Guest for Hook {
//!     fn capabilities() -> ChannelCapabilities {
//!         ChannelCapabilities {
//!             channel: ChannelKind::Webhook,
//!             max_text_len: 4_000,
//!             max_buttons: 0,
//!             max_button_label: 0,
//!             content_kinds: vec!["text".into()],
//!             window: None,
//!             status: StatusGranularity::None,
//!             max_send_per_sec: None,
//!             extra_channels: vec![],
//!         }
//!     }
//!
//!     fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
//!         let url = weft_guest::config::get("url").ok_or(SendError::Permanent("no url".into()))?;
//!         let text: Vec<&str> = msg
//!             .content
//!             .iter()
//!             .filter_map(|c| match c { Content::Text(t) => Some(t.as_str()), _ => None })
//!             .collect();
//!         let req = Request::new("POST", &url)
//!             .json(&serde_json::json!({"to": msg.recipient.address.value, "text": text}));
//!         let resp = http::send(&req)?; // transport → retryable, timeout → ambiguous
//!         if !resp.is_success() {
//!             return Err(SendError::Retryable(format!("status {}", resp.status)));
//!         }
//!         Ok(SendOk { provider_message_id: msg.tracking_id, accepted_at: 0, quota_remaining: None })
//!     }
//!
//!     fn handle_webhook(_req: HttpRequest) -> Result<WebhookResult, WebhookError> {
//!         Ok(WebhookResult { response: HttpResponse::text(200, "ok"), events: vec![] })
//!     }
//!
//!     fn refresh_credentials() -> Result<(), PluginError> {
//!         Ok(())
//!     }
//! }
//!
//! weft_guest::export_channel_adapter!(Hook);
//! # fn main() {}
//! ```

use crate::http::HttpError;
use crate::types::CapabilityError;

pub use crate::bindings::channel_adapter::exports::weft::plugin::adapter::*;

impl HttpRequest {
    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text, if it is valid UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

impl HttpResponse {
    /// A response with a `text/plain` body.
    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A host call failing: `unavailable` is retryable, anything else permanent.
impl From<CapabilityError> for SendError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Unavailable(m) => SendError::Retryable(format!("unavailable: {m}")),
            other => SendError::Permanent(format!("capability: {}", other.message())),
        }
    }
}

/// No answer from the provider: a transport failure (nothing was sent, or the connection
/// broke) is retryable; a timeout is ambiguous, since the provider may have accepted the
/// message; a refusal by the host (allowlist, bad URL, limit) is permanent.
impl From<HttpError> for SendError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Timeout => SendError::Ambiguous("provider did not answer in time".into()),
            HttpError::Transport(m) => SendError::Retryable(format!("transport: {m}")),
            HttpError::Refused(c) => {
                SendError::Permanent(format!("request refused: {}", c.message()))
            }
        }
    }
}
