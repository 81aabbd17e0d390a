//! The revocation list's second source: a NATS KV bucket, one revocation document per
//! key (see `pipeline/revocation.rs`), watched through the callout's own connection.
//! Putting a key revokes what its document names; deleting or purging it lifts that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;

use crate::pipeline::revocation::{Revocations, Revoked};

/// Retry back-off cap while the bucket is unreachable (JetStream down, bucket missing):
/// what the bucket revoked stays in force meanwhile.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Watch `bucket` and feed `revocations`; runs until aborted.
pub async fn watch(client: async_nats::Client, bucket: String, revocations: Arc<Revocations>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match watch_once(&client, &bucket, &revocations).await {
            Ok(()) => tracing::warn!(bucket, "revocation bucket watch ended; restarting"),
            Err(e) => tracing::warn!(bucket, error = %e,
                "revocation bucket not readable; what it revoked stays in force, retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn watch_once(
    client: &async_nats::Client,
    bucket: &str,
    revocations: &Revocations,
) -> Result<(), String> {
    let js = async_nats::jetstream::new(client.clone());
    let store = js.get_key_value(bucket).await.map_err(|e| e.to_string())?;
    // Watch first, then read the snapshot: a change in between arrives through the
    // watch too, and applying it twice changes nothing.
    let mut changes = store.watch(">").await.map_err(|e| e.to_string())?;
    let snapshot = snapshot(&store, bucket).await?;
    tracing::info!(bucket, keys = snapshot.len(), "revocation bucket read");
    revocations.replace_kv(snapshot);
    while let Some(entry) = changes.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        match entry.operation {
            Operation::Put => {
                if let Some(r) = parse(bucket, &entry.key, &entry.value) {
                    revocations.set_kv(&entry.key, Some(r));
                }
            }
            Operation::Delete | Operation::Purge => revocations.set_kv(&entry.key, None),
        }
    }
    Ok(())
}

async fn snapshot(store: &Store, bucket: &str) -> Result<BTreeMap<String, Revoked>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Some(value) = store.get(&key).await.map_err(|e| e.to_string())?
            && let Some(r) = parse(bucket, &key, &value)
        {
            out.insert(key, r);
        }
    }
    Ok(out)
}

/// An entry's document; a malformed one is logged and changes nothing.
fn parse(bucket: &str, key: &str, value: &[u8]) -> Option<Revoked> {
    let parsed = std::str::from_utf8(value)
        .map_err(|e| e.to_string())
        .and_then(|text| Revoked::parse(text).map_err(|e| e.to_string()));
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(bucket, key, error = %e,
                "revocation entry not readable; ignored, the key's previous value stays");
            None
        }
    }
}
