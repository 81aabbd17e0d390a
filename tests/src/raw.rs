//! A minimal NATS protocol client: INFO, CONNECT, PING, and the server's verdict.
//! It exists to send what a real client library never would (a signature by the
//! wrong key, a malformed nkey), and to measure bare connects without library overhead.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How a raw connect ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered PONG: the connection was admitted.
    Admitted,
    /// The server sent `-ERR ...` (e.g. `Authorization Violation`).
    Refused(String),
}

/// Connect to `127.0.0.1:port`, build the CONNECT JSON from the server nonce with
/// `connect`, and report whether the server admitted it.
pub async fn connect(
    port: u16,
    connect: impl FnOnce(&str) -> serde_json::Value,
) -> Result<Outcome> {
    tokio::time::timeout(Duration::from_secs(10), connect_inner(port, connect))
        .await
        .context("raw connect timed out")?
}

async fn connect_inner(
    port: u16,
    connect: impl FnOnce(&str) -> serde_json::Value,
) -> Result<Outcome> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = lines.next_line().await?.context("no INFO")?;
    let json = info
        .strip_prefix("INFO ")
        .context("first line is not INFO")?;
    let info: serde_json::Value = serde_json::from_str(json)?;
    let nonce = info.get("nonce").and_then(|v| v.as_str()).unwrap_or("");
    let mut opts = connect(nonce);
    if let Some(map) = opts.as_object_mut() {
        map.entry("verbose").or_insert(false.into());
        map.entry("pedantic").or_insert(false.into());
        map.entry("protocol").or_insert(1.into());
        map.entry("lang").or_insert("raw".into());
        map.entry("version").or_insert("0.0.0".into());
    }
    write
        .write_all(format!("CONNECT {opts}\r\nPING\r\n").as_bytes())
        .await?;
    while let Some(line) = lines.next_line().await? {
        if line == "PONG" {
            return Ok(Outcome::Admitted);
        }
        if let Some(err) = line.strip_prefix("-ERR ") {
            return Ok(Outcome::Refused(err.trim_matches('\'').to_owned()));
        }
    }
    bail!("connection closed without PONG or -ERR")
}

/// [`connect`] presenting no credential at all (the noauth mode).
pub async fn anonymous(port: u16) -> Result<Outcome> {
    connect(port, |_| serde_json::json!({})).await
}

/// [`connect`] with a bearer token (`auth_token`): an API key, or an access token.
pub async fn bearer(port: u16, token: &str) -> Result<Outcome> {
    let token = token.to_owned();
    connect(port, move |_| serde_json::json!({ "auth_token": token })).await
}

/// [`connect`] with a username and password.
pub async fn user_pass(port: u16, user: &str, pass: &str) -> Result<Outcome> {
    let (user, pass) = (user.to_owned(), pass.to_owned());
    connect(
        port,
        move |_| serde_json::json!({ "user": user, "pass": pass }),
    )
    .await
}

/// CONNECT options of an NKey client signing `nonce` with `key`, claiming `nkey`.
pub fn nkey_connect(nkey: &str, key: &nkeys::KeyPair, nonce: &str) -> serde_json::Value {
    use base64::Engine as _;
    let sig = key
        .sign(nonce.as_bytes())
        .map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s))
        .unwrap_or_default();
    serde_json::json!({ "nkey": nkey, "sig": sig })
}
