//! The `jwks` section: where the OpenID provider's keys come from and the rules tokens
//! are checked by.

use std::time::Duration;

use serde::Deserialize;

/// Where the OpenID provider's keys come from and how strictly tokens are checked.
/// Only `issuer` and `audience` are required; the rest are strict defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// JWKS URL. Without it, `jwks_uri` is discovered from the issuer's
    /// `/.well-known/openid-configuration`.
    #[serde(default)]
    pub url: Option<String>,
    /// Expected `iss`, exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    #[serde(deserialize_with = "nats_callout_sdk::format::one_or_many")]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Small: a token a minute past its
    /// expiry is expired.
    #[serde(
        default = "JwksConfig::default_leeway",
        with = "nats_callout_sdk::format::duration"
    )]
    pub leeway: Duration,
    /// Longest accepted `exp - iat`. Access tokens live minutes to hours; a token valid
    /// for longer is a leaked refresh-token-like credential or a misconfigured provider.
    #[serde(
        default = "JwksConfig::default_max_lifetime",
        with = "nats_callout_sdk::format::duration"
    )]
    pub max_token_lifetime: Duration,
    /// Tokens longer than this are refused before any decoding. NATS CONNECT lines are
    /// 4 KiB by default; 8 KiB leaves room for MQTT passwords and raised limits while
    /// keeping hostile inputs (a megabyte of dots) from costing anything.
    #[serde(default = "JwksConfig::default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Require this JOSE `typ`, e.g. `at+jwt` (RFC 9068 access tokens).
    #[serde(default)]
    pub require_typ: Option<String>,
    /// Only these `client_id` (else `azp`) values are accepted.
    #[serde(default)]
    pub allowed_clients: Option<Vec<String>>,
    /// Background refresh period of the key set.
    #[serde(
        default = "JwksConfig::default_refresh",
        with = "nats_callout_sdk::format::duration"
    )]
    pub refresh_interval: Duration,
    /// At most one on-demand refetch per this period when a token names an unknown
    /// `kid`: key rotation is picked up, a flood of made-up kids is not amplified.
    #[serde(
        default = "JwksConfig::default_cooldown",
        with = "nats_callout_sdk::format::duration"
    )]
    pub unknown_kid_cooldown: Duration,
    /// How long a request may wait for that refetch. Part of nats-server's 2 s budget.
    #[serde(
        default = "JwksConfig::default_kid_wait",
        with = "nats_callout_sdk::format::duration"
    )]
    pub unknown_kid_wait: Duration,
    /// The last good keys keep verifying this long after the last successful fetch
    /// when the provider is unreachable; after that, tokens are denied.
    #[serde(
        default = "JwksConfig::default_max_stale",
        with = "nats_callout_sdk::format::duration"
    )]
    pub max_stale: Duration,
    #[serde(
        default = "JwksConfig::default_fetch_timeout",
        with = "nats_callout_sdk::format::duration"
    )]
    pub fetch_timeout: Duration,
    /// Caps on what a (possibly compromised) provider can make us parse.
    #[serde(default = "JwksConfig::default_max_bytes")]
    pub max_jwks_bytes: usize,
    #[serde(default = "JwksConfig::default_max_keys")]
    pub max_keys: usize,
}

impl JwksConfig {
    fn default_leeway() -> Duration {
        Duration::from_secs(10)
    }
    fn default_max_lifetime() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    fn default_max_token_bytes() -> usize {
        8 * 1024
    }
    fn default_refresh() -> Duration {
        Duration::from_secs(300)
    }
    fn default_cooldown() -> Duration {
        Duration::from_secs(30)
    }
    fn default_kid_wait() -> Duration {
        Duration::from_millis(1000)
    }
    fn default_max_stale() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_fetch_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_max_bytes() -> usize {
        256 * 1024
    }
    fn default_max_keys() -> usize {
        32
    }

    pub fn rules(&self) -> super::Rules {
        super::Rules {
            issuer: self.issuer.clone(),
            audiences: self.audience.clone(),
            leeway: self.leeway,
            max_lifetime: self.max_token_lifetime,
            max_token_bytes: self.max_token_bytes,
            required_typ: self.require_typ.clone(),
            allowed_clients: self
                .allowed_clients
                .as_ref()
                .map(|v| v.iter().cloned().collect()),
        }
    }

    /// The first problem found, as (key, message), for the config error that names it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("jwks.{k}"), m.to_owned()));
        if self.issuer.trim().is_empty() {
            return bad("issuer", "must not be empty");
        }
        if self.audience.iter().all(|a| a.trim().is_empty()) {
            return bad("audience", "at least one audience is required");
        }
        for (key, url) in [
            ("url", self.url.as_deref()),
            ("issuer", Some(self.issuer.as_str())),
        ] {
            if let Some(u) = url {
                let problem = match url::Url::parse(u) {
                    Ok(parsed) => super::jwks::url_problem(&parsed),
                    Err(_) => Some("is not a URL"),
                };
                if let Some(problem) = problem {
                    return bad(key, problem);
                }
            }
        }
        if self.max_token_bytes < 512 {
            return bad("max_token_bytes", "must be at least 512");
        }
        if self.max_keys == 0 {
            return bad("max_keys", "must be at least 1");
        }
        if self.refresh_interval.is_zero() {
            return bad("refresh_interval", "must be greater than zero");
        }
        Ok(())
    }
}
