//! Revocation that takes effect now, and the audit trail: identities revoked in a file
//! and in a KV bucket are refused at their next connect (a cached grant included),
//! their live connections are closed through nats-server's KICK request while other
//! clients stay (the registry of live connections forgetting those that left), and
//! every decision lands in a JetStream stream as an event.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use nats_callout_tests::ops::{count, metric, scrape};
use nats_callout_tests::{
    Callout, Keys, NatsServer, S3CRET_BCRYPT, connect, init_tracing, synced, write_atomically,
};
use tokio::sync::mpsc::UnboundedReceiver;

const AUDIT_SUBJECT: &str = "callout.audit";

/// Config-mode nats-server with JetStream for the callout's account (the audit stream
/// and the revocation bucket live there) and a system account whose `sys` user, like
/// the callout's, bypasses the callout.
fn server_config(keys: &Keys, store: &Path) -> String {
    format!(
        r#"
jetstream {{ store_dir: {store:?} }}
system_account: SYS
accounts {{
  AUTH {{ jetstream: enabled, users: [ {{ nkey: {callout} }} ] }}
  SYS {{ users: [ {{ user: sys, password: sys }} ] }}
  DEVICES {{ users: [ {{ user: platform, password: platform }} ] }}
}}
authorization {{
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ {callout}, platform, sys ]
  }}
}}
"#,
        callout = keys.callout.public_key(),
        issuer = keys.issuer.public_key(),
    )
}

fn callout_config(url: &str, files: &Path, alice: &str, bob: &str) -> String {
    let entry = |name: &str| {
        format!(
            "      account: DEVICES\n      permissions:\n        \
             pub: {{ allow: [\"{name}.>\", \"_INBOX.>\"] }}\n        sub: {{ allow: [\"_INBOX.>\"] }}\n"
        )
    };
    format!(
        "nats:\n  - url: {url}\n    nkey_seed_file: nkey-seed\n    \
         system_user: {{ user: sys, password_file: {sys:?} }}\n    audit_subject: {AUDIT_SUBJECT}\n\
         issuer_seed_file: issuer-seed\nreload_interval: 100ms\n\
         revocation:\n  file: {revoked:?}\n  kv_bucket: revoked\n\
         permissions:\n  nkey:\n    alice:\n      public_key: {alice}\n{a}    bob:\n      public_key: {bob}\n{b}\
         \x20 password:\n    carol:\n      password_hash: \"{S3CRET_BCRYPT}\"\n{c}",
        sys = files.join("sys.pass"),
        revoked = files.join("revoked.yaml"),
        a = entry("alice"),
        b = entry("bob"),
        c = entry("carol"),
    )
}

/// A client whose connection events the test can wait on. async-nats keeps trying to
/// reconnect a closed one, so it comes back once its identity is admitted again.
async fn client(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<(async_nats::Client, UnboundedReceiver<async_nats::Event>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
        }
    });
    Ok((connect(url, options).await?, rx))
}

fn nkey_options(kp: &nkeys::KeyPair) -> Result<async_nats::ConnectOptions> {
    Ok(async_nats::ConnectOptions::with_nkey(kp.seed()?))
}

fn carol() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password("carol".into(), "s3cret".into())
}

/// How long until the server closed the connection (the test waits up to 15 s and only
/// reports the time: no timing asserts on shared machines).
async fn closed(
    events: &mut UnboundedReceiver<async_nats::Event>,
    since: Instant,
) -> Result<Duration> {
    let deadline = Duration::from_secs(15);
    loop {
        match tokio::time::timeout(deadline, events.recv()).await {
            Ok(Some(async_nats::Event::Disconnected)) => return Ok(since.elapsed()),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("event stream ended without a disconnect"),
            Err(_) => bail!("connection not closed within {deadline:?}"),
        }
    }
}

async fn refused(url: &str, options: async_nats::ConnectOptions) -> Result<()> {
    match connect(url, options).await {
        Ok(_) => bail!("a revoked identity was admitted"),
        Err(e) => {
            let e = e.to_string().to_lowercase();
            ensure!(e.contains("authorization"), "{e}");
            Ok(())
        }
    }
}

/// Wait until the revocation registry tracks `n` connections (disconnect advisories
/// arrive a moment after the client leaves).
async fn tracked_settles_at(ops: std::net::SocketAddr, n: f64) -> Result<()> {
    let tracked = |m: &str| metric(m, "revocation_tracked_connections");
    let settled = nats_callout_tests::ops::eventually(
        &format!("{n} tracked connections"),
        Duration::from_secs(15),
        || async { Ok((tracked(&scrape(ops).await?) == Some(n)).then_some(())) },
    )
    .await;
    if settled.is_err() {
        let now = tracked(&scrape(ops).await?);
        return settled.with_context(|| format!("the registry tracks {now:?}"));
    }
    settled
}

#[tokio::test]
async fn revoked_identities_are_refused_kicked_and_audited() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let store = tempfile::tempdir()?;
    let server = NatsServer::start(&server_config(&keys, store.path()))?;
    let url = server.url();
    let (alice, bob) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());

    // The callout's account holds the audit stream and the revocation bucket.
    let admin = connect(&url, nkey_options(&keys.callout)?).await?;
    let js = async_nats::jetstream::new(admin.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "AUDIT".into(),
        subjects: vec![AUDIT_SUBJECT.into()],
        ..Default::default()
    })
    .await?;
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "revoked".into(),
            ..Default::default()
        })
        .await?;

    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("sys.pass"), "sys\n")?;
    let revoked = files.path().join("revoked.yaml");
    std::fs::write(&revoked, "# nothing revoked yet\n")?;
    let yaml = callout_config(&url, files.path(), &alice.public_key(), &bob.public_key());
    let callout = Callout::start(&keys, &yaml).await?;
    let ops = callout.app().http_addr();

    let (_alice_conn, mut alice_events) = client(&url, nkey_options(&alice)?).await?;
    let (bob_conn, mut bob_events) = client(&url, nkey_options(&bob)?).await?;
    // Carol twice: the second connect is decided from the decision cache.
    connect(&url, carol()).await?.drain().await?;
    let (_carol_conn, mut carol_events) = client(&url, carol()).await?;
    ensure!(count(&scrape(ops).await?, "decision_cache_hits_total") >= 1);
    // The registry tracks the three live connections: carol's first one, closed, was
    // forgotten when nats-server announced its disconnect (the callout listens for
    // those before it serves, so even a client leaving this early is heard).
    tracked_settles_at(ops, 3.0).await?;

    // The file revokes alice's NKey and carol's username: both connections close, bob's
    // stays, and neither can come back, carol's cached grant notwithstanding.
    let at = Instant::now();
    write_atomically(
        &revoked,
        format!("nkey: [{}]\nuser: [carol]\n", alice.public_key()),
    )?;
    let took = closed(&mut alice_events, at).await?;
    closed(&mut carol_events, at).await?;
    eprintln!("revoked in the file: connection closed after {took:?}");
    synced(&bob_conn).await.context("bob stays connected")?;
    while let Ok(event) = bob_events.try_recv() {
        ensure!(
            !matches!(event, async_nats::Event::Disconnected),
            "bob was disconnected"
        );
    }
    refused(&url, nkey_options(&alice)?).await?;
    refused(&url, carol()).await?;
    // Alice and carol were kicked, and their clients' reconnects refused: bob alone is
    // tracked.
    tracked_settles_at(ops, 1.0).await?;

    // A broken file changes nothing: the previous list stays in force.
    let loads = |m: &str| metric(m, "revocation_file_loads_total{result=\"error\"}").unwrap_or(0.0);
    let before = loads(&scrape(ops).await?);
    write_atomically(&revoked, "nkey: {not: [a list]}\n")?;
    nats_callout_tests::ops::eventually(
        "the broken list read",
        Duration::from_secs(15),
        || async { Ok((loads(&scrape(ops).await?) > before).then_some(())) },
    )
    .await?;
    refused(&url, nkey_options(&alice)?).await?;

    // The KV bucket revokes bob: closed at once; deleting the key lifts it.
    let at = Instant::now();
    bucket
        .put("bob", format!("nkey: [{}]", bob.public_key()).into())
        .await?;
    let took = closed(&mut bob_events, at).await?;
    eprintln!("revoked in KV: connection closed after {took:?}");
    refused(&url, nkey_options(&bob)?).await?;
    bucket.delete("bob").await?;
    let again = nats_callout_tests::ops::eventually(
        "bob admitted again",
        Duration::from_secs(15),
        || async { Ok(connect(&url, nkey_options(&bob)?).await.ok()) },
    )
    .await?;
    eprintln!(
        "AGAIN {:?} at {:?}",
        again.server_info().client_id,
        std::time::SystemTime::now()
    );
    again.drain().await?;
    eprintln!("DRAINED at {:?}", std::time::SystemTime::now());

    let m = scrape(ops).await?;
    ensure!(
        count(&m, "revocation_kicks_total{result=\"ok\"}") >= 3,
        "{m}"
    );
    ensure!(count(&m, "auth_revoked_total") >= 4, "{m}");
    ensure!(
        metric(&m, "revocations") == Some(2.0),
        "alice and carol in the file: {m}"
    );

    // The audit stream has every decision: admissions with the grant, refusals with
    // the reason, identities, and no credential anywhere.
    let stream = js.get_stream("AUDIT").await?;
    let published = count(&scrape(ops).await?, "audit_events_published_total");
    // Published is not yet stored: wait until the stream holds every event counted.
    nats_callout_tests::ops::eventually(
        "the audit stream caught up",
        Duration::from_secs(15),
        || async {
            let stored = js.get_stream("AUDIT").await?.cached_info().state.messages;
            Ok((stored >= published).then_some(()))
        },
    )
    .await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await?;
    let mut messages = consumer
        .fetch()
        .max_messages(published as usize)
        .messages()
        .await?;
    let mut events = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let text = std::str::from_utf8(&m.payload)?.to_owned();
        ensure!(!text.contains("s3cret"), "a password in an event: {text}");
        events.push(serde_json::from_str::<serde_json::Value>(&text)?);
    }
    ensure!(
        events.len() as u64 == published && published >= 9,
        "{events:?}"
    );
    let alice_key = alice.public_key();
    let admitted = events
        .iter()
        .find(|e| e["identity"]["nkey"] == alice_key.as_str() && e["verdict"] == "allowed")
        .context("alice's admission")?;
    ensure!(admitted["account"] == "DEVICES", "{admitted}");
    ensure!(
        admitted["plugin"]
            .as_str()
            .is_some_and(|p| p.contains("nkey")),
        "{admitted}"
    );
    ensure!(
        admitted["grant"]["pub"]["allow"][0] == "alice.>",
        "{admitted}"
    );
    ensure!(
        admitted["server"]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with('N')),
        "{admitted}"
    );
    let refusal = events
        .iter()
        .find(|e| e["identity"]["user"] == "carol" && e["verdict"] == "denied")
        .context("carol's refusal")?;
    ensure!(
        refusal["reason"]
            .as_str()
            .is_some_and(|r| r.contains("user \"carol\" is revoked")),
        "{refusal}"
    );
    ensure!(
        events
            .iter()
            .any(|e| e["identity"]["user"] == "carol" && e["cached"] == true),
        "carol's second connect came from the cache"
    );
    ensure!(count(&m, "audit_events_dropped_total") == 0, "{m}");
    drop(callout);
    Ok(())
}

/// `check` says where revocations come from and what each server does with them; a
/// broken revocation list fails it with the file named.
#[test]
fn check_names_the_revocation_wiring_and_refuses_a_broken_list() -> Result<()> {
    let files = tempfile::tempdir()?;
    let list = files.path().join("revoked.yaml");
    std::fs::write(files.path().join("sys.pass"), "sys")?;
    std::fs::write(&list, "user: [bob]\nsub: [alice]\n")?;
    let yaml = |first_extra: &str| {
        format!(
            "nats:\n  - {{ name: a, url: nats://127.0.0.1:1, nkey_seed_file: nkey-seed{first_extra} }}\n  \
             - {{ name: b, url: nats://127.0.0.1:2, nkey_seed_file: nkey-seed, \
             audit_subject: callout.audit }}\n\
             issuer_seed_file: issuer-seed\nrevocation: {{ file: {list:?}, kv_bucket: REVOKED }}\n\
             permissions: {{ noauth: {{ account: A, permissions: {{ pub: {{ allow: [x] }} }} }} }}\n"
        )
    };
    let system = format!(
        ", system_user: {{ user: sys, password_file: {:?} }}",
        files.path().join("sys.pass")
    );
    let c = nats_callout_tests::ops::check(&yaml(&system))?;
    ensure!(c.ok, "{c:?}");
    for line in [
        "(revokes 2 now), KV bucket REVOKED via nats a",
        "nats a: live connections of revoked identities are closed",
        "nats b: no system_user, so revoked identities are refused at their next connect",
        "nats b: decisions published on callout.audit",
    ] {
        ensure!(c.stdout.contains(line), "{line:?} missing: {}", c.stdout);
    }
    std::fs::write(&list, "sub: alice\n")?;
    let c = nats_callout_tests::ops::check(&yaml(""))?;
    ensure!(!c.ok, "{c:?}");
    ensure!(
        c.stderr.contains("revocation list") && c.stderr.contains("revoked.yaml"),
        "{}",
        c.stderr
    );
    Ok(())
}
