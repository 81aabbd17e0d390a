//! The operations listener: `/metrics` (Prometheus), `/healthz` (the process is alive)
//! and `/readyz` (connected to every NATS server with plugins loaded).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ops::metrics::Metrics;

/// Answers "why not ready?" with `Err(reason)`, or `Ok(())`.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    ready: Readiness,
}

/// Bind `addr` and serve in the background; returns the bound address (port 0 picks one).
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    ready: Readiness,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(Ops { metrics, ready });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "operations listener failed");
        }
    });
    Ok((local, task))
}

async fn metrics_handler(State(ops): State<Ops>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

async fn ready_handler(State(ops): State<Ops>) -> (StatusCode, String) {
    match (ops.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
