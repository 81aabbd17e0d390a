//! The whole service wired together, as `nats-callout run` starts it: authorizer,
//! NATS subscriptions, operations listener and hot reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::nats::service::{Service, ServiceError};
use crate::ops::metrics::Metrics;
use crate::ops::reload::{self, ReloadError};
use crate::pipeline::authorizer::Shared;
use nats_callout_sdk::CredentialKind;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Load(#[from] ReloadError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot listen on {addr} (http_listen): {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct App {
    service: Service,
    metrics: Metrics,
    http_addr: SocketAddr,
    http: JoinHandle<()>,
    reloader: JoinHandle<()>,
    revocations: JoinHandle<()>,
    /// The set serving now, and its config: the benchmark swaps in native builds of the
    /// same plugins (feature `bench`).
    #[cfg(feature = "bench")]
    shared: Shared,
    #[cfg(feature = "bench")]
    config: crate::ops::config::Config,
}

impl App {
    pub async fn start(config_path: &Path) -> Result<Self, AppError> {
        let metrics = Metrics::new();
        let (config, authorizer) = reload::load(config_path, &metrics, None).await?;
        tracing::info!(
            issuer = %authorizer.issuer_public_key(),
            routes = ?authorizer.route_names(),
            "plugins loaded"
        );
        let shared: Shared = Arc::new(arc_swap::ArcSwap::from_pointee(authorizer));
        let service = Service::start(&config, shared.clone())?;
        let names = config.nats.iter().map(|n| n.name.clone()).collect();
        let nats_ready = service.readiness(names);
        let current = shared.clone();
        let ready: crate::ops::http::Readiness = Arc::new(move || {
            nats_ready()?;
            // The keys matter only where oauth2 clients are served: a `jwks` section
            // left in a config without oauth2 must not hold readiness hostage.
            let authorizer = current.load();
            match authorizer.jwks() {
                Some(j) if authorizer.serves(CredentialKind::BearerToken) && !j.is_loaded() => {
                    Err("JWKS not loaded".into())
                }
                _ => Ok(()),
            }
        });
        let (http_addr, http) =
            crate::ops::http::serve(&config.http_listen, metrics.clone(), ready)
                .await
                .map_err(|source| AppError::Listen {
                    addr: config.http_listen.clone(),
                    source,
                })?;
        tracing::info!(%http_addr, "operations listener (/metrics, /healthz, /readyz)");
        let revocations = crate::ops::revocation::spawn(&config, shared.clone(), metrics.clone());
        let reloader = reload::spawn(
            config_path.to_path_buf(),
            &config,
            shared.clone(),
            metrics.clone(),
        );
        Ok(Self {
            service,
            metrics,
            http_addr,
            http,
            reloader,
            revocations,
            #[cfg(feature = "bench")]
            shared,
            #[cfg(feature = "bench")]
            config,
        })
    }

    /// The authorizer serving now (feature `bench`).
    #[cfg(feature = "bench")]
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The config it was started with (feature `bench`).
    #[cfg(feature = "bench")]
    pub fn config(&self) -> &crate::ops::config::Config {
        &self.config
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether every NATS server has the subscription within `timeout` (what `/readyz`
    /// waits for, JWKS aside).
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        self.service.wait_ready(timeout).await
    }

    /// Stop at once, abandoning requests in flight (tests, a failed start).
    pub fn stop(self) {
        self.reloader.abort();
        self.revocations.abort();
        self.http.abort();
        self.service.stop();
    }

    /// Stop as on SIGTERM: no more reloads, then drain the NATS connections (see
    /// [`Service::shutdown`]). The operations listener answers until the end, `/readyz`
    /// with 503.
    pub async fn shutdown(self) {
        self.reloader.abort();
        self.revocations.abort();
        self.service.shutdown().await;
        self.http.abort();
    }
}
