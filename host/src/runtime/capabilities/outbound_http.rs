//! `weft:plugin/outbound-http`: host-mediated HTTP for channel adapters, limited to the
//! installation's allowlist and to the time left in the invocation.

use std::time::{Duration, Instant};

use super::{invalid, limit, weft};
use crate::runtime::bindings::types::CapabilityError;
use crate::runtime::host::HostState;
use weft::outbound_http::{HttpError, Request, Response};

/// Largest request or response body, in bytes: provider APIs exchange small JSON documents.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most headers on a request: real provider calls send fewer than ten.
pub const MAX_HEADERS: usize = 64;

/// Whether `host[:port]` is allowed by one allowlist entry (`host`, `host:port`, `*.domain`).
pub(crate) fn host_allowed(allowlist: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host.to_ascii_lowercase();
    allowlist.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (eh, ep) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                (h.to_string(), p.parse::<u16>().ok())
            }
            _ => (entry.clone(), None),
        };
        let host_ok = match eh.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => eh == host,
        };
        host_ok && (ep.is_none() || ep == port)
    })
}

fn refused(e: CapabilityError) -> HttpError {
    HttpError::Refused(e)
}

impl HostState {
    fn check_request(&self, req: &Request) -> Result<reqwest::Url, HttpError> {
        let url = reqwest::Url::parse(&req.url)
            .map_err(|e| refused(invalid(format!("invalid URL `{}`: {e}", req.url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(invalid(format!(
                "URL scheme `{}` is not http or https",
                url.scheme()
            ))));
        }
        let host = url
            .host_str()
            .ok_or_else(|| refused(invalid("URL has no host")))?;
        let settings = self.installation.settings();
        if !host_allowed(&settings.allowed_hosts, host, url.port_or_known_default()) {
            return Err(refused(CapabilityError::Denied(format!(
                "host `{host}` is not on this installation's allowlist"
            ))));
        }
        if req.body.len() > MAX_BODY_BYTES {
            return Err(refused(limit(format!(
                "request body of {} bytes exceeds the {MAX_BODY_BYTES}-byte limit",
                req.body.len()
            ))));
        }
        if req.headers.len() > MAX_HEADERS {
            return Err(refused(limit(format!(
                "{} headers exceed the limit of {MAX_HEADERS}",
                req.headers.len()
            ))));
        }
        Ok(url)
    }

    fn perform(&self, req: Request, url: reqwest::Url) -> Result<Response, HttpError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| refused(invalid(format!("invalid HTTP method `{}`", req.method))))?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_millis(req.timeout_ms.into()).min(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let mut builder = self.services.http.request(method, url).timeout(timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let builder = builder.body(req.body);
        let fut = async move {
            let mut resp = builder.send().await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .take(MAX_HEADERS)
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok(Err(()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(Response {
                status,
                headers,
                body,
            }))
        };
        match self.services.rt.block_on(fut) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(())) => Err(refused(limit(format!(
                "response body exceeds the {MAX_BODY_BYTES}-byte limit"
            )))),
            Err(e) if e.is_timeout() => Err(HttpError::Timeout),
            Err(e) => Err(HttpError::Transport(transport_message(&e))),
        }
    }
}

/// A transport error message without host internals beyond the failing step.
fn transport_message(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".into()
    } else {
        "request failed".into()
    }
}

impl weft::outbound_http::Host for HostState {
    fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.enter()?;
        let url = match self.check_request(&req) {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.perform(req, url))
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn allowlist_matches_host_port_and_wildcards() {
        let list = vec![
            "openapi.zalo.me".to_string(),
            "127.0.0.1:9000".to_string(),
            "*.facebook.com".to_string(),
        ];
        assert!(host_allowed(&list, "openapi.zalo.me", Some(443)));
        assert!(host_allowed(&list, "127.0.0.1", Some(9000)));
        assert!(!host_allowed(&list, "127.0.0.1", Some(9001)));
        assert!(host_allowed(&list, "graph.facebook.com", Some(443)));
        assert!(!host_allowed(&list, "facebook.com.evil.io", Some(443)));
        assert!(!host_allowed(&list, "evil.io", Some(443)));
    }
}
