//! The decision pipeline for one request: verify, route, ask the route's plugin chain,
//! check the grant, sign. Independent of NATS I/O so it can be benchmarked and tested
//! alone.

use std::sync::Arc;
use std::time::Duration;

use nats_callout_sdk::{ConnectionType, CredentialKind};
use nkeys::KeyPairType;

use crate::identity::user_jwt;
use crate::identity::x509;
use crate::nats::claims::AuthorizationRequest;
use crate::nats::keys::{KeyError, SeedSource};
use crate::ops::config::Config;
use crate::ops::metrics::{Counters, Metrics, PluginMetrics};
use crate::pipeline::accounts::Accounts;
use crate::pipeline::cache::{DecisionCache, Key};
use crate::pipeline::credential;
use crate::pipeline::decision::{Connection, Decision, Grant};
use crate::pipeline::identity::Identity;
use crate::pipeline::request::{ReplyTarget, Verifier, unix_now};
use crate::pipeline::respond::{IssueError, Signer};
use crate::pipeline::revocation::{Revocations, Revoked};
use crate::pipeline::routing::{Facts, Matcher, Mode, shadows};
use crate::runtime::capabilities::Capabilities;
use crate::runtime::{
    CallError, CallLimits, Legacy, PluginEngine, PluginError, PluginRequest, Runner,
};

/// Environment variables that override the seed files.
pub const ISSUER_SEED_ENV: &str = "AUTH_CALLOUT_ISSUER_SEED";
pub const XKEY_SEED_ENV: &str = "AUTH_CALLOUT_XKEY_SEED";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Jwks(#[from] crate::identity::oauth::JwksError),
    #[error(transparent)]
    Ca(#[from] x509::CaError),
    #[error("issuer key: {0}")]
    Signer(#[from] crate::nats::jwt::JwtError),
    #[error(transparent)]
    Outbound(#[from] crate::runtime::capabilities::http::OutboundError),
    #[error(transparent)]
    Revocation(#[from] crate::pipeline::revocation::RevocationError),
    #[error(transparent)]
    Accounts(#[from] crate::pipeline::accounts::AccountsError),
    #[error("{at}: {message}")]
    Secret { at: String, message: String },
    #[error("{origin} ({name}): {message}")]
    Route {
        origin: String,
        name: String,
        message: String,
    },
}

/// How one request ended, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted into `account`.
    Allowed { account: String },
    /// A well-formed request whose client was refused.
    Denied(String),
    /// The request itself was bad (forged, expired, garbage): an error, not a client.
    Invalid(String),
}

/// The result of handling one message.
#[derive(Debug)]
pub struct Handled {
    /// The route that took it.
    pub route: Option<Arc<str>>,
    /// The mode of its credential, whose `auth_<mode>_*` metrics count it.
    pub mode: Option<Mode>,
    pub verdict: Verdict,
    /// Bytes to publish on the reply subject. Empty when no signed response can be
    /// made (the request was unreadable, or signing failed): nats-server reads an
    /// empty answer as "not authorized" and refuses the client at once, instead of
    /// after its auth timeout.
    pub reply: Vec<u8>,
    /// Connection id and user nkey, for the log line.
    pub client_id: u64,
    pub user_nkey: String,
    /// What audit events and the connection registry record, when either is on.
    pub about: Option<Box<About>>,
}

/// Who asked and what was granted: the record of one decision beyond its verdict.
#[derive(Debug, Default)]
pub struct About {
    pub identity: Identity,
    /// The nats-server that asked (its id addresses `$SYS.REQ.SERVER.<id>.*`).
    pub server_id: String,
    pub server_name: String,
    pub client_host: String,
    /// The connection type (`STANDARD`, `MQTT`, `WEBSOCKET`, `LEAFNODE`).
    pub client_type: String,
    /// The plugin whose grant or deny decided; `None` when the host decided alone.
    pub plugin: Option<String>,
    /// The grant came from the decision cache.
    pub cached: bool,
    /// The grant signed, when the client was admitted.
    pub grant: Option<Grant>,
}

impl About {
    /// Nothing known: a request too broken to say who asked.
    pub fn empty() -> &'static About {
        static EMPTY: About = About {
            identity: Identity {
                jti: None,
                sub: None,
                client: None,
                nkey: None,
                cert_sha256: None,
                user: None,
            },
            server_id: String::new(),
            server_name: String::new(),
            client_host: String::new(),
            client_type: String::new(),
            plugin: None,
            cached: false,
            grant: None,
        };
        &EMPTY
    }
}

/// One loaded plugin, with its metric series.
struct Link {
    runner: Runner,
    metrics: PluginMetrics,
}

/// One route: what it matches, its chain (indices into the loaded plugins), its metrics.
struct Route {
    name: Arc<str>,
    matcher: Matcher,
    chain: Vec<usize>,
    /// Some plugin of the chain is of contract 0.1.0 and reads the raw CONNECT fields.
    legacy: bool,
    metrics: Counters,
}

/// A routed request, ready to be decided. Matched right away, never held across an
/// await: boxing the cached grant would cost an allocation per cache hit for nothing.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    /// Granted before, still valid: no plugin runs.
    Cached(Grant),
    /// For the route's plugin chain, with the key to cache their grant under (cache on,
    /// credential cacheable). Boxed: the request future holds it across the plugin call.
    Run {
        request: Box<PluginRequest>,
        key: Option<Key>,
    },
}

/// The current authorizer, swapped atomically by a reload.
pub type Shared = Arc<arc_swap::ArcSwap<Authorizer>>;

pub struct Authorizer {
    signer: Signer,
    leeway: Duration,
    plugins: Vec<Link>,
    routes: Vec<Route>,
    jwks: Option<Arc<crate::identity::oauth::Jwks>>,
    /// The operator's client-certificate CAs; when set, every mtls request's chain must
    /// verify against it before any plugin sees the request.
    ca: Option<Arc<x509::CaBundle>>,
    cache: Option<DecisionCache>,
    /// Shared with the revocation watchers and every later reload.
    revocations: Arc<Revocations>,
    /// A `revocation` section is configured: without one nothing can be revoked, and
    /// requests skip the lookup.
    revocable: bool,
    /// Fill [`Handled::about`]: some audit subject or connection registry reads it.
    record: bool,
    metrics: Metrics,
    notes: Vec<String>,
    // Keeps the epoch ticker alive as long as plugins may run.
    _engine: Arc<PluginEngine>,
}

impl Authorizer {
    /// Load seeds and every configured plugin. Fails on the first bad one.
    pub fn from_config(cfg: &Config, metrics: Metrics) -> Result<Self, LoadError> {
        let issuer_file = cfg.issuer_seed_file.as_ref().map(|p| cfg.resolve(p));
        let issuer_src = SeedSource {
            what: "issuer seed",
            env: ISSUER_SEED_ENV,
            file: issuer_file.as_deref(),
        };
        let issuer = issuer_src.required(issuer_src.key_pair(KeyPairType::Account)?)?;
        let xkey_file = cfg.xkey_seed_file.as_ref().map(|p| cfg.resolve(p));
        let xkey = SeedSource {
            what: "xkey seed",
            env: XKEY_SEED_ENV,
            file: xkey_file.as_deref(),
        }
        .xkey()?;
        let accounts = cfg
            .operator
            .as_ref()
            .map(|op| {
                let xkey_public = xkey.as_ref().map(|x| x.public_key());
                Accounts::load(cfg, op, &issuer.public_key(), xkey_public.as_deref())
            })
            .transpose()?;

        let specs = cfg.plugin_specs();
        let limits_of = |p: &crate::ops::config::PluginSpec| CallLimits {
            timeout: p.limits.timeout.unwrap_or(cfg.limits.plugin_timeout),
            memory_bytes: p
                .limits
                .memory_bytes
                .unwrap_or(cfg.limits.plugin_memory_bytes),
            instances: p
                .limits
                .instances
                .unwrap_or(cfg.limits.instances_per_plugin),
            fuel: p.limits.fuel,
        };
        let jwks = cfg
            .jwks
            .as_ref()
            .map(|j| crate::identity::oauth::Jwks::new(j, &metrics))
            .transpose()?;
        let ca = match cfg.mtls_ca_file() {
            Some(path) => {
                let bundle = x509::CaBundle::load(&path)?;
                tracing::info!(path = %path.display(), cas = ?bundle.subjects(), "mtls CA bundle loaded");
                Some(Arc::new(bundle))
            }
            None => None,
        };
        let engine = Arc::new(PluginEngine::new(
            specs
                .iter()
                .map(|p| limits_of(p).memory_bytes)
                .max()
                .unwrap_or(cfg.limits.plugin_memory_bytes),
            specs.iter().any(|p| p.limits.fuel.is_some()),
            crate::runtime::precompiled::default_dir(),
        )?);
        let outbound_ca = match &cfg.outbound_http.ca_file {
            Some(path) => {
                let path = cfg.resolve(path);
                Some(std::fs::read(&path).map_err(|e| {
                    LoadError::Outbound(crate::runtime::capabilities::http::OutboundError::Ca {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })
                })?)
            }
            None => None,
        };
        let mut plugins = Vec::with_capacity(specs.len());
        let mut notes: Vec<String> = accounts.iter().flat_map(|a| a.notes.clone()).collect();
        for note in &notes {
            tracing::warn!("{note}");
        }
        for p in specs {
            let path = cfg.plugin_path(p);
            // `host` tells the plugin which verification capabilities have key material
            // behind them, so that it calls them when they can answer (mtls: the CA).
            let permissions = p
                .permissions
                .as_deref()
                .and_then(|section| cfg.permissions.section(section));
            let secrets = cfg
                .read_secrets(p)
                .map_err(|(at, message)| LoadError::Secret { at, message })?;
            let init = serde_json::json!({
                "permissions": permissions,
                "settings": p.settings,
                "secrets": secrets,
                "host": { "ca_bundle": ca.is_some(), "jwks": jwks.is_some() },
            })
            .to_string();
            let plugin = engine.load(
                &p.name,
                &path,
                init,
                Capabilities::new(p.name.clone())
                    .with_jwks(jwks.clone())
                    .with_ca(ca.clone())
                    .with_outbound(outbound(cfg, p, outbound_ca.as_deref(), &metrics)?)
                    .with_cache(plugin_cache(cfg, p)),
                limits_of(p),
            )?;
            tracing::info!(
                plugin = %p.name,
                path = %path.display(),
                contract = plugin.version.as_str(),
                built_with = plugin.built_with.as_deref().unwrap_or("-"),
                credentials = ?plugin.credentials.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                reads = %plugin.reads,
                "plugin loaded"
            );
            if !plugin.refused_imports.is_empty() {
                let note = format!(
                    "plugin {} imports what the sandbox refuses (every use fails): {}",
                    p.name,
                    plugin.refused_imports.join(", ")
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
            plugins.push(Link {
                metrics: metrics.plugin(&p.name),
                runner: Runner::Wasm(plugin),
            });
        }
        let routes = routes(cfg, &plugins, &metrics)?;
        let revocations = Revocations::new();
        if let Some(file) = cfg.revocation.as_ref().and_then(|r| r.file.as_ref()) {
            revocations.set_file(Revoked::load(&cfg.resolve(file))?);
        }
        if ca.is_none()
            && routes
                .iter()
                .any(|r| r.matcher.kinds().contains(&CredentialKind::Certificate))
        {
            tracing::warn!(
                "client certificates are routed but no CA bundle is configured (mtls.ca_file \
                 / {}): they are trusted as nats-server verified them, with no second check here",
                crate::ops::config::MTLS_CA_ENV
            );
        }
        Ok(Self {
            signer: Signer::new(&issuer, xkey, accounts)?,
            leeway: cfg.limits.request_leeway,
            plugins,
            routes,
            jwks,
            ca,
            cache: DecisionCache::new(cfg.decision_cache.ttl, cfg.decision_cache.max_entries),
            revocations,
            revocable: cfg.revocation.is_some(),
            record: cfg
                .nats
                .iter()
                .any(|n| n.audit_subject.is_some() || cfg.closes_revoked(n)),
            metrics,
            notes,
            _engine: engine,
        })
    }

    /// What loading found worth an operator's look without refusing the config (a
    /// plugin importing what the sandbox refuses): `check` prints these.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Serve the revocations of `previous` (a reload keeps the list that the watchers
    /// maintain, and what the KV bucket said).
    pub fn adopt_revocations(&mut self, previous: &Authorizer) {
        self.revocations = previous.revocations.clone();
    }

    /// The revocations in force, to feed (file and KV watchers) or watch (the kicker).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Forget every cached grant: after a revocation, no grant of the revoked
    /// identity stays in memory (none would be served: revocation is checked first).
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// The xkey requests are sealed to, if any (`nats-callout verify` opens them).
    pub fn xkey(&self) -> Option<&nkeys::XKey> {
        self.signer.xkey.as_ref()
    }

    pub fn issuer_public_key(&self) -> &str {
        &self.signer.issuer_public
    }

    /// The key nats-server's requests name as `sub` (see [`Signer::request_subject`]).
    pub fn request_subject(&self) -> &str {
        self.signer.request_subject()
    }

    /// Operator mode's accounts; `None` in config mode.
    pub fn accounts(&self) -> Option<&Accounts> {
        self.signer.accounts.as_ref()
    }

    /// Replace the plugin called `name` with another runner, e.g. a native build of the
    /// same plugin crate, to measure what WebAssembly costs (feature `bench`).
    /// Configuration decides the plugins otherwise.
    #[cfg(feature = "bench")]
    pub fn replace_plugin(&mut self, name: &str, runner: Runner) -> bool {
        match self.plugins.iter_mut().find(|l| l.runner.name() == name) {
            Some(link) => {
                link.runner = runner;
                true
            }
            None => false,
        }
    }

    /// The plugins' capabilities as configured (JWKS, CA), for building native runners
    /// (feature `bench`).
    #[cfg(feature = "bench")]
    pub fn capabilities(&self, name: &str) -> Capabilities {
        Capabilities::new(name)
            .with_jwks(self.jwks.clone())
            .with_ca(self.ca.clone())
    }

    /// The routes, in the order they are tried.
    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| &*r.name).collect()
    }

    /// Whether some route takes credentials of `kind`.
    pub fn serves(&self, kind: CredentialKind) -> bool {
        self.routes
            .iter()
            .any(|r| r.matcher.kinds().contains(&kind))
    }

    /// The JWKS cache, when a `jwks` section is configured.
    pub fn jwks(&self) -> Option<&Arc<crate::identity::oauth::Jwks>> {
        self.jwks.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handle one `$SYS.REQ.USER.AUTH` message, and count it.
    pub async fn handle(&self, payload: &[u8], server_xkey: Option<&str>) -> Handled {
        let _in_flight = self.metrics.in_flight();
        let started = std::time::Instant::now();
        let handled = self.handle_uncounted(payload, server_xkey).await;
        let m = &self.metrics;
        m.requests.inc();
        m.duration.observe(started.elapsed().as_secs_f64());
        let admitted = matches!(handled.verdict, Verdict::Allowed { .. });
        if !admitted {
            m.errors.inc();
        }
        let route = handled
            .route
            .as_ref()
            .and_then(|name| self.routes.iter().find(|r| Arc::ptr_eq(&r.name, name)));
        for c in [
            handled.mode.map(|mode| m.mode(mode)),
            route.map(|r| &r.metrics),
        ]
        .into_iter()
        .flatten()
        {
            c.attempts.inc();
            if !admitted {
                c.failures.inc();
            }
        }
        handled
    }

    async fn handle_uncounted(&self, payload: &[u8], server_xkey: Option<&str>) -> Handled {
        let verifier = Verifier {
            issuer: self.signer.request_subject(),
            xkey: self.signer.xkey.as_ref(),
            leeway: self.leeway,
        };
        let verified = match verifier.verify(payload, server_xkey) {
            Ok(v) => v,
            Err(rejected) => {
                let reason = rejected.error.to_string();
                let refused = Refused::Invalid(reason);
                return self.finish(None, None, rejected.target, Err(refused), 0, None);
            }
        };
        let mut req = verified.request;
        let target = verified.target;
        let client_id = req.client_info.id;
        let kind = match credential::kind(&req) {
            Ok(kind) => kind,
            Err(e) => {
                return self.finish(
                    None,
                    None,
                    Some(target),
                    Err(Refused::Denied(e.to_string())),
                    client_id,
                    None,
                );
            }
        };
        let mode = Mode::of(kind);
        let revoked = self
            .revocable
            .then(|| self.revocations.current())
            .filter(|r| !r.is_empty());
        let identity = (self.record || revoked.is_some()).then(|| Identity::of(&req, kind));
        // Found now, so that the identity can move into the record.
        let revoked_by = revoked.zip(identity.as_ref()).and_then(|(r, i)| {
            r.find(i)
                .map(|(kind, value)| format!("{kind} {value:?} is revoked"))
        });
        let mut about = self.record.then(|| {
            Box::new(About {
                identity: identity.unwrap_or_default(),
                server_id: req.server_id.id.clone(),
                server_name: req.server_id.name.clone(),
                client_host: req.client_info.host.clone(),
                client_type: req.client_info.kind.clone(),
                ..Default::default()
            })
        });
        let connection = Connection {
            kind: ConnectionType::from_nats(&req.client_info.kind, &req.client_info.client_type),
            addr: req.client_info.host.parse().ok(),
        };
        let facts = Facts {
            credential: kind,
            username: Some(req.connect_opts.user.as_str()).filter(|u| !u.is_empty()),
            connection: connection.kind,
            server: &req.server_id.name,
            cluster: &req.server_id.cluster,
        };
        let Some(route) = self.routes.iter().find(|r| r.matcher.matches(&facts)) else {
            let reason = unrouted(kind);
            return self.finish(
                None,
                mode,
                Some(target),
                Err(Refused::Denied(reason)),
                client_id,
                about,
            );
        };
        // Before the cache and the plugins: a revoked identity is refused whatever
        // either would say.
        let decision = if let Some(why) = revoked_by {
            self.metrics.revoked.inc();
            Err(format!("{}: {why}", route.name))
        } else {
            match self.prepare(route, kind, &mut req) {
                Ok(Prepared::Cached(grant)) => {
                    if let Some(a) = about.as_mut() {
                        a.cached = true;
                    }
                    Ok(grant)
                }
                Ok(Prepared::Run { request, key }) => {
                    let (decision, plugin) = self.run_chain(route, &request, key).await;
                    if let Some(a) = about.as_mut() {
                        a.plugin = plugin.map(str::to_owned);
                    }
                    decision
                }
                Err(reason) => Err(reason),
            }
        };
        let now = unix_now();
        let outcome = decision.map_err(Refused::Denied).and_then(|mut grant| {
            crate::pipeline::decision::check(&mut grant, now, &connection)
                .map_err(|e| Refused::Denied(format!("{}: {e}", route.name)))?;
            let jwt = self
                .signer
                .user_jwt(&grant, &target.user_nkey, now)
                .map_err(|e| match e {
                    IssueError::Placement(e) => Refused::Denied(format!("{}: {e}", route.name)),
                    IssueError::Sign(_) => Refused::Invalid(e.to_string()),
                })?;
            Ok((grant, jwt))
        });
        self.finish(
            Some(route.name.clone()),
            mode,
            Some(target),
            outcome,
            client_id,
            about,
        )
    }

    /// Everything a decision needs before the plugins run: the decision cache lookup,
    /// the host's own check of the credential, and the plugins' request, moved out of
    /// `req`. Not async on purpose: the decoded request (0.8 KB) must not be held across
    /// the plugin call, where each level of the async call chain would store its own
    /// copy in the future that every request's task moves onto the heap.
    fn prepare(
        &self,
        route: &Route,
        kind: CredentialKind,
        req: &mut AuthorizationRequest,
    ) -> Result<Prepared, String> {
        let name = &route.name;
        // Enforced here, for every plugin of the route, a partner's too: the credential
        // is genuine before any plugin decides who it belongs to. A certificate: a
        // configured CA bundle issued the chain. An nkey: the client signed the nonce
        // nats-server sent it with the key it names.
        if kind == CredentialKind::Nkey {
            nkey_proof(req).map_err(|e| format!("{name}: {e}"))?;
        }
        // A NATS user JWT: signed by the callout account, not revoked, and the client
        // signed the nonce with its key.
        if kind == CredentialKind::UserJwt {
            self.user_jwt_proof(req)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let legacy = route.legacy.then(|| Legacy::copy(&req.connect_opts));
        let credential = credential::take(&mut req.connect_opts, kind);
        let mut key = None;
        if let Some(cache) = &self.cache
            && let Some(k) = cache.key(name, &credential, req)
        {
            if let Some(grant) = cache.get(&k, unix_now()) {
                self.metrics.cache_hits.inc();
                return Ok(Prepared::Cached(grant));
            }
            self.metrics.cache_misses.inc();
            key = Some(k);
        }
        let chain_pems: &[String] = req
            .client_tls
            .as_ref()
            .and_then(|t| t.verified_chains.first())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if kind == CredentialKind::Certificate
            && let Some(ca) = &self.ca
        {
            ca.verify(chain_pems, unix_now())
                .map_err(|e| format!("{name}: client certificate rejected: {e}"))?;
        }
        let parsed = x509::parse_chain(chain_pems).map_err(|e| format!("{name}: {e}"))?;
        let request = crate::runtime::plain_request(std::mem::take(req), name, credential, parsed);
        Ok(Prepared::Run {
            request: Box::new(PluginRequest { request, legacy }),
            key,
        })
    }

    fn user_jwt_proof(&self, req: &AuthorizationRequest) -> Result<(), String> {
        let Some(accounts) = &self.signer.accounts else {
            return Err(
                "a NATS user JWT is verified against the callout account's keys, \
                        and this callout runs in config mode (no operator section)"
                    .into(),
            );
        };
        let presented = user_jwt::Presented {
            jwt: &req.connect_opts.jwt,
            nonce: &req.client_info.nonce,
            sig: &req.connect_opts.sig,
        };
        user_jwt::verify(&presented, &accounts.callout, unix_now())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Run the route's plugin chain, asking only the plugins that take the credential:
    /// the first allow or deny wins; all abstaining denies. A grant is cached under `key`.
    /// Also says which plugin decided, if one did.
    async fn run_chain(
        &self,
        route: &Route,
        request: &PluginRequest,
        key: Option<Key>,
    ) -> (Result<Grant, String>, Option<&str>) {
        let name = &route.name;
        let kind = request.request.credential.kind();
        for link in route.chain.iter().map(|&i| &self.plugins[i]) {
            if !link.runner.credentials().contains(&kind) {
                continue;
            }
            let started = std::time::Instant::now();
            let result = link.runner.authenticate(request).await;
            count_call(&link.metrics, &result, started.elapsed());
            let decided = match result {
                Ok(Decision::Allow(grant)) => {
                    if let (Some(cache), Some(key)) = (&self.cache, key) {
                        cache.put(key, &grant, unix_now());
                    }
                    Ok(grant)
                }
                // Bounded: a plugin's text (its reason, or the error its init returned)
                // goes into the response and the log.
                Ok(Decision::Deny(reason)) => Err(format!(
                    "{name}: {}",
                    crate::runtime::truncate(&reason, 512)
                )),
                Ok(Decision::Abstain) => continue,
                Err(e) => Err(format!(
                    "{name}: {}",
                    crate::runtime::truncate(&e.to_string(), 512)
                )),
            };
            return (decided, Some(link.runner.name()));
        }
        (
            Err(format!("{name}: no plugin accepted the credential")),
            None,
        )
    }

    fn finish(
        &self,
        route: Option<Arc<str>>,
        mode: Option<Mode>,
        target: Option<ReplyTarget>,
        outcome: Result<(Grant, String), Refused>,
        client_id: u64,
        mut about: Option<Box<About>>,
    ) -> Handled {
        let (verdict, answer) = match outcome {
            Ok((grant, jwt)) => {
                let account = match about.as_mut() {
                    Some(a) => a.grant.insert(grant).account.clone(),
                    None => grant.account,
                };
                (Verdict::Allowed { account }, Ok(jwt))
            }
            Err(Refused::Denied(reason)) => (Verdict::Denied(reason.clone()), Err(reason)),
            Err(Refused::Invalid(reason)) => (Verdict::Invalid(reason.clone()), Err(reason)),
        };
        let (reply, user_nkey) = match target {
            None => (Vec::new(), String::new()),
            Some(t) => match self.signer.response(
                &t,
                answer.as_deref().map_err(String::as_str),
                unix_now(),
            ) {
                Ok(bytes) => (bytes, t.user_nkey),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the authorization response");
                    (Vec::new(), t.user_nkey)
                }
            },
        };
        Handled {
            route,
            mode,
            verdict,
            reply,
            client_id,
            user_nkey,
            about,
        }
    }
}

/// Why a request admitted no one: its client was refused, or the request itself was bad.
enum Refused {
    Denied(String),
    Invalid(String),
}

/// The reason for a credential no route takes, with what to configure for it.
fn unrouted(kind: CredentialKind) -> String {
    let hint = match kind {
        CredentialKind::UserPassword => {
            " (add permissions.password for the built-in password plugin, a route, or use \
             username \"oauthtoken\" with an access token as password)"
        }
        CredentialKind::UserJwt => {
            " (add permissions.jwt for the built-in jwt plugin: operator mode, users of the \
             callout account)"
        }
        _ => "",
    };
    match Mode::of(kind) {
        Some(mode) if hint.is_empty() => {
            format!("{mode} authentication is not enabled: no route takes a {kind} credential")
        }
        _ => format!("unsupported credential: no route takes a {kind} credential{hint}"),
    }
}

/// The routes of the config, each with its loaded chain, checked against what the
/// plugins said they take.
fn routes(cfg: &Config, plugins: &[Link], metrics: &Metrics) -> Result<Vec<Route>, LoadError> {
    let mut routes: Vec<Route> = Vec::new();
    for spec in cfg.route_specs() {
        let err = |message: String| LoadError::Route {
            origin: spec.origin.clone(),
            name: spec.name.clone(),
            message,
        };
        let chain: Vec<&Link> = spec.plugins.iter().map(|&i| &plugins[i]).collect();
        let mut taken: Vec<CredentialKind> = chain
            .iter()
            .flat_map(|l| l.runner.credentials().iter().copied())
            .collect();
        taken.sort();
        taken.dedup();
        let matcher = Matcher::new(&spec.matches, &taken);
        for link in &chain {
            let kinds = link.runner.credentials();
            if !matcher.kinds().iter().any(|k| kinds.contains(k)) {
                return Err(err(format!(
                    "plugin {:?} takes {}, none of the route's credentials ({})",
                    link.runner.name(),
                    names(kinds),
                    names(matcher.kinds())
                )));
            }
        }
        if let Some(k) = matcher.kinds().iter().find(|k| !taken.contains(k)) {
            return Err(err(format!(
                "no plugin of the route takes {k} credentials, so every such client would \
                 be refused: remove it from match.credentials or add a plugin that takes it"
            )));
        }
        for (earlier, earlier_spec) in routes.iter().zip(cfg.route_specs()) {
            if shadows(
                &earlier_spec.matches,
                &spec.matches,
                (earlier.matcher.kinds(), matcher.kinds()),
            ) {
                return Err(err(format!(
                    "never used: route {:?} before it takes every request it matches",
                    &*earlier.name
                )));
            }
        }
        routes.push(Route {
            name: spec.name.as_str().into(),
            legacy: chain.iter().any(|l| l.runner.needs_legacy()),
            chain: spec.plugins.clone(),
            metrics: metrics.route(&spec.name),
            matcher,
        });
    }
    Ok(routes)
}

/// The plugin's cache, unless its size is 0.
fn plugin_cache(
    cfg: &Config,
    plugin: &crate::ops::config::PluginSpec,
) -> Option<Arc<crate::runtime::capabilities::cache::PluginCache>> {
    let bytes = plugin
        .limits
        .cache_bytes
        .unwrap_or(cfg.limits.plugin_cache_bytes);
    let ttl = plugin
        .limits
        .cache_ttl
        .unwrap_or(cfg.limits.plugin_cache_ttl);
    (bytes > 0).then(|| {
        Arc::new(crate::runtime::capabilities::cache::PluginCache::new(
            bytes, ttl,
        ))
    })
}

/// The plugin's outbound HTTP, when its entry lists hosts.
fn outbound(
    cfg: &Config,
    plugin: &crate::ops::config::PluginSpec,
    ca_pem: Option<&[u8]>,
    metrics: &Metrics,
) -> Result<Option<Arc<crate::runtime::capabilities::http::Outbound>>, LoadError> {
    if plugin.allowed_outbound_hosts.is_empty() {
        return Ok(None);
    }
    let outbound = crate::runtime::capabilities::http::Outbound::new(
        &plugin.name,
        plugin.allowed_outbound_hosts.clone(),
        &cfg.outbound_http,
        ca_pem,
        metrics.http.clone(),
    )?;
    Ok(Some(Arc::new(outbound)))
}

fn names(kinds: &[CredentialKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The client's proof of its NKey: `sig` over the nonce nats-server sent it.
fn nkey_proof(req: &AuthorizationRequest) -> Result<(), String> {
    let (connect, nonce) = (&req.connect_opts, &req.client_info.nonce);
    if connect.sig.is_empty() {
        return Err("nkey signature (sig) missing from CONNECT".into());
    }
    if nonce.is_empty() {
        return Err(
            "server nonce missing from the request; cannot check the nkey signature \
             (nats-server sends nonces only when it has an nkey user of its own: make the \
             callout's NATS user an nkey user)"
                .into(),
        );
    }
    crate::runtime::capabilities::verify_nkey_signature(
        &connect.nkey,
        nonce.as_bytes(),
        &connect.sig,
    )
    .map_err(|why| format!("invalid nkey signature: {why}"))
}

fn count_call(m: &PluginMetrics, result: &Result<Decision, CallError>, took: Duration) {
    m.calls.inc();
    m.duration.observe(took.as_secs_f64());
    match result {
        Ok(Decision::Deny(_)) => m.denies.inc(),
        Err(CallError::Timeout(..) | CallError::Busy(_)) => m.timeouts.inc(),
        Err(_) => m.traps.inc(),
        Ok(_) => {}
    }
}
