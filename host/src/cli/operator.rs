//! `nats-callout operator init`: a complete operator-mode deployment without `nsc`. An
//! operator, its system account, the callout account (its JWT carrying the
//! `authorization` block) and the target accounts, each with a signing key; the users
//! the callout, the system and unauthenticated clients log in as; the nats-server
//! resolver block and the callout config that match them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use nkeys::{KeyPair, XKey};

use crate::cli::keys::write_new_secret;
use nats_callout::nats::claims::{CLAIMS_VERSION, Permission, User, UserClaims};
use nats_callout::nats::jwt::{self, SigningKey as Signer};
use nats_callout::nats::operator::{
    ACCOUNT_TYPE, Account as AccountBody, AccountClaims, AccountLimits, OperatorClaims, SigningKey,
    creds,
};
use nats_callout::pipeline::request::unix_now;

/// The callout account's name.
pub const CALLOUT_ACCOUNT: &str = "AUTH";
/// The system account's name.
pub const SYSTEM_ACCOUNT: &str = "SYS";
/// The accounts `init` creates when none are named: those the dev config grants into.
pub const DEFAULT_TARGETS: [&str; 2] = ["DEVICES", "ANONYMOUS"];

/// One account: its identity key (kept offline in production), the signing key that
/// issues its users, and its claims, signed by the operator when written.
pub struct Account {
    pub name: String,
    pub key: KeyPair,
    pub signing: KeyPair,
    pub claims: AccountClaims,
}

impl Account {
    fn new(name: &str, operator: &KeyPair) -> Self {
        let key = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let claims = AccountClaims {
            iat: unix_now(),
            iss: operator.public_key(),
            sub: key.public_key(),
            name: name.to_owned(),
            nats: AccountBody {
                limits: AccountLimits::unlimited(),
                signing_keys: vec![SigningKey::Plain(signing.public_key())],
                kind: ACCOUNT_TYPE.into(),
                version: CLAIMS_VERSION,
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            name: name.to_owned(),
            key,
            signing,
            claims,
        }
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }
}

/// Everything `init` writes, before it is written.
pub struct Deployment {
    pub operator: KeyPair,
    pub system: Account,
    pub callout: Account,
    pub targets: Vec<Account>,
    /// The callout's own user: the callout account's only `auth_users` entry.
    pub callout_user: KeyPair,
    pub system_user: KeyPair,
    pub xkey: Option<XKey>,
}

impl Deployment {
    /// `targets`: the accounts users are placed in, all in `allowed_accounts`.
    pub fn generate(targets: &[String], with_xkey: bool) -> Result<Self> {
        for name in targets {
            if name.is_empty()
                || [CALLOUT_ACCOUNT, SYSTEM_ACCOUNT].contains(&name.as_str())
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!(
                    "account name {name:?}: use letters, digits, '_' or '-', and neither \
                     {CALLOUT_ACCOUNT} nor {SYSTEM_ACCOUNT}"
                );
            }
        }
        let operator = KeyPair::new_operator();
        let system = Account::new(SYSTEM_ACCOUNT, &operator);
        let mut callout = Account::new(CALLOUT_ACCOUNT, &operator);
        let targets: Vec<Account> = targets.iter().map(|n| Account::new(n, &operator)).collect();
        let callout_user = KeyPair::new_user();
        let xkey = with_xkey.then(XKey::new);
        let auth = &mut callout.claims.nats.authorization;
        auth.auth_users = vec![callout_user.public_key()];
        auth.allowed_accounts = targets.iter().map(Account::public_key).collect();
        auth.xkey = xkey.as_ref().map(XKey::public_key).unwrap_or_default();
        Ok(Self {
            operator,
            system,
            callout,
            targets,
            callout_user,
            system_user: KeyPair::new_user(),
            xkey,
        })
    }

    fn accounts(&self) -> impl Iterator<Item = &Account> {
        [&self.system, &self.callout]
            .into_iter()
            .chain(self.targets.iter())
    }

    /// An account's JWT, signed by the operator.
    pub fn account_jwt(&self, account: &Account) -> Result<String> {
        let mut claims = account.claims.clone();
        Ok(jwt::encode(
            &mut claims,
            &Signer::from_nkey(&self.operator)?,
        )?)
    }

    pub fn operator_jwt(&self) -> Result<String> {
        let mut claims = OperatorClaims::new(
            self.operator.public_key(),
            "nats-callout",
            self.system.public_key(),
            unix_now(),
        );
        Ok(jwt::encode(
            &mut claims,
            &Signer::from_nkey(&self.operator)?,
        )?)
    }

    /// The sentinel: a bearer user of the callout account that may do nothing. Clients
    /// that send no user JWT of their own get it from nats-server (`default_sentinel`),
    /// and with it their way to the callout.
    pub fn sentinel_jwt(&self) -> Result<String> {
        user_jwt(&self.callout.key, &KeyPair::new_user(), "sentinel", true)
    }

    /// nats-server's operator-mode settings: the trusted operator, the system account,
    /// a memory resolver preloaded with every account JWT, and the sentinel. Inline
    /// JWTs, so the block works wherever it is included from.
    pub fn server_config(&self) -> Result<String> {
        let mut preload = String::new();
        for a in self.accounts() {
            preload.push_str(&format!(
                "    # {}\n    {}: {}\n",
                a.name,
                a.public_key(),
                self.account_jwt(a)?
            ));
        }
        Ok(format!(
            "# Operator mode, written by `nats-callout operator init`.\n\
             operator: {}\n\
             system_account: {}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n{preload}}}\n\
             default_sentinel: {}\n",
            self.operator_jwt()?,
            self.system.public_key(),
            self.sentinel_jwt()?,
        ))
    }

    /// The callout config's operator-mode part; paths relative to `init`'s folder.
    pub fn callout_config(&self) -> String {
        let mut accounts = String::new();
        for a in &self.targets {
            accounts.push_str(&format!(
                "    {}:\n      jwt_file: accounts/{0}.jwt\n      signing_key_file: accounts/{0}.sk\n",
                a.name
            ));
        }
        let xkey = if self.xkey.is_some() {
            "xkey_seed_file: xkey-seed\n"
        } else {
            ""
        };
        format!(
            "# Operator mode, written by `nats-callout operator init`; add permissions,\n\
             # plugins and routes. Grants name the accounts below in `account:`.\n\
             nats:\n  - name: local\n    url: nats://127.0.0.1:4222\n    \
             credentials_file: callout.creds\n\
             issuer_seed_file: issuer-seed\n{xkey}\
             operator:\n  callout_account_jwt_file: accounts/{CALLOUT_ACCOUNT}.jwt\n  \
             accounts:\n{accounts}"
        )
    }

    /// Write every file into `dir` (created owner-only); seeds are owner-only too, and
    /// nothing is overwritten.
    pub fn write(&self, dir: &Path) -> Result<()> {
        if dir.join("operator.jwt").exists() {
            bail!(
                "{} already holds a deployment; remove it or pick another --dir",
                dir.display()
            );
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        let accounts = dir.join("accounts");
        builder
            .create(&accounts)
            .with_context(|| format!("cannot create {}", accounts.display()))?;
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(&dir.join("operator.jwt"), &self.operator_jwt()?)?;
        write_new_secret(&dir.join("operator.nk"), &self.operator.seed()?)?;
        for a in self.accounts() {
            write(
                &accounts.join(format!("{}.jwt", a.name)),
                &self.account_jwt(a)?,
            )?;
            write_new_secret(&accounts.join(format!("{}.nk", a.name)), &a.key.seed()?)?;
            write_new_secret(&accounts.join(format!("{}.sk", a.name)), &a.signing.seed()?)?;
        }
        // The callout answers with the callout account's signing key: its identity
        // key stays with the operator.
        write_new_secret(&dir.join("issuer-seed"), &self.callout.signing.seed()?)?;
        if let Some(x) = &self.xkey {
            write_new_secret(&dir.join("xkey-seed"), &x.seed()?)?;
        }
        let users = [
            (
                "callout.creds",
                &self.callout,
                &self.callout_user,
                "callout",
            ),
            ("sys.creds", &self.system, &self.system_user, "sys"),
        ];
        for (file, account, user, name) in users {
            let token = user_jwt(&account.key, user, name, false)?;
            write_new_secret(&dir.join(file), creds(&token, &user.seed()?).trim_end())?;
        }
        let sentinel = KeyPair::new_user();
        let token = user_jwt(&self.callout.key, &sentinel, "sentinel", true)?;
        write_new_secret(
            &dir.join("sentinel.creds"),
            creds(&token, &sentinel.seed()?).trim_end(),
        )?;
        write(&dir.join("nats-server.conf"), &self.server_config()?)?;
        write(&dir.join("callout.yaml"), &self.callout_config())?;
        Ok(())
    }
}

/// A plain user of `account`: everything allowed, or (a bearer sentinel) nothing.
fn user_jwt(account: &KeyPair, user: &KeyPair, name: &str, sentinel: bool) -> Result<String> {
    let deny_all = [">".to_owned()];
    let mut body = User {
        subs: Some(-1),
        data: Some(-1),
        payload: Some(-1),
        bearer_token: sentinel,
        ..User::empty()
    };
    if sentinel {
        body.publish = Permission {
            allow: &[],
            deny: &deny_all,
        };
        body.subscribe = Permission {
            allow: &[],
            deny: &deny_all,
        };
    }
    let issuer = account.public_key();
    let subject = user.public_key();
    let mut claims = UserClaims {
        jti: String::new(),
        iat: unix_now(),
        iss: &issuer,
        sub: &subject,
        aud: "",
        name,
        exp: None,
        nats: body,
    };
    Ok(jwt::encode(&mut claims, &Signer::from_nkey(account)?)?)
}

/// `nats-callout operator init`.
pub fn init(dir: &Path, targets: &[String], with_xkey: bool) -> Result<()> {
    let d = Deployment::generate(targets, with_xkey)?;
    d.write(dir)?;
    println!(
        "wrote an operator-mode deployment into {}:\n  \
         nats-server.conf  include it in nats-server's config (operator, resolver, sentinel)\n  \
         callout.yaml      the callout's operator section; add permissions\n  \
         *.creds           the callout's user, a system user, the sentinel\n  \
         accounts/         each account's JWT, identity seed (.nk) and signing seed (.sk)\n\
         operator:         {}\ncallout account:  {} ({CALLOUT_ACCOUNT})",
        dir.display(),
        d.operator.public_key(),
        d.callout.public_key(),
    );
    for a in &d.targets {
        println!("account:          {} ({})", a.public_key(), a.name);
    }
    Ok(())
}
