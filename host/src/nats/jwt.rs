//! The NATS flavour of JWT: header `{"typ":"JWT","alg":"ed25519-nkey"}`, base64url
//! (no padding) segments, an ed25519 signature by an NKey over `header.payload`.
//!
//! Written here rather than taken from a crate: `jsonwebtoken` has no `ed25519-nkey`
//! algorithm, and the NATS JWT crates on crates.io cover user/account claims only, not
//! the authorization request/response claims this service lives on. The crypto itself
//! is aws-lc-rs' for both: verifying through [`crate::nats::keys::PublicKey`], signing with
//! [`SigningKey`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The only algorithm NATS accepts (`ed25519` is the legacy v1 spelling).
const ALG: &str = "ed25519-nkey";

/// Largest JWT we decode. An authorization request embeds the client's CONNECT options
/// (an MQTT password alone may be 64 KiB) and its PEM certificate chain; nats-server's
/// default `max_payload` (1 MiB) bounds what it can send, so this matches it and only
/// stops oversized input from elsewhere before any decoding.
pub const MAX_JWT_LEN: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is {0} bytes, over the {MAX_JWT_LEN}-byte cap")]
    TooLong(usize),
    #[error("token is not three dot-separated segments")]
    Shape,
    #[error("token {0} is not valid base64url")]
    Base64(&'static str),
    #[error("token {0} is not valid JSON: {1}")]
    Json(&'static str, String),
    #[error("unsupported JWT algorithm {0:?} (only ed25519-nkey)")]
    Algorithm(String),
    #[error("issuer {0:?} is not a valid NKey public key")]
    Issuer(String),
    #[error("signature does not verify against issuer {0}")]
    Signature(String),
    #[error("could not sign: {0}")]
    Sign(String),
}

#[derive(serde::Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
}

/// Claims every NATS JWT has, to find the issuer before the body is trusted.
#[derive(serde::Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: String,
}

/// Decode a token and verify its signature by its own `iss`. Returns the typed claims;
/// checking that `iss` is the *expected* key is the caller's job.
pub fn decode_verified<T: DeserializeOwned>(token: &str) -> Result<T, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLong(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Base64("header"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| JwtError::Json("header", e.to_string()))?;
    if header.alg != ALG && header.alg != "ed25519" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| JwtError::Base64("payload"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Base64("signature"))?;
    let iss: IssuerOnly =
        serde_json::from_slice(&payload).map_err(|e| JwtError::Json("payload", e.to_string()))?;
    let key =
        crate::nats::keys::public_key(&iss.iss).map_err(|_| JwtError::Issuer(iss.iss.clone()))?;
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify(signed.as_bytes(), &sig)
        .map_err(|_| JwtError::Signature(iss.iss))?;
    serde_json::from_slice(&payload).map_err(|e| JwtError::Json("payload", e.to_string()))
}

/// Read the payload without verifying anything: only to address an error response
/// to a request that failed verification. Never trust what this returns.
pub fn decode_unverified<T: DeserializeOwned>(token: &str) -> Option<T> {
    if token.len() > MAX_JWT_LEN {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The fixed header, pre-encoded once.
fn encoded_header() -> &'static str {
    static HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEADER.get_or_init(|| URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#))
}

/// Claims that can carry a `jti`: NATS sets it to the base32 SHA-256 of the claims
/// serialised without it, which makes every token's id content-addressed.
pub trait WithJti: Serialize {
    fn set_jti(&mut self, jti: String);
}

/// Claims as JSON, as tests and fuzz targets write them: `jti` goes into the object (a
/// value that is not an object has nowhere to hold one and is signed as it is).
impl WithJti for serde_json::Value {
    fn set_jti(&mut self, jti: String) {
        if let Some(claims) = self.as_object_mut() {
            claims.insert("jti".into(), jti.into());
        }
    }
}

/// An NKey's ed25519 private key, held by aws-lc-rs for signing. Every connect signs
/// two JWTs (user and response); aws-lc-rs signs in about a third of the time nkeys'
/// ed25519-dalek takes (10 vs 36 µs on the benchmark machine, BENCHMARKS.md). Ed25519
/// signatures are deterministic, so the bytes are the same either way.
pub struct SigningKey {
    key: aws_lc_rs::signature::Ed25519KeyPair,
}

impl SigningKey {
    /// The key of `nkey`, which must hold its seed.
    pub fn from_nkey(nkey: &nkeys::KeyPair) -> Result<Self, JwtError> {
        let seed = nkey.seed().map_err(|e| JwtError::Sign(e.to_string()))?;
        let (_, raw) = nkeys::decode_seed(&seed).map_err(|e| JwtError::Sign(e.to_string()))?;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&raw)
            .map_err(|e| JwtError::Sign(e.to_string()))?;
        Ok(Self { key })
    }

    fn sign(&self, message: &[u8]) -> aws_lc_rs::signature::Signature {
        self.key.sign(message)
    }
}

/// Serialise, stamp `jti`, and sign with `signer` (an account key, `SA...`).
pub fn encode<T: WithJti>(claims: &mut T, signer: &SigningKey) -> Result<String, JwtError> {
    claims.set_jti(String::new());
    let unstamped = serde_json::to_vec(claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let digest = Sha256::digest(&unstamped);
    claims.set_jti(data_encoding::BASE32_NOPAD.encode(&digest));
    let payload = serde_json::to_vec(claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let mut token = String::with_capacity(payload.len() * 4 / 3 + 160);
    token.push_str(encoded_header());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let sig = signer.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct C {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        jti: String,
        iss: String,
        n: u32,
    }
    impl WithJti for C {
        fn set_jti(&mut self, jti: String) {
            self.jti = jti;
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let kp = nkeys::KeyPair::new_account();
        let mut c = C {
            jti: String::new(),
            iss: kp.public_key(),
            n: 7,
        };
        let tok = encode(&mut c, &SigningKey::from_nkey(&kp).unwrap()).unwrap();
        let back: C = decode_verified(&tok).unwrap();
        assert_eq!(back.n, 7);
        assert!(!back.jti.is_empty());

        // Re-sign a different payload with another key but keep the original issuer.
        let other = nkeys::KeyPair::new_account();
        let mut forged = C {
            jti: String::new(),
            iss: kp.public_key(),
            n: 8,
        };
        let forged = encode(&mut forged, &SigningKey::from_nkey(&other).unwrap()).unwrap();
        assert!(matches!(
            decode_verified::<C>(&forged),
            Err(JwtError::Signature(_))
        ));
        assert_eq!(decode_verified::<C>("a.b"), Err(JwtError::Shape));
        assert!(matches!(
            decode_verified::<C>(&"x".repeat(MAX_JWT_LEN + 1)),
            Err(JwtError::TooLong(_))
        ));
    }

    #[test]
    fn signs_exactly_as_nkeys_does() {
        // Ed25519 is deterministic: aws-lc-rs and nkeys' dalek must agree byte for byte.
        let kp = nkeys::KeyPair::new_account();
        let msg = b"header.payload";
        let ours = SigningKey::from_nkey(&kp).unwrap().sign(msg);
        assert_eq!(ours.as_ref(), kp.sign(msg).unwrap().as_slice());
        let public_only = nkeys::KeyPair::from_public_key(&kp.public_key()).unwrap();
        assert!(SigningKey::from_nkey(&public_only).is_err());
    }

    #[test]
    fn rejects_other_algorithms() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#);
        let tok = format!("{h}.{p}.");
        assert_eq!(
            decode_verified::<C>(&tok),
            Err(JwtError::Algorithm("none".into()))
        );
    }
}
