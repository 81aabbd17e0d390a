//! The `nkey` mode: admits a client whose NKey signed the server's nonce, when that key is
//! one of the operator's `permissions.nkey` entries, with that entry's permissions.
//!
//! The host checks the signature before any nkey plugin runs (native ed25519, the same
//! check as `verify-nkey-signature`): a request reaching this plugin carries a key its
//! client holds, and only that holder can learn whether the key is configured.

use std::collections::BTreeMap;

use nats_callout_sdk::{
    AuthRequest, CompiledEntry, ConfigError, Credential, CredentialKind, Decision, Host, InitError,
    PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts,
};
use nkeys::KeyPairType;
use serde::Deserialize;

/// The identifier field of an nkey entry, flattened into [`PermissionEntry`].
#[derive(Debug, Deserialize)]
pub struct NkeyIdentity {
    /// The user's public NKey, `U...`.
    pub public_key: String,
}

/// `permissions.nkey`: entry name to entry.
pub type NkeyEntries = BTreeMap<String, PermissionEntry<NkeyIdentity>>;

/// Placeholders nkey subjects may use: the client's public key, the entry name, and the
/// client name the connection announced (not verified, but sanitised like any value).
pub const PLACEHOLDERS: [&str; 3] = ["nkey", "name", "client.name"];

#[derive(Debug)]
struct Entry {
    name: String,
    policy: CompiledEntry,
}

/// The plugin: configured entries indexed by public key. A `BTreeMap`, not a `HashMap`:
/// std's hasher seeding would make the component import `wasi:random` for nothing.
#[derive(Debug)]
pub struct NkeyPlugin {
    by_key: BTreeMap<String, Entry>,
}

impl Plugin for NkeyPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(
                "nkey mode needs a permissions.nkey section with at least one entry".into(),
            );
        }
        config.no_settings("nkey")?;
        let entries: NkeyEntries = config.permissions()?;
        if entries.is_empty() {
            return Err(ConfigError::at("permissions", "no nkey entries configured").into());
        }
        let placeholders = Placeholders::new(PLACEHOLDERS);
        let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
        for (name, entry) in entries {
            let at = |key: &str| format!("permissions.{name}{key}");
            let public_key = entry.identity.public_key.trim();
            if !is_user_public_key(public_key) {
                return Err(ConfigError::at(
                    at(".public_key"),
                    "is not a valid NKey user public key (56 characters starting with U)",
                )
                .into());
            }
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(at(""), e))?;
            // Fill what is known now (entry name, key) and a stand-in for the client's name,
            // so that an entry name that could never fill `{{name}}` fails here, not on connect.
            policy
                .grant(|p| {
                    Some(if p == "name" {
                        name.clone()
                    } else {
                        "x".into()
                    })
                })
                .map_err(|e| ConfigError::at(at(""), e))?;
            if let Some(other) = by_key.get(public_key) {
                return Err(ConfigError::at(
                    at(".public_key"),
                    format!(
                        "same key as entry {:?}; each key may appear once",
                        other.name
                    ),
                )
                .into());
            }
            by_key.insert(public_key.to_string(), Entry { name, policy });
        }
        Ok(Self { by_key })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::Nkey]
    }

    /// The client's name, when a subject uses `{{client.name}}`; nothing else.
    fn reads(&self) -> RequestParts {
        nats_callout_sdk::policy::request_parts(self.by_key.values().map(|e| &e.policy))
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let Credential::Nkey(nkey) = &request.credential else {
            return Decision::Abstain;
        };
        let nkey = nkey.as_str();
        let Some(entry) = self.by_key.get(nkey) else {
            host.info(&format!("nkey {} is not configured", loggable(nkey)));
            return Decision::deny("unknown nkey");
        };
        let client_name = request.client_name();
        let filled = entry.policy.grant(|p| match p {
            "nkey" => Some(nkey.to_string()),
            "name" => Some(entry.name.clone()),
            "client.name" => client_name.map(str::to_string),
            _ => None,
        });
        match filled {
            Ok(mut grant) => {
                grant.name = entry.name.clone();
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("nkey entry {:?}: {e}", entry.name)),
        }
    }
}

/// The client-supplied key as it may appear in a log line: public keys are not secret, but
/// an unverified one could be any length or carry line breaks.
fn loggable(nkey: &str) -> String {
    const MAX: usize = 56; // length of a real public key
    let shown: String = nkey
        .chars()
        .take(MAX)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '?' })
        .collect();
    if nkey.chars().count() > MAX {
        format!("{shown}...")
    } else {
        shown
    }
}

/// Whether `key` decodes (base32, CRC) to an NKey with the user prefix. Decoding only: the
/// signature itself is verified by the host.
fn is_user_public_key(key: &str) -> bool {
    nkeys::from_public_key(key)
        .is_ok_and(|(prefix, _)| KeyPairType::from(prefix) == KeyPairType::User)
}

nats_callout_sdk::export_plugin!(NkeyPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::ResponsePermission;
    use nats_callout_sdk::testing::{RequestBuilder, TestHost, config, decide, nkeys::KeyPair};
    use serde_json::{Value, json};

    use super::*;

    fn section(entries: &[(&str, &KeyPair)]) -> Value {
        let mut map = serde_json::Map::new();
        for (name, key) in entries {
            map.insert(
                name.to_string(),
                json!({
                    "public_key": key.public_key(),
                    "account": "DEVICES",
                    "permissions": {
                        "pub": {"allow": ["device-state.{{name}}", "_INBOX.>"], "deny": ["device-state.{{name}}.admin"]},
                        "sub": {"allow": ["device-commands.{{name}}", "by-key.{{nkey}}", "_INBOX.>"]},
                        "resp": {"max": 1, "ttl": "5s"}
                    }
                }),
            );
        }
        Value::Object(map)
    }

    fn plugin(entries: &[(&str, &KeyPair)]) -> NkeyPlugin {
        NkeyPlugin::init(config(section(entries), Value::Null)).unwrap()
    }

    fn init_err(permissions: Value) -> String {
        NkeyPlugin::init(config(permissions, Value::Null))
            .unwrap_err()
            .to_string()
    }

    fn deny_reason(decision: Decision) -> String {
        match decision {
            Decision::Deny(reason) => reason,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn allows_a_configured_key_with_a_valid_signature() {
        let key = KeyPair::new_user();
        let other = KeyPair::new_user();
        let p = plugin(&[("sensor-01", &key), ("sensor-02", &other)]);
        let host = TestHost::new();
        let request = RequestBuilder::new("nkey").nkey(key.public_key()).build();
        let Decision::Allow(grant) = decide(&p, &request, &host) else {
            panic!("expected allow");
        };
        assert_eq!(grant.account, "DEVICES");
        assert_eq!(grant.name, "sensor-01");
        assert_eq!(grant.publish.allow, ["device-state.sensor-01", "_INBOX.>"]);
        assert_eq!(grant.publish.deny, ["device-state.sensor-01.admin"]);
        assert_eq!(
            grant.subscribe.allow,
            [
                "device-commands.sensor-01".to_string(),
                format!("by-key.{}", key.public_key()),
                "_INBOX.>".to_string()
            ]
        );
        assert_eq!(
            grant.response,
            Some(ResponsePermission {
                max_msgs: 1,
                ttl_millis: 5000
            })
        );
        assert_eq!(grant.expires_at, None);
    }

    #[test]
    fn unknown_key_is_denied() {
        let p = plugin(&[("a", &KeyPair::new_user())]);
        let host = TestHost::new();
        let stranger = KeyPair::new_user();
        let request = RequestBuilder::new("nkey")
            .nkey(stranger.public_key())
            .build();
        assert_eq!(deny_reason(decide(&p, &request, &host)), "unknown nkey");
        assert!(host.logged(&stranger.public_key()));
    }

    #[test]
    fn other_credentials_abstain() {
        let key = KeyPair::new_user();
        let p = plugin(&[("a", &key)]);
        assert_eq!(p.credentials(), [CredentialKind::Nkey]);
        for request in [
            RequestBuilder::new("nkey"),
            RequestBuilder::new("nkey").bearer_token(key.public_key()),
            RequestBuilder::new("nkey").user_password(key.public_key(), "x"),
        ] {
            assert_eq!(
                decide(&p, &request.build(), &TestHost::new()),
                Decision::Abstain
            );
        }
    }

    #[test]
    fn client_name_template_is_sanitised() {
        let key = KeyPair::new_user();
        let permissions = json!({
            "dev": {
                "public_key": key.public_key(),
                "account": "DEVICES",
                "permissions": {"pub": {"allow": ["apps.{{client.name}}.>"]}}
            }
        });
        let p = NkeyPlugin::init(config(permissions, Value::Null)).unwrap();
        let host = TestHost::new();
        let ok = RequestBuilder::new("nkey")
            .nkey(key.public_key())
            .client_name("billing")
            .build();
        let Decision::Allow(grant) = decide(&p, &ok, &host) else {
            panic!("expected allow");
        };
        assert_eq!(grant.publish.allow, ["apps.billing.>"]);
        assert_eq!(grant.subscribe.deny, [">"], "no sub allow means nothing");
        for (name, why) in [
            ("evil.>", "contains `.`"),
            ("*", "contains `*`"),
            ("a b", "whitespace"),
            ("", "is empty"),
        ] {
            let request = RequestBuilder::new("nkey")
                .nkey(key.public_key())
                .client_name(name)
                .build();
            let reason = deny_reason(decide(&p, &request, &host));
            assert!(
                reason.contains("{{client.name}}") && reason.contains(why),
                "{reason}"
            );
        }
        let long = "x".repeat(65);
        let request = RequestBuilder::new("nkey")
            .nkey(key.public_key())
            .client_name(long.as_str())
            .build();
        let reason = deny_reason(decide(&p, &request, &host));
        assert!(
            reason.contains("longer than 64") && !reason.contains(&long),
            "{reason}"
        );
        let unnamed = RequestBuilder::new("nkey").nkey(key.public_key()).build();
        assert!(deny_reason(decide(&p, &unnamed, &host)).contains("has no value"));
    }

    #[test]
    fn config_errors_name_the_entry() {
        let key = KeyPair::new_user();
        let entry = |public_key: String| json!({"public_key": public_key, "account": "A", "permissions": {"pub": {"allow": ["x"]}}});
        assert_eq!(
            init_err(Value::Null),
            "nkey mode needs a permissions.nkey section with at least one entry"
        );
        assert_eq!(
            init_err(json!({})),
            "permissions: no nkey entries configured"
        );
        let bad_keys = [
            "UNOTAKEY".to_string(),
            KeyPair::new_account().public_key(),
            key.seed().unwrap(),
            key.public_key().to_lowercase(),
        ];
        for bad in bad_keys {
            let e = init_err(json!({"dev-1": entry(bad)}));
            assert!(
                e.starts_with("permissions.dev-1.public_key: is not a valid NKey user public key"),
                "{e}"
            );
            assert!(!e.contains("SU"), "seed leaked: {e}");
        }
        assert_eq!(
            init_err(json!({"a": entry(key.public_key()), "b": entry(key.public_key())})),
            "permissions.b.public_key: same key as entry \"a\"; each key may appear once"
        );
        assert_eq!(
            init_err(json!({"dev-1": {"account": "A", "permissions": {}}})),
            "permissions.dev-1: missing field `public_key`"
        );
        assert_eq!(
            init_err(
                json!({"dev-1": {"public_key": key.public_key(), "account": "A", "permissions": {"pub": {"allow": [">.x"]}}}})
            ),
            "permissions.dev-1: subject \">.x\" uses `>` before the last token"
        );
        assert!(
            init_err(json!({"dev-1": {"public_key": key.public_key(), "account": "A", "permissions": {"pub": {"allow": ["x.{{claims.sub}}"]}}}}))
                .starts_with("permissions.dev-1: subject \"x.{{claims.sub}}\" uses unknown placeholder {{claims.sub}}")
        );
        assert_eq!(
            init_err(
                json!({"dev-1": {"public_key": key.public_key(), "account": "A", "permissions": {"resp": {"ttl": "soon"}}}})
            ),
            "permissions.dev-1.permissions.resp.ttl: invalid duration \"soon\": expected e.g. \"5s\", \"250ms\", \"1m30s\" or milliseconds"
        );
        // An entry name that cannot fill {{name}} fails at init, not on connect.
        assert_eq!(
            init_err(
                json!({"dev.1": {"public_key": key.public_key(), "account": "A", "permissions": {"pub": {"allow": ["s.{{name}}"]}}}})
            ),
            "permissions.dev.1: placeholder {{name}} in \"s.{{name}}\" contains `.`, which would change the subject's shape"
        );
        let e = NkeyPlugin::init(config(
            json!({"a": entry(key.public_key())}),
            json!({"x": 1}),
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(e, "settings: the nkey plugin takes no settings");
    }
}
