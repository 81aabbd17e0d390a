//! Prometheus metrics. The `auth_<mode>_*` names are the ones operators' dashboards
//! already use (see the operator guide), so they are spelled out one counter per mode
//! rather than as a `mode` label; they count requests by the credential of the mode
//! (bearer tokens as oauth2, certificates as mtls, ...), whichever route takes them.
//! Routes, which operators name, count in `auth_route_*_total{route}`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::pipeline::routing::Mode;

/// Decision latency buckets: a warm decision takes tens of microseconds, a cold one
/// (fresh instance, JWKS fetch) milliseconds, and nats-server gives up at 2 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.0,
];

#[derive(Clone)]
pub struct Counters {
    pub attempts: IntCounter,
    pub failures: IntCounter,
}

/// One plugin's series, resolved when the plugin is loaded: looked up by label on every
/// call instead, each decision would hash the name, lock the map and find the child two
/// or three times over for nothing.
#[derive(Clone)]
pub struct PluginMetrics {
    pub calls: IntCounter,
    pub denies: IntCounter,
    pub traps: IntCounter,
    pub timeouts: IntCounter,
    pub duration: Histogram,
}

/// Every metric the service exports, in its own registry (several services can live
/// in one process, as they do in tests).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every request received.
    pub requests: IntCounter,
    /// Every request that did not admit a client: denies and invalid requests.
    pub errors: IntCounter,
    pub duration: Histogram,
    /// Requests being decided right now. Shows a burst (or a stuck plugin) as it happens,
    /// where the counters only show it afterwards.
    pub in_flight: IntGauge,
    modes: [Counters; Mode::ALL.len()],
    route_attempts: IntCounterVec,
    route_failures: IntCounterVec,
    plugin_calls: IntCounterVec,
    plugin_denies: IntCounterVec,
    plugin_traps: IntCounterVec,
    plugin_timeouts: IntCounterVec,
    plugin_duration: HistogramVec,
    /// Hot reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    pub jwks_fetches: IntCounter,
    pub jwks_failures: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// Requests refused because their identity is revoked.
    pub revoked: IntCounter,
    /// Identities revoked now (file and KV together).
    pub revocations: IntGauge,
    /// Reads of the revocation file, by result (`ok`, `error`).
    pub revocation_loads: IntCounterVec,
    /// Live connections closed for a revocation, by result (`ok`, `error`).
    pub kicks: IntCounterVec,
    /// Admitted connections the revocation registry tracks (`nats::sessions`).
    pub tracked_connections: IntGauge,
    pub audit_published: IntCounter,
    /// Audit events dropped because NATS did not take them fast enough.
    pub audit_dropped: IntCounter,
    /// Plugins' outbound HTTP requests.
    pub http: crate::runtime::capabilities::http::HttpMetrics,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    labelled(registry, name, help, "plugin")
}

fn labelled(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "auth_request_duration_seconds",
                "Time from receiving an auth request to having its response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric");
        r.register(Box::new(duration.clone()))
            .expect("metric names are unique");
        let plugin_duration = HistogramVec::new(
            HistogramOpts::new(
                "plugin_call_duration_seconds",
                "Time of one plugin call, including waiting for a free instance",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["plugin"],
        )
        .expect("static metric");
        r.register(Box::new(plugin_duration.clone()))
            .expect("metric names are unique");
        let in_flight = IntGauge::new(
            "auth_requests_in_flight",
            "Auth requests being decided right now",
        )
        .expect("static metric");
        r.register(Box::new(in_flight.clone()))
            .expect("metric names are unique");
        let mode = |m: Mode| Counters {
            attempts: counter(
                &r,
                &format!("auth_{m}_attempts_total"),
                &format!("{m} authentication attempts"),
            ),
            failures: counter(
                &r,
                &format!("auth_{m}_failures_total"),
                &format!("{m} authentication attempts that were denied"),
            ),
        };
        Self {
            requests: counter(&r, "auth_requests_total", "Auth callout requests received"),
            errors: counter(
                &r,
                "auth_errors_total",
                "Auth callout requests that did not admit a client (denied or invalid)",
            ),
            duration,
            in_flight,
            modes: Mode::ALL.map(mode),
            route_attempts: labelled(
                &r,
                "auth_route_attempts_total",
                "Requests a route took",
                "route",
            ),
            route_failures: labelled(
                &r,
                "auth_route_failures_total",
                "Requests a route took that were denied",
                "route",
            ),
            plugin_calls: counter_vec(&r, "plugin_calls_total", "Plugin calls"),
            plugin_denies: counter_vec(&r, "plugin_denies_total", "Plugin calls that denied"),
            plugin_traps: counter_vec(
                &r,
                "plugin_traps_total",
                "Plugin calls that trapped or ran out of memory",
            ),
            plugin_timeouts: counter_vec(
                &r,
                "plugin_timeouts_total",
                "Plugin calls stopped at their deadline or refused as busy",
            ),
            plugin_duration,
            reloads: {
                let c = IntCounterVec::new(
                    Opts::new("config_reloads_total", "Hot reloads of config and plugins"),
                    &["result"],
                )
                .expect("static metric");
                r.register(Box::new(c.clone()))
                    .expect("metric names are unique");
                c
            },
            jwks_fetches: counter(&r, "jwks_fetches_total", "JWKS (and discovery) fetches"),
            jwks_failures: counter(&r, "jwks_fetch_failures_total", "JWKS fetches that failed"),
            cache_hits: counter(
                &r,
                "decision_cache_hits_total",
                "Requests decided from the decision cache",
            ),
            cache_misses: counter(
                &r,
                "decision_cache_misses_total",
                "Cacheable requests that had to ask the plugin",
            ),
            revoked: counter(
                &r,
                "auth_revoked_total",
                "Requests refused because their identity is revoked",
            ),
            revocations: gauge(&r, "revocations", "Identities revoked now"),
            revocation_loads: labelled(
                &r,
                "revocation_file_loads_total",
                "Reads of the revocation file after it changed, by result",
                "result",
            ),
            kicks: labelled(
                &r,
                "revocation_kicks_total",
                "Live connections of revoked identities asked to close, by result",
                "result",
            ),
            tracked_connections: gauge(
                &r,
                "revocation_tracked_connections",
                "Admitted connections the revocation registry tracks, to close them if their \
                 identity is revoked",
            ),
            audit_published: counter(
                &r,
                "audit_events_published_total",
                "Decisions published as audit events",
            ),
            audit_dropped: counter(
                &r,
                "audit_events_dropped_total",
                "Audit events dropped because NATS did not take them in time",
            ),
            http: {
                let requests = IntCounterVec::new(
                    Opts::new(
                        "plugin_http_requests_total",
                        "Plugins' outbound HTTP requests by listed host and HTTP status \
                         (or denied, timeout, too_large, error)",
                    ),
                    &["plugin", "host", "status"],
                )
                .expect("static metric");
                r.register(Box::new(requests.clone()))
                    .expect("metric names are unique");
                let duration = HistogramVec::new(
                    HistogramOpts::new(
                        "plugin_http_request_duration_seconds",
                        "Time of one outbound HTTP request of a plugin",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["plugin"],
                )
                .expect("static metric");
                r.register(Box::new(duration.clone()))
                    .expect("metric names are unique");
                crate::runtime::capabilities::http::HttpMetrics { requests, duration }
            },
            registry: r,
        }
    }

    /// The series of the plugin called `name`.
    pub fn plugin(&self, name: &str) -> PluginMetrics {
        let label = &[name];
        PluginMetrics {
            calls: self.plugin_calls.with_label_values(label),
            denies: self.plugin_denies.with_label_values(label),
            traps: self.plugin_traps.with_label_values(label),
            timeouts: self.plugin_timeouts.with_label_values(label),
            duration: self.plugin_duration.with_label_values(label),
        }
    }

    /// The series of the route called `name`.
    pub fn route(&self, name: &str) -> Counters {
        Counters {
            attempts: self.route_attempts.with_label_values(&[name]),
            failures: self.route_failures.with_label_values(&[name]),
        }
    }

    pub fn mode(&self, mode: Mode) -> &Counters {
        let i = Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0);
        &self.modes[i]
    }

    /// Count a request as in flight until the returned guard drops (also when the task
    /// deciding it is cancelled).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Register a collector owned elsewhere (e.g. the JWKS cache's counters).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!(error = %e, "metric not registered");
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Decrements `auth_requests_in_flight` when dropped.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
