//! Host-mediated outbound HTTP (`weft:plugin/outbound-http`), granted to channel adapters
//! only.
//!
//! The host performs the request: only hosts on the installation's allowlist are reachable,
//! the timeout is capped by what is left of the invocation's deadline, and bodies are
//! capped at 1 MiB each way.
//!
//! ```no_run
//! use weft_guest::http::{self, Request};
//!
//! let req = Request::new("POST", "https://openapi.zalo.me/v3.0/oa/message/cs")
//!     .header("access_token", "…")
//!     .json(&serde_json::json!({"recipient": {"user_id": "123"}, "message": {"text": "hi"}}))
//!     .timeout_ms(5_000);
//! match http::send(&req) {
//!     Ok(resp) if resp.is_success() => { let _v: serde_json::Value = resp.json().unwrap(); }
//!     Ok(resp) => { let _ = resp.status; }
//!     Err(err) => { let _ = err; }
//! }
//! ```

use serde::{de::DeserializeOwned, Serialize};

pub use crate::bindings::host::weft::plugin::outbound_http::{send, HttpError, Request, Response};

/// Default request timeout when none is set: 10 s (the host lowers it to the time left).
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;

impl Request {
    /// A request with no headers, an empty body and [`DEFAULT_TIMEOUT_MS`].
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    ///
    /// # Panics
    ///
    /// If `value` cannot be serialised (for example a map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = serde_json::to_vec(value).expect("request body serialises to JSON");
        self.header("content-type", "application/json")
    }

    /// Sets an `application/x-www-form-urlencoded` body from `(name, value)` pairs.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.body = form_encode(fields).into_bytes();
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    /// Sets a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the timeout in milliseconds.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms;
        self
    }
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Percent-encodes `text` for a URL query or form value (RFC 3986 unreserved kept).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => {
                out.push('%');
                out.push_str(&crate::crypto::hex(&[b]).to_ascii_uppercase());
            }
        }
    }
    out
}

/// Encodes `(name, value)` pairs as `application/x-www-form-urlencoded`.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            form_encode(&[("grant_type", "refresh_token"), ("t", "a b&c=d/é")]),
            "grant_type=refresh_token&t=a%20b%26c%3Dd%2F%C3%A9"
        );
    }
}
