//! The `introspection` plugin: clients connect with an opaque OAuth2 access token (as the
//! oauth2 mode takes a JWT: password of user `oauthtoken`, `auth_token`, or the MQTT
//! password), which only the provider can read. The plugin asks the provider's RFC 7662
//! introspection endpoint about it over outbound HTTP, authenticating as a client of its
//! own, and admits it when the answer is `active: true`, unexpired and for this audience,
//! by the oauth2 plugin's permissions entries ([`nats_callout_token_entries`]).
//!
//! Each answer is kept in the plugin cache, under the token's SHA-256 (never the token),
//! until `min(exp, cache_ttl)`: a reconnect storm of one device makes one introspection,
//! not one per connection. The price is the same as the decision cache's: a token revoked
//! at the provider is still admitted until its cached answer expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nats_callout_sdk::format::{duration, one_or_many};
use nats_callout_sdk::http::{self, Request};
use nats_callout_sdk::{
    AuthRequest, Claims, ConfigError, CredentialKind, Decision, Host, InitError, Plugin,
    PluginConfig, RequestParts, Secret,
};
use nats_callout_token_entries::{TokenEntries, access_token, loggable};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long an answer is kept at most. A minute, like the decision cache: it absorbs
/// reconnect storms, and a revoked token is honoured at most this long.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Longest token sent to the endpoint. Opaque tokens are tens of bytes; JWTs a few
/// hundred to a few thousand. Anything longer is a client sending garbage at us, and
/// it is not worth an outbound request.
const DEFAULT_MAX_TOKEN_LEN: usize = 4096;

/// How this service authenticates to the endpoint (RFC 6749 2.3.1).
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ClientAuth {
    /// `Authorization: Basic`.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
}

/// What to do with a token that looks like a JWT.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum JwtTokens {
    /// Introspect it like any other.
    #[default]
    Introspect,
    /// Leave it to the next plugin of the route (`oauth2`, which verifies it locally).
    Abstain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `https://idp.example.com/oauth2/introspect`; list its host in the plugin's
    /// `allowed_outbound_hosts`.
    endpoint: String,
    /// The client this service introspects as; its secret is the plugin's
    /// `client_secret` secret.
    client_id: String,
    #[serde(default)]
    client_auth: ClientAuth,
    /// One of them must be in the token's `aud`: a token the provider issued for another
    /// API is not a ticket into NATS.
    #[serde(deserialize_with = "one_or_many")]
    audience: Vec<String>,
    /// When set, the answer's `iss` must be this.
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default = "default_cache_ttl", with = "duration")]
    cache_ttl: Duration,
    #[serde(default)]
    jwt_tokens: JwtTokens,
    #[serde(default)]
    max_token_len: Option<usize>,
    #[serde(default)]
    max_template_value_len: Option<usize>,
}

fn default_cache_ttl() -> Duration {
    DEFAULT_CACHE_TTL
}

#[derive(Debug)]
pub struct IntrospectionPlugin {
    settings: Settings,
    client_secret: Secret,
    entries: TokenEntries,
}

impl Plugin for IntrospectionPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let settings: Settings = config.settings()?;
        let probe = Request::get(settings.endpoint.as_str());
        match probe.url_parts() {
            Ok(("https" | "http", _, _)) => {}
            Ok(_) => {
                return Err(ConfigError::at("settings.endpoint", "must be an https URL").into());
            }
            Err(e) => return Err(ConfigError::at("settings.endpoint", e).into()),
        }
        if settings.client_id.is_empty() {
            return Err(ConfigError::at("settings.client_id", "must not be empty").into());
        }
        if settings.audience.is_empty() || settings.audience.iter().any(String::is_empty) {
            return Err(ConfigError::at(
                "settings.audience",
                "name the audience (or audiences) this service's tokens carry",
            )
            .into());
        }
        if settings.max_token_len == Some(0) {
            return Err(ConfigError::at("settings.max_token_len", "must be at least 1").into());
        }
        let client_secret = config.secret("client_secret")?.clone();
        let entries =
            TokenEntries::from_config("introspection", &config, settings.max_template_value_len)?;
        Ok(Self {
            settings,
            client_secret,
            entries,
        })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::BearerToken]
    }

    fn reads(&self) -> RequestParts {
        self.entries.reads()
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let token = match access_token(request) {
            Ok(token) => token,
            Err(decision) => return decision,
        };
        let max = self.settings.max_token_len.unwrap_or(DEFAULT_MAX_TOKEN_LEN);
        if token.len() > max {
            return Decision::deny(format!("access token longer than {max} bytes"));
        }
        if self.settings.jwt_tokens == JwtTokens::Abstain && looks_like_jwt(token) {
            return Decision::Abstain;
        }
        let now = unix_now();
        let key = cache_key(token);
        let cached = host
            .cache_get(&key)
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let (answer, fresh) = match cached {
            Some(answer) => (answer, false),
            None => match self.introspect(token, host) {
                Ok(answer) => (answer, true),
                Err(reason) => {
                    host.warn(&reason);
                    return Decision::deny(reason);
                }
            },
        };
        let Ok(claims) = Claims::parse(&answer) else {
            let reason = "introspection endpoint answered something other than a JSON object";
            host.warn(reason);
            return Decision::deny(reason);
        };
        let expires_at = match self.check(&claims, now) {
            Ok(exp) => exp,
            Err(reason) => return Decision::deny(reason),
        };
        if fresh {
            let left = u64::try_from(expires_at - now).unwrap_or(0);
            let ttl = self.settings.cache_ttl.min(Duration::from_secs(left));
            if !ttl.is_zero() {
                host.cache_set(&key, answer.as_bytes(), ttl);
            }
        }
        self.entries.decide(&claims, expires_at, request, host)
    }
}

impl IntrospectionPlugin {
    /// The endpoint's answer about `token`, as JSON text, or why there is none.
    fn introspect(&self, token: &str, host: &dyn Host) -> Result<String, String> {
        let (id, secret) = (
            self.settings.client_id.as_str(),
            self.client_secret.expose(),
        );
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        if self.settings.client_auth == ClientAuth::ClientSecretPost {
            form.extend([("client_id", id), ("client_secret", secret)]);
        }
        let mut request = Request::post(
            self.settings.endpoint.as_str(),
            "application/x-www-form-urlencoded",
            http::form(&form),
        )
        .header("accept", "application/json");
        if self.settings.client_auth == ClientAuth::ClientSecretBasic {
            request = request.header("authorization", http::basic_auth(id, secret));
        }
        let response = host
            .http(&request)
            .map_err(|e| format!("introspection endpoint unreachable: {e}"))?;
        match response.status {
            200 => {}
            401 | 403 => {
                return Err(format!(
                    "introspection endpoint refused this service (HTTP {}): check client_id and \
                     the client_secret secret",
                    response.status
                ));
            }
            status => return Err(format!("introspection endpoint answered HTTP {status}")),
        }
        String::from_utf8(response.body)
            .map_err(|_| "introspection endpoint answered something other than JSON".to_owned())
    }

    /// The answer's verdict on the token: when it expires, or why it is refused.
    fn check(&self, claims: &Claims<'_>, now: i64) -> Result<i64, String> {
        if !matches!(claims.get::<bool>("active"), Some(Ok(true))) {
            return Err(
                "access token is not active (expired, revoked or unknown to the provider)".into(),
            );
        }
        for (name, accepted) in [
            ("token_type", &["bearer", "access_token"][..]),
            ("token_use", &["access_token"][..]),
        ] {
            if let Some(kind) = claims.str(name)
                && !accepted.iter().any(|a| kind.eq_ignore_ascii_case(a))
            {
                return Err(format!(
                    "not an access token ({name} {:?})",
                    loggable(&kind)
                ));
            }
        }
        let exp = numeric_date(claims, "exp")
            .ok_or("introspection answer has no exp: a connection must not outlive its token")?;
        if exp <= now {
            return Err("access token expired".into());
        }
        if numeric_date(claims, "nbf").is_some_and(|nbf| nbf > now) {
            return Err("access token not valid yet (nbf)".into());
        }
        if let Some(issuer) = &self.settings.issuer {
            match claims.str("iss") {
                Some(iss) if iss == issuer.as_str() => {}
                Some(iss) => {
                    return Err(format!(
                        "access token issued by {:?}, not {issuer:?}",
                        loggable(&iss)
                    ));
                }
                None => return Err("introspection answer has no iss".into()),
            }
        }
        let aud = match claims.get::<Value>("aud") {
            Some(Ok(Value::String(a))) => vec![a],
            Some(Ok(Value::Array(list))) => list
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| self.settings.audience.contains(a)) {
            return Err("access token is not for this audience (aud)".into());
        }
        Ok(exp)
    }
}

/// A NumericDate claim: seconds, possibly with a fraction (RFC 7519 allows it).
fn numeric_date(claims: &Claims<'_>, name: &str) -> Option<i64> {
    match claims.get::<f64>(name)? {
        Ok(t) if t.is_finite() => Some(t as i64),
        _ => None,
    }
}

/// Three base64url parts, the first one a JSON object: a JWS in compact form.
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The plugin cache key of a token: its SHA-256, so the cache holds no token in clear.
fn cache_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("token:{hex}")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

nats_callout_sdk::export_plugin!(IntrospectionPlugin);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nats_callout_sdk::http::Response;
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::json;

    use super::*;

    fn settings() -> Value {
        json!({
            "endpoint": "https://idp.example.com/introspect",
            "client_id": "nats-callout",
            "audience": "nats",
        })
    }

    fn section() -> Value {
        json!({
            "devices": {
                "subject": "*",
                "claims": { "device_id": "*" },
                "account": "DEVICES",
                "permissions": { "pub": { "allow": ["device-state.{{claims.device_id}}"] } }
            }
        })
    }

    fn plugin(settings: Value) -> IntrospectionPlugin {
        IntrospectionPlugin::init(
            config(section(), settings).with_secret("client_secret", "s3cr3t"),
        )
        .unwrap()
    }

    /// An endpoint that knows one token, `good`, and counts its calls.
    fn endpoint(answer: Value) -> (TestHost, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let host = TestHost::new().with_http(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = String::from_utf8_lossy(&req.body).into_owned();
            let answer = if body.contains("token=good&") {
                answer.clone()
            } else {
                json!({"active": false})
            };
            Ok(Response::new(200, answer.to_string()))
        });
        (host, calls)
    }

    fn active() -> Value {
        json!({
            "active": true, "client_id": "sensor-app", "sub": "sensor-app",
            "device_id": "dev-1", "aud": ["nats"], "iss": "https://idp.example.com",
            "token_type": "Bearer", "exp": unix_now() + 3600,
        })
    }

    fn decide(p: &IntrospectionPlugin, host: &TestHost, token: &str) -> Decision {
        let request = RequestBuilder::new("oauth2").bearer_token(token).build();
        testing::decide(p, &request, host)
    }

    fn deny_reason(d: Decision) -> String {
        match d {
            Decision::Deny(r) => r,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn an_active_token_is_admitted_once_per_cache_life() {
        let p = plugin(settings());
        let (host, calls) = endpoint(active());
        for _ in 0..3 {
            let Decision::Allow(g) = decide(&p, &host, "good") else {
                panic!("{:?}", host.logs())
            };
            assert_eq!(g.account, "DEVICES");
            assert_eq!(g.name, "sensor-app");
            assert_eq!(g.publish.allow, ["device-state.dev-1"]);
            assert!(g.expires_at.is_some_and(|e| e > unix_now()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // What was sent: the token, a hint, the client's credentials, never logged.
        let sent = &host.http_requests()[0];
        assert_eq!(sent.url, "https://idp.example.com/introspect");
        assert_eq!(
            String::from_utf8_lossy(&sent.body),
            "token=good&token_type_hint=access_token"
        );
        let auth = http::basic_auth("nats-callout", "s3cr3t");
        assert!(sent.headers.contains(&("authorization".into(), auth)));
        assert!(!host.logs().iter().any(|(_, l)| l.contains("s3cr3t")));

        // Without the cache, every connect asks again; inactive answers are never kept.
        let mut s = settings();
        s["cache_ttl"] = json!("0s");
        let p = plugin(s);
        let (host, calls) = endpoint(active());
        for _ in 0..2 {
            assert!(matches!(decide(&p, &host, "good"), Decision::Allow(_)));
            let r = deny_reason(decide(&p, &host, "revoked"));
            assert!(r.contains("not active"), "{r}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn client_secret_post_puts_the_credentials_in_the_form() {
        let mut s = settings();
        s["client_auth"] = json!("client_secret_post");
        let p = plugin(s);
        let (host, _) = endpoint(active());
        assert!(matches!(decide(&p, &host, "good"), Decision::Allow(_)));
        let sent = &host.http_requests()[0];
        assert!(
            String::from_utf8_lossy(&sent.body)
                .ends_with("&client_id=nats-callout&client_secret=s3cr3t")
        );
        assert!(!sent.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn answers_that_are_not_a_yes_are_a_no() {
        let p = plugin(json!({
            "endpoint": "https://idp.example.com/introspect", "client_id": "nats-callout",
            "audience": ["nats", "mqtt"], "issuer": "https://idp.example.com",
        }));
        let cases = [
            (json!({"active": "true"}), "not active"),
            (json!({"active": true, "aud": "nats"}), "no exp"),
            (
                json!({"active": true, "exp": 1000, "aud": "nats"}),
                "expired",
            ),
            (
                json!({"active": true, "exp": unix_now() + 60, "nbf": unix_now() + 30}),
                "nbf",
            ),
            (
                json!({"active": true, "exp": unix_now() + 60, "iss": "https://evil\n"}),
                "issued by \"https://evil?\"",
            ),
            (
                json!({"active": true, "exp": unix_now() + 60, "iss": "https://idp.example.com", "aud": ["other"]}),
                "audience",
            ),
            (
                json!({"active": true, "exp": unix_now() + 60, "iss": "https://idp.example.com"}),
                "audience",
            ),
            (
                json!({"active": true, "token_type": "refresh_token"}),
                "not an access token",
            ),
            (
                json!({"active": true, "token_use": "id_token"}),
                "not an access token",
            ),
        ];
        for (answer, expected) in cases {
            let (host, _) = endpoint(answer.clone());
            let r = deny_reason(decide(&p, &host, "good"));
            assert!(r.contains(expected), "{answer}: {r}");
        }
        // And no answer at all.
        let failing = [
            (
                Err("https://idp.example.com is not in allowed_outbound_hosts".to_owned()),
                "unreachable",
            ),
            (Ok(Response::new(401, "")), "check client_id"),
            (Ok(Response::new(500, "oops")), "HTTP 500"),
            (Ok(Response::new(200, "<html>")), "other than a JSON object"),
            (Ok(Response::new(200, vec![0xff, 0xfe])), "other than JSON"),
        ];
        for (answer, expected) in failing {
            let host = TestHost::new().with_http(move |_| answer.clone());
            let r = deny_reason(decide(&p, &host, "good"));
            assert!(r.contains(expected), "{r}");
            assert!(host.logged(expected), "{:?}", host.logs());
        }
    }

    #[test]
    fn tokens_it_does_not_introspect() {
        let p = plugin(settings());
        let (host, calls) = endpoint(active());
        assert!(deny_reason(decide(&p, &host, "")).contains("no access token"));
        let r = deny_reason(decide(&p, &host, &"x".repeat(4097)));
        assert!(r.contains("longer than 4096"), "{r}");
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        assert!(matches!(decide(&p, &host, jwt), Decision::Deny(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let mut s = settings();
        s["jwt_tokens"] = json!("abstain");
        let p = plugin(s);
        assert_eq!(decide(&p, &host, jwt), Decision::Abstain);
        assert!(matches!(decide(&p, &host, "good"), Decision::Allow(_)));
        let other = RequestBuilder::new("password")
            .user_password("u", "good")
            .build();
        assert_eq!(testing::decide(&p, &other, &host), Decision::Abstain);
        assert_eq!(p.credentials(), [CredentialKind::BearerToken]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |settings: Value, secret: bool| {
            let mut c = config(section(), settings);
            if secret {
                c = c.with_secret("client_secret", "x");
            }
            IntrospectionPlugin::init(c).unwrap_err().to_string()
        };
        let e = err(settings(), false);
        assert!(e.starts_with("secrets.client_secret"), "{e}");
        let mut s = settings();
        s["endpoint"] = json!("ftp://idp");
        assert!(err(s, true).starts_with("settings.endpoint"));
        let mut s = settings();
        s["audience"] = json!([]);
        assert!(err(s, true).starts_with("settings.audience"));
        let mut s = settings();
        s["cache_ttl"] = json!("soon");
        assert!(err(s, true).starts_with("settings.cache_ttl"));
        let mut s = settings();
        s["client_auth"] = json!("private_key_jwt");
        assert!(err(s, true).starts_with("settings.client_auth"));
        let mut s = settings();
        s.as_object_mut().unwrap().remove("audience");
        assert!(err(s, true).contains("audience"));
        assert!(err(Value::Null, true).contains("settings"));
    }
}
