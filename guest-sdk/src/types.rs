//! Plain Rust mirrors of the WIT types (`guest-sdk/wit/v0.1.0/plugin.wit`, interface `types`).
//!
//! Plugins see only these, never wit-bindgen's generated types, so the same plugin code
//! compiles natively (unit tests, benchmarks) and to a component. Field meanings are the
//! WIT's; see the doc comments there. Every type derives serde so tests can keep request
//! fixtures and expected grants as JSON; `#[serde(default)]` lets a fixture name only the
//! fields it cares about.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The authentication mode the host routed a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Username `oauthtoken` with an access token as password, or an `auth_token`.
    Oauth2,
    /// nats-server verified a client certificate chain.
    Mtls,
    /// `nkey` and `sig` in CONNECT.
    Nkey,
    /// No credential at all.
    Noauth,
}

impl AuthMode {
    /// The mode's name as it appears in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Oauth2 => "oauth2",
            AuthMode::Mtls => "mtls",
            AuthMode::Nkey => "nkey",
            AuthMode::Noauth => "noauth",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The nats-server that asked (`server_id` in the request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub name: String,
    pub host: String,
    /// Server id (`N...`).
    pub id: String,
    pub version: String,
    pub cluster: Option<String>,
    pub tags: Vec<String>,
}

/// The connecting client as nats-server describes it (`client_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    pub host: Option<String>,
    pub id: u64,
    /// Username as the server saw it; `[REDACTED]` for tokens.
    pub user: Option<String>,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub name_tag: Option<String>,
    /// `Client` or `Leafnode`.
    pub kind: Option<String>,
    /// `nats`, `websocket` or `mqtt`; absent for leafnodes.
    pub client_type: Option<String>,
    pub mqtt_id: Option<String>,
    /// The server nonce; present only when the client sent a signature.
    pub nonce: Option<String>,
}

/// What the client put in its CONNECT (`connect_opts`).
///
/// `Debug` redacts the credential fields (`jwt`, `sig`, `auth_token`, `pass`) so that
/// logging a request by accident never leaks a secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOpts {
    pub jwt: Option<String>,
    pub nkey: Option<String>,
    pub sig: Option<String>,
    pub auth_token: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: Option<i32>,
}

impl fmt::Debug for ConnectOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(v: &Option<String>) -> Option<&'static str> {
            v.as_ref().map(|_| "<redacted>")
        }
        f.debug_struct("ConnectOpts")
            .field("jwt", &redact(&self.jwt))
            .field("nkey", &self.nkey)
            .field("sig", &redact(&self.sig))
            .field("auth_token", &redact(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &redact(&self.pass))
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// One certificate, parsed by the host from the PEM nats-server sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Certificate {
    pub pem: String,
    /// RFC 4514 subject, e.g. `CN=bms.cpc-1,O=Example`.
    pub subject: String,
    /// Every CN in the subject; more than one is suspicious and policies should deny it.
    pub common_names: Vec<String>,
    pub dns_sans: Vec<String>,
    pub uri_sans: Vec<String>,
    pub email_sans: Vec<String>,
    pub ip_sans: Vec<String>,
    /// Validity window, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Lower-case hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
}

/// TLS state of the connection; only the chain nats-server *verified* is passed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTls {
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// Leaf first. Empty when the server verified nothing.
    pub verified_chain: Vec<Certificate>,
}

/// One decoded and already-verified authorization request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub mode: AuthMode,
    #[serde(default)]
    pub server: ServerInfo,
    /// The per-connection key nats-server generated; the host makes it the user JWT's `sub`.
    #[serde(default)]
    pub user_nkey: String,
    #[serde(default)]
    pub client: ClientInfo,
    #[serde(default)]
    pub connect: ConnectOpts,
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

/// Allow and deny subject lists for one direction (publish or subscribe).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permission {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Request-reply permission: how many responses, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsePermission {
    pub max_msgs: i32,
    pub ttl_millis: u64,
}

/// NATS limits; -1 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
}

/// What an admitted client may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    /// Target account (config mode: an account name in the server's config).
    pub account: String,
    /// Display name shown in server monitoring; empty keeps the client's own.
    pub name: String,
    pub publish: Permission,
    pub subscribe: Permission,
    pub response: Option<ResponsePermission>,
    /// Unix seconds after which the server must drop the connection. The host never extends it.
    pub expires_at: Option<i64>,
    /// Carried in the user JWT, but nats-server (2.10 to 2.15) applies neither `tags`
    /// nor `limits` to auth-callout users: it reads user limits only from a JWT the
    /// client itself presented. The account's and the server's limits are what bind.
    pub tags: Vec<String>,
    /// See `tags`.
    pub limits: Option<Limits>,
}

/// A plugin's answer for one connection.
// One decision per request, moved straight into the export glue: boxing the grant would
// add an allocation and `Box::new` noise to every plugin for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Admit the client with this grant (the host still bounds it by operator policy).
    Allow(Grant),
    /// Refuse the client; the reason goes to logs and to nats-server, so keep secrets out.
    Deny(String),
    /// Not mine: the host asks the next plugin of this mode, and denies if none is left.
    Abstain,
}

impl Decision {
    /// `Decision::Deny` from anything string-like.
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny(reason.into())
    }
}

/// Severity of a [`crate::Host::log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A JWT the host verified against the JWKS configured for this plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifiedJwt {
    /// The payload as a JSON object.
    pub claims_json: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

impl VerifiedJwt {
    /// Parses the claims into the plugin's own type (or `serde_json::Value`). To read a
    /// few claims of many, [`crate::Claims::parse`] avoids building them all.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.claims_json)
    }
}
