//! The provider's signing keys: fetched (or discovered), cached, refreshed in the
//! background, and refetched on an unknown `kid` at most once per cool-down, with a
//! single fetch in flight. The last good key set outlives a failed refresh for a
//! bounded time (`max_stale`), then tokens are denied with a clear reason.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use prometheus::IntCounter;
use serde::Deserialize as _;

use super::JwksConfig;
use super::token::{Key, Rules, TokenError};
use crate::ops::metrics::Metrics;
use nats_callout_sdk::VerifiedJwt;

#[derive(Debug, thiserror::Error, Clone)]
pub enum JwksError {
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
    #[error("jwks: {0}")]
    Config(String),
}

struct KeySet {
    keys: Vec<Arc<Key>>,
    /// When the keys were last fetched successfully.
    loaded_at: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
}

pub struct Jwks {
    cfg: JwksConfig,
    rules: Rules,
    client: reqwest::Client,
    set: RwLock<KeySet>,
    /// Last unknown-`kid` refetch: no more than one per `unknown_kid_cooldown`.
    last_on_demand: Mutex<Option<Instant>>,
    /// One fetch in flight: concurrent callers wait for it instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
    fetches: IntCounter,
    failures: IntCounter,
}

/// Counters shared by every `Jwks` of a process lifetime (reloads make new ones).
fn counters(metrics: &Metrics) -> (IntCounter, IntCounter) {
    (metrics.jwks_fetches.clone(), metrics.jwks_failures.clone())
}

/// An error and its causes: reqwest's own message leaves out why a redirect failed.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// Redirects followed per fetch: enough for a provider that moved its keys, not a loop.
const MAX_REDIRECTS: usize = 3;

/// Where keys may come from: over TLS, or plain HTTP on loopback only (tests, sidecars).
/// Whoever can answer the key fetch can sign any token, so this holds for the
/// configured URLs, the discovered `jwks_uri` and every redirect alike.
fn secure_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// `url` without its credentials, for a message about it.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Why a key URL is refused, if it is: not [`secure_or_loopback`], or carrying
/// credentials (URLs end up in logs and deny reasons).
pub fn url_problem(url: &url::Url) -> Option<&'static str> {
    if !secure_or_loopback(url) {
        Some("must be https:// (plain http only for loopback addresses)")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry credentials (URLs are logged)")
    } else {
        None
    }
}

impl Jwks {
    pub fn new(cfg: &JwksConfig, metrics: &Metrics) -> Result<Arc<Self>, JwksError> {
        install_crypto_provider();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if let Some(problem) = url_problem(attempt.url()) {
                let message = format!("redirect to {}: {problem}", redacted(attempt.url()));
                attempt.error(message)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(cfg.fetch_timeout)
            .connect_timeout(cfg.fetch_timeout)
            .redirect(redirects)
            .user_agent(concat!("nats-callout/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Config(e.to_string()))?;
        let (fetches, failures) = counters(metrics);
        Ok(Arc::new(Self {
            rules: cfg.rules(),
            cfg: cfg.clone(),
            client,
            set: RwLock::new(KeySet {
                keys: Vec::new(),
                loaded_at: None,
                last_error: None,
            }),
            last_on_demand: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches,
            failures,
        }))
    }

    /// How long [`Jwks::verify`] may wait for a refetch: `unknown_kid_wait`.
    pub fn max_wait(&self) -> Duration {
        self.cfg.unknown_kid_wait
    }

    /// Keys are loaded and not older than `max_stale`.
    pub fn is_loaded(&self) -> bool {
        self.set.read().is_ok_and(|s| {
            s.loaded_at
                .is_some_and(|t| t.elapsed() <= self.cfg.max_stale)
                && !s.keys.is_empty()
        })
    }

    /// Fetch now (single flight). Returns the number of usable keys.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let started = Instant::now();
        let _guard = self.fetching.lock().await;
        // Someone else refreshed while we waited: that fetch is ours too.
        if let Ok(s) = self.set.read()
            && s.loaded_at.is_some_and(|t| t >= started)
        {
            return Ok(s.keys.len());
        }
        self.fetches.inc();
        match self.fetch().await {
            Ok(keys) => {
                let n = keys.len();
                if let Ok(mut s) = self.set.write() {
                    s.keys = keys;
                    s.loaded_at = Some(Instant::now());
                    s.last_error = None;
                }
                tracing::debug!(keys = n, "JWKS refreshed");
                Ok(n)
            }
            Err(e) => {
                self.failures.inc();
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
                if let Ok(mut s) = self.set.write() {
                    s.last_error = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<Key>>, JwksError> {
        let url = match &self.cfg.url {
            Some(u) => u.clone(),
            None => self.discover().await?,
        };
        let body = self.get_capped(&url).await?;
        parse_keys(&body, self.cfg.max_keys).map_err(|message| JwksError::Fetch { url, message })
    }

    /// `jwks_uri` from the issuer's `/.well-known/openid-configuration`.
    async fn discover(&self) -> Result<String, JwksError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let body = self.get_capped(&url).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| JwksError::Fetch {
                url: url.clone(),
                message: format!("not JSON: {e}"),
            })?;
        if doc.get("issuer").and_then(|i| i.as_str()) != Some(self.cfg.issuer.as_str()) {
            return Err(JwksError::Fetch {
                url,
                message: "discovery document names another issuer".into(),
            });
        }
        let err = |message: String| JwksError::Fetch {
            url: url.clone(),
            message,
        };
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|u| u.as_str())
            .ok_or_else(|| err("no jwks_uri".into()))?;
        let parsed = url::Url::parse(jwks_uri).map_err(|e| err(format!("jwks_uri: {e}")))?;
        if let Some(problem) = url_problem(&parsed) {
            return Err(err(format!("jwks_uri {} {problem}", redacted(&parsed))));
        }
        Ok(jwks_uri.to_owned())
    }

    /// GET with the size cap enforced while reading, not after.
    async fn get_capped(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let err = |message: String| JwksError::Fetch {
            url: url.to_owned(),
            message,
        };
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| err(with_sources(&e)))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > self.cfg.max_jwks_bytes {
                return Err(err(format!(
                    "response over the {}-byte cap",
                    self.cfg.max_jwks_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Start from the keys of the set this one replaces (a reload), if they come from
    /// the same place: a reload while the provider is down must not throw away keys
    /// that `max_stale` still allows. They keep their fetch time, so the bound still
    /// counts from the last successful fetch.
    pub fn adopt_keys(&self, previous: &Jwks) {
        if (&self.cfg.url, &self.cfg.issuer) != (&previous.cfg.url, &previous.cfg.issuer) {
            return;
        }
        let (Ok(old), Ok(mut new)) = (previous.set.read(), self.set.write()) else {
            return;
        };
        new.keys = old.keys.clone();
        new.loaded_at = old.loaded_at;
        new.last_error = old.last_error.clone();
    }

    /// Keep the keys fresh until the `Jwks` is dropped (a reload replaced it). The
    /// first fetch is the caller's ([`Jwks::refresh`]); this loop starts after it.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.cfg.refresh_interval;
        // A failed first fetch is retried soon, even when adopted keys still serve.
        let failed = self.set.read().map_or(true, |s| s.last_error.is_some());
        let mut failures = u32::from(failed || !self.is_loaded());
        tokio::spawn(async move {
            loop {
                // After a failure retry sooner (1 s, doubling), never later than `every`.
                let wait = if failures == 0 {
                    every
                } else {
                    every.min(Duration::from_secs(1) * 2u32.saturating_pow(failures.min(6) - 1))
                };
                tokio::time::sleep(wait).await;
                let Some(jwks) = weak.upgrade() else { return };
                let ok = jwks.refresh().await.is_ok();
                failures = if ok { 0 } else { failures.saturating_add(1) };
            }
        })
    }

    /// Verify a token. Called from a plugin's host call; may wait up to
    /// `unknown_kid_wait` for an on-demand refetch of a rotated key (the plugin's fiber
    /// is suspended meanwhile, its deadline credited with the wait).
    pub async fn verify(
        self: &Arc<Self>,
        token: &str,
        now: i64,
        wanted: Option<&[String]>,
    ) -> Result<VerifiedJwt, TokenError> {
        let checked = self.rules.check_header(token)?;
        let key = match self.find(&checked)? {
            Some(k) => k,
            None => {
                self.refetch_for_unknown_kid().await;
                self.find(&checked)?.ok_or_else(|| {
                    TokenError::UnknownKid(checked.kid.clone().unwrap_or_default())
                })?
            }
        };
        let (claims_json, expires_at) = self.rules.verify(token, &checked, &key, now, wanted)?;
        Ok(VerifiedJwt {
            claims_json,
            expires_at,
        })
    }

    /// The key for this header, `None` if its kid is unknown; an error if the key set
    /// is missing or too old to trust.
    fn find(&self, checked: &super::token::Checked) -> Result<Option<Arc<Key>>, TokenError> {
        let s = self
            .set
            .read()
            .map_err(|_| TokenError::JwksUnavailable("key cache poisoned".into()))?;
        let Some(loaded) = s.loaded_at else {
            return Err(TokenError::JwksUnavailable(
                s.last_error
                    .clone()
                    .unwrap_or_else(|| "keys not fetched yet".into()),
            ));
        };
        if loaded.elapsed() > self.cfg.max_stale {
            return Err(TokenError::JwksUnavailable(format!(
                "keys are {}s old (max_stale {}s); last refresh error: {}",
                loaded.elapsed().as_secs(),
                self.cfg.max_stale.as_secs(),
                s.last_error.as_deref().unwrap_or("none")
            )));
        }
        Ok(match &checked.kid {
            Some(kid) => s
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .cloned(),
            None if s.keys.len() == 1 => s.keys.first().cloned(),
            None => return Err(TokenError::NoKid),
        })
    }

    /// Refetch for an unknown kid, at most once per cool-down, waiting a bounded time.
    async fn refetch_for_unknown_kid(self: &Arc<Self>) {
        {
            let Ok(mut last) = self.last_on_demand.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < self.cfg.unknown_kid_cooldown) {
                return;
            }
            *last = Some(Instant::now());
        }
        // The fetch runs on its own task: a provider slower than `unknown_kid_wait`
        // makes this token wait no longer, but its answer still lands for the next one
        // (a fetch cut off with the wait would leave the rotated key unknown for the
        // whole cool-down).
        let jwks = Arc::clone(self);
        let fetch = tokio::spawn(async move {
            let _ = jwks.refresh().await;
        });
        let _ = tokio::time::timeout(self.cfg.unknown_kid_wait, fetch).await;
    }
}

/// reqwest is built without a bundled crypto backend; rustls takes the process-wide
/// default, which we set to ring, the backend async-nats already links.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The usable keys of a JWKS document (`{"keys": [...]}`), at most `max_keys` of them
/// in it; a JWK this host cannot verify with is skipped, none usable is an error. The
/// body comes from the network: fuzzed (fuzz/, FUZZING.md).
pub fn parse_keys(body: &[u8], max_keys: usize) -> Result<Vec<Arc<Key>>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let raw = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| "no \"keys\" array".to_owned())?;
    if raw.len() > max_keys {
        return Err(format!("{} keys, over the cap of {max_keys}", raw.len()));
    }
    let keys: Vec<Arc<Key>> = raw
        .iter()
        .filter_map(|k| usable_key(&Jwk::deserialize(k).ok()?))
        .map(Arc::new)
        .collect();
    if keys.is_empty() {
        return Err("no usable signing key (RSA, EC P-256/P-384 or Ed25519)".into());
    }
    Ok(keys)
}

/// A JWK we can verify with, parsed once and pinned to one algorithm: the JWK's own
/// `alg` when it has one (and it must fit the key type), else the only algorithm its
/// curve allows, else RS256 for RSA. `oct` (HMAC) keys, encryption keys and keys that do
/// not parse are ignored. Public so that the benchmark times the keys the host uses.
pub fn usable_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    let declared = jwk.common.key_algorithm;
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let (alg, params): (_, &'static lc::RsaParameters) = match declared {
                None | Some(KeyAlgorithm::RS256) => {
                    (Algorithm::RS256, &lc::RSA_PKCS1_2048_8192_SHA256)
                }
                Some(KeyAlgorithm::RS384) => (Algorithm::RS384, &lc::RSA_PKCS1_2048_8192_SHA384),
                Some(KeyAlgorithm::RS512) => (Algorithm::RS512, &lc::RSA_PKCS1_2048_8192_SHA512),
                Some(KeyAlgorithm::PS256) => (Algorithm::PS256, &lc::RSA_PSS_2048_8192_SHA256),
                Some(KeyAlgorithm::PS384) => (Algorithm::PS384, &lc::RSA_PSS_2048_8192_SHA384),
                Some(KeyAlgorithm::PS512) => (Algorithm::PS512, &lc::RSA_PSS_2048_8192_SHA512),
                _ => return None,
            };
            let components = RsaPublicKeyComponents {
                n: b64(&rsa.n)?,
                e: b64(&rsa.e)?,
            };
            (alg, components.to_parsed_public_key(params).ok()?)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, algorithm): (_, &'static lc::EcdsaVerificationAlgorithm) =
                match (&ec.curve, declared) {
                    (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => {
                        (Algorithm::ES256, &lc::ECDSA_P256_SHA256_FIXED)
                    }
                    (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => {
                        (Algorithm::ES384, &lc::ECDSA_P384_SHA384_FIXED)
                    }
                    _ => return None,
                };
            // SEC 1 uncompressed point; aws-lc checks it is on the curve.
            let point = [&[0x04][..], &b64(&ec.x)?, &b64(&ec.y)?].concat();
            (alg, ParsedPublicKey::new(algorithm, point).ok()?)
        }
        AlgorithmParameters::OctetKeyPair(okp) => match (&okp.curve, declared) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => (
                Algorithm::EdDSA,
                ParsedPublicKey::new(&lc::ED25519, b64(&okp.x)?).ok()?,
            ),
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => return None,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA512, RsaKeyPair,
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::identity::oauth::token::Rules;

    const NOW: i64 = 1_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `usable_key` on a JWK written as JSON, as the loader calls it.
    fn key(jwk: &Value) -> Option<Key> {
        usable_key(&Jwk::deserialize(jwk).ok()?)
    }

    fn rules() -> Rules {
        Rules {
            issuer: "https://idp".into(),
            audiences: vec!["nats".into()],
            leeway: Duration::ZERO,
            max_lifetime: Duration::from_secs(3600),
            max_token_bytes: 8192,
            required_typ: None,
            allowed_clients: None,
        }
    }

    /// A token for `alg`, signed by `sign`, and the same token with its subject changed.
    fn tokens(alg: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>) -> (String, String) {
        let header = b64(json!({"alg": alg, "kid": "k"}).to_string().as_bytes());
        let claims = json!({"iss": "https://idp", "aud": "nats", "exp": NOW + 60, "sub": "s"});
        let payload = b64(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let sig = b64(&sign(signed.as_bytes()));
        let forged = b64(claims.to_string().replace("\"s\"", "\"t\"").as_bytes());
        (
            format!("{signed}.{sig}"),
            format!("{header}.{forged}.{sig}"),
        )
    }

    /// Every key type the JWKS may hold: its JWK is parsed once, verifies its own tokens
    /// and refuses a tampered payload and the other keys' signatures.
    #[test]
    fn each_key_type_verifies_its_tokens_only() {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let rsa_jwk = |alg: &str| {
            let p = rsa.public_key();
            json!({"kty": "RSA", "kid": "k", "alg": alg,
                "n": b64(p.modulus().big_endian_without_leading_zero()),
                "e": b64(p.exponent().big_endian_without_leading_zero())})
        };
        let rsa_sign = |pad: &'static dyn aws_lc_rs::signature::RsaEncoding| {
            let rsa = &rsa;
            let rng = &rng;
            move |m: &[u8]| {
                let mut sig = vec![0; rsa.public_modulus_len()];
                rsa.sign(pad, rng, m, &mut sig).unwrap();
                sig
            }
        };
        let ec = |alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm, crv: &str| {
            let kp = EcdsaKeyPair::generate(alg).unwrap();
            let point = kp.public_key().as_ref().to_vec();
            let half = (point.len() - 1) / 2;
            let jwk = json!({"kty": "EC", "kid": "k", "crv": crv,
                "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])});
            (jwk, kp)
        };
        let (p256_jwk, p256) = ec(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256");
        let (p384_jwk, p384) = ec(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384");
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_jwk = json!({"kty": "OKP", "kid": "k", "crv": "Ed25519",
            "x": b64(ed.public_key().as_ref())});

        type Signer<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;
        let cases: Vec<(&str, Value, Signer)> = vec![
            (
                "RS256",
                rsa_jwk("RS256"),
                Box::new(rsa_sign(&RSA_PKCS1_SHA256)),
            ),
            (
                "PS512",
                rsa_jwk("PS512"),
                Box::new(rsa_sign(&RSA_PSS_SHA512)),
            ),
            (
                "ES256",
                p256_jwk,
                Box::new(|m| p256.sign(&rng, m).unwrap().as_ref().to_vec()),
            ),
            (
                "ES384",
                p384_jwk,
                Box::new(|m| p384.sign(&rng, m).unwrap().as_ref().to_vec()),
            ),
            ("EdDSA", ed_jwk, Box::new(|m| ed.sign(m).as_ref().to_vec())),
        ];
        let keys: Vec<Key> = cases
            .iter()
            .map(|(alg, jwk, _)| key(jwk).unwrap_or_else(|| panic!("{alg} JWK refused")))
            .collect();
        let r = rules();
        for (i, (alg, _, sign)) in cases.iter().enumerate() {
            let (good, forged) = tokens(alg, sign);
            let checked = r.check_header(&good).unwrap();
            let (claims, exp) = r.verify(&good, &checked, &keys[i], NOW, None).unwrap();
            let claims = nats_callout_sdk::Claims::parse(&claims).unwrap();
            assert_eq!(
                (claims.str("sub").as_deref(), exp),
                (Some("s"), NOW + 60),
                "{alg}"
            );
            // Asked for some claims: only those come back, after all were checked.
            let wanted = ["sub".to_owned(), "missing".to_owned()];
            let (some, _) = r
                .verify(&good, &checked, &keys[i], NOW, Some(&wanted))
                .unwrap();
            assert_eq!(some, r#"{"sub":"s"}"#, "{alg}");
            assert!(
                r.verify(&good, &checked, &keys[i], NOW + 61, Some(&wanted))
                    .is_err(),
                "{alg}: an expired token is refused whatever the plugin asks for"
            );
            assert_eq!(
                r.verify(&forged, &checked, &keys[i], NOW, None).err(),
                Some(TokenError::Signature),
                "{alg}: tampered payload"
            );
            for (j, other) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                let refused = r.verify(&good, &checked, other, NOW, None).unwrap_err();
                assert!(
                    matches!(
                        refused,
                        TokenError::KeyAlgorithm { .. } | TokenError::Signature
                    ),
                    "{alg} token under key {j}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn keys_that_do_not_fit_their_algorithm_are_skipped() {
        let ed = Ed25519KeyPair::generate().unwrap();
        let x = b64(ed.public_key().as_ref());
        for jwk in [
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "ES256", "x": x}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 31])}),
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": x}),
            json!({"kty": "RSA", "alg": "ES256", "n": x, "e": "AQAB"}),
            json!({"kty": "oct", "k": x}),
            json!({"kty": "OKP", "crv": "Ed25519", "use": "enc", "x": x}),
        ] {
            assert!(key(&jwk).is_none(), "{jwk}");
        }
    }

    /// A provider on loopback serving `/.well-known/openid-configuration` with
    /// `jwks_uri`, `/moved` redirecting to `target`, and a one-key JWKS at `/jwks`.
    async fn provider(jwks_uri: &str, target: &str) -> std::net::SocketAddr {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let keys = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k",
                                    "x": b64(ed.public_key().as_ref())}]});
        let doc = json!({"issuer": format!("http://{addr}"),
                         "jwks_uri": jwks_uri.replace("{addr}", &addr.to_string())});
        let target = target.replace("{addr}", &addr.to_string());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { doc.to_string() }),
            )
            .route(
                "/moved",
                get(move || async move {
                    (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, target)],
                    )
                }),
            )
            .route("/jwks", get(move || async move { keys.to_string() }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn config(addr: std::net::SocketAddr, url: Option<&str>) -> JwksConfig {
        let url = url.map_or(String::new(), |u| format!("url: \"http://{addr}{u}\"\n"));
        serde_yaml_ng::from_str(&format!(
            "issuer: \"http://{addr}\"\naudience: nats\nfetch_timeout: 2s\n{url}"
        ))
        .unwrap()
    }

    /// The https rule holds for keys found by discovery and by redirect, not only for
    /// the configured URLs. 192.0.2.1 (TEST-NET) is never contacted: the URL is refused
    /// before any connection is made.
    #[tokio::test]
    async fn discovered_and_redirected_key_urls_must_be_tls_or_loopback() {
        let metrics = Metrics::new();
        let fetch = |addr, url: Option<&'static str>| {
            let metrics = metrics.clone();
            async move {
                Jwks::new(&config(addr, url), &metrics)
                    .unwrap()
                    .refresh()
                    .await
            }
        };
        // Allowed: discovery and a redirect that stay on loopback.
        let addr = provider("http://{addr}/jwks", "http://{addr}/jwks").await;
        assert_eq!(fetch(addr, None).await.unwrap(), 1);
        assert_eq!(fetch(addr, Some("/moved")).await.unwrap(), 1);
        // Refused: plain http elsewhere, or credentials, from discovery or a redirect.
        for (uri, why) in [
            ("http://192.0.2.1/jwks", "must be https"),
            ("https://u:p@192.0.2.1/jwks", "credentials"),
        ] {
            let addr = provider(uri, uri).await;
            let discovered = fetch(addr, None).await.unwrap_err().to_string();
            assert!(
                discovered.contains("jwks_uri") && discovered.contains(why),
                "{uri}: {discovered}"
            );
            let redirected = fetch(addr, Some("/moved")).await.unwrap_err().to_string();
            assert!(
                redirected.contains("redirect to") && redirected.contains(why),
                "{uri}: {redirected}"
            );
            for e in [discovered, redirected] {
                assert!(!e.contains("u:p@"), "credentials in the message: {e}");
            }
        }
        // A redirect loop ends.
        let addr = provider("", "http://{addr}/moved").await;
        let e = fetch(addr, Some("/moved")).await.unwrap_err().to_string();
        assert!(e.contains("too many redirects"), "{e}");
    }

    /// A provider slower than `unknown_kid_wait`: the token that asked for the rotated
    /// key is refused (it waited long enough), but the fetch it started completes, so
    /// the next token with that key verifies, without waiting out the cool-down.
    #[tokio::test]
    async fn a_slow_refetch_still_lands() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (old, new) = (
            Ed25519KeyPair::generate().unwrap(),
            Ed25519KeyPair::generate().unwrap(),
        );
        let jwk = |kid: &str, k: &Ed25519KeyPair| json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(k.public_key().as_ref())});
        let first = json!({"keys": [jwk("old", &old)]}).to_string();
        let rotated = json!({"keys": [jwk("old", &old), jwk("new", &new)]}).to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (first, rotated) = (first.clone(), rotated.clone());
                let n = served.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        return first;
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    rotated
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg: JwksConfig = serde_yaml_ng::from_str(&format!(
            "url: \"http://{addr}/jwks\"\nissuer: \"https://idp\"\naudience: nats\n\
             unknown_kid_wait: 300ms\nunknown_kid_cooldown: 60s\nfetch_timeout: 5s"
        ))
        .unwrap();
        let jwks = Jwks::new(&cfg, &Metrics::new()).unwrap();
        assert_eq!(jwks.refresh().await.unwrap(), 1);

        let header = b64(json!({"alg": "EdDSA", "kid": "new"}).to_string().as_bytes());
        let claims = json!({"iss": "https://idp", "aud": "nats", "exp": NOW + 60});
        let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let token = format!("{signed}.{}", b64(new.sign(signed.as_bytes()).as_ref()));
        assert!(matches!(
            jwks.verify(&token, NOW, None).await,
            Err(TokenError::UnknownKid(_))
        ));
        let mut verified = false;
        for _ in 0..100 {
            if jwks.verify(&token, NOW, None).await.is_ok() {
                verified = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(verified, "the rotated key never arrived");
    }
}
