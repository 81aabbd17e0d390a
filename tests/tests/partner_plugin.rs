//! The example partner plugins, built as components the way a partner builds theirs and
//! loaded from the config's `plugins:` list: `examples/apikey-plugin` (its clients get
//! exactly their entry's permissions, and keys it does not know are refused) and
//! `examples/registry-plugin` (asks a real HTTP device registry about each NKey device).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::web::WebServer;
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect_watching, expect_server_error,
    init_tracing,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn services_connect_with_their_api_keys() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let digest: String = Sha256::digest(b"billing-key-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - mode: oauth2\n    builtin: apikey\n    settings:\n      keys:\n        \
         billing:\n          sha256: {digest}\n          account: DEVICES\n          permissions:\n            \
         pub: {{ allow: [\"billing.{{{{name}}}}.>\"] }}\n",
        server.url()
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    assert_eq!(
        raw::bearer(server.port, "billing-key-1").await?,
        Outcome::Admitted
    );
    assert_eq!(
        raw::bearer(server.port, "guessed-key").await?,
        Outcome::Refused("Authorization Violation".into())
    );

    // Admitted with the entry's permissions, and only those.
    let options = async_nats::ConnectOptions::with_token("billing-key-1".into());
    let (client, mut errors) = connect_watching(&server.url(), options).await?;
    client
        .publish("billing.billing.invoice", "1".into())
        .await?;
    client.publish("payroll.run", "1".into()).await?;
    client.flush().await?;
    let e = expect_server_error(&mut errors, "permissions violation").await?;
    assert!(e.contains("payroll.run"), "{e}");
    Ok(())
}

/// CONNECT of a device signing the server's nonce with `key`.
fn signed(key: &nkeys::KeyPair) -> impl FnOnce(&str) -> Value + '_ {
    move |nonce| raw::nkey_connect(&key.public_key(), key, nonce)
}

/// The registry: public key to device record; an unknown key is a 404.
type Devices = Arc<Mutex<BTreeMap<String, Value>>>;

async fn device_record(
    State(devices): State<Devices>,
    Path(key): Path<String>,
) -> impl IntoResponse {
    let record = devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    match record {
        Some(Value::String(s)) if s == "fail" => {
            (StatusCode::SERVICE_UNAVAILABLE, "down".to_owned())
        }
        Some(record) => (StatusCode::OK, record.to_string()),
        None => (StatusCode::NOT_FOUND, "{}".to_owned()),
    }
}

#[tokio::test]
async fn devices_are_admitted_as_the_registry_says() -> Result<()> {
    init_tracing();
    let devices: Devices = Arc::default();
    let registry = WebServer::start(
        Router::new()
            .route("/devices/{key}", get(device_record))
            .with_state(devices.clone()),
    )
    .await?;
    let [active, inactive, unknown, known_here, broken] =
        std::array::from_fn(|_| nkeys::KeyPair::new_user());
    {
        let mut d = devices.lock().unwrap_or_else(|e| e.into_inner());
        d.insert(
            active.public_key(),
            json!({"id": "dev-1", "active": true, "site": "plant-3"}),
        );
        d.insert(
            inactive.public_key(),
            json!({"id": "dev-2", "active": false, "site": "plant-3"}),
        );
        d.insert(broken.public_key(), json!("fail"));
    }
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = format!(
        r#"nats:
  - {{ url: {url}, nkey_seed_file: nkey-seed }}
{inject}issuer_seed_file: issuer-seed
plugins:
  - name: registry
    builtin: registry
    settings:
      registry: "{registry}"
      grant:
        account: DEVICES
        permissions:
          pub: {{ allow: ["telemetry.{{{{site}}}}.{{{{device}}}}"] }}
          sub: {{ allow: ["commands.{{{{device}}}}"] }}
    allowed_outbound_hosts: ["{registry}"]
routes:
  - {{ name: devices, match: {{ credentials: nkey }}, plugins: [registry, nkey] }}
permissions:
  nkey:
    bench-device:
      public_key: {known_here}
      account: DEVICES
      permissions: {{ pub: {{ allow: ["bench.>"] }} }}
"#,
        url = server.url(),
        inject = inject.nats_entry(),
        registry = registry.url(""),
        known_here = known_here.public_key(),
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    let port = server.port;
    let refused = Outcome::Refused("Authorization Violation".into());

    // Active: admitted with its device's and site's subjects only.
    let options = async_nats::ConnectOptions::with_nkey(active.seed()?);
    let (client, mut errors) = connect_watching(&server.url(), options).await?;
    client
        .publish("telemetry.plant-3.dev-1", "1".into())
        .await?;
    client
        .publish("telemetry.plant-3.dev-9", "1".into())
        .await?;
    client.flush().await?;
    let e = expect_server_error(&mut errors, "permissions violation").await?;
    assert!(e.contains("telemetry.plant-3.dev-9"), "{e}");
    // Reconnects are answered from the plugin cache.
    let served = registry.served();
    assert_eq!(
        raw::connect(port, signed(&active)).await?,
        Outcome::Admitted
    );
    assert_eq!(registry.served(), served);

    // Inactive, unknown to everyone, a registry failure: refused. Unknown to the registry
    // but known to the nkey plugin next in the route: admitted by it.
    assert_eq!(raw::connect(port, signed(&inactive)).await?, refused);
    assert_eq!(raw::connect(port, signed(&unknown)).await?, refused);
    assert_eq!(raw::connect(port, signed(&broken)).await?, refused);
    assert_eq!(
        raw::connect(port, signed(&known_here)).await?,
        Outcome::Admitted
    );
    // The reasons, from requests forged with a nonce of our own.
    let reason = |key: &nkeys::KeyPair| {
        let connect = raw::nkey_connect(&key.public_key(), key, "forged-nonce");
        inject.error_for(move |c| {
            c["nats"]["client_info"]["nonce"] = "forged-nonce".into();
            c["nats"]["connect_opts"]["nkey"] = connect["nkey"].clone();
            c["nats"]["connect_opts"]["sig"] = connect["sig"].clone();
        })
    };
    assert_eq!(reason(&active).await?, "");
    assert_eq!(
        reason(&inactive).await?,
        "devices: device \"dev-2\" is not active"
    );
    assert_eq!(
        reason(&broken).await?,
        "devices: registry answered HTTP 503"
    );
    assert_eq!(reason(&unknown).await?, "devices: unknown nkey");
    Ok(())
}
