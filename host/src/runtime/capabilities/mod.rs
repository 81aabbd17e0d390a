//! The host capabilities plugins import, implemented natively, one module each. Kept
//! independent of the WIT bindings: every contract version's `host` interface forwards
//! to these, converting only types.

pub mod cache;
mod certificate;
pub mod http;
mod jwt;
mod log;
mod nkey;
mod password;

use std::sync::Arc;
use std::time::Duration;

pub use nkey::verify_nkey_signature;

use crate::identity::oauth::Jwks;
use crate::identity::x509::CaBundle;

/// A JWT the host verified: payload JSON and `exp`.
pub use nats_callout_sdk::VerifiedJwt;

/// Capabilities of one plugin. Per-plugin because the JWKS and CA bundle a plugin
/// verifies against are its own configuration.
#[derive(Clone)]
pub struct Capabilities {
    pub plugin: String,
    pub jwks: Option<Arc<Jwks>>,
    pub ca: Option<Arc<CaBundle>>,
    /// Outbound HTTP, when the operator listed hosts for the plugin.
    pub outbound: Option<Arc<http::Outbound>>,
    /// The plugin's cache, shared by its instances.
    pub cache: Option<Arc<cache::PluginCache>>,
}

impl Capabilities {
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            jwks: None,
            ca: None,
            outbound: None,
            cache: None,
        }
    }

    pub fn with_cache(mut self, cache: Option<Arc<cache::PluginCache>>) -> Self {
        self.cache = cache;
        self
    }

    pub fn with_outbound(mut self, outbound: Option<Arc<http::Outbound>>) -> Self {
        self.outbound = outbound;
        self
    }

    /// The longest a host call may legitimately wait per plugin call (a JWKS refetch
    /// for an unknown `kid`): how far a call's deadline may move for host time.
    pub fn max_host_wait(&self) -> Duration {
        self.jwks.as_ref().map_or(Duration::ZERO, |j| j.max_wait())
    }

    pub fn with_jwks(mut self, jwks: Option<Arc<Jwks>>) -> Self {
        self.jwks = jwks;
        self
    }

    /// The CA bundle `verify-certificate-chain` checks against (`mtls.ca_file`).
    pub fn with_ca(mut self, ca: Option<Arc<CaBundle>>) -> Self {
        self.ca = ca;
        self
    }
}
