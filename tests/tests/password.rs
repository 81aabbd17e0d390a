//! Username/password clients, NATS and MQTT, through the built-in password plugin and
//! the host's native hash verification; routes chosen by username and connection type.

use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use nats_callout_tests::inject::{Injector, request};
use nats_callout_tests::ops::{check, count, scrape};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, S3CRET_BCRYPT, callout_server_config, connect, connect_watching,
    expect_server_error, init_tracing, platform, stays_silent, synced,
};

/// `0ps-pass`, argon2id m=19456 t=2 p=1.
const OPS_ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$VF00vS/HUCMrGIUR97LELe5Z4/kX2iRHVUK7zsBX74w";

/// nats-server with an MQTT listener (MQTT needs a server name and JetStream, also in the
/// account its clients land in); returns the server and its MQTT port.
fn mqtt_server(keys: &Keys, js: &tempfile::TempDir) -> Result<(NatsServer, u16)> {
    let mqtt_port = nats_callout_tests::free_port()?;
    let config = format!(
        "server_name: pw-1\njetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n{}",
        js.path(),
        callout_server_config(keys, false)
            .replace("DEVICES { users", "DEVICES { jetstream: enabled, users")
    );
    Ok((NatsServer::start(&config)?, mqtt_port))
}

fn entries() -> String {
    format!(
        "permissions:\n  password:\n    \
         sensor-7:\n      password_hash: \"{S3CRET_BCRYPT}\"\n      account: DEVICES\n      \
         allowed_connection_types: [mqtt]\n      permissions:\n        \
         pub: {{ allow: [\"sensors.{{{{username}}}}.>\"] }}\n        sub: {{ allow: [\"commands.{{{{name}}}}\"] }}\n    \
         operator:\n      username: ops@example.com\n      password_hash: \"{OPS_ARGON2}\"\n      \
         account: DEVICES\n      permissions:\n        pub: {{ allow: [\"ops.>\"] }}\n        sub: {{ allow: [\"_INBOX.>\"] }}\n"
    )
}

#[tokio::test]
async fn nats_and_mqtt_clients_log_in_with_username_and_password() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let js = tempfile::tempdir()?;
    let (server, mqtt_port) = mqtt_server(&keys, &js)?;
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\nissuer_seed_file: issuer-seed\n{}",
        server.url(),
        entries()
    );
    let callout = Callout::start(&keys, &yaml).await?;

    // NATS, argon2id: admitted with the entry's permissions, and only those.
    let options = async_nats::ConnectOptions::with_user_and_password(
        "ops@example.com".into(),
        "0ps-pass".into(),
    );
    let (ops, mut errors) = connect_watching(&server.url(), options).await?;
    let watcher = platform(&server.url()).await?;
    let mut seen = watcher.subscribe("ops.>").await?;
    synced(&watcher).await?;
    ops.publish("ops.deploy", "1".into()).await?;
    ops.publish("sensors.x.y", "1".into()).await?;
    ops.flush().await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), seen.next()).await?;
    assert_eq!(
        msg.map(|m| m.subject.to_string()).as_deref(),
        Some("ops.deploy")
    );
    let e = expect_server_error(&mut errors, "permissions violation").await?;
    assert!(e.contains("sensors.x.y"), "{e}");

    // Wrong password, unknown user: refused; never anonymous.
    for (user, pass) in [("ops@example.com", "guess"), ("nobody", "0ps-pass")] {
        assert_eq!(
            raw::user_pass(server.port, user, pass).await?,
            Outcome::Refused("Authorization Violation".into()),
            "{user}"
        );
    }

    // MQTT, bcrypt: the device's entry admits MQTT connections only.
    let mut sensors = watcher.subscribe("sensors.>").await?;
    synced(&watcher).await?;
    let mut options = rumqttc::MqttOptions::new("sensor-7-client", "127.0.0.1", mqtt_port);
    options.set_credentials("sensor-7", "s3cret");
    let mut mqtt = match nats_callout_tests::mqtt::connect(options).await? {
        Ok(m) => m,
        Err(refused) => bail!("MQTT client refused: {refused}"),
    };
    mqtt.publish("sensors/sensor-7/temp", b"21.5").await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), sensors.next()).await?;
    assert_eq!(
        msg.map(|m| m.subject.to_string()).as_deref(),
        Some("sensors.sensor-7.temp")
    );
    let _ = mqtt.publish("sensors/other/temp", b"0").await;
    assert!(stays_silent(&mut sensors).await, "outside the grant");
    let mut options = rumqttc::MqttOptions::new("sensor-7-bad", "127.0.0.1", mqtt_port);
    options.set_credentials("sensor-7", "wrong");
    assert!(nats_callout_tests::mqtt::connect(options).await?.is_err());

    // The same credentials over plain NATS: the grant's connection types refuse it
    // (the host enforces them; nats-server does not for callout users).
    let nats_device = connect(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password("sensor-7".into(), "s3cret".into()),
    )
    .await;
    assert!(
        nats_device.is_err(),
        "an MQTT-only grant admitted a NATS client"
    );

    let m = scrape(callout.app().http_addr()).await?;
    assert_eq!(count(&m, "auth_password_attempts_total"), 6, "{m}");
    assert_eq!(count(&m, "auth_password_failures_total"), 4);
    assert_eq!(
        count(&m, "auth_route_attempts_total{route=\"password\"}"),
        6
    );
    Ok(())
}

/// Hostile and costly input, injected straight into the callout (no CONNECT line carries
/// it): a request with a password of 1 MiB is over the request cap and answered at once
/// with an empty reply; one of 512 KiB is refused before any hash is computed; a hash too
/// costly for the plugin's deadline is refused with a hint; every other client is served
/// meanwhile.
#[tokio::test]
async fn oversized_passwords_and_slow_hashes_are_refused_with_a_reason() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    // The side server carries what nats-server's own default max_payload would refuse.
    let mut inject = Injector::start_with(&keys.issuer.public_key(), "max_payload: 8MB")?;
    // argon2id with 64 MiB and 8 passes: within the host's bounds, over half a second.
    let slow = "$argon2id$v=19$m=65536,t=8,p=1$c29tZXNhbHRzb21lc2FsdA$rbQ8MZUq2jBLbgerTeM99O+5Fs1tN2s4IlKtc61FPes";
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n{}    \
         slowpoke:\n      password_hash: \"{slow}\"\n      account: DEVICES\n      \
         permissions: {{ pub: {{ allow: [x] }} }}\n  \
         noauth:\n    account: ANONYMOUS\n    permissions: {{ sub: {{ allow: [\"public.>\"] }} }}\n\
         plugins:\n  - {{ mode: password, builtin: password, limits: {{ timeout: 100ms }} }}\n  \
         - {{ mode: noauth, builtin: noauth }}\n",
        server.url(),
        inject.nats_entry(),
        entries()
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;

    let with_password = |pass: String| {
        move |c: &mut serde_json::Value| {
            c["nats"]["connect_opts"]["user"] = "ops@example.com".into();
            c["nats"]["connect_opts"]["pass"] = pass.into();
        }
    };
    let mebibyte = request(
        &inject.server_key,
        &keys.issuer.public_key(),
        with_password("p".repeat(1 << 20)),
    );
    assert_eq!(
        inject.ask(mebibyte.into_bytes()).await?,
        Some(Vec::new()),
        "an empty reply: refused at once"
    );
    let e = inject
        .error_for(with_password("p".repeat(512 << 10)))
        .await?;
    assert_eq!(
        e,
        "password: password not checked: password longer than 4096 bytes"
    );
    let e = inject
        .error_for(|c| {
            c["nats"]["connect_opts"]["user"] = "slowpoke".into();
            c["nats"]["connect_opts"]["pass"] = "whatever".into();
        })
        .await?;
    assert!(
        e.contains("exceeded its time limit of 100 ms") && e.contains("verifying password hashes"),
        "{e}"
    );
    assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    assert_eq!(
        raw::user_pass(server.port, "ops@example.com", "0ps-pass").await?,
        Outcome::Admitted
    );
    Ok(())
}

/// Routes pick plugin chains by username pattern and connection type; the first match
/// wins, a chain may mix a partner plugin with a built-in one, and a credential no route
/// takes is refused with a reason.
#[tokio::test]
async fn routes_pick_chains_by_username_and_connection_type() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n{}\
         plugins:\n  - name: bots\n    builtin: misbehave\n    settings:\n      behaviour: allow\n      \
         grant: {{ account: DEVICES, publish: {{ allow: [\"bots.>\"] }}, subscribe: {{ allow: [\"bots.>\"] }} }}\n\
         routes:\n  - name: bots\n    match: {{ credentials: user-password, username: \"bot-*\", client_types: nats }}\n    \
         plugins: [bots]\n  - name: people\n    match: {{ credentials: [user-password] }}\n    plugins: [password]\n",
        server.url(),
        inject.nats_entry(),
        entries()
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;

    // bot-*: the bots plugin admits any password (a partner's decision to make).
    assert_eq!(
        raw::user_pass(server.port, "bot-17", "anything").await?,
        Outcome::Admitted
    );
    // Anyone else: the password plugin.
    assert_eq!(
        raw::user_pass(server.port, "ops@example.com", "0ps-pass").await?,
        Outcome::Admitted
    );
    assert_eq!(
        raw::user_pass(server.port, "bob", "anything").await?,
        Outcome::Refused("Authorization Violation".into())
    );
    // A bot over websocket does not match the bots route; the people route refuses it.
    let e = inject
        .error_for(|c| {
            c["nats"]["client_info"]["type"] = "websocket".into();
            c["nats"]["connect_opts"]["user"] = "bot-17".into();
            c["nats"]["connect_opts"]["pass"] = "anything".into();
        })
        .await?;
    assert_eq!(e, "people: no plugin accepted the credential");
    // No route takes anonymous clients or tokens here.
    let e = inject.error_for(|_| {}).await?;
    assert_eq!(
        e,
        "noauth authentication is not enabled: no route takes a none credential"
    );

    let m = scrape(callout.app().http_addr()).await?;
    assert_eq!(
        count(&m, "auth_route_attempts_total{route=\"bots\"}"),
        1,
        "{m}"
    );
    assert_eq!(count(&m, "auth_route_failures_total{route=\"people\"}"), 2);
    Ok(())
}

/// `check` (and every load) refuses routes that cannot work as written: one an earlier
/// route shadows, a plugin that takes none of its route's credentials, a credential its
/// chain cannot take.
#[test]
fn check_refuses_routes_that_cannot_work() -> Result<()> {
    let check_routes = |routes: &str| -> Result<(bool, String)> {
        let c = check(&format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\n{}  \
             noauth: {{ account: A, permissions: {{ sub: {{ allow: [x] }} }} }}\nroutes:\n{routes}",
            entries(),
        ))?;
        Ok((c.ok, c.stdout + &c.stderr))
    };
    let (ok, out) = check_routes(
        "  - { name: devices, match: { credentials: user-password, username: 'dev-*' }, plugins: [password] }\n  \
         - { name: people, match: { credentials: user-password }, plugins: [password] }\n  \
         - { name: anonymous, plugins: [noauth] }\n",
    )?;
    assert!(ok, "{out}");
    assert!(out.contains("routes [devices, people, anonymous]"), "{out}");
    for (routes, reason) in [
        (
            "  - { name: people, match: { credentials: user-password }, plugins: [password] }\n  \
             - { name: devices, match: { credentials: user-password, username: 'dev-*' }, plugins: [password] }\n",
            "routes[1] (devices): never used: route \"people\" before it takes every request it matches",
        ),
        (
            "  - { name: people, match: { credentials: bearer-token }, plugins: [password] }\n",
            "routes[0] (people): plugin \"password\" takes user-password, none of the route's credentials (bearer-token)",
        ),
        (
            "  - { name: people, match: { credentials: [user-password, none] }, plugins: [password] }\n",
            "routes[0] (people): no plugin of the route takes none credentials",
        ),
    ] {
        let (ok, out) = check_routes(routes)?;
        assert!(!ok && out.contains(reason), "{routes}\n{out}");
    }
    Ok(())
}
