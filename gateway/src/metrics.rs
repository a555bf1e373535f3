//! The gateway's Prometheus metrics.

use bkg_core::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub plugin: String,
    pub phase: String,
}

/// Every metric the gateway records.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<CapabilityLabels, Histogram>,
    pub in_flight: Family<PluginLabels, Gauge>,
    pub plugin_up: Family<PluginLabels, Gauge>,
    pub plugin_phase: Family<PhaseLabels, Gauge>,
    pub key_requests: Family<KeyLabels, Counter>,
    pub rate_limited: Family<CapabilityLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            in_flight: Family::default(),
            plugin_up: Family::default(),
            plugin_phase: Family::default(),
            key_requests: Family::default(),
            rate_limited: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("bkg_gateway");
        sub.register(
            "invoke_requests",
            "Invoke requests answered by the gateway, by plugin, capability and HTTP status code",
            m.requests.clone(),
        );
        sub.register(
            "invoke_duration_seconds",
            "Time the gateway took to answer an invoke request",
            m.duration.clone(),
        );
        sub.register(
            "invoke_in_flight",
            "Invoke requests the gateway is serving now",
            m.in_flight.clone(),
        );
        sub.register(
            "plugin_up",
            "1 when the plugin has at least one ready instance",
            m.plugin_up.clone(),
        );
        sub.register(
            "plugin_phase",
            "1 for the plugin's current lifecycle phase, 0 for the others",
            m.plugin_phase.clone(),
        );
        sub.register(
            "api_key_requests",
            "Authenticated API requests by key id (never the key)",
            m.key_requests.clone(),
        );
        sub.register(
            "rate_limited_requests",
            "Invoke requests refused with 429 by the rate limiter",
            m.rate_limited.clone(),
        );
        m
    }

    /// Counts one authenticated request of a key.
    pub fn observe_key(&self, key_id: &str) {
        self.key_requests
            .get_or_create(&KeyLabels {
                key_id: key_id.to_owned(),
            })
            .inc();
    }

    /// Refreshes the per-plugin gauges from a fresh listing, and creates the in-flight gauge
    /// and rate-limited counter of every declared capability at 0, so `rate()` and
    /// `increase()` see the first refusal instead of a series that starts at 1.
    pub fn observe_plugins<'a>(&self, plugins: impl Iterator<Item = PluginSeries<'a>>) {
        self.plugin_up.clear();
        self.plugin_phase.clear();
        for PluginSeries {
            id,
            phase,
            up,
            capabilities,
        } in plugins
        {
            let _ = self.in_flight.get_or_create(&PluginLabels {
                plugin: id.to_owned(),
            });
            for capability in capabilities {
                let _ = self.rate_limited.get_or_create(&CapabilityLabels {
                    plugin: id.to_owned(),
                    capability: capability.to_owned(),
                });
            }
            self.plugin_up
                .get_or_create(&PluginLabels {
                    plugin: id.to_owned(),
                })
                .set(i64::from(up));
            for p in Phase::ALL {
                self.plugin_phase
                    .get_or_create(&PhaseLabels {
                        plugin: id.to_owned(),
                        phase: p.as_str().to_owned(),
                    })
                    .set(i64::from(p == phase));
            }
        }
    }
}

/// What `/metrics` knows of one plugin when it is scraped.
pub struct PluginSeries<'a> {
    pub id: &'a str,
    pub phase: Phase,
    /// At least one instance is ready.
    pub up: bool,
    /// The capability ids its manifest declares.
    pub capabilities: Vec<&'a str>,
}
