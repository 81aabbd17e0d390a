//! Operations, end to end: metrics by mode, readiness, hot reload, the CLI's keys and
//! server-config, `check`, and the real binary's logs (JSON, no secrets).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use nats_callout_tests::ops::{
    CalloutProcess, count, eventually, http_get, metric, run_cli, scrape,
};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::relay::DelayRelay;
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect, connect_watching,
    expect_server_error, free_port, init_tracing, plugin_dir, synced, with_test_defaults,
    write_atomically,
};

const WAIT: Duration = Duration::from_secs(15);
const REFUSED: &str = "Authorization Violation";

/// An NKey client and its permissions entry.
struct Device {
    id: &'static str,
    key: nkeys::KeyPair,
}

impl Device {
    fn new(id: &'static str) -> Self {
        Self {
            id,
            key: nkeys::KeyPair::new_user(),
        }
    }

    /// `permissions.nkey` entry: publish only on `publish`, plus inboxes.
    fn entry(&self, publish: &str) -> String {
        format!(
            "    {id}:\n      public_key: {pk}\n      account: DEVICES\n      permissions:\n        \
             pub: {{ allow: [\"{publish}\", \"_INBOX.>\"] }}\n        sub: {{ allow: [\"_INBOX.>\"] }}\n",
            id = self.id,
            pk = self.key.public_key()
        )
    }

    /// A raw connect signing the nonce with this device's key.
    async fn connect(&self, port: u16) -> Result<Outcome> {
        let pk = self.key.public_key();
        raw::connect(port, |nonce| raw::nkey_connect(&pk, &self.key, nonce)).await
    }
}

const NOAUTH: &str = "  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
                      pub: { allow: [\"public.>\"] }\n      sub: { allow: [\"public.>\"] }\n";

/// Callout config for one NATS server: `nkey` entries, optionally `noauth`, then `extra`
/// top-level keys.
fn config(url: &str, nkey_entries: &str, noauth: bool, extra: &str) -> String {
    let noauth = if noauth { NOAUTH } else { "" };
    // The nkey plugin refuses an empty section: no entries, no mode.
    let nkey = if nkey_entries.is_empty() {
        String::new()
    } else {
        format!("  nkey:\n{nkey_entries}")
    };
    format!(
        "nats:\n  - url: {url}\n    nkey_seed_file: nkey-seed\nissuer_seed_file: issuer-seed\n\
         permissions:\n{nkey}{noauth}{extra}"
    )
}

async fn reloads(http: SocketAddr, result: &str) -> Result<u64> {
    Ok(count(
        &scrape(http).await?,
        &format!("config_reloads_total{{result=\"{result}\"}}"),
    ))
}

/// Wait until `config_reloads_total{result}` reaches `n`.
async fn wait_reloads(http: SocketAddr, result: &str, n: u64) -> Result<()> {
    eventually(
        &format!("{n} reload(s) with result {result}"),
        WAIT,
        || async { Ok((reloads(http, result).await? >= n).then_some(())) },
    )
    .await
}

/// A callout config (plus `extra`) sending anonymous clients to a plugin busy for `ms`
/// first, and nats-server waiting for it: the busy time is what a test does something
/// during (a reload, a SIGTERM), so both deadlines leave seconds to spare beyond it
/// on a slow machine.
fn slow_deployment(ms: u64, extra: &str) -> Result<(Keys, NatsServer, String)> {
    let keys = Keys::generate();
    let server_timeout = ms / 1000 + 8;
    let server = NatsServer::start(&callout_server_config(&keys, false).replace(
        "authorization {",
        &format!("authorization {{\n  timeout: {server_timeout}"),
    ))?;
    let yaml = format!(
        "nats:\n  - url: {}\n    nkey_seed_file: nkey-seed\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - {{ mode: noauth, builtin: misbehave, settings: {{ behaviour: \"slow:{ms}\" }} }}\n\
         limits: {{ plugin_timeout: {}ms }}\n{extra}",
        server.url(),
        ms + 4000
    );
    Ok((keys, server, yaml))
}

/// Wait until the callout at `http` is deciding exactly one request.
async fn one_in_flight(http: SocketAddr) -> Result<()> {
    eventually("a request in the slow plugin", WAIT, || async {
        Ok((count(&scrape(http).await?, "auth_requests_in_flight") == 1).then_some(()))
    })
    .await
}

/// `nats-callout run` as a child process on `yaml` (plus the test defaults and an
/// `http_listen` of its own) in a new folder holding `keys` and `files`, with `env`
/// set. The folder lives as long as the returned guard.
async fn run_binary(
    keys: &Keys,
    yaml: &str,
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Result<(CalloutProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    keys.write(dir.path())?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let config_path = dir.path().join("callout.yaml");
    std::fs::write(
        &config_path,
        with_test_defaults(&format!("{yaml}http_listen: {http}\n")),
    )?;
    let cfg = config_path.to_str().context("utf-8 path")?;
    let callout = CalloutProcess::start_with_env(
        &["run", "--config", cfg],
        env,
        http,
        &dir.path().join("log"),
    )
    .await?;
    Ok((callout, dir))
}

fn password_connect(user: &str, pass: &str) -> serde_json::Value {
    serde_json::json!({ "user": user, "pass": pass })
}

#[tokio::test]
async fn metrics_count_every_decision_by_mode() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let device = Device::new("meter-1");
    let callout = Callout::start(
        &keys,
        &config(&server.url(), &device.entry("meter.state"), true, ""),
    )
    .await?;
    let port = server.port;
    let thief = nkeys::KeyPair::new_user();
    let pk = device.key.public_key();

    let (good, forged, anonymous, passwords) = (3, 2, 2, 1);
    for _ in 0..good {
        assert_eq!(device.connect(port).await?, Outcome::Admitted);
    }
    for _ in 0..forged {
        let outcome = raw::connect(port, |nonce| raw::nkey_connect(&pk, &thief, nonce)).await?;
        assert_eq!(outcome, Outcome::Refused(REFUSED.into()));
    }
    for _ in 0..anonymous {
        assert_eq!(raw::anonymous(port).await?, Outcome::Admitted);
    }
    for _ in 0..passwords {
        let outcome = raw::connect(port, |_| password_connect("bob", "secret")).await?;
        assert_eq!(outcome, Outcome::Refused(REFUSED.into()));
    }

    // Counted before the response is published, so the scrape sees every decision.
    let m = scrape(callout.app().http_addr()).await?;
    let total = good + forged + anonymous + passwords;
    let expect = [
        ("auth_requests_total", total),
        ("auth_errors_total", forged + passwords),
        ("auth_request_duration_seconds_count", total),
        ("auth_nkey_attempts_total", good + forged),
        ("auth_nkey_failures_total", forged),
        ("auth_noauth_attempts_total", anonymous),
        ("auth_noauth_failures_total", 0),
        ("auth_oauth2_attempts_total", 0),
        ("auth_oauth2_failures_total", 0),
        ("auth_mtls_attempts_total", 0),
        ("auth_mtls_failures_total", 0),
        // A forged signature is refused by the host before any nkey plugin runs.
        ("plugin_calls_total{plugin=\"nkey/nkey\"}", good),
        ("plugin_denies_total{plugin=\"nkey/nkey\"}", 0),
        (
            "plugin_call_duration_seconds_count{plugin=\"nkey/nkey\"}",
            good,
        ),
        ("plugin_calls_total{plugin=\"noauth/noauth\"}", anonymous),
        (
            "plugin_call_duration_seconds_count{plugin=\"noauth/noauth\"}",
            anonymous,
        ),
        ("jwks_fetches_total", 0),
        ("jwks_fetch_failures_total", 0),
    ];
    for (series, want) in expect {
        assert_eq!(metric(&m, series), Some(want as f64), "{series} in\n{m}");
    }
    for series in [
        "plugin_traps_total{plugin=\"nkey/nkey\"}",
        "plugin_timeouts_total{plugin=\"nkey/nkey\"}",
        "plugin_denies_total{plugin=\"noauth/noauth\"}",
    ] {
        assert_eq!(count(&m, series), 0, "{series} in\n{m}");
    }
    // The histogram's +Inf bucket holds every observation.
    assert_eq!(
        metric(&m, "auth_request_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(total as f64)
    );
    Ok(())
}

/// Ready must mean that nats-server has the subscription, not only that the SUB was
/// written: a client admitted the moment readiness is reported is answered, at start and
/// after a reconnect. The callout reaches nats-server through a relay that holds its
/// bytes back, so that a readiness check that stops at the socket write fails every
/// time instead of once in a while.
#[tokio::test]
async fn readiness_follows_the_nats_connection() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let mut server = NatsServer::start(&callout_server_config(&keys, false))?;
    // Well below nats-server's auth timeout (2 s), which the held-back response must beat.
    let relay = DelayRelay::start(server.port, Duration::from_millis(400)).await?;
    let callout = Callout::start(&keys, &config(&relay.url(), "", true, "")).await?;
    let http = callout.app().http_addr();
    assert_eq!(
        raw::anonymous(server.port).await?,
        Outcome::Admitted,
        "right after start"
    );

    assert_eq!(http_get(http, "/readyz").await?.0, 200);
    assert_eq!(http_get(http, "/healthz").await?.0, 200);

    server.stop()?;
    let body = eventually("/readyz to report the lost server", WAIT, || async {
        let (status, body) = http_get(http, "/readyz").await?;
        Ok((status == 503).then_some(body))
    })
    .await?;
    assert!(
        body.contains("not subscribed on NATS server(s): main"),
        "{body}"
    );
    // Alive, only not ready: a liveness probe must not restart the pod for this.
    assert_eq!(http_get(http, "/healthz").await?.0, 200);

    server.restart()?;
    eventually("/readyz to recover", WAIT, || async {
        Ok((http_get(http, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    // Ready means subscribed again: the very next client is answered.
    assert_eq!(
        raw::anonymous(server.port).await?,
        Outcome::Admitted,
        "right after reconnect"
    );
    Ok(())
}

/// A least-privilege callout user (subscribe only to the auth subject, publish only to
/// the server's reply inboxes) cannot take part in the subscription check; the service
/// still becomes ready, on the connection state, and serves.
#[tokio::test]
async fn a_least_privilege_callout_user_still_becomes_ready() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let callout_user = format!("{{ nkey: {} }}", keys.callout.public_key());
    let restricted = format!(
        "{{ nkey: {}, permissions: {{ subscribe: {{ allow: [\"$SYS.REQ.USER.AUTH\"] }}, \
         publish: {{ allow: [\"$SYS._INBOX.>\"] }} }} }}",
        keys.callout.public_key()
    );
    let conf = callout_server_config(&keys, false);
    ensure!(conf.contains(&callout_user), "{conf}");
    let server = NatsServer::start(&conf.replace(&callout_user, &restricted))?;
    let _callout = Callout::start(&keys, &config(&server.url(), "", true, "")).await?;
    assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    Ok(())
}

#[tokio::test]
async fn reload_swaps_config_while_clients_connect() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let steady = Arc::new(Device::new("steady"));
    let leaving = Device::new("leaving");
    let url = server.url();
    let version = |n: u32, with_leaving: bool| {
        let mut entries = steady.entry(&format!("state.v{n}"));
        if with_leaving {
            entries.push_str(&leaving.entry("state.leaving"));
        }
        with_test_defaults(&config(&url, &entries, false, "reload_interval: 200ms\n"))
    };
    let callout = Callout::start(&keys, &version(1, true)).await?;
    let http = callout.app().http_addr();
    let path = callout.config_path();

    // A client connecting in a loop for the whole test: every attempt must be answered,
    // and since `steady` is in every version of the config, answered with admission. A
    // request the callout dropped would show as a refusal (nats-server gives up after
    // its auth timeout) or as a raw-connect timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let port = server.port;
    let looper = tokio::spawn({
        let (stop, steady) = (stop.clone(), steady.clone());
        async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(steady.connect(port).await.map_err(|e| format!("{e:#}")));
            }
            outcomes
        }
    });

    for n in 2..=4 {
        write_atomically(&path, version(n, true).as_bytes())?;
        wait_reloads(http, "ok", u64::from(n) - 1).await?;
    }
    // The new permissions are in force: v4's subject is allowed, v1's is not.
    let platform = connect(
        &url,
        async_nats::ConnectOptions::with_user_and_password("platform".into(), "platform".into()),
    )
    .await?;
    let mut states = platform.subscribe("state.>").await?;
    synced(&platform).await?;
    let (client, mut errors) = connect_watching(
        &url,
        async_nats::ConnectOptions::with_nkey(steady.key.seed()?),
    )
    .await?;
    client.publish("state.v1", "old".into()).await?;
    client.flush().await?;
    expect_server_error(
        &mut errors,
        "permissions violation for publish to \"state.v1\"",
    )
    .await?;
    client.publish("state.v4", "new".into()).await?;
    client.flush().await?;
    let msg = tokio::time::timeout(WAIT, states.next())
        .await?
        .context("state subscription ended")?;
    assert_eq!(msg.subject.as_str(), "state.v4");

    // A broken config is refused; the previous one keeps serving, `leaving` included.
    write_atomically(&path, b"nats: [ {url: \n  permissions: nope")?;
    wait_reloads(http, "error", 1).await?;
    assert_eq!(leaving.connect(port).await?, Outcome::Admitted);
    assert_eq!(reloads(http, "ok").await?, 3);

    // Removed from the config: refused from the first connect after the swap.
    write_atomically(&path, version(5, false).as_bytes())?;
    wait_reloads(http, "ok", 4).await?;
    assert_eq!(
        leaving.connect(port).await?,
        Outcome::Refused(REFUSED.into())
    );

    stop.store(true, Ordering::Relaxed);
    let outcomes = looper.await?;
    ensure!(!outcomes.is_empty(), "the connect loop made no attempt");
    let unanswered: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok(Outcome::Admitted)))
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} of {} connects during reloads were not admitted: {unanswered:?}",
        unanswered.len(),
        outcomes.len()
    );
    Ok(())
}

#[tokio::test]
async fn reload_follows_plugin_files_and_refuses_a_broken_plugin() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let plugins = tempfile::tempdir()?;
    for p in ["nkey.wasm", "noauth.wasm"] {
        std::fs::copy(plugin_dir().join(p), plugins.path().join(p))
            .with_context(|| format!("{p}: run scripts/setup"))?;
    }
    let noauth = plugins.path().join("noauth.wasm");
    let good = std::fs::read(&noauth)?;
    let device = Device::new("plugged");
    let yaml = config(
        &server.url(),
        &device.entry("state.plugged"),
        true,
        &format!(
            "plugins:\n  - {{ mode: nkey, path: {dir}/nkey.wasm }}\n  - {{ mode: noauth, path: {dir}/noauth.wasm }}\n\
             reload_interval: 200ms\n",
            dir = plugins.path().display()
        ),
    );
    let callout = Callout::start(&keys, &yaml).await?;
    let http = callout.app().http_addr();
    let port = server.port;
    let anonymous = || raw::anonymous(port);

    // A new plugin file (same bytes, new file) is picked up.
    write_atomically(&noauth, &good)?;
    wait_reloads(http, "ok", 1).await?;

    // A plugin that is not a component is refused, and the loaded set keeps serving.
    write_atomically(&noauth, b"\0asm but not really a component")?;
    wait_reloads(http, "error", 1).await?;
    assert_eq!(anonymous().await?, Outcome::Admitted);
    assert_eq!(device.connect(port).await?, Outcome::Admitted);
    assert_eq!(reloads(http, "ok").await?, 1);

    // Fixing the file recovers without a restart.
    write_atomically(&noauth, &good)?;
    wait_reloads(http, "ok", 2).await?;
    assert_eq!(anonymous().await?, Outcome::Admitted);

    // A config naming a plugin file that is not there yet is refused; the file showing
    // up later is noticed as a change, without another edit or a SIGHUP.
    let extra = plugins.path().join("extra.wasm");
    let path = callout.config_path();
    let yaml = std::fs::read_to_string(&path)?;
    let with_extra = yaml.replace(
        "plugins:\n",
        &format!(
            "plugins:\n  - {{ mode: nkey, path: {} }}\n",
            extra.display()
        ),
    );
    ensure!(
        with_extra != yaml,
        "precondition: the config has a plugins list"
    );
    write_atomically(&path, with_extra.as_bytes())?;
    wait_reloads(http, "error", 2).await?;
    std::fs::copy(plugin_dir().join("nkey.wasm"), &extra)?;
    wait_reloads(http, "ok", 3).await?;
    assert_eq!(device.connect(port).await?, Outcome::Admitted);
    Ok(())
}

#[tokio::test]
async fn reload_lets_in_flight_requests_finish_on_the_old_set() -> Result<()> {
    init_tracing();
    let (keys, server, slow) = slow_deployment(6000, "reload_interval: 200ms\n")?;
    let callout = Callout::start(&keys, &slow).await?;
    let http = callout.app().http_addr();
    let port = server.port;

    let in_flight = tokio::spawn(raw::anonymous(port));
    one_in_flight(http).await?;
    // The new set has no anonymous mode at all.
    let without_noauth = with_test_defaults(&config(
        &server.url(),
        &Device::new("other").entry("state.other"),
        false,
        "reload_interval: 200ms\n",
    ));
    write_atomically(&callout.config_path(), without_noauth.as_bytes())?;
    wait_reloads(http, "ok", 1).await?;
    ensure!(
        !in_flight.is_finished(),
        "precondition: the swap must happen while the 6 s call runs (the reload was slower)"
    );
    assert_eq!(
        in_flight.await??,
        Outcome::Admitted,
        "decided by the old set"
    );
    assert_eq!(
        raw::anonymous(port).await?,
        Outcome::Refused(REFUSED.into()),
        "decided by the new set"
    );
    Ok(())
}

/// A callout logging in with user and password: it connects, serves, and keeps that
/// method even with an nkey seed in the environment (the Helm chart always sets one).
#[tokio::test]
async fn a_password_login_is_kept_when_an_nkey_seed_is_in_the_environment() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server_config = callout_server_config(&keys, false)
        .replace(
            &format!(
                "AUTH {{ users: [ {{ nkey: {} }} ] }}",
                keys.callout.public_key()
            ),
            "AUTH { users: [ { user: callout, password: \"s3cret\" } ] }",
        )
        .replace(&keys.callout.public_key(), "callout");
    ensure!(
        server_config.contains("password: \"s3cret\""),
        "{server_config}"
    );
    let server = NatsServer::start(&server_config)?;
    let yaml = format!(
        "nats:\n  - url: {}\n    user: callout\n    password_file: password\n\
         issuer_seed_file: issuer-seed\npermissions:\n{NOAUTH}",
        server.url()
    );
    let seed = keys.callout.seed()?;
    let _callout = run_binary(
        &keys,
        &yaml,
        &[("password", "s3cret\n")],
        &[("AUTH_CALLOUT_NKEY_SEED", seed.as_str())],
    )
    .await?;
    assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    Ok(())
}

/// `/readyz` waits for the JWKS only where oauth2 is served: a `jwks` section left in
/// a config without oauth2, its provider unreachable, does not keep the pod unready.
#[tokio::test]
async fn readiness_needs_the_jwks_only_for_oauth2() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let dead = free_port()?;
    let jwks = format!(
        "jwks: {{ issuer: \"http://127.0.0.1:{dead}\", audience: nats, fetch_timeout: 1s }}\n"
    );
    let callout = Callout::start(&keys, &config(&server.url(), "", true, &jwks)).await?;
    let http = callout.app().http_addr();
    assert_eq!(http_get(http, "/readyz").await?.0, 200);
    drop(callout);

    let oauth2 = format!(
        "  oauth2:\n    any:\n      subject: \"*\"\n      account: DEVICES\n      \
         permissions: {{ pub: {{ allow: [\"x\"] }} }}\n{jwks}"
    );
    let callout = Callout::start(&keys, &config(&server.url(), "", true, &oauth2)).await?;
    let (status, body) = http_get(callout.app().http_addr(), "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("JWKS"), "{body}");
    Ok(())
}

/// A plugin logging in a loop writes a bounded number of lines per call, each one
/// line: its line breaks are escaped, so it cannot forge log lines of its own.
#[tokio::test]
async fn a_plugin_cannot_flood_or_forge_the_log() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let yaml = format!(
        "nats:\n  - url: {}\n    nkey_seed_file: nkey-seed\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - {{ mode: noauth, builtin: misbehave, settings: {{ behaviour: log-flood }} }}\n",
        server.url()
    );
    let (callout, _dir) = run_binary(&keys, &yaml, &[], &[]).await?;
    for _ in 0..2 {
        assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    }
    let log = callout.log();
    let flood = log.lines().filter(|l| l.contains("flood ")).count();
    assert_eq!(flood, 2 * 32, "32 lines per call:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.trim_start().starts_with("FORGED-LINE")),
        "a forged line:\n{log}"
    );
    assert_eq!(
        log.matches("further lines of this call are dropped")
            .count(),
        2
    );
    Ok(())
}

/// SIGTERM drains: the binary unsubscribes, answers the request it is deciding (a
/// slow plugin), then exits cleanly, where it used to drop it and leave the client to
/// nats-server's auth timeout.
#[tokio::test]
async fn sigterm_answers_the_requests_in_flight_then_exits() -> Result<()> {
    init_tracing();
    let (keys, server, yaml) = slow_deployment(3000, "")?;
    let (mut callout, _dir) = run_binary(&keys, &yaml, &[], &[]).await?;

    let in_flight = tokio::spawn(raw::anonymous(server.port));
    one_in_flight(callout.http).await?;
    callout.signal(libc::SIGTERM)?;
    assert_eq!(
        in_flight.await??,
        Outcome::Admitted,
        "answered during the drain:\n{}",
        callout.log()
    );
    let status = callout.exited().await?;
    let log = callout.log();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("draining") && log.contains("drained"), "{log}");
    Ok(())
}

/// Mode bits of a file.
fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

fn stdout(output: &std::process::Output) -> Result<String> {
    ensure!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout.clone())?)
}

#[tokio::test]
async fn keys_generate_and_server_config_make_a_working_deployment() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    let k = keys.to_str().context("utf-8 path")?;
    stdout(&run_cli(&["keys", "generate", "--dir", k])?)?;
    let mut public = Vec::new();
    for (file, prefix) in [
        ("nkey-seed", "SU"),
        ("issuer-seed", "SA"),
        ("xkey-seed", "SX"),
    ] {
        let path = keys.join(file);
        assert_eq!(mode(&path)?, 0o600, "{file}");
        assert!(
            std::fs::read_to_string(&path)?.starts_with(prefix),
            "{file}"
        );
        let p = path.to_str().context("utf-8 path")?;
        public.push(
            stdout(&run_cli(&["keys", "public", "--seed", p])?)?
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(mode(&keys)?, 0o700, "the key folder is owner-only");
    // A second generate must not overwrite working keys.
    let again = run_cli(&["keys", "generate", "--dir", k])?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // Nor write through a symlink left where a seed goes, dangling or not.
    let other = dir.path().join("other");
    std::fs::create_dir(&other)?;
    let elsewhere = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, other.join("issuer-seed"))?;
    let o = other.to_str().context("utf-8 path")?;
    assert!(!run_cli(&["keys", "generate", "--dir", o])?.status.success());
    assert!(!elsewhere.exists(), "wrote through the symlink");
    assert_eq!(
        std::fs::read_dir(&other)?.count(),
        1,
        "a refusal writes nothing"
    );
    // --force replaces all three, owner-only.
    std::fs::remove_file(other.join("issuer-seed"))?;
    let first = stdout(&run_cli(&["keys", "generate", "--dir", o])?)?;
    let second = stdout(&run_cli(&["keys", "generate", "--dir", o, "--force"])?)?;
    assert_ne!(first, second, "new keys");
    for file in ["nkey-seed", "issuer-seed", "xkey-seed"] {
        assert_eq!(mode(&other.join(file))?, 0o600, "{file}");
    }

    let device_seed = keys.join("device-seed");
    let device_public = stdout(&run_cli(&[
        "keys",
        "user",
        "--out",
        device_seed.to_str().context("utf-8 path")?,
    ])?)?
    .trim()
    .to_owned();
    assert_eq!(mode(&device_seed)?, 0o600);
    let again = run_cli(&["keys", "user", "--out", device_seed.to_str().unwrap_or("")])?;
    assert!(!again.status.success(), "keys user overwrote a seed");

    let block = stdout(&run_cli(&[
        "server-config",
        "--keys",
        k,
        "--account",
        "AUTH",
        "--auth-user",
        "platform",
        "--auth-user",
        "1234",
    ])?)?;
    let (callout_user, issuer, xkey) = (&public[0], &public[1], &public[2]);
    assert!(block.contains(&format!("issuer: {issuer}")), "{block}");
    assert!(block.contains(&format!("xkey: {xkey}")), "{block}");
    // Quoted, so that a user named 1234 stays a name (nats-server starts on it below).
    assert!(
        block.contains(&format!(
            "auth_users: [ \"{callout_user}\", \"platform\", \"1234\" ]"
        )),
        "{block}"
    );

    // nats-server from the printed block, plus the accounts it refers to.
    let server = NatsServer::start(&format!(
        "accounts {{\n  AUTH {{ users: [ {{ nkey: {callout_user} }} ] }}\n  \
         DEVICES {{ users: [ {{ user: platform, password: platform }} ] }}\n  ANONYMOUS {{}}\n}}\n{block}"
    ))?;
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let yaml = format!(
        "nats:\n  - url: {url}\n    nkey_seed_file: keys/nkey-seed\nissuer_seed_file: keys/issuer-seed\n\
         xkey_seed_file: keys/xkey-seed\nplugin_dir: {plugins}\nhttp_listen: {http}\n\
         permissions:\n  nkey:\n    generated:\n      public_key: {device_public}\n      account: DEVICES\n      \
         permissions:\n        pub: {{ allow: [\"device-state.{{{{name}}}}\"] }}\n{NOAUTH}",
        url = server.url(),
        plugins = plugin_dir().display(),
    );
    let config_path = dir.path().join("callout.yaml");
    std::fs::write(&config_path, yaml)?;
    let cfg = config_path.to_str().context("utf-8 path")?;
    let _callout = CalloutProcess::start(
        &["run", "--config", cfg],
        http,
        &dir.path().join("callout.log"),
    )
    .await?;

    let seed = std::fs::read_to_string(&device_seed)?.trim().to_owned();
    let (client, mut errors) =
        connect_watching(&server.url(), async_nats::ConnectOptions::with_nkey(seed)).await?;
    client
        .publish("device-state.generated", "ok".into())
        .await?;
    client.publish("device-state.other", "no".into()).await?;
    client.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;
    assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    Ok(())
}

#[tokio::test]
async fn check_accepts_a_good_config_and_names_what_is_broken() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    Keys::generate().write(dir.path())?;
    let run_check = |yaml: &str| -> Result<(bool, String, String)> {
        let path = dir.path().join("callout.yaml");
        std::fs::write(&path, with_test_defaults(yaml))?;
        let out = run_cli(&["check", "--config", path.to_str().context("utf-8 path")?])?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let good = config(
        "nats://127.0.0.1:1",
        &Device::new("checked").entry("state.checked"),
        true,
        "",
    );
    let (ok, out, err) = run_check(&good)?;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ok: 1 NATS server(s), routes [nkey, noauth]"),
        "{out}"
    );

    // Each broken case: non-zero exit, and stderr names the cause.
    let missing_plugin =
        format!("{good}plugins:\n  - {{ mode: nkey, path: /nonexistent/partner.wasm }}\n");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm")?;
    let junk_plugin = format!(
        "{good}plugins:\n  - {{ mode: nkey, path: {} }}\n",
        junk.display()
    );
    let cases = [
        (
            good.replace("permissions:", "permisions:"),
            "unknown field `permisions`",
        ),
        ("nats: [ {url: \n".to_owned(), "callout.yaml"),
        (
            good.replace("issuer_seed_file: issuer-seed", "issuer_seed_file: gone"),
            "issuer seed: cannot read",
        ),
        (
            good.replace("account: ANONYMOUS", "account: \"bad account\""),
            "plugin noauth/noauth: rejected its configuration",
        ),
        (missing_plugin, "cannot load /nonexistent/partner.wasm"),
        (junk_plugin, "junk.wasm"),
        // The NATS login is read too, as `run` reads it.
        (
            good.replace("nkey_seed_file: nkey-seed", "nkey_seed_file: gone"),
            "nkey seed: cannot read",
        ),
        (
            good.replace(
                "nkey_seed_file: nkey-seed",
                "user: callout\n    password_file: gone",
            ),
            "cannot read password file",
        ),
        (
            good.replace(
                "nkey_seed_file: nkey-seed",
                "nkey_seed_file: nkey-seed\n    tls: { ca_file: gone.pem }",
            ),
            "cannot read TLS file",
        ),
    ];
    for (yaml, needle) in cases {
        let (ok, _, err) = run_check(&yaml)?;
        assert!(!ok, "check accepted:\n{yaml}");
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
        assert!(err.contains("Error:"), "{err}");
    }
    // A log filter with a typo is an error, not a silent `info`.
    let out = run_cli(&[
        "--log",
        "nats_callout=bogus[",
        "check",
        "--config",
        "x.yaml",
    ])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a tracing filter"), "{err}");
    Ok(())
}

/// The real binary with `--log debug --log-format json`: one JSON object per line, one
/// line per decision, denies at info with mode and reason, a SIGHUP reload, and not a
/// single seed, signature, password or token anywhere in the output.
#[tokio::test]
async fn binary_logs_json_decisions_without_secrets() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, true))?;
    let dir = tempfile::tempdir()?;
    keys.write(dir.path())?;
    let device = Device::new("logged");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let yaml = config(
        &server.url(),
        &device.entry("state.logged"),
        true,
        // bob's password is "s3cret" (bcrypt, cost 4): the password plugin checks the
        // wrong one sent below, with the password in its request and debug logs on.
        &format!(
            "  password:\n    bob:\n      password_hash: \"$2b$04$qlJ4LcpOAB6XT5EsktDSZ.FIJGEdd7lUH2/AXq872Avl2JGyY.lfm\"\n      \
             account: DEVICES\n      permissions: {{ sub: {{ allow: [\"_INBOX.>\"] }} }}\n\
             xkey_seed_file: xkey-seed\nhttp_listen: {http}\n"
        ),
    );
    let config_path = dir.path().join("callout.yaml");
    std::fs::write(&config_path, with_test_defaults(&yaml))?;
    let cfg = config_path.to_str().context("utf-8 path")?;
    let mut callout = CalloutProcess::start(
        &[
            "--log",
            "debug",
            "--log-format",
            "json",
            "run",
            "--config",
            cfg,
        ],
        http,
        &dir.path().join("callout.log"),
    )
    .await?;

    let port = server.port;
    let pk = device.key.public_key();
    let thief = nkeys::KeyPair::new_user();
    let mut secrets = vec![
        keys.callout.seed()?,
        keys.issuer.seed()?,
        keys.xkey.seed()?,
        device.key.seed()?,
        thief.seed()?,
    ];
    // NKey connects whose signatures are kept, to look for them in the log.
    let mut signatures = Vec::new();
    let mut signed_by = |key: &nkeys::KeyPair, nonce: &str| {
        let connect = raw::nkey_connect(&pk, key, nonce);
        signatures.extend(connect["sig"].as_str().map(str::to_owned));
        connect
    };
    let mut sent = vec![
        raw::connect(port, |n| signed_by(&device.key, n)).await?,
        raw::connect(port, |n| signed_by(&thief, n)).await?,
    ];
    ensure!(signatures.len() == 2, "signatures: {signatures:?}");
    secrets.append(&mut signatures);
    sent.push(raw::anonymous(port).await?);
    let password = "pa55-word-that-must-not-be-logged";
    sent.push(raw::connect(port, |_| password_connect("bob", password)).await?);
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsb2cifQ.c2lnbmF0dXJlLW11c3Qtbm90LWJlLWxvZ2dlZA";
    sent.push(raw::connect(port, |_| password_connect("oauthtoken", token)).await?);
    let bare_token = "bare-auth-token-that-must-not-be-logged";
    sent.push(raw::connect(port, |_| serde_json::json!({ "auth_token": bare_token })).await?);
    secrets.extend([password.to_owned(), token.to_owned(), bare_token.to_owned()]);
    let admitted = sent.iter().filter(|o| **o == Outcome::Admitted).count();
    assert_eq!(admitted, 2, "{sent:?}");

    // SIGHUP reloads; the metric says when it is done.
    callout.signal(libc::SIGHUP)?;
    wait_reloads(http, "ok", 1).await?;
    let status = callout.terminate().await?;
    assert!(status.success(), "exit {status}");

    let log = callout.log();
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret ({}...) is in the log",
            &secret[..4]
        );
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_owned();
    let allowed: Vec<_> = lines.iter().filter(|l| message(l) == "allowed").collect();
    let denied: Vec<_> = lines.iter().filter(|l| message(l) == "denied").collect();
    assert_eq!(allowed.len(), admitted, "one line per admitted client");
    assert_eq!(
        denied.len(),
        sent.len() - admitted,
        "one line per refused client"
    );
    for l in &allowed {
        assert_eq!(l["level"], "DEBUG", "{l}");
    }
    for l in &denied {
        assert_eq!(l["level"], "INFO", "{l}");
        let f = &l["fields"];
        ensure!(
            f["mode"].is_string() && f["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "deny without mode/reason: {l}"
        );
    }
    let modes: Vec<_> = denied
        .iter()
        .filter_map(|l| l["fields"]["mode"].as_str())
        .collect();
    assert!(
        modes.contains(&"nkey") && modes.contains(&"oauth2") && modes.contains(&"password"),
        "{modes:?}"
    );
    assert!(
        log.contains("wrong password for user \\\"bob\\\""),
        "the password plugin did not check bob's password:\n{log}"
    );
    if !lines
        .iter()
        .any(|l| message(l) == "reloading" && l["fields"]["reason"] == "SIGHUP")
    {
        bail!("no SIGHUP reload line in:\n{log}");
    }
    Ok(())
}
