//! Hot reload: on SIGHUP, or when the config file, a plugin or a seed file changes,
//! build a complete new [`Authorizer`] beside the current one and swap it in
//! atomically. Requests already running finish on the old one; a config or plugin
//! that fails to load is logged and the current set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::ops::config::Config;
use crate::ops::memory;
use crate::ops::metrics::Metrics;
use crate::pipeline::authorizer::{Authorizer, Shared};

/// What a reload attempt found wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::ops::config::ConfigError),
    #[error(transparent)]
    Load(#[from] crate::pipeline::authorizer::LoadError),
    #[error("reload task failed: {0}")]
    Join(String),
}

pub(crate) type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The files whose change triggers a reload: the config and every file it names.
fn watched_files(config_path: &Path, cfg: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    files.extend(cfg.plugin_specs().iter().map(|p| cfg.plugin_path(p)));
    files.extend(
        [&cfg.issuer_seed_file, &cfg.xkey_seed_file]
            .into_iter()
            .flatten()
            .map(|p| cfg.resolve(p)),
    );
    // So do operator mode's account JWTs (an account re-signed with new signing keys,
    // allowed_accounts changed) and signing seeds.
    if let Some(op) = &cfg.operator {
        files.push(cfg.resolve(&op.callout_account_jwt_file));
        for a in op.accounts.values() {
            files.push(cfg.resolve(&a.jwt_file));
            files.extend(a.signing_key_file.as_ref().map(|p| cfg.resolve(p)));
        }
    }
    // A rotated CA bundle takes effect like any other config change.
    files.extend(cfg.mtls_ca_file());
    files.extend(cfg.outbound_http.ca_file.as_ref().map(|p| cfg.resolve(p)));
    // So does a rotated plugin secret (a Kubernetes Secret's file swapped under its mount).
    files.extend(
        cfg.plugin_specs()
            .iter()
            .flat_map(|p| p.secrets.values())
            .filter_map(|s| s.file.as_ref())
            .map(|f| cfg.resolve(f)),
    );
    files
}

/// Each file's modification time and size.
pub(crate) fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            // metadata() follows symlinks: a swapped ConfigMap link shows as a change.
            let meta = std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f.clone(), meta)
        })
        .collect()
}

/// [`stamp`] on a blocking thread: a hung volume must not hold a runtime thread.
pub(crate) async fn stamp_off_runtime(files: &Arc<Vec<PathBuf>>) -> Stamp {
    let files = files.clone();
    tokio::task::spawn_blocking(move || stamp(&files))
        .await
        .unwrap_or_default()
}

/// The stamp to compare later ticks with after a successful load: the new set's files,
/// but for every file also watched before, its state from before the load, so that a
/// write that raced with the load is seen as a change on the next tick.
fn settled(after: Stamp, before: &Stamp) -> Stamp {
    after
        .into_iter()
        .map(|(f, meta)| match before.iter().find(|(b, _)| *b == f) {
            Some((_, old)) => (f, *old),
            None => (f, meta),
        })
        .collect()
}

/// Load the config at `path` and build an authorizer from it, off the async threads
/// (compiling plugins is CPU work). `previous`: the set it replaces, whose JWKS keys it
/// starts from and whose revocations it keeps serving.
pub async fn load(
    path: &Path,
    metrics: &Metrics,
    previous: Option<&Authorizer>,
) -> Result<(Config, Authorizer), ReloadError> {
    let path = path.to_path_buf();
    let metrics = metrics.clone();
    let (cfg, mut authorizer) = tokio::task::spawn_blocking(move || {
        let cfg = Config::load(&path)?;
        let authorizer = Authorizer::from_config(&cfg, metrics)?;
        Ok::<_, ReloadError>((cfg, authorizer))
    })
    .await
    .map_err(|e| ReloadError::Join(e.to_string()))??;
    if let Some(previous) = previous {
        authorizer.adopt_revocations(previous);
    }
    // Fetch the keys before this set serves: an unreachable provider is logged and
    // retried in the background (oauth2 denies meanwhile, other modes serve).
    if let Some(jwks) = authorizer.jwks() {
        if let Some(old) = previous.and_then(Authorizer::jwks) {
            jwks.adopt_keys(old);
        }
        if let Err(e) = jwks.refresh().await {
            if jwks.is_loaded() {
                tracing::warn!(error = %e, "JWKS not refreshed; the previous keys serve until max_stale");
            } else {
                tracing::error!(error = %e, "JWKS not available yet; oauth2 clients are denied until it is");
            }
        }
        jwks.spawn_refresher();
    }
    Ok((cfg, authorizer))
}

/// Longest a replaced set is waited for: the decisions still holding it end within
/// their plugin deadlines (seconds at most); a set held longer is released unwatched.
const RETIRE_WAIT: Duration = Duration::from_secs(30);

/// Once the decisions still running on a replaced set are done and it is gone, give
/// the memory it held back to the system ([`memory::release_freed`]). The task ends
/// `true` when it did, `false` when the set outlived `wait`.
fn retire<T: Send + Sync + 'static>(old: Arc<T>, wait: Duration) -> JoinHandle<bool> {
    let old = Arc::downgrade(&old);
    tokio::spawn(async move {
        let since = Instant::now();
        while old.strong_count() > 0 {
            if since.elapsed() > wait {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::task::spawn_blocking(memory::release_freed)
            .await
            .is_ok()
    })
}

/// Watch for SIGHUP and file changes and reload; runs until aborted.
pub fn spawn(
    config_path: PathBuf,
    current: &Config,
    shared: Shared,
    metrics: Metrics,
) -> JoinHandle<()> {
    // The files polled: the config on disk and those it names, even when it was
    // rejected, so that supplying the plugin file it was missing triggers a retry.
    let mut watched = Arc::new(watched_files(&config_path, current));
    let mut last = stamp(&watched);
    let mut last_cfg = current.clone();
    let interval = current.reload_interval;
    // Registered before returning, not inside the task: SIGHUP's default action ends the
    // process, so a signal sent right after start must already find the handler.
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; reloads follow file changes only");
            None
        }
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<bool>();
            let reason = tokio::select! {
                _ = signalled => "SIGHUP",
                _ = tick.tick() => {
                    if stamp_off_runtime(&watched).await == last {
                        continue;
                    }
                    "file change"
                }
            };
            // Taken before loading: a file still being written when it is read changes
            // again afterwards, and that later change must trigger another reload.
            let before = stamp_off_runtime(&watched).await;
            tracing::info!(reason, config = %config_path.display(), "reloading");
            let current = shared.load_full();
            match load(&config_path, &metrics, Some(&current)).await {
                Ok((cfg, authorizer)) => {
                    let ignored = cfg.restart_only_changes(&last_cfg);
                    if !ignored.is_empty() {
                        tracing::warn!(
                            changed = ?ignored,
                            "these settings changed and take effect only after a restart"
                        );
                    }
                    shared.store(Arc::new(authorizer));
                    retire(current, RETIRE_WAIT);
                    metrics.reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(routes = ?shared.load().route_names(), "reloaded: new config and plugins serving");
                    watched = Arc::new(watched_files(&config_path, &cfg));
                    last = settled(stamp_off_runtime(&watched).await, &before);
                    last_cfg = cfg;
                }
                Err(e) => {
                    metrics.reloads.with_label_values(&["error"]).inc();
                    tracing::error!(error = %e, "reload rejected; the previous config keeps serving");
                    // Do not retry the same broken files every tick; wait for the next
                    // change to them, or to the files the rejected config names.
                    if let Ok(rejected) = Config::load(&config_path) {
                        watched = Arc::new(watched_files(&config_path, &rejected));
                        last = settled(stamp_off_runtime(&watched).await, &before);
                    } else {
                        last = before;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory of a replaced set is released only once the last decision holding it
    /// lets go, and a set held past the wait is left alone.
    #[tokio::test]
    async fn retire_waits_for_the_last_holder() {
        let set = Arc::new(vec![0u8; 1024]);
        let in_flight = set.clone();
        let retired = retire(set, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!retired.is_finished(), "released while a decision held it");
        drop(in_flight);
        assert!(retired.await.unwrap_or(false), "released once let go");

        let held = Arc::new(());
        let _forever = held.clone();
        let retired = retire(held, Duration::from_millis(100));
        assert!(!retired.await.unwrap_or(true), "a set held past the wait");
    }
}
