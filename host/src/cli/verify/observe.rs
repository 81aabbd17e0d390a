//! The observer: a plain subscription on the auth subject beside the callout's queue
//! group, which receives a copy of each auth request nats-server sends (and, where the
//! callout's user may, the answers), and opens each as the callout would.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use nats_callout::nats::claims::RequestClaims;
use nats_callout::nats::jwt;
use nats_callout::pipeline::authorizer::XKEY_SEED_ENV;
use nats_callout::pipeline::request::XKEY_HEADER;
use nkeys::XKey;
use tokio::sync::mpsc;

/// Requests nats-server sent while the observer listened, and the answers to them.
pub(super) struct Observer {
    pub(super) client: async_nats::Client,
    pub(super) copies: mpsc::UnboundedReceiver<RawCopy>,
    /// `None` when the callout's user may not subscribe to [`ANSWERS`](super::ANSWERS).
    pub(super) answers: Option<mpsc::UnboundedReceiver<(String, bytes::Bytes)>>,
    /// Answers received while looking for another.
    pub(super) early: HashMap<String, bytes::Bytes>,
}

/// One auth request as the observer's subscription received it.
pub(super) struct RawCopy {
    pub(super) payload: bytes::Bytes,
    pub(super) xkey_header: Option<String>,
    /// Where the callouts answer it.
    pub(super) reply: Option<String>,
}

/// A request copy, opened as far as the callout's keys allow.
pub(super) struct Copy {
    pub(super) raw: RawCopy,
    pub(super) opened: Opened,
    /// Read without verification, only to tell the probes' requests apart and to say
    /// what nats-server put in them.
    pub(super) claims: Option<RequestClaims>,
}

pub(super) enum Opened {
    /// Sealed to the callout's xkey, opened.
    Sealed(String),
    /// A plain JWT.
    Plain(String),
    /// Sealed, and the callout cannot open it: why.
    Unreadable(String),
}

impl Opened {
    pub(super) fn token(&self) -> Option<&str> {
        match self {
            Opened::Sealed(t) | Opened::Plain(t) => Some(t),
            Opened::Unreadable(_) => None,
        }
    }
}

/// Move the observer's messages into a channel the probes read from.
pub(super) async fn forward(mut sub: async_nats::Subscriber, tx: mpsc::UnboundedSender<RawCopy>) {
    while let Some(msg) = sub.next().await {
        let xkey_header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(XKEY_HEADER))
            .map(|v| v.as_str().to_owned());
        let copy = RawCopy {
            payload: msg.payload,
            xkey_header,
            reply: msg.reply.map(|r| r.to_string()),
        };
        if tx.send(copy).is_err() {
            return;
        }
    }
}

/// Move the answers nats-server receives into a channel.
pub(super) async fn forward_answers(
    mut sub: async_nats::Subscriber,
    tx: mpsc::UnboundedSender<(String, bytes::Bytes)>,
) {
    while let Some(msg) = sub.next().await {
        if tx.send((msg.subject.to_string(), msg.payload)).is_err() {
            return;
        }
    }
}

/// Answers kept while looking for another: a live deployment has many, one run needs a
/// handful.
const MAX_EARLY_ANSWERS: usize = 10_000;

impl Observer {
    /// The answer published to `reply`, within `wait`.
    pub(super) async fn answer(&mut self, reply: &str, wait: Duration) -> Option<bytes::Bytes> {
        if let Some(a) = self.early.remove(reply) {
            return Some(a);
        }
        let answers = self.answers.as_mut()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((subject, payload))) if subject == reply => return Some(payload),
                Ok(Some((subject, payload))) => {
                    if self.early.len() >= MAX_EARLY_ANSWERS {
                        self.early.clear();
                    }
                    self.early.insert(subject, payload);
                }
                _ => return None,
            }
        }
    }

    /// The request copy of the client called `name`, until `until` ends. Copies of
    /// other clients (a live deployment has them) are skipped; when none could be read,
    /// the first sealed one that cannot be opened stands for it: the seal is what is
    /// wrong then.
    pub(super) async fn find(
        &mut self,
        name: &str,
        ours: Option<&XKey>,
        until: impl std::future::Future<Output = ()>,
    ) -> Option<Copy> {
        tokio::pin!(until);
        let mut unreadable = None;
        loop {
            let raw = tokio::select! {
                raw = self.copies.recv() => match raw {
                    Some(raw) => raw,
                    None => return unreadable,
                },
                _ = &mut until => return unreadable,
            };
            let opened = open(&raw, ours);
            let claims = opened
                .token()
                .and_then(jwt::decode_unverified::<RequestClaims>);
            match &claims {
                Some(c) if c.nats.connect_opts.name == name => {
                    return Some(Copy {
                        raw,
                        opened,
                        claims,
                    });
                }
                None if unreadable.is_none() && matches!(opened, Opened::Unreadable(_)) => {
                    unreadable = Some(Copy {
                        raw,
                        opened,
                        claims,
                    });
                }
                _ => {}
            }
        }
    }
}

/// Open a request copy with the callout's xkey, saying what to fix when it cannot be.
pub(super) fn open(raw: &RawCopy, ours: Option<&XKey>) -> Opened {
    let plain = || match std::str::from_utf8(&raw.payload) {
        Ok(t) => Opened::Plain(t.trim().to_owned()),
        Err(_) => Opened::Unreadable("nats-server's auth request is not a JWT".into()),
    };
    let Some(header) = &raw.xkey_header else {
        return plain();
    };
    let Some(ours) = ours else {
        return Opened::Unreadable(format!(
            "nats-server seals auth requests (auth_callout.xkey is set; its own xkey is \
             {header}), but the callout has no xkey: set xkey_seed_file (or {XKEY_SEED_ENV}) \
             to the seed of auth_callout.xkey, or remove xkey from auth_callout"
        ));
    };
    let Ok(server) = XKey::from_public_key(header) else {
        return Opened::Unreadable(format!("header {XKEY_HEADER} {header:?} is not an xkey"));
    };
    match ours.open(&raw.payload, &server) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => Opened::Sealed(t.trim().to_owned()),
            Err(_) => Opened::Unreadable("the opened auth request is not a JWT".into()),
        },
        Err(_) => Opened::Unreadable(format!(
            "nats-server seals auth requests for another xkey than the callout's: set \
             `xkey: {}` in authorization.auth_callout",
            ours.public_key()
        )),
    }
}
