//! Live connections of revoked identities, closed at once: the callout remembers which
//! client connection (server id, client id) it admitted for which identity, until the
//! grant expires, bounded in number; when the revocations change, it asks each
//! nats-server to close the connections of identities now revoked, through the
//! server's `$SYS.REQ.SERVER.<id>.KICK` request (nats-server 2.10+), sent by a user of
//! the system account.
//!
//! It forgets a connection when the client leaves (nats-server's disconnect advisory,
//! `$SYS.ACCOUNT.<account>.DISCONNECT`, heard on the same system-account connection),
//! at its grant's expiry, and when the registry is full, the least recently admitted
//! first. An advisory lost while the system connection was down leaves an entry to
//! expire or be pushed out; kicking a client that is gone costs one request answered
//! with an error.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use lru::LruCache;
use prometheus::IntGauge;
use serde::Deserialize;

use crate::ops::metrics::Metrics;
use crate::pipeline::identity::Identity;
use crate::pipeline::request::unix_now;
use crate::pipeline::revocation::{Revocations, Revoked};

/// How long one kick request waits for the server's answer: a round trip through the
/// cluster, far below a second when the server is up.
const KICK_TIMEOUT: Duration = Duration::from_secs(2);

/// One admitted connection.
struct Session {
    identity: Identity,
    /// Unix seconds when the grant ends; `None`: with the connection.
    expires_at: Option<i64>,
}

/// (server id, client id) → who was admitted there.
pub struct Sessions {
    admitted: Mutex<LruCache<(String, u64), Session>>,
    /// `revocation_tracked_connections`, shared by the registries of all `nats` entries:
    /// each adds and removes its own.
    tracked: IntGauge,
}

/// A connection to close, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Kick {
    pub server_id: String,
    pub client_id: u64,
    /// The revoked field, as `kind "value"`.
    pub because: String,
}

impl Sessions {
    pub fn new(max: usize, tracked: IntGauge) -> Self {
        let cap = NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        Self {
            admitted: Mutex::new(LruCache::new(cap)),
            tracked,
        }
    }

    /// Forget a connection that closed.
    pub fn forget(&self, server_id: String, client_id: u64) {
        if let Ok(mut admitted) = self.admitted.lock()
            && admitted.pop(&(server_id, client_id)).is_some()
        {
            self.tracked.dec();
        }
    }

    /// Remember an admitted connection (one without identity fields is never revoked,
    /// so it is not kept).
    pub fn admit(
        &self,
        server_id: String,
        client_id: u64,
        identity: Identity,
        expires_at: Option<i64>,
    ) {
        if identity.is_empty() || server_id.is_empty() {
            return;
        }
        if let Ok(mut admitted) = self.admitted.lock() {
            let before = admitted.len();
            admitted.put(
                (server_id, client_id),
                Session {
                    identity,
                    expires_at,
                },
            );
            if admitted.len() > before {
                self.tracked.inc();
            }
        }
    }

    /// Take out the connections whose identity `revoked` names, and forget the expired.
    pub fn take_revoked(&self, revoked: &Revoked, now: i64) -> Vec<Kick> {
        let Ok(mut admitted) = self.admitted.lock() else {
            return Vec::new();
        };
        let mut kicks = Vec::new();
        let mut gone = Vec::new();
        for ((server_id, client_id), s) in admitted.iter() {
            if s.expires_at.is_some_and(|e| e <= now) {
                gone.push((server_id.clone(), *client_id));
            } else if let Some((kind, value)) = revoked.find(&s.identity) {
                gone.push((server_id.clone(), *client_id));
                kicks.push(Kick {
                    server_id: server_id.clone(),
                    client_id: *client_id,
                    because: format!("{kind} {value:?}"),
                });
            }
        }
        for key in gone {
            if admitted.pop(&key).is_some() {
                self.tracked.dec();
            }
        }
        kicks
    }

    pub fn len(&self) -> usize {
        self.admitted.lock().map_or(0, |a| a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// nats-server's answer to a `$SYS.REQ.SERVER.<id>.KICK` request.
#[derive(Deserialize)]
struct KickAnswer {
    #[serde(default)]
    error: Option<KickError>,
}

#[derive(Deserialize)]
struct KickError {
    #[serde(default)]
    description: String,
}

/// The part of nats-server's client-disconnect advisory the registry reads.
#[derive(Deserialize)]
struct Disconnect {
    server: EventServer,
    client: EventClient,
}

#[derive(Deserialize)]
struct EventServer {
    id: String,
}

#[derive(Deserialize)]
struct EventClient {
    id: u64,
}

/// Where nats-server announces that a client of any account left.
const DISCONNECTS: &str = "$SYS.ACCOUNT.*.DISCONNECT";

/// Subscribe `system` to nats-server's disconnect advisories, and wait up to `wait`
/// until nats-server has the subscription (past that, it is made when the connection
/// comes up, and disconnects before then go unheard). `None` when it cannot subscribe.
pub async fn hear_disconnects(
    system: &async_nats::Client,
    wait: Duration,
    entry: &str,
) -> Option<async_nats::Subscriber> {
    let sub = match system.subscribe(DISCONNECTS).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(server = %entry, error = %e,
                "cannot hear disconnects; the revocation registry forgets connections at their expiry only");
            return None;
        }
    };
    if !matches!(tokio::time::timeout(wait, system.flush()).await, Ok(Ok(()))) {
        tracing::warn!(server = %entry, waited = ?wait,
            "the system user's connection is not up yet; disconnects until it is go unheard");
    }
    Some(sub)
}

/// Close the connections of newly revoked identities, through `system` (a connection
/// as a system-account user), every time `revocations` change; and forget the
/// connections nats-server says have closed (`disconnects`, from [`hear_disconnects`]).
/// Runs until aborted.
pub async fn kick_revoked(
    system: async_nats::Client,
    mut disconnects: Option<async_nats::Subscriber>,
    sessions: Arc<Sessions>,
    revocations: Arc<Revocations>,
    entry: Arc<str>,
    metrics: Metrics,
) {
    let mut changes = revocations.subscribe();
    loop {
        let heard = async {
            match disconnects.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            message = heard => {
                match message {
                    Some(m) => match serde_json::from_slice::<Disconnect>(&m.payload) {
                        Ok(d) => sessions.forget(d.server.id, d.client.id),
                        Err(e) => tracing::debug!(server = %entry, error = %e, "unreadable disconnect advisory"),
                    },
                    None => disconnects = None,
                }
                continue;
            }
        }
        let revoked = revocations.current();
        for kick in sessions.take_revoked(&revoked, unix_now()) {
            let result = send_kick(&system, &kick).await;
            metrics
                .kicks
                .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
                .inc();
            match result {
                Ok(()) => tracing::info!(server = %entry, server_id = %kick.server_id,
                    client_id = kick.client_id, revoked = %kick.because, "closed the connection of a revoked identity"),
                Err(e) => tracing::warn!(server = %entry, server_id = %kick.server_id,
                    client_id = kick.client_id, revoked = %kick.because, error = %e,
                    "cannot close the connection of a revoked identity"),
            }
        }
    }
}

async fn send_kick(system: &async_nats::Client, kick: &Kick) -> Result<(), String> {
    let subject = format!("$SYS.REQ.SERVER.{}.KICK", kick.server_id);
    let body = serde_json::json!({ "cid": kick.client_id }).to_string();
    let answer = tokio::time::timeout(KICK_TIMEOUT, system.request(subject, body.into()))
        .await
        .map_err(|_| "no answer (is this a system-account user?)".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer: KickAnswer =
        serde_json::from_slice(&answer.payload).map_err(|e| format!("unreadable answer: {e}"))?;
    match answer.error {
        // A client that left already: nothing to close.
        Some(e) => Err(e.description),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> Identity {
        Identity {
            sub: Some(s.into()),
            ..Default::default()
        }
    }

    #[test]
    fn revoked_and_expired_sessions_leave_the_registry() {
        let tracked = IntGauge::new("t", "t").unwrap();
        let s = Sessions::new(3, tracked.clone());
        s.admit("S1".into(), 1, sub("alice"), None);
        s.admit("S2".into(), 2, sub("alice"), Some(100));
        s.admit("S1".into(), 3, sub("bob"), Some(50));
        s.admit("S1".into(), 4, Identity::default(), None);
        assert_eq!(s.len(), 3, "no identity, nothing to revoke");
        let revoked = Revoked::parse("sub: [alice]").unwrap();
        let mut kicks = s.take_revoked(&revoked, 60);
        kicks.sort_by_key(|k| k.client_id);
        assert_eq!(
            kicks,
            [
                Kick {
                    server_id: "S1".into(),
                    client_id: 1,
                    because: "sub \"alice\"".into()
                },
                Kick {
                    server_id: "S2".into(),
                    client_id: 2,
                    because: "sub \"alice\"".into()
                }
            ]
        );
        assert!(s.is_empty(), "bob's grant expired at 50");
        assert_eq!(tracked.get(), 0);
        for i in 0..5 {
            s.admit("S1".into(), i, sub("carol"), None);
        }
        assert_eq!(s.len(), 3, "bounded");
        assert_eq!(tracked.get(), 3);
        s.admit("S1".into(), 4, sub("carol"), None);
        assert_eq!(tracked.get(), 3, "admitted again, counted once");
        s.forget("S1".into(), 4);
        s.forget("S1".into(), 4);
        s.forget("S9".into(), 3);
        assert_eq!(
            (s.len(), tracked.get()),
            (2, 2),
            "forgotten once, by server and client"
        );
    }
}
