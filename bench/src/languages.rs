//! Part 6: one plugin in three languages. The apikey plugin (API keys by SHA-256) as
//! `examples/apikey-plugin` (Rust), `examples/python-plugin` (componentize-py) and
//! `examples/js-plugin` (ComponentizeJS): what each costs a decision in process and a
//! connect end to end (against Rust in the same rounds), to compile (cold, and from the
//! precompiled cache), and in memory (per pooled instance, and the service's RSS).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nats_callout::pipeline::request::unix_now;
use nats_callout::runtime::capabilities::Capabilities;
use nats_callout::runtime::sandbox::initial_memory;
use nats_callout::runtime::{CallLimits, PluginEngine, Runner};
use nats_callout_tests::{Keys, inject, plugin_dir};

use crate::connect::{self, Row};
use crate::fixture::{Target, callout_head};
use crate::pipeline::{self, API_KEY, Pair, apikey_authorizer, apikey_settings};
use crate::rawclient::{Client, Credential};

/// The languages, and their component in the plugin dir (scripts/setup builds them).
pub const LANGUAGES: [(&str, &str); 3] = [
    ("Rust", "apikey.wasm"),
    ("Python", "python-apikey.wasm"),
    ("JavaScript", "js-apikey.wasm"),
];

/// Instances created for the memory figure: enough that one instance's share stands out
/// of the process's other allocations.
const INSTANCES: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub sizes: connect::Sizes,
    pub pipeline: pipeline::Options,
}

/// What loading one language's component costs.
#[derive(Debug, Clone)]
pub struct Load {
    pub language: &'static str,
    pub component_bytes: u64,
    /// Its linear memory's initial size: what an instance needs before its first call.
    pub initial_memory: u64,
    /// Compile (Cranelift), write to the precompiled cache, instantiate, `init`.
    pub cold: Duration,
    /// The same from the precompiled cache.
    pub cached: Duration,
    /// Growth of this process's RSS per further warm instance (created and `init`ed).
    pub instance_rss: f64,
    /// RSS of the nats-callout process serving it, after part 6's connects.
    pub service_rss: u64,
}

#[derive(Debug)]
pub struct Report {
    pub loads: Vec<Load>,
    /// Python and JavaScript against Rust, `Authorizer::handle`, calls interleaved.
    pub decisions: Vec<Pair>,
    /// End to end, the three in the same rounds.
    pub connects: Vec<Row>,
}

pub async fn run(opts: Options) -> Result<Report> {
    let dir = plugin_dir();
    for (_, file) in LANGUAGES {
        if !dir.join(file).exists() {
            bail!("{} not built: run scripts/setup", dir.join(file).display());
        }
    }
    let mut loads = Vec::new();
    for (language, file) in LANGUAGES {
        loads.push(load(language, &dir.join(file)).await?);
    }
    let decisions = decisions(opts.pipeline, &dir).await?;
    let mut targets = Vec::new();
    for (language, file) in LANGUAGES {
        let path = dir.join(file);
        targets.push(Target::nats_callout_with(
            format!("nats-callout apikey, {language}"),
            false,
            |_, url, listen| Ok(callout_yaml(&path, url, listen)),
        )?);
    }
    let mut scenarios: Vec<_> = targets
        .iter_mut()
        .map(|t| {
            let client = Arc::new(Client::new(t.port(), Credential::Token(API_KEY.into())));
            (t.name.clone(), "API key", t, client)
        })
        .collect();
    let rows = connect::rounds(&mut scenarios, opts.sizes, async || Ok(0)).await?;
    for (load, target) in loads.iter_mut().zip(&targets) {
        let pid = target.responder.as_ref().context("no callout")?.pid();
        load.service_rss = crate::procs::rss_bytes(pid)?;
    }
    Ok(Report {
        loads,
        decisions,
        connects: rows.into_iter().map(|(row, _)| row).collect(),
    })
}

/// A callout whose bearer tokens go to the component at `path`.
fn callout_yaml(path: &Path, nats_url: &str, listen: &str) -> String {
    format!(
        "{head}decision_cache: {{ ttl: 0s }}\nplugins:\n  \
         - {{ name: apikey, path: \"{path}\", settings: {settings} }}\n\
         routes: [ {{ name: services, match: {{ credentials: bearer-token }}, plugins: [apikey] }} ]\n",
        head = callout_head(nats_url, listen),
        path = path.display(),
        settings = apikey_settings(),
    )
}

/// Load `path` twice, into an empty precompiled cache and then from it, decide once, and
/// grow its pool to [`INSTANCES`] warm instances.
async fn load(language: &'static str, path: &Path) -> Result<Load> {
    let cache = tempfile::tempdir()?;
    let limits = CallLimits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        instances: INSTANCES,
        fuel: None,
    };
    let init = format!("{{\"settings\": {}}}", apikey_settings());
    let timed = |engine: &PluginEngine| {
        let started = Instant::now();
        let plugin = engine.load(
            language,
            path,
            init.clone(),
            Capabilities::new(language),
            limits,
        )?;
        anyhow::Ok((plugin, started.elapsed()))
    };
    let engine = PluginEngine::new(limits.memory_bytes, false, Some(cache.path().into()))?;
    let (_, cold) = timed(&engine)?;
    let engine = PluginEngine::new(limits.memory_bytes, false, Some(cache.path().into()))?;
    let (plugin, cached) = timed(&engine)?;
    // One call on the first instance, then the pool grown to INSTANCES warm ones.
    let server = nkeys::KeyPair::new_server();
    let issuer = Keys::generate().issuer.public_key();
    let forged = [inject::request(&server, &issuer, |c| {
        c["exp"] = (unix_now() + 3600).into();
        c["nats"]["connect_opts"]["auth_token"] = API_KEY.into();
    })];
    let requests = pipeline::plain_requests(&forged, "services")?;
    pipeline::call(&Runner::Wasm(plugin.clone()), &requests[0]).await?;
    let before = crate::procs::rss_bytes(std::process::id())?;
    plugin.prewarm(INSTANCES).await?;
    let after = crate::procs::rss_bytes(std::process::id())?;
    Ok(Load {
        language,
        component_bytes: std::fs::metadata(path)?.len(),
        initial_memory: initial_memory(&std::fs::read(path)?),
        cold,
        cached,
        // The first instance existed before: the others are new.
        instance_rss: after.saturating_sub(before) as f64 / (INSTANCES - 1) as f64,
        service_rss: 0,
    })
}

/// Python and JavaScript against Rust in `Authorizer::handle`, interleaved call by call.
async fn decisions(opts: pipeline::Options, dir: &Path) -> Result<Vec<Pair>> {
    let keys = Keys::generate();
    let noauth = dir.join("noauth.wasm");
    let (_rust_dir, rust) = apikey_authorizer(&keys, &noauth, &dir.join(LANGUAGES[0].1))?;
    let server = nkeys::KeyPair::new_server();
    let issuer = keys.issuer.public_key();
    let requests: Vec<String> = (0..opts.per_batch)
        .map(|_| {
            inject::request(&server, &issuer, |c| {
                c["exp"] = (unix_now() + 3600).into();
                c["nats"]["connect_opts"]["auth_token"] = API_KEY.into();
            })
        })
        .collect();
    let mut pairs = Vec::new();
    for (language, file) in &LANGUAGES[1..] {
        let (_dir, other) = apikey_authorizer(&keys, &noauth, &dir.join(file))?;
        let (a, b) = pipeline::interleaved(
            opts,
            requests.len(),
            async |i| pipeline::decide(&other, &requests[i]).await,
            async |i| pipeline::decide(&rust, &requests[i]).await,
        )
        .await?;
        pairs.push(Pair::new((*language).into(), &a, &b));
    }
    Ok(pairs)
}
