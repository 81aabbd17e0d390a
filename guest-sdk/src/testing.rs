//! Native test harness (feature `testing`): a [`Host`] double and request fixtures.
//!
//! [`TestHost`] verifies NKey signatures for real with the `nkeys` crate, the way the host
//! and nats-server do, so plugin tests exercise real keys and real signatures; JWT and
//! certificate-chain verification answer whatever the test configures (the real checks
//! live in the host and are tested there).
//!
//! ```
//! use nats_callout_sdk::testing::{RequestBuilder, TestHost, nkeys::KeyPair};
//! use nats_callout_sdk::{AuthMode, Host};
//!
//! let user = KeyPair::new_user();
//! let request = RequestBuilder::new(AuthMode::Nkey)
//!     .signed_by(&user, "nonce-123")
//!     .build();
//! let host = TestHost::new();
//! // What a plugin's `authenticate(&request, &host)` would call:
//! let (nkey, sig) = (request.connect.nkey.unwrap(), request.connect.sig.unwrap());
//! assert!(host.verify_nkey_signature(&nkey, b"nonce-123", &sig).is_ok());
//! ```

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

pub use nkeys;
use nkeys::{KeyPair, KeyPairType};

use crate::{
    AuthMode, AuthRequest, ClientTls, Host, LogLevel, PluginConfig, ServerInfo, VerifiedJwt,
};

type JwtFn = dyn Fn(&str) -> Result<VerifiedJwt, String> + Send + Sync;
type ChainFn = dyn Fn(&[String]) -> Result<(), String> + Send + Sync;

/// A native [`Host`]: real NKey verification, recorded log lines, configurable JWT and
/// certificate-chain answers (both fail by default, so a test that forgets to configure
/// them cannot pass by accident).
pub struct TestHost {
    logs: Mutex<Vec<(LogLevel, String)>>,
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
        verify_nkey_signature(public_key, payload, signature)
    }

    fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        (self.verify_jwt)(token)
    }

    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        (self.verify_chain)(chain)
    }
}

/// What the host does for `verify-nkey-signature`: `public_key` must be a user key, and
/// `signature` base64 in any of the four spellings nats-server accepts (URL-safe or
/// standard alphabet, padded or not).
pub fn verify_nkey_signature(
    public_key: &str,
    payload: &[u8],
    signature: &str,
) -> Result<(), String> {
    let key = KeyPair::from_public_key(public_key).map_err(|_| "invalid nkey public key")?;
    if key.key_pair_type() != KeyPairType::User {
        return Err("nkey is not a user key".into());
    }
    let unpadded = signature.trim_end_matches('=');
    let sig = URL_SAFE_NO_PAD
        .decode(unpadded)
        .or_else(|_| STANDARD_NO_PAD.decode(unpadded))
        .map_err(|_| "signature is not base64")?;
    key.verify(payload, &sig)
        .map_err(|_| "signature does not match".to_string())
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
    pub fn new(mode: AuthMode) -> Self {
        Self {
            request: AuthRequest {
                mode,
                server: ServerInfo {
                    name: "test-server".into(),
                    host: "127.0.0.1".into(),
                    id: KeyPair::new_server().public_key(),
                    version: "2.15.1".into(),
                    cluster: None,
                    tags: Vec::new(),
                },
                user_nkey: KeyPair::new_user().public_key(),
                client: crate::ClientInfo {
                    host: Some("127.0.0.1".into()),
                    id: 1,
                    kind: Some("Client".into()),
                    client_type: Some("nats".into()),
                    ..Default::default()
                },
                connect: crate::ConnectOpts {
                    lang: Some("rust".into()),
                    version: Some("0.0.0".into()),
                    protocol: Some(1),
                    ..Default::default()
                },
                tls: None,
            },
        }
    }

    /// `connect.nkey`.
    pub fn nkey(mut self, public_key: impl Into<String>) -> Self {
        self.request.connect.nkey = Some(public_key.into());
        self
    }

    /// `connect.sig`.
    pub fn sig(mut self, signature: impl Into<String>) -> Self {
        self.request.connect.sig = Some(signature.into());
        self
    }

    /// `client.nonce`.
    pub fn nonce(mut self, nonce: impl Into<String>) -> Self {
        self.request.client.nonce = Some(nonce.into());
        self
    }

    /// Sets `nkey`, `nonce` and a real `sig` of `nonce` by `key`, as a NATS client would.
    pub fn signed_by(self, key: &KeyPair, nonce: &str) -> Self {
        let sig = sign_nonce(key, nonce);
        self.nkey(key.public_key()).nonce(nonce).sig(sig)
    }

    /// `connect.jwt`.
    pub fn jwt(mut self, jwt: impl Into<String>) -> Self {
        self.request.connect.jwt = Some(jwt.into());
        self
    }

    /// `connect.auth_token`.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.request.connect.auth_token = Some(token.into());
        self
    }

    /// `connect.user` and `connect.pass` (also `client.user`, as the server reports it).
    pub fn user_pass(mut self, user: impl Into<String>, pass: impl Into<String>) -> Self {
        let user = user.into();
        self.request.client.user = Some(user.clone());
        self.request.connect.user = Some(user);
        self.request.connect.pass = Some(pass.into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    #[test]
    fn nkey_signatures_in_every_base64_spelling() {
        let user = KeyPair::new_user();
        let raw = user.sign(b"nonce").unwrap();
        let host = TestHost::new();
        for engine in [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD] {
            let sig = engine.encode(&raw);
            host.verify_nkey_signature(&user.public_key(), b"nonce", &sig)
                .unwrap();
        }
        let sig = sign_nonce(&user, "nonce");
        assert_eq!(
            host.verify_nkey_signature(&user.public_key(), b"other", &sig),
            Err("signature does not match".into())
        );
        assert!(
            host.verify_nkey_signature(&KeyPair::new_user().public_key(), b"nonce", &sig)
                .is_err()
        );
        assert_eq!(
            host.verify_nkey_signature(&user.public_key(), b"nonce", "!!"),
            Err("signature is not base64".into())
        );
        let account = KeyPair::new_account();
        let sig = sign_nonce(&account, "nonce");
        assert_eq!(
            host.verify_nkey_signature(&account.public_key(), b"nonce", &sig),
            Err("nkey is not a user key".into())
        );
        assert!(host.verify_nkey_signature("UBAD", b"nonce", &sig).is_err());
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
    fn builder() {
        let user = KeyPair::new_user();
        let r = RequestBuilder::new(AuthMode::Nkey)
            .signed_by(&user, "n1")
            .client_name("c")
            .build();
        assert_eq!(r.connect.nkey.as_deref(), Some(user.public_key().as_str()));
        assert_eq!(r.client.nonce.as_deref(), Some("n1"));
        assert_eq!(r.client.name.as_deref(), Some("c"));
        verify_nkey_signature(&user.public_key(), b"n1", r.connect.sig.as_deref().unwrap())
            .unwrap();
        // Debug never shows credentials.
        let shown = format!("{r:?}");
        assert!(!shown.contains(r.connect.sig.as_deref().unwrap()));
    }
}
