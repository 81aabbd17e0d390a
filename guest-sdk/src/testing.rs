//! Native test harness (feature `testing`): a [`Host`] double and request fixtures.
//!
//! [`TestHost`] verifies NKey signatures and password hashes for real, with the very code
//! the host runs ([`crate::nkey`], [`crate::password`]), so plugin tests exercise real
//! keys, signatures and hashes; JWT and certificate-chain verification answer whatever
//! the test configures (the real checks live in the host and are tested there).
//!
//! ```
//! use nats_callout_sdk::testing::{RequestBuilder, TestHost, sign_nonce, nkeys::KeyPair};
//! use nats_callout_sdk::{Credential, Host};
//!
//! let user = KeyPair::new_user();
//! let request = RequestBuilder::new("nkey").nkey(user.public_key()).build();
//! assert_eq!(request.credential, Credential::Nkey(user.public_key()));
//! // A plugin verifying some other signature of the client's key:
//! let host = TestHost::new();
//! let sig = sign_nonce(&user, "challenge");
//! assert!(host.verify_nkey_signature(&user.public_key(), b"challenge", &sig).is_ok());
//! ```

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use nkeys;
use nkeys::KeyPair;

use crate::{
    AuthRequest, ClientTls, Credential, Decision, Host, LogLevel, Plugin, PluginConfig, Secret,
    VerifiedJwt, http,
};

type JwtFn = dyn Fn(&str) -> Result<VerifiedJwt, String> + Send + Sync;
type ChainFn = dyn Fn(&[String]) -> Result<(), String> + Send + Sync;
type HttpFn = dyn Fn(&http::Request) -> Result<http::Response, String> + Send + Sync;

/// A native [`Host`]: real NKey verification, recorded log lines, configurable JWT and
/// certificate-chain answers (both fail by default, so a test that forgets to configure
/// them cannot pass by accident).
pub struct TestHost {
    logs: Mutex<Vec<(LogLevel, String)>>,
    hashes: Mutex<Vec<String>>,
    cache: Mutex<std::collections::BTreeMap<String, (Vec<u8>, std::time::Instant)>>,
    requests: Mutex<Vec<http::Request>>,
    http: Box<HttpFn>,
    verify_jwt: Box<JwtFn>,
    verify_chain: Box<ChainFn>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    pub fn new() -> Self {
        Self {
            logs: Mutex::new(Vec::new()),
            hashes: Mutex::new(Vec::new()),
            cache: Mutex::new(std::collections::BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            http: Box::new(|_| Err("http is not configured in this TestHost".into())),
            verify_jwt: Box::new(|_| Err("verify_jwt is not configured in this TestHost".into())),
            verify_chain: Box::new(|_| {
                Err("verify_certificate_chain is not configured in this TestHost".into())
            }),
        }
    }

    /// Answers `verify_jwt` with `f`.
    pub fn with_verify_jwt(
        mut self,
        f: impl Fn(&str) -> Result<VerifiedJwt, String> + Send + Sync + 'static,
    ) -> Self {
        self.verify_jwt = Box::new(f);
        self
    }

    /// Answers `verify_certificate_chain` with `f`.
    pub fn with_verify_certificate_chain(
        mut self,
        f: impl Fn(&[String]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.verify_chain = Box::new(f);
        self
    }

    /// Answers `http` with `f` (a stand-in for the registry or endpoint the plugin asks).
    pub fn with_http(
        mut self,
        f: impl Fn(&http::Request) -> Result<http::Response, String> + Send + Sync + 'static,
    ) -> Self {
        self.http = Box::new(f);
        self
    }

    /// The HTTP requests the plugin sent, in order.
    pub fn http_requests(&self) -> Vec<http::Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.lock().clone()
    }

    /// Whether some logged line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.lock().iter().any(|(_, line)| line.contains(needle))
    }

    pub fn clear_logs(&self) {
        self.lock().clear();
    }

    /// The hashes `verify_password_hash` was asked to check, in order: a plugin's
    /// tests can see that an unknown user costs a verification too.
    pub fn verified_hashes(&self) -> Vec<String> {
        self.lock_hashes().clone()
    }

    fn lock_hashes(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(LogLevel, String)>> {
        // A panicking test thread poisons the lock; the log lines are still useful.
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Host for TestHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.lock().push((level, message.to_string()));
    }

    fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        crate::nkey::verify_user_signature(public_key, payload, signature)
            .map_err(|e| e.to_string())
    }

    fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        (self.verify_jwt)(token)
    }

    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        (self.verify_chain)(chain)
    }

    fn verify_password_hash(&self, password: &str, hash: &str) -> Result<bool, String> {
        self.lock_hashes().push(hash.to_owned());
        crate::password::verify(password, hash).map_err(|e| e.to_string())
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, expires)| *expires > std::time::Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl: std::time::Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            key.to_owned(),
            (value.to_vec(), std::time::Instant::now() + ttl),
        );
    }

    fn http(&self, request: &http::Request) -> Result<http::Response, String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        (self.http)(request)
    }
}

/// Signs `nonce` the way NATS clients do (raw URL-safe base64 of the ed25519 signature).
///
/// # Panics
///
/// If `key` has no seed (built from a public key): a bug in the test, not an input.
pub fn sign_nonce(key: &KeyPair, nonce: &str) -> String {
    let sig = key
        .sign(nonce.as_bytes())
        .expect("sign_nonce needs a key pair with a seed");
    URL_SAFE_NO_PAD.encode(sig)
}

/// `PluginConfig` from JSON values, for `Plugin::init` in tests.
pub fn config(permissions: serde_json::Value, settings: serde_json::Value) -> PluginConfig {
    PluginConfig::new(permissions, settings)
}

/// Builds [`AuthRequest`] fixtures: plausible server and client defaults (a client of
/// type `nats`, kind `Client`, a fresh `user_nkey`) plus what each test sets.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    request: AuthRequest,
}

impl RequestBuilder {
    /// A request routed to `route` (the default routes are named `oauth2`, `mtls`,
    /// `nkey`, `password` and `noauth`), presenting no credential until one is set.
    pub fn new(route: impl Into<String>) -> Self {
        let mut request = AuthRequest {
            route: route.into(),
            ..AuthRequest::default()
        };
        request.server.name = "test-server".into();
        request.server.host = "127.0.0.1".into();
        request.server.id = KeyPair::new_server().public_key();
        request.server.version = "2.15.1".into();
        request.user_nkey = KeyPair::new_user().public_key();
        request.client.host = Some("127.0.0.1".into());
        request.client.id = 1;
        request.client.kind = Some("Client".into());
        request.client.client_type = Some("nats".into());
        request.connect.lang = Some("rust".into());
        request.connect.version = Some("0.0.0".into());
        request.connect.protocol = Some(1);
        Self { request }
    }

    /// The credential.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.request.credential = credential;
        self
    }

    /// An NKey credential (the host has checked its signature before a plugin runs).
    pub fn nkey(self, public_key: impl Into<String>) -> Self {
        self.credential(Credential::Nkey(public_key.into()))
    }

    /// A bearer token (an `auth_token`, or the password of user `oauthtoken`).
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.credential(Credential::BearerToken(Secret::new(token)))
    }

    /// Username and password (also `client.user`, as the server reports it).
    pub fn user_password(mut self, user: impl Into<String>, pass: impl Into<String>) -> Self {
        let username = user.into();
        self.request.client.user = Some(username.clone());
        self.credential(Credential::UserPassword {
            username,
            password: Secret::new(pass),
        })
    }

    /// A NATS user JWT.
    pub fn user_jwt(self, jwt: impl Into<String>) -> Self {
        self.credential(Credential::UserJwt(Secret::new(jwt)))
    }

    /// A verified certificate chain (leaf first) as the credential, in `tls`.
    pub fn certificate(self, tls: ClientTls) -> Self {
        self.credential(Credential::Certificate).tls(tls)
    }

    /// `client.nonce`.
    pub fn nonce(mut self, nonce: impl Into<String>) -> Self {
        self.request.client.nonce = Some(nonce.into());
        self
    }

    /// The client's name, in both `connect.name` and `client.name` as nats-server sends it.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.request.client.name = Some(name.clone());
        self.request.connect.name = Some(name);
        self
    }

    /// `client.client_type` (`nats`, `websocket`, `mqtt`).
    pub fn client_type(mut self, client_type: impl Into<String>) -> Self {
        self.request.client.client_type = Some(client_type.into());
        self
    }

    /// `client.mqtt_id`.
    pub fn mqtt_id(mut self, id: impl Into<String>) -> Self {
        self.request.client.mqtt_id = Some(id.into());
        self
    }

    /// `tls`.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.request.tls = Some(tls);
        self
    }

    /// Any other change.
    pub fn with(mut self, f: impl FnOnce(&mut AuthRequest)) -> Self {
        f(&mut self.request);
        self
    }

    pub fn build(self) -> AuthRequest {
        self.request
    }
}

/// `plugin.authenticate(request, host)` on the request as the host would hand it to this
/// plugin: without the parts it does not read ([`Plugin::reads`]). Plugin tests call this
/// rather than `authenticate`, so that reading a part the plugin did not ask for fails
/// here as it would in the component.
pub fn decide<P: Plugin>(plugin: &P, request: &AuthRequest, host: &dyn Host) -> Decision {
    let mut request = request.clone();
    plugin.reads().strip(&mut request);
    plugin.authenticate(&request, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nkey_signatures_as_the_host_checks_them() {
        let user = KeyPair::new_user();
        let host = TestHost::new();
        let sig = sign_nonce(&user, "nonce");
        host.verify_nkey_signature(&user.public_key(), b"nonce", &sig)
            .unwrap();
        assert_eq!(
            host.verify_nkey_signature(&user.public_key(), b"other", &sig),
            Err("signature does not verify".into())
        );
        let account = KeyPair::new_account();
        assert_eq!(
            host.verify_nkey_signature(
                &account.public_key(),
                b"nonce",
                &sign_nonce(&account, "nonce")
            ),
            Err("nkey is not a user key (U...)".into())
        );
    }

    #[test]
    fn logs_and_configurable_answers() {
        let host = TestHost::new().with_verify_jwt(|t| {
            Ok(VerifiedJwt {
                claims_json: format!(r#"{{"sub":"{t}"}}"#),
                expires_at: 1,
            })
        });
        host.info("hello");
        assert!(host.logged("hell"));
        assert_eq!(host.logs(), vec![(LogLevel::Info, "hello".to_string())]);
        let v: serde_json::Value = host.verify_jwt("abc").unwrap().claims().unwrap();
        assert_eq!(v["sub"], "abc");
        assert!(host.verify_certificate_chain(&[]).is_err());
        host.clear_logs();
        assert!(host.logs().is_empty());
    }

    #[test]
    fn decide_hands_a_plugin_only_what_it_reads() {
        struct Names(crate::RequestParts);
        impl Plugin for Names {
            fn init(_: PluginConfig) -> Result<Self, crate::InitError> {
                Ok(Names(crate::RequestParts::ALL))
            }
            fn credentials(&self) -> &[crate::CredentialKind] {
                &[crate::CredentialKind::None]
            }
            fn reads(&self) -> crate::RequestParts {
                self.0
            }
            fn authenticate(&self, request: &AuthRequest, _: &dyn Host) -> Decision {
                Decision::deny(format!(
                    "{:?} {} {:?}",
                    request.client_name(),
                    request.server.version,
                    request.tls.is_some()
                ))
            }
        }
        let request = RequestBuilder::new("r")
            .client_name("c")
            .tls(ClientTls::default())
            .build();
        let host = TestHost::new();
        let said = |parts| decide(&Names(parts), &request, &host);
        assert_eq!(
            said(crate::RequestParts::ALL),
            Decision::deny("Some(\"c\") 2.15.1 true")
        );
        assert_eq!(
            said(crate::RequestParts::CLIENT_NAME),
            Decision::deny("Some(\"c\")  false")
        );
        assert_eq!(
            said(crate::RequestParts::NONE),
            Decision::deny("None  false")
        );
        assert_eq!(said(crate::RequestParts::TLS), Decision::deny("None  true"));
        assert_eq!(
            crate::RequestParts::CLIENT_NAME.to_string(),
            "client, connect"
        );
        assert_eq!(crate::RequestParts::NONE.to_string(), "none");
    }

    #[test]
    fn verify_jwt_claims_hands_back_only_the_claims_asked_for() {
        let host = TestHost::new().with_verify_jwt(|_| {
            Ok(VerifiedJwt {
                claims_json: r#"{"sub":"s","azp":"a","scope":"x y","exp":9}"#.into(),
                expires_at: 9,
            })
        });
        let v = host
            .verify_jwt_claims("t", &["azp".into(), "sub".into(), "tier".into()])
            .unwrap();
        assert_eq!(v.claims_json, r#"{"azp":"a","sub":"s"}"#);
        assert_eq!(v.expires_at, 9);
        // As the host: at most Claims::MAX_ASKED names.
        let many = vec!["sub".to_owned(); crate::Claims::MAX_ASKED + 1];
        assert_eq!(
            host.verify_jwt_claims("t", &many).unwrap_err(),
            "asks for 257 claims; at most 256"
        );
        assert!(host.verify_jwt_claims("t", &many[1..]).is_ok());
    }

    #[test]
    fn builder() {
        let r = RequestBuilder::new("devices")
            .user_password("dev-1", "s3cret")
            .client_name("c")
            .build();
        assert_eq!(r.route, "devices");
        assert_eq!(r.client.user.as_deref(), Some("dev-1"));
        assert_eq!(r.client.name.as_deref(), Some("c"));
        assert_eq!(r.credential.kind(), crate::CredentialKind::UserPassword);
        // Debug never shows credentials.
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            format!("{:?}", RequestBuilder::new("t").bearer_token("tok").build())
                .contains("<redacted>")
        );
    }
}
