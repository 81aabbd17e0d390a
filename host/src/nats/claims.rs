//! Typed claims of the three JWTs in an auth-callout exchange, in nats-io/jwt v2's JSON
//! shape. Go omits empty fields, so every field we read is defaulted.

use serde::{Deserialize, Serialize};

use crate::nats::jwt::WithJti;

/// `aud` of every authorization request.
pub const REQUEST_AUDIENCE: &str = "nats-authorization-request";
pub const REQUEST_TYPE: &str = "authorization_request";
pub const RESPONSE_TYPE: &str = "authorization_response";
pub const USER_TYPE: &str = "user";
/// nats-io/jwt v2 claims version.
pub const CLAIMS_VERSION: u32 = 2;

/// Authorization request, as nats-server sends it.
#[derive(Debug, Default, Deserialize)]
pub struct RequestClaims {
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: String,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nats: AuthorizationRequest,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuthorizationRequest {
    #[serde(default)]
    pub server_id: ServerId,
    #[serde(default)]
    pub user_nkey: String,
    #[serde(default)]
    pub client_info: ClientInformation,
    #[serde(default)]
    pub connect_opts: ConnectOptions,
    #[serde(default)]
    pub client_tls: Option<ClientTls>,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub version: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerId {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub xkey: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ClientInformation {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub name_tag: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, rename = "type")]
    pub client_type: String,
    #[serde(default)]
    pub mqtt_id: String,
    #[serde(default)]
    pub nonce: String,
}

/// The client's CONNECT options. Holds credentials: never log it.
#[derive(Default, Deserialize)]
pub struct ConnectOptions {
    #[serde(default)]
    pub jwt: String,
    #[serde(default)]
    pub nkey: String,
    #[serde(default)]
    pub sig: String,
    #[serde(default)]
    pub auth_token: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub pass: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub lang: String,
    #[serde(default)]
    pub version: String,
    /// Absent in a hand-made request; `0` is a real value (the original protocol).
    #[serde(default)]
    pub protocol: Option<i32>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("ConnectOptions")
            .field("jwt", &present(&self.jwt))
            .field("nkey", &self.nkey)
            .field("sig", &present(&self.sig))
            .field("auth_token", &present(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &present(&self.pass))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ClientTls {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cipher: String,
    /// Unverified peer certificates. Decoded only so that we can say they were ignored.
    #[serde(default)]
    pub certs: Vec<String>,
    #[serde(default)]
    pub verified_chains: Vec<Vec<String>>,
}

/// Authorization response we send back. Borrows what it says from the request and the
/// signer: it exists only to be serialised once.
#[derive(Debug, Serialize)]
pub struct ResponseClaims<'a> {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    pub iat: i64,
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub nats: AuthorizationResponse<'a>,
}

#[derive(Debug, Serialize)]
pub struct AuthorizationResponse<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub jwt: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub error: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
}

impl WithJti for ResponseClaims<'_> {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

/// The user JWT that admits one connection. Borrows from the grant, as
/// [`ResponseClaims`] does.
#[derive(Debug, Serialize)]
pub struct UserClaims<'a> {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    pub iat: i64,
    pub iss: &'a str,
    pub sub: &'a str,
    /// Config mode: the target account's name (operator mode places the user in the
    /// account that issued it, and ignores `aud`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub aud: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub nats: User<'a>,
}

#[derive(Debug, Serialize)]
pub struct User<'a> {
    #[serde(rename = "pub")]
    pub publish: Permission<'a>,
    #[serde(rename = "sub")]
    pub subscribe: Permission<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// -1 = unlimited. Sent, since a missing value decodes as 0 in Go (nats-server
    /// applies no user limits to auth-callout users; the account's bind), except by a
    /// scoped signing key, whose users must state no limits at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<i64>,
    /// CIDRs (`CIDRList`: a JSON array of strings).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub src: &'a [String],
    #[serde(skip_serializing_if = "<[TimeRange]>::is_empty")]
    pub times: &'a [TimeRange],
    /// The IANA zone of `times` (Go's `Locale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times_location: Option<&'a str>,
    /// nats-server's names: `STANDARD`, `WEBSOCKET`, `MQTT`, `MQTT_WS`, `LEAFNODE`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy_required: bool,
    /// A user that needs no nonce signature (operator mode's sentinel).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bearer_token: bool,
    /// Operator mode, signed by a signing key: the account that key belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_account: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
}

impl<'a> User<'a> {
    /// A user with no permissions or limits stated, as a scoped signing key must sign
    /// (its template supplies them), or as the base of a plain one.
    pub fn empty() -> Self {
        const NONE: Permission<'static> = Permission {
            allow: &[],
            deny: &[],
        };
        Self {
            publish: NONE,
            subscribe: NONE,
            resp: None,
            subs: None,
            data: None,
            payload: None,
            src: &[],
            times: &[],
            times_location: None,
            allowed_connection_types: Vec::new(),
            proxy_required: false,
            bearer_token: false,
            issuer_account: None,
            kind: USER_TYPE,
            version: CLAIMS_VERSION,
        }
    }
}

pub use nats_callout_sdk::TimeRange;

#[derive(Debug, Serialize)]
pub struct Permission<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub allow: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub deny: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct ResponsePermission {
    pub max: i32,
    /// Go `time.Duration`: nanoseconds.
    pub ttl: i64,
}

impl WithJti for UserClaims<'_> {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go writes `protocol` even when it is 0 (the original protocol): that is a value
    /// to pass on, not an absence.
    #[test]
    fn protocol_zero_is_kept() {
        let o: ConnectOptions = serde_json::from_str(r#"{"protocol":0}"#).unwrap();
        assert_eq!(o.protocol, Some(0));
        let o: ConnectOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(o.protocol, None);
    }
}
