//! Prometheus metrics, named `salus_<area>_<what>_<unit>`: HTTP requests by route and
//! status with latency histograms, commit batch sizes and durations, ledger seals, and
//! requests the route guard refused.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use salus_store::commit::CommitObserver;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The permission the route declares, `active_role` for a user without one, or
    /// `care_relationship` for a read refused by the tenant's care policy.
    pub permission: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
    pub commit_batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub committed_events: Counter,
    pub tree_heads_signed: Counter,
    pub integrity_failures: Counter,
    pub access_denied: Family<DeniedLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let in_flight = Gauge::default();
        let commit_batch_size = Histogram::new([
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ]);
        let commit_seconds = Histogram::new(latency_buckets());
        let committed_events = Counter::default();
        let tree_heads_signed = Counter::default();
        let integrity_failures = Counter::default();
        let access_denied = Family::<DeniedLabels, Counter>::default();
        registry.register(
            "salus_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "salus_http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        registry.register(
            "salus_http_requests_in_flight",
            "HTTP requests being served",
            in_flight.clone(),
        );
        registry.register(
            "salus_store_commit_batch_size",
            "Write requests per committed transaction",
            commit_batch_size.clone(),
        );
        registry.register(
            "salus_store_commit_duration_seconds",
            "Time to plan, write and durably commit one batch",
            commit_seconds.clone(),
        );
        registry.register(
            "salus_store_committed_events",
            "Events committed",
            committed_events.clone(),
        );
        registry.register(
            "salus_ledger_tree_heads_signed",
            "Tree heads signed by the sealer",
            tree_heads_signed.clone(),
        );
        registry.register(
            "salus_integrity_failures",
            "Stored records that failed their integrity check on read (never served)",
            integrity_failures.clone(),
        );
        registry.register(
            "salus_access_denied",
            "Requests refused (403) by the route guard, by the permission they lacked",
            access_denied.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            in_flight,
            commit_batch_size,
            commit_seconds,
            committed_events,
            tree_heads_signed,
            integrity_failures,
            access_denied,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Feeds commit batches into the metrics.
pub struct CommitMetrics(pub Arc<Metrics>);

impl CommitObserver for CommitMetrics {
    fn batch_committed(&self, requests: usize, events: usize, took: Duration) {
        self.0.commit_batch_size.observe(requests as f64);
        self.0.commit_seconds.observe(took.as_secs_f64());
        self.0.committed_events.inc_by(events as u64);
    }
}

/// Middleware: count and time every request by its route template (never the raw path,
/// which would carry ids).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    metrics.in_flight.inc();
    let resp = next.run(req).await;
    metrics.in_flight.dec();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
