//! The `jwt` mode (operator mode): admits a user of the callout account who logs in with
//! its own NATS user JWT (a `.creds` file), so that users created with `nsc` before the
//! account moved to the callout keep working while new ones authenticate through other
//! plugins. Each is placed in the section's `account` with the permissions its JWT
//! states (or the section's own, when it has some), its expiry, and its restrictions
//! (source networks, connect times, connection types).
//!
//! The host verifies the JWT before this plugin runs: signed by the callout account or
//! one of its plain signing keys, within its validity, not revoked by the account, and
//! the client signed the server's nonce with the user's key. This plugin only reads the
//! claims of a token that is genuine.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nats_callout_sdk::{
    AuthRequest, CompiledEntry, ConfigError, ConnectionType, Credential, CredentialKind, Decision,
    Grant, Host, InitError, Permission, PermissionEntry, Placeholders, Plugin, PluginConfig,
    RequestParts, ResponsePermission, TimeRange,
};
use serde::Deserialize;

/// Placeholders the section's own permissions may use: the JWT's `name` and its subject
/// (the user's public key), both signed by the account.
pub const PLACEHOLDERS: [&str; 2] = ["name", "subject"];

/// `permissions.jwt` without permissions of its own: the JWTs' are used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountOnly {
    account: String,
}

/// Where users go, and with which permissions.
#[derive(Debug)]
enum Policy {
    /// The JWT's own permissions, in this account.
    Own(String),
    /// The section's permissions, filled with the JWT's name and subject.
    Configured(Box<CompiledEntry>),
}

#[derive(Debug)]
pub struct JwtPlugin {
    policy: Policy,
}

/// The claims of a NATS user JWT this plugin reads (nats-io/jwt v2's JSON).
#[derive(Debug, Default, Deserialize)]
struct UserJwt {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nats: User,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default, rename = "pub")]
    publish: Subjects,
    #[serde(default, rename = "sub")]
    subscribe: Subjects,
    #[serde(default)]
    resp: Option<Resp>,
    #[serde(default)]
    src: Cidrs,
    #[serde(default)]
    times: Vec<TimeRange>,
    #[serde(default)]
    times_location: String,
    #[serde(default)]
    allowed_connection_types: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Subjects {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Resp {
    #[serde(default)]
    max: i32,
    /// Go `time.Duration`: nanoseconds.
    #[serde(default)]
    ttl: i64,
}

/// nats-io/jwt's `CIDRList`: a JSON array, or (older JWTs) one comma-separated string.
#[derive(Debug, Default)]
struct Cidrs(Vec<String>);

impl<'de> Deserialize<'de> for Cidrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Joined(String),
        }
        Ok(Cidrs(match Form::deserialize(d)? {
            Form::List(l) => l,
            Form::Joined(s) => s
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        }))
    }
}

impl Plugin for JwtPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(
                "jwt mode needs a permissions.jwt section naming the account its users go to"
                    .into(),
            );
        }
        config.no_settings("jwt")?;
        let policy = if config.raw_permissions().get("permissions").is_some() {
            let entry: PermissionEntry = config.permissions()?;
            let compiled = entry
                .compile(&Placeholders::new(PLACEHOLDERS))
                .map_err(|e| ConfigError::at("permissions", e))?;
            Policy::Configured(Box::new(compiled))
        } else {
            let AccountOnly { account } = config.permissions()?;
            nats_callout_sdk::policy::validate_account(&account)
                .map_err(|e| ConfigError::at("permissions.account", e))?;
            Policy::Own(account)
        };
        Ok(Self { policy })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::UserJwt]
    }

    /// The user JWT is the credential; nothing else.
    fn reads(&self) -> RequestParts {
        RequestParts::NONE
    }

    fn authenticate(&self, request: &AuthRequest, _host: &dyn Host) -> Decision {
        let Credential::UserJwt(token) = &request.credential else {
            return Decision::Abstain;
        };
        let Some(user) = claims(token.expose()) else {
            return Decision::deny("user JWT: unreadable claims");
        };
        let mut grant = match &self.policy {
            Policy::Own(account) => {
                let n = &user.nats;
                let (publish, subscribe) = (&n.publish, &n.subscribe);
                let mut g = Grant::default();
                g.account = account.clone();
                g.publish = Permission {
                    allow: publish.allow.clone(),
                    deny: publish.deny.clone(),
                };
                g.subscribe = Permission {
                    allow: subscribe.allow.clone(),
                    deny: subscribe.deny.clone(),
                };
                g.response = n.resp.as_ref().map(|r| ResponsePermission {
                    max_msgs: r.max,
                    ttl_millis: u64::try_from(r.ttl / 1_000_000).unwrap_or(0),
                });
                g
            }
            Policy::Configured(entry) => {
                let filled = entry.grant(|p| match p {
                    "name" => Some(user.name.clone()),
                    "subject" => Some(user.sub.clone()),
                    _ => None,
                });
                match filled {
                    Ok(g) => g,
                    Err(e) => return Decision::deny(format!("jwt entry: {e}")),
                }
            }
        };
        // The JWT's restrictions hold whichever permissions apply.
        let n = user.nats;
        if !n.allowed_connection_types.is_empty() {
            // nats-server's names this host cannot express (IN_PROCESS, ...) narrow the
            // list; none left means the JWT admits no connection this host can grant.
            let known: Vec<ConnectionType> = n
                .allowed_connection_types
                .iter()
                .filter_map(|t| {
                    ConnectionType::deserialize(serde_json::Value::from(t.as_str())).ok()
                })
                .collect();
            if known.is_empty() {
                return Decision::deny(format!(
                    "user JWT allows only connection types {:?}",
                    n.allowed_connection_types
                ));
            }
            grant.allowed_connection_types = known;
        }
        grant.source_networks = n.src.0;
        grant.times = n.times;
        grant.locale = Some(n.times_location).filter(|l| !l.is_empty());
        grant.name = if user.name.is_empty() {
            user.sub
        } else {
            user.name
        };
        grant.expires_at = user.exp;
        Decision::Allow(grant)
    }
}

/// The claims segment of a (host-verified) JWT.
fn claims(token: &str) -> Option<UserJwt> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}

nats_callout_sdk::export_plugin!(JwtPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    /// A token with these claims; the signature is the host's business, not this
    /// plugin's.
    fn token(claims: Value) -> String {
        format!(
            "eyJ0eXAiOiJKV1QifQ.{}.sig",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn decide(section: Value, claims: Value) -> Decision {
        let plugin = JwtPlugin::init(config(section, Value::Null)).unwrap();
        let request = RequestBuilder::new("jwt").user_jwt(token(claims)).build();
        testing::decide(&plugin, &request, &TestHost::new())
    }

    fn allowed(decision: Decision) -> Grant {
        match decision {
            Decision::Allow(g) => g,
            other => panic!("expected allow, got {other:?}"),
        }
    }

    #[test]
    fn places_users_with_their_jwts_permissions() {
        let g = allowed(decide(
            json!({ "account": "LEGACY" }),
            json!({
                "sub": "UUSER", "name": "sensor-1", "exp": 4_000_000_000_i64,
                "nats": {
                    "pub": { "allow": ["telemetry.>"], "deny": ["telemetry.admin"] },
                    "sub": { "allow": ["_INBOX.>"] },
                    "resp": { "max": 1, "ttl": 5_000_000_000_i64 },
                    "src": "10.0.0.0/8, 192.168.0.0/16",
                    "times": [{ "start": "08:00:00", "end": "18:00:00" }],
                    "times_location": "Europe/Berlin",
                    "allowed_connection_types": ["STANDARD", "IN_PROCESS"],
                    "type": "user", "version": 2
                }
            }),
        ));
        assert_eq!(g.account, "LEGACY");
        assert_eq!(g.name, "sensor-1");
        assert_eq!(g.expires_at, Some(4_000_000_000));
        assert_eq!(g.publish.allow, ["telemetry.>"]);
        assert_eq!(g.publish.deny, ["telemetry.admin"]);
        assert_eq!(g.subscribe.allow, ["_INBOX.>"]);
        assert_eq!(
            g.response.map(|r| (r.max_msgs, r.ttl_millis)),
            Some((1, 5000))
        );
        assert_eq!(g.source_networks, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(g.times.len(), 1);
        assert_eq!(g.locale.as_deref(), Some("Europe/Berlin"));
        assert_eq!(g.allowed_connection_types, [ConnectionType::Standard]);
    }

    #[test]
    fn configured_permissions_replace_the_jwts_but_its_restrictions_hold() {
        let g = allowed(decide(
            json!({ "account": "APP", "permissions": { "pub": { "allow": ["app.{{name}}.>"] } } }),
            json!({
                "sub": "UUSER", "name": "svc",
                "nats": { "pub": { "allow": [">"] }, "src": ["10.1.0.0/16"] }
            }),
        ));
        assert_eq!((g.account.as_str(), g.name.as_str()), ("APP", "svc"));
        assert_eq!(g.publish.allow, ["app.svc.>"]);
        assert_eq!(g.source_networks, ["10.1.0.0/16"]);
        // No name: the subject names the connection.
        let g = allowed(decide(json!({ "account": "A" }), json!({ "sub": "UUSER" })));
        assert_eq!(g.name, "UUSER");
    }

    #[test]
    fn refuses_what_it_cannot_grant_faithfully() {
        let d = decide(
            json!({ "account": "A" }),
            json!({ "sub": "U", "nats": { "allowed_connection_types": ["IN_PROCESS"] } }),
        );
        assert!(matches!(d, Decision::Deny(r) if r.contains("IN_PROCESS")));
        let plugin = JwtPlugin::init(config(json!({ "account": "A" }), Value::Null)).unwrap();
        let request = RequestBuilder::new("jwt").user_jwt("not-a-jwt").build();
        assert!(matches!(
            testing::decide(&plugin, &request, &TestHost::new()),
            Decision::Deny(r) if r == "user JWT: unreadable claims"
        ));
        let other = RequestBuilder::new("jwt").nkey("UABC").build();
        assert_eq!(
            testing::decide(&plugin, &other, &TestHost::new()),
            Decision::Abstain
        );
    }

    #[test]
    fn config_errors() {
        let err = |permissions: Value| {
            JwtPlugin::init(config(permissions, Value::Null))
                .unwrap_err()
                .to_string()
        };
        assert!(err(Value::Null).starts_with("jwt mode needs a permissions.jwt section"));
        assert_eq!(
            err(json!({ "acount": "A" })),
            "permissions.acount: unknown field `acount`, expected `account`"
        );
        assert!(
            err(json!({ "account": "A", "permissions": { "pub": { "allow": ["x.{{tags}}"] } } }))
                .contains("unknown placeholder {{tags}}")
        );
    }
}
