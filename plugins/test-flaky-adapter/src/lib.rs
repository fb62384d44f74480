//! Test plugin (channel-adapter): an SMS adapter that misbehaves on `send` as its `mode`
//! setting says, so tests can check what the send pipeline does with a failing adapter.
//!
//! - `panic`: panics before any request (nothing can have been sent: safe to retry);
//! - `send-then-hang`: posts to `url`, then spins until the deadline (the provider got the
//!   message: the outcome is ambiguous);
//! - `sleep-then-send`: sleeps 50 ms through WASI (a blocking wait inside the adapter's
//!   fiber), then sends as below;
//! - anything else: posts to `url` and succeeds with the id `flaky-<tracking id>`.
//!
//! A `header` setting (`Name: value`) adds that header to the request as it is, so tests
//! can send a header the host must refuse.

use weft_guest::adapter::{
    ChannelCapabilities, Guest, HttpRequest, HttpResponse, OutboundMessage, PluginError, SendError,
    SendOk, StatusGranularity, WebhookError, WebhookResult,
};
use weft_guest::http::{self, Request};
use weft_guest::types::ChannelKind;
use weft_guest::{clock, config};

struct Flaky;

impl Guest for Flaky {
    fn capabilities() -> ChannelCapabilities {
        ChannelCapabilities {
            channel: ChannelKind::Sms,
            max_text_len: 1600,
            max_buttons: 0,
            max_button_label: 0,
            content_kinds: vec!["text".into()],
            window: None,
            status: StatusGranularity::None,
            max_send_per_sec: None,
            extra_channels: vec![],
        }
    }

    fn send(msg: OutboundMessage) -> Result<SendOk, SendError> {
        let mode = config::get("mode").unwrap_or_default();
        if mode == "panic" {
            panic!("test-flaky-adapter: deliberate panic before sending");
        }
        if mode == "sleep-then-send" {
            // 50 ms: long enough to be a real wait, short against the send deadline.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let url = config::get("url").ok_or(SendError::Permanent("no `url` setting".into()))?;
        let mut req = Request::new("POST", &url).body(msg.tracking_id.clone().into_bytes());
        if let Some((name, value)) = config::get("header")
            .as_deref()
            .and_then(|h| h.split_once(':'))
        {
            req = req.header(name.trim(), value.trim());
        }
        http::send(&req)?;
        if mode == "send-then-hang" {
            let mut n: u64 = 0;
            loop {
                n = n.wrapping_add(1);
                std::hint::black_box(n);
            }
        }
        Ok(SendOk {
            provider_message_id: format!("flaky-{}", msg.tracking_id),
            accepted_at: clock::now(),
            quota_remaining: None,
        })
    }

    fn handle_webhook(_req: HttpRequest) -> Result<WebhookResult, WebhookError> {
        Ok(WebhookResult {
            response: HttpResponse::text(200, "ok"),
            events: vec![],
        })
    }

    fn refresh_credentials() -> Result<(), PluginError> {
        Err(PluginError::NotSupported("nothing to refresh".into()))
    }
}

weft_guest::export_channel_adapter!(Flaky);
