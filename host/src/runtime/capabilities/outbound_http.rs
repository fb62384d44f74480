//! `weft:plugin/outbound-http`: host-mediated HTTP for channel adapters, limited to the
//! installation's allowlist, to public addresses (unless the operator allows private ones),
//! and to the time left in the invocation. Every request is recorded on the invocation.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{invalid, limit, weft};
use crate::runtime::bindings::types::CapabilityError;
use crate::runtime::host::HostState;
use crate::runtime::invoke::{HttpCall, MAX_RECORDED_HTTP_CALLS};
use weft::outbound_http::{HttpError, Request, Response};

/// Largest request or response body, in bytes: provider APIs exchange small JSON documents.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most headers on a request: real provider calls send fewer than ten.
pub const MAX_HEADERS: usize = 64;

/// One provider answer a local run's fixture gives (`"http": [...]` in `weft plugin run`'s
/// fixture): the request it answers, by method and URL, and the response. A server never
/// has these; its requests go to the network.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CannedAnswer {
    /// The request's method; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// The request's URL; its query string, if any, is not compared.
    pub url: String,
    /// The status code to answer.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body: a string as it is, any other JSON value as its JSON text.
    #[serde(default)]
    pub body: serde_json::Value,
    /// Answers every matching request from its turn on, instead of one (a status an
    /// adapter polls, say).
    #[serde(default)]
    pub repeat: bool,
}

fn ok_status() -> u16 {
    200
}

/// A request a local run's plugin made, as [`CannedHttp`] saw it: what a fixture's
/// `expect` can check under `requests`. The installation's secret values never appear in
/// it: each is shown as `<secret:NAME>`, so a fixture can check that the adapter sends
/// the right secret in the right place without printing it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The URL, with its query.
    pub url: String,
    /// The headers, names in lower case; a repeated header's values joined with `, `.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body: its JSON when it is JSON, else its text (invalid UTF-8 replaced).
    pub body: serde_json::Value,
}

impl SeenRequest {
    /// `req` as seen, with every value of `secrets` replaced by its placeholder.
    fn new(req: &Request, secrets: &std::collections::BTreeMap<String, String>) -> SeenRequest {
        // Longest first: a secret that contains another is replaced whole.
        let mut by_length: Vec<(&String, &String)> =
            secrets.iter().filter(|(_, v)| !v.is_empty()).collect();
        by_length.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        // A secret in a URL or a form body is percent-encoded: hidden in those forms too.
        let forms: Vec<(String, [String; 3])> = by_length
            .iter()
            .map(|(name, value)| {
                let url = percent_encoding::utf8_percent_encode(value, URL_ESCAPED).to_string();
                let form = form_urlencoded::byte_serialize(value.as_bytes()).collect();
                (format!("<secret:{name}>"), [value.to_string(), url, form])
            })
            .collect();
        let hide = |text: &str| {
            forms.iter().fold(text.to_owned(), |t, (shown, written)| {
                written.iter().fold(t, |t, w| t.replace(w.as_str(), shown))
            })
        };
        let mut headers = std::collections::BTreeMap::<String, String>::new();
        for (k, v) in &req.headers {
            let v = match basic_credentials(v) {
                // Basic auth carries the password in base64: shown decoded, hidden.
                Some(credentials) => format!("Basic base64({})", hide(&credentials)),
                None => hide(v),
            };
            headers
                .entry(k.to_ascii_lowercase())
                .and_modify(|all| {
                    all.push_str(", ");
                    all.push_str(&v);
                })
                .or_insert(v);
        }
        let body = hide(&String::from_utf8_lossy(&req.body));
        SeenRequest {
            method: req.method.clone(),
            url: hide(&req.url),
            headers,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        }
    }
}

/// What a URL escapes: every byte but `A-Z a-z 0-9 - . _ ~` (RFC 3986's unreserved).
const URL_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `user:password` inside a `Basic` authorization value, if it is one.
fn basic_credentials(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// The answers of a local run, each used once, in order: two answers for one URL answer
/// its first and second requests (a `401` and then a `200`, say); an answer with `repeat`
/// is never used up. It keeps the requests it saw.
#[derive(Debug, Default)]
pub struct CannedHttp {
    unused: std::sync::Mutex<Vec<CannedAnswer>>,
    seen: std::sync::Mutex<Vec<SeenRequest>>,
}

impl CannedHttp {
    /// Answers from `answers`.
    pub fn new(answers: Vec<CannedAnswer>) -> CannedHttp {
        CannedHttp {
            unused: std::sync::Mutex::new(answers),
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The requests answered or not so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Keeps `req` (with `secrets` hidden), then takes the first unused answer for its
    /// method and URL.
    fn answer(
        &self,
        req: &Request,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<Response, HttpError> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(SeenRequest::new(req, secrets));
        let (method, url) = (req.method.as_str(), req.url.as_str());
        let Some(bare) = without_query(url) else {
            return Err(HttpError::Transport(format!("invalid URL `{url}`")));
        };
        let mut unused = self
            .unused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = unused.iter().position(|a| {
            a.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && without_query(&a.url).as_ref() == Some(&bare)
        });
        let taken = found.map(|i| {
            if unused[i].repeat {
                unused[i].clone()
            } else {
                unused.remove(i)
            }
        });
        let Some(a) = taken else {
            return Err(HttpError::Transport(format!(
                "no answer left in the fixture's `http` for {method} {bare}"
            )));
        };
        let body = match a.body {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(text) => text.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        if body.len() > MAX_BODY_BYTES {
            return Err(refused(limit(format!(
                "response body exceeds the {MAX_BODY_BYTES}-byte limit"
            ))));
        }
        Ok(Response {
            status: a.status,
            headers: a.headers.into_iter().take(MAX_HEADERS).collect(),
            body,
        })
    }
}

/// `url` normalized, without its query and fragment; `None` when it does not parse.
fn without_query(url: &str) -> Option<String> {
    let mut u = reqwest::Url::parse(url).ok()?;
    u.set_query(None);
    u.set_fragment(None);
    Some(u.into())
}

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

/// Whether `ip` is an ordinary public unicast address. Loopback, private (RFC 1918, IPv6
/// unique-local), link-local (cloud metadata lives there), shared CGNAT, unspecified,
/// broadcast, multicast and documentation ranges are not.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Resolves names with the system resolver and drops non-public addresses, so a name on the
/// allowlist cannot lead into the operator's network (checked at connect time, after DNS:
/// no rebinding window).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in afterwards.
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "`{host}` resolves only to private or local addresses, which this server does not allow"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outbound HTTP client: no redirects (the allowlist must hold for every hop; the guest
/// sees the 3xx and may follow it through another checked request), no proxy from the
/// environment, bounded connect time, and public addresses only unless `allow_private`.
pub(crate) fn client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // 2 s to connect: providers answer connects in milliseconds; more means trouble.
        .connect_timeout(Duration::from_secs(2));
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    Ok(b.build()?)
}

/// A request that passed [`HostState::check_request`]: its parsed URL and method.
struct Checked {
    url: reqwest::Url,
    method: reqwest::Method,
}

fn refused(e: CapabilityError) -> HttpError {
    HttpError::Refused(e)
}

impl HostState {
    /// Checks `req` against the installation's allowlist, the address policy and the
    /// limits, and that its method and headers are valid.
    fn check_request(&self, req: &Request) -> Result<Checked, HttpError> {
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
        // Names are checked by the client's resolver; literal addresses never reach it.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !self.services.allow_private_networks && !is_public(ip) {
                return Err(refused(CapabilityError::Denied(format!(
                    "address {ip} is private or local, which this server does not allow"
                ))));
            }
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
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| refused(invalid(format!("invalid HTTP method `{}`", req.method))))?;
        // Checked here, not left to the client: a bad header is the guest's mistake, named
        // as such, and a local run (which sends nothing) refuses it as a server would.
        for (k, v) in &req.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(refused(invalid(format!("invalid header name `{k}`"))));
            }
            if reqwest::header::HeaderValue::from_str(v).is_err() {
                return Err(refused(invalid(format!(
                    "the value of header `{k}` is not a valid header value"
                ))));
            }
        }
        Ok(Checked { url, method })
    }

    /// The time `req` may take: its own timeout, cut at the invocation's deadline.
    fn time_left(&self, req: &Request) -> Result<Duration, HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_millis(req.timeout_ms.into()).min(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        Ok(timeout)
    }

    /// The client request for a checked `req`, which gives up its body.
    fn build(
        &self,
        req: &mut Request,
        checked: Checked,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut builder = self
            .services
            .http
            .request(checked.method, checked.url)
            .timeout(timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder.body(std::mem::take(&mut req.body))
    }

    /// Keeps `req`'s outcome on the invocation record.
    fn record_call(
        &mut self,
        req: &Request,
        started: Instant,
        result: &Result<Response, HttpError>,
    ) {
        if self.http_calls.len() >= MAX_RECORDED_HTTP_CALLS {
            return;
        }
        let url = match reqwest::Url::parse(&req.url) {
            Ok(mut u) => {
                u.set_query(None);
                u.set_fragment(None);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => "(invalid URL)".to_string(),
        };
        let (status, error) = match result {
            Ok(r) => (Some(r.status), None),
            Err(HttpError::Timeout) => (None, Some("timeout".to_string())),
            Err(HttpError::Transport(m)) => (None, Some(m.clone())),
            Err(HttpError::Refused(e)) => {
                (None, Some(format!("refused: {}", capability_message(e))))
            }
        };
        self.http_calls.push(HttpCall {
            method: req.method.clone(),
            url,
            status,
            error,
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

/// Sends a built request and reads the answer (at most [`MAX_BODY_BYTES`]). Async: the
/// guest's fiber is suspended while the provider answers, so a slow provider holds no
/// thread (the reqwest client runs on the server's runtime).
async fn perform(builder: reqwest::RequestBuilder) -> Result<Response, HttpError> {
    let outcome = async move {
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
    }
    .await;
    match outcome {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(())) => Err(refused(limit(format!(
            "response body exceeds the {MAX_BODY_BYTES}-byte limit"
        )))),
        Err(e) if e.is_timeout() => Err(HttpError::Timeout),
        Err(e) => Err(HttpError::Transport(transport_message(&e))),
    }
}

/// The message inside a capability error.
fn capability_message(e: &CapabilityError) -> &str {
    match e {
        CapabilityError::Denied(m)
        | CapabilityError::Invalid(m)
        | CapabilityError::LimitExceeded(m)
        | CapabilityError::Unavailable(m) => m,
    }
}

/// A transport error message without host internals beyond the failing step. A connection
/// refused by the address policy says so, since that is the operator's decision to explain.
fn transport_message(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("which this server does not allow") {
            return s.to_string();
        }
        source = s.source();
    }
    if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".into()
    } else {
        "request failed".into()
    }
}

impl weft::outbound_http::Host for HostState {
    async fn send(&mut self, mut req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.enter()?;
        let started = Instant::now();
        let result = match self
            .check_request(&req)
            .and_then(|checked| Ok((checked, self.time_left(&req)?)))
        {
            Ok((checked, timeout)) => match self.services.canned_http.clone() {
                // A local run: the fixture answers, and nothing leaves the machine.
                Some(canned) => canned.answer(&req, &self.installation.settings().secrets),
                None => perform(self.build(&mut req, checked, timeout)).await,
            },
            Err(e) => Err(e),
        };
        self.record_call(&req, started, &result);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::{host_allowed, is_public};

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn canned_answers_match_method_and_url_without_query_once_each_in_order() {
        use super::{CannedAnswer, CannedHttp};
        let answer = |method: Option<&str>, url: &str, status: u16| CannedAnswer {
            method: method.map(str::to_owned),
            url: url.into(),
            status,
            headers: Default::default(),
            body: serde_json::json!({"n": status}),
            repeat: false,
        };
        let canned = CannedHttp::new(vec![
            answer(Some("post"), "https://api.example.com/m?v=1", 401),
            answer(Some("POST"), "https://api.example.com/m", 200),
            answer(None, "https://api.example.com/other", 204),
            CannedAnswer {
                repeat: true,
                ..answer(Some("GET"), "https://api.example.com/status", 202)
            },
        ]);
        let status = |r: Result<super::Response, super::HttpError>| r.map(|r| r.status).ok();
        let none = Default::default();
        let ask = |method: &str, url: &str, body: &[u8]| {
            canned.answer(&request(method, url, &[], body), &none)
        };
        let m = "https://api.example.com/m?token=x";
        // GET matches neither POST answer; any method matches the third.
        assert_eq!(status(ask("GET", m, b"")), None);
        assert_eq!(status(ask("POST", m, b"{}")), Some(401));
        assert_eq!(status(ask("POST", m, b"{}")), Some(200));
        assert_eq!(status(ask("POST", m, b"{}")), None, "each answers once");
        let other = "https://api.example.com/other";
        assert_eq!(status(ask("DELETE", other, b"x")), Some(204));
        for _ in 0..3 {
            let polled = ask("GET", "https://api.example.com/status", b"");
            assert_eq!(
                status(polled),
                Some(202),
                "a repeat answer is never used up"
            );
        }
        let seen = canned.seen();
        assert_eq!(seen.len(), 8, "every request is kept, answered or not");
        assert_eq!(seen[1].body, serde_json::json!({}));
        assert_eq!(seen[4].body, "x");
    }

    /// A guest's request.
    fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> super::Request {
        super::Request {
            method: method.into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            timeout_ms: 1000,
        }
    }

    #[test]
    fn a_seen_request_shows_headers_and_never_a_secrets_value() {
        let secrets = [
            ("token", "s3cr3t-abc"),
            ("token_prefix", "s3cr3t"),
            ("pass", "p@ss w/rd"),
            ("unset", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let seen = super::SeenRequest::new(
            &request(
                "POST",
                "https://api.example.com/m?key=s3cr3t-abc&p=p%40ss%20w%2Frd",
                &[
                    ("Authorization", "Bearer s3cr3t-abc"),
                    ("proxy-authorization", "Basic QUMxOnMzY3IzdC1hYmM="),
                    ("X-Tag", "a"),
                    ("x-tag", "b"),
                ],
                br#"{"auth":"s3cr3t","to":"+8491"}"#,
            ),
            &secrets,
        );
        assert_eq!(
            seen.url, "https://api.example.com/m?key=<secret:token>&p=<secret:pass>",
            "a percent-encoded secret is hidden too"
        );
        assert_eq!(seen.headers["authorization"], "Bearer <secret:token>");
        assert_eq!(
            seen.headers["proxy-authorization"], "Basic base64(AC1:<secret:token>)",
            "Basic credentials are shown decoded, the password hidden"
        );
        assert_eq!(seen.headers["x-tag"], "a, b", "repeated headers are joined");
        assert_eq!(
            seen.body,
            serde_json::json!({"auth": "<secret:token_prefix>", "to": "+8491"})
        );
    }

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
