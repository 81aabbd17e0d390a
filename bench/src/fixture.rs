//! What every part shares: the OpenID provider with its clients, an NKey device, the
//! callout configuration, and the three kinds of targets a client connects to
//! (nats-server with static users, with the null callout, with nats-callout).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nats_callout_tests::oidc::{Oidc, client, opaque_client};
use nats_callout_tests::{Keys, NatsServer, callout_server_config, plugin_dir};
use serde_json::json;

use crate::procs::{self, Process};

/// `aud` of the provider's access tokens, and what the callout requires.
pub const AUDIENCE: &str = "nats-callout";
/// Lifetime of the provider's tokens: longer than a full run, so that no token expires
/// mid-measurement (the callout's `max_token_lifetime` default is 24 h).
const TOKEN_TTL_SECS: u64 = 3600;
/// OIDC clients for the reconnect storm: a handful of distinct tokens, half RS256, half
/// ES256, as a fleet of devices with different credentials would present.
pub const STORM_CLIENTS: usize = 8;
/// How long a child process may take to load plugins, connect and subscribe.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Token signing algorithms of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn client_id(self) -> &'static str {
        match self {
            Alg::Rs256 => "bench-rs256",
            Alg::Es256 => "bench-es256",
        }
    }
}

/// The password of the password route's one user, and its bcrypt hash at cost 10 (the
/// cost `nats-callout password hash` makes by default).
pub const BENCH_PASSWORD: &str = "bench-password";
pub const BENCH_PASSWORD_HASH: &str =
    "$2b$10$OvHlXCsv71ftZCrRVrfkg.n70qtppbfzAZ5zMrzkVZ04ldM3.IEUm";

/// The provider's client whose access tokens are opaque (part 5).
pub const OPAQUE_CLIENT: &str = "bench-opaque";
/// The client nats-callout's introspection plugin authenticates as; its secret is
/// `<id>-secret`, as for every client of the fixture.
pub const INTROSPECTOR: &str = "bench-introspector";

/// The OpenID provider and the identities the benchmark's clients use.
pub struct Fixture {
    pub oidc: Oidc,
    /// The NKey device of the nkey mode.
    pub device: Arc<nkeys::KeyPair>,
}

impl Fixture {
    /// Start the provider (node, `tests/oidc/provider.mjs`) with RS256 and ES256 keys.
    pub fn start() -> Result<Self> {
        let mut clients = vec![
            client(
                Alg::Rs256.client_id(),
                "RS256",
                json!({ "device_id": "bench-rs256" }),
            ),
            client(
                Alg::Es256.client_id(),
                "ES256",
                json!({ "device_id": "bench-es256" }),
            ),
        ];
        // Part 5: a device with opaque tokens, and the callout's own client that
        // introspects them.
        clients.push(opaque_client(
            OPAQUE_CLIENT,
            json!({ "device_id": OPAQUE_CLIENT }),
        ));
        clients.push(client(INTROSPECTOR, "RS256", json!({})));
        for i in 0..STORM_CLIENTS {
            let alg = if i % 2 == 0 { "RS256" } else { "ES256" };
            let id = format!("storm-{i}");
            clients.push(client(&id, alg, json!({ "device_id": id })));
        }
        let oidc = Oidc::start_with(
            json!({
                "generate": [ { "kid": "rsa-1", "alg": "RS256" }, { "kid": "ec-1", "alg": "ES256" } ],
                "audience": AUDIENCE,
                "ttl": TOKEN_TTL_SECS,
                "clients": clients,
            }),
            0,
        )
        .context("cannot start the OpenID provider fixture (run scripts/setup)")?;
        Ok(Self {
            oidc,
            device: Arc::new(nkeys::KeyPair::new_user()),
        })
    }

    /// A fresh access token signed with `alg`.
    pub async fn token(&self, alg: Alg) -> Result<String> {
        self.oidc.token(alg.client_id()).await
    }

    /// A fresh opaque access token (part 5's introspection).
    pub async fn opaque_token(&self) -> Result<String> {
        self.oidc.token(OPAQUE_CLIENT).await
    }

    /// Tokens of the storm clients (distinct credentials, mixed algorithms).
    pub async fn storm_tokens(&self) -> Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(STORM_CLIENTS);
        for i in 0..STORM_CLIENTS {
            tokens.push(self.oidc.token(&format!("storm-{i}")).await?);
        }
        Ok(tokens)
    }

    /// The callout's YAML: noauth, nkey (one device) and oauth2 (any token with a
    /// `device_id` claim) enabled; the decision cache at its default (60 s) or off.
    /// Seeds are read from files beside the config (see [`Keys::write`]).
    pub fn callout_yaml(&self, nats_url: &str, cache: bool, http_listen: &str) -> String {
        let cache = if cache {
            "" // the default: ttl 60s, 100000 entries
        } else {
            "decision_cache: { ttl: 0s }\n"
        };
        format!(
            r#"{head}{cache}jwks:
  issuer: "{issuer}"
  audience: ["{AUDIENCE}"]
  require_typ: at+jwt
permissions:
  nkey:
    bench-device:
      public_key: {device}
      account: DEVICES
      permissions:
        pub: {{ allow: ["device-state.{{{{name}}}}", "_INBOX.>"] }}
        sub: {{ allow: ["device-commands.{{{{name}}}}", "_INBOX.>"] }}
        resp: {{ max: 1, ttl: 5s }}
{OAUTH2_DEVICES}  password:
    bench-user:
      password_hash: "{BENCH_PASSWORD_HASH}"
      account: DEVICES
      permissions:
        pub: {{ allow: ["device-state.{{{{username}}}}", "_INBOX.>"] }}
        sub: {{ allow: ["device-commands.{{{{username}}}}", "_INBOX.>"] }}
  noauth:
    account: ANONYMOUS
    permissions: {{ pub: {{ allow: ["public.>"] }}, sub: {{ allow: ["public.>"] }} }}
"#,
            head = callout_head(nats_url, http_listen),
            issuer = self.oidc.issuer,
            device = self.device.public_key(),
        )
    }
}

/// The oauth2 permissions of every token client of the benchmark: one entry by
/// `device_id` (a `permissions:` section's `oauth2` key, indented for it).
pub const OAUTH2_DEVICES: &str = r#"  oauth2:
    devices:
      subject: "*"
      claims: { device_id: "*" }
      account: DEVICES
      permissions:
        pub: { allow: ["device-state.{{claims.device_id}}", "_INBOX.>"] }
        sub: { allow: ["device-commands.{{claims.device_id}}", "_INBOX.>"] }
"#;

/// What every callout config of the benchmark starts with: its NATS connection, the
/// seeds beside the config, the built plugins, the operations listener.
pub fn callout_head(nats_url: &str, http_listen: &str) -> String {
    format!(
        "nats:\n{}issuer_seed_file: issuer-seed\nplugin_dir: \"{}\"\nhttp_listen: \"{http_listen}\"\n",
        nats_entry("main", nats_url),
        plugin_dir().display()
    )
}

/// One entry of a callout config's `nats:` list, logging in with the seed beside it.
pub fn nats_entry(name: &str, url: &str) -> String {
    format!("  - {{ name: {name}, url: \"{url}\", nkey_seed_file: nkey-seed }}\n")
}

/// The baseline callouts' names, as the report looks them up.
pub const NULL: &str = "null callout";
pub const VERIFYING_NULL: &str = "verifying null callout";

/// A nats-server a client connects to, and the process answering its auth callout.
pub struct Target {
    pub name: String,
    pub server: NatsServer,
    pub responder: Option<Process>,
    /// The callout's operations listener (`/metrics`), when the responder is nats-callout.
    pub metrics_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Target {
    /// nats-server with one static user (`bench`/`bench`): no callout at all.
    pub fn static_users() -> Result<Self> {
        let server =
            NatsServer::start("authorization { users: [ { user: bench, password: bench } ] }")?;
        Ok(Self {
            name: "nats-server static users".into(),
            server,
            responder: None,
            metrics_port: None,
            dir: tempfile::tempdir()?,
        })
    }

    /// nats-server with auth callout, answered by the null responder (a child process)
    /// that burns `busy` of CPU per request first (normally zero); `verify`: the
    /// verifying null (see [`crate::children::null_responder`]).
    pub fn null_callout(busy: Duration, verify: bool) -> Result<Self> {
        let keys = Keys::generate();
        let dir = tempfile::tempdir()?;
        keys.write(dir.path())?;
        let server = NatsServer::start(&callout_server_config(&keys, false))?;
        let url = server.url();
        let seed = |f: &str| dir.path().join(f).display().to_string();
        let busy_us = busy.as_micros().to_string();
        let (issuer_seed, nkey_seed) = (seed("issuer-seed"), seed("nkey-seed"));
        let mut args = vec![
            "null-responder",
            "--url",
            &url,
            "--nkey-seed",
            &nkey_seed,
            "--issuer-seed",
            &issuer_seed,
            "--account",
            "ANONYMOUS",
            "--busy-us",
            &busy_us,
        ];
        if verify {
            args.push("--verify");
        }
        let responder = Process::spawn_self(
            "null responder",
            &args,
            &dir.path().join("null.log"),
            READY_WITHIN,
        )?;
        Ok(Self {
            name: if verify { VERIFYING_NULL } else { NULL }.into(),
            server,
            responder: Some(responder),
            metrics_port: None,
            dir,
        })
    }

    /// nats-server with auth callout, answered by nats-callout (a child process running
    /// what `nats-callout run` runs) with the decision cache on (default) or off, and
    /// the built-in plugins as WebAssembly (as configured) or compiled natively.
    pub fn nats_callout(fx: &Fixture, cache: bool, native: bool) -> Result<Self> {
        let name = format!(
            "nats-callout (cache {}{})",
            if cache { "on" } else { "off" },
            if native { ", native plugins" } else { "" }
        );
        Self::nats_callout_with(name, native, |_, url, listen| {
            Ok(fx.callout_yaml(url, cache, listen))
        })
    }

    /// nats-server with auth callout, answered by nats-callout configured by `yaml`,
    /// given the target's directory (for files the config names), nats-server's URL
    /// and the operations listener's address.
    pub fn nats_callout_with(
        name: String,
        native: bool,
        yaml: impl FnOnce(&Path, &str, &str) -> Result<String>,
    ) -> Result<Self> {
        let keys = Keys::generate();
        let dir = tempfile::tempdir()?;
        keys.write(dir.path())?;
        let server = NatsServer::start(&callout_server_config(&keys, false))?;
        let metrics_port = nats_callout_tests::free_port()?;
        let config = dir.path().join("callout.yaml");
        let listen = format!("127.0.0.1:{metrics_port}");
        std::fs::write(&config, yaml(dir.path(), &server.url(), &listen)?)?;
        let config_arg = config.display().to_string();
        let mut args = vec!["serve-callout", "--config", &config_arg];
        if native {
            args.push("--native");
        }
        let responder = Process::spawn_self(
            "nats-callout",
            &args,
            &dir.path().join("callout.log"),
            READY_WITHIN,
        )?;
        Ok(Self {
            name,
            server,
            responder: Some(responder),
            metrics_port: Some(metrics_port),
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// CPU seconds so far of nats-server and of the responder (0 without one).
    pub fn cpu(&self) -> Result<(f64, f64)> {
        let server = procs::cpu_seconds(self.server.pid())?;
        let responder = match &self.responder {
            Some(p) => procs::cpu_seconds(p.pid())?,
            None => 0.0,
        };
        Ok((server, responder))
    }

    /// Fail if the responder died.
    pub fn check_alive(&mut self) -> Result<()> {
        match &mut self.responder {
            Some(p) => p.check_alive(),
            None => Ok(()),
        }
    }

    /// A counter from the callout's `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> Result<f64> {
        metric(self.metrics_port.context("no metrics listener")?, name)
    }

    /// Where this target's logs are, for error messages.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A series from the `/metrics` of the operations listener on `port`, labels included
/// in `series` as Prometheus prints them (`name{label="value"}`); 0 when absent.
pub fn metric(port: u16, series: &str) -> Result<f64> {
    Ok(http_get(port, "/metrics")?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0))
}

/// A plain HTTP/1.0 GET on loopback (operations listener, provider JWKS); the body.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// Built plugin path for a mode (`target/plugins/<mode>.wasm`).
pub fn plugin_path(mode: &str) -> PathBuf {
    plugin_dir().join(format!("{mode}.wasm"))
}
