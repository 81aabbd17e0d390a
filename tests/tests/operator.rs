//! Operator mode against a real nats-server that trusts an operator, set up by
//! `nats-callout operator init` and nothing else: the cases of the operator-mode tests
//! in nats-server's `server/auth_callout_test.go`. Users placed in two accounts, one
//! whose signing key is scoped; grants into an account outside `allowed_accounts`, an
//! unconfigured one and one whose JWT expired refused by the host with its reason;
//! sealed (xkey) and unsealed requests; the oauth2, nkey, password and noauth modes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use nats_callout::nats::claims::{Permission, User, UserClaims};
use nats_callout::nats::jwt::{self, SigningKey as Signer};
use nats_callout::nats::operator::{AccountClaims, SigningKey, UserScope, creds};
use nats_callout::pipeline::request::unix_now;
use nats_callout_tests::oidc::{Oidc, client};
use nats_callout_tests::ops::callout_bin;
use nats_callout_tests::pki::{self, Ca};
use nats_callout_tests::{Callout, NatsServer, S3CRET_BCRYPT, connect, init_tracing};
use serde_json::{Value, json};

const AUDIENCE: &str = "nats-callout";
const AUDIT: &str = "callout.audit";

/// The accounts `operator init` creates here. OUTSIDE is configured in the callout
/// but dropped from `allowed_accounts`; EXPIRED's JWT expired a minute ago.
const ACCOUNTS: [&str; 5] = ["DEVICES", "APP", "ANONYMOUS", "OUTSIDE", "EXPIRED"];

/// An operator-mode deployment: nats-server, the callout, the folder `init` wrote.
struct Deployment {
    server: NatsServer,
    /// The hub's leaf node port.
    leaf_port: u16,
    callout: Callout,
    /// Account name → public key.
    accounts: Vec<(String, String)>,
    /// The callout account's own users may read the audit subject.
    audit: async_nats::Subscriber,
    _audit_client: async_nats::Client,
    _oidc: Oidc,
    oidc_token: String,
    /// The identity of the last admission's audit event.
    last_identity: Value,
}

/// Re-sign account `name`'s JWT with the operator's seed after `edit`, in its file and
/// in the resolver preload of `server_conf`: what `nsc edit account` + `nsc push` do.
fn resign(
    dir: &Path,
    server_conf: &mut String,
    name: &str,
    edit: impl FnOnce(&mut AccountClaims),
) -> Result<()> {
    let path = dir.join(format!("accounts/{name}.jwt"));
    let old = std::fs::read_to_string(&path)?;
    let mut claims = AccountClaims::decode(&old)?;
    edit(&mut claims);
    let operator =
        nkeys::KeyPair::from_seed(std::fs::read_to_string(dir.join("operator.nk"))?.trim())?;
    let new = jwt::encode(&mut claims, &Signer::from_nkey(&operator)?)?;
    std::fs::write(&path, &new)?;
    if !server_conf.contains(old.trim()) {
        bail!("{name}'s JWT is not in the resolver preload");
    }
    *server_conf = server_conf.replace(old.trim(), &new);
    Ok(())
}

fn seed_public(path: &Path) -> Result<String> {
    Ok(nkeys::KeyPair::from_seed(std::fs::read_to_string(path)?.trim())?.public_key())
}

/// `nats-callout operator init` into a new folder, with `accounts` and `--no-xkey`
/// unless `xkey`: the folder and its nats-server config.
fn init(accounts: &[&str], xkey: bool) -> Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(callout_bin()?);
    cmd.args(["operator", "init", "--dir"]).arg(dir.path());
    for a in accounts {
        cmd.args(["--account", a]);
    }
    if !xkey {
        cmd.arg("--no-xkey");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("operator init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let conf = std::fs::read_to_string(dir.path().join("nats-server.conf"))?;
    Ok((dir, conf))
}

/// The public key of account `name` of an `init` folder.
fn account_key(dir: &Path, name: &str) -> Result<String> {
    let jwt = std::fs::read_to_string(dir.join(format!("accounts/{name}.jwt")))?;
    Ok(AccountClaims::decode(&jwt)?.sub)
}

impl Deployment {
    async fn start(xkey: bool) -> Result<Self> {
        let (dir, mut conf) = init(&ACCOUNTS, xkey)?;
        let d = dir.path();
        let outside = account_key(d, "OUTSIDE")?;
        resign(d, &mut conf, "AUTH", |c| {
            c.nats
                .authorization
                .allowed_accounts
                .retain(|a| *a != outside)
        })?;
        // APP's signing key becomes scoped: its template, not the grant, says what
        // APP's users may do.
        let app_signer = seed_public(&d.join("accounts/APP.sk"))?;
        resign(d, &mut conf, "APP", |c| {
            c.nats.signing_keys = vec![SigningKey::Scoped(UserScope {
                kind: "user_scope".into(),
                key: app_signer,
                role: "app".into(),
                template: json!({
                    "pub": { "allow": ["scoped.>", "$SYS.REQ.USER.INFO"] },
                    "sub": { "allow": ["scoped.>", "_INBOX.>"] },
                    "subs": -1, "data": -1, "payload": -1
                }),
                description: String::new(),
            })]
        })?;
        resign(d, &mut conf, "EXPIRED", |c| c.exp = Some(unix_now() - 60))?;
        let leaf_port = nats_callout_tests::free_port()?;
        conf.push_str(&format!("leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n"));
        let server = NatsServer::start(&conf)?;

        let oidc = Oidc::start(
            AUDIENCE,
            vec![client(
                "sensor-1",
                "ES256",
                json!({ "device_id": "sensor-1" }),
            )],
        )?;
        let oidc_token = oidc.token("sensor-1").await?;
        let device = nkeys::KeyPair::new_user();
        std::fs::write(d.join("device-seed"), device.seed()?)?;
        let init_yaml = std::fs::read_to_string(d.join("callout.yaml"))?;
        let info = "\"$SYS.REQ.USER.INFO\"";
        let yaml = format!(
            "{}reload_interval: 200ms\njwks:\n  issuer: \"{issuer}\"\n  audience: [\"{AUDIENCE}\"]\n\
             permissions:\n  \
             oauth2:\n    sensors:\n      azp: sensor-1\n      claims: {{ device_id: \"*\" }}\n      account: DEVICES\n      \
             permissions: {{ pub: {{ allow: [\"telemetry.{{{{claims.device_id}}}}\", {info}] }}, sub: {{ allow: [\"_INBOX.>\"] }} }}\n  \
             nkey:\n    device:\n      public_key: {device}\n      account: DEVICES\n      \
             permissions: {{ pub: {{ allow: [\"devices.{{{{name}}}}.>\", {info}] }}, sub: {{ allow: [\"_INBOX.>\"] }} }}\n  \
             password:\n{users}  \
             jwt:\n    account: DEVICES\n  \
             noauth:\n    account: ANONYMOUS\n    permissions: {{ pub: {{ allow: [\"public.>\", {info}] }}, sub: {{ allow: [\"public.>\", \"_INBOX.>\"] }} }}\n",
            init_yaml
                .replace("nats://127.0.0.1:4222", &server.url())
                .replace("    credentials_file: callout.creds\n", &format!("    credentials_file: callout.creds\n    audit_subject: {AUDIT}\n")),
            issuer = oidc.issuer,
            device = device.public_key(),
            users = [
                ("dev", "DEVICES"),
                ("app", "APP"),
                ("outsider", "OUTSIDE"),
                ("late", "EXPIRED"),
                ("stranger", "NOWHERE"),
            ]
            .map(|(user, account)| format!(
                "    {user}:\n      password_hash: \"{S3CRET_BCRYPT}\"\n      account: {account}\n      \
                 permissions: {{ pub: {{ allow: [\"{user}.>\", {info}] }}, sub: {{ allow: [\"_INBOX.>\"] }} }}\n"
            ))
            .concat(),
        );
        // The callout's own user (an auth_user of AUTH) also reads the audit events.
        let audit_client = connect(
            &server.url(),
            async_nats::ConnectOptions::with_credentials_file(d.join("callout.creds")).await?,
        )
        .await?;
        let audit = audit_client.subscribe(AUDIT).await?;
        audit_client.flush().await?;
        let accounts = ACCOUNTS
            .iter()
            .map(|a| Ok((a.to_string(), account_key(d, a)?)))
            .collect::<Result<_>>()?;
        let callout = Callout::start_in(dir, &yaml).await?;
        Ok(Self {
            server,
            leaf_port,
            callout,
            accounts,
            audit,
            _audit_client: audit_client,
            _oidc: oidc,
            oidc_token,
            last_identity: Value::Null,
        })
    }

    /// A `.creds` file of a user of the callout account AUTH, as `nsc add user` writes
    /// one: signed by `signer` (default AUTH's signing key) naming AUTH as
    /// `issuer_account`, allowed `legacy.>`, expiring at `exp`.
    fn legacy_creds(
        &self,
        name: &str,
        signer: Option<&nkeys::KeyPair>,
        exp: Option<i64>,
    ) -> Result<PathBuf> {
        let dir = self.callout.dir.path();
        let auth = nkeys::KeyPair::from_seed(
            std::fs::read_to_string(dir.join("accounts/AUTH.sk"))?.trim(),
        )?;
        let signer = signer.unwrap_or(&auth);
        let account =
            AccountClaims::decode(&std::fs::read_to_string(dir.join("accounts/AUTH.jwt"))?)?.sub;
        let user = nkeys::KeyPair::new_user();
        let (iss, sub) = (signer.public_key(), user.public_key());
        let legacy = ["legacy.>".to_owned(), "$SYS.REQ.USER.INFO".to_owned()];
        let inbox = ["legacy.>".to_owned(), "_INBOX.>".to_owned()];
        let mut claims = UserClaims {
            jti: String::new(),
            iat: unix_now() - 5,
            iss: &iss,
            sub: &sub,
            aud: "",
            name,
            exp,
            nats: User {
                publish: Permission {
                    allow: &legacy,
                    deny: &[],
                },
                subscribe: Permission {
                    allow: &inbox,
                    deny: &[],
                },
                subs: Some(-1),
                data: Some(-1),
                payload: Some(-1),
                issuer_account: Some(&account),
                ..User::empty()
            },
        };
        let token = jwt::encode(&mut claims, &Signer::from_nkey(signer)?)?;
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, creds(&token, &user.seed()?))?;
        Ok(path)
    }

    fn account(&self, name: &str) -> &str {
        &self
            .accounts
            .iter()
            .find(|(n, _)| n == name)
            .expect("an account of ACCOUNTS")
            .1
    }

    /// The next decision the callout published.
    async fn decision(&mut self) -> Result<Value> {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.audit.next())
            .await
            .with_context(|| {
                format!(
                    "no audit event within 10s; nats-server: {}",
                    self.server.log()
                )
            })?
            .context("audit subscription closed")?;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// Connect with `options`, then ask nats-server who the client is.
    async fn admitted(&mut self, options: async_nats::ConnectOptions) -> Result<Value> {
        let client = connect(&self.server.url(), options).await?;
        let decision = self.decision().await?;
        assert_eq!(decision["verdict"], "allowed", "{decision}");
        self.last_identity = decision["identity"].clone();
        let reply = client
            .request("$SYS.REQ.USER.INFO", "".into())
            .await
            .context("user info")?;
        let info: Value = serde_json::from_slice(&reply.payload)?;
        Ok(info["data"].clone())
    }

    /// Connect with `options`, which must be refused; the callout's reason.
    async fn refused(&mut self, options: async_nats::ConnectOptions) -> Result<String> {
        match connect(&self.server.url(), options).await {
            Ok(_) => bail!("admitted"),
            Err(e) => assert!(
                e.to_string()
                    .to_lowercase()
                    .contains("authorization violation"),
                "{e}"
            ),
        }
        let decision = self.decision().await?;
        assert_eq!(decision["verdict"], "denied", "{decision}");
        Ok(decision["reason"].as_str().unwrap_or_default().to_owned())
    }
}

/// What nats-server says the client may publish (in no particular order).
fn publish(info: &Value) -> BTreeSet<String> {
    info["permissions"]["publish"]["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn set(subjects: &[&str]) -> BTreeSet<String> {
    subjects.iter().map(|s| s.to_string()).collect()
}

fn password(user: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(user.into(), "s3cret".into())
}

#[tokio::test]
async fn users_are_placed_in_the_accounts_that_sign_them() -> Result<()> {
    init_tracing();
    let mut d = Deployment::start(true).await?;

    // A plain signing key: DEVICES's, with the grant's permissions.
    let info = d.admitted(password("dev")).await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");
    assert_eq!(
        publish(&info),
        set(&["dev.>", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );

    // A scoped signing key: APP's template decides, whatever the grant said.
    let info = d.admitted(password("app")).await?;
    assert_eq!(info["account"], d.account("APP"), "{info}");
    assert_eq!(
        publish(&info),
        set(&["scoped.>", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );

    // Refused by the host, each with its reason, before nats-server sees a user JWT.
    let reason = d.refused(password("outsider")).await?;
    assert!(
        reason.contains("\"OUTSIDE\"")
            && reason.contains("not in the callout account's allowed_accounts"),
        "{reason}"
    );
    let reason = d.refused(password("late")).await?;
    assert!(
        reason.contains("\"EXPIRED\"") && reason.contains("JWT expired"),
        "{reason}"
    );
    let reason = d.refused(password("stranger")).await?;
    assert!(
        reason.contains("\"NOWHERE\" is not configured for operator mode"),
        "{reason}"
    );
    let reason = d
        .refused(async_nats::ConnectOptions::with_user_and_password(
            "dev".into(),
            "wrong".into(),
        ))
        .await?;
    assert!(!reason.is_empty());

    // Every mode works as in config mode: oauth2, nkey, noauth.
    let token = d.oidc_token.clone();
    let info = d
        .admitted(async_nats::ConnectOptions::with_user_and_password(
            "oauthtoken".into(),
            token,
        ))
        .await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");
    assert_eq!(
        publish(&info),
        set(&["telemetry.sensor-1", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );

    let seed = std::fs::read_to_string(d.callout.dir.path().join("device-seed"))?;
    let info = d
        .admitted(async_nats::ConnectOptions::with_nkey(
            seed.trim().to_owned(),
        ))
        .await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");

    let info = d.admitted(async_nats::ConnectOptions::new()).await?;
    assert_eq!(info["account"], d.account("ANONYMOUS"), "{info}");
    assert_eq!(
        publish(&info),
        set(&["public.>", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );

    // The sentinel's creds, presented by the client itself, are no credential either.
    let sentinel = d.callout.dir.path().join("sentinel.creds");
    let info = d
        .admitted(async_nats::ConnectOptions::with_credentials_file(sentinel.clone()).await?)
        .await?;
    assert_eq!(info["account"], d.account("ANONYMOUS"), "{info}");
    let info = d
        .admitted(
            async_nats::ConnectOptions::with_credentials_file(sentinel)
                .await?
                .user_and_password("dev".into(), "s3cret".into()),
        )
        .await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");
    Ok(())
}

/// Users of the callout account with `.creds` of their own keep working through the
/// `jwt` plugin, leaf nodes included: placed in DEVICES with their JWT's permissions.
#[tokio::test]
async fn creds_of_the_callout_account_keep_working() -> Result<()> {
    init_tracing();
    let mut d = Deployment::start(true).await?;
    let legacy = d.legacy_creds("legacy-1", None, None)?;
    let options = || async_nats::ConnectOptions::with_credentials_file(legacy.clone());
    let info = d.admitted(options().await?).await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");
    assert_eq!(info["user_name"], "legacy-1", "{info}");
    // Audited (and revocable) by the JWT's subject, the key the client proved.
    assert!(
        d.last_identity["nkey"]
            .as_str()
            .is_some_and(|k| k.starts_with('U')),
        "{}",
        d.last_identity
    );
    assert_eq!(
        publish(&info),
        set(&["legacy.>", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );

    // A leaf node logs in to the hub with the same creds; its clients reach DEVICES.
    let hub = connect(&d.server.url(), options().await?).await?;
    let decision = d.decision().await?;
    assert_eq!(decision["verdict"], "allowed", "{decision}");
    let mut sub = hub.subscribe("legacy.from-leaf").await?;
    hub.flush().await?;
    let leaf = NatsServer::start(&format!(
        "leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{}\", credentials: {:?} }} ] }}\n",
        d.leaf_port, legacy
    ))?;
    let decision = d.decision().await?;
    assert_eq!(decision["verdict"], "allowed", "{decision}");
    assert_eq!(decision["client"]["type"], "Leafnode", "{decision}");
    let leaf_client = connect(&leaf.url(), async_nats::ConnectOptions::new()).await?;
    // The leaf learns the hub's interest asynchronously: publish until it arrives.
    let received = async {
        loop {
            leaf_client
                .publish("legacy.from-leaf", "hello".into())
                .await?;
            leaf_client.flush().await?;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                return anyhow::Ok(m);
            }
        }
    };
    let msg = tokio::time::timeout(Duration::from_secs(15), received)
        .await
        .context("nothing from the leaf")??;
    assert_eq!(&msg.payload[..], b"hello");

    // Expired, or signed by a key the account does not have: nats-server refuses them
    // itself (the host would too: identity/user_jwt.rs).
    let expired = d.legacy_creds("expired", None, Some(unix_now() - 60))?;
    let forged = d.legacy_creds("forged", Some(&nkeys::KeyPair::new_account()), None)?;
    for creds in [expired, forged] {
        let options = async_nats::ConnectOptions::with_credentials_file(creds).await?;
        assert!(connect(&d.server.url(), options).await.is_err());
    }
    Ok(())
}

/// `nats-callout verify` probes an operator-mode deployment as it does a config-mode
/// one: every check passes, the anonymous client found in ANONYMOUS by its public key.
#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_an_operator_mode_deployment() -> Result<()> {
    init_tracing();
    let d = Deployment::start(true).await?;
    let mut cmd = Command::new(callout_bin()?);
    cmd.arg("verify")
        .arg("--config")
        .arg(d.callout.config_path())
        .stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in ["bypass", "xkey", "anonymous", "bogus-token", "issuer"] {
        assert!(
            stdout.contains(&format!("PASS  {check}:")),
            "{check}: {stdout}"
        );
    }
    assert!(stdout.contains(d.account("ANONYMOUS")), "{stdout}");
    Ok(())
}

/// Without an xkey nats-server checks who signed the response: the callout account's
/// signing key, which the callout answers with.
#[tokio::test]
async fn unsealed_requests_are_answered_with_the_callout_accounts_signing_key() -> Result<()> {
    init_tracing();
    let mut d = Deployment::start(false).await?;
    let info = d.admitted(password("dev")).await?;
    assert_eq!(info["account"], d.account("DEVICES"), "{info}");
    let reason = d.refused(password("outsider")).await?;
    assert!(reason.contains("allowed_accounts"), "{reason}");
    Ok(())
}

/// mTLS in operator mode: nats-server verifies client certificates on its client port
/// (the callout's own connection presents one too), and the mtls plugin places a device
/// in DEVICES by its certificate, the CA checked again by the host.
#[tokio::test]
async fn client_certificates_in_operator_mode() -> Result<()> {
    init_tracing();
    let (dir, conf) = init(&["DEVICES"], true)?;
    let d = dir.path();
    let ca = Ca::new("Test CA")?;
    let ca_file = pki::write_bundle(&d.join("ca.pem"), &[&ca.pem])?;
    let server_cert = ca.server()?.write(d, "server")?;
    let callout_cert = ca.client("nats-callout")?.write(d, "callout")?;
    let device = ca.client("device-1")?.write(d, "device-1")?;
    let server = NatsServer::start(&format!(
        "{conf}tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {ca_file:?}, verify: true }}\n",
        server_cert.cert, server_cert.key
    ))?;
    let yaml = std::fs::read_to_string(d.join("callout.yaml"))?
        .replace("nats://127.0.0.1:4222", &server.url())
        .replace(
            "    credentials_file: callout.creds\n",
            &format!(
                "    credentials_file: callout.creds\n    tls: {{ ca_file: {ca_file:?}, cert_file: {:?}, key_file: {:?} }}\n",
                callout_cert.cert, callout_cert.key
            ),
        );
    let yaml = format!(
        "{yaml}mtls:\n  ca_file: {ca_file:?}\npermissions:\n  mtls:\n    device:\n      \
         identity: \"CN=device-1\"\n      account: DEVICES\n      \
         permissions: {{ pub: {{ allow: [\"devices.{{{{cert.cn}}}}.>\", \"$SYS.REQ.USER.INFO\"] }}, \
         sub: {{ allow: [\"_INBOX.>\"] }} }}\n"
    );
    let callout = Callout::start_in(dir, &yaml).await?;
    let options = |files: &pki::Files| {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(ca_file.clone())
            .add_client_certificate(files.cert.clone(), files.key.clone())
    };
    let client = connect(&server.url(), options(&device)).await?;
    let reply = client.request("$SYS.REQ.USER.INFO", "".into()).await?;
    let info: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(
        info["data"]["account"],
        account_key(callout.dir.path(), "DEVICES")?,
        "{info}"
    );
    assert_eq!(
        publish(&info["data"]),
        set(&["devices.device-1.>", "$SYS.REQ.USER.INFO"]),
        "{info}"
    );
    // A certificate of the right CA but no entry: refused.
    let stranger = ca
        .client("stranger")?
        .write(callout.dir.path(), "stranger")?;
    assert!(connect(&server.url(), options(&stranger)).await.is_err());
    Ok(())
}
