//! Prometheus metrics at `GET /metrics` (text exposition format, no token, as neon's own
//! components serve theirs): API requests by route and status, reconciles, their errors and
//! durations, what became of each branch, whether this replica leads, and scale to zero: wakes,
//! suspends and how long a wake took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's name (`spec`, `wake_compute`, ...), never the path: ids stay out of labels.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `Ready`, `Pending` or `Failed`.
    pub phase: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_seconds: Histogram,
    pub branch_outcomes: Family<OutcomeLabels, Counter>,
    pub leader: Gauge,
    pub wakes: Counter,
    pub wake_seconds: Histogram,
    pub suspends: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("neonctl_control_plane");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "API requests answered, by route and status", requests.clone());
        let reconciles = Counter::default();
        registry.register("reconciles", "NeonBranch reconciles run", reconciles.clone());
        let reconcile_errors = Counter::default();
        registry.register("reconcile_errors", "NeonBranch reconciles that failed (retried after a backoff)", reconcile_errors.clone());
        // 1 ms .. ~33 s.
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("reconcile_seconds", "How long a NeonBranch reconcile took", reconcile_seconds.clone());
        let branch_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register("branch_reconciles", "Branches reconciled, by the phase they ended in", branch_outcomes.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica runs the operator", leader.clone());
        let wakes = Counter::default();
        registry.register("wakes", "Suspended computes started by a connection (wake_compute) or by hand", wakes.clone());
        // 10 ms .. ~160 s.
        let wake_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register("wake_seconds", "From scaling a suspended compute up to compute_ctl reporting it running", wake_seconds.clone());
        let suspends = Counter::default();
        registry.register("suspends", "Computes stopped and scaled to zero (idle past their timeout, or by hand)", suspends.clone());
        Self { registry, requests, reconciles, reconcile_errors, reconcile_seconds, branch_outcomes, leader, wakes, wake_seconds, suspends }
    }
}

impl Metrics {
    /// The text exposition (`text/plain; version=0.0.4` compatible OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
