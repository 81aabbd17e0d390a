//! Step 6: turn a grant into a user JWT, wrap it (or an error) in the authorization
//! response JWT, sign, and seal it back when the request was sealed.

use nkeys::{KeyPair, XKey};

use crate::nats::claims::{
    AuthorizationResponse, CLAIMS_VERSION, Permission, RESPONSE_TYPE, ResponseClaims,
    ResponsePermission, USER_TYPE, User, UserClaims,
};
use crate::nats::jwt::{self, JwtError, SigningKey};
use crate::pipeline::decision::{Grant, Limits, UNLIMITED};
use crate::pipeline::request::ReplyTarget;

/// The keys that sign and seal responses.
pub struct Signer {
    issuer: SigningKey,
    pub issuer_public: String,
    pub xkey: Option<XKey>,
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
    pub fn new(issuer: &KeyPair, xkey: Option<XKey>) -> Result<Self, JwtError> {
        Ok(Self {
            issuer: SigningKey::from_nkey(issuer)?,
            issuer_public: issuer.public_key(),
            xkey,
        })
    }

    /// The user JWT. Config mode: `aud` names the target account.
    pub fn user_jwt(&self, grant: &Grant, user_nkey: &str, now: i64) -> Result<String, JwtError> {
        let limits = grant.limits.unwrap_or(UNLIMITED);
        let Limits {
            subs,
            data,
            payload,
        } = limits;
        let mut claims = UserClaims {
            jti: String::new(),
            iat: now,
            iss: &self.issuer_public,
            sub: user_nkey,
            aud: &grant.account,
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
                subs,
                data,
                payload,
                tags: &grant.tags,
                kind: USER_TYPE,
                version: CLAIMS_VERSION,
            },
        };
        jwt::encode(&mut claims, &self.issuer)
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
        Signer::new(&KeyPair::new_account(), None).expect("a generated key has a seed")
    }

    /// The claims of a JWT this signer made (verified against its issuer).
    fn claims(token: &str) -> serde_json::Value {
        jwt::decode_verified(token).expect("our own JWT verifies")
    }

    #[test]
    fn user_jwt_has_the_shape_nats_server_decodes() {
        let s = signer();
        let grant = Grant {
            account: "DEVICES".into(),
            name: "sensor-1".into(),
            publish: Subjects {
                allow: vec!["telemetry.sensor-1.>".into()],
                deny: vec![],
            },
            subscribe: Subjects {
                allow: vec!["cmd.sensor-1".into()],
                deny: vec!["cmd.sensor-1.admin".into()],
            },
            response: Some(Reply {
                max_msgs: 1,
                ttl_millis: 1500,
            }),
            expires_at: Some(4_000_000_000),
            tags: vec!["site:berlin".into()],
            limits: None,
        };
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
        assert_eq!(nats["tags"], json!(["site:berlin"]));
        assert_eq!(nats["type"], json!("user"));
        assert_eq!(nats["version"], json!(2));

        // Empty name, lists, expiry and response permission are left out, not sent empty.
        let bare = Grant {
            account: "ANONYMOUS".into(),
            ..Grant::default()
        };
        let c = claims(&s.user_jwt(&bare, &user, 1_700_000_000).expect("signs"));
        for absent in ["name", "exp"] {
            assert!(c.get(absent).is_none(), "{absent} in {c}");
        }
        for absent in ["resp", "tags"] {
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
