//! The decision pipeline for one request: verify, route, ask the plugin chain, check
//! the grant, sign. Independent of NATS I/O so it can be benchmarked and tested alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nkeys::KeyPairType;

use crate::identity::x509;
use crate::nats::claims::AuthorizationRequest;
use crate::nats::keys::{KeyError, SeedSource};
use crate::ops::config::Config;
use crate::ops::metrics::{Metrics, PluginMetrics};
use crate::pipeline::cache::{DecisionCache, Key};
use crate::pipeline::decision::{Decision, Grant};
use crate::pipeline::request::{ReplyTarget, Verifier, unix_now};
use crate::pipeline::respond::Signer;
use crate::pipeline::routing::{self, Mode};
use crate::runtime::CallError;
use crate::runtime::capabilities::Capabilities;
use crate::runtime::{CallLimits, PluginEngine, PluginError, Runner};

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
}

/// One plugin of a mode's chain, with its metric series.
struct Link {
    runner: Runner,
    metrics: PluginMetrics,
}

/// A routed request, ready to be decided.
enum Prepared<'a> {
    /// Granted before, still valid: no plugin runs.
    Cached(Grant),
    /// For the mode's plugin chain, with the key to cache their grant under (cache on,
    /// credential cacheable). Boxed: the request future holds it across the plugin call.
    Run {
        chain: &'a [Link],
        request: Box<nats_callout_sdk::AuthRequest>,
        key: Option<Key>,
    },
}

/// The current authorizer, swapped atomically by a reload.
pub type Shared = Arc<arc_swap::ArcSwap<Authorizer>>;

pub struct Authorizer {
    signer: Signer,
    leeway: Duration,
    chains: HashMap<Mode, Vec<Link>>,
    jwks: Option<Arc<crate::identity::oauth::Jwks>>,
    /// The operator's client-certificate CAs; when set, every mtls request's chain must
    /// verify against it before any plugin sees the request.
    ca: Option<Arc<x509::CaBundle>>,
    cache: Option<DecisionCache>,
    metrics: Metrics,
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

        let plugins = cfg.plugin_list();
        let limits_of = |p: &crate::ops::config::PluginConfig| CallLimits {
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
        if ca.is_none() && cfg.plugin_list().iter().any(|p| p.mode == Mode::Mtls) {
            tracing::warn!(
                "mtls mode without a CA bundle (mtls.ca_file / {}): client certificates are \
                 trusted as nats-server verified them, with no second check here",
                crate::ops::config::MTLS_CA_ENV
            );
        }
        let engine = Arc::new(PluginEngine::new(
            plugins
                .iter()
                .map(|p| limits_of(p).memory_bytes)
                .max()
                .unwrap_or(cfg.limits.plugin_memory_bytes),
            plugins.iter().any(|p| p.limits.fuel.is_some()),
            crate::runtime::precompiled::default_dir(),
        )?);
        let dir = cfg.plugin_dir();
        let mut chains: HashMap<Mode, Vec<Link>> = HashMap::new();
        for (i, p) in plugins.iter().enumerate() {
            let path = if p.path.is_absolute() {
                p.path.clone()
            } else {
                dir.join(&p.path)
            };
            let stem = p.path.file_stem().unwrap_or_default().to_string_lossy();
            let mut name = format!("{}/{stem}", p.mode);
            if chains.values().flatten().any(|l| l.runner.name() == name) {
                name = format!("{name}#{i}");
            }
            // `host` tells the plugin which verification capabilities have key material
            // behind them, so that it calls them when they can answer (mtls: the CA).
            let init = serde_json::json!({
                "permissions": cfg.permissions.for_mode(p.mode),
                "settings": p.settings,
                "host": { "ca_bundle": ca.is_some(), "jwks": jwks.is_some() },
            })
            .to_string();
            let plugin = engine.load(
                &name,
                p.mode,
                &path,
                init,
                Capabilities::new(name.clone())
                    .with_jwks(jwks.clone())
                    .with_ca(ca.clone()),
                limits_of(p),
            )?;
            tracing::info!(plugin = %name, path = %path.display(), "plugin loaded");
            chains.entry(p.mode).or_default().push(Link {
                metrics: metrics.plugin(&name),
                runner: Runner::Wasm(plugin),
            });
        }
        Ok(Self {
            signer: Signer::new(&issuer, xkey)?,
            leeway: cfg.limits.request_leeway,
            chains,
            jwks,
            ca,
            cache: DecisionCache::new(cfg.decision_cache.ttl, cfg.decision_cache.max_entries),
            metrics,
            _engine: engine,
        })
    }

    pub fn issuer_public_key(&self) -> &str {
        &self.signer.issuer_public
    }

    /// Replace a mode's plugin chain, e.g. with native builds of the same plugins to
    /// measure what WebAssembly costs. Configuration decides chains otherwise.
    pub fn replace_chain(&mut self, mode: Mode, chain: Vec<Runner>) {
        let chain = chain
            .into_iter()
            .map(|runner| Link {
                metrics: self.metrics.plugin(runner.name()),
                runner,
            })
            .collect();
        self.chains.insert(mode, chain);
    }

    /// The plugins' capabilities as configured (JWKS, CA), for building native runners.
    pub fn capabilities(&self, name: &str) -> Capabilities {
        Capabilities::new(name)
            .with_jwks(self.jwks.clone())
            .with_ca(self.ca.clone())
    }

    pub fn enabled_modes(&self) -> Vec<Mode> {
        Mode::ALL
            .into_iter()
            .filter(|m| self.chains.contains_key(m))
            .collect()
    }

    /// Whether some plugin decides `mode`.
    pub fn serves(&self, mode: Mode) -> bool {
        self.chains.contains_key(&mode)
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
        if let Some(mode) = handled.mode {
            let c = m.mode(mode);
            c.attempts.inc();
            if !admitted {
                c.failures.inc();
            }
        }
        handled
    }

    async fn handle_uncounted(&self, payload: &[u8], server_xkey: Option<&str>) -> Handled {
        let verifier = Verifier {
            issuer: &self.signer.issuer_public,
            xkey: self.signer.xkey.as_ref(),
            leeway: self.leeway,
        };
        let verified = match verifier.verify(payload, server_xkey) {
            Ok(v) => v,
            Err(rejected) => {
                let reason = rejected.error.to_string();
                return self.finish(
                    None,
                    rejected.target,
                    Verdict::Invalid(reason.clone()),
                    Err(reason),
                    0,
                );
            }
        };
        let req = verified.request;
        let target = verified.target;
        let client_id = req.client_info.id;
        let mode = match routing::route(&req) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.to_string();
                return self.finish(
                    None,
                    Some(target),
                    Verdict::Denied(reason.clone()),
                    Err(reason),
                    client_id,
                );
            }
        };
        let decision = match self.prepare(mode, req) {
            Ok(Prepared::Cached(grant)) => Ok(grant),
            Ok(Prepared::Run {
                chain,
                request,
                key,
            }) => self.run_chain(mode, chain, &request, key).await,
            Err(reason) => Err(reason),
        };
        let now = unix_now();
        let (verdict, outcome) = match decision {
            Ok(mut grant) => match crate::pipeline::decision::check(&mut grant, now) {
                Ok(()) => match self.signer.user_jwt(&grant, &target.user_nkey, now) {
                    Ok(jwt) => (
                        Verdict::Allowed {
                            account: grant.account,
                        },
                        Ok(jwt),
                    ),
                    Err(e) => {
                        let r = format!("cannot sign user JWT: {e}");
                        (Verdict::Invalid(r.clone()), Err(r))
                    }
                },
                Err(e) => {
                    let r = format!("{mode}: {e}");
                    (Verdict::Denied(r.clone()), Err(r))
                }
            },
            Err(reason) => (Verdict::Denied(reason.clone()), Err(reason)),
        };
        self.finish(Some(mode), Some(target), verdict, outcome, client_id)
    }

    /// Everything a decision needs before the plugins run: the decision cache lookup,
    /// the CA check, and the plugins' request, moved out of `req`. Not async on
    /// purpose: the decoded request (0.8 KB) must not be held across the plugin call,
    /// where each level of the async call chain would store its own copy in the future
    /// that every request's task moves onto the heap (8.6 KB that way, 5.2 KB now).
    fn prepare(&self, mode: Mode, req: AuthorizationRequest) -> Result<Prepared<'_>, String> {
        let mut key = None;
        if let Some(cache) = &self.cache
            && let Some(k) = DecisionCache::key(mode, &req)
        {
            if let Some(grant) = cache.get(&k, unix_now()) {
                self.metrics.cache_hits.inc();
                return Ok(Prepared::Cached(grant));
            }
            self.metrics.cache_misses.inc();
            key = Some(k);
        }
        let Some(chain) = self.chains.get(&mode) else {
            return Err(format!("{mode} authentication is not enabled"));
        };
        let chain_pems: &[String] = req
            .client_tls
            .as_ref()
            .and_then(|t| t.verified_chains.first())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Enforced here, for every plugin of the mode, a partner's too: the credential is
        // genuine before any plugin decides who it belongs to. mtls: a configured CA
        // bundle issued the chain. nkey: the client signed the nonce nats-server sent it
        // with the key it names.
        if mode == Mode::Mtls
            && let Some(ca) = &self.ca
        {
            ca.verify(chain_pems, unix_now())
                .map_err(|e| format!("{mode}: client certificate rejected: {e}"))?;
        }
        if mode == Mode::Nkey {
            nkey_proof(&req).map_err(|e| format!("{mode}: {e}"))?;
        }
        let parsed = x509::parse_chain(chain_pems).map_err(|e| format!("{mode}: {e}"))?;
        Ok(Prepared::Run {
            chain,
            request: Box::new(crate::runtime::plain_request(req, mode, parsed)),
            key,
        })
    }

    /// Run the mode's plugin chain: the first allow or deny wins; all abstaining denies.
    /// A grant is cached under `key`.
    async fn run_chain(
        &self,
        mode: Mode,
        chain: &[Link],
        request: &nats_callout_sdk::AuthRequest,
        key: Option<Key>,
    ) -> Result<Grant, String> {
        for link in chain {
            let started = std::time::Instant::now();
            let result = link.runner.authenticate(request).await;
            count_call(&link.metrics, &result, started.elapsed());
            match result {
                Ok(Decision::Allow(grant)) => {
                    if let (Some(cache), Some(key)) = (&self.cache, key) {
                        cache.put(key, &grant, unix_now());
                    }
                    return Ok(grant);
                }
                // Bounded: a plugin's text (its reason, or the error its init returned)
                // goes into the response and the log.
                Ok(Decision::Deny(reason)) => {
                    return Err(format!(
                        "{mode}: {}",
                        crate::runtime::truncate(&reason, 512)
                    ));
                }
                Ok(Decision::Abstain) => continue,
                Err(e) => {
                    return Err(format!(
                        "{mode}: {}",
                        crate::runtime::truncate(&e.to_string(), 512)
                    ));
                }
            }
        }
        Err(format!("{mode}: no plugin accepted the credential"))
    }

    fn finish(
        &self,
        mode: Option<Mode>,
        target: Option<ReplyTarget>,
        verdict: Verdict,
        outcome: Result<String, String>,
        client_id: u64,
    ) -> Handled {
        let (reply, user_nkey) = match target {
            None => (Vec::new(), String::new()),
            Some(t) => match self.signer.response(
                &t,
                outcome.as_deref().map_err(String::as_str),
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
            mode,
            verdict,
            reply,
            client_id,
            user_nkey,
        }
    }
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
        Err(CallError::Timeout(_) | CallError::Busy(_)) => m.timeouts.inc(),
        Err(_) => m.traps.inc(),
        Ok(_) => {}
    }
}
