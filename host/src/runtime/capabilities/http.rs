//! Outbound HTTP for plugins: the standard `wasi:http/outgoing-handler` (wasmtime-wasi-
//! http serves the interface), every request checked against the operator's
//! `allowed_outbound_hosts` for that plugin (Spin's spelling: `scheme://host[:port]`),
//! and sent by the host itself (reqwest, rustls with the platform's roots plus an
//! optional CA file), so that the host decides what leaves and what comes back:
//!
//! - a request to a host not on the list is refused (`HTTP request denied` to the
//!   plugin) before anything is resolved or connected; so is every request of a plugin
//!   with no list, and every request during `init` (loading is never at the mercy of the
//!   network, and a reload during an outage still works);
//! - plain `http://` only to loopback, unless the operator's entry says
//!   `allow_plain_http`; redirects are followed only to listed hosts, at most
//!   `max_redirects`;
//! - request and response bodies are capped; the whole exchange ends at the plugin
//!   call's deadline, so a slow server costs the call its deadline, never more, and the
//!   plugin waits suspended (its fiber), holding no runtime thread.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prometheus::{HistogramVec, IntCounterVec};
use serde::Deserialize;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One entry of a plugin's `allowed_outbound_hosts`: `https://registry.example.com`,
/// `https://*.example.com:8443`, `http://127.0.0.1:*`; or the long form, for plain HTTP to
/// a host that is not loopback: `{ url: "http://registry.lan:8080", allow_plain_http: true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    https: bool,
    /// Lower case; `*.suffix` for any subdomain of `suffix`.
    host: String,
    /// `None`: any port.
    port: Option<u16>,
    text: String,
}

impl<'de> Deserialize<'de> for AllowedHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Short(String),
            Long {
                url: String,
                #[serde(default)]
                allow_plain_http: bool,
            },
        }
        let (url, plain) = match Raw::deserialize(d)? {
            Raw::Short(url) => (url, false),
            Raw::Long {
                url,
                allow_plain_http,
            } => (url, allow_plain_http),
        };
        AllowedHost::parse(&url, plain).map_err(serde::de::Error::custom)
    }
}

impl AllowedHost {
    /// Parses `scheme://host[:port]`; `plain`: the operator allows plain HTTP to a host
    /// that is not loopback.
    pub fn parse(text: &str, plain: bool) -> Result<Self, String> {
        let bad = |why: &str| format!("{text:?}: {why}");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            bad("expected scheme://host[:port], e.g. https://registry.example.com")
        })?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("a host, not a URL: no path, query or credentials"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, "*")) if !h.ends_with(']') || h.starts_with('[') => (h, None),
            Some((h, p)) if !p.contains(']') => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| bad("the port is not a number or *"))?,
                ),
            ),
            _ => (rest, Some(if https { 443 } else { 80 })),
        };
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let probe = format!("{scheme}://{}", name.trim_start_matches('*'));
        let parsed = url::Url::parse(&probe)
            .ok()
            .filter(|u| u.host().is_some() && !name.is_empty() && name != "*");
        if parsed.is_none() {
            return Err(bad(
                "not a host name or address (a subdomain wildcard is *.example.com)",
            ));
        }
        if !https && !plain && !host_is_loopback(&host) {
            return Err(bad(
                "plain http to a host that is not loopback: use https, or write \
                 { url: ..., allow_plain_http: true } if you mean it",
            ));
        }
        Ok(Self {
            https,
            host,
            port,
            text: text.to_owned(),
        })
    }

    /// Whether a request to `url` may go.
    fn allows(&self, url: &url::Url) -> bool {
        let scheme_ok = match url.scheme() {
            "https" => self.https,
            "http" => !self.https,
            _ => false,
        };
        let Some(host) = url.host_str().map(|h| h.to_ascii_lowercase()) else {
            return false;
        };
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        let port_ok = self
            .port
            .is_none_or(|p| url.port_or_known_default() == Some(p));
        scheme_ok && host_ok && port_ok
    }
}

fn host_is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `outbound_http` section: what applies to every plugin's requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// PEM CAs trusted beside the platform's roots (a registry with a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Largest request body a plugin may send. An introspection or lookup request is
    /// a few hundred bytes; 64 KiB leaves room without letting a plugin stream data out.
    pub max_request_bytes: usize,
    /// Largest response body a plugin may receive, refused past it: the response is
    /// held in memory and then copied into the plugin's.
    pub max_response_bytes: usize,
    /// Redirects followed, each to a listed host only.
    pub max_redirects: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            max_request_bytes: 64 * 1024,
            max_response_bytes: 1024 * 1024,
            max_redirects: 3,
        }
    }
}

/// The metric series of outbound requests.
#[derive(Clone)]
pub struct HttpMetrics {
    /// `plugin_http_requests_total{plugin,host,status}`: `status` the HTTP status, or
    /// `denied`, `timeout`, `too_large`, `error`; `host` the listed host, `-` when denied.
    pub requests: IntCounterVec,
    /// `plugin_http_request_duration_seconds{plugin}`.
    pub duration: HistogramVec,
}

/// One plugin's outbound HTTP: its list, and the client that sends for it.
pub struct Outbound {
    plugin: String,
    allowed: Arc<Vec<AllowedHost>>,
    client: reqwest::Client,
    config: OutboundConfig,
    metrics: HttpMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("outbound_http.ca_file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("outbound HTTP client: {0}")]
    Client(String),
}

impl Outbound {
    pub fn new(
        plugin: &str,
        allowed: Vec<AllowedHost>,
        config: &OutboundConfig,
        ca_pem: Option<&[u8]>,
        metrics: HttpMetrics,
    ) -> Result<Self, OutboundError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allowed = Arc::new(allowed);
        let listed = allowed.clone();
        let max = config.max_redirects;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                attempt.error("too many redirects")
            } else if !listed.iter().any(|a| a.allows(attempt.url())) {
                attempt.error("redirect to a host not in allowed_outbound_hosts")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .redirect(redirects)
            .user_agent(concat!("nats-callout/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| OutboundError::Ca {
                    path: config
                        .ca_file
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string()),
                    message: e.to_string(),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| OutboundError::Client(e.to_string()))?;
        Ok(Self {
            plugin: plugin.to_owned(),
            allowed,
            client,
            config: config.clone(),
            metrics,
        })
    }

    fn count(&self, host: &str, status: &str, started: Instant) {
        self.metrics
            .requests
            .with_label_values(&[&self.plugin, host, status])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[&self.plugin])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Sends `request` if its host is listed, by `deadline` at the latest.
    async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        deadline: Instant,
    ) -> Result<http::Response<WasiBody>, Error> {
        let started = Instant::now();
        let url = url::Url::parse(&request.uri().to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let Some(entry) = self.allowed.iter().find(|a| a.allows(&url)) else {
            tracing::warn!(
                plugin = %self.plugin,
                url = %crate::identity::oauth::jwks::redacted(&url),
                "outbound request denied: not in the plugin's allowed_outbound_hosts"
            );
            self.count("-", "denied", started);
            return Err(Error::HttpRequestDenied);
        };
        let host = entry.text.clone();
        let result = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.exchange(request, url, options),
        )
        .await
        .unwrap_or(Err(Error::ConnectionTimeout));
        let status = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(Error::ConnectionTimeout) => "timeout".into(),
            Err(Error::HttpRequestBodySize(_) | Error::HttpResponseBodySize(_)) => {
                "too_large".into()
            }
            Err(_) => "error".into(),
        };
        self.count(&host, &status, started);
        result
    }

    async fn exchange(
        &self,
        request: http::Request<WasiBody>,
        url: url::Url,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let (parts, body) = request.into_parts();
        let max_request = self.config.max_request_bytes;
        let body = Limited::new(body, max_request)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(max_request as u64)))?
            .to_bytes();
        let mut outgoing = self.client.request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            // reqwest sets Host from the URL; a plugin's own could only disagree.
            if name != http::header::HOST {
                outgoing = outgoing.header(name, value);
            }
        }
        if let Some(t) = options.and_then(|o| o.connect_timeout.or(o.first_byte_timeout)) {
            outgoing = outgoing.timeout(t);
        }
        let mut response = outgoing.send().await.map_err(|e| {
            tracing::info!(plugin = %self.plugin, error = %e, "outbound request failed");
            if e.is_timeout() {
                Error::ConnectionTimeout
            } else if e.is_redirect() {
                Error::HttpRequestDenied
            } else if e.is_connect() {
                Error::ConnectionRefused
            } else {
                Error::HttpProtocolError
            }
        })?;
        let max_response = self.config.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|n| n > max_response as u64)
        {
            return Err(Error::HttpResponseBodySize(Some(max_response as u64)));
        }
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let mut collected = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| Error::HttpResponseIncomplete)?
        {
            if collected.len() + chunk.len() > max_response {
                return Err(Error::HttpResponseBodySize(Some(max_response as u64)));
            }
            collected.extend_from_slice(&chunk);
        }
        let body = Full::new(Bytes::from(collected))
            .map_err(|never| match never {})
            .boxed_unsync();
        out.body(body)
            .map_err(|e| Error::InternalError(Some(e.to_string())))
    }
}

/// The hooks of one store: its plugin's [`Outbound`], and whether (and until when) the
/// current call may send.
pub struct HttpHooks {
    pub(crate) outbound: Option<Arc<Outbound>>,
    /// Set for `authenticate` calls, cleared for `init`.
    pub(crate) open: bool,
    pub(crate) deadline: Instant,
}

impl HttpHooks {
    pub fn new(outbound: Option<Arc<Outbound>>) -> Self {
        Self {
            outbound,
            open: false,
            deadline: Instant::now(),
        }
    }
}

impl WasiHttpHooks for HttpHooks {
    /// Closed outside `authenticate` (during `init`): refused before any request is
    /// built, with a note in the log.
    fn is_supported_scheme(&mut self, scheme: &http::uri::Scheme) -> bool {
        if !self.open {
            tracing::warn!(
                "a plugin tried outbound HTTP during init, which has none: fetch in \
                 authenticate, and keep the result in the plugin cache"
            );
            return false;
        }
        *scheme == http::uri::Scheme::HTTP || *scheme == http::uri::Scheme::HTTPS
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        drop(fut);
        let outbound = self.outbound.clone();
        let deadline = self.deadline;
        Box::new(async move {
            let Some(outbound) = outbound else {
                tracing::warn!("outbound request denied: the plugin has no allowed_outbound_hosts");
                return Err(Error::HttpRequestDenied);
            };
            let response = outbound.send(request, options, deadline).await?;
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> url::Url {
        url::Url::parse(u).unwrap()
    }

    #[test]
    fn entries_and_what_they_allow() {
        let e = AllowedHost::parse("https://registry.example.com", false).unwrap();
        assert!(e.allows(&url("https://registry.example.com/devices/1")));
        assert!(e.allows(&url("https://REGISTRY.example.com:443/x")));
        assert!(
            !e.allows(&url("https://registry.example.com:8443/x")),
            "port"
        );
        assert!(!e.allows(&url("http://registry.example.com/x")), "scheme");
        assert!(!e.allows(&url("https://registry.example.com.evil.net/x")));
        assert!(!e.allows(&url("https://evil.net/?registry.example.com")));
        let w = AllowedHost::parse("https://*.example.com:*", false).unwrap();
        assert!(w.allows(&url("https://a.example.com:8443/")));
        assert!(w.allows(&url("https://a.b.example.com/")));
        assert!(!w.allows(&url("https://example.com/")), "a subdomain only");
        assert!(!w.allows(&url("https://badexample.com/")));
        let l = AllowedHost::parse("http://127.0.0.1:*", false).unwrap();
        assert!(l.allows(&url("http://127.0.0.1:8080/")));
        assert!(AllowedHost::parse("http://[::1]:9000", false).is_ok());
        assert!(AllowedHost::parse("http://localhost", false).is_ok());
        for (bad, why) in [
            ("http://registry.lan", "plain http"),
            ("ftp://x", "scheme"),
            ("registry.example.com", "scheme://"),
            ("https://x/path", "a host, not a URL"),
            ("https://u:p@x", "a host, not a URL"),
            ("https://x:http", "port"),
            ("https://*", "host name"),
        ] {
            let e = AllowedHost::parse(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let plain = AllowedHost::parse("http://registry.lan:8080", true).unwrap();
        assert!(plain.allows(&url("http://registry.lan:8080/")));
        assert!(!plain.allows(&url("https://registry.lan:8080/")));
    }
}
