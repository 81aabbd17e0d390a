//! The host capabilities plugins import, implemented natively. Kept independent of the
//! WIT bindings so that the same code serves every WIT version and native plugin builds
//! (benchmarks compare WASM against native through it).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::sync::Arc;

use nkeys::KeyPairType;

use crate::oauth::Jwks;

/// A JWT the host verified: payload JSON and `exp`.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub claims_json: String,
    pub expires_at: i64,
}

/// Capabilities of one plugin. Per-plugin because the JWKS and CA bundle a plugin
/// verifies against are its own configuration.
#[derive(Clone)]
pub struct Capabilities {
    pub plugin: String,
    pub jwks: Option<Arc<Jwks>>,
}

impl Capabilities {
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            jwks: None,
        }
    }

    pub fn with_jwks(mut self, jwks: Option<Arc<Jwks>>) -> Self {
        self.jwks = jwks;
        self
    }

    /// NKey signature as nats-server checks it: URL-safe base64 without padding is
    /// what clients send; standard and padded encodings are accepted as the server does.
    pub fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        let key = crate::keys::public_key(public_key)
            .map_err(|_| "nkey is not a valid public key".to_owned())?;
        if key.key_pair_type() != KeyPairType::User {
            return Err("nkey is not a user key (U...)".into());
        }
        let sig = [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(signature.trim()).ok())
            .ok_or_else(|| "signature is not valid base64".to_owned())?;
        key.verify(payload, &sig)
            .map_err(|_| "signature does not verify".to_owned())
    }

    /// An access token, verified against the configured JWKS with strict rules.
    pub fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        match &self.jwks {
            Some(jwks) => jwks
                .verify(token, crate::request::unix_now())
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no JWKS is configured for plugin {:?} (add a jwks section)",
                self.plugin
            )),
        }
    }

    /// Chain verification needs a CA bundle configured for this plugin (mtls mode).
    pub fn verify_certificate_chain(&self, _chain: &[String]) -> Result<(), String> {
        Err(format!(
            "no CA bundle is configured for plugin {:?} (set mtls.ca_file or AUTH_CALLOUT_MTLS_CA_PATH)",
            self.plugin
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nkey_signatures_in_every_encoding() {
        let kp = nkeys::KeyPair::new_user();
        let caps = Capabilities::new("t");
        let sig = kp.sign(b"nonce").unwrap();
        for engine in [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD] {
            caps.verify_nkey_signature(&kp.public_key(), b"nonce", &engine.encode(&sig))
                .unwrap();
        }
        let other = URL_SAFE_NO_PAD.encode(nkeys::KeyPair::new_user().sign(b"nonce").unwrap());
        assert_eq!(
            caps.verify_nkey_signature(&kp.public_key(), b"nonce", &other),
            Err("signature does not verify".into())
        );
        let account = nkeys::KeyPair::new_account().public_key();
        assert!(caps.verify_nkey_signature(&account, b"n", "x").is_err());
    }
}
