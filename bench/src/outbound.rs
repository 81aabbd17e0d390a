//! Part 5: plugins that reach out. Opaque tokens introspected at the OpenID provider
//! (the plugin cache on and off) against the oauth2 plugin verifying JWTs locally, in the
//! same rounds; and a reconnect storm of NKey devices through the example registry
//! plugin, with a registry that takes 20 ms per answer, against the null callout's storm
//! of the same devices.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use nats_callout_tests::web::WebServer;
use serde_json::json;

use crate::connect::{self, Kind, Row, StormRow, Targets};
use crate::fixture::{AUDIENCE, Alg, Fixture, INTROSPECTOR, OAUTH2_DEVICES, Target, callout_head};
use crate::rawclient::{Client, Credential};

/// How long the registry takes to answer: a lookup in a database a network hop away.
pub const REGISTRY_LATENCY: Duration = Duration::from_millis(20);

/// Warm instances of the registry plugin in the storm. A call waiting for the registry
/// holds an instance, so instances bound lookups in flight: 256 matches the host's
/// `max_concurrent` (decisions in flight per NATS connection), so that neither waits
/// for the other; at 20 ms a lookup that is 12,800 lookups/s.
pub const REGISTRY_INSTANCES: usize = 256;

/// Iteration counts of part 5.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Introspection's connects.
    pub sizes: connect::Sizes,
    /// Devices in the registry storm, each its own NKey.
    pub devices: usize,
}

/// What part 5 measured.
#[derive(Debug)]
pub struct Report {
    /// Rows by scenario (oauth2 JWT, introspection with and without the plugin cache),
    /// each with the introspection requests the provider counted during it.
    pub introspection: Vec<(Row, u64)>,
    /// The null callout's storm, then the registry plugin's first storm (cold cache) and
    /// second (warm), each with the registry calls made during it.
    pub storms: Vec<(StormRow, usize)>,
}

/// The callout config of the introspection targets: decision cache off, so that every
/// connect reaches the plugin, and the plugin cache for `cache_ttl`.
fn introspection_yaml(
    fx: &Fixture,
    cache_ttl: &str,
    dir: &std::path::Path,
    nats_url: &str,
    listen: &str,
) -> Result<String> {
    std::fs::write(
        dir.join("introspector-secret"),
        format!("{INTROSPECTOR}-secret"),
    )?;
    let issuer = &fx.oidc.issuer;
    Ok(format!(
        r#"{head}decision_cache: {{ ttl: 0s }}
plugins:
  - name: introspection
    builtin: introspection
    permissions: oauth2
    settings:
      endpoint: "{issuer}/token/introspection"
      client_id: {INTROSPECTOR}
      audience: {AUDIENCE}
      issuer: "{issuer}"
      cache_ttl: {cache_ttl}
    secrets: {{ client_secret: {{ file: introspector-secret }} }}
    allowed_outbound_hosts: ["http://127.0.0.1:{port}"]
routes:
  - {{ name: tokens, match: {{ credentials: bearer-token }}, plugins: [introspection] }}
permissions:
{OAUTH2_DEVICES}"#,
        head = callout_head(nats_url, listen),
        port = fx.oidc.port,
    ))
}

/// The callout config of the registry target.
fn registry_yaml(registry: &str, nats_url: &str, listen: &str) -> String {
    format!(
        r#"{head}plugins:
  - name: registry
    builtin: registry
    settings:
      registry: "{registry}"
      cache_ttl: 5m
      grant:
        account: DEVICES
        permissions:
          pub: {{ allow: ["telemetry.{{{{site}}}}.{{{{device}}}}"] }}
          sub: {{ allow: ["commands.{{{{device}}}}"] }}
    allowed_outbound_hosts: ["{registry}"]
    # A second, not the default 250 ms: a plugin that waits on another service gets
    # room for its slow answers (nats-server waits 2 s); a storm's first calls also
    # set up their instances, which a loaded machine makes slow.
    limits: {{ instances: {REGISTRY_INSTANCES}, timeout: 1s }}
routes:
  - {{ name: devices, match: {{ credentials: nkey }}, plugins: [registry] }}
"#,
        head = callout_head(nats_url, listen),
    )
}

pub async fn run(fx: &Fixture, t: &mut Targets, opts: Options) -> Result<Report> {
    let introspection = introspection(fx, t, opts).await?;
    let storms = registry_storm(t, fx, opts.devices).await?;
    Ok(Report {
        introspection,
        storms,
    })
}

/// oauth2 with a JWT, introspection with the plugin cache on and off, at concurrency 1
/// and `opts.concurrency`, in interleaved rounds as part 2.
async fn introspection(fx: &Fixture, t: &mut Targets, opts: Options) -> Result<Vec<(Row, u64)>> {
    let opaque = Credential::Token(fx.opaque_token().await?);
    let jwt = Credential::Token(fx.token(Alg::Rs256).await?);
    let target = |state: &str, ttl: &str| {
        Target::nats_callout_with(
            format!("nats-callout introspection, plugin cache {state}"),
            false,
            |dir, url, listen| introspection_yaml(fx, ttl, dir, url, listen),
        )
    };
    let (mut on, mut off) = (target("on", "60s")?, target("off", "0s")?);
    let (on, off) = (&mut on, &mut off);
    let oauth2 = t.get(fx, Kind::Callout)?;
    let client = |target: &Target, credential: &Credential| {
        Arc::new(Client::new(target.port(), credential.clone()))
    };
    let mut scenarios = [
        (
            "nats-callout oauth2 JWT".to_owned(),
            "RS256 JWT",
            client(oauth2, &jwt),
            oauth2,
        ),
        (on.name.clone(), "opaque token", client(on, &opaque), on),
        (off.name.clone(), "opaque token", client(off, &opaque), off),
    ]
    .map(|(name, sends, client, target)| (name, sends, target, client));
    connect::rounds(&mut scenarios, opts.sizes, async || {
        fx.oidc.introspections().await
    })
    .await
}

/// The registry the storm's devices are looked up in: every key is an active device of
/// site `plant-1`, answered after [`REGISTRY_LATENCY`]. It runs on a runtime of its own,
/// so that it does not share the load generator's thread.
struct Registry {
    url: String,
    calls: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    fn start() -> Result<Self> {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let router = Router::new().route(
            "/devices/{key}",
            get(move |Path(key): Path<String>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(REGISTRY_LATENCY).await;
                    let id: String = key.chars().take(12).collect::<String>().to_lowercase();
                    json!({ "id": id, "active": true, "site": "plant-1" }).to_string()
                }
            }),
        );
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = addr_tx.send(Err(anyhow::anyhow!("registry runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                match WebServer::start(router).await {
                    Ok(server) => {
                        let _ = addr_tx.send(Ok(server.url("")));
                        let _ = stopped.await;
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                    }
                }
            });
        });
        let url = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the registry did not start")??;
        Ok(Self {
            url,
            calls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `devices` NKey devices connect at once: to the null callout (what nats-server makes
/// of the storm), then twice to the registry plugin, the second time with its cache warm.
async fn registry_storm(
    t: &mut Targets,
    fx: &Fixture,
    devices: usize,
) -> Result<Vec<(StormRow, usize)>> {
    let keys: Vec<Arc<nkeys::KeyPair>> = (0..devices)
        .map(|_| Arc::new(nkeys::KeyPair::new_user()))
        .collect();
    let registry = Registry::start()?;
    let mut target = Target::nats_callout_with(
        format!(
            "registry plugin ({} ms registry)",
            REGISTRY_LATENCY.as_millis()
        ),
        false,
        |_, url, listen| Ok(registry_yaml(&registry.url, url, listen)),
    )?;
    let mut rows = Vec::new();
    let devices_of = |target: &Target| -> Vec<Arc<Client>> {
        keys.iter()
            .map(|k| Arc::new(Client::new(target.port(), Credential::Nkey(k.clone()))))
            .collect()
    };
    let null = t.get(fx, Kind::Null)?;
    let clients = devices_of(null);
    rows.push((
        connect::burst(null, &clients, devices, "null callout".into()).await?,
        0,
    ));
    let clients = devices_of(&target);
    for label in ["first storm, cache cold", "second storm, cache warm"] {
        let before = registry.calls();
        let name = format!("{}, {label}", target.name);
        let row = connect::burst(&mut target, &clients, devices, name).await?;
        rows.push((row, registry.calls() - before));
    }
    Ok(rows)
}
