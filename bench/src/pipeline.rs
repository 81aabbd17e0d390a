//! Part 1: the in-process decision pipeline, `Authorizer::handle` (verify the request,
//! route, run the plugin, check the grant, sign the user and response JWTs), with the
//! built-in plugins as WebAssembly components and the same plugin crates compiled
//! natively. Also the plugin call alone and the decision cache in process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nats_callout::nats::claims::RequestClaims;
use nats_callout::ops::config::Config;
use nats_callout::ops::metrics::Metrics;
use nats_callout::pipeline::authorizer::{Authorizer, Verdict};
use nats_callout::pipeline::credential;
use nats_callout::pipeline::request::unix_now;
use nats_callout::pipeline::routing::Mode;
use nats_callout::runtime::{self, CallLimits, NativePlugin, PluginEngine, PluginRequest, Runner};
use nats_callout_sdk as sdk;
use nats_callout_tests::Keys;
use nats_callout_tests::inject;

use crate::fixture::{Alg, Fixture, plugin_path};
use crate::stats::median;

/// Iteration counts.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Timed batches per case, each timing both sides, their calls interleaved one by
    /// one (see [`interleaved`]). The reported figures are medians, which shrug off
    /// batches disturbed by other processes on a shared machine; many short batches
    /// beat a few long ones there.
    pub batches: usize,
    /// Decisions per batch (distinct requests, reused across batches).
    pub per_batch: usize,
    /// Bytes of unrelated memory read before every timed call (`--evict-mib`), so that
    /// the call starts with cold caches, as a decision in the running service does:
    /// nats-server, the kernel and the client run between two connects. Zero: warm
    /// caches, a tight loop's best case.
    pub evict_bytes: usize,
}

/// One case of the pipeline: a mode and its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Noauth,
    Nkey,
    Oauth2(Alg),
    /// Username and password, bcrypt at cost 10.
    Password,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::Noauth,
        Case::Nkey,
        Case::Oauth2(Alg::Rs256),
        Case::Oauth2(Alg::Es256),
        Case::Password,
    ];

    pub fn label(self) -> String {
        match self {
            Case::Noauth => "noauth".into(),
            Case::Nkey => "nkey".into(),
            Case::Oauth2(alg) => format!("oauth2 {}", alg.as_str()),
            Case::Password => "password (bcrypt cost 10)".into(),
        }
    }

    fn mode(self) -> Mode {
        match self {
            Case::Noauth => Mode::Noauth,
            Case::Nkey => Mode::Nkey,
            Case::Oauth2(_) => Mode::Oauth2,
            Case::Password => Mode::Password,
        }
    }

    /// Iterations for this case: a bcrypt check is 70 ms, where the others take
    /// microseconds, so its batches are short and few (its figures are dominated by the
    /// hash either way).
    fn options(self, opts: Options) -> Options {
        match self {
            Case::Password => Options {
                batches: opts.batches.min(6),
                per_batch: opts.per_batch.min(4),
                ..opts
            },
            _ => opts,
        }
    }
}

/// Figures of one case on two sides (WASM and native, or contract 0.3.0 and an older one), in
/// nanoseconds per decision.
#[derive(Debug, Clone)]
pub struct Pair {
    pub case: String,
    /// Median of the measured side's batches (WASM; contract 0.3.0).
    pub wasm_ns: f64,
    /// Median of its baseline's batches (native; the older contract).
    pub native_ns: f64,
    /// Median over the batches of the ratio, and of the difference, of the two sides'
    /// means in that batch (whose calls interleaved one by one).
    pub paired_ratio: f64,
    pub paired_added_ns: f64,
    /// Whether the speed targets apply: not to a password check, whose tens of
    /// milliseconds of hashing drown microseconds either way.
    pub targeted: bool,
}

impl Pair {
    pub(crate) fn new(case: String, wasm: &[f64], native: &[f64]) -> Self {
        let ratios: Vec<f64> = wasm.iter().zip(native).map(|(w, n)| w / n).collect();
        let added: Vec<f64> = wasm.iter().zip(native).map(|(w, n)| w - n).collect();
        Self {
            case,
            wasm_ns: median(wasm),
            native_ns: median(native),
            paired_ratio: median(&ratios),
            paired_added_ns: median(&added),
            targeted: true,
        }
    }

    fn untargeted(self) -> Self {
        Self {
            targeted: false,
            ..self
        }
    }

    pub fn ratio(&self) -> f64 {
        self.paired_ratio
    }

    pub fn added_us(&self) -> f64 {
        self.paired_added_ns / 1000.0
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    /// `Authorizer::handle`, end to end in process.
    pub pipeline: Vec<Pair>,
    /// The plugin chain alone (`Runner::authenticate` on a decoded request).
    pub plugin_call: Vec<Pair>,
    /// `Authorizer::handle` with the same plugins built against contract 0.3.0 (the
    /// `wasm_ns` side) and against 0.2.0 and 0.1.0 (`native_ns`), the case named
    /// `<plugin>, 0.3.0 vs <version>`.
    pub contracts: Vec<Pair>,
}

/// Forged requests of one case, signed by a fake server key, valid for an hour (the
/// real ones expire after the auth timeout; the host only checks they are not late).
fn requests(
    fx: &Fixture,
    server: &nkeys::KeyPair,
    issuer: &str,
    case: Case,
    token: Option<&str>,
    n: usize,
) -> Vec<String> {
    (0..n)
        .map(|i| {
            inject::request(server, issuer, |c| {
                c["exp"] = (unix_now() + 3600).into();
                let nats = &mut c["nats"];
                match case {
                    Case::Noauth => {}
                    Case::Nkey => {
                        // nats-server's nonce is 11 random bytes, base64url: same length here.
                        let nonce = format!("bench{i:010}");
                        let sig = fx
                            .device
                            .sign(nonce.as_bytes())
                            .map(|s| {
                                use base64::Engine as _;
                                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
                            })
                            .unwrap_or_default();
                        nats["client_info"]["nonce"] = nonce.into();
                        nats["connect_opts"]["nkey"] = fx.device.public_key().into();
                        nats["connect_opts"]["sig"] = sig.into();
                    }
                    Case::Oauth2(_) => {
                        nats["connect_opts"]["user"] = "oauthtoken".into();
                        nats["connect_opts"]["pass"] = token.unwrap_or_default().into();
                    }
                    Case::Password => {
                        nats["connect_opts"]["user"] = "bench-user".into();
                        nats["connect_opts"]["pass"] = crate::fixture::BENCH_PASSWORD.into();
                    }
                }
            })
        })
        .collect()
}

/// The init JSON the host gives a plugin (see `Authorizer::from_config`).
fn init_json(cfg: &Config, mode: Mode, jwks: bool) -> String {
    serde_json::json!({
        "permissions": cfg.permissions.section(mode.as_str()),
        "settings": serde_json::Value::Null,
        "host": { "ca_bundle": false, "jwks": jwks },
    })
    .to_string()
}

fn native_plugin(cfg: &Config, auth: &Authorizer, mode: Mode) -> Result<NativePlugin> {
    let name = format!("{mode}/native");
    let init = init_json(cfg, mode, auth.jwks().is_some());
    let caps = auth.capabilities(&name);
    match mode {
        Mode::Noauth => NativePlugin::new::<nats_callout_plugin_noauth::Noauth>(name, &init, caps),
        Mode::Nkey => NativePlugin::new::<nats_callout_plugin_nkey::NkeyPlugin>(name, &init, caps),
        Mode::Oauth2 => {
            NativePlugin::new::<nats_callout_plugin_oauth2::OauthPlugin>(name, &init, caps)
        }
        Mode::Password => {
            NativePlugin::new::<nats_callout_plugin_password::PasswordPlugin>(name, &init, caps)
        }
        Mode::Mtls | Mode::Jwt => Err(format!("{mode} is not benchmarked here")),
    }
    .map_err(|e| anyhow!("native {mode} plugin: {e}"))
}

/// An authorizer built from `cfg` whose noauth, nkey and oauth2 plugins run the plugin
/// crates natively instead of their WebAssembly builds, its JWKS (if any) loaded.
pub async fn native_authorizer(cfg: &Config, metrics: Metrics) -> Result<Authorizer> {
    let mut auth = Authorizer::from_config(cfg, metrics)?;
    if let Some(jwks) = auth.jwks() {
        jwks.refresh().await.context("JWKS fetch")?;
    }
    for mode in [Mode::Noauth, Mode::Nkey, Mode::Oauth2, Mode::Password] {
        let p = native_plugin(cfg, &auth, mode)?;
        let name = format!("{mode}/{mode}");
        if !auth.replace_plugin(&name, Runner::Native(Arc::new(p))) {
            bail!("the benchmark config has no plugin {name}");
        }
    }
    Ok(auth)
}

/// The config and two authorizers built from it: one with the WASM plugins as
/// configured, one whose chains run the same plugin crates natively.
struct Setup {
    _dir: tempfile::TempDir,
    cfg: Config,
    wasm: Authorizer,
    native: Authorizer,
    issuer: String,
}

/// What the authorizer [`load`]s with beyond the fixture's config.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extras {
    None,
    DecisionCache,
    /// A revocation list of [`REVOKED`] identities (none of the benchmark's), and every
    /// decision recorded as for audit events and kicking.
    RevocationAndAudit,
}

/// Revoked identities in the revocation row: a large list, since a lookup is a hash.
const REVOKED: usize = 10_000;

async fn load(
    fx: &Fixture,
    extras: Extras,
) -> Result<(tempfile::TempDir, Config, Authorizer, String)> {
    let dir = tempfile::tempdir()?;
    let keys = Keys::generate();
    keys.write(dir.path())?;
    let path = dir.path().join("callout.yaml");
    // Never connected: the authorizer is driven directly.
    let mut yaml = fx.callout_yaml(
        "nats://127.0.0.1:1",
        extras == Extras::DecisionCache,
        "127.0.0.1:0",
    );
    if extras == Extras::RevocationAndAudit {
        let list = dir.path().join("revoked.yaml");
        let subs: Vec<String> = (0..REVOKED).map(|i| format!("revoked-{i}")).collect();
        std::fs::write(&list, format!("sub: [{}]\n", subs.join(", ")))?;
        yaml = yaml.replace(
            "nkey_seed_file: nkey-seed }",
            "nkey_seed_file: nkey-seed, audit_subject: callout.audit }",
        );
        yaml.push_str(&format!("revocation: {{ file: {list:?} }}\n"));
    }
    // The password row checks a cost-10 bcrypt hash: 70 ms in a release build, but
    // past the 250 ms default budget in a debug build beside a parallel test run (seen
    // in CI). This part measures the decision's time, not the budget: give it room.
    yaml.push_str("limits: { plugin_timeout: 10s }\n");
    std::fs::write(&path, yaml)?;
    let cfg = Config::load(&path)?;
    let auth = Authorizer::from_config(&cfg, Metrics::new())?;
    if let Some(jwks) = auth.jwks() {
        jwks.refresh().await.context("JWKS fetch")?;
    }
    Ok((dir, cfg, auth, keys.issuer.public_key()))
}

async fn setup(fx: &Fixture) -> Result<Setup> {
    let (dir, cfg, wasm, issuer) = load(fx, Extras::None).await?;
    // Same config, same seeds: the second authorizer signs as the same issuer.
    let native = native_authorizer(&cfg, Metrics::new()).await?;
    Ok(Setup {
        _dir: dir,
        cfg,
        wasm,
        native,
        issuer,
    })
}

/// One decision through `Authorizer::handle`; it must admit.
pub(crate) async fn decide(auth: &Authorizer, request: &str) -> Result<()> {
    match std::hint::black_box(auth.handle(request.as_bytes(), None).await).verdict {
        Verdict::Allowed { .. } => Ok(()),
        refused => bail!("a benchmark request was not admitted: {refused:?}"),
    }
}

/// One plugin call; it must allow.
pub(crate) async fn call(runner: &Runner, request: &PluginRequest) -> Result<()> {
    match std::hint::black_box(runner.authenticate(request).await) {
        Ok(sdk::Decision::Allow(_)) => Ok(()),
        other => bail!("a plugin call did not allow: {other:?}"),
    }
}

/// `opts.batches` timed batches (after one to warm up) of `n` calls of each side, `a(i)`
/// and `b(i)` for i in 0..n, interleaved call by call with the first side swapping every
/// call: a change of the machine's load (other processes on a shared host) hits both
/// sides alike, where alternating whole batches left seconds between them. Each call
/// is preceded, untimed, by the read of `opts.evict_bytes` of unrelated memory. Returns
/// each side's mean nanoseconds per call, batch by batch.
pub(crate) async fn interleaved(
    opts: Options,
    n: usize,
    a: impl AsyncFn(usize) -> Result<()>,
    b: impl AsyncFn(usize) -> Result<()>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    async fn timed(
        side: &impl AsyncFn(usize) -> Result<()>,
        i: usize,
        unrelated: &[u8],
    ) -> Result<Duration> {
        // One read per cache line.
        let sum = unrelated
            .iter()
            .step_by(64)
            .fold(0u8, |s, b| s.wrapping_add(*b));
        std::hint::black_box(sum);
        let started = Instant::now();
        side(i).await?;
        Ok(started.elapsed())
    }
    // Non-zero, so that every page is its own: pages never written all map the one
    // zero page, and reading them would evict nothing.
    let unrelated = vec![1u8; opts.evict_bytes];
    let batches = opts.batches;
    let (mut a_ns, mut b_ns) = (Vec::with_capacity(batches), Vec::with_capacity(batches));
    for batch in 0..=batches {
        let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            if i % 2 == 0 {
                ta += timed(&a, i, &unrelated).await?;
                tb += timed(&b, i, &unrelated).await?;
            } else {
                tb += timed(&b, i, &unrelated).await?;
                ta += timed(&a, i, &unrelated).await?;
            }
        }
        if batch > 0 {
            a_ns.push(ta.as_nanos() as f64 / n as f64);
            b_ns.push(tb.as_nanos() as f64 / n as f64);
        }
    }
    Ok((a_ns, b_ns))
}

/// Run part 1.
pub async fn run(fx: &Fixture, opts: Options) -> Result<Report> {
    let s = setup(fx).await?;
    let server = nkeys::KeyPair::new_server();
    let mut cases = Vec::new();
    for case in Case::ALL {
        let token = match case {
            Case::Oauth2(alg) => Some(fx.token(alg).await?),
            _ => None,
        };
        let reqs = requests(
            fx,
            &server,
            &s.issuer,
            case,
            token.as_deref(),
            case.options(opts).per_batch,
        );
        cases.push((case, reqs));
    }

    let mut pipeline = Vec::new();
    for (case, reqs) in &cases {
        let (w, n) = interleaved(
            case.options(opts),
            reqs.len(),
            async |i| decide(&s.wasm, &reqs[i]).await,
            async |i| decide(&s.native, &reqs[i]).await,
        )
        .await?;
        let pair = Pair::new(case.label(), &w, &n);
        pipeline.push(if *case == Case::Password {
            pair.untargeted()
        } else {
            pair
        });
    }

    // The plugin call alone: a separately loaded WASM plugin (same engine settings and
    // limits as the authorizer's) against the native one, on decoded requests.
    let limits = CallLimits {
        timeout: s.cfg.limits.plugin_timeout,
        memory_bytes: s.cfg.limits.plugin_memory_bytes,
        instances: s.cfg.limits.instances_per_plugin,
        fuel: None,
    };
    let engine = PluginEngine::new(
        s.cfg.limits.plugin_memory_bytes,
        false,
        runtime::precompiled::default_dir(),
    )?;
    let mut plugin_call = Vec::new();
    for (case, reqs) in &cases {
        let mode = case.mode();
        let name = format!("{mode}/wasm");
        let loaded = engine.load(
            &name,
            &plugin_path(mode.as_str()),
            init_json(&s.cfg, mode, true),
            s.wasm.capabilities(&name),
            limits,
        )?;
        let wasm = Runner::Wasm(loaded);
        let native = Runner::Native(Arc::new(native_plugin(&s.cfg, &s.native, mode)?));
        let plain = plain_requests(reqs, mode.as_str())?;
        let (w, n) = interleaved(
            case.options(opts),
            plain.len(),
            async |i| call(&wasm, &plain[i]).await,
            async |i| call(&native, &plain[i]).await,
        )
        .await?;
        plugin_call.push(Pair::new(case.label(), &w, &n));
    }

    Ok(Report {
        pipeline,
        plugin_call,
        contracts: contracts(opts, &server).await?,
    })
}

/// Forged requests as a plugin of route `route` gets them: decoded, their credential taken.
pub(crate) fn plain_requests(reqs: &[String], route: &str) -> Result<Vec<PluginRequest>> {
    reqs.iter()
        .map(|t| {
            let mut claims: RequestClaims = nats_callout::nats::jwt::decode_verified(t)?;
            let kind = credential::kind(&claims.nats)?;
            let credential = credential::take(&mut claims.nats.connect_opts, kind);
            let request = runtime::plain_request(claims.nats, route, credential, vec![]);
            Ok(PluginRequest {
                request,
                legacy: None,
            })
        })
        .collect()
}

/// The API key of the apikey plugin's one service (contracts, languages).
pub(crate) const API_KEY: &str = "bench-api-key";

/// An authorizer whose noauth and bearer-token routes run the noauth and apikey plugins
/// in `dir`, with the issuer of `keys`.
fn contract_authorizer(
    keys: &Keys,
    dir: &std::path::Path,
) -> Result<(tempfile::TempDir, Authorizer)> {
    apikey_authorizer(keys, &dir.join("noauth.wasm"), &dir.join("apikey.wasm"))
}

/// The apikey plugin's settings: one service, `bench`, whose key is [`API_KEY`], as JSON.
pub(crate) fn apikey_settings() -> String {
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // JSON, which is YAML too: the same text serves configs and `init`.
    serde_json::json!({ "keys": { "bench": {
        "sha256": digest, "account": "DEVICES", "permissions": { "pub": { "allow": ["bench.>"] } }
    } } })
    .to_string()
}

/// An authorizer whose noauth route runs the component `noauth` and whose bearer-token
/// route runs `apikey` (any component of the apikey plugin's settings), with the issuer
/// of `keys`, decision cache off.
pub(crate) fn apikey_authorizer(
    keys: &Keys,
    noauth: &std::path::Path,
    apikey: &std::path::Path,
) -> Result<(tempfile::TempDir, Authorizer)> {
    let work = tempfile::tempdir()?;
    keys.write(work.path())?;
    let yaml = format!(
        "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
         issuer_seed_file: issuer-seed\nhttp_listen: 127.0.0.1:0\ndecision_cache: {{ ttl: 0s }}\n\
         plugins:\n  - {{ mode: noauth, path: \"{noauth}\" }}\n  \
         - {{ mode: oauth2, path: \"{apikey}\", settings: {settings} }}\n\
         permissions:\n  noauth: {{ account: ANONYMOUS, permissions: {{ pub: {{ allow: [\"public.>\"] }} }} }}\n",
        noauth = noauth.display(),
        apikey = apikey.display(),
        settings = apikey_settings(),
    );
    let path = work.path().join("callout.yaml");
    std::fs::write(&path, yaml)?;
    let auth = Authorizer::from_config(&Config::load(&path)?, Metrics::new())?;
    Ok((work, auth))
}

/// The same two plugins built against contract 0.3.0 (today's builds) and against 0.2.0
/// and 0.1.0 (the fixtures committed from the last tree of each), decided in process: what
/// the contract and its dispatch cost a decision, the plugins' own code changes between
/// the trees included (small: the SDK's request types, not the plugins' logic).
async fn contracts(opts: Options, server: &nkeys::KeyPair) -> Result<Vec<Pair>> {
    let keys = Keys::generate();
    let (_now_dir, now) = contract_authorizer(&keys, &nats_callout_tests::plugin_dir())?;
    let issuer = keys.issuer.public_key();
    let mut pairs = Vec::new();
    for version in ["0.2.0", "0.1.0"] {
        let fixtures =
            nats_callout_tests::workspace_root().join(format!("tests/fixtures/v{version}"));
        let (_dir, old) = contract_authorizer(&keys, &fixtures)?;
        pairs.extend(contract_pairs(opts, server, &issuer, &now, &old, version).await?);
    }
    Ok(pairs)
}

/// Both plugins decided by `now` (0.3.0) and by `old` (contract `version`), interleaved.
async fn contract_pairs(
    opts: Options,
    server: &nkeys::KeyPair,
    issuer: &str,
    now: &Authorizer,
    old: &Authorizer,
    version: &str,
) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (label, api_key) in [("noauth", None), ("apikey (bearer token)", Some(API_KEY))] {
        let reqs: Vec<String> = (0..opts.per_batch)
            .map(|_| {
                inject::request(server, issuer, |c| {
                    c["exp"] = (unix_now() + 3600).into();
                    if let Some(key) = api_key {
                        c["nats"]["connect_opts"]["auth_token"] = key.into();
                    }
                })
            })
            .collect();
        let (a, b) = interleaved(
            opts,
            reqs.len(),
            async |i| decide(now, &reqs[i]).await,
            async |i| decide(old, &reqs[i]).await,
        )
        .await?;
        pairs.push(Pair::new(format!("{label}, 0.3.0 vs {version}"), &a, &b));
    }
    Ok(pairs)
}

/// In-process cost of one oauth2 (RS256) decision with the same token every time, with
/// the decision cache off and on: ns per decision (median of batches).
pub async fn cache_in_process(fx: &Fixture, opts: Options) -> Result<(f64, f64)> {
    against(fx, opts, Extras::DecisionCache).await
}

/// In-process cost of one oauth2 (RS256) decision (cache off) without and with a
/// revocation list and audit recording: ns per decision (median of batches). The
/// events' serialisation and publishing happen after the answer and are not in it.
pub async fn revocation_in_process(fx: &Fixture, opts: Options) -> Result<(f64, f64)> {
    against(fx, opts, Extras::RevocationAndAudit).await
}

/// Plain oauth2 decisions against the same with `extras`, interleaved.
async fn against(fx: &Fixture, opts: Options, extras: Extras) -> Result<(f64, f64)> {
    let token = fx.token(Alg::Rs256).await?;
    let server = nkeys::KeyPair::new_server();
    let (_d1, _, off, issuer_off) = load(fx, Extras::None).await?;
    let (_d2, _, on, issuer_on) = load(fx, extras).await?;
    let case = Case::Oauth2(Alg::Rs256);
    let reqs_off = requests(fx, &server, &issuer_off, case, Some(&token), opts.per_batch);
    let reqs_on = requests(fx, &server, &issuer_on, case, Some(&token), opts.per_batch);
    let (a, b) = interleaved(
        opts,
        opts.per_batch,
        async |i| decide(&off, &reqs_off[i]).await,
        async |i| decide(&on, &reqs_on[i]).await,
    )
    .await?;
    Ok((median(&a), median(&b)))
}
