//! NATS I/O: one connection per configured server, a queue subscription on
//! `$SYS.REQ.USER.AUTH` (replicas share the load), requests decided concurrently.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::nats::audit::Audit;
use crate::nats::keys::{KeyError, SeedSource};
use crate::nats::sessions::{Sessions, hear_disconnects};
use crate::ops::config::{Config, NatsConfig};
use crate::pipeline::authorizer::{About, Shared, Verdict};
use crate::pipeline::request::XKEY_HEADER;
use nats_callout_sdk::CredentialKind;

/// Environment overrides of the NATS credentials: the seed for entries without `user`,
/// the password for entries with one.
pub const NKEY_SEED_ENV: &str = "AUTH_CALLOUT_NKEY_SEED";
pub const PASSWORD_ENV: &str = "AUTH_CALLOUT_NATS_PASSWORD";
/// The same for `nats[].system_user`.
pub const SYSTEM_NKEY_SEED_ENV: &str = "AUTH_CALLOUT_SYSTEM_NKEY_SEED";
pub const SYSTEM_PASSWORD_ENV: &str = "AUTH_CALLOUT_SYSTEM_PASSWORD";

/// Reconnect back-off cap. nats-server refuses clients while we are away, so come back
/// quickly, but not in a tight loop against a server that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long [`confirm_subscribed`] waits for nats-server's answer: far above any round
/// trip to a reachable server, so it runs out only when the server will not answer.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("nats[{server}]: {source}")]
    Credentials { server: String, source: KeyError },
    #[error("nats[{server}]: cannot read password file {path}: {source}")]
    Password {
        server: String,
        path: String,
        source: std::io::Error,
    },
    #[error("nats[{server}]: credentials file {path}: {source}")]
    CredentialsFile {
        server: String,
        path: String,
        source: std::io::Error,
    },
    #[error("nats[{server}]: cannot read TLS file {path}: {source}")]
    TlsFile {
        server: String,
        path: String,
        source: std::io::Error,
    },
}

/// How long a shutdown waits for the requests it already has. nats-server gives up on
/// an answer after its auth timeout (2 s by default); past that a decision helps no one,
/// and 5 s also covers a raised timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How many requests a draining subscription still takes beyond those it has received:
/// more than nats-server can have on the wire to us when it reads our UNSUB, so none of
/// those is lost, and few enough that a draining replica takes no real share of a storm.
/// See `serve` for why a drain does not simply unsubscribe.
const DRAIN_TAIL: u64 = 256;

/// How long a drain waits for those requests before it unsubscribes outright: traffic
/// too light to deliver them in a second leaves (almost) nothing on the wire either.
const DRAIN_TAIL_WAIT: Duration = Duration::from_secs(1);

/// How long start-up waits for the system user's connection to hear disconnects
/// before it subscribes to auth requests: the same server, so a round trip when it is
/// up; a system login that cannot get through delays serving by no more than this.
const SYSTEM_WAIT: Duration = Duration::from_secs(2);

/// A running service: one task per NATS server.
pub struct Service {
    tasks: Vec<JoinHandle<()>>,
    ready: Vec<watch::Receiver<bool>>,
    /// Set to start a graceful shutdown ([`Service::shutdown`]).
    draining: watch::Sender<bool>,
}

impl Service {
    /// Start serving every configured NATS server. Connections are (re)tried in the
    /// background; [`Service::wait_ready`] waits until all are subscribed.
    pub fn start(cfg: &Config, authorizer: Shared) -> Result<Self, ServiceError> {
        let mut tasks = Vec::new();
        let mut ready = Vec::new();
        let (draining, drain) = watch::channel(false);
        let nkey_mode = cfg.may_route(CredentialKind::Nkey);
        let revocation = cfg.revocation.as_ref();
        for (i, server) in cfg.nats.iter().enumerate() {
            if nkey_mode && server.user.is_some() {
                tracing::warn!(
                    server = %server.name,
                    "nkey mode with a user/password login: nats-server sends clients a nonce \
                     to sign only when it has an nkey user of its own; unless it has another \
                     one, log in with nkey_seed_file"
                );
            }
            let options = connect_options(cfg, server)?;
            let extras = Extras {
                system: if cfg.closes_revoked(server) {
                    system_connect(cfg, server, &options)?
                } else {
                    None
                },
                audit_subject: server.audit_subject.clone(),
                tracked: revocation
                    .map_or(crate::ops::config::RevocationConfig::DEFAULT_TRACKED, |r| {
                        r.max_tracked_connections
                    }),
                // One watch is enough: the bucket lives in one account of one cluster.
                kv_bucket: revocation
                    .and_then(|r| r.kv_bucket.clone())
                    .filter(|_| i == 0),
            };
            let (tx, rx) = watch::channel(false);
            ready.push(rx);
            tasks.push(tokio::spawn(serve(
                server.clone(),
                options,
                extras,
                authorizer.clone(),
                cfg.limits.max_concurrent,
                tx,
                drain.clone(),
            )));
        }
        Ok(Self {
            tasks,
            ready,
            draining,
        })
    }

    /// Read every server's credentials and TLS files as [`Service::start`] would,
    /// without connecting: what `nats-callout check` can vouch for.
    pub fn check(cfg: &Config) -> Result<(), ServiceError> {
        cfg.nats.iter().try_for_each(|server| {
            let callout = connect_options(cfg, server)?;
            system_connect(cfg, server, &callout).map(drop)
        })
    }

    /// True when every server's subscription is active.
    pub fn is_ready(&self) -> bool {
        self.ready.iter().all(|r| *r.borrow())
    }

    /// A readiness probe for the operations listener, naming the servers not subscribed.
    pub fn readiness(&self, names: Vec<String>) -> crate::ops::http::Readiness {
        let ready = self.ready.clone();
        Arc::new(move || {
            let down: Vec<&str> = ready
                .iter()
                .zip(&names)
                .filter(|(r, _)| !*r.borrow())
                .map(|(_, n)| n.as_str())
                .collect();
            if down.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "not subscribed on NATS server(s): {}",
                    down.join(", ")
                ))
            }
        })
    }

    /// Wait until every server's subscription is active, or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let all = async {
            for r in &self.ready {
                let mut r = r.clone();
                if r.wait_for(|v| *v).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }

    /// Stop serving at once. In-flight requests are abandoned; nats-server refuses
    /// those clients when its auth timeout runs out.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    /// Stop serving gracefully: unsubscribe, so that nats-server sends new requests to
    /// the other members of the queue group; decide and answer every request already
    /// received; then close. Bounded by [`DRAIN_TIMEOUT`], after which what is left is
    /// abandoned as by [`Service::stop`].
    pub async fn shutdown(mut self) {
        self.draining.send_replace(true);
        let all = futures::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: connections still open after the drain timeout; closing");
        }
        self.stop();
    }
}

/// How to reach one server. Built anew per connection attempt because async-nats
/// consumes the options.
#[derive(Clone)]
struct Connect {
    url: String,
    auth: Auth,
    tls: Option<Tls>,
}

/// Resolved `nats[].tls` paths.
#[derive(Clone)]
struct Tls {
    ca_file: Option<std::path::PathBuf>,
    client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Clone)]
enum Auth {
    Nkey(String),
    /// A `.creds` file's text (operator mode).
    Credentials(String),
    Password(String, String),
    None,
}

impl Auth {
    fn options(&self) -> async_nats::ConnectOptions {
        match self {
            Auth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            // Parsed when the file was read: this cannot fail here.
            Auth::Credentials(creds) => async_nats::ConnectOptions::with_credentials(creds)
                .unwrap_or_else(|_| async_nats::ConnectOptions::new()),
            Auth::Password(u, p) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            Auth::None => async_nats::ConnectOptions::new(),
        }
    }

    /// How nats-server names the user, for messages; never the secret.
    fn describe(&self) -> String {
        match self {
            Auth::Nkey(seed) => nkeys::KeyPair::from_seed(seed).map_or_else(
                |_| "an nkey".into(),
                |kp| format!("nkey {}", kp.public_key()),
            ),
            Auth::Credentials(creds) => creds
                .lines()
                .find(|l| l.starts_with("eyJ"))
                .and_then(|jwt| {
                    crate::nats::jwt::decode_unverified::<serde_json::Value>(jwt.trim())
                })
                .and_then(|c| c["sub"].as_str().map(|s| format!("user {s} (creds)")))
                .unwrap_or_else(|| "a creds file".into()),
            Auth::Password(u, _) => format!("user {u:?}"),
            Auth::None => "no credentials".into(),
        }
    }
}

/// The callout's own login to `server`, read as `run` reads it (seed or password, file
/// or environment): the options to connect with, and how nats-server names that user.
/// What `nats-callout verify` logs in with.
pub fn callout_login(
    cfg: &Config,
    server: &NatsConfig,
) -> Result<(async_nats::ConnectOptions, String), ServiceError> {
    let auth = connect_options(cfg, server)?.auth;
    Ok((auth.options(), auth.describe()))
}

/// One NATS login as configured: an nkey seed (file or environment), or a user with a
/// password (file or environment).
struct Login<'a> {
    what: &'static str,
    seed_env: &'static str,
    seed_file: Option<&'a std::path::PathBuf>,
    user: Option<&'a String>,
    password_env: &'static str,
    password_file: Option<&'a std::path::PathBuf>,
    credentials_file: Option<&'a std::path::PathBuf>,
}

fn auth(cfg: &Config, server: &NatsConfig, login: Login<'_>) -> Result<Auth, ServiceError> {
    let seed_file = login.seed_file.map(|p| cfg.resolve(p));
    let src = SeedSource {
        what: login.what,
        env: login.seed_env,
        file: seed_file.as_deref(),
    };
    let credentials = |source| ServiceError::Credentials {
        server: server.name.clone(),
        source,
    };
    // A `user` entry logs in with its password even when the nkey seed comes from the
    // environment (the Helm chart always sets it): the config names the method.
    if let Some(f) = login.credentials_file {
        let path = cfg.resolve(f);
        let creds =
            std::fs::read_to_string(&path).map_err(|source| ServiceError::CredentialsFile {
                server: server.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
        // async-nats parses lazily; a broken file is refused now, with its path.
        async_nats::ConnectOptions::with_credentials(&creds).map_err(|e| {
            ServiceError::CredentialsFile {
                server: server.name.clone(),
                path: path.display().to_string(),
                source: e,
            }
        })?;
        return Ok(Auth::Credentials(creds));
    }
    Ok(
        if login.user.is_none()
            && let Some(kp) = src
                .key_pair(nkeys::KeyPairType::User)
                .map_err(credentials)?
        {
            Auth::Nkey(kp.seed().map_err(|_| {
                credentials(KeyError::Invalid {
                    what: login.what.to_owned(),
                    prefix: "SU",
                })
            })?)
        } else if let Some(user) = login.user {
            let password = match std::env::var(login.password_env) {
                Ok(p) if !p.is_empty() => p,
                _ => match login.password_file {
                    Some(f) => {
                        let path = cfg.resolve(f);
                        std::fs::read_to_string(&path)
                            .map_err(|source| ServiceError::Password {
                                server: server.name.clone(),
                                path: path.display().to_string(),
                                source,
                            })?
                            .trim()
                            .to_owned()
                    }
                    None => String::new(),
                },
            };
            Auth::Password(user.clone(), password)
        } else {
            Auth::None
        },
    )
}

/// How to reach the server as its `system_user`, when one is configured.
fn system_connect(
    cfg: &Config,
    server: &NatsConfig,
    callout: &Connect,
) -> Result<Option<Connect>, ServiceError> {
    let Some(u) = &server.system_user else {
        return Ok(None);
    };
    let auth = auth(
        cfg,
        server,
        Login {
            what: "system user nkey seed",
            seed_env: SYSTEM_NKEY_SEED_ENV,
            seed_file: u.nkey_seed_file.as_ref(),
            user: u.user.as_ref(),
            password_env: SYSTEM_PASSWORD_ENV,
            password_file: u.password_file.as_ref(),
            credentials_file: u.credentials_file.as_ref(),
        },
    )?;
    Ok(Some(Connect {
        auth,
        ..callout.clone()
    }))
}

fn connect_options(cfg: &Config, server: &NatsConfig) -> Result<Connect, ServiceError> {
    let auth = auth(
        cfg,
        server,
        Login {
            what: "nkey seed",
            seed_env: NKEY_SEED_ENV,
            seed_file: server.nkey_seed_file.as_ref(),
            user: server.user.as_ref(),
            password_env: PASSWORD_ENV,
            password_file: server.password_file.as_ref(),
            credentials_file: server.credentials_file.as_ref(),
        },
    )?;
    let tls = match &server.tls {
        None => None,
        Some(t) => {
            // Checked now: async-nats would only report a missing file as an endless
            // series of failed reconnects.
            let file = |p: &std::path::PathBuf| {
                let path = cfg.resolve(p);
                std::fs::metadata(&path)
                    .map(|_| path.clone())
                    .map_err(|source| ServiceError::TlsFile {
                        server: server.name.clone(),
                        path: path.display().to_string(),
                        source,
                    })
            };
            let client = match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => Some((file(c)?, file(k)?)),
                _ => None,
            };
            Some(Tls {
                ca_file: t.ca_file.as_ref().map(file).transpose()?,
                client,
            })
        }
    };
    Ok(Connect {
        url: server.url.clone(),
        auth,
        tls,
    })
}

impl Connect {
    fn options(&self) -> async_nats::ConnectOptions {
        let base = self.auth.options();
        let base = match &self.tls {
            None => base,
            Some(tls) => {
                let mut o = base.require_tls(true);
                if let Some(ca) = &tls.ca_file {
                    o = o.add_root_certificates(ca.clone());
                }
                if let Some((cert, key)) = &tls.client {
                    o = o.add_client_certificate(cert.clone(), key.clone());
                }
                o
            }
        };
        base.name("nats-callout")
            // Requests are small and arrive in bursts after a cluster restart: a deep
            // buffer absorbs a reconnect storm instead of marking us a slow consumer.
            .subscription_capacity(64 * 1024)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                MAX_BACKOFF
                    .min(Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(8) as u32))
            })
    }
}

/// Wait until nats-server has acted on every command `client` sent before this call,
/// its subscriptions included, or `timeout`.
///
/// async-nats' `flush` only writes its buffer to the socket, and its API has no PING
/// round trip: "written" is not "subscribed". A request to a fresh inbox, where nobody
/// listens, is answered by nats-server itself ("no responders") after the commands
/// before it, so any answer proves they were processed. The client must be allowed to
/// subscribe and publish on `_INBOX.>`.
pub async fn round_trip(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), async_nats::RequestError> {
    let probe = async_nats::Request::new().timeout(Some(timeout));
    match client.send_request(client.new_inbox(), probe).await {
        Err(e) if e.kind() != async_nats::RequestErrorKind::NoResponders => Err(e),
        _ => Ok(()),
    }
}

/// Whether the auth subscription is in place: a [`round_trip`] after it, and the
/// connection still up at the end (the answer may have come just before it dropped
/// again). Without this, a client connecting between "SUB written" and "SUB processed"
/// is refused for want of a responder. A server that does not answer (the callout user
/// may not use `_INBOX.>`) leaves only the connection state to go by; that is logged.
pub async fn confirm_subscribed(client: &async_nats::Client, server: &str) -> bool {
    let answered = match round_trip(client, CONFIRM_TIMEOUT).await {
        Ok(()) => true,
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            tracing::warn!(
                server,
                "nats-server did not answer the subscription check \
                (may this user subscribe and publish on _INBOX.>?); ready on the connection state alone"
            );
            true
        }
        Err(e) => {
            tracing::warn!(server, error = %e, "subscription check failed");
            false
        }
    };
    answered && client.connection_state() == async_nats::connection::State::Connected
}

/// What one server's connection does beside answering requests.
struct Extras {
    /// Log in as the system user, to close the connections of revoked identities.
    system: Option<Connect>,
    audit_subject: Option<String>,
    /// Admitted connections remembered for closing.
    tracked: usize,
    /// Watch this revocation bucket.
    kv_bucket: Option<String>,
}

/// Tasks that live as long as one server's `serve`: aborted with it.
#[derive(Default)]
struct Helpers(Vec<JoinHandle<()>>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn serve(
    server: NatsConfig,
    connect: Connect,
    extras: Extras,
    authorizer: Shared,
    max_concurrent: usize,
    ready: watch::Sender<bool>,
    mut drain: watch::Receiver<bool>,
) {
    let name = server.name.clone();
    let ready = Arc::new(ready);
    let events = ready.clone();
    // Ready means "subscribed", not just "connected": set only after the first SUB, and
    // after a reconnect only once a round trip shows the server has the re-sent SUB
    // (async-nats reports `Connected` before it re-subscribes). Holds the client once
    // the first subscription is in place; weakly, so that stopping the service still
    // closes the connection.
    let subscribed = Arc::new(std::sync::OnceLock::<std::sync::Weak<async_nats::Client>>::new());
    let subscribed_ev = subscribed.clone();
    // Connections made, the first included: past one, the subscription was re-made by a
    // reconnect (see the drain).
    let connects = Arc::new(AtomicUsize::new(0));
    let connects_ev = connects.clone();
    let options = connect.options().event_callback(move |event| {
        let events = events.clone();
        let name = name.clone();
        let subscribed = subscribed_ev.clone();
        let connects = connects_ev.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    tracing::info!(server = %name, "connected to NATS");
                    connects.fetch_add(1, Ordering::Relaxed);
                    if let Some(client) = subscribed.get().and_then(std::sync::Weak::upgrade) {
                        tokio::spawn(async move {
                            if confirm_subscribed(&client, &name).await {
                                events.send_replace(true);
                            }
                        });
                    }
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!(server = %name, "disconnected from NATS");
                    events.send_replace(false);
                }
                other => tracing::warn!(server = %name, event = %other, "NATS event"),
            }
        }
    });
    let client = match async_nats::connect_with_options(connect.url.as_str(), options).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(server = %server.name, error = %e, "cannot connect to NATS");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(max_concurrent));
    // For the log lines of every request: shared, not copied per request.
    let shared_name: Arc<str> = server.name.as_str().into();
    let mut helpers = Helpers::default();
    let (metrics, revocations) = {
        let now = authorizer.load();
        (now.metrics().clone(), now.revocations().clone())
    };
    // The registry of admitted connections hears nats-server's disconnect advisories
    // from before the first request is taken: the system connection subscribes first
    // (waiting for it at most SYSTEM_WAIT), so no client admitted here leaves unheard.
    let sessions = match extras.system {
        None => None,
        Some(system) => {
            let options = system.options().name("nats-callout-system");
            match async_nats::connect_with_options(system.url.as_str(), options).await {
                Ok(system) => {
                    let disconnects = hear_disconnects(&system, SYSTEM_WAIT, &server.name).await;
                    let sessions = Arc::new(Sessions::new(
                        extras.tracked,
                        metrics.tracked_connections.clone(),
                    ));
                    helpers
                        .0
                        .push(tokio::spawn(crate::nats::sessions::kick_revoked(
                            system,
                            disconnects,
                            sessions.clone(),
                            revocations.clone(),
                            shared_name.clone(),
                            metrics.clone(),
                        )));
                    Some(sessions)
                }
                Err(e) => {
                    tracing::error!(server = %server.name, error = %e,
                        "cannot connect as the system user; revoked identities are refused at their next connect only");
                    None
                }
            }
        }
    };
    let mut sub = loop {
        match client
            .queue_subscribe(server.subject.clone(), server.queue_group.clone())
            .await
        {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(server = %server.name, error = %e, "subscribe failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Subscribed once the server has seen the SUB. If the check fails, the next
    // `Connected` (after the re-sent SUB) sets readiness instead.
    let _ = subscribed.set(Arc::downgrade(&client));
    if confirm_subscribed(&client, &server.name).await {
        ready.send_replace(true);
    }
    tracing::info!(server = %server.name, subject = %server.subject, group = %server.queue_group, "serving auth requests");

    if let Some(bucket) = extras.kv_bucket {
        helpers
            .0
            .push(tokio::spawn(crate::nats::revocation_kv::watch(
                (*client).clone(),
                bucket,
                revocations.clone(),
            )));
    }
    let (audit, audit_task) = match extras.audit_subject {
        Some(subject) => {
            let (audit, task) =
                Audit::start((*client).clone(), subject, shared_name.clone(), metrics);
            (Some(Arc::new(audit)), Some(task))
        }
        None => (None, None),
    };
    // Set once a shutdown starts: from then on the subscription only yields what
    // nats-server sent before it stopped sending to us, then ends.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Until when a drain waits for its tail (see below) before unsubscribing outright.
    let mut tail_deadline: Option<tokio::time::Instant> = None;
    // Requests received from the subscription, and those a drain took out of its buffer.
    let mut taken: u64 = 0;
    let mut backlog = std::collections::VecDeque::new();
    loop {
        let mut msg = match backlog.pop_front() {
            Some(msg) => msg,
            None => tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => {
                        taken += 1;
                        msg
                    }
                    None => break,
                },
                // `changed` fires once: the flag is only ever set (or its sender dropped).
                _ = drain.changed(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    ready.send_replace(false);
                    tracing::info!(server = %server.name, "draining: unsubscribing, answering the requests received");
                    // async-nats' `drain` forgets the subscription as soon as its UNSUB is
                    // written, so requests nats-server sent before it read the UNSUB are
                    // dropped on arrival (measured: up to 6 % of a storm, see BENCHMARKS.md
                    // part 7). Instead, nats-server is asked to end the subscription after
                    // a count of deliveries, which async-nats honours on its side too: both
                    // stop at the same request, so none in flight is lost. The count only
                    // matches nats-server's while the subscription was never re-made by a
                    // reconnect; after one, `drain` it is.
                    let unsubscribed = if connects.load(Ordering::Relaxed) > 1 {
                        sub.drain().await
                    } else {
                        while let Some(Some(msg)) = sub.next().now_or_never() {
                            taken += 1;
                            backlog.push_back(msg);
                        }
                        tail_deadline = Some(tokio::time::Instant::now() + DRAIN_TAIL_WAIT);
                        sub.unsubscribe_after(taken + DRAIN_TAIL).await
                    };
                    if let Err(e) = unsubscribed {
                        tracing::warn!(server = %server.name, error = %e, "cannot unsubscribe");
                        break;
                    }
                    continue;
                }
                _ = sleep_until_some(tail_deadline) => {
                    tail_deadline = None;
                    if let Err(e) = sub.unsubscribe().await {
                        tracing::warn!(server = %server.name, error = %e, "cannot unsubscribe");
                        break;
                    }
                    continue;
                }
                _ = sleep_until_some(drain_deadline) => break,
            },
        };
        // nats-server always asks with a reply subject; without one nobody waits for
        // the decision, so none is made (no plugin call, no counted decision).
        let Some(reply) = msg.reply.take() else {
            tracing::warn!(server = %server.name, "auth request without reply subject; ignored");
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        // The set current at arrival decides this request, even if a reload swaps it
        // meanwhile: in-flight requests finish on the old plugins.
        let authorizer = authorizer.load_full();
        let client = client.clone();
        let server_name = shared_name.clone();
        let (sessions, audit) = (sessions.clone(), audit.clone());
        tokio::spawn(async move {
            let xkey = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(XKEY_HEADER))
                .map(|v| v.as_str().to_owned());
            let started = std::time::Instant::now();
            let mut handled = authorizer.handle(&msg.payload, xkey.as_deref()).await;
            let mode = handled.mode.map(|m| m.as_str()).unwrap_or("-");
            let route = handled.route.as_deref().unwrap_or("-");
            let micros = started.elapsed().as_micros() as u64;
            match &handled.verdict {
                Verdict::Allowed { account } => tracing::debug!(
                    server = %server_name, route, mode, client_id = handled.client_id,
                    user_nkey = %handled.user_nkey, account = %account, micros, "allowed"),
                Verdict::Denied(reason) => tracing::info!(
                    server = %server_name, route, mode, client_id = handled.client_id,
                    user_nkey = %handled.user_nkey, reason = %reason, micros, "denied"),
                Verdict::Invalid(reason) => tracing::warn!(
                    server = %server_name, reason = %reason, micros, "invalid auth request"),
            }
            let answer = std::mem::take(&mut handled.reply);
            if let Err(e) = client.publish(reply.clone(), answer.into()).await {
                // E.g. a grant too large for the server's max_payload: refuse the
                // client now rather than leave it to the auth timeout.
                tracing::warn!(server = %server_name, client_id = handled.client_id,
                    error = %e, "cannot publish the response; refusing the client");
                let _ = client.publish(reply, Default::default()).await;
            }
            // Moved in and dropped here, before the permit: once every permit is back,
            // the publisher has had the last event.
            if let Some(audit) = audit {
                audit.record(&handled);
            }
            // Last: the registry takes the record's identity instead of a copy.
            if let (Some(sessions), Verdict::Allowed { .. }) = (&sessions, &handled.verdict)
                && let Some(about) = handled.about.take()
            {
                let About {
                    identity,
                    server_id,
                    grant,
                    ..
                } = *about;
                let expires_at = grant.and_then(|g| g.expires_at);
                sessions.admit(server_id, handled.client_id, identity, expires_at);
            }
            drop(permit);
        });
    }
    let Some(deadline) = drain_deadline else {
        tracing::warn!(server = %server.name, "subscription ended");
        return;
    };
    // Every decision in flight holds a permit until its answer is handed to the client.
    let everything = u32::try_from(max_concurrent).unwrap_or(u32::MAX);
    let settled = tokio::time::timeout_at(deadline, limit.acquire_many(everything)).await;
    if settled.is_err() {
        tracing::warn!(
            server = %server.name,
            undecided = max_concurrent - limit.available_permits(),
            "drain timeout: abandoning the requests still being decided"
        );
    }
    // The events of the last decisions go out before the connection closes.
    drop(audit);
    if let Some(publisher) = audit_task {
        let _ = tokio::time::timeout_at(deadline, publisher).await;
    }
    let flushed = tokio::time::timeout_at(deadline, client.flush()).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!(server = %server.name, "drain timeout: answers may not have been sent");
    }
    tracing::info!(server = %server.name, "drained");
}

/// Sleep until `deadline`, or forever if there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
