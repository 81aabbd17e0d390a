//! Component glue, compiled only for wasm32: the wit-bindgen bindings of world `plugin`
//! (contract 0.3.0), conversions between its types and the SDK's, and the `Host` that
//! calls the imports.
//!
//! Nothing here is public API; [`crate::export_plugin!`] reaches it through
//! `nats_callout_sdk::__private`.

use std::sync::OnceLock;

pub use wit_bindgen;

use crate::{
    AuthRequest, Certificate, ClientTls, ConnectionType, Credential, CredentialKind, Decision,
    Grant, Host, LogLevel, Permission, Plugin, ResponsePermission, Secret, VerifiedJwt, http,
};

/// Generated bindings. The export macro is public so that it can be expanded in the
/// plugin's crate (the component's exports must be defined in the final artifact), and
/// its paths go through `::nats_callout_sdk::__private` so the plugin needs no direct
/// wit-bindgen dependency.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit/v0.3.0",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::nats_callout_sdk::__private::bindings",
        runtime_path: "::nats_callout_sdk::__private::wit_bindgen::rt",
    });
}

pub use bindings::exports::nats_callout::plugin::authenticator::Guest;
use bindings::nats_callout::plugin::{host as wit_host, types as wit};
pub use wit::{
    AuthRequest as WitAuthRequest, Decision as WitDecision, PluginInfo as WitPluginInfo,
};

/// `init` export. Also routes panics to the host's log first: a panic traps the
/// instance, and the trap alone does not say why.
pub fn init<P: Plugin>(slot: &OnceLock<P>, config: String) -> Result<WitPluginInfo, String> {
    std::panic::set_hook(Box::new(|info| {
        wit_host::log(wit::LogLevel::Error, &format!("plugin panicked: {info}"));
    }));
    let (credentials, reads) = crate::glue::init(slot, &config)?;
    let parts = [
        (reads.server, wit::RequestParts::SERVER),
        (reads.client, wit::RequestParts::CLIENT),
        (reads.connect, wit::RequestParts::CONNECT),
        (reads.tls, wit::RequestParts::TLS),
    ]
    .into_iter()
    .filter(|(read, _)| *read)
    .fold(wit::RequestParts::empty(), |all, (_, part)| all | part);
    Ok(WitPluginInfo {
        credentials: credentials.into_iter().map(wit_kind).collect(),
        reads: parts,
    })
}

/// `authenticate` export: convert, decide, convert back.
pub fn authenticate<P: Plugin>(slot: &OnceLock<P>, request: WitAuthRequest) -> WitDecision {
    crate::glue::authenticate(slot, &request.into(), &ComponentHost).into()
}

/// [`Host`] backed by the component's imports.
struct ComponentHost;

impl Host for ComponentHost {
    fn log(&self, level: LogLevel, message: &str) {
        wit_host::log(level.into(), message);
    }

    fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        wit_host::verify_nkey_signature(public_key, payload, signature)
    }

    fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        verified(wit_host::verify_jwt(token, None))
    }

    fn verify_jwt_claims(&self, token: &str, claims: &[String]) -> Result<VerifiedJwt, String> {
        verified(wit_host::verify_jwt(token, Some(claims)))
    }

    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        wit_host::verify_certificate_chain(chain)
    }

    fn verify_password_hash(&self, password: &str, hash: &str) -> Result<bool, String> {
        wit_host::verify_password_hash(password, hash)
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        wit_host::cache_get(key)
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl: std::time::Duration) {
        wit_host::cache_set(
            key,
            value,
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        );
    }

    #[cfg(feature = "http")]
    fn http(&self, request: &http::Request) -> Result<http::Response, String> {
        send(request)
    }

    #[cfg(not(feature = "http"))]
    fn http(&self, _request: &http::Request) -> Result<http::Response, String> {
        Err("outbound HTTP needs the plugin built with nats-callout-sdk's feature \"http\"".into())
    }
}

fn verified(v: Result<wit::VerifiedJwt, String>) -> Result<VerifiedJwt, String> {
    v.map(|v| VerifiedJwt {
        claims_json: v.claims_json,
        expires_at: v.expires_at,
    })
}

/// A wasi:http error as a plugin's deny reason says it.
#[cfg(feature = "http")]
fn describe(e: &wasip2::http::types::ErrorCode) -> String {
    use wasip2::http::types::ErrorCode as E;
    match e {
        E::HttpRequestDenied => "denied: not a host in the plugin's allowed_outbound_hosts".into(),
        E::ConnectionRefused => "connection refused".into(),
        E::ConnectionTimeout | E::HttpResponseTimeout => "timed out".into(),
        E::HttpRequestBodySize(_) => "request body too large".into(),
        E::HttpResponseBodySize(_) => "response body too large".into(),
        E::HttpProtocolError => "HTTP protocol error (or outbound HTTP not available here)".into(),
        other => format!("{other:?}"),
    }
}

/// [`Host::http`] over wasi:http/outgoing-handler: write the request, wait for the
/// response (the host bounds the wait by the call's deadline), read its body whole.
#[cfg(feature = "http")]
fn send(request: &http::Request) -> Result<http::Response, String> {
    use wasip2::http::types::{
        Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    let (scheme, authority, path) = request.url_parts()?;
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| format!("request headers: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(format!("scheme {other:?} is neither http nor https")),
    };
    let invalid = |what: &str| format!("invalid {what} in {:?}", request.url);
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let body = outgoing
        .body()
        .map_err(|()| "the request body is taken".to_owned())?;
    let future = wasip2::http::outgoing_handler::handle(outgoing, None)
        .map_err(|e| format!("request refused: {}", describe(&e)))?;
    {
        let stream = body
            .write()
            .map_err(|()| "the request body cannot be written".to_owned())?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| format!("request body: {e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("HTTP request failed: {}", describe(&e))),
        Some(Err(())) | None => return Err("no HTTP response".into()),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| "the response body is taken".to_owned())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the response body cannot be read".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response body: {e:?}")),
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(http::Response {
        status,
        headers,
        body,
    })
}

fn wit_kind(kind: CredentialKind) -> wit::CredentialKind {
    match kind {
        CredentialKind::None => wit::CredentialKind::None,
        CredentialKind::BearerToken => wit::CredentialKind::BearerToken,
        CredentialKind::UserPassword => wit::CredentialKind::UserPassword,
        CredentialKind::Nkey => wit::CredentialKind::Nkey,
        CredentialKind::Certificate => wit::CredentialKind::Certificate,
        CredentialKind::UserJwt => wit::CredentialKind::UserJwt,
    }
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => wit::LogLevel::Trace,
            LogLevel::Debug => wit::LogLevel::Debug,
            LogLevel::Info => wit::LogLevel::Info,
            LogLevel::Warn => wit::LogLevel::Warn,
            LogLevel::Error => wit::LogLevel::Error,
        }
    }
}

impl From<wit::Credential> for Credential {
    fn from(c: wit::Credential) -> Self {
        match c {
            wit::Credential::None => Credential::None,
            wit::Credential::BearerToken(t) => Credential::BearerToken(Secret::new(t)),
            wit::Credential::UserPassword(up) => Credential::UserPassword {
                username: up.username,
                password: Secret::new(up.password),
            },
            wit::Credential::Nkey(key) => Credential::Nkey(key),
            wit::Credential::Certificate => Credential::Certificate,
            wit::Credential::UserJwt(jwt) => Credential::UserJwt(Secret::new(jwt)),
        }
    }
}

impl From<wit::AuthRequest> for AuthRequest {
    /// The parts the plugin does not read arrive as `None` and stay empty here.
    fn from(r: wit::AuthRequest) -> Self {
        let mut request = AuthRequest::default();
        request.route = r.route;
        request.credential = r.credential.into();
        request.user_nkey = r.user_nkey;
        if let Some(s) = r.server {
            let server = &mut request.server;
            server.name = s.name;
            server.host = s.host;
            server.id = s.id;
            server.version = s.version;
            server.cluster = s.cluster;
            server.tags = s.tags;
        }
        if let Some(c) = r.client {
            let client = &mut request.client;
            client.host = c.host;
            client.id = c.id;
            client.user = c.user;
            client.name = c.name;
            client.tags = c.tags;
            client.name_tag = c.name_tag;
            client.kind = c.kind;
            client.client_type = c.client_type;
            client.mqtt_id = c.mqtt_id;
            client.nonce = c.nonce;
        }
        if let Some(o) = r.connect {
            let connect = &mut request.connect;
            connect.name = o.name;
            connect.lang = o.lang;
            connect.version = o.version;
            connect.protocol = o.protocol;
        }
        request.tls = r.tls.map(|t| {
            let mut tls = ClientTls::default();
            tls.version = t.version;
            tls.cipher = t.cipher;
            tls.verified_chain = t.verified_chain.into_iter().map(certificate).collect();
            tls
        });
        request
    }
}

fn certificate(c: wit::Certificate) -> Certificate {
    let mut out = Certificate::default();
    out.pem = c.pem;
    out.subject = c.subject;
    out.common_names = c.common_names;
    out.dns_sans = c.dns_sans;
    out.uri_sans = c.uri_sans;
    out.email_sans = c.email_sans;
    out.ip_sans = c.ip_sans;
    out.not_before = c.not_before;
    out.not_after = c.not_after;
    out.fingerprint_sha256 = c.fingerprint_sha256;
    out
}

impl From<Permission> for wit::Permission {
    fn from(p: Permission) -> Self {
        wit::Permission {
            allow: p.allow,
            deny: p.deny,
        }
    }
}

impl From<Grant> for wit::Grant {
    fn from(g: Grant) -> Self {
        wit::Grant {
            account: g.account,
            name: g.name,
            publish: g.publish.into(),
            subscribe: g.subscribe.into(),
            response: g
                .response
                .map(|r: ResponsePermission| wit::ResponsePermission {
                    max_msgs: r.max_msgs,
                    ttl_millis: r.ttl_millis,
                }),
            expires_at: g.expires_at,
            times: g
                .times
                .into_iter()
                .map(|t| wit::TimeRange {
                    start: t.start,
                    end: t.end,
                })
                .collect(),
            locale: g.locale,
            allowed_connection_types: g
                .allowed_connection_types
                .into_iter()
                .map(|t| match t {
                    ConnectionType::Standard => wit::ConnectionType::Standard,
                    ConnectionType::Websocket => wit::ConnectionType::Websocket,
                    ConnectionType::Mqtt => wit::ConnectionType::Mqtt,
                    ConnectionType::Leafnode => wit::ConnectionType::Leafnode,
                })
                .collect(),
            source_networks: g.source_networks,
            proxy_required: g.proxy_required,
        }
    }
}

impl From<Decision> for wit::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow(grant) => wit::Decision::Allow(grant.into()),
            Decision::Deny(reason) => wit::Decision::Deny(reason),
            Decision::Abstain => wit::Decision::Abstain,
        }
    }
}
