//! The host capabilities plugins import, implemented natively. Kept independent of the
//! WIT bindings so that the same code serves every WIT version and native plugin builds
//! (benchmarks compare WASM against native through it).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::sync::Arc;

use nkeys::KeyPairType;

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
}

impl Capabilities {
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            jwks: None,
            ca: None,
        }
    }

    /// The longest a host call may legitimately wait per plugin call (a JWKS refetch
    /// for an unknown `kid`): how far a call's deadline may move for host time.
    pub fn max_host_wait(&self) -> std::time::Duration {
        self.jwks
            .as_ref()
            .map_or(std::time::Duration::ZERO, |j| j.max_wait())
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

    /// The `verify-nkey-signature` capability: [`verify_nkey_signature`].
    pub fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        verify_nkey_signature(public_key, payload, signature)
    }

    /// An access token, verified against the configured JWKS with strict rules.
    pub async fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        match &self.jwks {
            Some(jwks) => jwks
                .verify(token, crate::pipeline::request::unix_now())
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no JWKS is configured for plugin {:?} (add a jwks section)",
                self.plugin
            )),
        }
    }

    /// A client certificate chain (PEM, leaf first), verified against the configured CA
    /// bundle now: path to a trust anchor, validity, EKU clientAuth. Without a bundle
    /// there is nothing to verify against, which is an error, never a silent success.
    pub fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        match &self.ca {
            Some(ca) => ca
                .verify(chain, crate::pipeline::request::unix_now())
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no CA bundle is configured for plugin {:?} (set mtls.ca_file or AUTH_CALLOUT_MTLS_CA_PATH)",
                self.plugin
            )),
        }
    }
}

/// A user NKey's signature as nats-server checks it: URL-safe base64 without padding is
/// what clients send; standard and padded encodings are accepted as the server does.
pub fn verify_nkey_signature(
    public_key: &str,
    payload: &[u8],
    signature: &str,
) -> Result<(), String> {
    let key = crate::nats::keys::public_key(public_key)
        .map_err(|_| "nkey is not a valid public key".to_owned())?;
    if key.kind() != KeyPairType::User {
        return Err("nkey is not a user key (U...)".into());
    }
    let sig = [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(signature.trim()).ok())
        .ok_or_else(|| "signature is not valid base64".to_owned())?;
    key.verify(payload, &sig)
        .map_err(|_| "signature does not verify".to_owned())
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
        // A good signature by a key of another type is refused for its type.
        let account = nkeys::KeyPair::new_account();
        let signed = URL_SAFE_NO_PAD.encode(account.sign(b"n").unwrap());
        assert_eq!(
            caps.verify_nkey_signature(&account.public_key(), b"n", &signed),
            Err("nkey is not a user key (U...)".into())
        );
    }

    #[test]
    fn chain_verification_needs_a_ca_bundle() {
        let caps = Capabilities::new("mtls/mtls");
        let e = caps.verify_certificate_chain(&[]).unwrap_err();
        assert!(
            e.starts_with("no CA bundle is configured for plugin \"mtls/mtls\""),
            "{e}"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
        let bundle = CaBundle::from_pem(ca.cert.pem().as_bytes()).unwrap();
        let caps = caps.with_ca(Some(Arc::new(bundle)));
        assert_eq!(
            caps.verify_certificate_chain(&[]),
            Err("the certificate chain is empty".into())
        );
        // Real verification is in x509's tests; here: the answer comes from the bundle.
        // rcgen names every simple certificate alike: same issuer name, another key.
        let forged = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        assert_eq!(
            caps.verify_certificate_chain(&[forged.cert.pem()]),
            Err("a signature in the chain does not verify".into())
        );
    }
}
