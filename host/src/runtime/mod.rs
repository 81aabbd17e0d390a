//! The WebAssembly plugin runtime: one engine, an `InstancePre` per plugin, a bounded
//! pool of warm instances, and per-call deadlines and memory caps.
//!
//! Calls run on wasmtime fibers (`call_async`) on the task that handles the request.
//! A warm call takes a few microseconds, less than a hop to a blocking thread pool
//! would; a plugin that runs long yields to the scheduler every epoch tick, so it
//! never holds a runtime thread, and is interrupted at its deadline.

pub mod capabilities;
pub mod contract;
#[cfg(feature = "bench")]
mod native;
pub mod precompiled;
pub mod sandbox;
mod stderr;

#[cfg(feature = "bench")]
pub use native::NativePlugin;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use nats_callout_sdk as sdk;

use crate::nats::claims::{AuthorizationRequest, ConnectOptions};
use crate::pipeline::decision::{Decision, earliest};
use crate::runtime::capabilities::Capabilities;

/// Epoch tick: how often a running plugin yields to the scheduler and has its deadline
/// checked, so the deadline's resolution. 5 ms keeps the ticker thread's cost
/// negligible, a 250 ms deadline exact to 2%, and a runaway plugin's hold on a runtime
/// thread short; a warm call (microseconds) rarely sees a tick at all.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Component instances the pooling allocator of one engine (one loaded config) reserves
/// slots for. Slots are virtual-memory reservations, cheap until used; a hot reload
/// builds its own engine beside the old one.
const POOL_SLOTS: u32 = 512;

/// Warm instances all plugins of one config may keep together (the config checks it):
/// one pool slot each.
pub const MAX_INSTANCES: usize = POOL_SLOTS as usize;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin {name}: cannot load {path}: {message}")]
    Load {
        name: String,
        path: String,
        message: String,
    },
    #[error("plugin {name}: rejected its configuration: {message}")]
    Init { name: String, message: String },
}

/// Why a call produced no decision. Each is a deny with this cause.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CallError {
    #[error("plugin {0} is busy: no instance free within the deadline")]
    Busy(String),
    /// With a hint when the time went into password hashing.
    #[error("plugin {0} exceeded its time limit{1}")]
    Timeout(String, String),
    #[error("plugin {0} exceeded its memory limit")]
    OutOfMemory(String),
    #[error("plugin {0} ran out of fuel")]
    OutOfFuel(String),
    #[error("plugin {0} trapped: {1}")]
    Trap(String, String),
    #[error("plugin {0} could not be instantiated: {1}")]
    Instantiate(String, String),
}

/// Per-store state: an empty WASI context (no files, no env, no network, output
/// discarded), the memory limiter, and the plugin's capabilities.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: capabilities::http::HttpHooks,
    limits: StoreLimits,
    caps: Arc<Capabilities>,
    deadline: Deadline,
    /// The earliest expiry of the tokens the current call had verified: its grant ends
    /// no later ([`Runner::authenticate`]).
    credential_expires: Option<i64>,
    /// Time the current call spent in `verify-password-hash`: when a call runs out of
    /// time there, the deny says so (a hash too costly for the plugin's deadline).
    hashing: Duration,
    /// Log lines the current call may still write.
    log_lines_left: u32,
    /// What the current call wrote to stderr, for the reason when it traps.
    stderr: stderr::StderrTail,
}

/// Log lines one call may write: plenty for a diagnosis, and a plugin logging in a loop
/// until its deadline cannot flood the service's log.
pub(crate) const LOG_LINES_PER_CALL: u32 = 32;

impl State {
    fn credit_host_time(&mut self, waited: Duration) {
        self.deadline.credit(waited);
    }

    fn note_credential_expiry(&mut self, expires_at: i64) {
        self.credential_expires = earliest(self.credential_expires, Some(expires_at));
    }
}

/// When the current call (or instantiation) is interrupted. Time spent in host calls
/// that may wait (`verify-jwt`: a JWKS refetch) moves it, so the deadline measures the
/// plugin's own time; but by no more than the longest such wait per call, so a plugin
/// calling the host in a loop still meets its deadline.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    credit_left: Duration,
}

impl Deadline {
    fn new(timeout: Duration, max_credit: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            credit_left: max_credit,
        }
    }

    fn credit(&mut self, waited: Duration) {
        let granted = waited.min(self.credit_left);
        self.credit_left -= granted;
        self.at += granted;
    }

    fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Limits applied to every call of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub instances: usize,
    /// Instructions (roughly) one call may execute; `None`: unmetered. A deterministic
    /// bound where the wall-clock deadline depends on machine load.
    pub fuel: Option<u64>,
}

/// One engine for all plugins, plus the ticker thread that drives epoch deadlines.
pub struct PluginEngine {
    engine: Engine,
    /// Whether the engine meters fuel (some plugin has a fuel limit).
    fuel: bool,
    linker: Linker<State>,
    stop: Arc<AtomicBool>,
    cache_dir: Option<std::path::PathBuf>,
}

impl PluginEngine {
    /// `max_memory_bytes`: the largest memory any plugin may have (pool slot size).
    /// `fuel`: meter instructions (costs a few percent; only when some plugin sets fuel).
    /// `cache_dir`: where precompiled components are kept (see [`precompiled`]).
    pub fn new(
        max_memory_bytes: usize,
        fuel: bool,
        cache_dir: Option<std::path::PathBuf>,
    ) -> Result<Self, PluginError> {
        let err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 4)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS * 2)
            // One fiber stack per call in progress, at most one per instance.
            .total_stacks(POOL_SLOTS)
            .max_memory_size(max_memory_bytes);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
        contract::add_to_linker(&mut linker).map_err(err)?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            fuel,
            linker,
            stop,
            cache_dir,
        })
    }

    /// Compile, link and initialise a plugin. One instance is created and its `init`
    /// called right away, so a bad component or configuration fails here, at load time.
    pub fn load(
        &self,
        name: &str,
        path: &Path,
        init_config: String,
        caps: Capabilities,
        limits: CallLimits,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let load_err = |message: String| PluginError::Load {
            name: name.to_owned(),
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let needs = sandbox::initial_memory(&bytes);
        if needs > limits.memory_bytes as u64 {
            return Err(load_err(format!(
                "needs {} MiB of memory per instance before its first call (its initial \
                 linear memory), more than its memory limit of {} MiB: raise the plugin's \
                 limits.memory_bytes (or limits.plugin_memory_bytes for all plugins) to at \
                 least {needs}, with room to grow",
                needs.div_ceil(1 << 20),
                limits.memory_bytes >> 20,
            )));
        }
        let (component, cached) =
            precompiled::load(&self.engine, &bytes, self.cache_dir.as_deref())
                .map_err(|e| load_err(format!("{e:#}")))?;
        tracing::debug!(plugin = name, precompiled = cached, "component ready");
        let review = sandbox::review(&self.engine, &component, caps.outbound.is_some());
        if !review.missing.is_empty() {
            return Err(load_err(format!(
                "imports what the plugin sandbox does not offer: {}; {}",
                review.missing.join(", "),
                sandbox::OFFERS
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("{e:#}")))?;
        let version = contract::detect(&self.engine, &component).map_err(load_err)?;
        let pre = contract::Pre::new(version, pre).map_err(|e| {
            load_err(format!(
                "not a nats-callout:plugin@{} component: {e:#}",
                version.as_str()
            ))
        })?;
        let mut plugin = LoadedPlugin {
            name: name.to_owned(),
            version,
            built_with: built_with(&bytes),
            refused_imports: review.refused,
            credentials: Vec::new(),
            reads: sdk::RequestParts::ALL,
            engine: self.engine.clone(),
            pre,
            init_config,
            host_wait: caps.max_host_wait(),
            caps: Arc::new(caps),
            idle: Mutex::new(Vec::with_capacity(limits.instances)),
            permits: tokio::sync::Semaphore::new(limits.instances),
            tank: self.fuel.then(|| limits.fuel.unwrap_or(u64::MAX)),
            limits,
        };
        // Loading runs off the runtime's threads (`check` has none; a reload builds the
        // new set on a blocking thread), so a local executor drives this first fiber.
        let (first, (credentials, reads)) = futures::executor::block_on(plugin.instantiate())
            .map_err(|e| match e {
                InstantiateError::Init(message) => PluginError::Init {
                    name: name.to_owned(),
                    message,
                },
                InstantiateError::Other(message) => load_err(message),
            })?;
        plugin.credentials = credentials;
        plugin.reads = reads;
        plugin.release(first);
        Ok(Arc::new(plugin))
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Instance {
    store: Store<State>,
    bindings: contract::Bindings,
}

/// What a component's `nats-callout-sdk` custom section says it was built with (the
/// SDK's export macro writes it), e.g. `{"sdk":"0.3.0","contract":"0.3.0"}`; `None` for
/// a component built otherwise (another language's toolchain).
/// A trap as a reason: what the plugin wrote to stderr during the call (a panic's message,
/// an exception's traceback) and the trap itself; without the former, wasmtime's account
/// of the trap with its wasm backtrace, bounded.
fn with_stderr(e: &wasmtime::Error, stderr: &stderr::StderrTail) -> String {
    match stderr.summary() {
        Some(said) => format!("{said} (stderr); {}", e.root_cause()),
        None => truncate(&format!("{e:#}"), 512).into_owned(),
    }
}

fn built_with(component: &[u8]) -> Option<String> {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .filter_map(Result::ok)
        .find_map(|payload| match payload {
            wasmparser::Payload::CustomSection(c) if c.name() == "nats-callout-sdk" => {
                std::str::from_utf8(c.data())
                    .ok()
                    .map(|s| truncate(s, 256).into_owned())
            }
            _ => None,
        })
}

/// What a plugin's `init` says: the credential kinds it decides, the parts of a request it
/// reads.
type PluginInfo = (Vec<sdk::CredentialKind>, sdk::RequestParts);

enum InstantiateError {
    Init(String),
    Other(String),
}

/// A loaded plugin and its pool of warm instances.
pub struct LoadedPlugin {
    pub name: String,
    /// The contract it was built against.
    pub version: contract::Version,
    /// Its `nats-callout-sdk` custom section, if any ([`built_with`]).
    pub built_with: Option<String>,
    /// The credential kinds it decides, as its first instance's `init` said.
    pub credentials: Vec<sdk::CredentialKind>,
    /// The parts of a request it reads, as its first instance's `init` said: the host
    /// lowers only these into a call.
    pub reads: sdk::RequestParts,
    /// Imports the sandbox links but refuses every use of ([`sandbox::Review`]).
    pub refused_imports: Vec<String>,
    engine: Engine,
    pre: contract::Pre,
    init_config: String,
    caps: Arc<Capabilities>,
    /// Initialised instances not in use.
    idle: Mutex<Vec<Instance>>,
    /// One permit per instance that may exist: bounds memory and CPU per plugin and
    /// gives back-pressure instead of an unbounded pile of instances.
    permits: tokio::sync::Semaphore,
    limits: CallLimits,
    /// Fuel per call, when the engine meters fuel: then every store needs some, and a
    /// plugin without a limit gets an unlimited tank.
    tank: Option<u64>,
    /// How far host calls may move a call's deadline ([`Capabilities::max_host_wait`]).
    host_wait: Duration,
}

impl LoadedPlugin {
    async fn instantiate(&self) -> Result<(Instance, PluginInfo), InstantiateError> {
        let stderr = stderr::StderrTail::default();
        let state = State {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: capabilities::http::HttpHooks::new(self.caps.outbound.clone()),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            caps: self.caps.clone(),
            deadline: Deadline::new(Duration::ZERO, Duration::ZERO),
            credential_expires: None,
            log_lines_left: LOG_LINES_PER_CALL,
            hashing: Duration::ZERO,
            stderr,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        self.refuel(&mut store);
        // Called at every tick while the plugin runs: past the deadline it is
        // interrupted, before it it yields so that other requests get the thread.
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().deadline.passed() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        self.arm(&mut store);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|e| InstantiateError::Other(format!("{e:#}")))?;
        self.arm(&mut store);
        match bindings.init(&mut store, &self.init_config).await {
            Ok(Ok(info)) => Ok((Instance { store, bindings }, info)),
            Ok(Err(message)) => Err(InstantiateError::Init(message)),
            Err(e) => Err(InstantiateError::Other(format!(
                "init trapped: {}",
                with_stderr(&e, &store.data().stderr)
            ))),
        }
    }

    /// Start the clock for one call: its deadline, and a deadline check at the next tick.
    fn arm(&self, store: &mut Store<State>) {
        let state = store.data_mut();
        state.deadline = Deadline::new(self.limits.timeout, self.host_wait);
        state.credential_expires = None;
        state.log_lines_left = LOG_LINES_PER_CALL;
        state.hashing = Duration::ZERO;
        state.stderr.clear();
        state.hooks.deadline = state.deadline.at;
        // Outbound HTTP is for deciding; `init` has none (see capabilities::http).
        state.hooks.open = false;
        store.set_epoch_deadline(1);
    }

    /// Fuel for one call, if the engine meters it (`set_fuel` fails only when it does
    /// not, and that is checked here instead of building an error per call).
    fn refuel(&self, store: &mut Store<State>) {
        if let Some(tank) = self.tank {
            let _ = store.set_fuel(tank);
        }
    }

    fn release(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(instance);
        }
    }

    /// Instantiate (and `init`) warm instances until `n` are idle, for measuring what
    /// one costs in memory (feature `bench`); the service grows its pool on demand.
    #[cfg(feature = "bench")]
    pub async fn prewarm(&self, n: usize) -> Result<(), CallError> {
        while self.idle.lock().map_or(n, |idle| idle.len()) < n {
            let (instance, _) = self.instantiate().await.map_err(|e| {
                let msg = match e {
                    InstantiateError::Init(m) | InstantiateError::Other(m) => m,
                };
                CallError::Instantiate(self.name.clone(), msg)
            })?;
            self.release(instance);
        }
        Ok(())
    }

    /// Decide one request, and the earliest expiry of the tokens it had the host
    /// verify. Waits for a free instance for at most the call deadline, then runs the
    /// call on this task.
    pub async fn authenticate(
        &self,
        request: &PluginRequest,
    ) -> Result<(Decision, Option<i64>), CallError> {
        let _permit = tokio::time::timeout(self.limits.timeout, self.permits.acquire())
            .await
            .map_err(|_| CallError::Busy(self.name.clone()))?
            .map_err(|_| CallError::Busy(self.name.clone()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut instance = match idle {
            Some(i) => i,
            None => self.instantiate().await.map(|(i, _)| i).map_err(|e| {
                let msg = match e {
                    InstantiateError::Init(m) | InstantiateError::Other(m) => m,
                };
                CallError::Instantiate(self.name.clone(), msg)
            })?,
        };
        self.arm(&mut instance.store);
        instance.store.data_mut().hooks.open = true;
        self.refuel(&mut instance.store);
        match instance
            .bindings
            .authenticate(&mut instance.store, request, self.reads)
            .await
        {
            Ok(decision) => {
                let expires = instance.store.data().credential_expires;
                self.release(instance);
                Ok((decision, expires))
            }
            // The instance is poisoned: drop it; the next call instantiates afresh.
            Err(e) => {
                let state = instance.store.data();
                Err(self.classify(&e, state.hashing, &state.stderr))
            }
        }
    }

    fn classify(
        &self,
        e: &wasmtime::Error,
        hashing: Duration,
        stderr: &stderr::StderrTail,
    ) -> CallError {
        let name = self.name.clone();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                let hint = if hashing.is_zero() {
                    String::new()
                } else {
                    format!(
                        " of {} ms, {} ms of it verifying password hashes: raise its \
                         limits.timeout, or hash with a lower cost",
                        self.limits.timeout.as_millis(),
                        hashing.as_millis()
                    )
                };
                CallError::Timeout(name, hint)
            }
            Some(Trap::OutOfFuel) => CallError::OutOfFuel(name),
            _ if format!("{e:#}").contains("forcing trap when growing memory") => {
                CallError::OutOfMemory(name)
            }
            _ => CallError::Trap(name, with_stderr(e, stderr)),
        }
    }
}

/// One plugin of the config: a WebAssembly component, or (for benchmarks, feature
/// `bench`) the same plugin crate compiled in.
#[derive(Clone)]
pub enum Runner {
    /// A WebAssembly component: the normal case.
    Wasm(Arc<LoadedPlugin>),
    /// The same plugin logic compiled in.
    #[cfg(feature = "bench")]
    Native(Arc<NativePlugin>),
}

impl Runner {
    pub fn name(&self) -> &str {
        match self {
            Runner::Wasm(p) => &p.name,
            #[cfg(feature = "bench")]
            Runner::Native(p) => &p.name,
        }
    }

    /// The credential kinds it decides.
    pub fn credentials(&self) -> &[sdk::CredentialKind] {
        match self {
            Runner::Wasm(p) => &p.credentials,
            #[cfg(feature = "bench")]
            Runner::Native(p) => &p.credentials,
        }
    }

    /// Whether it reads the raw CONNECT credentials of contract 0.1.0 ([`Legacy`]).
    pub fn needs_legacy(&self) -> bool {
        matches!(self, Runner::Wasm(p) if p.version == contract::Version::V0_1_0)
    }

    /// Decide one request. Whatever the plugin grants ends no later than the
    /// credential: the tokens it had the host verify, and the certificate chain. The
    /// built-in plugins set that expiry themselves; this holds it for any plugin.
    pub async fn authenticate(&self, input: &PluginRequest) -> Result<Decision, CallError> {
        let (mut decision, tokens_expire) = match self {
            Runner::Wasm(p) => p.authenticate(input).await?,
            #[cfg(feature = "bench")]
            Runner::Native(p) => p.authenticate(&input.request),
        };
        if let Decision::Allow(grant) = &mut decision {
            let chain = input.request.tls.iter().flat_map(|t| &t.verified_chain);
            let chain_expires = chain.map(|c| c.not_after).min();
            grant.expires_at = earliest(grant.expires_at, earliest(tokens_expire, chain_expires));
        }
        Ok(decision)
    }
}

/// What a plugin decides on: the request in the SDK's plain types (the current
/// contract's), and the raw CONNECT credentials for plugins of contract 0.1.0, which
/// read those instead of a credential (kept only for routes with such plugins).
#[derive(Debug)]
pub struct PluginRequest {
    pub request: sdk::AuthRequest,
    pub legacy: Option<Legacy>,
}

/// The CONNECT's credential fields as the client sent them, for contract 0.1.0.
/// Secrets: `Debug` shows none.
#[derive(Default)]
pub struct Legacy {
    pub jwt: String,
    pub nkey: String,
    pub sig: String,
    pub auth_token: String,
    pub user: String,
    pub pass: String,
}

impl Legacy {
    pub fn copy(c: &ConnectOptions) -> Self {
        Self {
            jwt: c.jwt.clone(),
            nkey: c.nkey.clone(),
            sig: c.sig.clone(),
            auth_token: c.auth_token.clone(),
            user: c.user.clone(),
            pass: c.pass.clone(),
        }
    }
}

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Legacy(<redacted>)")
    }
}

/// The plain request plugins decide on, moved out of the decoded request (no field is
/// copied). `chain` is the host-parsed verified chain, leaf first.
pub fn plain_request(
    req: AuthorizationRequest,
    route: &str,
    credential: sdk::Credential,
    chain: Vec<sdk::Certificate>,
) -> sdk::AuthRequest {
    fn opt(s: String) -> Option<String> {
        (!s.is_empty()).then_some(s)
    }
    let s = req.server_id;
    let c = req.client_info;
    let o = req.connect_opts;
    let mut r = sdk::AuthRequest::default();
    r.route = route.to_owned();
    r.credential = credential;
    r.server.name = s.name;
    r.server.host = s.host;
    r.server.id = s.id;
    r.server.version = s.version;
    r.server.cluster = opt(s.cluster);
    r.server.tags = s.tags;
    r.user_nkey = req.user_nkey;
    r.client.host = opt(c.host);
    r.client.id = c.id;
    r.client.user = opt(c.user);
    r.client.name = opt(c.name);
    r.client.tags = c.tags;
    r.client.name_tag = opt(c.name_tag);
    r.client.kind = opt(c.kind);
    r.client.client_type = opt(c.client_type);
    r.client.mqtt_id = opt(c.mqtt_id);
    r.client.nonce = opt(c.nonce);
    r.connect.name = opt(o.name);
    r.connect.lang = opt(o.lang);
    r.connect.version = opt(o.version);
    r.connect.protocol = o.protocol;
    r.tls = req.client_tls.map(|t| {
        let mut tls = sdk::ClientTls::default();
        tls.version = opt(t.version);
        tls.cipher = opt(t.cipher);
        tls.verified_chain = chain;
        tls
    });
    r
}

/// Cut untrusted text to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host time moves a call's deadline by at most the allowed wait, summed over all
    /// the host calls the plugin makes: a loop of them cannot stretch it further.
    #[test]
    fn host_time_credit_is_bounded_per_call() {
        let mut d = Deadline::new(Duration::from_secs(10), Duration::from_secs(1));
        let start = d.at;
        d.credit(Duration::from_millis(400));
        assert_eq!(d.at - start, Duration::from_millis(400));
        for _ in 0..100 {
            d.credit(Duration::from_millis(400));
        }
        assert_eq!(d.at - start, Duration::from_secs(1));
        let mut none = Deadline::new(Duration::ZERO, Duration::ZERO);
        none.credit(Duration::from_secs(5));
        assert!(none.passed(), "no waiting capability, no credit");
    }
}
