//! A subscriber in the callout account that sees every authorization request nats-server
//! publishes and every response to it: "answered twice" and "unanswered" counted from
//! outside the callout, independently of its own metrics. It logs in as the callout's
//! user (exempt from the callout, allowed everything in its account).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures::StreamExt;

/// The subject nats-server publishes authorization requests on.
const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    /// Keeps the subscription's connection open.
    _client: async_nats::Client,
}

/// The reply subject of every request, and how many messages went to each subject that
/// is not the request subject.
#[derive(Default)]
struct Seen {
    replies: Vec<String>,
    published: HashMap<String, usize>,
}

/// What the watcher saw since it started or last counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count {
    pub requests: usize,
    pub answered_twice: usize,
    pub unanswered: usize,
}

impl Watcher {
    /// Subscribe to everything in the callout account of the server at `url`, logged in
    /// with `options` (the callout's own credentials).
    pub async fn start(url: &str, options: async_nats::ConnectOptions) -> Result<Self> {
        let client = options
            .subscription_capacity(1 << 20)
            .connect(url)
            .await
            .context("the watching subscriber cannot connect")?;
        // The SUB is confirmed by a PING (`flush`), not by a request of our own, whose
        // messages would land in `>` and be counted.
        let mut all = client.subscribe(">").await?;
        client.flush().await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = all.next().await {
                let Ok(mut seen) = sink.lock() else { return };
                if msg.subject.as_str() == AUTH_SUBJECT {
                    if let Some(reply) = msg.reply {
                        seen.replies.push(reply.to_string());
                    }
                } else {
                    *seen.published.entry(msg.subject.to_string()).or_default() += 1;
                }
            }
        });
        Ok(Self {
            seen,
            _client: client,
        })
    }

    /// Count what was seen since the last count, and start afresh. Responses still on
    /// their way count as unanswered: wait for stragglers first.
    pub fn take(&self) -> Result<Count> {
        let seen = std::mem::take(
            &mut *self
                .seen
                .lock()
                .map_err(|_| anyhow::anyhow!("the watcher panicked"))?,
        );
        let answers = |reply: &String| seen.published.get(reply).copied().unwrap_or(0);
        Ok(Count {
            requests: seen.replies.len(),
            answered_twice: seen.replies.iter().filter(|r| answers(r) > 1).count(),
            unanswered: seen.replies.iter().filter(|r| answers(r) == 0).count(),
        })
    }
}
