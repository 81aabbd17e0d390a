//! A client's own NATS user JWT (its `.creds` file), verified natively before any plugin
//! sees it, as nats-server itself would verify it.
//!
//! nats-server 2.15 checks the same before it calls out (a JWT that fails is never sent
//! to the callout account: measured in `tests/tests/operator.rs`). The host checks again
//! for the rule every mode follows (nkeys, certificates): a credential is genuine before
//! any plugin, a partner's included, decides who it belongs to, whatever the path it
//! came by. It costs two signature verifications. Checked: signed by the callout
//! account or one of its plain signing keys, within its validity, not revoked by the
//! account, and the client signed the server's nonce with the user's key.

use serde::Deserialize;

use crate::nats::claims::USER_TYPE;
use crate::nats::jwt::{self, JwtError};
use crate::nats::operator::AccountClaims;

/// nats-io/jwt's `All`: a revocation of every user issued before its time.
const ALL_USERS: &str = "*";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserJwtError {
    #[error("user JWT: {0}")]
    Jwt(#[from] JwtError),
    #[error("user JWT is not a user (type {0:?})")]
    NotUser(String),
    #[error("user JWT subject {0:?} is not a user key (U...)")]
    Subject(String),
    #[error("user JWT issuer {issuer} is neither account {account} nor one of its signing keys")]
    Issuer { issuer: String, account: String },
    #[error("user JWT issuer_account {0} is not the callout account {1}")]
    IssuerAccount(String, String),
    #[error(
        "user JWT is signed by the scoped signing key {0}: its users' permissions are the \
         scope's template, which a callout grant would not keep; sign them with a plain key"
    )]
    Scoped(String),
    #[error("user JWT is signed by a signing key but names no issuer_account")]
    NoIssuerAccount,
    #[error("user JWT expired at {0}")]
    Expired(i64),
    #[error("user JWT is not valid before {0}")]
    NotYet(i64),
    #[error("user {0} is revoked by its account")]
    Revoked(String),
    #[error("signature of the server nonce (sig) missing from CONNECT")]
    NoSignature,
    #[error("server nonce missing from the request; cannot check the client's signature")]
    NoNonce,
    #[error("invalid signature of the server nonce: {0}")]
    Signature(String),
}

/// The claims checked here; plugins read the rest from the token.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    iat: i64,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    nats: Nats,
}

#[derive(Deserialize, Default)]
struct Nats {
    #[serde(default)]
    issuer_account: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// The client's proof: the JWT, and its signature of `nonce` with the JWT's user key.
pub struct Presented<'a> {
    pub jwt: &'a str,
    pub nonce: &'a str,
    pub sig: &'a str,
}

/// Verify `p` against `account` (the callout account's JWT) at `now`; returns the user's
/// public key.
pub fn verify(
    p: &Presented<'_>,
    account: &AccountClaims,
    now: i64,
) -> Result<String, UserJwtError> {
    let c: Claims = jwt::decode_verified(p.jwt)?;
    if c.nats.kind != USER_TYPE {
        return Err(UserJwtError::NotUser(c.nats.kind));
    }
    if !crate::nats::keys::is_public_key_of(&c.sub, nkeys::KeyPairType::User) {
        return Err(UserJwtError::Subject(c.sub));
    }
    match account.signer(&c.iss) {
        None => {
            return Err(UserJwtError::Issuer {
                issuer: c.iss,
                account: account.sub.clone(),
            });
        }
        Some(Some(_scope)) => return Err(UserJwtError::Scoped(c.iss)),
        Some(None) => {}
    }
    match c.nats.issuer_account.as_str() {
        "" if c.iss != account.sub => return Err(UserJwtError::NoIssuerAccount),
        "" => {}
        named if named != account.sub => {
            return Err(UserJwtError::IssuerAccount(
                named.to_owned(),
                account.sub.clone(),
            ));
        }
        _ => {}
    }
    if let Some(exp) = c.exp.filter(|&exp| exp <= now) {
        return Err(UserJwtError::Expired(exp));
    }
    if let Some(nbf) = c.nbf.filter(|&nbf| nbf > now) {
        return Err(UserJwtError::NotYet(nbf));
    }
    let revoked = |key: &str| {
        account
            .nats
            .revocations
            .get(key)
            .is_some_and(|&at| c.iat <= at)
    };
    if revoked(&c.sub) || revoked(ALL_USERS) {
        return Err(UserJwtError::Revoked(c.sub));
    }
    if p.sig.is_empty() {
        return Err(UserJwtError::NoSignature);
    }
    if p.nonce.is_empty() {
        return Err(UserJwtError::NoNonce);
    }
    crate::runtime::capabilities::verify_nkey_signature(&c.sub, p.nonce.as_bytes(), p.sig)
        .map_err(UserJwtError::Signature)?;
    Ok(c.sub)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use nkeys::KeyPair;

    use super::*;
    use crate::nats::jwt::SigningKey;
    use crate::nats::operator::SigningKey as Key;

    struct Fixture {
        account: KeyPair,
        signing: KeyPair,
        claims: AccountClaims,
        user: KeyPair,
    }

    fn fixture() -> Fixture {
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let mut claims = AccountClaims {
            sub: account.public_key(),
            ..Default::default()
        };
        claims.nats.signing_keys = vec![Key::Plain(signing.public_key())];
        Fixture {
            account,
            signing,
            claims,
            user: KeyPair::new_user(),
        }
    }

    /// A user JWT signed by `by`, as `nsc` writes one, edited by `edit`.
    fn token(f: &Fixture, by: &KeyPair, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let (iss, account) = (by.public_key(), f.account.public_key());
        let mut claims = serde_json::json!({
            "iat": 1_000,
            "iss": iss,
            "sub": f.user.public_key(),
            "name": "legacy",
            "nats": { "type": "user", "version": 2 },
        });
        if iss != account {
            claims["nats"]["issuer_account"] = account.into();
        }
        edit(&mut claims);
        jwt::encode(&mut claims, &SigningKey::from_nkey(by).unwrap()).unwrap()
    }

    fn check(f: &Fixture, jwt: &str, signer: &KeyPair) -> Result<String, UserJwtError> {
        let sig = URL_SAFE_NO_PAD.encode(signer.sign(b"nonce-1").unwrap());
        let p = Presented {
            jwt,
            nonce: "nonce-1",
            sig: &sig,
        };
        verify(&p, &f.claims, 2_000)
    }

    #[test]
    fn admits_users_of_the_account_and_its_signing_keys() {
        let f = fixture();
        let user = f.user.public_key();
        assert_eq!(
            check(&f, &token(&f, &f.account, |_| {}), &f.user),
            Ok(user.clone())
        );
        assert_eq!(check(&f, &token(&f, &f.signing, |_| {}), &f.user), Ok(user));
    }

    #[test]
    fn refuses_what_nats_server_would() {
        let mut f = fixture();
        let stranger = KeyPair::new_account();
        let e = check(&f, &token(&f, &stranger, |_| {}), &f.user).unwrap_err();
        assert!(matches!(e, UserJwtError::Issuer { .. }), "{e}");
        // A scoped key's users would lose their template's limits in a grant.
        let scoped = KeyPair::new_account();
        let mut with_scope = f.claims.clone();
        with_scope
            .nats
            .signing_keys
            .push(Key::Scoped(crate::nats::operator::UserScope {
                kind: "user_scope".into(),
                key: scoped.public_key(),
                role: String::new(),
                template: serde_json::Value::Null,
                description: String::new(),
            }));
        let jwt = token(&f, &scoped, |_| {});
        let sig = URL_SAFE_NO_PAD.encode(f.user.sign(b"n").unwrap());
        let p = Presented {
            jwt: &jwt,
            nonce: "n",
            sig: &sig,
        };
        assert!(matches!(
            verify(&p, &with_scope, 2_000),
            Err(UserJwtError::Scoped(_))
        ));
        let e = check(
            &f,
            &token(&f, &f.signing, |c| c["nats"]["issuer_account"] = "".into()),
            &f.user,
        );
        assert_eq!(e, Err(UserJwtError::NoIssuerAccount));
        let other = stranger.public_key();
        let e = check(
            &f,
            &token(&f, &f.account, |c| {
                c["nats"]["issuer_account"] = other.into()
            }),
            &f.user,
        );
        assert!(matches!(e, Err(UserJwtError::IssuerAccount(..))), "{e:?}");
        let e = check(
            &f,
            &token(&f, &f.account, |c| c["exp"] = 2_000.into()),
            &f.user,
        );
        assert_eq!(e, Err(UserJwtError::Expired(2_000)));
        // Someone else's signature of the nonce: the JWT alone is not the user.
        let e = check(&f, &token(&f, &f.account, |_| {}), &KeyPair::new_user()).unwrap_err();
        assert!(matches!(e, UserJwtError::Signature(_)), "{e}");
        // A forged signature over the JWT itself.
        let mut forged = token(&f, &f.account, |_| {});
        forged.replace_range(forged.len() - 6.., "AAAAAA");
        assert!(matches!(
            check(&f, &forged, &f.user),
            Err(UserJwtError::Jwt(_))
        ));
        // Revoked by the account: this user, then every user issued before a time.
        let jwt = token(&f, &f.account, |_| {});
        f.claims.nats.revocations.insert(f.user.public_key(), 1_000);
        assert!(matches!(
            check(&f, &jwt, &f.user),
            Err(UserJwtError::Revoked(_))
        ));
        f.claims.nats.revocations.clear();
        f.claims.nats.revocations.insert(ALL_USERS.into(), 999);
        assert!(
            check(&f, &jwt, &f.user).is_ok(),
            "issued after the revocation"
        );
        f.claims.nats.revocations.insert(ALL_USERS.into(), 1_000);
        assert!(check(&f, &jwt, &f.user).is_err());
        // No signature, no nonce.
        let p = Presented {
            jwt: &jwt,
            nonce: "n",
            sig: "",
        };
        f.claims.nats.revocations.clear();
        assert_eq!(verify(&p, &f.claims, 2_000), Err(UserJwtError::NoSignature));
    }
}
