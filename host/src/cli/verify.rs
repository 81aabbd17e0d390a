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

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::{ConnectErrorKind, ConnectOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nats_callout::nats::claims::RequestClaims;
use nats_callout::nats::jwt;
use nats_callout::nats::service::{callout_login, round_trip};
use nats_callout::ops::config::{Config, NatsConfig};
use nats_callout::ops::metrics::Metrics;
use nats_callout::pipeline::authorizer::{Authorizer, Verdict, XKEY_SEED_ENV};
use nats_callout::pipeline::request::{RequestError, Verifier, XKEY_HEADER};
use nats_callout_sdk::CredentialKind;
use nkeys::XKey;
use tokio::sync::mpsc;

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
/// nats-server's defaults for a response permission's zero fields.
const DEFAULT_RESP_MAX: i64 = 1;
const DEFAULT_RESP_TTL_NANOS: i64 = 120_000_000_000;

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

/// Requests nats-server sent while the observer listened, and the answers to them.
struct Observer {
    client: async_nats::Client,
    copies: mpsc::UnboundedReceiver<RawCopy>,
    /// `None` when the callout's user may not subscribe to [`ANSWERS`].
    answers: Option<mpsc::UnboundedReceiver<(String, bytes::Bytes)>>,
    /// Answers received while looking for another.
    early: HashMap<String, bytes::Bytes>,
}

/// One auth request as the observer's subscription received it.
struct RawCopy {
    payload: bytes::Bytes,
    xkey_header: Option<String>,
    /// Where the callouts answer it.
    reply: Option<String>,
}

/// A request copy, opened as far as the callout's keys allow.
struct Copy {
    raw: RawCopy,
    opened: Opened,
    /// Read without verification, only to tell the probes' requests apart and to say
    /// what nats-server put in them.
    claims: Option<RequestClaims>,
}

enum Opened {
    /// Sealed to the callout's xkey, opened.
    Sealed(String),
    /// A plain JWT.
    Plain(String),
    /// Sealed, and the callout cannot open it: why.
    Unreadable(String),
}

impl Opened {
    fn token(&self) -> Option<&str> {
        match self {
            Opened::Sealed(t) | Opened::Plain(t) => Some(t),
            Opened::Unreadable(_) => None,
        }
    }
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

/// Publish and subscribe permissions, as sets (nats-server lists them in no order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Perms {
    pub_allow: BTreeSet<String>,
    pub_deny: BTreeSet<String>,
    sub_allow: BTreeSet<String>,
    sub_deny: BTreeSet<String>,
    /// `max` and `ttl` (nanoseconds), nats-server's defaults applied.
    resp: Option<(i64, i64)>,
}

impl Perms {
    /// From a user JWT's `nats` claims (`pub`, `sub`, `resp`).
    fn from_user_claims(nats: &serde_json::Value) -> Self {
        Self {
            pub_allow: strings(&nats["pub"]["allow"]),
            pub_deny: strings(&nats["pub"]["deny"]),
            sub_allow: strings(&nats["sub"]["allow"]),
            sub_deny: strings(&nats["sub"]["deny"]),
            resp: response(&nats["resp"]),
        }
    }

    /// From `$SYS.REQ.USER.INFO`'s `permissions`.
    fn from_user_info(p: &serde_json::Value) -> Self {
        Self {
            pub_allow: strings(&p["publish"]["allow"]),
            pub_deny: strings(&p["publish"]["deny"]),
            sub_allow: strings(&p["subscribe"]["allow"]),
            sub_deny: strings(&p["subscribe"]["deny"]),
            resp: response(&p["responses"]),
        }
    }

    /// Whether a client with these permissions may publish to the literal `subject`.
    /// With a response permission, an empty allow list allows nothing (nats-server
    /// turns the blanket allow off).
    fn may_publish(&self, subject: &str) -> bool {
        let allowed = if self.pub_allow.is_empty() {
            self.resp.is_none()
        } else {
            self.pub_allow.iter().any(|p| subject_matches(p, subject))
        };
        allowed && !self.pub_deny.iter().any(|p| subject_matches(p, subject))
    }

    fn may_subscribe(&self, subject: &str) -> bool {
        let pattern = |p: &String| p.split(' ').next().unwrap_or_default().to_owned();
        let allowed = self.sub_allow.is_empty()
            || self
                .sub_allow
                .iter()
                .any(|p| subject_matches(&pattern(p), subject));
        allowed
            && !self
                .sub_deny
                .iter()
                .any(|p| subject_matches(&pattern(p), subject))
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |s: &BTreeSet<String>| {
            let v: Vec<&str> = s.iter().map(String::as_str).collect();
            format!("[{}]", v.join(", "))
        };
        let mut parts = Vec::new();
        for (name, set) in [
            ("pub allow", &self.pub_allow),
            ("pub deny", &self.pub_deny),
            ("sub allow", &self.sub_allow),
            ("sub deny", &self.sub_deny),
        ] {
            if !set.is_empty() {
                parts.push(format!("{name} {}", list(set)));
            }
        }
        if let Some((max, ttl)) = self.resp {
            parts.push(format!("responses max {max} ttl {}ms", ttl / 1_000_000));
        }
        if parts.is_empty() {
            f.write_str("no permissions")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn response(v: &serde_json::Value) -> Option<(i64, i64)> {
    v.as_object()?;
    let max = v["max"]
        .as_i64()
        .filter(|m| *m != 0)
        .unwrap_or(DEFAULT_RESP_MAX);
    let ttl = v["ttl"]
        .as_i64()
        .filter(|t| *t != 0)
        .unwrap_or(DEFAULT_RESP_TTL_NANOS);
    Some((max, ttl))
}

/// NATS subject matching: `pattern` may hold `*` (one token) and `>` (the rest).
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(pt), Some(st)) if pt == "*" || pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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

    /// Check 2: the seal (and the rest of the request's verification).
    fn xkey_check(&self, observing: bool, probes: &[(&str, &Probe)]) -> Check {
        const NAME: &str = "xkey";
        if !observing {
            return Check::new(
                Status::Skip,
                NAME,
                "no request copy can be seen without the callout's own connection (see bypass)",
            );
        }
        let Some((label, p, copy)) = probes
            .iter()
            .find_map(|(label, p)| p.copy.as_ref().map(|c| (*label, p, c)))
        else {
            return Check::new(
                Status::Fail,
                NAME,
                format!(
                    "nats-server sent no auth request on {} for any probe client: is \
                     authorization.auth_callout configured on the server at {}, with account \
                     the callout's user is in?",
                    self.server.subject, self.url
                ),
            );
        };
        let ours = self.xkey().map(XKey::public_key);
        match (&copy.opened, &ours) {
            (Opened::Unreadable(why), _) => {
                return Check::new(Status::Fail, NAME, format!("{why} ({label}'s request)"));
            }
            (Opened::Plain(_), Some(ours)) => {
                return Check::new(
                    Status::Fail,
                    NAME,
                    format!(
                        "nats-server sends auth requests unsealed, but the callout has an xkey \
                         and refuses plaintext: set `xkey: {ours}` in authorization.auth_callout"
                    ),
                );
            }
            _ => {}
        }
        let how = match &ours {
            Some(k) => format!("sealed to the callout's xkey {k}"),
            None => "plain JWTs (no xkey on either side)".to_owned(),
        };
        let Some(verified) = &p.verified else {
            return Check::new(
                Status::Fail,
                NAME,
                format!("{label}'s request cannot be read"),
            );
        };
        match verified {
            Ok(()) => Check::new(
                Status::Pass,
                NAME,
                format!("auth requests are {how}, and verify"),
            ),
            // The issuer check says what to fix.
            Err(RequestError::WrongIssuer(..)) => Check::new(
                Status::Pass,
                NAME,
                format!("auth requests are {how} (they name another issuer: see issuer)"),
            ),
            Err(e) => {
                let hint = match e {
                    RequestError::Expired(_) => ": is this host's clock (or nats-server's) off?",
                    _ => "",
                };
                Check::new(
                    Status::Fail,
                    NAME,
                    format!("auth requests are {how}, but {label}'s does not verify: {e}{hint}"),
                )
            }
        }
    }

    /// Check 3: anonymous clients get what the config grants them, or are refused.
    fn anonymous_check(&self, observing: bool, p: &Probe) -> Check {
        const NAME: &str = "anonymous";
        let fail = |d: String| Check::new(Status::Fail, NAME, d);
        match (&p.connected, self.anonymous_routed) {
            (Connected::Failed(e), _) => fail(format!(
                "cannot connect an anonymous client to {}: {e}",
                self.url
            )),
            (Connected::Refused(e), false) => Check::new(
                Status::Pass,
                NAME,
                format!("an anonymous client is refused ({e}); no route takes anonymous clients"),
            ),
            (Connected::Admitted(info), false) => fail(format!(
                "nats-server admitted an anonymous client{}, but the config routes no \
                 anonymous clients: {}",
                who_of(info),
                if !observing {
                    "remove no_auth_user (or a user without credentials) from nats-server's config"
                        .to_owned()
                } else if p.copy.is_none() {
                    "nats-server did not ask the callout: remove no_auth_user (or a user without \
                     credentials) from its config"
                        .to_owned()
                } else {
                    "the callout was asked and this config refuses it: does another callout \
                     (replica) in the queue group run another config?"
                        .to_owned()
                }
            )),
            (Connected::Refused(e), true) => fail(format!(
                "the config routes anonymous clients, but nats-server refused one ({e}): {}",
                self.why_refused(p)
            )),
            (Connected::Admitted(info), true) => {
                if !observing {
                    return Check::new(
                        Status::Skip,
                        NAME,
                        "an anonymous client is admitted, but without the callout's own \
                         connection its request cannot be seen (see bypass)",
                    );
                }
                let Some(decided) = &p.decided else {
                    return fail(match &p.copy {
                        None => format!(
                            "nats-server admitted an anonymous client{} without asking the \
                             callout: remove no_auth_user (or a user without credentials) from \
                             its config",
                            who_of(info)
                        ),
                        Some(_) => "an anonymous client is admitted, but its request cannot be \
                                    opened (see xkey)"
                            .to_owned(),
                    });
                };
                let (account, expected) = match decided {
                    Decided::Admit { account, perms } => (account, perms),
                    Decided::Refuse(r) | Decided::Invalid(r) => {
                        return fail(format!(
                            "nats-server admitted an anonymous client{}, which this config \
                             refuses ({r}): does another callout (replica) in the queue group \
                             run another config?",
                            who_of(info)
                        ));
                    }
                };
                self.compare_grant(info, account, expected)
            }
        }
    }

    /// The anonymous client is admitted; does nats-server apply the grant?
    fn compare_grant(&self, info: &Info, account: &str, expected: &Perms) -> Check {
        const NAME: &str = "anonymous";
        let fail = |d: String| Check::new(Status::Fail, NAME, d);
        // What the grant says about the USER.INFO exchange itself.
        let may_ask = expected.may_publish(USER_INFO) && expected.may_subscribe("_INBOX.verify");
        match info {
            Info::Answered {
                account: got,
                perms,
                ..
            } => {
                let got_perms = perms.clone().unwrap_or_default();
                // Operator mode: nats-server names the account by its public key.
                let account = self
                    .authorizer
                    .accounts()
                    .map_or(account, |a| a.public_key(account));
                if got != account {
                    fail(format!(
                        "an anonymous client is admitted into account {got}, but the config \
                         grants account {account}: does another callout (replica) run another \
                         config?"
                    ))
                } else if perms.is_none() || &got_perms != expected {
                    fail(format!(
                        "nats-server gives an anonymous client {}, but the config grants \
                         {expected}: does another callout (replica) run another config?",
                        if perms.is_none() {
                            "no permissions (everything in the account)".to_owned()
                        } else {
                            got_perms.to_string()
                        }
                    ))
                } else {
                    Check::new(
                        Status::Pass,
                        NAME,
                        format!(
                            "an anonymous client is admitted into account {account} with exactly \
                             the grant of the config: {expected}"
                        ),
                    )
                }
            }
            Info::Violation(v) if may_ask => fail(format!(
                "nats-server refused an anonymous client's {USER_INFO} ({v}), which the \
                 config's grant allows ({expected}): does another callout (replica) run \
                 another config?"
            )),
            Info::Violation(_) => Check::new(
                Status::Pass,
                NAME,
                format!(
                    "an anonymous client is admitted (the config grants account {account}, \
                     {expected}); the grant does not allow {USER_INFO} and nats-server refused \
                     it too, so the permissions were not listed (allow publishing {USER_INFO} \
                     and subscribing to _INBOX.> to compare them)"
                ),
            ),
            Info::NoAnswer(why) => Check::new(
                Status::Pass,
                NAME,
                format!(
                    "an anonymous client is admitted (the config grants account {account}, \
                     {expected}); nats-server did not answer {USER_INFO} ({why}), so the \
                     permissions were not compared"
                ),
            ),
        }
    }

    /// Why a client the config routes was refused, as far as its request copy tells.
    fn why_refused(&self, p: &Probe) -> String {
        let ours = &self.issuer;
        match &p.answer {
            Answer::Missing => {
                return format!(
                    "no callout answered nats-server's request: is nats-callout running, \
                     connected to this server and subscribed to {} (its /readyz)?",
                    self.server.subject
                );
            }
            Answer::Empty => {
                return "the callout answered with nothing, as it does to a request it cannot \
                        read (see xkey)"
                    .into();
            }
            Answer::Signed { issuer, .. } if issuer != ours => {
                return format!(
                    "the answer is signed by {issuer}, not by this config's issuer {ours}: \
                     another callout with other keys is in queue group {}",
                    self.server.queue_group
                );
            }
            Answer::Signed {
                outcome: Err(e), ..
            } => {
                let config = match &p.decided {
                    Some(Decided::Admit { .. }) => {
                        " (this config admits it: does another callout in the queue group run \
                         another config?)"
                    }
                    _ => "",
                };
                return format!("the callout answered: {e}{config}");
            }
            Answer::Signed {
                outcome: Ok(account),
                ..
            } => {
                return format!(
                    "the callout admitted it into account {account}, and nats-server rejected \
                     the answer: compare auth_callout.issuer with the callout's issuer {ours}, \
                     and check that account {account} exists in nats-server's config"
                );
            }
            Answer::Unseen | Answer::Unreadable => {}
        }
        match (&p.copy, &p.decided) {
            (None, _) => "nats-server did not ask the callout; is auth_callout configured?".into(),
            (Some(c), None) => match &c.opened {
                Opened::Unreadable(why) => format!("{why} (see xkey)"),
                _ => "its request could not be read".into(),
            },
            (Some(_), Some(Decided::Refuse(r))) => format!("the config refuses it: {r}"),
            (Some(_), Some(Decided::Invalid(r))) => {
                format!("the callout cannot accept its auth request: {r} (see xkey and issuer)")
            }
            (Some(_), Some(Decided::Admit { account, .. })) => format!(
                "the callout admits it into account {account}, and nats-server rejected the \
                 answer: compare auth_callout.issuer with the callout's issuer {}, and check \
                 that account {account} exists in nats-server's config",
                self.issuer
            ),
        }
    }

    /// Check 4: a forged token gets nobody in.
    fn forged_check(&self, observing: bool, as_token: &Probe, as_password: &Probe) -> Check {
        const NAME: &str = "bogus-token";
        let mut refused = Vec::new();
        for (how, p) in [
            ("as auth_token", as_token),
            ("as user oauthtoken's password", as_password),
        ] {
            match &p.connected {
                Connected::Refused(_) => refused.push(match &p.decided {
                    Some(Decided::Refuse(r)) => format!("{how}: {r}"),
                    _ => how.to_owned(),
                }),
                Connected::Failed(e) => {
                    return Check::new(
                        Status::Fail,
                        NAME,
                        format!(
                            "cannot connect with a forged token {how} to {}: {e}",
                            self.url
                        ),
                    );
                }
                Connected::Admitted(info) => {
                    let why = match (&p.copy, &p.decided) {
                        _ if !observing => {
                            "the callout's view could not be seen (see bypass)".to_owned()
                        }
                        (None, _) => "nats-server did not ask the callout: its own authorization \
                                      admits the token (a `token`, or a user oauthtoken?)"
                            .to_owned(),
                        (_, Some(Decided::Admit { account, .. })) => format!(
                            "this config admits it into {account}: a plugin accepts unsigned \
                             tokens; fix its route or plugin before anything else"
                        ),
                        _ => "this config refuses it: does another callout (replica) in the \
                              queue group run another config?"
                            .to_owned(),
                    };
                    return Check::new(
                        Status::Fail,
                        NAME,
                        format!("a forged token {how} was admitted{}: {why}", who_of(info)),
                    );
                }
            }
        }
        Check::new(
            Status::Pass,
            NAME,
            format!("a forged token is refused ({})", refused.join("; ")),
        )
    }

    /// Check 5: nats-server accepts what the callout signs.
    fn issuer_check(&self, probes: &[(&str, &Probe)], xkey_failed: bool) -> Check {
        const NAME: &str = "issuer";
        let ours = &self.issuer;
        // nats-server names its auth_callout.issuer (operator mode: the callout account)
        // in every request (`sub`).
        let expected = &self.request_subject;
        if let Some(named) = probes
            .iter()
            .filter_map(|(_, p)| p.copy.as_ref()?.claims.as_ref())
            .map(|c| c.sub.as_str())
            .find(|sub| sub != expected)
        {
            let detail = if self.operator_mode() {
                format!(
                    "nats-server's requests come from account {named}, but \
                     operator.callout_account_jwt_file is account {expected}'s JWT"
                )
            } else {
                format!(
                    "nats-server's auth_callout.issuer is {named}, but the callout signs as \
                     {ours}: set `issuer: {ours}` in authorization.auth_callout"
                )
            };
            return Check::new(Status::Fail, NAME, detail);
        }
        let admitted_by_callout = probes.iter().find(|(_, p)| {
            matches!(p.connected, Connected::Admitted(_))
                && matches!(p.decided, Some(Decided::Admit { .. }))
        });
        if let Some((label, _)) = admitted_by_callout {
            return Check::new(
                Status::Pass,
                NAME,
                format!(
                    "nats-server admitted {label} on the callout's answer: it accepts issuer \
                     {ours}"
                ),
            );
        }
        let refused_though_admitted = probes.iter().find(|(_, p)| {
            matches!(p.connected, Connected::Refused(_))
                && matches!(p.decided, Some(Decided::Admit { .. }))
        });
        if let Some((label, p)) = refused_though_admitted {
            // Refused for a reason other than the signature: nothing proven either way.
            let unproven = match &p.answer {
                Answer::Missing => Some("no callout answered (see anonymous)".to_owned()),
                Answer::Signed {
                    issuer,
                    outcome: Err(e),
                } if issuer == ours => Some(format!("the callout that answered refused it ({e})")),
                _ => None,
            };
            return match unproven {
                Some(why) => Check::new(
                    Status::Skip,
                    NAME,
                    format!("nats-server refused {label}, which this config admits: {why}"),
                ),
                None => Check::new(
                    Status::Fail,
                    NAME,
                    format!("nats-server refused {label}: {}", self.why_refused(p)),
                ),
            };
        }
        // An operator's credential the callout itself refuses proves nothing either.
        if let Some((label, Some(Decided::Refuse(r)))) = probes
            .iter()
            .find(|(label, _)| label.starts_with("the --"))
            .map(|(label, p)| (label, &p.decided))
        {
            return Check::new(
                Status::Skip,
                NAME,
                format!(
                    "no client the callout admits got to prove issuer {ours}: the config \
                     refuses {label} ({r}); pass a credential it admits"
                ),
            );
        }
        let hint = if xkey_failed {
            "the callout cannot accept nats-server's requests (see xkey); fix that first"
        } else {
            "route anonymous clients (permissions.noauth), or pass --token-env VAR or \
             --user NAME --password-env VAR with a credential the callout admits"
        };
        Check::new(
            Status::Skip,
            NAME,
            format!("no client the callout admits got to prove issuer {ours}: {hint}"),
        )
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

/// Move the observer's messages into a channel the probes read from.
async fn forward(mut sub: async_nats::Subscriber, tx: mpsc::UnboundedSender<RawCopy>) {
    while let Some(msg) = sub.next().await {
        let xkey_header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(XKEY_HEADER))
            .map(|v| v.as_str().to_owned());
        let copy = RawCopy {
            payload: msg.payload,
            xkey_header,
            reply: msg.reply.map(|r| r.to_string()),
        };
        if tx.send(copy).is_err() {
            return;
        }
    }
}

/// Move the answers nats-server receives into a channel.
async fn forward_answers(
    mut sub: async_nats::Subscriber,
    tx: mpsc::UnboundedSender<(String, bytes::Bytes)>,
) {
    while let Some(msg) = sub.next().await {
        if tx.send((msg.subject.to_string(), msg.payload)).is_err() {
            return;
        }
    }
}

/// Answers kept while looking for another: a live deployment has many, one run needs a
/// handful.
const MAX_EARLY_ANSWERS: usize = 10_000;

impl Observer {
    /// The answer published to `reply`, within `wait`.
    async fn answer(&mut self, reply: &str, wait: Duration) -> Option<bytes::Bytes> {
        if let Some(a) = self.early.remove(reply) {
            return Some(a);
        }
        let answers = self.answers.as_mut()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((subject, payload))) if subject == reply => return Some(payload),
                Ok(Some((subject, payload))) => {
                    if self.early.len() >= MAX_EARLY_ANSWERS {
                        self.early.clear();
                    }
                    self.early.insert(subject, payload);
                }
                _ => return None,
            }
        }
    }

    /// The request copy of the client called `name`, until `until` ends. Copies of
    /// other clients (a live deployment has them) are skipped; when none could be read,
    /// the first sealed one that cannot be opened stands for it: the seal is what is
    /// wrong then.
    async fn find(
        &mut self,
        name: &str,
        ours: Option<&XKey>,
        until: impl std::future::Future<Output = ()>,
    ) -> Option<Copy> {
        tokio::pin!(until);
        let mut unreadable = None;
        loop {
            let raw = tokio::select! {
                raw = self.copies.recv() => match raw {
                    Some(raw) => raw,
                    None => return unreadable,
                },
                _ = &mut until => return unreadable,
            };
            let opened = open(&raw, ours);
            let claims = opened
                .token()
                .and_then(jwt::decode_unverified::<RequestClaims>);
            match &claims {
                Some(c) if c.nats.connect_opts.name == name => {
                    return Some(Copy {
                        raw,
                        opened,
                        claims,
                    });
                }
                None if unreadable.is_none() && matches!(opened, Opened::Unreadable(_)) => {
                    unreadable = Some(Copy {
                        raw,
                        opened,
                        claims,
                    });
                }
                _ => {}
            }
        }
    }
}

/// Open a request copy with the callout's xkey, saying what to fix when it cannot be.
fn open(raw: &RawCopy, ours: Option<&XKey>) -> Opened {
    let plain = || match std::str::from_utf8(&raw.payload) {
        Ok(t) => Opened::Plain(t.trim().to_owned()),
        Err(_) => Opened::Unreadable("nats-server's auth request is not a JWT".into()),
    };
    let Some(header) = &raw.xkey_header else {
        return plain();
    };
    let Some(ours) = ours else {
        return Opened::Unreadable(format!(
            "nats-server seals auth requests (auth_callout.xkey is set; its own xkey is \
             {header}), but the callout has no xkey: set xkey_seed_file (or {XKEY_SEED_ENV}) \
             to the seed of auth_callout.xkey, or remove xkey from auth_callout"
        ));
    };
    let Ok(server) = XKey::from_public_key(header) else {
        return Opened::Unreadable(format!("header {XKEY_HEADER} {header:?} is not an xkey"));
    };
    match ours.open(&raw.payload, &server) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => Opened::Sealed(t.trim().to_owned()),
            Err(_) => Opened::Unreadable("the opened auth request is not a JWT".into()),
        },
        Err(_) => Opened::Unreadable(format!(
            "nats-server seals auth requests for another xkey than the callout's: set \
             `xkey: {}` in authorization.auth_callout",
            ours.public_key()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches(">", "$SYS.REQ.USER.INFO"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn permissions_decide_the_user_info_exchange() {
        let nats = serde_json::json!({
            "pub": {"allow": ["public.>", "$SYS.REQ.USER.INFO"]},
            "sub": {"allow": ["public.>", "_INBOX.>"]},
        });
        let p = Perms::from_user_claims(&nats);
        assert!(p.may_publish(USER_INFO) && p.may_subscribe("_INBOX.x"));
        let nats = serde_json::json!({"pub": {"deny": [">"]}, "sub": {"allow": ["public.>"]}});
        let p = Perms::from_user_claims(&nats);
        assert!(!p.may_publish(USER_INFO) && !p.may_subscribe("_INBOX.x"));
        // A response permission turns the blanket publish allow off.
        let nats = serde_json::json!({"sub": {"allow": ["a"]}, "resp": {"max": 0, "ttl": 0}});
        let p = Perms::from_user_claims(&nats);
        assert_eq!(p.resp, Some((DEFAULT_RESP_MAX, DEFAULT_RESP_TTL_NANOS)));
        assert!(!p.may_publish(USER_INFO));
        // nats-server's listing compares as sets.
        let info = serde_json::json!({
            "publish": {"allow": ["b", "a"]},
            "subscribe": {"allow": ["a"]},
            "responses": {"max": 1, "ttl": 120_000_000_000i64},
        });
        let claims = serde_json::json!({"pub": {"allow": ["a", "b"]}, "sub": {"allow": ["a"]}, "resp": {"max": 1}});
        assert_eq!(
            Perms::from_user_info(&info),
            Perms::from_user_claims(&claims)
        );
    }

    #[test]
    fn a_forged_token_is_jwt_shaped() {
        let t = forged_token();
        assert_eq!(t.split('.').count(), 3);
        assert!(t.starts_with("eyJ"));
        assert!(jwt::decode_verified::<serde_json::Value>(&t).is_err());
    }
}
