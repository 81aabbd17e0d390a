//! Operations helpers: the real `nats-callout` binary as a child process, and the
//! operations listener (`/metrics`, `/healthz`, `/readyz`) as a scraper sees it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::workspace_root;

/// Overrides where the `nats-callout` binary is taken from (no build then).
pub const CALLOUT_BIN_ENV: &str = "NATS_CALLOUT_BIN";

/// The `nats-callout` binary of this workspace, built on first use.
///
/// Cargo gives integration tests only their own package's binaries (`CARGO_BIN_EXE_*`),
/// and the host is another package. So it is built here, once per test process, with
/// the same cargo and target directory as the tests: a test never runs a stale binary
/// left over from before the last host change.
pub fn callout_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_callout_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The cargo that runs the tests, for a build of its own (the host binary, a plugin
/// crate outside the workspace), in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo describes the test's own package in the environment of the tests it runs;
    // build scripts that watch those variables (ring's watches CARGO_MANIFEST_DIR) would
    // see a change and rebuild half the tree on every test run.
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && (k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || matches!(k, "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"))
        {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(workspace_root()).stdin(Stdio::null());
    cmd
}

fn build_callout_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(CALLOUT_BIN_ENV) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("{CALLOUT_BIN_ENV}={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    // This test executable is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable is not in <target>/<profile>/deps")?;
    let target_dir = profile_dir
        .parent()
        .context("test executable is not in <target>/<profile>/deps")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let output = cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "nats-callout",
            "--bin",
            "nats-callout",
        ])
        .args(["--profile", profile])
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .context("cannot run cargo to build nats-callout")?;
    if !output.status.success() {
        bail!(
            "building the nats-callout binary failed ({}), so the tests that run it cannot:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bin = profile_dir.join("nats-callout");
    if !bin.is_file() {
        bail!("cargo built nats-callout but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Run `nats-callout <args>` to completion (for `keys`, `server-config`, `check`).
pub fn run_cli(args: &[&str]) -> Result<Output> {
    let bin = callout_bin()?;
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))
}

/// What `nats-callout check` said of a config.
#[derive(Debug)]
pub struct Checked {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `nats-callout check` on `yaml`, written with fresh seeds (`nkey-seed`, `issuer-seed`,
/// `xkey-seed`) beside it and the test defaults (`plugin_dir`, `http_listen`) added.
pub fn check(yaml: &str) -> Result<Checked> {
    let dir = tempfile::tempdir()?;
    crate::Keys::generate().write(dir.path())?;
    let path = dir.path().join("callout.yaml");
    std::fs::write(&path, crate::with_test_defaults(yaml))?;
    let out = run_cli(&["check", "--config", &path.to_string_lossy()])?;
    Ok(Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `nats-callout run` as a child process: stderr (the log) goes to a file, the process
/// is killed on drop.
pub struct CalloutProcess {
    child: Child,
    log: PathBuf,
    /// The config's `http_listen`.
    pub http: SocketAddr,
}

impl CalloutProcess {
    /// Start the binary with `args` (e.g. `["--log-format", "json", "run", "--config", ..]`),
    /// logging to `log`, and wait until `/readyz` at `http` says ready.
    pub async fn start(args: &[&str], http: SocketAddr, log: &Path) -> Result<Self> {
        Self::start_with_env(args, &[], http, log).await
    }

    /// [`CalloutProcess::start`] with extra environment variables.
    pub async fn start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        http: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let bin = callout_bin()?;
        let file = std::fs::File::create(log)?;
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // No callout outlives a crashed test run.
        crate::dies_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut process = Self {
            child,
            log: log.to_path_buf(),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!("nats-callout exited with {status}:\n{}", process.log());
            }
            if let Ok((200, _)) = http_get(http, "/readyz").await {
                return Ok(process);
            }
            if Instant::now() > deadline {
                bail!("nats-callout not ready within 20s:\n{}", process.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send `signal` (e.g. `libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        crate::signal(&self.child, signal)
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.exited().await
    }

    /// Wait (bounded: 10 s, twice the drain timeout) for the process to exit.
    pub async fn exited(&mut self) -> Result<ExitStatus> {
        crate::exited(&mut self.child, Duration::from_secs(10), "nats-callout").await
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CalloutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: status code and body. Enough for the operations listener,
/// without a client library's TLS setup.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The Prometheus text exposition from `/metrics`.
pub async fn scrape(addr: SocketAddr) -> Result<String> {
    match http_get(addr, "/metrics").await? {
        (200, body) => Ok(body),
        (status, body) => bail!("/metrics answered {status}: {body}"),
    }
}

/// The value of one series, written as in the exposition: `auth_requests_total`,
/// `plugin_calls_total{plugin="nkey/nkey"}`, `auth_request_duration_seconds_count`.
/// `None` when absent (most labelled series appear only once touched; a plugin's appear
/// when it loads).
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Like [`metric`], with an absent series counted as zero.
pub fn count(exposition: &str, series: &str) -> u64 {
    metric(exposition, series).unwrap_or(0.0) as u64
}

/// Poll `check` until it returns `Some`, at most `timeout`: waits on the state the test
/// needs instead of sleeping for a guessed time.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
