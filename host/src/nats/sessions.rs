//! Live connections of revoked identities, closed at once: the callout remembers which
//! client connection (server id, client id) it admitted for which identity, until the
//! grant expires, bounded in number; when the revocations change, it asks each
//! nats-server to close the connections of identities now revoked, through the
//! server's `$SYS.REQ.SERVER.<id>.KICK` request (nats-server 2.10+), sent by a user of
//! the system account.
//!
//! What it does not know: which of those clients have disconnected since. Kicking one
//! that is gone costs a request answered with an error; the registry forgets entries
//! at their grant's expiry and when it is full, the least recently admitted first.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
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
    pub fn new(max: usize) -> Self {
        let cap = NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        Self {
            admitted: Mutex::new(LruCache::new(cap)),
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
            admitted.put(
                (server_id, client_id),
                Session {
                    identity,
                    expires_at,
                },
            );
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
            admitted.pop(&key);
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

/// Close the connections of newly revoked identities, through `system` (a connection
/// as a system-account user), every time `revocations` change. Runs until aborted.
pub async fn kick_revoked(
    system: async_nats::Client,
    sessions: Arc<Sessions>,
    revocations: Arc<Revocations>,
    entry: Arc<str>,
    metrics: Metrics,
) {
    let mut changes = revocations.subscribe();
    while changes.changed().await.is_ok() {
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
        let s = Sessions::new(3);
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
        for i in 0..5 {
            s.admit("S1".into(), i, sub("carol"), None);
        }
        assert_eq!(s.len(), 3, "bounded");
    }
}
