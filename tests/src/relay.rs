//! A TCP relay that holds back what a client sends to nats-server, to widen the window
//! between "the client wrote a command" and "the server acted on it" to a known size.
//!
//! A readiness check that stops at the socket write passes on loopback nearly always
//! and fails under load now and then; behind this relay it fails every time.

use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Relays `127.0.0.1:port` to `upstream`, delaying client-to-server bytes by `delay`
/// (order kept; server-to-client bytes pass at once). Each accepted connection dials
/// `upstream` afresh, so a client's reconnect reaches a restarted server. Stops on drop.
pub struct DelayRelay {
    pub port: u16,
    accept: JoinHandle<()>,
}

impl DelayRelay {
    pub async fn start(upstream: u16, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accept = tokio::spawn(async move {
            // Connection tasks are not tracked: each ends when either side closes, and
            // the test's runtime ends them all when it shuts down.
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, delay));
            }
        });
        Ok(Self { port, accept })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, upstream: u16, delay: Duration) {
    // No server (it is restarting): dropping the client makes it retry.
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_client = async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write_server = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to_server.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let server_to_client = async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    };
    // Either side closing ends the relay of this connection (dropping both sockets).
    tokio::select! {
        _ = async { tokio::join!(read_client, write_server) } => {}
        _ = server_to_client => {}
    }
}
