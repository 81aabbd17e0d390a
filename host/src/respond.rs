//! Step 6: turn a grant into a user JWT, wrap it (or an error) in the authorization
//! response JWT, sign, and seal it back when the request was sealed.

use nkeys::{KeyPair, XKey};

use crate::claims::{
    AuthorizationResponse, CLAIMS_VERSION, Permission, RESPONSE_TYPE, ResponseClaims,
    ResponsePermission, USER_TYPE, User, UserClaims,
};
use crate::decision::{Grant, Limits, UNLIMITED};
use crate::jwt::{self, JwtError, SigningKey};
use crate::request::ReplyTarget;

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
