//! Strict validation of an OAuth2 JWT access token. Every rule is explicit: `iss`,
//! `aud` and `exp` required, `nbf` and `iat` checked, `crit`, embedded keys and HMAC
//! refused, the algorithm pinned per key, the lifetime and the size capped.
//!
//! Signatures are checked with aws-lc-rs keys parsed once, when the JWKS is loaded
//! (`jsonwebtoken::decode` would rebuild an RSA key, Montgomery constants included, on
//! every token: 15-20% of an RS256 verification, BENCHMARKS.md), and the payload is
//! deserialised once, after the signature holds. jsonwebtoken still reads the JWKS.

use std::collections::HashSet;
use std::time::Duration;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use nats_callout_sdk::Claims;
use serde::Deserialize;
use serde_json::Value;

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
    #[error("token payload is not a JSON object: {0}")]
    Payload(String),
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
    #[error("token {0}")]
    AmbiguousClient(#[from] nats_callout_sdk::AmbiguousClient),
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

/// A verification key from the JWKS with the one algorithm it may verify, parsed.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: ParsedPublicKey,
}

/// `aud`: one audience or a list of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
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
    crit: Option<Value>,
    #[serde(default)]
    jwk: Option<Value>,
    #[serde(default)]
    jku: Option<Value>,
    #[serde(default)]
    x5u: Option<Value>,
    #[serde(default)]
    x5c: Option<Value>,
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
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Array(a)) => {
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

    /// Verify signature and claims with `key`; returns the claims (those named in
    /// `wanted`, or all) and `exp`.
    pub fn verify(
        &self,
        token: &str,
        checked: &Checked,
        key: &Key,
        now: i64,
        wanted: Option<&[String]>,
    ) -> Result<(String, i64), TokenError> {
        if key.alg != checked.alg {
            return Err(TokenError::KeyAlgorithm {
                alg: format!("{:?}", checked.alg),
                kid: key.kid.clone().unwrap_or_default(),
                pinned: format!("{:?}", key.alg),
            });
        }
        // `check_header` saw three segments.
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        key.key
            .verify_sig(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let payload =
            std::str::from_utf8(&payload).map_err(|e| TokenError::Payload(e.to_string()))?;
        let mut claims = Claims::parse(payload).map_err(|e| TokenError::Payload(e.to_string()))?;
        let exp = self.check_claims(&claims, now)?;
        if let Some(names) = wanted {
            claims.retain(names);
        }
        // Re-serialised rather than passed on as sent: one value per claim name, so the
        // plugin reads the values checked here.
        let json =
            serde_json::to_string(&claims).map_err(|e| TokenError::Payload(e.to_string()))?;
        Ok((json, exp))
    }

    /// The registered claims, then our own limits; returns `exp`.
    fn check_claims(&self, claims: &Claims<'_>, now: i64) -> Result<i64, TokenError> {
        for required in ["exp", "iss", "aud"] {
            if !claims.contains(required) {
                return Err(TokenError::MissingClaim(required.into()));
            }
        }
        let time = |name: &str| {
            claims
                .get::<i64>(name)
                .transpose()
                .map_err(|_| TokenError::ClaimType(name.into()))
        };
        let exp = time("exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let nbf = time("nbf")?;
        let iat = time("iat")?;
        let leeway = self.leeway.as_secs() as i64;
        if exp < now - leeway {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(TokenError::NotYetValid);
        }
        match claims.str("iss") {
            Some(iss) if iss == self.issuer => {}
            Some(_) => return Err(TokenError::Issuer),
            None => return Err(TokenError::ClaimType("iss".into())),
        }
        let ours = |aud: &str| self.audiences.iter().any(|c| c == aud);
        let aud_ok = match claims.get::<Audience>("aud") {
            Some(Ok(Audience::One(aud))) => ours(&aud),
            Some(Ok(Audience::Many(auds))) => auds.iter().any(|a| ours(a)),
            _ => return Err(TokenError::ClaimType("aud".into())),
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        // Lifetime from the token's own start (iat, else nbf, else now): a stolen
        // long-lived token is bounded even if the provider misbehaves.
        // Saturating: the times are the token's; `iat: -1, exp: i64::MAX` must read as
        // too long, not wrap to a negative lifetime.
        let lifetime = exp.saturating_sub(iat.or(nbf).unwrap_or(now));
        if lifetime > self.max_lifetime.as_secs() as i64 {
            return Err(TokenError::Lifetime(lifetime, self.max_lifetime.as_secs()));
        }
        // Checked with or without an allow-list: the plugin picks its entry by it.
        let client = claims.client()?;
        if let Some(allowed) = &self.allowed_clients {
            let client = client.as_deref().unwrap_or("");
            if !allowed.contains(client) {
                return Err(TokenError::Client(client.to_owned()));
            }
        }
        Ok(exp)
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

    fn token(header: Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode("{}")
        )
    }

    fn header_err(header: Value) -> TokenError {
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
    fn claim_rules() {
        use serde_json::json;
        let now = 1_000_000;
        let check = |overrides: Value| {
            let mut claims =
                json!({"iss": "https://idp", "aud": "nats", "exp": now + 60, "iat": now});
            for (k, v) in overrides.as_object().into_iter().flatten() {
                match v {
                    Value::Null => claims.as_object_mut().map(|m| m.remove(k)),
                    v => claims
                        .as_object_mut()
                        .map(|m| m.insert(k.clone(), v.clone())),
                };
            }
            let json = claims.to_string();
            rules().check_claims(&Claims::parse(&json).unwrap(), now)
        };
        assert_eq!(check(json!({})), Ok(now + 60));
        assert_eq!(check(json!({"aud": ["other", "nats"]})), Ok(now + 60));
        assert_eq!(check(json!({"aud": ["other"]})), Err(TokenError::Audience));
        assert_eq!(check(json!({"aud": []})), Err(TokenError::Audience));
        assert_eq!(
            check(json!({"aud": 7})),
            Err(TokenError::ClaimType("aud".into()))
        );
        assert_eq!(
            check(json!({"aud": ["nats", 7]})),
            Err(TokenError::ClaimType("aud".into()))
        );
        assert_eq!(
            check(json!({"iss": ["https://idp"]})),
            Err(TokenError::ClaimType("iss".into()))
        );
        for c in ["exp", "iss", "aud"] {
            assert_eq!(
                check(json!({ c: null })),
                Err(TokenError::MissingClaim(c.into()))
            );
        }
        assert_eq!(
            check(json!({"exp": 1.5e6})),
            Err(TokenError::ClaimType("exp".into()))
        );
        assert_eq!(
            check(json!({"nbf": "now"})),
            Err(TokenError::ClaimType("nbf".into()))
        );
        // Leeway (5 s) both ways.
        assert_eq!(check(json!({"exp": now - 5})), Ok(now - 5));
        assert_eq!(check(json!({"exp": now - 6})), Err(TokenError::Expired));
        assert!(check(json!({"nbf": now + 5})).is_ok());
        assert_eq!(check(json!({"nbf": now + 6})), Err(TokenError::NotYetValid));
        assert_eq!(
            check(json!({"iat": now + 6})),
            Err(TokenError::IssuedInFuture)
        );
        // Lifetime from iat, else nbf, else now.
        assert_eq!(
            check(json!({"iat": now - 3600, "exp": now + 1})),
            Err(TokenError::Lifetime(3601, 3600))
        );
        assert_eq!(
            check(json!({"iat": null, "nbf": now - 3600, "exp": now + 1})),
            Err(TokenError::Lifetime(3601, 3600))
        );
        assert_eq!(
            check(json!({"iat": null, "exp": now + 3601})),
            Err(TokenError::Lifetime(3601, 3600))
        );
        // The client is azp or client_id, as the plugin reads it; never both, differing.
        assert_eq!(
            check(json!({"azp": "a", "client_id": "b"})),
            Err(TokenError::AmbiguousClient(
                nats_callout_sdk::AmbiguousClient
            ))
        );
        let listed = Rules {
            allowed_clients: Some(["allowed".to_owned()].into()),
            ..rules()
        };
        let json = json!({"iss": "https://idp", "aud": "nats", "exp": now + 60, "iat": now,
                          "azp": "allowed"})
        .to_string();
        assert_eq!(
            listed.check_claims(&Claims::parse(&json).unwrap(), now),
            Ok(now + 60)
        );
        let json = json!({"iss": "https://idp", "aud": "nats", "exp": now + 60, "iat": now,
                          "client_id": "allowed", "azp": "other"})
        .to_string();
        assert_eq!(
            listed.check_claims(&Claims::parse(&json).unwrap(), now),
            Err(TokenError::AmbiguousClient(
                nats_callout_sdk::AmbiguousClient
            )),
            "an allowed client_id does not carry another azp"
        );
        // Times at the ends of the range do not wrap into a short lifetime.
        assert_eq!(
            check(json!({"iat": -1, "exp": i64::MAX})),
            Err(TokenError::Lifetime(i64::MAX, 3600))
        );
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
