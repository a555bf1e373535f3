//! Prometheus metrics of the runtime: invokes by capability and status code, their duration,
//! calls in flight, readiness, and the standard `process_*` series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::process;

/// Buckets from 0.5 ms to ~65 s: echo answers in microseconds, model calls in seconds.
fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvokeLabels {
    pub plugin: String,
    pub capability: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    pub plugin: String,
    pub capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

/// Every metric the runtime itself records.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<InvokeLabels, Counter>,
    pub duration: Family<CapabilityLabels, Histogram>,
    pub in_flight: Family<PluginLabels, Gauge>,
    pub ready: Family<PluginLabels, Gauge>,
}

impl Metrics {
    /// Registers the runtime's metrics (and the process collector) under `bkg_runtime_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            in_flight: Family::default(),
            ready: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("bkg_runtime");
        sub.register(
            "invoke_requests",
            "Invoke requests answered, by capability and HTTP status code",
            metrics.requests.clone(),
        );
        sub.register(
            "invoke_duration_seconds",
            "Time to answer an invoke request",
            metrics.duration.clone(),
        );
        sub.register(
            "invoke_in_flight",
            "Invoke requests being served now",
            metrics.in_flight.clone(),
        );
        sub.register(
            "ready",
            "1 when the plugin has started and the runtime accepts invokes",
            metrics.ready.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::default()));
        metrics
    }
}

/// The invoke series of the hosted plugin, resolved once per capability instead of per call
/// (`Family::get_or_create` takes owned label strings and hashes them every time).
pub struct InvokeSeries {
    in_flight: Gauge,
    requests: Family<InvokeLabels, Counter>,
    capabilities: HashMap<String, CapabilitySeries>,
}

struct CapabilitySeries {
    duration: Histogram,
    by_code: RwLock<Vec<(u16, Counter)>>,
    labels: CapabilityLabels,
}

/// One invoke in flight; the gauge goes down when it is dropped, however the invoke ends.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl InvokeSeries {
    /// The series of `plugin`'s capabilities (each id a label value as given; callers map
    /// unknown capabilities to one of them, e.g. `_unknown`).
    pub fn new<'a>(
        metrics: &Metrics,
        plugin: &str,
        capabilities: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let in_flight = metrics
            .in_flight
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .clone();
        let capabilities = capabilities
            .into_iter()
            .map(|capability| {
                let labels = CapabilityLabels {
                    plugin: plugin.to_owned(),
                    capability: capability.to_owned(),
                };
                let series = CapabilitySeries {
                    duration: metrics.duration.get_or_create(&labels).clone(),
                    by_code: RwLock::default(),
                    labels,
                };
                (capability.to_owned(), series)
            })
            .collect();
        Self {
            in_flight,
            requests: metrics.requests.clone(),
            capabilities,
        }
    }

    /// Counts an invoke as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts one answered invoke of `capability` (one of those given to [`Self::new`]).
    pub fn observe(&self, capability: &str, code: u16, seconds: f64) {
        let Some(series) = self.capabilities.get(capability) else {
            return;
        };
        series.duration.observe(seconds);
        let known = series
            .by_code
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, counter)| counter.clone());
        let counter = known.unwrap_or_else(|| {
            let counter = self
                .requests
                .get_or_create(&InvokeLabels {
                    plugin: series.labels.plugin.clone(),
                    capability: series.labels.capability.clone(),
                    code: code.to_string(),
                })
                .clone();
            let mut by_code = series.by_code.write().unwrap_or_else(|e| e.into_inner());
            by_code.push((code, counter.clone()));
            counter
        });
        counter.inc();
    }
}

/// The conventional `process_*` series, read at scrape time.
#[derive(Debug, Default)]
struct ProcessCollector {
    start_time: Arc<AtomicI64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.start_time.load(Ordering::Relaxed) == 0 {
            self.start_time
                .store(jiff::Timestamp::now().as_second(), Ordering::Relaxed);
        }
        if let Some(rss) = process::rss_bytes(None) {
            let gauge = ConstGauge::new(rss as i64);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        if let Some(cpu) = process::cpu_seconds() {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let start = ConstGauge::new(self.start_time.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            None,
            start.metric_type(),
        )?;
        start.encode(metric)
    }
}
