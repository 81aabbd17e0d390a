//! Test harness: a real nats-server on a free port, generated keys, the callout host
//! started in-process from a YAML config, and a raw NATS protocol client for the
//! cases a well-behaved client library refuses to produce (wrong signatures).
//!
//! Every process is killed when its handle drops (also when a test panics), and with
//! `PR_SET_PDEATHSIG` when the test process itself dies.

pub mod inject;
pub mod mqtt;
pub mod oidc;
pub mod ops;
pub mod pki;
pub mod raw;
pub mod relay;
pub mod web;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nats_callout::nats::service;
use nats_callout::ops::app::App;

/// Ask the kernel to kill the child `cmd` spawns when this process dies (SIGKILL), so
/// no server outlives a crashed or aborted test or benchmark run.
pub fn dies_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Send `signal` (e.g. `libc::SIGTERM`) to `child`, without waiting.
pub fn signal(child: &Child, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill(2) on our own unreaped child's pid; no memory is touched.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Wait, without blocking the async runtime, until `child` (`what`, for the error) has
/// exited, at most `within`; its exit status.
pub async fn exited(
    child: &mut Child,
    within: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("{what} still runs after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The workspace root (tests/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// nats-server installed by `scripts/setup`, or `NATS_SERVER_BIN`.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/venv/bin/nats-server"))
}

/// Built plugins (`target/plugins/<name>.wasm`), or `AUTH_CALLOUT_PLUGIN_DIR`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os(nats_callout::ops::config::PLUGIN_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/plugins"))
}

/// Log to the test output (`RUST_LOG` to tune); safe to call from every test. Also
/// installs the TLS crypto backend the HTTP client needs.
pub fn init_tracing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("nats_callout=debug")),
        )
        .with_test_writer()
        .try_init();
}

/// A port nobody listens on right now. The tiny race with other processes is accepted:
/// nats-server fails loudly if it loses it, and the tests then say so.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `s3cret`, bcrypt cost 4: the tests verify hashes for real, but need not wait for
/// production costs (BENCHMARKS.md measures cost 10).
pub const S3CRET_BCRYPT: &str = "$2b$04$qlJ4LcpOAB6XT5EsktDSZ.FIJGEdd7lUH2/AXq872Avl2JGyY.lfm";

/// The keys of one test deployment.
pub struct Keys {
    pub callout: nkeys::KeyPair,
    pub issuer: nkeys::KeyPair,
    pub xkey: nkeys::XKey,
}

impl Keys {
    pub fn generate() -> Self {
        Self {
            callout: nkeys::KeyPair::new_user(),
            issuer: nkeys::KeyPair::new_account(),
            xkey: nkeys::XKey::new(),
        }
    }

    /// Write the seeds as files into `dir`, like `nats-callout keys generate`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("nkey-seed"), self.callout.seed()?)?;
        std::fs::write(dir.join("issuer-seed"), self.issuer.seed()?)?;
        std::fs::write(dir.join("xkey-seed"), self.xkey.seed()?)?;
        Ok(())
    }
}

/// Replace a file the way an operator's tooling should: write beside it, then rename, so
/// that a watcher never reads it half-written.
pub fn write_atomically(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A running nats-server, killed on drop.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// Start nats-server with `config` (the `listen` line is added here).
    pub fn start(config: &str) -> Result<Self> {
        Self::start_on(free_port()?, config)
    }

    /// Start nats-server on `port`, e.g. the port of a server a test stopped.
    pub fn start_on(port: u16, config: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nats-server.conf");
        let mut f = std::fs::File::create(&conf)?;
        writeln!(f, "listen: 127.0.0.1:{port}\n{config}")?;
        drop(f);
        let child = Self::spawn(dir.path())?;
        let mut server = Self { child, port, dir };
        server.wait_listening(Duration::from_secs(15))?;
        Ok(server)
    }

    /// Run nats-server on the config file in `dir`, logging (appending) beside it.
    fn spawn(dir: &Path) -> Result<Child> {
        let bin = nats_server_bin();
        if !bin.exists() {
            bail!(
                "nats-server not found at {}: run scripts/setup (or set NATS_SERVER_BIN)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("nats-server.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(dir.join("nats-server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        dies_with_parent(&mut cmd);
        cmd.spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
    }

    /// Kill the server (clients see the connection drop); [`NatsServer::restart`] brings
    /// it back on the same port with the same config.
    pub fn stop(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Stop the server if it runs, and start it again on the same ports.
    ///
    /// Free ports come from the kernel's ephemeral range, the range client connections
    /// get their local ports from: while the server was down, one of its ports (client,
    /// cluster, monitoring) may have become a connection's local port (a storm of
    /// connects makes it likely), and the start then fails to bind it. That connection
    /// is short-lived, so such a start is tried again until it is gone.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.stop()?;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let logged = self.log().len();
            self.child = Self::spawn(self.dir.path())?;
            let result = self.wait_listening(deadline.saturating_duration_since(Instant::now()));
            let port_taken = result.is_err()
                && self.child.try_wait()?.is_some()
                && self
                    .log()
                    .get(logged..)
                    .is_some_and(|tail| tail.contains("address already in use"));
            if !port_taken || Instant::now() >= deadline {
                return result;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("nats-server exited with {status}: {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "nats-server did not listen within {timeout:?}: {}",
            self.log()
        )
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Process id of the running server (the benchmark reads its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server config for config-mode auth callout: the callout's own user in account
/// `AUTH`, a `platform` user in `DEVICES` (both bypass the callout), target accounts
/// `DEVICES` and `ANONYMOUS`.
pub fn callout_server_config(keys: &Keys, with_xkey: bool) -> String {
    let xkey = if with_xkey {
        format!("xkey: {}", keys.xkey.public_key())
    } else {
        String::new()
    };
    format!(
        r#"
accounts {{
  AUTH {{ users: [ {{ nkey: {callout} }} ] }}
  DEVICES {{ users: [ {{ user: platform, password: platform }} ] }}
  ANONYMOUS {{}}
}}
authorization {{
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ {callout}, platform ]
    {xkey}
  }}
}}
"#,
        callout = keys.callout.public_key(),
        issuer = keys.issuer.public_key(),
    )
}

/// The callout host running in-process (as `nats-callout run` runs it), stopped on drop.
pub struct Callout {
    app: Option<App>,
    pub dir: tempfile::TempDir,
}

impl Callout {
    /// Start the host from `yaml`. The seeds (`nkey-seed`, `issuer-seed`, `xkey-seed`)
    /// are written beside the config; `plugin_dir` and an ephemeral `http_listen` are
    /// appended unless the YAML sets them.
    pub async fn start(keys: &Keys, yaml: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        keys.write(dir.path())?;
        Self::start_in(dir, yaml).await
    }

    /// Start the host from `yaml`, written as `callout.yaml` into `dir`, beside the
    /// files it names (an operator-mode deployment's, say).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Result<Self> {
        let path = dir.path().join("callout.yaml");
        std::fs::write(&path, with_test_defaults(yaml))?;
        let app = App::start(&path).await?;
        if !app.wait_ready(Duration::from_secs(15)).await {
            bail!("callout did not subscribe within 15s");
        }
        Ok(Self {
            app: Some(app),
            dir,
        })
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    /// Path of the config file, to edit it for hot-reload tests.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("callout.yaml")
    }
}

/// Add `plugin_dir` and `http_listen` for tests unless the YAML has them.
pub fn with_test_defaults(yaml: &str) -> String {
    let mut out = yaml.to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if !yaml.contains("plugin_dir:") {
        out.push_str(&format!("plugin_dir: {}\n", plugin_dir().display()));
    }
    if !yaml.contains("http_listen:") {
        out.push_str("http_listen: 127.0.0.1:0\n");
    }
    out
}

impl Drop for Callout {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop();
        }
    }
}

/// Connect with async-nats, failing fast instead of retrying (auth errors are results
/// here, not transient faults).
pub async fn connect(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(Some(0))
        .connect(url)
        .await
}

/// Connect and also collect the server's asynchronous errors (permission violations).
pub async fn connect_watching(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    });
    Ok((connect(url, options).await?, rx))
}

/// Wait for a server error that contains `needle`.
pub async fn expect_server_error(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> Result<String> {
    let deadline = Duration::from_secs(15);
    loop {
        match tokio::time::timeout(deadline, errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains(&needle.to_lowercase()) => return Ok(e),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("connection closed before error {needle:?}"),
            Err(_) => bail!("no server error containing {needle:?} within {deadline:?}"),
        }
    }
}

/// The `platform` user of [`callout_server_config`] (account DEVICES, bypasses the callout).
pub async fn platform(url: &str) -> Result<async_nats::Client> {
    Ok(connect(
        url,
        async_nats::ConnectOptions::with_user_and_password("platform".into(), "platform".into()),
    )
    .await?)
}

/// Wait until nats-server has acted on everything `client` sent, its subscriptions
/// included ([`service::round_trip`]): `flush` only writes the socket, so another
/// client's publish right after it can still reach the server first. `client` must be
/// allowed `_INBOX.>`, as the `platform` user is.
pub async fn synced(client: &async_nats::Client) -> Result<()> {
    service::round_trip(client, Duration::from_secs(5))
        .await
        .context("no round trip to nats-server")
}

/// True if `sub` receives nothing for a moment: the check that a message the server
/// should have dropped did not arrive. (A positive answer is only as strong as the
/// moment; the tests pair it with a message that does arrive on the same path.)
pub async fn stays_silent(sub: &mut async_nats::Subscriber) -> bool {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port of a stopped server taken meanwhile (here its monitoring port, by a
    /// listener; in a storm by a client connection's local port) delays the restart
    /// until it is free again, instead of failing it.
    #[test]
    fn restart_waits_for_a_port_taken_while_down() -> Result<()> {
        let monitor = free_port()?;
        let mut server = NatsServer::start(&format!("http: 127.0.0.1:{monitor}"))?;
        server.stop()?;
        let taken = TcpListener::bind(("127.0.0.1", monitor))?;
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(taken);
        });
        server.restart()?;
        release
            .join()
            .map_err(|_| anyhow::anyhow!("release panicked"))?;
        assert!(
            server.log().contains("address already in use"),
            "{}",
            server.log()
        );
        std::net::TcpStream::connect(("127.0.0.1", server.port))?;
        Ok(())
    }
}
