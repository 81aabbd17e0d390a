//! Audit events: every decision published as one JSON message on the configured
//! subject, for a JetStream stream to keep. Time, server, client, route, mode, plugin,
//! verdict, reason, account, the identity's non-secret fields, the grant's subjects and
//! expiry; never a credential.
//!
//! Never in a decision's way: events go through a bounded queue to one publishing task.
//! When NATS takes them slower than decisions make them, the queue fills and new events
//! are dropped and counted (`audit_events_dropped_total`); the answer to nats-server
//! has already been sent by then.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ops::metrics::Metrics;
use crate::pipeline::authorizer::{About, Handled, Verdict};
use crate::pipeline::identity::Identity;

/// Events queued at most. A reconnect storm of 10,000 clients decided in a few seconds
/// fits; past that, NATS is not keeping up and waiting longer would only grow memory
/// (an event is about 1 KiB).
const QUEUE: usize = 16 * 1024;

#[derive(Serialize)]
struct Event<'a> {
    /// RFC 3339, UTC, milliseconds.
    time: String,
    server: Server<'a>,
    client: Client<'a>,
    route: Option<&'a str>,
    mode: Option<&'static str>,
    plugin: Option<&'a str>,
    cached: bool,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    identity: &'a Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<GrantEvent<'a>>,
}

#[derive(Serialize)]
struct Server<'a> {
    /// The `nats[]` entry's name.
    entry: &'a str,
    name: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct Client<'a> {
    id: u64,
    host: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    user_nkey: &'a str,
}

#[derive(Serialize)]
struct GrantEvent<'a> {
    #[serde(rename = "pub")]
    publish: &'a nats_callout_sdk::Permission,
    #[serde(rename = "sub")]
    subscribe: &'a nats_callout_sdk::Permission,
    /// Unix seconds; absent: no expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The publishing side of one `nats[]` entry's audit events.
pub struct Audit {
    entry: std::sync::Arc<str>,
    tx: mpsc::Sender<Bytes>,
    metrics: Metrics,
}

impl Audit {
    /// Publish on `subject` through `client` from a task of its own, until the last
    /// [`Audit`] is dropped.
    pub fn start(
        client: async_nats::Client,
        subject: String,
        entry: std::sync::Arc<str>,
        metrics: Metrics,
    ) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let published = metrics.audit_published.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match client.publish(subject.clone(), event).await {
                    Ok(()) => published.inc(),
                    Err(e) => {
                        tracing::warn!(subject = %subject, error = %e, "audit event not published")
                    }
                }
            }
        });
        (Self { entry, tx, metrics }, task)
    }

    /// Queue the event for `handled`, or drop and count it when the queue is full.
    pub fn record(&self, handled: &Handled) {
        let event = event(&self.entry, handled, SystemTime::now());
        match serde_json::to_vec(&event) {
            Ok(bytes) => {
                if self.tx.try_send(bytes.into()).is_err() {
                    self.metrics.audit_dropped.inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "audit event not serialised"),
        }
    }
}

fn event<'a>(entry: &'a str, h: &'a Handled, now: SystemTime) -> Event<'a> {
    let empty = About::empty();
    let about = h.about.as_deref().unwrap_or(empty);
    let (verdict, reason, account) = match &h.verdict {
        Verdict::Allowed { account } => ("allowed", None, Some(account.as_str())),
        Verdict::Denied(r) => ("denied", Some(r.as_str()), None),
        Verdict::Invalid(r) => ("invalid", Some(r.as_str()), None),
    };
    Event {
        time: humantime::format_rfc3339_millis(now).to_string(),
        server: Server {
            entry,
            name: &about.server_name,
            id: &about.server_id,
        },
        client: Client {
            id: h.client_id,
            host: &about.client_host,
            kind: &about.client_type,
            user_nkey: &h.user_nkey,
        },
        route: h.route.as_deref(),
        mode: h.mode.map(|m| m.as_str()),
        plugin: about.plugin.as_deref(),
        cached: about.cached,
        verdict,
        reason,
        account,
        identity: &about.identity,
        grant: about.grant.as_ref().map(|g| GrantEvent {
            publish: &g.publish,
            subscribe: &g.subscribe,
            expires_at: g.expires_at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decision::Grant;

    fn denied() -> Handled {
        Handled {
            route: None,
            mode: None,
            verdict: Verdict::Denied("no".into()),
            reply: Vec::new(),
            client_id: 1,
            user_nkey: String::new(),
            about: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Metrics::new();
        let (tx, mut rx) = mpsc::channel(2);
        let audit = Audit {
            entry: "main".into(),
            tx,
            metrics: metrics.clone(),
        };
        for _ in 0..5 {
            audit.record(&denied());
        }
        assert_eq!(metrics.audit_dropped.get(), 3);
        let first: serde_json::Value = serde_json::from_slice(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(first["reason"], "no");
        assert_eq!(first["server"]["id"], "", "nothing known, nothing made up");
    }

    #[test]
    fn an_event_names_everything_but_the_credential() {
        let mut grant = Grant::default();
        grant.account = "DEVICES".into();
        grant.publish.allow.push("telemetry.alice".into());
        grant.expires_at = Some(1_900_000_000);
        let handled = Handled {
            route: Some("oauth2".into()),
            mode: None,
            verdict: Verdict::Allowed {
                account: "DEVICES".into(),
            },
            reply: Vec::new(),
            client_id: 7,
            user_nkey: "UABC".into(),
            about: Some(Box::new(About {
                identity: Identity {
                    sub: Some("alice".into()),
                    ..Default::default()
                },
                server_id: "NSRV".into(),
                server_name: "n1".into(),
                client_host: "127.0.0.1".into(),
                client_type: "STANDARD".into(),
                plugin: Some("oauth2".into()),
                cached: false,
                grant: Some(grant),
            })),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
        let json = serde_json::to_value(event("main", &handled, at)).unwrap();
        assert_eq!(json["time"], "2025-12-06T05:46:40.123Z");
        assert_eq!(json["server"]["id"], "NSRV");
        assert_eq!(json["client"]["id"], 7);
        assert_eq!(json["verdict"], "allowed");
        assert_eq!(json["account"], "DEVICES");
        assert_eq!(json["identity"], serde_json::json!({"sub": "alice"}));
        assert_eq!(json["grant"]["pub"]["allow"][0], "telemetry.alice");
        assert_eq!(json["grant"]["expires_at"], 1_900_000_000);
        assert!(json.get("reason").is_none());
    }
}
