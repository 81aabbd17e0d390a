//! The permissions entries of the access-token plugins: `oauth2` (a JWT the host verified)
//! and `introspection` (an opaque token the provider vouched for). Both get a token's
//! claims from somewhere they trust and must pick an entry and fill its subjects the
//! same way, so that an operator moving a client from JWT to opaque tokens keeps the
//! same `permissions` section. One copy of that rule, here.
//!
//! Matching, most specific first:
//! 1. `azp: X`: the token's client (`azp` or `client_id`, which must agree if both are
//!    there; else `sub`) is `X`;
//! 2. `subject: X`: the token's `sub` is `X`;
//! 3. `subject: "*"` (or `azp: "*"`): any token, optionally narrowed by
//!    `claims: { name: value }` (`"*"` = the claim is present). Entries with claim
//!    conditions are tried before bare wildcards; two matches at the same level are
//!    refused as ambiguous rather than resolved by name order.

use std::collections::{BTreeMap, BTreeSet};

use nats_callout_sdk::{
    AuthRequest, Claims, CompiledEntry, ConfigError, Credential, Decision, Host, InitError,
    PermissionEntry, Placeholders, PluginConfig, RequestParts,
};
use serde::Deserialize;

/// The identifier fields of an entry, flattened into [`PermissionEntry`].
#[derive(Debug, Default, Deserialize)]
pub struct TokenIdentity {
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Extra conditions on claims: exact string value, or `"*"` for "present".
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

/// The permissions section: entry name to entry.
pub type TokenEntriesConfig = BTreeMap<String, PermissionEntry<TokenIdentity>>;

/// Placeholders the entries' subjects may use.
pub const PLACEHOLDERS: [&str; 4] = ["claims.*", "azp", "sub", "client.name"];

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

/// A plugin's entries, compiled at `init`.
#[derive(Debug)]
pub struct TokenEntries {
    /// The plugin's mode, for messages: `oauth2`, `introspection`.
    mode: &'static str,
    entries: Vec<Entry>,
    /// The claims `decide` reads, sorted.
    claims: Vec<String>,
    /// The parts of a request `decide` reads.
    reads: RequestParts,
}

impl TokenEntries {
    /// Compiles the plugin's permissions section. `max_template_value_len` is the
    /// plugin's `settings.max_template_value_len`.
    pub fn from_config(
        mode: &'static str,
        config: &PluginConfig,
        max_template_value_len: Option<usize>,
    ) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(format!(
                "{mode} mode needs a permissions.{mode} section with at least one entry"
            )
            .into());
        }
        let mut placeholders = Placeholders::new(PLACEHOLDERS);
        if let Some(max) = max_template_value_len {
            if max == 0 {
                return Err(ConfigError::at(
                    "settings.max_template_value_len",
                    "must be at least 1",
                )
                .into());
            }
            placeholders = placeholders.max_value_len(max);
        }
        let raw: TokenEntriesConfig = config.permissions()?;
        if raw.is_empty() {
            return Err(
                ConfigError::at("permissions", format!("no {mode} entries configured")).into(),
            );
        }
        let mut entries = Vec::with_capacity(raw.len());
        for (name, entry) in raw {
            let at = format!("permissions.{name}");
            let id = &entry.identity;
            let matcher = match (id.azp.as_deref(), id.subject.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::at(at, "set either azp or subject, not both").into());
                }
                (None, None) => {
                    return Err(ConfigError::at(
                        at,
                        "needs azp (client id) or subject (\"*\" for any token)",
                    )
                    .into());
                }
                (Some("*"), None) | (None, Some("*")) => Matcher::Any,
                (Some(a), None) if !a.trim().is_empty() => Matcher::Azp(a.to_owned()),
                (None, Some(s)) if !s.trim().is_empty() => Matcher::Subject(s.to_owned()),
                _ => return Err(ConfigError::at(at, "azp/subject must not be empty").into()),
            };
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(&at, e))?;
            let clash = entries
                .iter()
                .find(|e: &&Entry| e.matcher == matcher && e.claims == id.claims);
            if let Some(other) = clash {
                return Err(ConfigError::at(
                    at,
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
        let placeholders = || entries.iter().flat_map(|e| e.policy.placeholders());
        let claims: BTreeSet<&str> = ["sub", "azp", "client_id"]
            .into_iter()
            .chain(
                entries
                    .iter()
                    .flat_map(|e| e.claims.keys().map(String::as_str)),
            )
            .chain(placeholders().filter_map(|p| p.strip_prefix("claims.")))
            .collect();
        let claims = claims.into_iter().map(str::to_owned).collect();
        let reads = nats_callout_sdk::policy::request_parts(entries.iter().map(|e| &e.policy));
        Ok(Self {
            mode,
            entries,
            claims,
            reads,
        })
    }

    /// The claims [`TokenEntries::decide`] reads: `sub`, `azp`, `client_id`, and those the
    /// entries' conditions and subjects name. What a plugin asks the host for
    /// ([`Host::verify_jwt_claims`]).
    pub fn claims(&self) -> &[String] {
        &self.claims
    }

    /// The parts of a request [`TokenEntries::decide`] reads: the client's name when a
    /// subject uses `{{client.name}}`, else none.
    pub fn reads(&self) -> RequestParts {
        self.reads
    }

    /// The decision for a token whose `claims` the plugin trusts and that is valid until
    /// `expires_at` (Unix seconds): the grant of the one entry that matches, named after
    /// the token's client and expiring with the token, or a deny saying why not.
    pub fn decide(
        &self,
        claims: &Claims<'_>,
        expires_at: i64,
        request: &AuthRequest,
        host: &dyn Host,
    ) -> Decision {
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
        let entry = match self.pick(identifier, sub, claims) {
            Ok(e) => e,
            Err(reason) => {
                host.info(&format!(
                    "{} client {}: {reason}",
                    self.mode,
                    loggable(identifier)
                ));
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
                grant.expires_at = Some(expires_at);
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("{} entry {:?}: {e}", self.mode, entry.name)),
        }
    }

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
        Err(format!(
            "no {} permissions entry matches this token's client",
            self.mode
        ))
    }
}

/// The access token a request presents, or the plugin's decision without one: abstain on
/// another kind of credential, deny an empty token.
#[expect(
    clippy::result_large_err,
    reason = "the Err is the plugin's answer, returned at once; boxing it only adds an allocation"
)]
pub fn access_token(request: &AuthRequest) -> Result<&str, Decision> {
    let Credential::BearerToken(token) = &request.credential else {
        return Err(Decision::Abstain);
    };
    match token.expose() {
        "" => Err(Decision::deny(
            "no access token: connect with username \"oauthtoken\" and the token as password",
        )),
        token => Ok(token),
    }
}

/// A client id as it may appear in a log line: vouched for, but chosen by the provider's
/// admin; keep it short and printable.
pub fn loggable(id: &str) -> String {
    id.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use nats_callout_sdk::testing::{RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

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

    fn entries(section: Value) -> Result<TokenEntries, String> {
        TokenEntries::from_config("oauth2", &config(section, Value::Null), None)
            .map_err(|e| e.to_string())
    }

    /// As a plugin decides: with only the claims and the parts of the request it said it
    /// reads.
    fn decide(e: &TokenEntries, claims: &Value) -> Decision {
        let json = claims.to_string();
        let mut claims = Claims::parse(&json).unwrap();
        claims.retain(e.claims());
        let mut request = RequestBuilder::new("oauth2").client_name("app").build();
        e.reads().strip(&mut request);
        e.decide(&claims, 1234, &request, &TestHost::new())
    }

    #[test]
    fn reads_the_claims_and_parts_its_entries_name() {
        let e = entries(section()).unwrap();
        assert_eq!(e.claims(), ["azp", "client_id", "device_id", "sub"]);
        assert_eq!(e.reads(), RequestParts::NONE);
        let mut s = section();
        s["devices"]["claims"] = json!({"tier": "gold"});
        s["devices"]["permissions"]["pub"]["allow"] = json!(["x.{{client.name}}.{{claims.site}}"]);
        let e = entries(s).unwrap();
        assert_eq!(
            e.claims(),
            ["azp", "client_id", "device_id", "site", "sub", "tier"]
        );
        assert_eq!(e.reads(), RequestParts::CLIENT_NAME);
        let Decision::Allow(g) = decide(
            &e,
            &json!({"sub": "s", "tier": "gold", "site": "b", "device_id": "d"}),
        ) else {
            panic!("not allowed")
        };
        assert_eq!(g.publish.allow, ["x.app.b"]);
    }

    fn deny_reason(d: Decision) -> String {
        match d {
            Decision::Deny(r) => r,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn azp_entry_names_the_client_and_expires_with_the_token() {
        let e = entries(section()).unwrap();
        let d = decide(&e, &json!({"azp": "mqtt-client", "sub": "x"}));
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
            &e,
            &json!({"azp": "mqtt-client", "client_id": "devices-app"}),
        ));
        assert!(r.contains("azp and client_id"), "{r}");
        let r = deny_reason(decide(&e, &json!({"device_id": "d"})));
        assert!(r.contains("neither azp, client_id nor sub"), "{r}");
    }

    #[test]
    fn claim_templates_fill_and_sanitise() {
        let e = entries(section()).unwrap();
        let d = decide(
            &e,
            &json!({"sub": "svc", "client_id": "devices-app", "device_id": "sensor-01"}),
        );
        let Decision::Allow(g) = d else {
            panic!("{d:?}")
        };
        assert_eq!(g.account, "DEVICES");
        assert_eq!(g.publish.allow, ["device-state.sensor-01", "_INBOX.>"]);
        assert_eq!(g.subscribe.allow, ["device-commands.sensor-01", "_INBOX.>"]);
        for hostile in ["a.>", "*", "a b", "x\ny", ""] {
            let r = deny_reason(decide(&e, &json!({"sub": "svc", "device_id": hostile})));
            assert!(r.contains("claims.device_id"), "{hostile:?}: {r}");
        }
        let long = "x".repeat(65);
        let r = deny_reason(decide(&e, &json!({"sub": "svc", "device_id": long})));
        assert!(r.contains("longer than 64"), "{r}");
        // Numbers fill templates; objects do not.
        let d = decide(&e, &json!({"sub": "svc", "device_id": 42}));
        assert!(matches!(d, Decision::Allow(_)));
        assert!(matches!(
            decide(&e, &json!({"sub": "svc", "device_id": {"a": 1}})),
            Decision::Deny(_)
        ));
        let short =
            TokenEntries::from_config("oauth2", &config(section(), Value::Null), Some(4)).unwrap();
        let r = deny_reason(decide(&short, &json!({"sub": "s", "device_id": "sensor"})));
        assert!(r.contains("longer than 4"), "{r}");
    }

    #[test]
    fn unmatched_tokens_are_denied_and_logged() {
        let e = entries(section()).unwrap();
        let host = TestHost::new();
        let json = json!({"sub": "some\none"}).to_string();
        let claims = Claims::parse(&json).unwrap();
        let request = RequestBuilder::new("oauth2").build();
        let r = deny_reason(e.decide(&claims, 1, &request, &host));
        assert!(r.contains("no oauth2 permissions entry"), "{r}");
        assert!(host.logged("oauth2 client some?one"), "{:?}", host.logs());
    }

    #[test]
    fn ambiguity_is_refused() {
        let mut s = section();
        s["more-devices"] = s["devices"].clone();
        s["more-devices"]["claims"] = json!({"device_id": "*"});
        s["more-devices"]["permissions"]["pub"]["allow"] = json!(["x"]);
        let err = entries(s.clone()).unwrap_err();
        assert!(err.contains("same tokens"), "{err}");
        s["more-devices"]["claims"] = json!({"tier": "gold"});
        let e = entries(s).unwrap();
        let r = deny_reason(decide(
            &e,
            &json!({"sub": "a", "device_id": "d", "tier": "gold"}),
        ));
        assert!(r.contains("ambiguous"), "{r}");
    }

    #[test]
    fn config_errors_name_the_entry() {
        let e = entries(json!({"x": {"account": "A", "permissions": {}}})).unwrap_err();
        assert!(e.contains("permissions.x") && e.contains("azp"), "{e}");
        let e =
            entries(json!({"x": {"azp": "a", "subject": "b", "account": "A", "permissions": {}}}))
                .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = entries(
            json!({"x": {"azp": "a", "account": "A", "permissions": {"pub": {"allow": ["a.{{claims.x y}}"]}}}}),
        )
        .unwrap_err();
        assert!(e.contains("permissions.x"), "{e}");
        let e = entries(
            json!({"x": {"azp": "a", "account": "A", "permissions": {"pub": {"allow": ["{{nkey}}"]}}}}),
        )
        .unwrap_err();
        assert!(e.contains("unknown placeholder"), "{e}");
        let e = entries(Value::Null).unwrap_err();
        assert!(e.contains("permissions.oauth2"), "{e}");
        let e = TokenEntries::from_config("introspection", &config(json!({}), Value::Null), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no introspection entries"), "{e}");
        let e = TokenEntries::from_config("oauth2", &config(section(), Value::Null), Some(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("settings.max_template_value_len"), "{e}");
    }
}
