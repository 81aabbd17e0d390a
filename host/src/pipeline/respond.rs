//! Step 6: turn a grant into a user JWT, wrap it (or an error) in the authorization
//! response JWT, sign, and seal it back when the request was sealed.

use nkeys::{KeyPair, XKey};

use crate::nats::claims::{
    AuthorizationResponse, CLAIMS_VERSION, Permission, RESPONSE_TYPE, ResponseClaims,
    ResponsePermission, USER_TYPE, User, UserClaims,
};
use crate::nats::jwt::{self, JwtError, SigningKey};
use crate::pipeline::accounts::{Accounts, PlacementError, TargetAccount};
use crate::pipeline::decision::Grant;
use crate::pipeline::request::ReplyTarget;
use nats_callout_sdk::ConnectionType;

/// nats-server's names of a connection type. The host cannot tell MQTT or a leaf node
/// over WebSocket from the plain one, so a grant of either admits both.
fn nats_names(t: ConnectionType) -> &'static [&'static str] {
    match t {
        ConnectionType::Standard => &["STANDARD"],
        ConnectionType::Websocket => &["WEBSOCKET"],
        ConnectionType::Mqtt => &["MQTT", "MQTT_WS"],
        ConnectionType::Leafnode => &["LEAFNODE", "LEAFNODE_WS"],
        _ => &[],
    }
}

/// The keys that sign and seal responses.
pub struct Signer {
    issuer: SigningKey,
    pub issuer_public: String,
    pub xkey: Option<XKey>,
    /// Operator mode: the accounts users are placed in, each signing its own.
    pub accounts: Option<Accounts>,
}

/// Why no user JWT could be issued for a grant.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The grant's account cannot take users (the client is refused).
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("cannot sign user JWT: {0}")]
    Sign(#[from] JwtError),
}

#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error("signing: {0}")]
    Sign(#[from] JwtError),
    #[error("sealing the response with xkey failed")]
    Seal,
}

impl Signer {
    /// `issuer` must hold its seed.
    pub fn new(
        issuer: &KeyPair,
        xkey: Option<XKey>,
        accounts: Option<Accounts>,
    ) -> Result<Self, JwtError> {
        Ok(Self {
            issuer: SigningKey::from_nkey(issuer)?,
            issuer_public: issuer.public_key(),
            xkey,
            accounts,
        })
    }

    /// The key nats-server names as the `sub` of its requests: config mode our issuer
    /// (`auth_callout.issuer`), operator mode the callout account.
    pub fn request_subject(&self) -> &str {
        self.accounts
            .as_ref()
            .map_or(&self.issuer_public, |a| &a.callout.sub)
    }

    /// The user JWT. Config mode: signed by the issuer, `aud` names the target account.
    /// Operator mode: signed by the target account's key, which places the user there.
    pub fn user_jwt(&self, grant: &Grant, user_nkey: &str, now: i64) -> Result<String, IssueError> {
        let target = match &self.accounts {
            None => None,
            Some(accounts) => Some(accounts.target(&grant.account, now)?),
        };
        Ok(self.sign_user(grant, user_nkey, now, target)?)
    }

    fn sign_user(
        &self,
        grant: &Grant,
        user_nkey: &str,
        now: i64,
        target: Option<&TargetAccount>,
    ) -> Result<String, JwtError> {
        let (iss, aud, signer) = match target {
            None => (&self.issuer_public, grant.account.as_str(), &self.issuer),
            Some(t) => (&t.signer_public, "", &t.signer),
        };
        let mut claims = UserClaims {
            jti: String::new(),
            iat: now,
            iss,
            sub: user_nkey,
            aud,
            name: &grant.name,
            exp: grant.expires_at,
            nats: User {
                publish: Permission {
                    allow: &grant.publish.allow,
                    deny: &grant.publish.deny,
                },
                subscribe: Permission {
                    allow: &grant.subscribe.allow,
                    deny: &grant.subscribe.deny,
                },
                resp: grant.response.map(|r| ResponsePermission {
                    max: r.max_msgs,
                    ttl: i64::try_from(r.ttl_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
                }),
                subs: Some(-1),
                data: Some(-1),
                payload: Some(-1),
                src: &grant.source_networks,
                times: &grant.times,
                times_location: grant.locale.as_deref(),
                allowed_connection_types: grant
                    .allowed_connection_types
                    .iter()
                    .flat_map(|t| nats_names(*t))
                    .copied()
                    .collect(),
                proxy_required: grant.proxy_required,
                bearer_token: false,
                issuer_account: target.and_then(|t| t.issuer_account()),
                kind: USER_TYPE,
                version: CLAIMS_VERSION,
            },
        };
        if let Some(t) = target.filter(|t| t.scoped) {
            claims.nats = User {
                issuer_account: t.issuer_account(),
                ..User::empty()
            };
        }
        jwt::encode(&mut claims, signer)
    }

    /// The authorization response carrying either a user JWT or an error, as bytes to
    /// publish on the request's reply subject.
    pub fn response(
        &self,
        target: &ReplyTarget,
        outcome: Result<&str, &str>,
        now: i64,
    ) -> Result<Vec<u8>, RespondError> {
        let (jwt, error) = match outcome {
            Ok(jwt) => (jwt, ""),
            Err(error) => ("", error),
        };
        let mut claims = ResponseClaims {
            jti: String::new(),
            iat: now,
            iss: &self.issuer_public,
            sub: &target.user_nkey,
            aud: &target.server_id,
            nats: AuthorizationResponse {
                jwt,
                error,
                kind: RESPONSE_TYPE,
                version: CLAIMS_VERSION,
            },
        };
        let token = jwt::encode(&mut claims, &self.issuer)?;
        match (&target.server_xkey, &self.xkey) {
            (Some(server), Some(ours)) => ours
                .seal(token.as_bytes(), server)
                .map_err(|_| RespondError::Seal),
            _ => Ok(token.into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipeline::decision::{Permission as Subjects, ResponsePermission as Reply};

    fn signer() -> Signer {
        Signer::new(&KeyPair::new_account(), None, None).expect("a generated key has a seed")
    }

    /// The claims of a JWT this signer made (verified against its issuer).
    fn claims(token: &str) -> serde_json::Value {
        jwt::decode_verified(token).expect("our own JWT verifies")
    }

    #[test]
    fn user_jwt_has_the_shape_nats_server_decodes() {
        let s = signer();
        let mut grant = Grant::default();
        grant.account = "DEVICES".into();
        grant.name = "sensor-1".into();
        grant.publish = Subjects {
            allow: vec!["telemetry.sensor-1.>".into()],
            deny: vec![],
        };
        grant.subscribe = Subjects {
            allow: vec!["cmd.sensor-1".into()],
            deny: vec!["cmd.sensor-1.admin".into()],
        };
        grant.response = Some(Reply {
            max_msgs: 1,
            ttl_millis: 1500,
        });
        grant.expires_at = Some(4_000_000_000);
        grant.times = vec![nats_callout_sdk::TimeRange {
            start: "08:00:00".into(),
            end: "18:00:00".into(),
        }];
        grant.locale = Some("Europe/Berlin".into());
        grant.source_networks = vec!["10.0.0.0/8".into()];
        grant.allowed_connection_types = vec![ConnectionType::Mqtt];
        grant.proxy_required = true;
        let user = KeyPair::new_user().public_key();
        let c = claims(&s.user_jwt(&grant, &user, 1_700_000_000).expect("signs"));
        assert_eq!(c["iss"], json!(s.issuer_public));
        assert_eq!(c["sub"], json!(user));
        assert_eq!(c["aud"], json!("DEVICES"));
        assert_eq!(c["name"], json!("sensor-1"));
        assert_eq!(c["iat"], json!(1_700_000_000));
        assert_eq!(c["exp"], json!(4_000_000_000_i64));
        assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()), "{c}");
        let nats = &c["nats"];
        assert_eq!(nats["pub"], json!({ "allow": ["telemetry.sensor-1.>"] }));
        assert_eq!(
            nats["sub"],
            json!({ "allow": ["cmd.sensor-1"], "deny": ["cmd.sensor-1.admin"] })
        );
        // Go's time.Duration: nanoseconds.
        assert_eq!(nats["resp"], json!({ "max": 1, "ttl": 1_500_000_000_i64 }));
        assert_eq!(
            (&nats["subs"], &nats["data"], &nats["payload"]),
            (&json!(-1), &json!(-1), &json!(-1))
        );
        // nats-io/jwt's spellings: `times_location` is Go's `Locale`.
        assert_eq!(
            nats["times"],
            json!([{ "start": "08:00:00", "end": "18:00:00" }])
        );
        assert_eq!(nats["times_location"], json!("Europe/Berlin"));
        assert_eq!(nats["src"], json!(["10.0.0.0/8"]));
        assert_eq!(nats["allowed_connection_types"], json!(["MQTT", "MQTT_WS"]));
        assert_eq!(nats["proxy_required"], json!(true));
        assert_eq!(nats["type"], json!("user"));
        assert_eq!(nats["version"], json!(2));

        // Empty name, lists, expiry and response permission are left out, not sent empty.
        let mut bare = Grant::default();
        bare.account = "ANONYMOUS".into();
        let c = claims(&s.user_jwt(&bare, &user, 1_700_000_000).expect("signs"));
        for absent in ["name", "exp"] {
            assert!(c.get(absent).is_none(), "{absent} in {c}");
        }
        for absent in [
            "resp",
            "tags",
            "times",
            "times_location",
            "src",
            "allowed_connection_types",
            "proxy_required",
        ] {
            assert!(c["nats"].get(absent).is_none(), "{absent} in {c}");
        }
        assert_eq!(c["nats"]["pub"], json!({}));
    }

    #[test]
    fn response_carries_either_the_user_jwt_or_the_error() {
        let s = signer();
        let target = ReplyTarget {
            user_nkey: KeyPair::new_user().public_key(),
            server_id: KeyPair::new_server().public_key(),
            server_xkey: None,
        };
        let read = |bytes: Vec<u8>| claims(&String::from_utf8(bytes).expect("a JWT is text"));

        let ok = read(s.response(&target, Ok("the.user.jwt"), 1).expect("signs"));
        assert_eq!(ok["sub"], json!(target.user_nkey));
        assert_eq!(ok["aud"], json!(target.server_id));
        assert_eq!(ok["iss"], json!(s.issuer_public));
        assert_eq!(
            ok["nats"],
            json!({ "jwt": "the.user.jwt", "type": "authorization_response", "version": 2 })
        );

        let denied = read(s.response(&target, Err("unknown nkey"), 1).expect("signs"));
        assert_eq!(
            denied["nats"],
            json!({ "error": "unknown nkey", "type": "authorization_response", "version": 2 })
        );
    }
}
