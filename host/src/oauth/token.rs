//! Strict validation of an OAuth2 JWT access token. `jsonwebtoken` checks signatures
//! and the registered claims; its defaults are lax (missing `iss`/`aud` accepted, `nbf`
//! unchecked, `crit` ignored), so every rule is set explicitly here, and the rules it
//! has none for (`crit`, embedded keys, `iat`, lifetime, `typ`) are checked before or
//! after it.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Why a token was refused. Each message is distinct so operators can tell attacks,
/// misconfiguration and clock trouble apart in the logs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is {0} bytes, over the {1}-byte cap")]
    TooLong(usize, usize),
    #[error("token is not a JWS (three base64url segments)")]
    Malformed,
    #[error("token header is invalid: {0}")]
    Header(String),
    #[error("token algorithm {0:?} is not accepted (none and HMAC never are)")]
    Algorithm(String),
    #[error("token header has critical extensions {0:?}, none are supported")]
    Critical(Vec<String>),
    #[error("token header embeds a key ({0}); keys only come from the configured JWKS")]
    EmbeddedKey(&'static str),
    #[error("token type {found:?} is not the required {required:?}")]
    Type { found: String, required: String },
    #[error("token has no kid and the JWKS has more than one key")]
    NoKid,
    #[error("token kid {0:?} is not in the JWKS")]
    UnknownKid(String),
    #[error("token algorithm {alg} does not match key {kid:?} (pinned to {pinned})")]
    KeyAlgorithm {
        alg: String,
        kid: String,
        pinned: String,
    },
    #[error("token signature is invalid")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token lifetime {0}s exceeds the maximum {1}s")]
    Lifetime(i64, u64),
    #[error("token issuer is not the configured issuer")]
    Issuer,
    #[error("token audience is not one of the configured audiences")]
    Audience,
    #[error("token is missing the required claim {0:?}")]
    MissingClaim(String),
    #[error("token claim {0:?} has the wrong type")]
    ClaimType(String),
    #[error("token client {0:?} is not in the allowed clients")]
    Client(String),
    #[error("JWKS unavailable: {0}")]
    JwksUnavailable(String),
}

impl TokenError {
    /// Errors that may go away by themselves (the JWKS comes back): never cache a deny
    /// for these.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::JwksUnavailable(_))
    }
}

/// The validation rules, from the `jwks` config section.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub max_lifetime: Duration,
    pub max_token_bytes: usize,
    pub required_typ: Option<String>,
    pub allowed_clients: Option<HashSet<String>>,
}

/// A verification key from the JWKS with the one algorithm it may verify.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The header fields that matter before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
}

/// The header, checked: which key to use, with which algorithm.
pub struct Checked {
    pub kid: Option<String>,
    pub alg: Algorithm,
}

impl Rules {
    /// Everything that can be checked before choosing a key. Runs on attacker input
    /// first: the length cap comes before any decoding.
    pub fn check_header(&self, token: &str) -> Result<Checked, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLong(token.len(), self.max_token_bytes));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| TokenError::Malformed)?;
        let raw: RawHeader =
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Header(e.to_string()))?;
        let alg_name = raw.alg.unwrap_or_default();
        let alg: Algorithm = alg_name
            .parse()
            .map_err(|_| TokenError::Algorithm(alg_name.clone()))?;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(TokenError::Algorithm(alg_name));
        }
        match raw.crit {
            None => {}
            Some(serde_json::Value::Array(a)) if a.is_empty() => {}
            Some(serde_json::Value::Array(a)) => {
                return Err(TokenError::Critical(
                    a.iter().map(|v| v.to_string()).collect(),
                ));
            }
            Some(other) => return Err(TokenError::Critical(vec![other.to_string()])),
        }
        for (present, name) in [
            (raw.jwk.is_some(), "jwk"),
            (raw.jku.is_some(), "jku"),
            (raw.x5u.is_some(), "x5u"),
            (raw.x5c.is_some(), "x5c"),
        ] {
            if present {
                return Err(TokenError::EmbeddedKey(name));
            }
        }
        if let Some(required) = &self.required_typ {
            let found = raw.typ.unwrap_or_default();
            // RFC 9068: `at+jwt`, also spelled `application/at+jwt`.
            let normalised = found.to_ascii_lowercase();
            let normalised = normalised
                .strip_prefix("application/")
                .unwrap_or(&normalised);
            if normalised != required.to_ascii_lowercase() {
                return Err(TokenError::Type {
                    found,
                    required: required.clone(),
                });
            }
        }
        Ok(Checked { kid: raw.kid, alg })
    }

    /// Verify signature and claims with `key`; returns the claims and `exp`.
    pub fn verify(
        &self,
        token: &str,
        checked: &Checked,
        key: &Key,
        now: i64,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, i64), TokenError> {
        if key.alg != checked.alg {
            return Err(TokenError::KeyAlgorithm {
                alg: format!("{:?}", checked.alg),
                kid: key.kid.clone().unwrap_or_default(),
                pinned: format!("{:?}", key.alg),
            });
        }
        let mut v = Validation::new(key.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.leeway = self.leeway.as_secs();
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v)
                .map_err(|e| match map_error(e.kind()) {
                    // jsonwebtoken reports a present-but-mistyped claim (`"exp": "soon"`) as
                    // missing; say what it really is.
                    TokenError::MissingClaim(c) if claim_present(token, &c) => {
                        TokenError::ClaimType(c)
                    }
                    other => other,
                })?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| TokenError::ClaimType("exp".into()))?;
        let leeway = self.leeway.as_secs() as i64;
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_i64()
                .ok_or_else(|| TokenError::ClaimType("iat".into()))?;
            if iat > now + leeway {
                return Err(TokenError::IssuedInFuture);
            }
        }
        // Lifetime from the token's own start (iat, else nbf, else now): a stolen
        // long-lived token is bounded even if the provider misbehaves.
        let start = ["iat", "nbf"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(serde_json::Value::as_i64))
            .unwrap_or(now);
        let lifetime = exp - start;
        if lifetime > self.max_lifetime.as_secs() as i64 {
            return Err(TokenError::Lifetime(lifetime, self.max_lifetime.as_secs()));
        }
        if let Some(allowed) = &self.allowed_clients {
            let client = ["client_id", "azp"]
                .iter()
                .find_map(|c| claims.get(*c).and_then(serde_json::Value::as_str))
                .unwrap_or("");
            if !allowed.contains(client) {
                return Err(TokenError::Client(client.to_owned()));
            }
        }
        Ok((claims, exp))
    }
}

/// Only on the error path: is `claim` in the payload at all?
fn claim_present(token: &str, claim: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
        .is_some_and(|m| m.contains_key(claim))
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::ClaimType(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm("mismatch".into())
        }
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenError::Signature,
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            TokenError::Malformed
        }
        ErrorKind::Json(e) => TokenError::Header(e.to_string()),
        other => TokenError::Header(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            issuer: "https://idp".into(),
            audiences: vec!["nats".into()],
            leeway: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(3600),
            max_token_bytes: 4096,
            required_typ: Some("at+jwt".into()),
            allowed_clients: None,
        }
    }

    fn token(header: serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode("{}")
        )
    }

    fn header_err(header: serde_json::Value) -> TokenError {
        match rules().check_header(&token(header)) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn header_rules() {
        use serde_json::json;
        assert!(
            rules()
                .check_header(&token(json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"})))
                .is_ok()
        );
        assert!(
            rules()
                .check_header(&token(json!({"alg": "ES256", "typ": "application/at+jwt"})))
                .is_ok()
        );
        assert_eq!(
            header_err(json!({"alg": "none", "typ": "at+jwt"})),
            TokenError::Algorithm("none".into())
        );
        assert_eq!(
            header_err(json!({"alg": "HS256", "typ": "at+jwt"})),
            TokenError::Algorithm("HS256".into())
        );
        assert_eq!(
            header_err(json!({"typ": "at+jwt"})),
            TokenError::Algorithm(String::new())
        );
        assert!(matches!(
            header_err(json!({"alg": "RS256", "typ": "at+jwt", "crit": ["b64"]})),
            TokenError::Critical(_)
        ));
        assert!(matches!(
            header_err(json!({"alg": "RS256", "typ": "at+jwt", "crit": "b64"})),
            TokenError::Critical(_)
        ));
        for k in ["jwk", "jku", "x5u", "x5c"] {
            let mut h = json!({"alg": "RS256", "typ": "at+jwt"});
            h[k] = json!("x");
            assert!(matches!(header_err(h), TokenError::EmbeddedKey(n) if n == k));
        }
        assert!(matches!(
            header_err(json!({"alg": "RS256", "typ": "JWT"})),
            TokenError::Type { .. }
        ));
    }

    #[test]
    fn hostile_shapes() {
        let r = rules();
        let dots = ".".repeat(1 << 20);
        assert_eq!(
            r.check_header(&dots).err(),
            Some(TokenError::TooLong(1 << 20, 4096))
        );
        assert_eq!(r.check_header("a.b").err(), Some(TokenError::Malformed));
        assert_eq!(r.check_header("a.b.c.d").err(), Some(TokenError::Malformed));
        assert_eq!(r.check_header("!!.b.c").err(), Some(TokenError::Malformed));
        assert!(matches!(
            r.check_header("bm90anNvbg.b.c").err(),
            Some(TokenError::Header(_))
        ));
    }
}
