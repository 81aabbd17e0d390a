//! Step 3 of the flow: open the xkey seal, decode the authorization-request JWT and
//! check that nats-server really sent it, for us, recently.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nkeys::{KeyPairType, XKey};

use crate::nats::claims::{
    AuthorizationRequest, CLAIMS_VERSION, REQUEST_AUDIENCE, REQUEST_TYPE, RequestClaims,
};
use crate::nats::jwt::{self, JwtError};

/// Header in which nats-server names its own xkey when it sealed the request.
pub const XKEY_HEADER: &str = "Nats-Server-Xkey";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request is sealed with xkey but no xkey seed is configured (xkey_seed_file)")]
    SealedWithoutXkey,
    #[error("header {XKEY_HEADER} is not a valid xkey")]
    BadServerXkey,
    #[error("cannot open the xkey seal (wrong auth_callout.xkey?)")]
    Unseal,
    #[error("request is not sealed but an xkey is configured; refusing plaintext")]
    NotSealed,
    #[error("request JWT: {0}")]
    Jwt(#[from] JwtError),
    #[error("request issuer {0:?} is not a server key (N...)")]
    IssuerNotServer(String),
    #[error("request issuer {iss} differs from server_id.id {id}")]
    IssuerMismatch { iss: String, id: String },
    #[error("request audience {0:?} is not {REQUEST_AUDIENCE:?}")]
    Audience(String),
    #[error("request type {0:?} is not {REQUEST_TYPE:?} version {CLAIMS_VERSION}")]
    Type(String),
    #[error("request has no expiry")]
    NoExpiry,
    #[error("request expired {0}s ago")]
    Expired(i64),
    #[error(
        "request is for {0}, but this service answers for {1} (config mode: its issuer; \
         operator mode: the callout account)"
    )]
    WrongIssuer(String, String),
    #[error("request user_nkey {0:?} is not a user key (U...)")]
    UserNkey(String),
}

/// Where an error response can go even when the request did not verify.
#[derive(Debug, Clone)]
pub struct ReplyTarget {
    pub user_nkey: String,
    pub server_id: String,
    /// The server's xkey when the request was sealed: the reply is sealed back to it.
    pub server_xkey: Option<XKey>,
}

/// A request that failed verification, and where an error response can go if enough
/// of it was readable. Boxed: the failure path is rare and the target is large.
#[derive(Debug)]
pub struct Rejected {
    pub error: RequestError,
    pub target: Option<ReplyTarget>,
}

fn rejected(error: impl Into<RequestError>, target: Option<ReplyTarget>) -> Box<Rejected> {
    Box::new(Rejected {
        error: error.into(),
        target,
    })
}

/// A request that passed every check.
#[derive(Debug)]
pub struct VerifiedRequest {
    pub request: AuthorizationRequest,
    pub target: ReplyTarget,
}

/// What the verifier needs to know about us.
pub struct Verifier<'a> {
    /// Our issuer's public key; config-mode requests carry it as `sub`.
    pub issuer: &'a str,
    pub xkey: Option<&'a XKey>,
    pub leeway: Duration,
}

impl Verifier<'_> {
    /// Verify one message. On failure, also returns where an error response could be
    /// sent when enough of the request was readable.
    pub fn verify(
        &self,
        payload: &[u8],
        server_xkey_header: Option<&str>,
    ) -> Result<VerifiedRequest, Box<Rejected>> {
        let server_xkey = match (server_xkey_header, self.xkey) {
            (Some(h), Some(_)) => Some(
                XKey::from_public_key(h)
                    .map_err(|_| rejected(RequestError::BadServerXkey, None))?,
            ),
            (Some(_), None) => return Err(rejected(RequestError::SealedWithoutXkey, None)),
            (None, _) => None,
        };
        let opened;
        let token_bytes = match (&server_xkey, self.xkey) {
            (Some(server), Some(ours)) => {
                opened = ours
                    .open(payload, server)
                    .map_err(|_| rejected(RequestError::Unseal, None))?;
                &opened[..]
            }
            _ => payload,
        };
        let token = std::str::from_utf8(token_bytes)
            .map_err(|_| rejected(JwtError::Shape, None))?
            .trim();

        let target_of = |claims: &RequestClaims| {
            Some(ReplyTarget {
                user_nkey: claims.nats.user_nkey.clone(),
                server_id: claims.iss.clone(),
                server_xkey: server_xkey.clone(),
            })
            .filter(|t| !t.user_nkey.is_empty() && !t.server_id.is_empty())
        };
        let claims: RequestClaims = match jwt::decode_verified(token) {
            Ok(c) => c,
            Err(e) => {
                let target = jwt::decode_unverified::<RequestClaims>(token)
                    .as_ref()
                    .and_then(target_of);
                return Err(rejected(e, target));
            }
        };
        let target = target_of(&claims);
        let sealed = server_xkey.is_some();
        self.check(&claims, sealed)
            .map_err(|e| rejected(e, target.clone()))?;
        let target = target.ok_or_else(|| rejected(RequestError::UserNkey(String::new()), None))?;
        Ok(VerifiedRequest {
            request: claims.nats,
            target,
        })
    }

    fn check(&self, c: &RequestClaims, sealed: bool) -> Result<(), RequestError> {
        if self.xkey.is_some() && !sealed {
            return Err(RequestError::NotSealed);
        }
        // The key `decode_verified` just verified the request with, from the cache.
        if !crate::nats::keys::public_key(&c.iss).is_ok_and(|k| k.kind() == KeyPairType::Server) {
            return Err(RequestError::IssuerNotServer(c.iss.clone()));
        }
        if c.iss != c.nats.server_id.id {
            return Err(RequestError::IssuerMismatch {
                iss: c.iss.clone(),
                id: c.nats.server_id.id.clone(),
            });
        }
        if c.aud != REQUEST_AUDIENCE {
            return Err(RequestError::Audience(c.aud.clone()));
        }
        if c.nats.kind != REQUEST_TYPE || c.nats.version != CLAIMS_VERSION {
            return Err(RequestError::Type(c.nats.kind.clone()));
        }
        let exp = c.exp.ok_or(RequestError::NoExpiry)?;
        // Saturating: `exp` is the sender's; i64::MIN must read as late, not wrap.
        let late = unix_now().saturating_sub(exp);
        if late > self.leeway.as_secs() as i64 {
            return Err(RequestError::Expired(late));
        }
        if c.sub != self.issuer {
            return Err(RequestError::WrongIssuer(
                c.sub.clone(),
                self.issuer.to_owned(),
            ));
        }
        if !crate::nats::keys::is_public_key_of(&c.nats.user_nkey, KeyPairType::User) {
            return Err(RequestError::UserNkey(c.nats.user_nkey.clone()));
        }
        Ok(())
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
