//! Keeping the revocation list current: the file re-read when it changes (polled every
//! `reload_interval`, as the config is), and on every change of the list, from the
//! file or the KV bucket, the decision cache emptied and the gauge set.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::ops::config::Config;
use crate::ops::metrics::Metrics;
use crate::ops::reload::{stamp, stamp_off_runtime};
use crate::pipeline::authorizer::Shared;
use crate::pipeline::revocation::Revoked;

/// Runs until aborted.
pub fn spawn(cfg: &Config, shared: Shared, metrics: Metrics) -> JoinHandle<()> {
    let file: Option<Arc<Vec<PathBuf>>> = cfg
        .revocation
        .as_ref()
        .and_then(|r| r.file.as_ref())
        .map(|f| Arc::new(vec![cfg.resolve(f)]));
    let interval = cfg.reload_interval;
    // The list the authorizer was loaded with is the one in force: a reload adopts it.
    let revocations = shared.load().revocations().clone();
    metrics.revocations.set(revocations.current().len() as i64);
    tokio::spawn(async move {
        let mut last = file.as_ref().map(|f| stamp(f));
        let mut changes = revocations.subscribe();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick(), if file.is_some() => {
                    let Some(file) = &file else { continue };
                    let now = stamp_off_runtime(file).await;
                    if last.as_ref() == Some(&now) {
                        continue;
                    }
                    last = Some(now);
                    let path = file[0].clone();
                    let loaded = tokio::task::spawn_blocking(move || Revoked::load(&path)).await;
                    let result = match loaded {
                        Ok(Ok(revoked)) => {
                            revocations.set_file(revoked);
                            "ok"
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e,
                                "revocation list rejected; the previous one stays in force");
                            "error"
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "revocation list not read");
                            "error"
                        }
                    };
                    metrics.revocation_loads.with_label_values(&[result]).inc();
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let revoked = revocations.current().len();
                    metrics.revocations.set(revoked as i64);
                    shared.load().clear_cache();
                    tracing::info!(revoked, "revocations changed; decision cache emptied");
                }
            }
        }
    })
}
