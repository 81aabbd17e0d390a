//! Plain Rust mirrors of the WIT types (`guest-sdk/wit/v0.2.0/plugin.wit`, interface `types`).
//!
//! Plugins see only these, never wit-bindgen's generated types, so the same plugin code
//! compiles natively (unit tests, benchmarks) and to a component. Field meanings are the
//! WIT's; see the doc comments there. Every type derives serde so tests can keep request
//! fixtures and expected grants as JSON; `#[serde(default)]` lets a fixture name only the
//! fields it cares about.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The kinds of credential the host tells apart; routes match on them, and a plugin says
/// which it decides ([`crate::Plugin::credentials`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Nothing at all: an anonymous client.
    None,
    /// An `auth_token`, or the password of user `oauthtoken`.
    BearerToken,
    /// Username and password.
    UserPassword,
    /// An NKey whose signature over the server nonce the host verified.
    Nkey,
    /// A client certificate chain nats-server verified.
    Certificate,
    /// A NATS user JWT (operator mode).
    UserJwt,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 6] = [
        CredentialKind::None,
        CredentialKind::BearerToken,
        CredentialKind::UserPassword,
        CredentialKind::Nkey,
        CredentialKind::Certificate,
        CredentialKind::UserJwt,
    ];

    /// The name in configuration, metrics and logs: `bearer-token`, `user-password`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::None => "none",
            CredentialKind::BearerToken => "bearer-token",
            CredentialKind::UserPassword => "user-password",
            CredentialKind::Nkey => "nkey",
            CredentialKind::Certificate => "certificate",
            CredentialKind::UserJwt => "user-jwt",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret value (a token, a password): `Debug` never shows it, and reading it takes a
/// deliberate [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value. Never log it, never put it in a deny reason.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The one credential the client presented. When it sent several, the first of bearer
/// token, certificate, nkey, user JWT, username/password counts; the verified certificate
/// chain is in [`AuthRequest::tls`] whatever the credential.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credential {
    /// Nothing at all: an anonymous client.
    #[default]
    None,
    /// An `auth_token`, or the password of user `oauthtoken` (NATS and MQTT).
    BearerToken(Secret),
    /// Username and password (NATS `user`/`pass`, MQTT username/password).
    UserPassword { username: String, password: Secret },
    /// The client's public NKey (`U...`); the host has verified its signature over the
    /// server nonce.
    Nkey(String),
    /// nats-server verified a client certificate chain (`tls.verified_chain`, leaf
    /// first); with a CA bundle configured, the host has verified it against that too.
    Certificate,
    /// A NATS user JWT, as nats-server passes it in operator mode.
    UserJwt(Secret),
}

impl Credential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::None => CredentialKind::None,
            Credential::BearerToken(_) => CredentialKind::BearerToken,
            Credential::UserPassword { .. } => CredentialKind::UserPassword,
            Credential::Nkey(_) => CredentialKind::Nkey,
            Credential::Certificate => CredentialKind::Certificate,
            Credential::UserJwt(_) => CredentialKind::UserJwt,
        }
    }
}

/// The nats-server that asked (`server_id` in the request).
#[non_exhaustive]
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
#[non_exhaustive]
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

/// What the client put in its CONNECT (`connect_opts`) besides its credential, which is
/// [`AuthRequest::credential`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOpts {
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: Option<i32>,
}

/// One certificate, parsed by the host from the PEM nats-server sent.
#[non_exhaustive]
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
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTls {
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// Leaf first. Empty when the server verified nothing.
    pub verified_chain: Vec<Certificate>,
}

/// One decoded and already-verified authorization request.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthRequest {
    /// The route of the operator's config that matched, whose plugin chain decides.
    pub route: String,
    pub credential: Credential,
    pub server: ServerInfo,
    /// The per-connection key nats-server generated; the host makes it the user JWT's `sub`.
    pub user_nkey: String,
    pub client: ClientInfo,
    pub connect: ConnectOpts,
    pub tls: Option<ClientTls>,
}

impl AuthRequest {
    /// The connection name the client announced (`client_info.name`, else the CONNECT's
    /// `name`): chosen by the client, never verified; fit to narrow a grant, not to
    /// identify anyone.
    pub fn client_name(&self) -> Option<&str> {
        self.client.name.as_deref().or(self.connect.name.as_deref())
    }
}

/// The parts of a request beyond its route, credential and user key. A plugin says which
/// it reads ([`crate::Plugin::reads`]); the host copies only those into each call (from
/// contract 0.3.0), and the others arrive empty. Start from a constant and set fields: a
/// later contract may add parts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestParts {
    /// [`AuthRequest::server`].
    pub server: bool,
    /// [`AuthRequest::client`].
    pub client: bool,
    /// [`AuthRequest::connect`].
    pub connect: bool,
    /// [`AuthRequest::tls`].
    pub tls: bool,
}

impl RequestParts {
    /// Route, credential and user key only.
    pub const NONE: Self = Self {
        server: false,
        client: false,
        connect: false,
        tls: false,
    };

    /// Everything: what a plugin that says nothing gets.
    pub const ALL: Self = Self {
        server: true,
        client: true,
        connect: true,
        tls: true,
    };

    /// What [`AuthRequest::client_name`] reads.
    pub const CLIENT_NAME: Self = Self {
        client: true,
        connect: true,
        ..Self::NONE
    };

    /// The verified certificate chain ([`AuthRequest::tls`]).
    pub const TLS: Self = Self {
        tls: true,
        ..Self::NONE
    };

    /// Empties the parts of `request` not in `self`: the request as the host hands it to
    /// a plugin that reads `self` (the native test harness does the same, so a plugin's
    /// unit tests see what it will see as a component).
    pub fn strip(self, request: &mut AuthRequest) {
        if !self.server {
            request.server = ServerInfo::default();
        }
        if !self.client {
            request.client = ClientInfo::default();
        }
        if !self.connect {
            request.connect = ConnectOpts::default();
        }
        if !self.tls {
            request.tls = None;
        }
    }
}

/// The parts' names, `server, client, connect, tls`, or `none`: for logs.
impl fmt::Display for RequestParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.server, "server"),
            (self.client, "client"),
            (self.connect, "connect"),
            (self.tls, "tls"),
        ]
        .into_iter()
        .filter_map(|(read, name)| read.then_some(name))
        .collect::<Vec<_>>();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
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

/// A daily window in which a client may connect: `HH:MM:SS` to `HH:MM:SS`; a window
/// whose end is before its start spans midnight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

/// How a client connects, as nats-server reports it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    /// A NATS client over TCP (client type `nats`).
    #[serde(alias = "STANDARD")]
    Standard,
    #[serde(alias = "WEBSOCKET")]
    Websocket,
    /// MQTT over TCP or WebSocket.
    #[serde(alias = "MQTT", alias = "MQTT_WS")]
    Mqtt,
    /// A leaf node over TCP or WebSocket.
    #[serde(alias = "LEAFNODE", alias = "LEAFNODE_WS")]
    Leafnode,
}

impl ConnectionType {
    pub const ALL: [ConnectionType; 4] = [
        ConnectionType::Standard,
        ConnectionType::Websocket,
        ConnectionType::Mqtt,
        ConnectionType::Leafnode,
    ];

    /// The type of a client's connection, from nats-server's `client_info`.
    pub fn of(client: &ClientInfo) -> Option<Self> {
        Self::from_nats(
            client.kind.as_deref().unwrap_or_default(),
            client.client_type.as_deref().unwrap_or_default(),
        )
    }

    /// The type from `client_info`'s `kind` and `type`: `Leafnode`, else `nats`,
    /// `websocket` or `mqtt`.
    pub fn from_nats(kind: &str, client_type: &str) -> Option<Self> {
        if kind == "Leafnode" {
            return Some(ConnectionType::Leafnode);
        }
        match client_type {
            "nats" => Some(ConnectionType::Standard),
            "websocket" => Some(ConnectionType::Websocket),
            "mqtt" => Some(ConnectionType::Mqtt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Standard => "standard",
            ConnectionType::Websocket => "websocket",
            ConnectionType::Mqtt => "mqtt",
            ConnectionType::Leafnode => "leafnode",
        }
    }
}

/// What an admitted client may do.
///
/// What nats-server (2.10 to 2.15) does with it for an auth-callout user: it applies the
/// account, the permissions, `response`, `expires_at` (it drops the connection then),
/// `times` with `locale`, `proxy_required` (2.12+) and `name` (as the user name it
/// reports). It does *not* check `allowed_connection_types` or `source_networks` for
/// such users, so the host checks both before it signs. A user's limits (`subs`,
/// `payload`, `data`) and tags are not applied to auth-callout users at all, so the
/// grant has none: bound connections with the account's limits.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    /// Target account (config mode: an account name in the server's config).
    pub account: String,
    /// The user name nats-server reports for the connection; empty keeps its own.
    pub name: String,
    pub publish: Permission,
    pub subscribe: Permission,
    pub response: Option<ResponsePermission>,
    /// Unix seconds after which the server must drop the connection. The host never extends it.
    pub expires_at: Option<i64>,
    /// Daily windows in which the client may connect; empty: any time.
    pub times: Vec<TimeRange>,
    /// IANA time zone of `times` (`Europe/Berlin`); `None`: nats-server's local zone.
    pub locale: Option<String>,
    /// The connection types admitted; empty: any.
    pub allowed_connection_types: Vec<ConnectionType>,
    /// CIDRs the client's address must be in; empty: any.
    pub source_networks: Vec<String>,
    /// Admit the client only through a trusted proxy (nats-server 2.12+).
    pub proxy_required: bool,
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
    /// Not mine: the host asks the next plugin of the route, and denies if none is left.
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
