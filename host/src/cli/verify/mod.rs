//! `nats-callout verify`: probe a running deployment and say whether its wiring is safe.
//!
//! Everything is observed from outside, as clients see it:
//!
//! - **bypass**: the callout's own credentials (a `nats[]` entry) connect without the
//!   callout being asked, and may subscribe to the auth subject.
//! - **xkey**: that subscription, a plain one beside the callout's queue group, receives a
//!   copy of each auth request nats-server sends. A probe client's copy must be sealed to
//!   the callout's xkey if it has one, a plain JWT if not, and verify as the callout
//!   verifies it ([`Verifier`]).
//! - **anonymous**: a client without credentials is admitted with exactly what the loaded
//!   config grants it (as nats-server's `$SYS.REQ.USER.INFO` reports it) when anonymous
//!   clients are routed, and refused when they are not.
//! - **bogus-token**: a forged token (`auth_token`, and as user `oauthtoken`'s password)
//!   is refused.
//! - **issuer**: a client the callout admits got in, so nats-server accepted the
//!   callout's signature; and nats-server's requests name the callout's issuer.
//!
//! What the callout decides for a probe is worked out here too: the request copy goes
//! through an [`Authorizer`] loaded from the same config, so "admitted with what the
//! config grants" compares nats-server's view with the decision the config makes. When
//! the callout's user may subscribe to nats-server's reply subjects, the running
//! callout's answer is read as well, so a refusal says what the callout answered, or
//! that no callout answered at all.
//!
//! Here: the probes and what they observe. [`observe`]: the request copies and answers
//! nats-server sends; [`perms`]: permission sets and subject matching; [`checks`]: what
//! each check concludes from the probes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::{ConnectErrorKind, ConnectOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nats_callout::nats::jwt;
use nats_callout::nats::service::{callout_login, round_trip};
use nats_callout::ops::config::{Config, NatsConfig};
use nats_callout::ops::metrics::Metrics;
use nats_callout::pipeline::authorizer::{Authorizer, Verdict};
use nats_callout::pipeline::request::{RequestError, Verifier};
use nats_callout_sdk::CredentialKind;
use nkeys::XKey;
use tokio::sync::mpsc;

mod checks;
mod observe;
mod perms;

use observe::{Copy, Observer, Opened, forward, forward_answers};
use perms::Perms;

/// A connect, including the callout's answer (nats-server waits 2 s for it by default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer from nats-server: `$SYS.REQ.USER.INFO`, a round trip.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the callout's own second connection is watched for a request copy, after
/// a round trip on the observer has shown any copy would already be on its way.
const BYPASS_WINDOW: Duration = Duration::from_millis(500);
/// How long a callout's answer is waited for once the probe's connect has ended (the
/// answer came before that, if at all).
const SETTLE_WINDOW: Duration = Duration::from_millis(500);
const USER_INFO: &str = "$SYS.REQ.USER.INFO";
/// Where nats-server takes the callout's answers (`$SYS._INBOX.<server>.<id>`), in the
/// callout's account.
const ANSWERS: &str = "$SYS._INBOX.>";

/// What `nats-callout verify` was asked to check.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long, short, env = "AUTH_CALLOUT_CONFIG")]
    pub config: PathBuf,
    /// The `nats` entry (by name) whose server and credentials to use; default: the
    /// first.
    #[arg(long)]
    pub server: Option<String>,
    /// Connect here instead of the entry's url (e.g. through a port-forward).
    #[arg(long)]
    pub url: Option<String>,
    /// Environment variable holding a token the callout admits (sent as auth_token):
    /// proves the issuer when anonymous clients are not routed. Never the token
    /// itself as an argument, which `ps` would show.
    #[arg(long, value_name = "VAR", conflicts_with = "user")]
    pub token_env: Option<String>,
    /// A username the callout admits, with --password-env.
    #[arg(long, requires = "password_env")]
    pub user: Option<String>,
    /// Environment variable holding the password of --user.
    #[arg(long, value_name = "VAR", requires = "user")]
    pub password_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skip,
}

/// One line of the report.
struct Check {
    status: Status,
    name: &'static str,
    detail: String,
}

impl Check {
    fn new(status: Status, name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            name,
            detail: detail.into(),
        }
    }
}

/// Run every check, print one line each; `Ok(true)` when none failed.
pub fn run(opts: &Options) -> Result<bool> {
    let cfg = Config::load(&opts.config)?;
    let server = match &opts.server {
        None => cfg
            .nats
            .first()
            .context("the config lists no nats server")?,
        Some(name) => cfg.nats.iter().find(|n| &n.name == name).with_context(|| {
            format!(
                "--server {name:?}: the config's nats entries are {}",
                cfg.nats
                    .iter()
                    .map(|n| format!("{:?}", n.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
    };
    let known = match (&opts.token_env, &opts.user, &opts.password_env) {
        (Some(var), None, _) => Some(Known::Token(env_secret(var, "--token-env")?)),
        (None, Some(user), Some(var)) => Some(Known::User(
            user.clone(),
            env_secret(var, "--password-env")?,
        )),
        (None, None, None) => None,
        _ => bail!("give either --token-env VAR, or --user NAME with --password-env VAR"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let checks = runtime.block_on(async {
        let authorizer = Authorizer::from_config(&cfg, Metrics::new())
            .context("cannot load the config's plugins (as `nats-callout check` would)")?;
        let url = opts.url.clone().unwrap_or_else(|| server.url.clone());
        let ctx = Deployment {
            cfg: &cfg,
            server,
            url,
            issuer: authorizer.issuer_public_key().to_owned(),
            request_subject: authorizer.request_subject().to_owned(),
            anonymous_routed: authorizer.serves(CredentialKind::None),
            authorizer,
        };
        println!(
            "verifying nats[{}] at {}: callout issuer {}, xkey {}, anonymous clients {}",
            server.name,
            ctx.url,
            ctx.issuer,
            ctx.xkey()
                .map_or_else(|| "none".to_owned(), XKey::public_key),
            if ctx.anonymous_routed {
                "routed"
            } else {
                "not routed"
            }
        );
        anyhow::Ok(ctx.checks(known).await)
    })?;
    let mut passed = true;
    for c in &checks {
        let status = match c.status {
            Status::Pass => "PASS",
            Status::Fail => {
                passed = false;
                "FAIL"
            }
            Status::Skip => "SKIP",
        };
        println!("{status}  {}: {}", c.name, c.detail);
    }
    Ok(passed)
}

fn env_secret(var: &str, flag: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => bail!("{flag} {var}: the environment variable is not set (or empty, or not UTF-8)"),
    }
}

/// A credential the operator says the callout admits.
enum Known {
    Token(String),
    User(String, String),
}

struct Deployment<'a> {
    cfg: &'a Config,
    server: &'a NatsConfig,
    url: String,
    issuer: String,
    /// What nats-server's requests name as `sub`: the issuer in config mode, the
    /// callout account in operator mode.
    request_subject: String,
    anonymous_routed: bool,
    authorizer: Authorizer,
}

/// How a probe's connect went.
enum Connected {
    /// Admitted; what `$SYS.REQ.USER.INFO` said.
    Admitted(Info),
    /// Refused by authorization (nats-server's `Authorization Violation`).
    Refused(String),
    /// Anything else (unreachable, TLS, timeout): no conclusion about authorization.
    Failed(String),
}

/// nats-server's answer to `$SYS.REQ.USER.INFO`.
enum Info {
    Answered {
        user: String,
        account: String,
        /// `None`: nats-server reported no permissions (everything in the account).
        perms: Option<Perms>,
    },
    /// A permissions violation on the request (publish) or its inbox (subscribe).
    Violation(String),
    NoAnswer(String),
}

/// What this host, with the loaded config, decides on a request copy.
enum Decided {
    Admit {
        account: String,
        perms: Perms,
    },
    Refuse(String),
    /// The request does not verify (seal, issuer, expiry): what the callout says too.
    Invalid(String),
}

/// The answer a running callout gave nats-server for a probe.
enum Answer {
    /// Answers cannot be seen (the callout's user may not subscribe to [`ANSWERS`]), or
    /// the request was not seen.
    Unseen,
    /// No callout answered.
    Missing,
    /// An empty answer: refused without a reason (the callout could not read the request).
    Empty,
    /// A response JWT signed by `issuer`: a user JWT's account, or the error.
    Signed {
        issuer: String,
        outcome: Result<String, String>,
    },
    /// Not a response this host can read (sealed for another key, not a JWT).
    Unreadable,
}

/// One probe client: how it fared, the request nats-server sent for it, what the config
/// decides on that request and what the running callout answered.
struct Probe {
    connected: Connected,
    copy: Option<Copy>,
    /// The request's verification, done when it arrived (it expires soon after).
    verified: Option<Result<(), RequestError>>,
    decided: Option<Decided>,
    answer: Answer,
}

/// A unique client name for one probe: how its request copy is found among others.
fn probe_name(what: &str) -> String {
    format!("nats-callout-verify-{what}-{:016x}", rand::random::<u64>())
}

/// A token shaped like a signed JWT whose signature is noise: no key signed it.
fn forged_token() -> String {
    let now = nats_callout::pipeline::request::unix_now();
    let header =
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"nats-callout-verify"}"#);
    let claims = serde_json::json!({
        "iss": "https://nats-callout-verify.invalid/",
        "sub": "nats-callout-verify",
        "aud": "nats",
        "iat": now,
        "exp": now + 300,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let noise: [u8; 32] = rand::random();
    let signature = URL_SAFE_NO_PAD.encode([noise, noise, noise, noise].concat());
    format!("{header}.{payload}.{signature}")
}

/// Collects the server's asynchronous errors (permission violations) of one client.
fn watching(options: ConnectOptions) -> (ConnectOptions, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    });
    (options, rx)
}

impl Deployment<'_> {
    /// Whether the deployment is in operator mode (accounts are JWTs).
    fn operator_mode(&self) -> bool {
        self.authorizer.accounts().is_some()
    }

    /// Where nats-server lists the users it does not ask the callout about.
    fn auth_users(&self) -> &'static str {
        if self.operator_mode() {
            "the callout account JWT's authorization.auth_users"
        } else {
            "auth_callout.auth_users"
        }
    }

    /// The callout's xkey, as loaded with its config.
    fn xkey(&self) -> Option<&XKey> {
        self.authorizer.xkey()
    }

    async fn checks(&self, known: Option<Known>) -> Vec<Check> {
        let mut checks = Vec::new();
        let (bypass, mut observer) = self.bypass().await;
        checks.push(bypass);

        let anonymous = self
            .probe(&mut observer, "anonymous", ConnectOptions::new())
            .await;
        let forged = forged_token();
        let as_token = self
            .probe(
                &mut observer,
                "token",
                ConnectOptions::with_token(forged.clone()),
            )
            .await;
        let as_password = self
            .probe(
                &mut observer,
                "oauthtoken",
                ConnectOptions::with_user_and_password(
                    nats_callout::pipeline::credential::TOKEN_USERNAME.into(),
                    forged,
                ),
            )
            .await;
        let known = match known {
            None => None,
            Some(Known::Token(t)) => Some((
                "the --token-env client",
                self.probe(&mut observer, "known", ConnectOptions::with_token(t))
                    .await,
            )),
            Some(Known::User(u, p)) => {
                let label = "the --user client";
                let probe = self
                    .probe(
                        &mut observer,
                        "known",
                        ConnectOptions::with_user_and_password(u, p),
                    )
                    .await;
                Some((label, probe))
            }
        };

        // The request the seal is judged on: the anonymous client's, else any probe's.
        let mut probes: Vec<(&str, &Probe)> = vec![
            ("the anonymous client", &anonymous),
            ("the forged-token client", &as_token),
            ("the forged-token client (user oauthtoken)", &as_password),
        ];
        if let Some((label, p)) = &known {
            probes.push((label, p));
        }
        let xkey = self.xkey_check(observer.is_some(), &probes);
        let xkey_failed = xkey.status == Status::Fail;
        checks.push(xkey);
        checks.push(self.anonymous_check(observer.is_some(), &anonymous));
        checks.push(self.forged_check(observer.is_some(), &as_token, &as_password));
        checks.push(self.issuer_check(&probes, xkey_failed));
        checks
    }

    /// Options shared by every connection: timeouts, no reconnects, TLS as the entry
    /// says (the client certificate only for the callout's own user).
    fn options(&self, options: ConnectOptions, name: &str, client_cert: bool) -> ConnectOptions {
        let mut o = options
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(Some(0))
            .ignore_discovered_servers();
        if let Some(tls) = &self.server.tls {
            o = o.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                o = o.add_root_certificates(self.cfg.resolve(ca));
            }
            if client_cert && let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
                o = o.add_client_certificate(self.cfg.resolve(c), self.cfg.resolve(k));
            }
        }
        o
    }

    /// The callout's own credentials, read as `nats-callout run` reads them, and how
    /// nats-server names that user.
    fn callout_credentials(&self) -> Result<(ConnectOptions, String)> {
        Ok(callout_login(self.cfg, self.server)?)
    }

    async fn connect(
        &self,
        options: ConnectOptions,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::connect_with_options(self.url.as_str(), options).await
    }

    /// Check 1, and the observer for the others: the callout's user connects without
    /// the callout, and subscribes to the auth subject.
    async fn bypass(&self) -> (Check, Option<Observer>) {
        const NAME: &str = "bypass";
        let subject = &self.server.subject;
        let fail = |detail: String| (Check::new(Status::Fail, NAME, detail), None);
        let (credentials, who) = match self.callout_credentials() {
            Ok(c) => c,
            Err(e) => {
                return fail(format!(
                    "cannot read the callout's credentials of nats[{}]: {e:#}",
                    self.server.name
                ));
            }
        };
        let (options, mut errors) =
            watching(self.options(credentials.clone(), &probe_name("observer"), true));
        let client = match self.connect(options).await {
            Ok(c) => c,
            Err(e) if e.kind() != ConnectErrorKind::AuthorizationViolation => {
                return fail(format!("cannot connect to {}: {e}", self.url));
            }
            Err(e) => {
                let (account, setup) = if self.operator_mode() {
                    (
                        "the callout account",
                        "`nats-callout operator init` writes one",
                    )
                } else {
                    (
                        "auth_callout.account",
                        "`nats-callout server-config` prints the block",
                    )
                };
                return fail(format!(
                    "nats-server refused the callout's own user ({who}): {e}. It must be a \
                     user of {account} listed in {} ({setup})",
                    self.auth_users()
                ));
            }
        };
        let sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot subscribe to {subject}: {e}")),
        };
        let (tx, copies) = mpsc::unbounded_channel();
        tokio::spawn(forward(sub, tx));
        // Best effort: a least-privilege callout user may publish its answers there
        // without subscribing.
        let answers = match client.subscribe(ANSWERS).await {
            Ok(sub) => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(forward_answers(sub, tx));
                Some(rx)
            }
            Err(_) => None,
        };
        let _ = round_trip(&client, ANSWER_TIMEOUT).await;
        let violations = violations(&mut errors);
        if let Some(v) = violations.iter().find(|v| v.contains(subject.as_str())) {
            return fail(format!(
                "the callout's own user ({who}) may not subscribe to {subject}: {v}; allow it \
                 in nats-server's permissions of that user"
            ));
        }
        let answers = answers.filter(|_| !violations.iter().any(|v| v.contains("$SYS._INBOX")));
        let mut observer = Observer {
            client,
            copies,
            answers,
            early: HashMap::new(),
        };

        // A second connection as the callout's user, while the first one watches: had
        // nats-server asked the callout about it, the copy would be on its way already.
        let name = probe_name("bypass");
        let (options, mut second_errors) = watching(self.options(credentials, &name, true));
        let second = match self.connect(options).await {
            Ok(c) => c,
            Err(e) => {
                let check = Check::new(
                    Status::Fail,
                    NAME,
                    format!(
                        "a second connection as the callout's own user ({who}) was refused: {e}"
                    ),
                );
                return (check, Some(observer));
            }
        };
        let account = match user_info(&second, &mut second_errors).await {
            Info::Answered { account, .. } => format!(" in account {account}"),
            _ => String::new(),
        };
        drop(second);
        let _ = round_trip(&observer.client, ANSWER_TIMEOUT).await;
        let asked = observer
            .find(&name, self.xkey(), tokio::time::sleep(BYPASS_WINDOW))
            .await
            .is_some_and(|c| c.claims.is_some());
        let check = if asked {
            Check::new(
                Status::Fail,
                NAME,
                format!(
                    "nats-server asks the callout about the callout's own user ({who}): list it \
                     in {}",
                    self.auth_users()
                ),
            )
        } else {
            Check::new(
                Status::Pass,
                NAME,
                format!(
                    "the callout's own user ({who}) connects{account} without the callout being \
                     asked, and subscribes to {subject}"
                ),
            )
        };
        (check, Some(observer))
    }

    /// Connect one probe client, ask nats-server who it is, find its request copy and
    /// decide on it as the callout would.
    async fn probe(
        &self,
        observer: &mut Option<Observer>,
        what: &str,
        options: ConnectOptions,
    ) -> Probe {
        let name = probe_name(what);
        let (options, mut errors) = watching(self.options(options, &name, false));
        let (done, connect_ended) = tokio::sync::oneshot::channel::<()>();
        let connecting = async {
            let connected = match self.connect(options).await {
                Ok(client) => {
                    let info = user_info(&client, &mut errors).await;
                    drop(client);
                    Connected::Admitted(info)
                }
                Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
                    Connected::Refused(e.kind().to_string())
                }
                Err(e) => Connected::Failed(e.to_string()),
            };
            let _ = done.send(());
            connected
        };
        // The request is read, verified and decided on as it arrives, while nats-server
        // waits for the callout: it expires as soon as nats-server stops waiting.
        let watch = async {
            let o = observer.as_mut()?;
            let until = async {
                let _ = connect_ended.await;
                tokio::time::sleep(SETTLE_WINDOW).await;
            };
            let copy = o.find(&name, self.xkey(), until).await?;
            let (verified, decided) = match copy.opened.token() {
                Some(_) => (Some(self.verify(&copy)), Some(self.decide(&copy).await)),
                None => (None, None),
            };
            Some((copy, verified, decided))
        };
        let (connected, watched) = tokio::join!(connecting, watch);
        let Some((copy, verified, decided)) = watched else {
            return Probe {
                connected,
                copy: None,
                verified: None,
                decided: None,
                answer: Answer::Unseen,
            };
        };
        let answer = match (observer.as_mut(), &copy.raw.reply) {
            (Some(o), Some(reply)) if o.answers.is_some() => {
                match o.answer(reply, SETTLE_WINDOW).await {
                    Some(payload) => self.read_answer(&payload, &copy),
                    None => Answer::Missing,
                }
            }
            _ => Answer::Unseen,
        };
        Probe {
            connected,
            copy: Some(copy),
            verified,
            decided,
            answer,
        }
    }

    /// The request as the callout verifies it.
    fn verify(&self, copy: &Copy) -> Result<(), RequestError> {
        Verifier {
            issuer: &self.request_subject,
            xkey: self.xkey(),
            leeway: self.cfg.limits.request_leeway,
        }
        .verify(&copy.raw.payload, copy.raw.xkey_header.as_deref())
        .map(drop)
        .map_err(|r| r.error)
    }

    /// What a running callout answered: who signed it, and the account or the error.
    fn read_answer(&self, payload: &[u8], copy: &Copy) -> Answer {
        if payload.is_empty() {
            return Answer::Empty;
        }
        let Some(response) = self.unseal(payload, copy) else {
            return Answer::Unreadable;
        };
        let Some(claims) = std::str::from_utf8(&response)
            .ok()
            .and_then(jwt::decode_unverified::<serde_json::Value>)
        else {
            return Answer::Unreadable;
        };
        let issuer = claims["iss"].as_str().unwrap_or_default().to_owned();
        let nats = &claims["nats"];
        let outcome = match nats["error"].as_str().filter(|e| !e.is_empty()) {
            Some(e) => Err(e.to_owned()),
            None => Ok(nats["jwt"]
                .as_str()
                .and_then(jwt::decode_unverified::<serde_json::Value>)
                .and_then(|u| u["aud"].as_str().map(str::to_owned))
                .unwrap_or_default()),
        };
        Answer::Signed { issuer, outcome }
    }

    /// A response as signed: plain, or sealed to nats-server's xkey with the callout's
    /// (the same shared key opens it).
    fn unseal(&self, payload: &[u8], copy: &Copy) -> Option<Vec<u8>> {
        if payload.starts_with(b"eyJ") {
            return Some(payload.to_vec());
        }
        let server = XKey::from_public_key(copy.raw.xkey_header.as_deref()?).ok()?;
        self.xkey()?.open(payload, &server).ok()
    }

    /// What the loaded config decides on a request copy, and the grant it signs.
    async fn decide(&self, copy: &Copy) -> Decided {
        let handled = self
            .authorizer
            .handle(&copy.raw.payload, copy.raw.xkey_header.as_deref())
            .await;
        match handled.verdict {
            Verdict::Allowed { account } => match self.granted(&handled.reply, copy) {
                Some(perms) => Decided::Admit { account, perms },
                None => Decided::Invalid("cannot read the response the callout signs".into()),
            },
            Verdict::Denied(reason) => Decided::Refuse(reason),
            Verdict::Invalid(reason) => Decided::Invalid(reason),
        }
    }

    /// The permissions of the user JWT inside a response this host made.
    fn granted(&self, reply: &[u8], copy: &Copy) -> Option<Perms> {
        let response = self.unseal(reply, copy)?;
        let response: serde_json::Value =
            jwt::decode_unverified(std::str::from_utf8(&response).ok()?)?;
        let user: serde_json::Value = jwt::decode_unverified(response["nats"]["jwt"].as_str()?)?;
        Some(Perms::from_user_claims(&user["nats"]))
    }
}

/// ` as user U in account A`, when nats-server said.
fn who_of(info: &Info) -> String {
    match info {
        Info::Answered { user, account, .. } => format!(" as user {user} in account {account}"),
        _ => String::new(),
    }
}

/// The permissions violations the server reported so far.
fn violations(errors: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut found = Vec::new();
    while let Ok(e) = errors.try_recv() {
        if e.to_lowercase().contains("permissions violation") {
            found.push(e);
        }
    }
    found
}

/// Ask nats-server who `client` is: `$SYS.REQ.USER.INFO`, answered by the server itself
/// with the user, account and permissions it applies to this connection.
async fn user_info(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
) -> Info {
    let inbox = client.new_inbox();
    let mut sub = match client.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(e) => return Info::NoAnswer(e.to_string()),
    };
    if let Err(e) = client
        .publish_with_reply(USER_INFO, inbox, bytes::Bytes::new())
        .await
    {
        return Info::NoAnswer(e.to_string());
    }
    let _ = client.flush().await;
    let deadline = tokio::time::sleep(ANSWER_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else {
                    return Info::NoAnswer("the connection closed".into());
                };
                let v: serde_json::Value = match serde_json::from_slice(&msg.payload) {
                    Ok(v) => v,
                    Err(e) => return Info::NoAnswer(format!("unreadable answer: {e}")),
                };
                let data = &v["data"];
                if !data.is_object() {
                    return Info::NoAnswer(format!("answer without data: {v}"));
                }
                let text = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
                let perms = &data["permissions"];
                return Info::Answered {
                    user: text("user"),
                    account: text("account"),
                    perms: perms.is_object().then(|| Perms::from_user_info(perms)),
                };
            }
            e = errors.recv() => match e {
                Some(e) if e.to_lowercase().contains("permissions violation") => {
                    return Info::Violation(e);
                }
                Some(_) => {}
                None => return Info::NoAnswer("the connection closed".into()),
            },
            _ = &mut deadline => {
                return Info::NoAnswer(format!("no answer within {ANSWER_TIMEOUT:?}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_token_is_jwt_shaped() {
        let t = forged_token();
        assert_eq!(t.split('.').count(), 3);
        assert!(t.starts_with("eyJ"));
        assert!(jwt::decode_verified::<serde_json::Value>(&t).is_err());
    }
}
