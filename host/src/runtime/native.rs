//! A plugin compiled into the host process: the same plugin crate that builds the
//! component, called directly through the SDK's `Plugin` trait, with the host's native
//! capabilities. The benchmark runs it beside the component to measure what
//! WebAssembly costs; it is not a way to load third-party code.

use std::cell::Cell;

use nats_callout_sdk::{self as sdk, Plugin, PluginConfig};

use crate::pipeline::decision::{Decision, earliest};
use crate::runtime::capabilities::Capabilities;

type Decide = dyn Fn(&sdk::AuthRequest, &dyn sdk::Host) -> Decision + Send + Sync;

pub struct NativePlugin {
    pub name: String,
    pub credentials: Vec<sdk::CredentialKind>,
    decide: Box<Decide>,
    caps: Capabilities,
}

impl NativePlugin {
    /// Initialise `P` with the same JSON the component's `init` would get.
    pub fn new<P: Plugin>(
        name: impl Into<String>,
        init_config: &str,
        caps: Capabilities,
    ) -> Result<Self, String> {
        let config = PluginConfig::from_json(init_config).map_err(|e| e.to_string())?;
        let plugin = P::init(config).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.into(),
            credentials: plugin.credentials().to_vec(),
            decide: Box::new(move |req, host| plugin.authenticate(req, host)),
            caps,
        })
    }

    /// Decide one request, and the earliest expiry of the tokens it had the host verify
    /// (as the component's store keeps it).
    pub fn authenticate(&self, request: &sdk::AuthRequest) -> (Decision, Option<i64>) {
        let host = NativeHost(&self.caps, Cell::new(None));
        let decision = (self.decide)(request, &host);
        (decision, host.1.get())
    }
}

/// The host capabilities as the SDK's `Host` trait, and the earliest expiry of the
/// tokens verified during the call, as the component's store keeps it.
struct NativeHost<'a>(&'a Capabilities, Cell<Option<i64>>);

impl NativeHost<'_> {
    fn jwt(&self, token: &str, wanted: Option<&[String]>) -> Result<sdk::VerifiedJwt, String> {
        // The SDK's `Host` is synchronous. Only an unknown `kid` makes this wait (for a
        // JWKS refetch driven by the runtime's other threads); the benchmark's tokens
        // always carry known ones.
        let verified = futures::executor::block_on(self.0.verify_jwt(token, wanted))?;
        self.1
            .set(earliest(self.1.get(), Some(verified.expires_at)));
        Ok(verified)
    }
}

impl sdk::Host for NativeHost<'_> {
    fn log(&self, level: sdk::LogLevel, message: &str) {
        let plugin = &self.0.plugin;
        match level {
            sdk::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            sdk::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            sdk::LogLevel::Info => tracing::info!(plugin, "{message}"),
            sdk::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            sdk::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        self.0.verify_nkey_signature(public_key, payload, signature)
    }

    fn verify_jwt(&self, token: &str) -> Result<sdk::VerifiedJwt, String> {
        self.jwt(token, None)
    }

    fn verify_jwt_claims(
        &self,
        token: &str,
        claims: &[String],
    ) -> Result<sdk::VerifiedJwt, String> {
        self.jwt(token, Some(claims))
    }

    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        self.0.verify_certificate_chain(chain)
    }

    /// On the calling thread: the benchmark measures the hash itself, not the pool.
    fn verify_password_hash(&self, password: &str, hash: &str) -> Result<bool, String> {
        nats_callout_sdk::password::verify(password, hash).map_err(|e| e.to_string())
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.cache_get(key)
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl: std::time::Duration) {
        self.0.cache_set(key, value.to_vec(), ttl);
    }

    /// The benchmark's native plugins make no requests.
    fn http(&self, _request: &sdk::http::Request) -> Result<sdk::http::Response, String> {
        Err("no outbound HTTP for plugins compiled into the host".into())
    }
}
