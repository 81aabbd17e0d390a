//! A bare NATS client for connect benchmarks: TCP connect, read INFO, send CONNECT and
//! PING in one write, wait for PONG (admitted) or `-ERR` (refused), close. Nothing else:
//! a client library adds a millisecond of its own to every connect and hides what the
//! server and the callout cost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Latencies;

/// Longest a single connect may take before it counts as failed. nats-server refuses
/// a client after its auth timeout (2 s by default), so anything near this is broken.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client presents in CONNECT.
#[derive(Clone)]
pub enum Credential {
    /// Nothing: the noauth mode (or the null callout, which admits anyone).
    Anonymous,
    /// `user`/`pass`: nats-server's static users.
    UserPass(String, String),
    /// Username `oauthtoken`, the access token as password: the oauth2 mode.
    Token(String),
    /// An NKey signing the server's nonce: the nkey mode.
    Nkey(Arc<nkeys::KeyPair>),
}

/// How one connect ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    /// `-ERR` from the server, e.g. `Authorization Violation`, `Authentication Timeout`.
    Refused(String),
    /// I/O error, timeout or protocol surprise.
    Failed(String),
}

/// One connect: how it ended, and when CONNECT was sent. nats-server gives the callout
/// its auth timeout from the moment it publishes the request, which it does after
/// reading CONNECT; CONNECT to verdict is the closest the client sees of that span
/// (an upper bound: it also holds nats-server's own work before and after).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub connect_at: Option<Instant>,
    pub done_at: Instant,
}

/// A client for one server and credential; CONNECT lines that do not depend on the
/// nonce are rendered once.
pub struct Client {
    addr: SocketAddr,
    credential: Credential,
    fixed: Option<Vec<u8>>,
}

const BASE: &str =
    r#""verbose":false,"pedantic":false,"lang":"raw","version":"0.0.0","protocol":1"#;

fn connect_line(extra: &str) -> Vec<u8> {
    let sep = if extra.is_empty() { "" } else { "," };
    format!("CONNECT {{{BASE}{sep}{extra}}}\r\nPING\r\n").into_bytes()
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl Client {
    pub fn new(port: u16, credential: Credential) -> Self {
        let fixed = match &credential {
            Credential::Anonymous => Some(connect_line("")),
            Credential::UserPass(u, p) => Some(connect_line(&format!(
                r#""user":{},"pass":{}"#,
                json_str(u),
                json_str(p)
            ))),
            Credential::Token(t) => Some(connect_line(&format!(
                r#""user":"oauthtoken","pass":{}"#,
                json_str(t)
            ))),
            Credential::Nkey(_) => None,
        };
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            credential,
            fixed,
        }
    }

    /// One connect, bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect_once(&self) -> Attempt {
        let mut connect_at = None;
        let outcome = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.connect_inner(&mut connect_at),
        )
        .await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::Failed(format!("{:?}", e.kind())),
            Err(_) => Outcome::Failed("client timeout".into()),
        };
        Attempt {
            outcome,
            connect_at,
            done_at: Instant::now(),
        }
    }

    async fn connect_inner(&self, connect_at: &mut Option<Instant>) -> std::io::Result<Outcome> {
        let mut stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(2048);
        let Some(info) = read_line(&mut stream, &mut buf).await? else {
            return Ok(Outcome::Failed("closed before INFO".into()));
        };
        if !info.starts_with(b"INFO ") {
            return Ok(Outcome::Failed("first line is not INFO".into()));
        }
        let signed;
        let line: &[u8] = match &self.credential {
            Credential::Nkey(key) => {
                let Some(nonce) = nonce(&info) else {
                    return Ok(Outcome::Failed("INFO has no nonce".into()));
                };
                let sig = key
                    .sign(nonce.as_bytes())
                    .map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s))
                    .unwrap_or_default();
                signed = connect_line(&format!(
                    r#""nkey":{},"sig":{}"#,
                    json_str(&key.public_key()),
                    json_str(&sig)
                ));
                &signed
            }
            _ => self.fixed.as_deref().unwrap_or_default(),
        };
        stream.write_all(line).await?;
        *connect_at = Some(Instant::now());
        while let Some(line) = read_line(&mut stream, &mut buf).await? {
            if line == b"PONG" {
                return Ok(Outcome::Admitted);
            }
            if let Some(err) = line.strip_prefix(b"-ERR ") {
                let err = String::from_utf8_lossy(err);
                return Ok(Outcome::Refused(err.trim().trim_matches('\'').to_owned()));
            }
            // Anything else (+OK, an INFO update) is not the verdict.
        }
        Ok(Outcome::Failed("closed without PONG or -ERR".into()))
    }
}

/// The next CRLF-terminated line, without the terminator; `None` at end of stream.
/// `buf` keeps what was read past the line.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..end].to_vec();
            buf.drain(..end + 2);
            return Ok(Some(line));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The `nonce` of an INFO line (server-generated, no escapes).
fn nonce(info: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(info).ok()?;
    let start = text.find(r#""nonce":""#)? + r#""nonce":""#.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Outcomes and latencies of a batch of connects.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latency of every admitted connect (from its start: TCP connect, or the storm's).
    pub latencies: Latencies,
    /// From sending CONNECT to PONG of every admitted connect: an upper bound of how
    /// long nats-server waited for the callout (see [`Attempt`]).
    pub since_connect: Latencies,
    pub admitted: usize,
    pub refused: BTreeMap<String, usize>,
    pub failed: BTreeMap<String, usize>,
    /// Wall time of the whole batch.
    pub wall: Duration,
}

impl Tally {
    fn record(&mut self, attempt: Attempt, started: Instant) {
        let now = attempt.done_at;
        match attempt.outcome {
            Outcome::Admitted => {
                self.admitted += 1;
                self.latencies.push(now - started);
                if let Some(sent) = attempt.connect_at {
                    self.since_connect.push(now - sent);
                }
            }
            Outcome::Refused(e) => *self.refused.entry(e).or_default() += 1,
            Outcome::Failed(e) => *self.failed.entry(e).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.latencies.extend(&other.latencies);
        self.since_connect.extend(&other.since_connect);
        self.admitted += other.admitted;
        for (k, v) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.wall += other.wall;
    }

    pub fn total(&self) -> usize {
        self.admitted + self.refused.values().sum::<usize>() + self.failed.values().sum::<usize>()
    }

    /// Refusals and failures as `reason ×count` for a report; empty when all admitted.
    pub fn problems(&self) -> String {
        self.refused
            .iter()
            .chain(&self.failed)
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `total` connects by `concurrency` workers, each connecting again as soon as its
/// previous connect ended (closed loop). Latency: from the worker's TCP connect to
/// PONG.
pub async fn closed_loop(client: Arc<Client>, total: usize, concurrency: usize) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let attempt = client.connect_once().await;
                    tally.record(attempt, t);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(&t),
            Err(e) => *tally.failed.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    tally.wall = started.elapsed();
    tally
}

/// A storm: one task per client, all started at once, client `i` using
/// `clients[i % clients.len()]`. Latency: from the start of the storm to that client's
/// PONG, so it includes any wait in the accept queue.
pub async fn storm(clients: &[Arc<Client>], n: usize) -> Tally {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(async move { client.connect_once().await })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok(attempt) => tally.record(attempt, started),
            Err(e) => *tally.failed.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    tally.wall = started.elapsed();
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_from_info() {
        let info = br#"INFO {"server_id":"N","nonce":"abc-_1","max_payload":1}"#;
        assert_eq!(nonce(info), Some("abc-_1"));
        assert_eq!(nonce(br#"INFO {"server_id":"N"}"#), None);
    }

    #[test]
    fn connect_lines() {
        let c = Client::new(1, Credential::Token("a.b.c".into()));
        let line = String::from_utf8(c.fixed.clone().unwrap_or_default()).unwrap_or_default();
        assert!(line.starts_with("CONNECT {"), "{line}");
        assert!(line.ends_with("}\r\nPING\r\n"), "{line}");
        let json = &line["CONNECT ".len()..line.len() - "\r\nPING\r\n".len()];
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(v["user"], "oauthtoken");
        assert_eq!(v["pass"], "a.b.c");
        assert_eq!(v["verbose"], false);
    }
}
