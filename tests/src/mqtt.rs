//! A real MQTT 3.1.1 client (rumqttc) for nats-server's MQTT listener: connect (over TLS
//! with a client certificate, or with username/password), then subscribe, publish and
//! receive without handling the event loop in every test.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// rustls client config trusting `ca_file` for the server, presenting `cert`/`key`.
pub fn tls_config(ca_file: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?)
}

/// Options for `127.0.0.1:<port>` over TLS with `tls`, clean session.
pub fn options(client_id: &str, port: u16, tls: rustls::ClientConfig) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    o
}

/// A connected client; the event loop runs in a task that stops on drop.
pub struct Mqtt {
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Publish>,
    acks: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect and wait for the CONNACK. `Ok(Err(reason))` when the server refused the
/// client (the outcome a test asserts on), `Err` when something else broke.
pub async fn connect(options: MqttOptions) -> Result<Result<Mqtt, String>> {
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let first = tokio::time::timeout(WAIT, until_connack(&mut eventloop))
        .await
        .context("no CONNACK within 5s")?;
    if let Err(e) = first {
        return Ok(Err(match e {
            ConnectionError::ConnectionRefused(code) => format!("refused: {code:?}"),
            other => other.to_string(),
        }));
    }
    let (msg_tx, messages) = mpsc::unbounded_channel();
    let (ack_tx, acks) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = msg_tx.send(p);
                }
                Ok(Event::Incoming(p @ (Packet::SubAck(_) | Packet::PubAck(_)))) => {
                    let _ = ack_tx.send(p);
                }
                Ok(_) => {}
                // Closed by the server or the test: the receivers see the end.
                Err(_) => break,
            }
        }
    });
    Ok(Ok(Mqtt {
        client,
        messages,
        acks,
        task,
    }))
}

async fn until_connack(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

impl Mqtt {
    /// Subscribe and wait for the SUBACK; `Err` names the refused return code.
    pub async fn subscribe(&mut self, topic: &str, qos: QoS) -> Result<()> {
        self.client.subscribe(topic, qos).await?;
        match self.next_ack().await? {
            Packet::SubAck(ack) => {
                let code = ack.return_codes.first().copied();
                match code {
                    Some(rumqttc::SubscribeReasonCode::Success(_)) => Ok(()),
                    other => bail!("subscription to {topic} refused: {other:?}"),
                }
            }
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publish with QoS 1 and wait for the PUBACK: the server has processed it.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await?;
        match self.next_ack().await? {
            Packet::PubAck(_) => Ok(()),
            other => bail!("expected PUBACK, got {other:?}"),
        }
    }

    /// The next message received.
    pub async fn next_message(&mut self) -> Result<Publish> {
        tokio::time::timeout(WAIT, self.messages.recv())
            .await
            .context("no MQTT message within 5s")?
            .ok_or_else(|| anyhow!("MQTT connection closed"))
    }

    async fn next_ack(&mut self) -> Result<Packet> {
        tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .context("no MQTT acknowledgement within 5s")?
            .ok_or_else(|| anyhow!("MQTT connection closed"))
    }
}
