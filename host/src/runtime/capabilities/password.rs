//! `verify-password-hash`: a password against a bcrypt or argon2id hash, natively (the
//! SDK's `password::verify`, which plugins' native tests run too).
//!
//! A verification is tens to hundreds of milliseconds of CPU by design, so it runs on
//! the blocking thread pool, never on a thread that serves other requests, and at most
//! one per core at a time: more in parallel would only slow each down, and a flood of
//! password logins must not take every core from the other routes. The plugin waits
//! suspended; the wait and the hash count against its deadline, and a check still
//! running at the deadline is abandoned (it finishes on its thread, holding its core,
//! so the bound on cores holds).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::runtime::State;

/// One verification in flight per core.
fn permits() -> Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Semaphore::new(cores))
        })
        .clone()
}

impl State {
    pub(crate) async fn verify_password_hash(
        &mut self,
        password: String,
        hash: String,
    ) -> Result<bool, String> {
        // The rules first, on this thread: a hash the host refuses costs nothing.
        let scheme = nats_callout_sdk::password::scheme(&hash).map_err(|e| e.to_string())?;
        nats_callout_sdk::password::check_password(&password, scheme).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(self.deadline.at);
        let work = async {
            let permit = permits()
                .acquire_owned()
                .await
                .map_err(|_| "password checks are shut down".to_owned())?;
            tokio::task::spawn_blocking(move || {
                let _held_until_done = permit;
                nats_callout_sdk::password::verify(&password, &hash)
            })
            .await
            .map_err(|_| "the password check failed".to_owned())?
            .map_err(|e| e.to_string())
        };
        let result = tokio::time::timeout_at(deadline, work).await;
        self.hashing += started.elapsed();
        result.unwrap_or_else(|_| {
            Err("the password check did not finish within the plugin's time limit".into())
        })
    }
}
