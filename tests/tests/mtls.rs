//! End to end, mtls mode: a real nats-server with a TLS client port and an MQTT listener
//! over TLS, both `verify: true`, hands each verified client chain to the callout host,
//! whose WebAssembly mtls plugin maps the certificate to a permissions entry.
//!
//! The PKI (rcgen): the *device CA* issues device identities and is the callout's
//! `mtls.ca_file`; the *ops CA* issues the server's certificate and the service users'
//! (callout, platform) client certificates, so nats-server trusts it for client
//! certificates too, but device identities must not come from it: a device certificate
//! from the ops CA passes nats-server's handshake and is refused by the callout's own
//! chain check (defence in depth). A *foreign CA* nobody trusts and an expired device
//! certificate never get past the handshake; the plugin's own expiry and two-CN checks
//! are unit-tested in plugins/mtls with the SDK's TestHost.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use async_nats::ConnectErrorKind;
use futures::StreamExt;
use nats_callout::pipeline::routing::Mode;
use nats_callout_tests::pki::{self, Ca, Files, rcgen::DnType, rcgen::SanType};
use nats_callout_tests::{
    Callout, Keys, NatsServer, connect, connect_watching, expect_server_error, free_port,
    init_tracing, mqtt, synced,
};
use rumqttc::QoS;

const RECV: std::time::Duration = std::time::Duration::from_secs(5);

/// Certificates on disk, and the CAs to issue more.
struct Pki {
    dir: tempfile::TempDir,
    device_ca: Ca,
    ops_ca: Ca,
    foreign_ca: Ca,
    ops_ca_file: PathBuf,
    device_ca_file: PathBuf,
    platform: Files,
}

impl Pki {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let device_ca = Ca::new("Device CA")?;
        let ops_ca = Ca::new("Ops CA")?;
        let foreign_ca = Ca::new("Foreign CA")?;
        let ops_ca_file = pki::write_bundle(&dir.path().join("ops-ca.pem"), &[&ops_ca.pem])?;
        let device_ca_file =
            pki::write_bundle(&dir.path().join("device-ca.pem"), &[&device_ca.pem])?;
        let platform = ops_ca.client("platform")?.write(dir.path(), "platform")?;
        Ok(Self {
            dir,
            device_ca,
            ops_ca,
            foreign_ca,
            ops_ca_file,
            device_ca_file,
            platform,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A device certificate `CN=<cn>` from the device CA, written as `<file>.pem`.
    fn device(&self, cn: &str) -> Result<Files> {
        self.device_ca.client(cn)?.write(self.path(), cn)
    }

    /// NATS client options presenting `files`, trusting the ops CA for the server.
    fn nats_options(&self, files: &Files) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(self.ops_ca_file.clone())
            .add_client_certificate(files.cert.clone(), files.key.clone())
    }

    fn mqtt_options(
        &self,
        client_id: &str,
        port: u16,
        files: &Files,
    ) -> Result<rumqttc::MqttOptions> {
        let tls = mqtt::tls_config(&self.ops_ca_file, &files.cert, &files.key)?;
        Ok(mqtt::options(client_id, port, tls))
    }
}

/// nats-server config of the mTLS cluster: TLS client port and MQTT listener, both
/// verifying client certificates against the device and ops CAs; JetStream (MQTT needs
/// it, in the server and in the account MQTT clients land in) and a server name.
fn mtls_server_config(keys: &Keys, pki: &Pki, mqtt_port: u16) -> Result<String> {
    let server = pki.ops_ca.server()?.write(pki.path(), "server")?;
    let clients_ca = pki::write_bundle(
        &pki.path().join("clients-ca.pem"),
        &[&pki.device_ca.pem, &pki.ops_ca.pem],
    )?;
    let js = pki.path().join("jetstream");
    let tls = format!(
        "cert_file: {:?}\n    key_file: {:?}\n    ca_file: {:?}\n    verify: true\n    timeout: 2",
        server.cert, server.key, clients_ca
    );
    Ok(format!(
        r#"
server_name: mtls-1
tls {{
    {tls}
}}
jetstream {{ store_dir: {js:?} }}
mqtt {{
  listen: 127.0.0.1:{mqtt_port}
  tls {{
    {tls}
  }}
}}
accounts {{
  AUTH {{ users: [ {{ nkey: {callout} }} ] }}
  DEVICES {{ jetstream: enabled, users: [ {{ user: platform, password: platform }} ] }}
  ANONYMOUS {{}}
}}
authorization {{
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ {callout}, platform ]
    xkey: {xkey}
  }}
}}
"#,
        callout = keys.callout.public_key(),
        issuer = keys.issuer.public_key(),
        xkey = keys.xkey.public_key(),
    ))
}

/// Callout config: the mTLS cluster (over TLS with the callout's own certificate) and,
/// optionally, a plain main cluster, served by one host at once.
fn callout_yaml(pki: &Pki, mtls_url: &str, main_url: Option<&str>) -> Result<String> {
    let callout = pki
        .ops_ca
        .client("nats-callout")?
        .write(pki.path(), "callout")?;
    let main = main_url
        .map(|u| format!("  - name: main\n    url: {u}\n    nkey_seed_file: nkey-seed\n"))
        .unwrap_or_default();
    Ok(format!(
        r#"nats:
{main}  - name: mtls
    url: {mtls_url}
    nkey_seed_file: nkey-seed
    tls: {{ ca_file: {ca:?}, cert_file: {cert:?}, key_file: {key:?} }}
issuer_seed_file: issuer-seed
xkey_seed_file: xkey-seed
mtls:
  ca_file: {device_ca:?}
permissions:
  mtls:
    bms-gateway:
      identity: "CN=bms.cpc-1"
      account: DEVICES
      permissions: {{ pub: {{ allow: ["sensors.>"] }}, sub: {{ allow: ["commands.>"] }} }}
    acme-gateway:
      identity: "CN=gw-2,O=Acme\\, Inc."
      account: DEVICES
      permissions: {{ pub: {{ allow: ["gateways.{{{{cert.cn}}}}.>"] }}, sub: {{ allow: ["_INBOX.>"] }} }}
    spiffe-device:
      san: {{ uri: "spiffe://example.org/bms/cpc-3" }}
      account: DEVICES
      permissions: {{ pub: {{ allow: ["devices.{{{{name}}}}.>"] }}, sub: {{ allow: ["_INBOX.>"] }} }}
  noauth:
    account: ANONYMOUS
    permissions: {{ pub: {{ allow: ["public.>"] }}, sub: {{ allow: ["public.>"] }} }}
"#,
        ca = pki.ops_ca_file,
        cert = callout.cert,
        key = callout.key,
        device_ca = pki.device_ca_file,
    ))
}

/// Fields drop in order: the servers stop before `pki` (whose folder holds their
/// JetStream store) is removed.
struct Deployment {
    callout: Callout,
    server: NatsServer,
    main: Option<NatsServer>,
    mqtt_port: u16,
    pki: Pki,
}

async fn deploy(with_main: bool) -> Result<Deployment> {
    init_tracing();
    let keys = Keys::generate();
    let pki = Pki::new()?;
    let mqtt_port = free_port()?;
    let server = NatsServer::start(&mtls_server_config(&keys, &pki, mqtt_port)?)?;
    let main = if with_main {
        Some(NatsServer::start(
            &nats_callout_tests::callout_server_config(&keys, true),
        )?)
    } else {
        None
    };
    let yaml = callout_yaml(
        &pki,
        &server.url(),
        main.as_ref().map(NatsServer::url).as_deref(),
    )?;
    let callout = Callout::start(&keys, &yaml).await?;
    Ok(Deployment {
        pki,
        server,
        mqtt_port,
        main,
        callout,
    })
}

impl Deployment {
    async fn platform(&self) -> Result<async_nats::Client> {
        let options = self
            .pki
            .nats_options(&self.pki.platform)
            .user_and_password("platform".into(), "platform".into());
        Ok(connect(&self.server.url(), options).await?)
    }

    fn mtls_counts(&self) -> (u64, u64) {
        let c = self.callout.app().metrics().mode(Mode::Mtls);
        (c.attempts.get(), c.failures.get())
    }

    /// Connect as `files` and expect the callout to refuse with `reason` (seen in
    /// nats-server's log, where the server records the callout's error response).
    async fn expect_denied(&self, files: &Files, reason: &str) -> Result<()> {
        let err = connect(&self.server.url(), self.pki.nats_options(files))
            .await
            .err()
            .context("connection must be refused")?;
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{err}"
        );
        // nats-server logs the callout's error just after refusing the client: wait for it.
        let deadline = std::time::Instant::now() + RECV;
        loop {
            let log = self.server.log();
            if log
                .lines()
                .any(|l| l.contains("Auth callout") && l.contains(reason))
            {
                return Ok(());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no callout error {reason:?} in the server log:\n{log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn nats_device_publishes_and_receives_within_its_grant() -> Result<()> {
    let d = deploy(false).await?;
    let platform = d.platform().await?;
    let mut probes = platform.subscribe("*.probe").await?;
    let mut sensors = platform.subscribe("sensors.x").await?;
    synced(&platform).await?;

    let device = d.pki.device("bms.cpc-1")?;
    let (client, mut errors) =
        connect_watching(&d.server.url(), d.pki.nats_options(&device)).await?;
    let mut commands = client.subscribe("commands.x").await?;
    client.flush().await?;

    client.publish("sensors.x", "temp=21".into()).await?;
    client.flush().await?;
    let msg = tokio::time::timeout(RECV, sensors.next())
        .await?
        .expect("sensor");
    assert_eq!(&msg.payload[..], b"temp=21");

    platform.publish("commands.x", "reboot".into()).await?;
    platform.flush().await?;
    let cmd = tokio::time::timeout(RECV, commands.next())
        .await?
        .expect("command");
    assert_eq!(&cmd.payload[..], b"reboot");

    // Outside the grant: refused by the server, never delivered. Both probes come from one
    // connection in order, so the first one the platform sees proves the other dropped.
    client.publish("other.probe", "x".into()).await?;
    client.publish("sensors.probe", "y".into()).await?;
    client.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;
    let first = tokio::time::timeout(RECV, probes.next())
        .await?
        .expect("probe");
    assert_eq!(first.subject.as_str(), "sensors.probe");
    let _denied = client.subscribe("other.>").await?;
    client.flush().await?;
    expect_server_error(&mut errors, "permissions violation for subscription").await?;
    assert_eq!(d.mtls_counts(), (1, 0));
    Ok(())
}

#[tokio::test]
async fn mqtt_device_publishes_and_receives_commands() -> Result<()> {
    let d = deploy(false).await?;
    let platform = d.platform().await?;
    let mut probes = platform.subscribe("*.probe").await?;
    synced(&platform).await?;

    let device = d.pki.device("bms.cpc-1")?;
    let mut mq = mqtt::connect(d.pki.mqtt_options("bms-cpc-1", d.mqtt_port, &device)?)
        .await?
        .map_err(anyhow::Error::msg)
        .context("MQTT connect")?;
    mq.subscribe("commands/x", QoS::AtLeastOnce).await?;

    // MQTT topic sensors/probe is NATS subject sensors.probe; other/probe is outside the
    // grant. Sent in this order on one connection: the first probe the platform sees
    // shows the other one was dropped.
    mq.client
        .publish("other/probe", QoS::AtMostOnce, false, b"x".to_vec())
        .await?;
    mq.publish("sensors/probe", b"temp=21").await?;
    let first = tokio::time::timeout(RECV, probes.next())
        .await?
        .expect("probe");
    assert_eq!(first.subject.as_str(), "sensors.probe");
    assert_eq!(&first.payload[..], b"temp=21");

    platform.publish("commands.x", "reboot".into()).await?;
    platform.flush().await?;
    let cmd = mq.next_message().await?;
    assert_eq!(cmd.topic, "commands/x");
    assert_eq!(&cmd.payload[..], b"reboot");

    let refused = mq.subscribe("other/#", QoS::AtMostOnce).await.unwrap_err();
    assert!(
        refused.to_string().contains("refused: Some(Failure)"),
        "{refused}"
    );
    assert_eq!(d.mtls_counts(), (1, 0));
    Ok(())
}

#[tokio::test]
async fn full_dn_and_spiffe_identities_end_to_end() -> Result<()> {
    let d = deploy(false).await?;
    let platform = d.platform().await?;
    let mut probes = platform.subscribe("*.>").await?;
    // In place once it receives its own marker (`synced` cannot tell here: `*.>` also
    // catches the round trip's request to an inbox).
    platform.publish("sync.marker", "".into()).await?;
    let marker = tokio::time::timeout(RECV, probes.next())
        .await?
        .expect("marker");
    assert_eq!(marker.subject.as_str(), "sync.marker");

    // Subject CN=gw-2,O=Acme\, Inc. as the host prints it from the real certificate.
    let acme = d.pki.device_ca.issue(&pki::client_params(
        &[
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::CommonName, "gw-2"),
        ],
        &[],
    ))?;
    let acme = acme.write(d.pki.path(), "acme")?;
    let client = connect(&d.server.url(), d.pki.nats_options(&acme)).await?;
    client.publish("gateways.gw-2.state", "up".into()).await?;
    client.flush().await?;
    let msg = tokio::time::timeout(RECV, probes.next())
        .await?
        .expect("msg");
    assert_eq!(msg.subject.as_str(), "gateways.gw-2.state");

    // Same CN, other organisation: the full-DN entry does not match.
    let other = d.pki.device_ca.issue(&pki::client_params(
        &[
            (DnType::OrganizationName, "Other"),
            (DnType::CommonName, "gw-2"),
        ],
        &[],
    ))?;
    let other = other.write(d.pki.path(), "other-org")?;
    d.expect_denied(&other, "unknown certificate identity")
        .await?;

    // A SPIFFE ID in the URI SAN, no CN at all.
    let spiffe = d.pki.device_ca.issue(&pki::client_params(
        &[(DnType::OrganizationName, "Acme")],
        &[SanType::URI("spiffe://example.org/bms/cpc-3".try_into()?)],
    ))?;
    let spiffe = spiffe.write(d.pki.path(), "spiffe")?;
    let client = connect(&d.server.url(), d.pki.nats_options(&spiffe)).await?;
    client
        .publish("devices.spiffe-device.state", "up".into())
        .await?;
    client.flush().await?;
    let msg = tokio::time::timeout(RECV, probes.next())
        .await?
        .expect("msg");
    assert_eq!(msg.subject.as_str(), "devices.spiffe-device.state");
    Ok(())
}

#[tokio::test]
async fn unknown_two_cn_and_wrong_ca_certificates_are_denied_with_a_reason() -> Result<()> {
    let d = deploy(false).await?;

    let unknown = d.pki.device("unknown.cpc-9")?;
    d.expect_denied(
        &unknown,
        r#"mtls: unknown certificate identity "CN=unknown.cpc-9""#,
    )
    .await?;

    let two_cns = d.pki.device_ca.issue(&pki::client_params(
        &[
            (DnType::CommonName, "bms.cpc-1"),
            (DnType::CustomDnType(vec![2, 5, 4, 3]), "admin"),
        ],
        &[],
    ))?;
    let two_cns = two_cns.write(d.pki.path(), "two-cns")?;
    d.expect_denied(&two_cns, "has 2 common names (CN); at most one is allowed")
        .await?;

    // A configured identity, but issued by the ops CA: nats-server trusts that CA (for
    // service users) and lets the handshake through; the callout's CA bundle does not.
    let wrong_ca = d
        .pki
        .ops_ca
        .client("bms.cpc-1")?
        .write(d.pki.path(), "wrong-ca")?;
    d.expect_denied(
        &wrong_ca,
        "mtls: client certificate rejected: the client certificate is not issued by a CA in the configured CA bundle",
    )
    .await?;

    // Over MQTT the same refusal is a CONNACK error, never an anonymous session.
    let refused = mqtt::connect(d.pki.mqtt_options("intruder", d.mqtt_port, &unknown)?).await?;
    assert_eq!(refused.err().as_deref(), Some("refused: NotAuthorized"));

    assert_eq!(d.mtls_counts(), (4, 4), "(attempts, failures)");
    let noauth = d.callout.app().metrics().mode(Mode::Noauth);
    assert_eq!(noauth.attempts.get(), 0, "never anonymous");
    Ok(())
}

#[tokio::test]
async fn certificates_nats_server_refuses_never_reach_the_callout() -> Result<()> {
    let d = deploy(false).await?;
    // From a CA nats-server does not trust.
    let foreign = d
        .pki
        .foreign_ca
        .client("bms.cpc-1")?
        .write(d.pki.path(), "foreign")?;
    // Expired: Go's verification at the handshake rejects it before any callout (the
    // plugin's own check of not_after is covered by its unit tests).
    let mut params = pki::client_params(&[(DnType::CommonName, "bms.cpc-1")], &[]);
    pki::expired(&mut params);
    let expired = d
        .pki
        .device_ca
        .issue(&params)?
        .write(d.pki.path(), "expired")?;
    for files in [&foreign, &expired] {
        let err = connect(&d.server.url(), d.pki.nats_options(files))
            .await
            .err()
            .context("handshake must fail")?;
        assert_ne!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{err}"
        );
        let refused = mqtt::connect(d.pki.mqtt_options("x", d.mqtt_port, files)?).await?;
        let refused = refused.err().context("MQTT handshake must fail")?;
        assert!(refused.contains("fatal alert"), "{refused}");
    }
    assert_eq!(d.mtls_counts(), (0, 0), "the callout was never asked");
    Ok(())
}

#[tokio::test]
async fn one_host_serves_the_main_and_the_mtls_cluster() -> Result<()> {
    let d = deploy(true).await?;
    let main_url = d.main.as_ref().map(NatsServer::url).context("main")?;

    // Plain cluster: an anonymous client gets the noauth grant.
    let anon = connect(&main_url, async_nats::ConnectOptions::new()).await?;
    let mut public = anon.subscribe("public.news").await?;
    anon.flush().await?;
    // mTLS cluster, at the same time: the device gets its entry's grant.
    let device = d.pki.device("bms.cpc-1")?;
    let client = connect(&d.server.url(), d.pki.nats_options(&device)).await?;
    let mut commands = client.subscribe("commands.x").await?;
    client.flush().await?;

    anon.publish("public.news", "hello".into()).await?;
    anon.flush().await?;
    let msg = tokio::time::timeout(RECV, public.next())
        .await?
        .expect("public");
    assert_eq!(&msg.payload[..], b"hello");

    let platform = d.platform().await?;
    platform.publish("commands.x", "reboot".into()).await?;
    platform.flush().await?;
    let cmd = tokio::time::timeout(RECV, commands.next())
        .await?
        .expect("command");
    assert_eq!(&cmd.payload[..], b"reboot");

    let m = &d.callout.app().metrics();
    assert_eq!(m.mode(Mode::Noauth).attempts.get(), 1);
    assert_eq!(d.mtls_counts(), (1, 0));
    Ok(())
}
