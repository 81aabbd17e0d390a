//! End to end: a real nats-server delegates authentication to the callout host, which
//! answers through the WebAssembly noauth and nkey plugins.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect, connect_watching,
    expect_server_error, init_tracing, platform, stays_silent, synced,
};

const RECV: Duration = Duration::from_secs(5);

/// A device identity: an NKey and the name of its permissions entry.
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

    fn options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::with_nkey(self.key.seed().expect("seed"))
    }
}

/// Callout config: every device may publish its state and receive its commands, via
/// subject templates filled with the entry name; anonymous clients get `public.>`.
fn callout_yaml(url: &str, devices: &[&Device], xkey: bool) -> String {
    let mut entries = String::new();
    for d in devices {
        entries.push_str(&format!(
            "    {id}:\n      public_key: {pk}\n      account: DEVICES\n      permissions:\n        \
             pub: {{ allow: [\"device-state.{{{{name}}}}\", \"_INBOX.>\"] }}\n        \
             sub: {{ allow: [\"device-commands.{{{{name}}}}\", \"_INBOX.>\"] }}\n",
            id = d.id,
            pk = d.key.public_key()
        ));
    }
    let xkey = if xkey {
        "xkey_seed_file: xkey-seed\n"
    } else {
        ""
    };
    format!(
        "nats:\n  - url: {url}\n    nkey_seed_file: nkey-seed\nissuer_seed_file: issuer-seed\n{xkey}\
         permissions:\n  nkey:\n{entries}  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
         pub: {{ allow: [\"public.>\"] }}\n      sub: {{ allow: [\"public.>\"] }}\n"
    )
}

struct Deployment {
    server: NatsServer,
    _callout: Callout,
}

async fn deploy(devices: &[&Device], xkey: bool) -> Result<Deployment> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, xkey))?;
    let callout = Callout::start(&keys, &callout_yaml(&server.url(), devices, xkey)).await?;
    Ok(Deployment {
        server,
        _callout: callout,
    })
}

/// The state/command round trip between one device and the platform user.
async fn device_round_trip(url: &str, device: &Device) -> Result<()> {
    let platform = platform(url).await?;
    let mut states = platform.subscribe("device-state.>").await?;
    synced(&platform).await?;

    let client = connect(url, device.options()).await?;
    let mut commands = client
        .subscribe(format!("device-commands.{}", device.id))
        .await?;
    client.flush().await?;

    client
        .publish(format!("device-state.{}", device.id), "temp=21".into())
        .await?;
    client.flush().await?;
    let state = tokio::time::timeout(RECV, states.next())
        .await?
        .expect("state");
    assert_eq!(
        state.subject.as_str(),
        format!("device-state.{}", device.id)
    );
    assert_eq!(&state.payload[..], b"temp=21");

    platform
        .publish(format!("device-commands.{}", device.id), "reboot".into())
        .await?;
    platform.flush().await?;
    let command = tokio::time::timeout(RECV, commands.next())
        .await?
        .expect("command");
    assert_eq!(&command.payload[..], b"reboot");
    Ok(())
}

#[tokio::test]
async fn device_authenticates_and_pubsub() -> Result<()> {
    let device = Device::new("sensor-test-01");
    let d = deploy(&[&device], false).await?;
    device_round_trip(&d.server.url(), &device).await
}

#[tokio::test]
async fn device_cannot_access_other_device_subjects() -> Result<()> {
    let a = Device::new("sensor-a");
    let b = Device::new("sensor-b");
    let d = deploy(&[&a, &b], false).await?;
    let url = d.server.url();

    let platform = platform(&url).await?;
    let mut states = platform.subscribe("device-state.>").await?;
    synced(&platform).await?;
    let client_b = connect(&url, b.options()).await?;
    let mut b_commands = client_b.subscribe("device-commands.sensor-b").await?;
    client_b.flush().await?;

    let (client_a, mut errors) = connect_watching(&url, a.options()).await?;
    let _sneaky = client_a.subscribe("device-commands.sensor-b").await?;
    client_a.flush().await?;
    let e = expect_server_error(&mut errors, "permissions violation for subscription").await?;
    assert!(e.contains("device-commands.sensor-b"), "{e}");

    client_a
        .publish("device-state.sensor-b", "forged".into())
        .await?;
    client_a
        .publish("device-commands.sensor-b", "forged".into())
        .await?;
    client_a.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;

    // A's own subject still works, and is the only thing the platform sees from A.
    client_a
        .publish("device-state.sensor-a", "mine".into())
        .await?;
    client_a.flush().await?;
    let msg = tokio::time::timeout(RECV, states.next())
        .await?
        .expect("state");
    assert_eq!(msg.subject.as_str(), "device-state.sensor-a");
    assert!(
        stays_silent(&mut b_commands).await,
        "B must never see A's message"
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_client_gets_noauth_permissions_only() -> Result<()> {
    let device = Device::new("sensor-x");
    let d = deploy(&[&device], false).await?;
    let url = d.server.url();

    let (anon, mut errors) = connect_watching(&url, async_nats::ConnectOptions::new()).await?;
    let mut sub = anon.subscribe("public.news").await?;
    anon.flush().await?;
    anon.publish("public.news", "hi".into()).await?;
    let msg = tokio::time::timeout(RECV, sub.next()).await?.expect("msg");
    assert_eq!(&msg.payload[..], b"hi");

    anon.publish("device-state.sensor-x", "x".into()).await?;
    anon.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;

    // Anonymous lands in ANONYMOUS: the platform (DEVICES) never sees its public traffic.
    let platform = platform(&url).await?;
    let mut platform_public = platform.subscribe("public.>").await?;
    synced(&platform).await?;
    anon.publish("public.news", "again".into()).await?;
    anon.flush().await?;
    assert!(stays_silent(&mut platform_public).await);
    Ok(())
}

#[tokio::test]
async fn wrong_nkey_signature_is_refused_not_anonymous() -> Result<()> {
    let device = Device::new("sensor-y");
    let d = deploy(&[&device], false).await?;
    let port = d.server.port;
    let pk = device.key.public_key();

    // Signed by another key while claiming the device's public key.
    let thief = nkeys::KeyPair::new_user();
    let outcome = raw::connect(port, |nonce| raw::nkey_connect(&pk, &thief, nonce)).await?;
    assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));

    // A correctly signed but unknown key.
    let stranger = nkeys::KeyPair::new_user();
    let outcome = raw::connect(port, |nonce| {
        raw::nkey_connect(&stranger.public_key(), &stranger, nonce)
    })
    .await?;
    assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));

    // An nkey with no signature at all.
    let outcome = raw::connect(port, |_| serde_json::json!({ "nkey": pk })).await?;
    assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));

    // Username/password is not a mode here: refused, never anonymous.
    let outcome = raw::connect(port, |_| serde_json::json!({ "user": "bob", "pass": "x" })).await?;
    assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));

    // The real device still gets in.
    let outcome = raw::connect(port, |nonce| raw::nkey_connect(&pk, &device.key, nonce)).await?;
    assert_eq!(outcome, Outcome::Admitted);
    Ok(())
}

#[tokio::test]
async fn xkey_sealed_requests_and_responses() -> Result<()> {
    let device = Device::new("sensor-sealed");
    let d = deploy(&[&device], true).await?;
    device_round_trip(&d.server.url(), &device).await?;
    let outcome = raw::anonymous(d.server.port).await?;
    assert_eq!(outcome, Outcome::Admitted);
    Ok(())
}
