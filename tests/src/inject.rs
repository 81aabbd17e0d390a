//! Forged authorization requests, injected into the callout over NATS.
//!
//! nats-server forbids clients to publish on `$SYS.REQ.USER.AUTH` where auth callout
//! is configured, so the callout under test also serves a plain "side" server, where a
//! test client may publish there. Requests travel the same NATS path into the same host
//! as the real ones, and the test reads the signed response (or its absence).

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use nats_callout::nats::jwt;
use nats_callout::pipeline::request::unix_now;

use crate::{NatsServer, connect};

/// A request as nats-server would send it for an anonymous client, signed by `server`
/// for the callout whose issuer is `issuer`, with `edit` applied to the claims.
pub fn request(
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
    let key = jwt::SigningKey::from_nkey(server).expect("a generated server key has a seed");
    jwt::encode(&mut claims, &key).expect("encoding a JSON object cannot fail")
}

/// The side server and a client on it.
pub struct Injector {
    pub side: NatsServer,
    client: Option<async_nats::Client>,
    /// Signs forged requests as if it were a nats-server.
    pub server_key: nkeys::KeyPair,
    issuer: String,
}

impl Injector {
    /// Start the side server. Add `injector.nats_entry()` to the callout's `nats` list,
    /// start the callout, then [`Injector::connect`].
    pub fn start(issuer: &str) -> Result<Self> {
        Self::start_with(issuer, "")
    }

    /// [`Injector::start`] with `config` for the side server.
    pub fn start_with(issuer: &str, config: &str) -> Result<Self> {
        Ok(Self {
            side: NatsServer::start(config)?,
            client: None,
            server_key: nkeys::KeyPair::new_server(),
            issuer: issuer.to_owned(),
        })
    }

    /// The YAML list item for the callout's `nats` section.
    pub fn nats_entry(&self) -> String {
        format!("  - {{ name: side, url: {} }}\n", self.side.url())
    }

    pub async fn connect(&mut self) -> Result<()> {
        self.client = Some(connect(&self.side.url(), async_nats::ConnectOptions::new()).await?);
        Ok(())
    }

    /// Publish raw bytes on the request subject without a reply subject.
    pub async fn publish(&self, payload: Vec<u8>) -> Result<()> {
        let client = self.client.as_ref().context("Injector::connect first")?;
        client.publish("$SYS.REQ.USER.AUTH", payload.into()).await?;
        Ok(client.flush().await?)
    }

    /// Publish raw bytes on the request subject; the reply, if any within 10 s (far
    /// longer than a decision takes, even on a slow machine).
    pub async fn ask(&self, payload: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.ask_with(payload, async_nats::HeaderMap::new()).await
    }

    /// [`Injector::ask`] with headers (nats-server's `Nats-Server-Xkey`, for one).
    pub async fn ask_with(
        &self,
        payload: Vec<u8>,
        headers: async_nats::HeaderMap,
    ) -> Result<Option<Vec<u8>>> {
        let client = self.client.as_ref().context("Injector::connect first")?;
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client
            .publish_with_reply_and_headers("$SYS.REQ.USER.AUTH", inbox, headers, payload.into())
            .await?;
        client.flush().await?;
        Ok(
            tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .ok()
                .flatten()
                .map(|m| m.payload.to_vec()),
        )
    }

    /// Send a forged request with `edit` applied; the decoded response claims, after
    /// checking the response is signed by the callout's issuer.
    pub async fn decide(
        &self,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<serde_json::Value> {
        let req = request(&self.server_key, &self.issuer, edit);
        self.response(req.into_bytes()).await
    }

    /// The verified response claims for a raw payload.
    pub async fn response(&self, payload: Vec<u8>) -> Result<serde_json::Value> {
        let reply = self.ask(payload).await?.context("no response")?;
        let claims: serde_json::Value = jwt::decode_verified(&String::from_utf8(reply)?)?;
        anyhow::ensure!(
            claims["iss"] == self.issuer.as_str(),
            "response not signed by the issuer"
        );
        Ok(claims)
    }

    /// The `nats.error` of the response (empty when the client was admitted).
    pub async fn error_for(&self, edit: impl FnOnce(&mut serde_json::Value)) -> Result<String> {
        let claims = self.decide(edit).await?;
        Ok(claims["nats"]["error"].as_str().unwrap_or("").to_owned())
    }
}
