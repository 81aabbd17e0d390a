//! Bad input on the request subject and a misbehaving plugin: each gets a clear error
//! (a signed error response where the request can be addressed, a log line otherwise),
//! and the next good connection still succeeds.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use nats_callout::jwt::{self, WithJti};
use nats_callout::request::unix_now;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{Callout, Keys, NatsServer, callout_server_config, connect, init_tracing};
use serde::Serialize;

/// Claims of a hand-made JWT.
#[derive(Serialize)]
#[serde(transparent)]
struct Claims(serde_json::Value);

impl WithJti for Claims {
    fn set_jti(&mut self, jti: String) {
        if let Some(m) = self.0.as_object_mut() {
            m.insert("jti".into(), jti.into());
        }
    }
}

/// A request as nats-server would send it, signed by `server`, with `edit` applied.
fn request(
    server: &nkeys::KeyPair,
    issuer: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let user = nkeys::KeyPair::new_user().public_key();
    let mut claims = serde_json::json!({
        "iat": unix_now(),
        "exp": unix_now() + 2,
        "iss": server.public_key(),
        "sub": issuer,
        "aud": "nats-authorization-request",
        "nats": {
            "server_id": { "name": "forge", "host": "127.0.0.1", "id": server.public_key(), "version": "2.15.1" },
            "user_nkey": user,
            "client_info": { "host": "127.0.0.1", "id": 7, "kind": "Client", "type": "nats" },
            "connect_opts": { "lang": "rust", "version": "1", "protocol": 1 },
            "type": "authorization_request",
            "version": 2
        }
    });
    edit(&mut claims);
    jwt::encode(&mut Claims(claims), server).expect("encode")
}

struct Setup {
    server: NatsServer,
    _side: NatsServer,
    keys: Keys,
    _callout: Callout,
    /// A client on the side server, where publishing on the request subject is allowed.
    insider: async_nats::Client,
}

/// The callout serves the real callout server and, at the same time, a plain "side"
/// server. nats-server forbids clients to publish on `$SYS.REQ.USER.AUTH` where auth
/// callout is configured, so hostile requests are injected through the side server:
/// they travel the same NATS path into the same host as the real ones.
async fn setup(yaml_extra: &str) -> Result<Setup> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let side = NatsServer::start("")?;
    let yaml = format!(
        "nats:\n  - {{ name: main, url: {}, nkey_seed_file: nkey-seed }}\n  - {{ name: side, url: {} }}\n\
         issuer_seed_file: issuer-seed\n{yaml_extra}",
        server.url(),
        side.url()
    );
    let callout = Callout::start(&keys, &yaml).await?;
    let insider = connect(&side.url(), async_nats::ConnectOptions::new()).await?;
    Ok(Setup {
        server,
        _side: side,
        keys,
        _callout: callout,
        insider,
    })
}

const NOAUTH: &str = "permissions:\n  noauth:\n    account: ANONYMOUS\n    permissions:\n      pub: { allow: [\"public.>\"] }\n";

impl Setup {
    /// Publish raw bytes on the request subject and return the reply, if any in 1 s.
    async fn ask(&self, payload: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let inbox = self.insider.new_inbox();
        let mut replies = self.insider.subscribe(inbox.clone()).await?;
        self.insider
            .publish_with_reply("$SYS.REQ.USER.AUTH", inbox, payload.into())
            .await?;
        self.insider.flush().await?;
        Ok(tokio::time::timeout(Duration::from_secs(1), replies.next())
            .await
            .ok()
            .flatten()
            .map(|m| m.payload.to_vec()))
    }

    /// The `nats.error` of a signed response, after checking it is ours.
    async fn error_for(&self, payload: Vec<u8>) -> Result<String> {
        let reply = self.ask(payload).await?.context("no response")?;
        let token = String::from_utf8(reply)?;
        let claims: serde_json::Value = jwt::decode_verified(&token)?;
        assert_eq!(claims["iss"], self.keys.issuer.public_key().as_str());
        assert!(
            claims["nats"]["jwt"].is_null(),
            "an error response carries no user JWT"
        );
        Ok(claims["nats"]["error"].as_str().unwrap_or("").to_owned())
    }

    async fn anonymous_is_admitted(&self) -> Result<()> {
        let outcome = raw::connect(self.server.port, |_| serde_json::json!({})).await?;
        assert_eq!(outcome, Outcome::Admitted);
        Ok(())
    }
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_service_continues() -> Result<()> {
    let s = setup(NOAUTH).await?;
    let issuer = s.keys.issuer.public_key();
    let server = nkeys::KeyPair::new_server();

    // A control: a well-formed forged request is decided (its "client" is anonymous).
    let ok = s
        .ask(request(&server, &issuer, |_| {}).into_bytes())
        .await?;
    assert!(ok.is_some());

    // Signed by another key than its issuer.
    let other = nkeys::KeyPair::new_server();
    let mut forged = request(&other, &issuer, |_| {});
    let good = request(&server, &issuer, |_| {});
    let sig = good.rsplit('.').next().unwrap_or_default().to_owned();
    forged.truncate(forged.rfind('.').unwrap_or(0) + 1);
    forged.push_str(&sig);
    let e = s.error_for(forged.into_bytes()).await?;
    assert!(e.contains("signature does not verify"), "{e}");

    let e = s
        .error_for(request(&server, &issuer, |c| c["aud"] = "someone-else".into()).into_bytes())
        .await?;
    assert!(e.contains("audience"), "{e}");

    let e = s
        .error_for(request(&server, &issuer, |c| c["exp"] = (unix_now() - 60).into()).into_bytes())
        .await?;
    assert!(e.contains("expired"), "{e}");

    let e = s
        .error_for(
            request(&server, &issuer, |c| {
                if let Some(m) = c.as_object_mut() {
                    m.remove("exp");
                }
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("no expiry"), "{e}");

    let e = s
        .error_for(
            request(&server, &issuer, |c| {
                c["sub"] = nkeys::KeyPair::new_account().public_key().into()
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("this service signs as"), "{e}");

    // Not a server key as issuer (a user key signing its own request).
    let user = nkeys::KeyPair::new_user();
    let e = s
        .error_for(
            request(&user, &issuer, |c| {
                c["nats"]["server_id"]["id"] = user.public_key().into()
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("not a server key"), "{e}");

    // Garbage cannot be addressed: no response, a log line, and nothing breaks.
    for garbage in [
        b"\x00\xffgarbage".to_vec(),
        b"eyJ.eyJ.x".to_vec(),
        vec![b'.'; 100_000],
        Vec::new(),
    ] {
        assert_eq!(s.ask(garbage).await?, None);
    }
    s.anonymous_is_admitted().await
}

#[tokio::test]
async fn trapping_plugin_denies_with_cause_and_host_keeps_serving() -> Result<()> {
    // Anonymous clients go to a plugin that traps on every call; NKey clients to the
    // real nkey plugin, which must keep working right beside it.
    let device = nkeys::KeyPair::new_user();
    let yaml = format!(
        "plugins:\n  - {{ mode: noauth, path: misbehave.wasm, settings: {{ behaviour: trap }} }}\n  \
         - {{ mode: nkey, path: nkey.wasm }}\npermissions:\n  nkey:\n    dev:\n      public_key: {}\n      \
         account: DEVICES\n      permissions: {{ pub: {{ allow: [\"device-state.dev\"] }} }}\n",
        device.public_key()
    );
    let s = setup(&yaml).await?;
    let issuer = s.keys.issuer.public_key();
    let server = nkeys::KeyPair::new_server();
    for _ in 0..3 {
        let e = s
            .error_for(request(&server, &issuer, |_| {}).into_bytes())
            .await?;
        assert!(e.contains("trapped"), "{e}");
        let outcome = raw::connect(s.server.port, |_| serde_json::json!({})).await?;
        assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));
        let outcome = raw::connect(s.server.port, |nonce| {
            raw::nkey_connect(&device.public_key(), &device, nonce)
        })
        .await?;
        assert_eq!(outcome, Outcome::Admitted);
    }
    Ok(())
}
