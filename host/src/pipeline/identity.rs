//! Who a request says it is, in the fields an operator revokes and an auditor reads:
//! the access token's `jti`, `sub` and client, the NKey (a NATS user JWT's subject
//! too), the certificate's fingerprint, the username. Never a secret: no token, no password.
//!
//! Read by the host itself, before any plugin runs, so that revocation holds whatever
//! plugin decides. The token's claims are read without verifying it: a forged token can
//! only get its own bearer refused, and the plugin still verifies it before any grant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use nats_callout_sdk::CredentialKind;

use crate::nats::claims::AuthorizationRequest;
use crate::pipeline::credential::TOKEN_USERNAME;

/// Tokens longer than this are not read for claims (and no verifier accepts them: the
/// JWKS section's `max_token_bytes` caps them at 8 KiB by default). Bounds the work a
/// hostile token can cause before any plugin refuses it.
const MAX_READ_TOKEN_BYTES: usize = 16 * 1024;

/// A request's identity fields; empty ones are not serialised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The access token's `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The access token's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The access token's client: `azp`, else `client_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The client's NKey (`U...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// SHA-256 of the client certificate's DER, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The username of a user/password credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct TokenClaims {
    jti: Option<String>,
    sub: Option<String>,
    azp: Option<String>,
    client_id: Option<String>,
}

impl Identity {
    /// The identity `req` presents with its credential of `kind` (still in `req`).
    pub fn of(req: &AuthorizationRequest, kind: CredentialKind) -> Self {
        let c = &req.connect_opts;
        let mut id = Identity::default();
        match kind {
            CredentialKind::BearerToken => {
                let token = if c.user == TOKEN_USERNAME {
                    &c.pass
                } else {
                    &c.auth_token
                };
                if let Some(claims) = token_claims(token) {
                    id.jti = claims.jti;
                    id.sub = claims.sub;
                    id.client = claims.azp.or(claims.client_id);
                }
            }
            CredentialKind::Nkey => id.nkey = Some(c.nkey.clone()),
            // A NATS user JWT: its `jti`, and its subject, the NKey the client proves.
            CredentialKind::UserJwt => {
                if let Some(claims) = token_claims(&c.jwt) {
                    id.jti = claims.jti;
                    id.nkey = claims.sub;
                }
            }
            CredentialKind::UserPassword => id.user = Some(c.user.clone()),
            CredentialKind::Certificate => id.cert_sha256 = leaf_fingerprint(req),
            _ => {}
        }
        id
    }

    /// Every field, set or not, in the order of [`KINDS`].
    pub fn values(&self) -> [Option<&str>; 6] {
        [
            self.jti.as_deref(),
            self.sub.as_deref(),
            self.client.as_deref(),
            self.nkey.as_deref(),
            self.cert_sha256.as_deref(),
            self.user.as_deref(),
        ]
    }

    /// The fields that are set, as (kind, value), in the order of [`KINDS`].
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        KINDS
            .into_iter()
            .zip(self.values())
            .filter_map(|(kind, v)| v.map(|v| (kind, v)))
    }

    pub fn is_empty(&self) -> bool {
        self.fields().next().is_none()
    }
}

/// The identity kinds, as revocation lists and audit events name them.
pub const KINDS: [&str; 6] = ["jti", "sub", "client", "nkey", "cert_sha256", "user"];

/// A JWT's payload claims, unverified; `None` for an opaque token.
fn token_claims(token: &str) -> Option<TokenClaims> {
    if token.len() > MAX_READ_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    // A claim of another type (`sub: 5`) makes the whole payload unreadable here; the
    // plugin's verification refuses such a token anyway.
    serde_json::from_slice(&json).ok()
}

/// The verified leaf certificate's fingerprint.
fn leaf_fingerprint(req: &AuthorizationRequest) -> Option<String> {
    let pem = req.client_tls.as_ref()?.verified_chains.first()?.first()?;
    crate::identity::x509::fingerprint(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::claims::ConnectOptions;

    fn token(payload: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    fn bearer(token: String) -> AuthorizationRequest {
        AuthorizationRequest {
            connect_opts: ConnectOptions {
                auth_token: token,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_tokens_identity_without_its_secret() {
        let req = bearer(token(
            r#"{"jti":"t1","sub":"alice","azp":"app","client_id":"other","scope":"x"}"#,
        ));
        let id = Identity::of(&req, CredentialKind::BearerToken);
        assert_eq!(
            id.fields().collect::<Vec<_>>(),
            [("jti", "t1"), ("sub", "alice"), ("client", "app")]
        );
        let req = bearer(token(r#"{"client_id":"svc"}"#));
        assert_eq!(
            Identity::of(&req, CredentialKind::BearerToken)
                .client
                .as_deref(),
            Some("svc")
        );
    }

    #[test]
    fn opaque_and_hostile_tokens_have_no_identity() {
        for t in [
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            token("not json"),
            token(r#"{"sub": 5}"#),
            token(&format!(
                r#"{{"sub":"{}"}}"#,
                "a".repeat(MAX_READ_TOKEN_BYTES)
            )),
        ] {
            assert!(
                Identity::of(&bearer(t.clone()), CredentialKind::BearerToken).is_empty(),
                "{t:.40}"
            );
        }
    }

    #[test]
    fn a_certificate_is_known_by_the_sha256_of_its_der() {
        use sha2::{Digest, Sha256};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["device-7".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let req = AuthorizationRequest {
            client_tls: Some(crate::nats::claims::ClientTls {
                verified_chains: vec![vec![cert.pem()]],
                ..Default::default()
            }),
            ..Default::default()
        };
        let want: String = Sha256::digest(cert.der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = Identity::of(&req, CredentialKind::Certificate);
        assert_eq!(id.cert_sha256.as_deref(), Some(want.as_str()));
        let upper = want.to_uppercase();
        let revoked =
            crate::pipeline::revocation::Revoked::parse(&format!("cert_sha256: [\"{upper}\"]"))
                .unwrap();
        assert!(
            revoked.find(&id).is_some(),
            "upper case, as openssl prints it"
        );
    }

    #[test]
    fn other_credentials() {
        let req = AuthorizationRequest {
            connect_opts: ConnectOptions {
                user: "bob".into(),
                pass: "secret".into(),
                nkey: "UABC".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let id = Identity::of(&req, CredentialKind::UserPassword);
        assert_eq!(id.fields().collect::<Vec<_>>(), [("user", "bob")]);
        assert!(!format!("{id:?}").contains("secret"));
        let id = Identity::of(&req, CredentialKind::Nkey);
        assert_eq!(id.fields().collect::<Vec<_>>(), [("nkey", "UABC")]);
        assert!(Identity::of(&req, CredentialKind::None).is_empty());
        assert!(Identity::of(&req, CredentialKind::Certificate).is_empty());
    }
}
