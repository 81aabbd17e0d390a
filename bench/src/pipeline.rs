//! Part 1: the in-process decision pipeline, `Authorizer::handle` (verify the request,
//! route, run the plugin, check the grant, sign the user and response JWTs), with the
//! built-in plugins as WebAssembly components and the same plugin crates compiled
//! natively. Also the plugin call alone and the decision cache in process.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use nats_callout::authorizer::{Authorizer, Verdict};
use nats_callout::claims::RequestClaims;
use nats_callout::config::Config;
use nats_callout::metrics::Metrics;
use nats_callout::plugin::{self, CallLimits, NativePlugin, PluginEngine, Runner};
use nats_callout::request::unix_now;
use nats_callout::routing::Mode;
use nats_callout_sdk as sdk;
use nats_callout_tests::Keys;
use nats_callout_tests::inject;

use crate::fixture::{Alg, Fixture, plugin_path};
use crate::stats::median;

/// Iteration counts.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Timed batches per case and runtime; the reported figures are medians, which
    /// shrug off batches disturbed by other processes on a shared machine. Many short
    /// batches, alternating WASM and native, beat a few long ones there.
    pub batches: usize,
    /// Decisions per batch (distinct requests, reused across batches).
    pub per_batch: usize,
}

/// One case of the pipeline: a mode and its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Noauth,
    Nkey,
    Oauth2(Alg),
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::Noauth,
        Case::Nkey,
        Case::Oauth2(Alg::Rs256),
        Case::Oauth2(Alg::Es256),
    ];

    pub fn label(self) -> String {
        match self {
            Case::Noauth => "noauth".into(),
            Case::Nkey => "nkey".into(),
            Case::Oauth2(alg) => format!("oauth2 {}", alg.as_str()),
        }
    }

    fn mode(self) -> Mode {
        match self {
            Case::Noauth => Mode::Noauth,
            Case::Nkey => Mode::Nkey,
            Case::Oauth2(_) => Mode::Oauth2,
        }
    }
}

/// WASM and native figures of one case, in nanoseconds per decision.
#[derive(Debug, Clone)]
pub struct Pair {
    pub case: String,
    /// Median of the WASM batches.
    pub wasm_ns: f64,
    /// Median of the native batches.
    pub native_ns: f64,
    /// Median over batch pairs (a WASM and a native batch run back to back) of their
    /// ratio, and of their difference: slow drifts of the machine's load cancel out.
    pub paired_ratio: f64,
    pub paired_added_ns: f64,
}

impl Pair {
    fn new(case: String, wasm: &[f64], native: &[f64]) -> Self {
        let ratios: Vec<f64> = wasm.iter().zip(native).map(|(w, n)| w / n).collect();
        let added: Vec<f64> = wasm.iter().zip(native).map(|(w, n)| w - n).collect();
        Self {
            case,
            wasm_ns: median(wasm),
            native_ns: median(native),
            paired_ratio: median(&ratios),
            paired_added_ns: median(&added),
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
                }
            })
        })
        .collect()
}

/// The init JSON the host gives a plugin (see `Authorizer::from_config`).
fn init_json(cfg: &Config, mode: Mode, jwks: bool) -> String {
    serde_json::json!({
        "permissions": cfg.permissions.for_mode(mode),
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
        Mode::Mtls => Err("mtls is not benchmarked".into()),
    }
    .map_err(|e| anyhow!("native {mode} plugin: {e}"))
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

async fn load(
    fx: &Fixture,
    cache: bool,
) -> Result<(tempfile::TempDir, Config, Authorizer, String)> {
    let dir = tempfile::tempdir()?;
    let keys = Keys::generate();
    keys.write(dir.path())?;
    let path = dir.path().join("callout.yaml");
    // Never connected: the authorizer is driven directly.
    std::fs::write(
        &path,
        fx.callout_yaml("nats://127.0.0.1:1", cache, "127.0.0.1:0"),
    )?;
    let cfg = Config::load(&path)?;
    let auth = Authorizer::from_config(&cfg, Metrics::new())?;
    if let Some(jwks) = auth.jwks() {
        jwks.refresh().await.context("JWKS fetch")?;
    }
    Ok((dir, cfg, auth, keys.issuer.public_key()))
}

async fn setup(fx: &Fixture) -> Result<Setup> {
    let (dir, cfg, wasm, issuer) = load(fx, false).await?;
    // Same config, same seeds: the second authorizer signs as the same issuer.
    let mut native = Authorizer::from_config(&cfg, Metrics::new())?;
    if let Some(jwks) = native.jwks() {
        jwks.refresh().await.context("JWKS fetch")?;
    }
    for mode in [Mode::Noauth, Mode::Nkey, Mode::Oauth2] {
        let p = native_plugin(&cfg, &native, mode)?;
        native.replace_chain(mode, vec![Runner::Native(Arc::new(p))]);
    }
    Ok(Setup {
        _dir: dir,
        cfg,
        wasm,
        native,
        issuer,
    })
}

/// Mean nanoseconds per `handle` over `reqs`; every request must be admitted.
async fn time_handle(auth: &Authorizer, reqs: &[String]) -> Result<f64> {
    let started = Instant::now();
    let mut refused = None;
    for r in reqs {
        let handled = std::hint::black_box(auth.handle(r.as_bytes(), None).await);
        if !matches!(handled.verdict, Verdict::Allowed { .. }) {
            refused = Some(handled.verdict);
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / reqs.len() as f64;
    if let Some(v) = refused {
        bail!("a benchmark request was not admitted: {v:?}");
    }
    Ok(ns)
}

/// Mean nanoseconds per plugin call; every call must allow.
async fn time_runner(runner: &Runner, reqs: &[sdk::AuthRequest]) -> Result<f64> {
    let started = Instant::now();
    let mut bad = None;
    for r in reqs {
        let d = std::hint::black_box(runner.authenticate(r).await);
        if !matches!(d, Ok(sdk::Decision::Allow(_))) {
            bad = Some(d);
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / reqs.len() as f64;
    if let Some(d) = bad {
        bail!("a plugin call did not allow: {d:?}");
    }
    Ok(ns)
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
            opts.per_batch,
        );
        cases.push((case, reqs));
    }

    // Pipeline: WASM and native batches alternate (and swap order every batch), so
    // that load from other processes hits both sides alike.
    let mut pipeline = Vec::new();
    for (case, reqs) in &cases {
        time_handle(&s.wasm, reqs).await?; // warm-up: instances, JWKS, caches
        time_handle(&s.native, reqs).await?;
        let (mut w, mut n) = (Vec::new(), Vec::new());
        for b in 0..opts.batches {
            if b % 2 == 0 {
                w.push(time_handle(&s.wasm, reqs).await?);
                n.push(time_handle(&s.native, reqs).await?);
            } else {
                n.push(time_handle(&s.native, reqs).await?);
                w.push(time_handle(&s.wasm, reqs).await?);
            }
        }
        pipeline.push(Pair::new(case.label(), &w, &n));
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
        plugin::precompiled::default_dir(),
    )?;
    let mut plugin_call = Vec::new();
    for (case, reqs) in &cases {
        let mode = case.mode();
        let name = format!("{mode}/wasm");
        let loaded = engine.load(
            &name,
            mode,
            &plugin_path(mode.as_str()),
            init_json(&s.cfg, mode, true),
            s.wasm.capabilities(&name),
            limits,
        )?;
        let wasm = Runner::Wasm(loaded);
        let native = Runner::Native(Arc::new(native_plugin(&s.cfg, &s.native, mode)?));
        let plain = reqs
            .iter()
            .map(|t| {
                let claims: RequestClaims = nats_callout::jwt::decode_verified(t)?;
                Ok(plugin::plain_request(claims.nats, mode, vec![]))
            })
            .collect::<Result<Vec<_>>>()?;
        time_runner(&wasm, &plain).await?;
        time_runner(&native, &plain).await?;
        let (mut w, mut n) = (Vec::new(), Vec::new());
        for b in 0..opts.batches {
            if b % 2 == 0 {
                w.push(time_runner(&wasm, &plain).await?);
                n.push(time_runner(&native, &plain).await?);
            } else {
                n.push(time_runner(&native, &plain).await?);
                w.push(time_runner(&wasm, &plain).await?);
            }
        }
        plugin_call.push(Pair::new(case.label(), &w, &n));
    }

    Ok(Report {
        pipeline,
        plugin_call,
    })
}

/// In-process cost of one oauth2 (RS256) decision with the same token every time, with
/// the decision cache off and on: ns per decision (median of batches).
pub async fn cache_in_process(fx: &Fixture, opts: Options) -> Result<(f64, f64)> {
    let token = fx.token(Alg::Rs256).await?;
    let server = nkeys::KeyPair::new_server();
    let (_d1, _, off, issuer_off) = load(fx, false).await?;
    let (_d2, _, on, issuer_on) = load(fx, true).await?;
    let case = Case::Oauth2(Alg::Rs256);
    let reqs_off = requests(fx, &server, &issuer_off, case, Some(&token), opts.per_batch);
    let reqs_on = requests(fx, &server, &issuer_on, case, Some(&token), opts.per_batch);
    time_handle(&off, &reqs_off).await?;
    time_handle(&on, &reqs_on).await?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..opts.batches {
        a.push(time_handle(&off, &reqs_off).await?);
        b.push(time_handle(&on, &reqs_on).await?);
    }
    Ok((median(&a), median(&b)))
}
