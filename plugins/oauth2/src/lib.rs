//! The `oauth2` mode: clients connect with username `oauthtoken` and an OAuth2 access
//! token as password (or as `auth_token`, or as the MQTT password). The host verifies
//! the token against the provider's JWKS (`verify-jwt`, native crypto, strict rules);
//! this plugin only decides which permissions entry the verified claims get.
//!
//! Matching, most specific first:
//! 1. `azp: X`: the token's client (`azp` or `client_id`, which must agree if both are
//!    there; else `sub`) is `X`;
//! 2. `subject: X`: the token's `sub` is `X`;
//! 3. `subject: "*"` (or `azp: "*"`): any token, optionally narrowed by
//!    `claims: { name: value }` (`"*"` = the claim is present). Entries with claim
//!    conditions are tried before bare wildcards; two matches at the same level are
//!    refused as ambiguous rather than resolved by name order.

use std::collections::BTreeMap;

use nats_callout_sdk::{
    AuthRequest, Claims, CompiledEntry, ConfigError, Credential, CredentialKind, Decision, Host,
    InitError, PermissionEntry, Placeholders, Plugin, PluginConfig,
};
use serde::Deserialize;

/// The identifier fields of an oauth2 entry, flattened into [`PermissionEntry`].
#[derive(Debug, Default, Deserialize)]
pub struct OauthIdentity {
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Extra conditions on claims: exact string value, or `"*"` for "present".
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

/// `permissions.oauth2`: entry name to entry.
pub type OauthEntries = BTreeMap<String, PermissionEntry<OauthIdentity>>;

/// Placeholders oauth2 subjects may use.
pub const PLACEHOLDERS: [&str; 4] = ["claims.*", "azp", "sub", "client.name"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Longest value a placeholder may be filled with (characters).
    #[serde(default)]
    max_template_value_len: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
enum Matcher {
    Azp(String),
    Subject(String),
    Any,
}

#[derive(Debug)]
struct Entry {
    name: String,
    matcher: Matcher,
    claims: BTreeMap<String, String>,
    policy: CompiledEntry,
}

#[derive(Debug)]
pub struct OauthPlugin {
    entries: Vec<Entry>,
}

impl Plugin for OauthPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(
                "oauth2 mode needs a permissions.oauth2 section with at least one entry".into(),
            );
        }
        let settings: Option<Settings> = config.settings()?;
        let settings = settings.unwrap_or_default();
        let mut placeholders = Placeholders::new(PLACEHOLDERS);
        if let Some(max) = settings.max_template_value_len {
            if max == 0 {
                return Err(ConfigError::at(
                    "settings.max_template_value_len",
                    "must be at least 1",
                )
                .into());
            }
            placeholders = placeholders.max_value_len(max);
        }
        let raw: OauthEntries = config.permissions()?;
        if raw.is_empty() {
            return Err(ConfigError::at("permissions", "no oauth2 entries configured").into());
        }
        let mut entries = Vec::with_capacity(raw.len());
        for (name, entry) in raw {
            let at = |key: &str| format!("permissions.{name}{key}");
            let id = &entry.identity;
            let matcher = match (id.azp.as_deref(), id.subject.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(
                        ConfigError::at(at(""), "set either azp or subject, not both").into(),
                    );
                }
                (None, None) => {
                    return Err(ConfigError::at(
                        at(""),
                        "needs azp (client id) or subject (\"*\" for any token)",
                    )
                    .into());
                }
                (Some("*"), None) | (None, Some("*")) => Matcher::Any,
                (Some(a), None) if !a.trim().is_empty() => Matcher::Azp(a.to_owned()),
                (None, Some(s)) if !s.trim().is_empty() => Matcher::Subject(s.to_owned()),
                _ => return Err(ConfigError::at(at(""), "azp/subject must not be empty").into()),
            };
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(at(""), e))?;
            let clash = entries
                .iter()
                .find(|e: &&Entry| e.matcher == matcher && e.claims == id.claims);
            if let Some(other) = clash {
                return Err(ConfigError::at(
                    at(""),
                    format!("matches the same tokens as entry {:?}", other.name),
                )
                .into());
            }
            entries.push(Entry {
                name,
                matcher,
                claims: entry.identity.claims,
                policy,
            });
        }
        Ok(Self { entries })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::BearerToken]
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let Credential::BearerToken(token) = &request.credential else {
            return Decision::Abstain;
        };
        let token = token.expose();
        if token.is_empty() {
            return Decision::deny(
                "no access token: connect with username \"oauthtoken\" and the token as password",
            );
        }
        let verified = match host.verify_jwt(token) {
            Ok(v) => v,
            Err(reason) => return Decision::deny(format!("access token rejected: {reason}")),
        };
        let Ok(claims) = Claims::parse(&verified.claims_json) else {
            return Decision::deny("access token claims are not a JSON object");
        };
        let sub = claims.str("sub");
        let sub = sub.as_deref();
        let client = match claims.client() {
            Ok(client) => client,
            Err(e) => return Decision::deny(format!("access token rejected: {e}")),
        };
        let client = client.as_deref().or(sub);
        let Some(identifier) = client else {
            return Decision::deny("access token has neither azp, client_id nor sub");
        };
        let entry = match self.pick(identifier, sub, &claims) {
            Ok(e) => e,
            Err(reason) => {
                host.info(&format!("oauth2 client {}: {reason}", loggable(identifier)));
                return Decision::deny(reason);
            }
        };
        let client_name = request.client_name();
        let filled = entry.policy.grant(|p| match p {
            "azp" => client.map(str::to_owned),
            "sub" => sub.map(str::to_owned),
            "client.name" => client_name.map(str::to_owned),
            other => other.strip_prefix("claims.").and_then(|c| claims.text(c)),
        });
        match filled {
            Ok(mut grant) => {
                grant.name = identifier.to_owned();
                // The connection must not outlive the token it was admitted with.
                grant.expires_at = Some(verified.expires_at);
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("oauth2 entry {:?}: {e}", entry.name)),
        }
    }
}

impl OauthPlugin {
    /// The entry for these claims, by the precedence in the module docs.
    fn pick(&self, client: &str, sub: Option<&str>, claims: &Claims<'_>) -> Result<&Entry, String> {
        let conditions_hold = |e: &&Entry| {
            e.claims.iter().all(|(k, want)| match want.as_str() {
                "*" => claims.present(k),
                _ => claims.text(k).is_some_and(|t| &t == want),
            })
        };
        let levels: [&dyn Fn(&Entry) -> bool; 4] = [
            &|e| matches!(&e.matcher, Matcher::Azp(a) if a == client),
            &|e| matches!(&e.matcher, Matcher::Subject(s) if Some(s.as_str()) == sub),
            &|e| matches!(e.matcher, Matcher::Any) && !e.claims.is_empty(),
            &|e| matches!(e.matcher, Matcher::Any) && e.claims.is_empty(),
        ];
        for level in levels {
            let mut found = self
                .entries
                .iter()
                .filter(|e| level(e))
                .filter(conditions_hold);
            if let Some(first) = found.next() {
                if let Some(second) = found.next() {
                    return Err(format!(
                        "ambiguous: entries {:?} and {:?} both match this token",
                        first.name, second.name
                    ));
                }
                return Ok(first);
            }
        }
        Err("no oauth2 permissions entry matches this token's client".into())
    }
}

/// A client id as it may appear in a log line: verified, but chosen by the provider's
/// admin; keep it short and printable.
fn loggable(id: &str) -> String {
    id.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

nats_callout_sdk::export_plugin!(OauthPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::VerifiedJwt;
    use nats_callout_sdk::testing::{RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    /// The test double of the host's verifier: a "token" is the claims JSON itself;
    /// anything else fails like a bad signature does.
    fn host() -> TestHost {
        TestHost::new().with_verify_jwt(|token| {
            serde_json::from_str::<Value>(token)
                .ok()
                .filter(Value::is_object)
                .map(|v| VerifiedJwt {
                    expires_at: v["exp"].as_i64().unwrap_or(4_000_000_000),
                    claims_json: token.to_owned(),
                })
                .ok_or_else(|| "token signature is invalid".to_owned())
        })
    }

    fn section() -> Value {
        json!({
            "mqtt-client": {
                "azp": "mqtt-client",
                "account": "CSC",
                "permissions": { "pub": { "allow": ["events.>"] }, "sub": { "allow": ["events.>"] } }
            },
            "devices": {
                "subject": "*",
                "claims": { "device_id": "*" },
                "account": "DEVICES",
                "permissions": {
                    "pub": { "allow": ["device-state.{{claims.device_id}}", "_INBOX.>"] },
                    "sub": { "allow": ["device-commands.{{claims.device_id}}", "_INBOX.>"] }
                }
            }
        })
    }

    fn plugin() -> OauthPlugin {
        OauthPlugin::init(config(section(), Value::Null)).unwrap()
    }

    fn decide(p: &OauthPlugin, token: &Value) -> Decision {
        let request = RequestBuilder::new("oauth2")
            .bearer_token(token.to_string())
            .build();
        p.authenticate(&request, &host())
    }

    fn deny_reason(d: Decision) -> String {
        match d {
            Decision::Deny(r) => r,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn azp_entry_and_expiry() {
        let d = decide(
            &plugin(),
            &json!({"azp": "mqtt-client", "sub": "x", "exp": 1234}),
        );
        let Decision::Allow(g) = d else {
            panic!("{d:?}")
        };
        assert_eq!(g.account, "CSC");
        assert_eq!(g.name, "mqtt-client");
        assert_eq!(g.expires_at, Some(1234));
        assert_eq!(g.publish.allow, ["events.>"]);
        // The host reads the client the same way for its allow-list: two differing
        // names are refused here too, not resolved in favour of one of them.
        let r = deny_reason(decide(
            &plugin(),
            &json!({"azp": "mqtt-client", "client_id": "devices-app", "exp": 1234}),
        ));
        assert!(r.contains("azp and client_id"), "{r}");
    }

    #[test]
    fn claim_templates_fill_and_sanitise() {
        let p = plugin();
        let d = decide(
            &p,
            &json!({"sub": "svc", "client_id": "devices-app", "device_id": "sensor-01"}),
        );
        let Decision::Allow(g) = d else {
            panic!("{d:?}")
        };
        assert_eq!(g.account, "DEVICES");
        assert_eq!(g.publish.allow, ["device-state.sensor-01", "_INBOX.>"]);
        assert_eq!(g.subscribe.allow, ["device-commands.sensor-01", "_INBOX.>"]);
        for hostile in ["a.>", "*", "a b", "x\ny", ""] {
            let r = deny_reason(decide(&p, &json!({"sub": "svc", "device_id": hostile})));
            assert!(r.contains("claims.device_id"), "{hostile:?}: {r}");
        }
        let long = "x".repeat(65);
        let r = deny_reason(decide(&p, &json!({"sub": "svc", "device_id": long})));
        assert!(r.contains("longer than 64"), "{r}");
        // Numbers fill templates; objects do not.
        let d = decide(&p, &json!({"sub": "svc", "device_id": 42}));
        assert!(matches!(d, Decision::Allow(_)));
        assert!(matches!(
            decide(&p, &json!({"sub": "svc", "device_id": {"a": 1}})),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn unmatched_and_rejected_tokens_are_denied() {
        let p = plugin();
        let r = deny_reason(decide(&p, &json!({"sub": "someone"})));
        assert!(r.contains("no oauth2 permissions entry"), "{r}");
        let request = RequestBuilder::new("oauth2")
            .bearer_token("not-a-token")
            .build();
        let r = deny_reason(p.authenticate(&request, &host()));
        assert_eq!(r, "access token rejected: token signature is invalid");
        let request = RequestBuilder::new("oauth2").bearer_token("").build();
        assert!(deny_reason(p.authenticate(&request, &host())).contains("no access token"));
    }

    #[test]
    fn only_bearer_tokens() {
        let p = plugin();
        assert_eq!(p.credentials(), [CredentialKind::BearerToken]);
        let token = json!({"azp": "mqtt-client"}).to_string();
        for other in [
            RequestBuilder::new("oauth2"),
            RequestBuilder::new("oauth2").user_password("oauth", token.clone()),
            RequestBuilder::new("oauth2").user_jwt(token),
        ] {
            assert_eq!(p.authenticate(&other.build(), &host()), Decision::Abstain);
        }
    }

    #[test]
    fn ambiguity_is_refused() {
        let mut s = section();
        s["more-devices"] = s["devices"].clone();
        s["more-devices"]["claims"] = json!({"device_id": "*"});
        s["more-devices"]["permissions"]["pub"]["allow"] = json!(["x"]);
        let err = OauthPlugin::init(config(s.clone(), Value::Null))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ambiguous") || err.contains("same tokens"),
            "{err}"
        );
        s["more-devices"]["claims"] = json!({"tier": "gold"});
        let p = OauthPlugin::init(config(s, Value::Null)).unwrap();
        let r = deny_reason(decide(
            &p,
            &json!({"sub": "a", "device_id": "d", "tier": "gold"}),
        ));
        assert!(r.contains("ambiguous"), "{r}");
    }

    #[test]
    fn config_errors_name_the_entry() {
        let err = |v: Value| {
            OauthPlugin::init(config(v, Value::Null))
                .unwrap_err()
                .to_string()
        };
        let e = err(json!({"x": {"account": "A", "permissions": {}}}));
        assert!(e.contains("permissions.x") && e.contains("azp"), "{e}");
        let e = err(json!({"x": {"azp": "a", "subject": "b", "account": "A", "permissions": {}}}));
        assert!(e.contains("not both"), "{e}");
        let e = err(
            json!({"x": {"azp": "a", "account": "A", "permissions": {"pub": {"allow": ["a.{{claims.x y}}"]}}}}),
        );
        assert!(e.contains("permissions.x"), "{e}");
        let e = err(
            json!({"x": {"azp": "a", "account": "A", "permissions": {"pub": {"allow": ["{{nkey}}"]}}}}),
        );
        assert!(e.contains("unknown placeholder"), "{e}");
        assert!(OauthPlugin::init(config(Value::Null, Value::Null)).is_err());
    }
}
