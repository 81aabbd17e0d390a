//! Which key signs a grant's user JWT, in operator mode.
//!
//! Config mode needs none of this: the issuer signs every user and `aud` names the
//! account. In operator mode nats-server places a user in the account that issued its
//! JWT, so each target account's own key (or one of its signing keys, with
//! `issuer_account` set) signs its users; and it admits the placement only when the
//! callout account's JWT lists that account in `allowed_accounts`. The host checks both
//! before nats-server sees the answer, so a refusal says why instead of nats-server's
//! generic "authorization violation".

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use nkeys::KeyPairType;

use crate::nats::jwt::{JwtError, SigningKey};
use crate::nats::keys::{KeyError, SeedSource};
use crate::nats::operator::{AccountClaims, AccountJwtError};
use crate::ops::config::{Config, OperatorConfig};

/// The config key of the callout's xkey seed, for messages.
const XKEY_KEY: &str = "xkey_seed_file";

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: {source}")]
    Jwt {
        key: String,
        source: AccountJwtError,
    },
    #[error(transparent)]
    Seed(#[from] KeyError),
    #[error("{key}: {message}")]
    Mismatch { key: String, message: String },
    #[error("signing: {0}")]
    Sign(#[from] JwtError),
}

/// Why a grant's account cannot be issued into. Each names the account as the grant
/// did, and what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("account {account:?} is not configured for operator mode (operator.accounts: {known})")]
    Unknown { account: String, known: String },
    #[error("account {account:?} ({public}) is not in the callout account's allowed_accounts")]
    NotAllowed { account: String, public: String },
    #[error("account {account:?} ({public}): its JWT expired at {at}")]
    Expired {
        account: String,
        public: String,
        at: i64,
    },
}

/// An account users are placed in, with the key that signs them.
pub struct TargetAccount {
    pub name: String,
    pub public_key: String,
    pub signer: SigningKey,
    pub signer_public: String,
    /// A scoped signing key: its template supplies the user's permissions, and the
    /// user JWT must state none.
    pub scoped: bool,
    allowed: bool,
    expires: Option<i64>,
}

impl TargetAccount {
    /// `issuer_account`: set when a signing key, not the account's own key, signs.
    pub fn issuer_account(&self) -> Option<&str> {
        (self.signer_public != self.public_key).then_some(self.public_key.as_str())
    }
}

/// Operator mode's accounts: the callout account and every target account.
pub struct Accounts {
    /// The callout account's JWT: requests name its key as `sub`, and its users' own
    /// JWTs are verified against its keys and revocations.
    pub callout: AccountClaims,
    /// By configured name and by public key (a plugin may name either).
    targets: HashMap<String, Arc<TargetAccount>>,
    names: Vec<String>,
    /// What loading found worth an operator's look (`check` prints these).
    pub notes: Vec<String>,
}

impl Accounts {
    /// Read the account JWTs and signing seeds of `op`, and check them against the
    /// keys this service holds: `issuer` (public) signs responses, `xkey` (public) opens
    /// requests.
    pub fn load(
        cfg: &Config,
        op: &OperatorConfig,
        issuer: &str,
        xkey: Option<&str>,
    ) -> Result<Self, AccountsError> {
        let callout = read_account(
            cfg,
            "operator.callout_account_jwt_file",
            &op.callout_account_jwt_file,
        )?;
        let key = "operator.callout_account_jwt_file".to_owned();
        let mismatch = |message: String| AccountsError::Mismatch {
            key: key.clone(),
            message,
        };
        let auth = &callout.nats.authorization;
        if auth.auth_users.is_empty() {
            return Err(mismatch(format!(
                "account {} has no authorization.auth_users: nats-server does not call out \
                 for it",
                callout.sub
            )));
        }
        if callout.signer(issuer).is_none() {
            return Err(mismatch(format!(
                "the issuer seed's key {issuer} is neither account {} nor one of its signing \
                 keys",
                callout.sub
            )));
        }
        match (auth.xkey.as_str(), xkey) {
            ("", None) => {}
            (theirs, Some(ours)) if theirs == ours => {}
            ("", Some(ours)) => {
                return Err(mismatch(format!(
                    "{XKEY_KEY} is set ({ours}) but the account's authorization has no xkey: \
                     nats-server would not seal requests"
                )));
            }
            (theirs, ours) => {
                return Err(mismatch(format!(
                    "the account's authorization.xkey is {theirs}, but {XKEY_KEY} {}",
                    ours.map_or("is not set".to_owned(), |o| format!("holds {o}"))
                )));
            }
        }
        let mut targets = HashMap::new();
        let mut notes = Vec::new();
        for (name, entry) in &op.accounts {
            let at = format!("operator.accounts.{name}");
            let claims = read_account(cfg, &format!("{at}.jwt_file"), &entry.jwt_file)?;
            let seed_file = entry.signing_key_file.as_ref().map(|p| cfg.resolve(p));
            let what = format!("{at}.signing_key_file");
            let env = entry
                .signing_key_env
                .clone()
                .unwrap_or_else(|| default_signing_key_env(name));
            let src = SeedSource {
                what: &what,
                env: &env,
                file: seed_file.as_deref(),
            };
            let kp = src.required(src.key_pair(KeyPairType::Account)?)?;
            let signer_public = kp.public_key();
            let Some(scope) = claims.signer(&signer_public) else {
                return Err(AccountsError::Mismatch {
                    key: what,
                    message: format!(
                        "key {signer_public} is neither account {} nor one of its signing keys",
                        claims.sub
                    ),
                });
            };
            let allowed = callout.allows(&claims.sub);
            if !allowed {
                notes.push(format!(
                    "{at}: account {} is not in the callout account's allowed_accounts: \
                     grants into it are refused",
                    claims.sub
                ));
            }
            if let Some(exp) = claims
                .exp
                .filter(|&exp| exp <= crate::pipeline::request::unix_now())
            {
                notes.push(format!(
                    "{at}: account {}'s JWT expired at {exp}: grants into it are refused",
                    claims.sub
                ));
            }
            let target = Arc::new(TargetAccount {
                name: name.clone(),
                public_key: claims.sub.clone(),
                signer: SigningKey::from_nkey(&kp)?,
                signer_public,
                scoped: scope.is_some(),
                allowed,
                expires: claims.exp,
            });
            targets.insert(claims.sub.clone(), target.clone());
            targets.insert(name.clone(), target);
        }
        Ok(Self {
            callout,
            targets,
            names: op.accounts.keys().cloned().collect(),
            notes,
        })
    }

    /// The account a grant names (by configured name or public key), if users may be
    /// placed in it now.
    pub fn target(&self, account: &str, now: i64) -> Result<&TargetAccount, PlacementError> {
        let Some(t) = self.targets.get(account) else {
            return Err(PlacementError::Unknown {
                account: account.to_owned(),
                known: if self.names.is_empty() {
                    "none".to_owned()
                } else {
                    self.names.join(", ")
                },
            });
        };
        if !t.allowed {
            return Err(PlacementError::NotAllowed {
                account: account.to_owned(),
                public: t.public_key.clone(),
            });
        }
        if let Some(at) = t.expires.filter(|&at| at <= now) {
            return Err(PlacementError::Expired {
                account: account.to_owned(),
                public: t.public_key.clone(),
                at,
            });
        }
        Ok(t)
    }

    /// The public key of the account a grant names, whether or not users may be placed
    /// in it now.
    pub fn public_key<'a>(&'a self, account: &'a str) -> &'a str {
        self.targets.get(account).map_or(account, |t| &t.public_key)
    }

    /// The configured accounts by name, with their public keys, for `check`.
    pub fn describe(&self) -> BTreeMap<&str, &TargetAccount> {
        self.names
            .iter()
            .filter_map(|n| self.targets.get(n).map(|t| (n.as_str(), &**t)))
            .collect()
    }
}

/// `AUTH_CALLOUT_<NAME>_SIGNING_KEY`, the name upper-cased and every character a shell
/// variable cannot hold turned into `_`: a Kubernetes `secretKeyRef` per account needs
/// no extra config.
pub fn default_signing_key_env(account: &str) -> String {
    let name: String = account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("AUTH_CALLOUT_{name}_SIGNING_KEY")
}

fn read_account(cfg: &Config, key: &str, path: &Path) -> Result<AccountClaims, AccountsError> {
    let path = cfg.resolve(path);
    let text = std::fs::read_to_string(&path).map_err(|source| AccountsError::Read {
        key: key.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    AccountClaims::decode(&text).map_err(|source| AccountsError::Jwt {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use nkeys::KeyPair;

    use super::*;
    use crate::nats::claims::CLAIMS_VERSION;
    use crate::nats::jwt;
    use crate::nats::operator::{
        ACCOUNT_TYPE, Account, AccountLimits, SigningKey as Key, UserScope,
    };

    /// A folder with the callout account AUTH (signing key `issuer`, xkey `xkey`) and
    /// the accounts `targets`, each with its signing seed, as `operator init` writes.
    struct Fixture {
        dir: tempfile::TempDir,
        operator: KeyPair,
        issuer: KeyPair,
        xkey: nkeys::XKey,
        targets: Vec<(String, KeyPair, KeyPair)>,
    }

    impl Fixture {
        fn new(targets: &[&str]) -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                operator: KeyPair::new_operator(),
                issuer: KeyPair::new_account(),
                xkey: nkeys::XKey::new(),
                targets: targets
                    .iter()
                    .map(|n| {
                        (
                            n.to_string(),
                            KeyPair::new_account(),
                            KeyPair::new_account(),
                        )
                    })
                    .collect(),
            }
        }

        fn write(&self, name: &str, mut claims: AccountClaims) {
            let signer = jwt::SigningKey::from_nkey(&self.operator).unwrap();
            let token = jwt::encode(&mut claims, &signer).unwrap();
            std::fs::write(self.dir.path().join(format!("{name}.jwt")), token).unwrap();
        }

        fn claims(&self, key: &KeyPair, signing: Vec<Key>) -> AccountClaims {
            AccountClaims {
                iss: self.operator.public_key(),
                sub: key.public_key(),
                nats: Account {
                    limits: AccountLimits::unlimited(),
                    signing_keys: signing,
                    kind: ACCOUNT_TYPE.into(),
                    version: CLAIMS_VERSION,
                    ..Default::default()
                },
                ..Default::default()
            }
        }

        /// Write every file, `edit` changing AUTH's claims and each target's first.
        fn load(&self, edit: impl Fn(&str, &mut AccountClaims)) -> Result<Accounts, AccountsError> {
            let auth_key = KeyPair::new_account();
            let mut auth = self.claims(&auth_key, vec![Key::Plain(self.issuer.public_key())]);
            auth.name = "AUTH".into();
            auth.nats.authorization.auth_users = vec![KeyPair::new_user().public_key()];
            auth.nats.authorization.xkey = self.xkey.public_key();
            auth.nats.authorization.allowed_accounts = self
                .targets
                .iter()
                .map(|(_, k, _)| k.public_key())
                .collect();
            edit("AUTH", &mut auth);
            self.write("AUTH", auth);
            let mut yaml = String::from(
                "nats: [{ url: nats://127.0.0.1:4222 }]\npermissions: { noauth: {} }\n\
                 operator:\n  callout_account_jwt_file: AUTH.jwt\n  accounts:\n",
            );
            for (name, key, signing) in &self.targets {
                let mut claims = self.claims(key, vec![Key::Plain(signing.public_key())]);
                edit(name, &mut claims);
                self.write(name, claims);
                let seed = self.dir.path().join(format!("{name}.sk"));
                std::fs::write(&seed, signing.seed().unwrap()).unwrap();
                yaml.push_str(&format!(
                    "    {name}: {{ jwt_file: {name}.jwt, signing_key_file: {name}.sk }}\n"
                ));
            }
            let path = self.dir.path().join("callout.yaml");
            std::fs::write(&path, &yaml).unwrap();
            let cfg = Config::load(&path).unwrap();
            Accounts::load(
                &cfg,
                cfg.operator.as_ref().unwrap(),
                &self.issuer.public_key(),
                Some(&self.xkey.public_key()),
            )
        }
    }

    #[test]
    fn places_users_in_configured_allowed_accounts_only() {
        let f = Fixture::new(&["DEVICES", "APP", "OUTSIDE"]);
        let outside = f.targets[2].1.public_key();
        let app_signer = f.targets[1].2.public_key();
        let accounts = f
            .load(|name, c| match name {
                "AUTH" => c
                    .nats
                    .authorization
                    .allowed_accounts
                    .retain(|a| *a != outside),
                "APP" => {
                    c.nats.signing_keys = vec![Key::Scoped(UserScope {
                        kind: "user_scope".into(),
                        key: app_signer.clone(),
                        role: String::new(),
                        template: serde_json::json!({}),
                        description: String::new(),
                    })]
                }
                "DEVICES" => c.exp = Some(2_000_000_000),
                _ => {}
            })
            .unwrap();
        let devices = accounts.target("DEVICES", 1_900_000_000).unwrap();
        assert_eq!(
            devices.issuer_account(),
            Some(f.targets[0].1.public_key().as_str())
        );
        assert!(!devices.scoped);
        // By public key too.
        assert!(accounts.target(&f.targets[0].1.public_key(), 0).is_ok());
        assert!(accounts.target("APP", 0).unwrap().scoped);
        assert_eq!(
            accounts.target("DEVICES", 2_000_000_000).err(),
            Some(PlacementError::Expired {
                account: "DEVICES".into(),
                public: f.targets[0].1.public_key(),
                at: 2_000_000_000
            })
        );
        assert!(matches!(
            accounts.target("OUTSIDE", 0),
            Err(PlacementError::NotAllowed { .. })
        ));
        assert_eq!(accounts.notes.len(), 1, "{:?}", accounts.notes);
        let e = accounts.target("NOWHERE", 0).err().unwrap().to_string();
        assert!(
            e.contains("(operator.accounts: APP, DEVICES, OUTSIDE)"),
            "{e}"
        );
    }

    #[test]
    fn refuses_keys_the_account_jwts_do_not_name() {
        let f = Fixture::new(&["DEVICES"]);
        let message = |edit: &dyn Fn(&str, &mut AccountClaims)| {
            f.load(edit)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = message(&|n, c| {
            if n == "AUTH" {
                c.nats.signing_keys.clear()
            }
        });
        assert!(
            e.contains("the issuer seed's key") && e.contains("neither account"),
            "{e}"
        );
        let e = message(&|n, c| {
            if n == "DEVICES" {
                c.nats.signing_keys.clear()
            }
        });
        assert!(
            e.starts_with("operator.accounts.DEVICES.signing_key_file: key"),
            "{e}"
        );
        let e = message(&|n, c| {
            if n == "AUTH" {
                c.nats.authorization.xkey = nkeys::XKey::new().public_key()
            }
        });
        assert!(e.contains("authorization.xkey is"), "{e}");
        let e = message(&|n, c| {
            if n == "AUTH" {
                c.nats.authorization.auth_users.clear()
            }
        });
        assert!(e.contains("no authorization.auth_users"), "{e}");
        let e = message(&|n, c| {
            if n == "DEVICES" {
                c.nats.kind = "operator".into()
            }
        });
        assert!(e.contains("DEVICES.jwt_file: not an account JWT"), "{e}");
    }

    #[test]
    fn default_signing_key_env_is_a_shell_name() {
        assert_eq!(
            default_signing_key_env("my-app.v2"),
            "AUTH_CALLOUT_MY_APP_V2_SIGNING_KEY"
        );
    }
}
