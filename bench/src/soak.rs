//! Part 8: the soak (issue #20), run only on request (`--only soak`, about 10 minutes):
//! one nats-callout process serving two nats-servers (a plain one, and one that
//! verifies client certificates) with every mode, under continuous connects, while its
//! config file is rewritten every 10 s (every sixth version broken), one connect in 20
//! presents a hostile token and one in 1,000 reaches a plugin that traps.
//!
//! What it reports: the callout's resident memory and open file descriptors when the
//! warm-up ends and at the end (growth must stay under 5 %), decisions per second, every
//! connect whose outcome was not the expected one (a valid client refused, a hostile one
//! admitted), and, from a [`Watcher`] on each server, requests answered twice or never.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use nats_callout_tests::pki::{self, Ca, Files};
use nats_callout_tests::{
    Keys, NatsServer, S3CRET_BCRYPT, callout_server_config, free_port, plugin_dir,
};
use serde_json::json;

use crate::fixture::{AUDIENCE, Alg, Fixture, OAUTH2_DEVICES, metric, nats_entry};
use crate::procs::{self, Process};
use crate::rawclient::{Client, Credential, Outcome};
use crate::watch::{Count, Watcher};

/// Growth of RSS and of open descriptors, warm-up end to end, the soak tolerates.
pub const MAX_GROWTH: f64 = 0.05;
/// One connect in this many presents a hostile token.
const HOSTILE_EVERY: usize = 20;
/// One connect in this many reaches the trapping plugin.
const TRAP_EVERY: usize = 1000;
/// Every this many config rewrites, the new file is broken (and refused).
const BROKEN_EVERY: usize = 6;

pub struct Options {
    pub duration: Duration,
    /// Connects in flight at once (closed loop).
    pub concurrency: usize,
}

/// How often the config is rewritten: every 10 s, more often in a run too short for a
/// handful of rewrites (`--quick`).
fn reload_every(duration: Duration) -> Duration {
    Duration::from_secs(10).min(duration / 5)
}

/// How long the warm-up lasts before the first memory sample: pools and caches fill
/// first, and growth is measured from there.
fn warm_up(duration: Duration) -> Duration {
    Duration::from_secs(60).min(duration / 10)
}

/// What a client presents, and whether it must get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Anonymous,
    Nkey,
    Password,
    TokenRs256,
    TokenEs256,
    Certificate,
    Hostile,
    Trap,
}

impl Kind {
    const VALID: [Kind; 6] = [
        Kind::Anonymous,
        Kind::Nkey,
        Kind::Password,
        Kind::TokenRs256,
        Kind::TokenEs256,
        Kind::Certificate,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Anonymous => "anonymous (noauth)",
            Kind::Nkey => "NKey",
            Kind::Password => "username and password",
            Kind::TokenRs256 => "oauth2 RS256 token",
            Kind::TokenEs256 => "oauth2 ES256 token",
            Kind::Certificate => "client certificate (mtls)",
            Kind::Hostile => "hostile token",
            Kind::Trap => "trapping plugin",
        }
    }

    fn admitted(self) -> bool {
        !matches!(self, Kind::Hostile | Kind::Trap)
    }

    /// The kind of connect number `i`.
    fn of(i: usize) -> Kind {
        if i % TRAP_EVERY == TRAP_EVERY - 1 {
            Kind::Trap
        } else if i % HOSTILE_EVERY == HOSTILE_EVERY - 1 {
            Kind::Hostile
        } else {
            Kind::VALID[i % Kind::VALID.len()]
        }
    }
}

/// Outcomes of one kind of client.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub admitted: usize,
    pub refused: usize,
    pub failed: usize,
    /// Outcomes other than expected, by what happened.
    pub unexpected: BTreeMap<String, usize>,
}

/// Memory, descriptors and threads of the callout process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss: u64,
    /// The anonymous part of `rss` (heap, stacks, plugin memories): what a leak grows.
    /// The rest is file pages: the binary and the mapped plugin cache.
    pub anon: u64,
    pub fds: usize,
    pub threads: u64,
}

impl Sample {
    fn of(pid: u32) -> Result<Self> {
        let status = procs::Status::of(pid)?;
        Ok(Self {
            rss: status.number("VmRSS")? * 1024,
            anon: status.number("RssAnon")? * 1024,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .context("cannot list the callout's descriptors")?
                .count(),
            threads: status.number("Threads")?,
        })
    }

    fn max(self, other: Sample) -> Sample {
        Sample {
            rss: self.rss.max(other.rss),
            anon: self.anon.max(other.anon),
            fds: self.fds.max(other.fds),
            threads: self.threads.max(other.threads),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub duration: Duration,
    pub concurrency: usize,
    pub reload_every: Duration,
    pub warm_up: Duration,
    pub by_kind: BTreeMap<Kind, Tally>,
    /// Right after start, after the warm-up, at the end, and the largest seen.
    pub first: Sample,
    pub start: Sample,
    pub end: Sample,
    pub peak: Sample,
    /// A sample every tenth of the run: whether growth levels off.
    pub series: Vec<Sample>,
    /// Authorization requests the callout received, per second of the soak.
    pub decisions_per_sec: f64,
    pub reloads_ok: f64,
    pub reloads_refused: f64,
    pub traps: f64,
    /// What the watchers on the two servers saw.
    pub requests: Count,
}

impl Report {
    pub fn rss_growth(&self) -> f64 {
        growth(self.start.rss as f64, self.end.rss as f64)
    }

    /// RSS growth over the second half of the run: a leak keeps growing there, filling
    /// pools and arenas does not.
    pub fn late_rss_growth(&self) -> f64 {
        match self.series.get(self.series.len() / 2) {
            Some(mid) => growth(mid.rss as f64, self.end.rss as f64),
            None => 0.0,
        }
    }

    pub fn anon_growth(&self) -> f64 {
        growth(self.start.anon as f64, self.end.anon as f64)
    }

    pub fn fd_growth(&self) -> f64 {
        growth(self.start.fds as f64, self.end.fds as f64)
    }

    pub fn unexpected(&self) -> usize {
        self.by_kind
            .values()
            .flat_map(|t| t.unexpected.values())
            .sum()
    }
}

fn growth(from: f64, to: f64) -> f64 {
    if from > 0.0 { to / from - 1.0 } else { 0.0 }
}

/// The two servers, the callout's config and files, and what the clients present.
struct Soak {
    main: NatsServer,
    mtls: NatsServer,
    keys: Keys,
    /// The OpenID provider's issuer, for the config's `jwks`.
    issuer: String,
    ops_port: u16,
    config: PathBuf,
    pki: Pki,
    device: Arc<nkeys::KeyPair>,
    dir: tempfile::TempDir,
}

/// Certificates: the ops CA issues the server's and the callout's own, the device CA
/// the gateway's (and is the callout's `mtls.ca_file`).
struct Pki {
    ops_ca_file: PathBuf,
    device_ca_file: PathBuf,
    server: Files,
    callout: Files,
    gateway: Files,
    clients_ca: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Result<Self> {
        let ops = Ca::new("Ops CA")?;
        let devices = Ca::new("Device CA")?;
        Ok(Self {
            ops_ca_file: pki::write_bundle(&dir.join("ops-ca.pem"), &[&ops.pem])?,
            device_ca_file: pki::write_bundle(&dir.join("device-ca.pem"), &[&devices.pem])?,
            clients_ca: pki::write_bundle(&dir.join("clients-ca.pem"), &[&devices.pem, &ops.pem])?,
            server: ops.server()?.write(dir, "server")?,
            callout: ops.client("nats-callout")?.write(dir, "callout")?,
            gateway: devices.client("soak-gateway")?.write(dir, "gateway")?,
        })
    }
}

impl Soak {
    fn start(fx: &Fixture) -> Result<Self> {
        let keys = Keys::generate();
        let dir = tempfile::tempdir()?;
        keys.write(dir.path())?;
        let pki = Pki::new(dir.path())?;
        let main = NatsServer::start(&callout_server_config(&keys, false))?;
        let tls = format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, timeout: 2 }}\n",
            pki.server.cert, pki.server.key, pki.clients_ca
        );
        let mtls = NatsServer::start(&format!(
            "server_name: soak-mtls\n{tls}{}",
            callout_server_config(&keys, false)
        ))?;
        let device = Arc::new(nkeys::KeyPair::new_user());
        let soak = Self {
            main,
            mtls,
            keys,
            issuer: fx.oidc.issuer.clone(),
            ops_port: free_port()?,
            config: dir.path().join("callout.yaml"),
            pki,
            device,
            dir,
        };
        std::fs::write(&soak.config, soak.callout_yaml(0, false))?;
        Ok(soak)
    }

    /// The callout, serving the config as it stands.
    fn spawn_callout(&self) -> Result<Process> {
        Process::spawn_self(
            "nats-callout",
            &[
                "serve-callout",
                "--config",
                &self.config.display().to_string(),
            ],
            &self.dir.path().join("callout.log"),
            Duration::from_secs(30),
        )
    }

    fn mtls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.mtls.port)
    }

    /// The callout's config; `variant` changes the anonymous clients' subjects (so each
    /// rewrite is a real change), `broken` makes it unparseable.
    fn callout_yaml(&self, variant: usize, broken: bool) -> String {
        if broken {
            return "permissions: [ this is not a config\n".into();
        }
        let anonymous = if variant.is_multiple_of(2) {
            "public.>"
        } else {
            "public.soak.>"
        };
        format!(
            r#"nats:
{main}  - name: mtls
    url: "{mtls}"
    nkey_seed_file: nkey-seed
    tls: {{ ca_file: {ops_ca:?}, cert_file: {cert:?}, key_file: {key:?} }}
issuer_seed_file: issuer-seed
plugin_dir: "{plugins}"
http_listen: "127.0.0.1:{ops_port}"
decision_cache: {{ ttl: 0s }}
jwks:
  issuer: "{issuer}"
  audience: ["{AUDIENCE}"]
  require_typ: at+jwt
mtls:
  ca_file: {device_ca:?}
plugins:
  - {{ name: trap, builtin: misbehave, settings: {{ behaviour: trap }} }}
routes:
  - {{ name: trap, match: {{ credentials: user-password, username: trap }}, plugins: [trap] }}
  - {{ name: people, match: {{ credentials: user-password }}, plugins: [password] }}
  - {{ name: services, match: {{ credentials: bearer-token }}, plugins: [oauth2] }}
  - {{ name: devices, match: {{ credentials: nkey }}, plugins: [nkey] }}
  - {{ name: machines, match: {{ credentials: certificate }}, plugins: [mtls] }}
  - {{ name: anonymous, match: {{ credentials: none }}, plugins: [noauth] }}
permissions:
  nkey:
    soak-device:
      public_key: {device}
      account: DEVICES
      permissions: {{ pub: {{ allow: ["device-state.{{{{name}}}}"] }} }}
{OAUTH2_DEVICES}  password:
    soak-user:
      password_hash: "{S3CRET_BCRYPT}"
      account: DEVICES
      permissions: {{ pub: {{ allow: ["device-state.{{{{username}}}}"] }} }}
  mtls:
    soak-gateway:
      identity: "CN=soak-gateway"
      account: DEVICES
      permissions: {{ pub: {{ allow: ["gateways.{{{{cert.cn}}}}.>"] }} }}
  noauth:
    account: ANONYMOUS
    permissions: {{ pub: {{ allow: ["{anonymous}"] }}, sub: {{ allow: ["{anonymous}"] }} }}
"#,
            main = nats_entry("main", &self.main.url()),
            mtls = self.mtls_url(),
            ops_ca = self.pki.ops_ca_file,
            cert = self.pki.callout.cert,
            key = self.pki.callout.key,
            plugins = plugin_dir().display(),
            ops_port = self.ops_port,
            issuer = self.issuer,
            device_ca = self.pki.device_ca_file,
            device = self.device.public_key(),
        )
    }

    /// A series of the callout's `/metrics` (see [`metric`]); 0 when unreadable.
    fn metric(&self, series: &str) -> f64 {
        metric(self.ops_port, series).unwrap_or(0.0)
    }

    /// Options of a client presenting `cert` to the mTLS server.
    fn tls_options(&self, cert: &Files) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(self.pki.ops_ca_file.clone())
            .add_client_certificate(cert.cert.clone(), cert.key.clone())
    }
}

/// Tokens no callout may accept: not a JWT, a signature changed, `alg: none`, expired,
/// a critical header it does not know, another audience, and one over the size cap.
async fn hostile_tokens(fx: &Fixture) -> Result<Vec<String>> {
    let good = fx.token(Alg::Rs256).await?;
    let mut tampered = good.clone();
    let last = tampered.pop().context("empty token")?;
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = good.split('.').nth(1).context("token without payload")?;
    let none = format!(
        "{}.{payload}.",
        b64(json!({ "alg": "none", "typ": "at+jwt" }))
    );
    let now = nats_callout::pipeline::request::unix_now();
    let claims = |exp: i64, aud: &str| {
        json!({
            "iss": fx.oidc.issuer, "aud": aud, "sub": "soak-hostile", "iat": now - 60,
            "exp": exp, "device_id": "soak-hostile", "client_id": "soak-hostile",
        })
    };
    let typ = json!({ "typ": "at+jwt" });
    let expired = fx
        .oidc
        .sign("rsa-1", typ.clone(), claims(now - 3600, AUDIENCE))
        .await?;
    let other_audience = fx
        .oidc
        .sign("rsa-1", typ, claims(now + 3600, "someone-else"))
        .await?;
    let critical = fx
        .oidc
        .sign(
            "rsa-1",
            json!({ "typ": "at+jwt", "crit": ["soak"], "soak": true }),
            claims(now + 3600, AUDIENCE),
        )
        .await?;
    // JWT-shaped, 3 KiB of parts that decode to nothing. (nats-server's 4 KiB control
    // line caps what a client can send; the 8 KiB token cap is unit-tested.)
    let absurd = format!(
        "{}.{}.{}",
        b64(json!({ "alg": "RS256" })),
        "A".repeat(2000),
        "B".repeat(800)
    );
    Ok(vec![
        "not-a-jwt".into(),
        tampered,
        none,
        expired,
        critical,
        other_audience,
        absurd,
    ])
}

/// Run the soak.
pub async fn run(opts: &Options) -> Result<Report> {
    let fx = Fixture::start()?;
    let soak = Soak::start(&fx)?;
    let mut callout = soak.spawn_callout()?;
    let callout_creds = |o: async_nats::ConnectOptions| -> Result<async_nats::ConnectOptions> {
        Ok(o.nkey(soak.keys.callout.seed()?))
    };
    let watchers = [
        Watcher::start(
            &soak.main.url(),
            callout_creds(async_nats::ConnectOptions::new())?,
        )
        .await?,
        Watcher::start(
            &soak.mtls_url(),
            callout_creds(soak.tls_options(&soak.pki.callout))?,
        )
        .await?,
    ];
    let pid = callout.pid();
    let first = Sample::of(pid)?;

    let tokens = Arc::new([fx.token(Alg::Rs256).await?, fx.token(Alg::Es256).await?]);
    let hostile = Arc::new(hostile_tokens(&fx).await?);
    let port = soak.main.port;
    let clients = Arc::new(Clients {
        anonymous: Client::new(port, Credential::Anonymous),
        nkey: Client::new(port, Credential::Nkey(soak.device.clone())),
        password: Client::new(
            port,
            Credential::UserPass("soak-user".into(), "s3cret".into()),
        ),
        rs256: Client::new(port, Credential::Token(tokens[0].clone())),
        es256: Client::new(port, Credential::Token(tokens[1].clone())),
        trap: Client::new(port, Credential::UserPass("trap".into(), "x".into())),
        hostile: hostile
            .iter()
            .map(|t| Client::new(port, Credential::Token(t.clone())))
            .collect(),
        mtls_url: soak.mtls_url(),
        mtls: soak.tls_options(&soak.pki.gateway),
    });

    let requests_before = soak.metric("auth_requests_total");
    let started = Instant::now();
    let deadline = started + opts.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            let (clients, next) = (clients.clone(), next.clone());
            tokio::spawn(async move {
                let mut tallies: BTreeMap<Kind, Tally> = BTreeMap::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let kind = Kind::of(i);
                    let outcome = clients.connect(kind, i).await;
                    let tally = tallies.entry(kind).or_default();
                    match &outcome {
                        Outcome::Admitted => tally.admitted += 1,
                        Outcome::Refused(_) => tally.refused += 1,
                        Outcome::Failed(_) => tally.failed += 1,
                    }
                    let expected = (outcome == Outcome::Admitted) == kind.admitted();
                    if !expected {
                        let what = match outcome {
                            Outcome::Admitted => "admitted".to_owned(),
                            Outcome::Refused(e) => format!("refused: {e}"),
                            Outcome::Failed(e) => format!("failed: {e}"),
                        };
                        *tally.unexpected.entry(what).or_default() += 1;
                    }
                }
                tallies
            })
        })
        .collect();

    // Meanwhile: rewrite the config, sample memory and descriptors.
    let every = reload_every(opts.duration);
    let warm = warm_up(opts.duration);
    let (mut start, mut peak) = (None, first);
    let mut series = Vec::new();
    let mut next_sample = started + opts.duration / 10;
    let mut rewrites: usize = 0;
    let mut next_rewrite = started + every;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        if now >= next_rewrite {
            rewrites += 1;
            let broken = rewrites.is_multiple_of(BROKEN_EVERY);
            nats_callout_tests::write_atomically(
                &soak.config,
                soak.callout_yaml(rewrites, broken),
            )?;
            next_rewrite += every;
        }
        let sample = Sample::of(pid)?;
        peak = peak.max(sample);
        if now >= next_sample {
            series.push(sample);
            next_sample += opts.duration / 10;
        }
        if start.is_none() && now >= started + warm {
            start = Some(sample);
        }
    }
    let mut by_kind: BTreeMap<Kind, Tally> = BTreeMap::new();
    for w in workers {
        for (kind, t) in w.await.context("a soak worker panicked")? {
            let all = by_kind.entry(kind).or_default();
            all.admitted += t.admitted;
            all.refused += t.refused;
            all.failed += t.failed;
            for (k, v) in t.unexpected {
                *all.unexpected.entry(k).or_default() += v;
            }
        }
    }
    let elapsed = started.elapsed();
    // Answers still on their way, and the last config's reload.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = Sample::of(pid)?;
    let mut requests = Count::default();
    for w in &watchers {
        let c = w.take()?;
        requests.requests += c.requests;
        requests.answered_twice += c.answered_twice;
        requests.unanswered += c.unanswered;
    }
    callout.check_alive()?;
    let report = Report {
        duration: elapsed,
        concurrency: opts.concurrency,
        reload_every: every,
        warm_up: warm,
        by_kind,
        first,
        start: start.unwrap_or(first),
        end,
        peak,
        series,
        decisions_per_sec: (soak.metric("auth_requests_total") - requests_before)
            / elapsed.as_secs_f64(),
        reloads_ok: soak.metric(r#"config_reloads_total{result="ok"}"#),
        reloads_refused: soak.metric(r#"config_reloads_total{result="error"}"#),
        traps: soak.metric(r#"plugin_traps_total{plugin="trap"}"#),
        requests,
    };
    if report.reloads_ok < 1.0 {
        bail!(
            "no reload took effect in {:.0} s (logs in {})",
            elapsed.as_secs_f64(),
            soak.dir.path().display()
        );
    }
    Ok(report)
}

/// One client per kind (tokens rotate through the hostile set).
struct Clients {
    anonymous: Client,
    nkey: Client,
    password: Client,
    rs256: Client,
    es256: Client,
    trap: Client,
    hostile: Vec<Client>,
    mtls_url: String,
    mtls: async_nats::ConnectOptions,
}

impl Clients {
    async fn connect(&self, kind: Kind, i: usize) -> Outcome {
        let raw = match kind {
            Kind::Anonymous => &self.anonymous,
            Kind::Nkey => &self.nkey,
            Kind::Password => &self.password,
            Kind::TokenRs256 => &self.rs256,
            Kind::TokenEs256 => &self.es256,
            Kind::Trap => &self.trap,
            Kind::Hostile => &self.hostile[(i / HOSTILE_EVERY) % self.hostile.len()],
            Kind::Certificate => {
                // A TLS handshake is not what the raw client does: async-nats, once.
                return match nats_callout_tests::connect(&self.mtls_url, self.mtls.clone()).await {
                    Ok(client) => {
                        drop(client);
                        Outcome::Admitted
                    }
                    Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                        Outcome::Refused(e.to_string())
                    }
                    Err(e) => Outcome::Failed(e.to_string()),
                };
            }
        };
        raw.connect_once().await.outcome
    }
}
