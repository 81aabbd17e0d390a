//! The `password` mode: admits a client whose username and password match one of the
//! operator's `permissions.password` entries, with that entry's permissions. The
//! entries hold hashes only (bcrypt, as nats-server's own config takes them, or
//! argon2id), which the host verifies natively (`verify-password-hash`).
//!
//! A username no entry has is checked against the costliest configured hash all the
//! same, then abstained on: an unknown user costs what a known one does, so the time of
//! an answer does not tell which usernames exist, and a later plugin of the route may
//! still know the user.

use std::collections::BTreeMap;

use nats_callout_sdk::password::{Scheme, scheme};
use nats_callout_sdk::{
    AuthRequest, CompiledEntry, ConfigError, Credential, CredentialKind, Decision, Host, InitError,
    PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts,
};
use serde::Deserialize;

/// The identifier fields of a password entry, flattened into [`PermissionEntry`].
#[derive(Debug, Deserialize)]
pub struct PasswordIdentity {
    /// Default: the entry name.
    #[serde(default)]
    pub username: Option<String>,
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`) or argon2id (PHC string).
    pub password_hash: String,
}

/// `permissions.password`: entry name to entry.
pub type PasswordEntries = BTreeMap<String, PermissionEntry<PasswordIdentity>>;

/// Placeholders password subjects may use: the entry name, the username, and the client
/// name the connection announced (not verified, but sanitised like any value).
pub const PLACEHOLDERS: [&str; 3] = ["name", "username", "client.name"];

#[derive(Debug)]
struct Entry {
    name: String,
    hash: String,
    policy: CompiledEntry,
}

#[derive(Debug)]
pub struct PasswordPlugin {
    by_username: BTreeMap<String, Entry>,
    /// The costliest configured hash, verified for usernames no entry has.
    decoy: String,
}

impl Plugin for PasswordPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(
                "password mode needs a permissions.password section with at least one entry".into(),
            );
        }
        config.no_settings("password")?;
        let entries: PasswordEntries = config.permissions()?;
        let placeholders = Placeholders::new(PLACEHOLDERS);
        let mut by_username: BTreeMap<String, Entry> = BTreeMap::new();
        let mut decoy: Option<(Scheme, String)> = None;
        for (name, entry) in entries {
            let at = |key: &str| format!("permissions.{name}{key}");
            let username = entry
                .identity
                .username
                .clone()
                .unwrap_or_else(|| name.clone());
            if username.is_empty() || username.chars().any(char::is_control) {
                return Err(ConfigError::at(
                    at(".username"),
                    "must be a non-empty name without control characters",
                )
                .into());
            }
            let hash = entry.identity.password_hash.trim().to_owned();
            let kind = scheme(&hash).map_err(|e| ConfigError::at(at(".password_hash"), e))?;
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(at(""), e))?;
            // What is known now fills the grant once, so an entry whose name or
            // username could never fill a subject fails here, not on connect.
            policy
                .grant(|p| {
                    Some(match p {
                        "name" => name.clone(),
                        "username" => username.clone(),
                        _ => "x".into(),
                    })
                })
                .map_err(|e| ConfigError::at(at(""), e))?;
            if let Some(other) = by_username.get(&username) {
                return Err(ConfigError::at(
                    at(".username"),
                    format!("{username:?} is the username of entry {:?} too", other.name),
                )
                .into());
            }
            if decoy.as_ref().is_none_or(|(s, _)| kind.work() > s.work()) {
                decoy = Some((kind, hash.clone()));
            }
            by_username.insert(username, Entry { name, hash, policy });
        }
        let Some((_, decoy)) = decoy else {
            return Err(ConfigError::at("permissions", "no password entries configured").into());
        };
        Ok(Self { by_username, decoy })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::UserPassword]
    }

    /// The client's name, when a subject uses `{{client.name}}`; nothing else.
    fn reads(&self) -> RequestParts {
        nats_callout_sdk::policy::request_parts(self.by_username.values().map(|e| &e.policy))
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let Credential::UserPassword { username, password } = &request.credential else {
            return Decision::Abstain;
        };
        let entry = self.by_username.get(username);
        let hash = entry.map_or(&self.decoy, |e| &e.hash);
        let matched = match host.verify_password_hash(password.expose(), hash) {
            Ok(matched) => matched,
            Err(e) => return Decision::deny(format!("password not checked: {e}")),
        };
        let Some(entry) = entry else {
            host.info(&format!(
                "no password entry for user {}",
                loggable(username)
            ));
            return Decision::Abstain;
        };
        if !matched {
            return Decision::deny(format!("wrong password for user {}", loggable(username)));
        }
        let client_name = request.client_name();
        let filled = entry.policy.grant(|p| match p {
            "name" => Some(entry.name.clone()),
            "username" => Some(username.clone()),
            "client.name" => client_name.map(str::to_owned),
            _ => None,
        });
        match filled {
            Ok(mut grant) => {
                grant.name = entry.name.clone();
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("password entry {:?}: {e}", entry.name)),
        }
    }
}

/// A client-chosen username as it may appear in a log line or a reason: short and
/// printable.
fn loggable(username: &str) -> String {
    let shown: String = username
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    format!("{shown:?}")
}

nats_callout_sdk::export_plugin!(PasswordPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    /// `secret`, bcrypt cost 4 (fast: the tests verify for real).
    const SECRET_BCRYPT: &str = "$2b$04$fRT7kVAytyqzAmu32Zp7QOmLinXmfFT8yInGUSCz9LXkM3V3aEGYW";
    /// `secret`, argon2id m=19456 t=2 p=1.
    const SECRET_ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$14ukWqiThj4Xz77NYv01V28GbBZHY9AaZwsFswQFO0U";

    fn section() -> Value {
        json!({
            "sensor-7": {
                "password_hash": SECRET_BCRYPT,
                "account": "DEVICES",
                "allowed_connection_types": ["mqtt"],
                "permissions": {
                    "pub": {"allow": ["sensors.{{username}}.>"]},
                    "sub": {"allow": ["commands.{{name}}"]}
                }
            },
            "operator": {
                "username": "ops@example.com",
                "password_hash": SECRET_ARGON2,
                "account": "OPS",
                "permissions": {"pub": {"allow": ["ops.>"]}, "sub": {"allow": ["ops.>"]}}
            }
        })
    }

    fn plugin() -> PasswordPlugin {
        PasswordPlugin::init(config(section(), Value::Null)).unwrap()
    }

    fn decide(user: &str, pass: &str, host: &TestHost) -> Decision {
        let request = RequestBuilder::new("password")
            .user_password(user, pass)
            .build();
        testing::decide(&plugin(), &request, host)
    }

    #[test]
    fn the_right_password_gets_the_entry() {
        let host = TestHost::new();
        let Decision::Allow(g) = decide("sensor-7", "secret", &host) else {
            panic!("not admitted");
        };
        assert_eq!(g.account, "DEVICES");
        assert_eq!(g.name, "sensor-7");
        assert_eq!(g.publish.allow, ["sensors.sensor-7.>"]);
        assert_eq!(g.subscribe.allow, ["commands.sensor-7"]);
        assert_eq!(
            g.allowed_connection_types,
            [nats_callout_sdk::ConnectionType::Mqtt]
        );
        let Decision::Allow(g) = decide("ops@example.com", "secret", &host) else {
            panic!("argon2id user not admitted");
        };
        assert_eq!(g.account, "OPS");
    }

    #[test]
    fn wrong_passwords_and_unknown_users_cost_a_verification_each() {
        let host = TestHost::new();
        assert_eq!(
            decide("sensor-7", "Secret", &host),
            Decision::deny("wrong password for user \"sensor-7\"")
        );
        assert_eq!(decide("nobody", "secret", &host), Decision::Abstain);
        assert!(host.logged("no password entry for user \"nobody\""));
        // Both checked a hash; the unknown user the costliest one (argon2id here).
        assert_eq!(host.verified_hashes(), [SECRET_BCRYPT, SECRET_ARGON2]);
        assert!(!host.logs().iter().any(|(_, l)| l.contains("secret")));
    }

    #[test]
    fn a_password_the_host_refuses_is_a_deny() {
        let host = TestHost::new();
        let long = "x".repeat(1 << 20);
        let d = decide("sensor-7", &long, &host);
        assert_eq!(
            d,
            Decision::deny("password not checked: password longer than 72 bytes")
        );
        let d = decide("ops@example.com", &long, &host);
        assert_eq!(
            d,
            Decision::deny("password not checked: password longer than 4096 bytes")
        );
    }

    #[test]
    fn only_username_password() {
        let p = plugin();
        assert_eq!(p.credentials(), [CredentialKind::UserPassword]);
        for other in [
            RequestBuilder::new("password"),
            RequestBuilder::new("password").bearer_token("secret"),
        ] {
            assert_eq!(
                testing::decide(&p, &other.build(), &TestHost::new()),
                Decision::Abstain
            );
        }
    }

    #[test]
    fn config_errors_name_the_entry() {
        let err = |v: Value| {
            PasswordPlugin::init(config(v, Value::Null))
                .unwrap_err()
                .to_string()
        };
        let e = err(json!({"a": {"password_hash": "secret", "account": "A", "permissions": {}}}));
        assert!(
            e.starts_with("permissions.a.password_hash: not a bcrypt"),
            "{e}"
        );
        assert!(!e.contains(": secret"), "{e}");
        let costly = SECRET_BCRYPT.replace("$04$", "$14$");
        let e = err(json!({"a": {"password_hash": costly, "account": "A", "permissions": {}}}));
        assert!(e.contains("bcrypt cost 14, over 13"), "{e}");
        let e = err(json!({
            "a": {"password_hash": SECRET_BCRYPT, "account": "A", "permissions": {}},
            "b": {"username": "a", "password_hash": SECRET_BCRYPT, "account": "A", "permissions": {}}
        }));
        assert!(
            e.contains("permissions.b.username: \"a\" is the username of entry \"a\""),
            "{e}"
        );
        let e = err(
            json!({"dev.1": {"password_hash": SECRET_BCRYPT, "account": "A",
            "permissions": {"pub": {"allow": ["x.{{username}}"]}}}}),
        );
        assert!(
            e.contains("permissions.dev.1") && e.contains("{{username}}"),
            "{e}"
        );
        assert_eq!(
            err(json!({})),
            "permissions: no password entries configured"
        );
        assert!(err(Value::Null).contains("needs a permissions.password section"));
    }
}
