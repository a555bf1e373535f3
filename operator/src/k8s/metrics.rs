//! The operator's Prometheus metrics, served on its own metrics port.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`super::Error::category`].
    pub category: String,
}

/// Every metric the controller records.
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub status_writes: Counter,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            status_writes: Counter::default(),
            leader: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `bkg_operator_`.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("bkg_operator");
        r.register(
            "reconciliations",
            "Reconcile runs of Plugin resources",
            self.reconciliations.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed reconciles by error category",
            self.failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            self.duration.clone(),
        );
        r.register(
            "status_writes",
            "Plugin status updates written (steady state writes none)",
            self.status_writes.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        self
    }

    /// Counts a reconcile and observes its duration when the guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciliations.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    pub fn failed(&self, category: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                category: category.to_owned(),
            })
            .inc();
    }
}

/// Observes the reconcile duration on drop, so early returns are measured too.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_exported() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        drop(m.reconcile_started());
        m.failed("conflict");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for needle in [
            "bkg_operator_reconciliations_total 1",
            "bkg_operator_reconcile_failures_total{category=\"conflict\"} 1",
            "bkg_operator_reconcile_duration_seconds_count 1",
            "bkg_operator_status_writes_total 0",
            "bkg_operator_leader 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
