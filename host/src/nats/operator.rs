//! Operator mode's own JWTs, in nats-io/jwt v2's JSON shape: the operator's and an
//! account's (read to learn an account's public key, signing keys, expiry and the
//! callout's `authorization` block; written by `nats-callout operator init`), and the
//! `.creds` file format NATS clients log in with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nats::claims::CLAIMS_VERSION;
use crate::nats::jwt::{self, JwtError, WithJti};

pub const ACCOUNT_TYPE: &str = "account";
pub const OPERATOR_TYPE: &str = "operator";
/// `allowed_accounts: ["*"]`: every account of the operator (nats-io/jwt's `AnyAccount`).
pub const ANY_ACCOUNT: &str = "*";

/// An account JWT. Only what this service reads or writes is typed; nats-server keeps
/// the rest (imports, exports, mappings) to itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountClaims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nats: Account,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    #[serde(default)]
    pub limits: AccountLimits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<SigningKey>,
    #[serde(default, skip_serializing_if = "ExternalAuthorization::is_empty")]
    pub authorization: ExternalAuthorization,
    /// Users revoked: public key (or `*`, every user) → users issued at or before this
    /// time (unix seconds) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub version: u32,
}

/// An account's limits. Go omits zeros and reads a missing limit as 0, which for
/// connections means none at all, so an account this service writes states every
/// limit: -1, unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountLimits {
    #[serde(default)]
    pub subs: i64,
    #[serde(default)]
    pub data: i64,
    #[serde(default)]
    pub payload: i64,
    #[serde(default)]
    pub imports: i64,
    #[serde(default)]
    pub exports: i64,
    #[serde(default)]
    pub wildcards: bool,
    #[serde(default)]
    pub conn: i64,
    #[serde(default)]
    pub leaf: i64,
    /// JetStream: enabled when either storage is not 0.
    #[serde(default)]
    pub mem_storage: i64,
    #[serde(default)]
    pub disk_storage: i64,
    #[serde(default)]
    pub streams: i64,
    #[serde(default)]
    pub consumer: i64,
}

impl AccountLimits {
    /// Everything unlimited, JetStream included.
    pub fn unlimited() -> Self {
        Self {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            mem_storage: -1,
            disk_storage: -1,
            streams: -1,
            consumer: -1,
        }
    }
}

/// One of an account's signing keys: a plain key, or a scoped one whose template
/// replaces the permissions of every user it signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    Plain(String),
    Scoped(UserScope),
}

impl SigningKey {
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Plain(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserScope {
    /// `user_scope`, the only kind there is.
    pub kind: String,
    pub key: String,
    #[serde(default)]
    pub role: String,
    /// nats-io/jwt's `UserPermissionLimits`, kept as nats-server reads it.
    #[serde(default)]
    pub template: serde_json::Value,
    #[serde(default)]
    pub description: String,
}

/// The `authorization` block that makes an account a callout account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalAuthorization {
    /// Users (public keys) that bypass the callout: the callout's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_users: Vec<String>,
    /// Accounts the callout may place users in (public keys, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_accounts: Vec<String>,
    /// The callout's xkey: nats-server seals requests to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub xkey: String,
}

impl ExternalAuthorization {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl WithJti for AccountClaims {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountJwtError {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("not an account JWT (type {0:?})")]
    NotAccount(String),
    #[error("subject {0:?} is not an account public key (A...)")]
    Subject(String),
}

impl AccountClaims {
    /// Decode an account JWT, its signature verified against its own issuer (the
    /// operator, whose key nats-server checks; this service trusts the file it was
    /// given).
    pub fn decode(token: &str) -> Result<Self, AccountJwtError> {
        let claims: Self = jwt::decode_verified(token.trim())?;
        if claims.nats.kind != ACCOUNT_TYPE {
            return Err(AccountJwtError::NotAccount(claims.nats.kind));
        }
        if !crate::nats::keys::is_public_key_of(&claims.sub, nkeys::KeyPairType::Account) {
            return Err(AccountJwtError::Subject(claims.sub));
        }
        Ok(claims)
    }

    /// The signing key `key` of this account: `Some(None)` its own identity key or a
    /// plain signing key, `Some(Some(scope))` a scoped one, `None` not this account's.
    pub fn signer(&self, key: &str) -> Option<Option<&UserScope>> {
        if key == self.sub {
            return Some(None);
        }
        self.nats
            .signing_keys
            .iter()
            .find(|k| k.key() == key)
            .map(|k| match k {
                SigningKey::Plain(_) => None,
                SigningKey::Scoped(s) => Some(s),
            })
    }

    /// Whether a callout in this account may place users in `account`: its own, or one
    /// `allowed_accounts` names (nats-server's `isAllowedAcount`).
    pub fn allows(&self, account: &str) -> bool {
        let allowed = &self.nats.authorization.allowed_accounts;
        account == self.sub
            || (allowed.len() == 1 && allowed[0] == ANY_ACCOUNT)
            || allowed.iter().any(|a| a == account)
    }
}

/// An operator JWT (self-signed).
#[derive(Debug, Serialize)]
pub struct OperatorClaims {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    pub iat: i64,
    pub iss: String,
    pub sub: String,
    pub name: String,
    pub nats: Operator,
}

#[derive(Debug, Serialize)]
pub struct Operator {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    pub system_account: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
}

impl OperatorClaims {
    pub fn new(public_key: String, name: &str, system_account: String, iat: i64) -> Self {
        Self {
            jti: String::new(),
            iat,
            iss: public_key.clone(),
            sub: public_key,
            name: name.to_owned(),
            nats: Operator {
                signing_keys: Vec::new(),
                system_account,
                kind: OPERATOR_TYPE,
                version: CLAIMS_VERSION,
            },
        }
    }
}

impl WithJti for OperatorClaims {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

/// A `.creds` file: a user JWT and the seed of its user, in the layout `nsc` writes and
/// every NATS client reads.
pub fn creds(user_jwt: &str, user_seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::jwt::SigningKey as Key;

    fn account(operator: &nkeys::KeyPair) -> (nkeys::KeyPair, AccountClaims) {
        let kp = nkeys::KeyPair::new_account();
        let claims = AccountClaims {
            iss: operator.public_key(),
            sub: kp.public_key(),
            name: "AUTH".into(),
            nats: Account {
                limits: AccountLimits::unlimited(),
                kind: ACCOUNT_TYPE.into(),
                version: CLAIMS_VERSION,
                ..Default::default()
            },
            ..Default::default()
        };
        (kp, claims)
    }

    #[test]
    fn account_jwt_round_trips_with_its_signing_keys_and_authorization() {
        let operator = nkeys::KeyPair::new_operator();
        let (_, mut claims) = account(&operator);
        let plain = nkeys::KeyPair::new_account().public_key();
        let scoped = nkeys::KeyPair::new_account().public_key();
        claims.nats.signing_keys = vec![
            SigningKey::Plain(plain.clone()),
            SigningKey::Scoped(UserScope {
                kind: "user_scope".into(),
                key: scoped.clone(),
                role: "devices".into(),
                template: serde_json::json!({ "pub": { "allow": ["a"] } }),
                description: String::new(),
            }),
        ];
        claims.nats.authorization.allowed_accounts = vec!["ADEVICES".into()];
        let token = jwt::encode(&mut claims, &Key::from_nkey(&operator).unwrap()).unwrap();
        let back = AccountClaims::decode(&token).unwrap();
        assert_eq!(back.sub, claims.sub);
        assert!(matches!(back.signer(&claims.sub), Some(None)));
        assert!(matches!(back.signer(&plain), Some(None)));
        assert!(back.signer(&scoped).is_some_and(|s| s.is_some()));
        assert!(back.signer(&operator.public_key()).is_none());
        assert!(back.allows(&claims.sub) && back.allows("ADEVICES"));
        assert!(!back.allows("AOTHER"));
        // JSON as nats-server reads it: every limit stated, `type` and `version` set.
        let raw: serde_json::Value = jwt::decode_verified(&token).unwrap();
        assert_eq!(raw["nats"]["limits"]["conn"], -1);
        assert_eq!(raw["nats"]["type"], "account");
        assert_eq!(raw["nats"]["signing_keys"][0], serde_json::json!(plain));
        assert_eq!(raw["nats"]["signing_keys"][1]["kind"], "user_scope");
    }

    #[test]
    fn only_account_jwts_decode_as_accounts() {
        let operator = nkeys::KeyPair::new_operator();
        let mut op = OperatorClaims::new(operator.public_key(), "O", "ASYS".into(), 1);
        let token = jwt::encode(&mut op, &Key::from_nkey(&operator).unwrap()).unwrap();
        assert!(matches!(
            AccountClaims::decode(&token),
            Err(AccountJwtError::NotAccount(k)) if k == "operator"
        ));
        let (_, mut claims) = account(&operator);
        claims.nats.authorization.allowed_accounts = vec![ANY_ACCOUNT.into()];
        let token = jwt::encode(&mut claims, &Key::from_nkey(&operator).unwrap()).unwrap();
        let mut forged = token.clone();
        forged.truncate(token.len() - 4);
        forged.push_str("AAAA");
        assert!(AccountClaims::decode(&forged).is_err());
        assert!(AccountClaims::decode(&token).unwrap().allows("AANY"));
    }

    #[test]
    fn creds_have_the_layout_clients_parse() {
        let text = creds("eyJ.x.y", "SUSEED");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], "eyJ.x.y");
        let seed_at = lines
            .iter()
            .position(|l| *l == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        assert_eq!(lines[seed_at + 1], "SUSEED");
    }
}
