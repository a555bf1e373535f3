//! The gateway's Prometheus metrics.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bkg_core::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::FastMap;

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
pub struct AliasLabels {
    pub alias: String,
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub plugin: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyTokenLabels {
    pub key_id: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
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
    /// Invokes held while a plugin has no ready replica (scale from zero).
    pub held_requests: Family<PluginLabels, Gauge>,
    /// The autoscaler's replica count per plugin.
    pub desired_replicas: Family<PluginLabels, Gauge>,
    /// Time from an invoke being held to a replica being ready for it.
    pub activation: Family<PluginLabels, Histogram>,
    pub plugin_up: Family<PluginLabels, Gauge>,
    pub plugin_phase: Family<PhaseLabels, Gauge>,
    pub key_requests: Family<KeyLabels, Counter>,
    pub rate_limited: Family<CapabilityLabels, Counter>,
    /// Calls that named an alias, by the plugin picked for them (the canary split).
    pub alias_requests: Family<AliasLabels, Counter>,
    /// Tokens of generation answers (whole and streamed), by plugin and kind.
    pub tokens: Family<TokenLabels, Counter>,
    /// The same tokens by API key and kind.
    pub key_tokens: Family<KeyTokenLabels, Counter>,
    /// From the gateway taking a streamed call to its first text line.
    pub first_token: Family<PluginLabels, Histogram>,
    /// Between two text lines of a stream.
    pub inter_token: Family<PluginLabels, Histogram>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Idle client connections closed to make room under the connection cap.
    pub connections_evicted: Counter,
    /// The invoke path's series, resolved once per label set.
    handles: Arc<Handles>,
}

/// Series handles by label values. `Family::get_or_create` takes an owned label set (two or
/// three `String`s) and hashes it on every call; these maps are looked up by `&str`. Label
/// values are bounded as the families' are: known plugins, their declared capabilities (else
/// `_unknown`), status codes and key ids.
#[derive(Default)]
struct Handles {
    plugins: RwLock<FastMap<String, PluginHandles>>,
    keys: RwLock<FastMap<String, Counter>>,
}

#[derive(Default)]
struct PluginHandles {
    in_flight: Option<Gauge>,
    /// Invokes started, ever: the autoscaler tells activity between its samples from it.
    started: Arc<std::sync::atomic::AtomicU64>,
    /// Answers, 5xx answers and latency for the gateway's history (`history`).
    stats: crate::history::InvokeStats,
    capabilities: FastMap<String, CapabilityHandles>,
}

struct CapabilityHandles {
    duration: Histogram,
    by_code: Vec<(u16, Counter)>,
}

/// One invoke in flight; the gauge goes down when it is dropped, however the invoke ends.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            in_flight: Family::default(),
            held_requests: Family::default(),
            desired_replicas: Family::default(),
            activation: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            plugin_up: Family::default(),
            plugin_phase: Family::default(),
            key_requests: Family::default(),
            rate_limited: Family::default(),
            alias_requests: Family::default(),
            tokens: Family::default(),
            key_tokens: Family::default(),
            first_token: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            inter_token: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            connections_open: Gauge::default(),
            connections_evicted: Counter::default(),
            handles: Arc::default(),
        };
        let sub = registry.sub_registry_with_prefix("bkg_gateway");
        sub.register(
            "connections",
            "Client connections open now",
            m.connections_open.clone(),
        );
        sub.register(
            "connections_evicted",
            "Idle client connections closed to make room at the connection cap",
            m.connections_evicted.clone(),
        );
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
            "held_requests",
            "Invokes held while the plugin has no ready replica (scale from zero)",
            m.held_requests.clone(),
        );
        sub.register(
            "desired_replicas",
            "Replicas the autoscaler wants for the plugin",
            m.desired_replicas.clone(),
        );
        sub.register(
            "activation_duration_seconds",
            "Time a held invoke waited for a ready replica",
            m.activation.clone(),
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
        sub.register(
            "alias_requests",
            "Calls that named an alias (the model of /v1 or the id of an invoke), by alias and the plugin picked for them",
            m.alias_requests.clone(),
        );
        sub.register(
            "tokens",
            "Tokens of generation answers, whole and streamed, by plugin and kind (prompt, completion), as the plugin reports its usage",
            m.tokens.clone(),
        );
        sub.register(
            "api_key_tokens",
            "Tokens of generation answers by API key id and kind (prompt, completion)",
            m.key_tokens.clone(),
        );
        sub.register(
            "time_to_first_token_seconds",
            "Time from the gateway taking a streamed call to relaying its first text",
            m.first_token.clone(),
        );
        sub.register(
            "inter_token_latency_seconds",
            "Time between two texts of a stream the gateway relays",
            m.inter_token.clone(),
        );
        m
    }

    /// Counts an answer's tokens for its plugin and its key. Label values are known plugins
    /// and key ids, as for the other families.
    pub fn observe_tokens(&self, plugin: &str, key_id: &str, usage: crate::tokens::Usage) {
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    plugin: plugin.to_owned(),
                    kind,
                })
                .inc_by(n);
            self.key_tokens
                .get_or_create(&KeyTokenLabels {
                    key_id: key_id.to_owned(),
                    kind,
                })
                .inc_by(n);
        }
    }

    /// Records a stream's time to first token.
    pub fn observe_first_token(&self, plugin: &str, took: Duration) {
        self.first_token
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records the time between two texts of a stream.
    pub fn observe_inter_token(&self, plugin: &str, took: Duration) {
        self.inter_token
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a call of `alias` answered by `plugin`. Both label values come from manifests
    /// (declared aliases, known plugins), so the series stay bounded.
    pub fn observe_alias(&self, alias: &str, plugin: &str) {
        self.alias_requests
            .get_or_create(&AliasLabels {
                alias: alias.to_owned(),
                plugin: plugin.to_owned(),
            })
            .inc();
    }

    /// Counts one authenticated request of a key.
    pub fn observe_key(&self, key_id: &str) {
        if let Some(counter) = read(&self.handles.keys).get(key_id) {
            counter.inc();
            return;
        }
        let counter = self
            .key_requests
            .get_or_create(&KeyLabels {
                key_id: key_id.to_owned(),
            })
            .clone();
        counter.inc();
        write(&self.handles.keys).insert(key_id.to_owned(), counter);
    }

    /// Counts one answered invoke and its duration.
    pub fn observe_invoke(&self, plugin: &str, capability: &str, code: u16, took: Duration) {
        let seconds = took.as_secs_f64();
        {
            let plugins = read(&self.handles.plugins);
            if let Some(p) = plugins.get(plugin)
                && let Some(c) = p.capabilities.get(capability)
                && let Some((_, counter)) = c.by_code.iter().find(|(k, _)| *k == code)
            {
                counter.inc();
                c.duration.observe(seconds);
                p.stats.record(code, took);
                return;
            }
        }
        let mut plugins = write(&self.handles.plugins);
        let plugin_handles = plugins.entry(plugin.to_owned()).or_default();
        plugin_handles.stats.record(code, took);
        let handles = plugin_handles
            .capabilities
            .entry(capability.to_owned())
            .or_insert_with(|| CapabilityHandles {
                duration: self
                    .duration
                    .get_or_create(&CapabilityLabels {
                        plugin: plugin.to_owned(),
                        capability: capability.to_owned(),
                    })
                    .clone(),
                by_code: Vec::new(),
            });
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                plugin: plugin.to_owned(),
                capability: capability.to_owned(),
                code: code.to_string(),
            })
            .clone();
        counter.inc();
        handles.duration.observe(seconds);
        handles.by_code.push((code, counter));
    }

    /// Invokes of `plugin` in flight now (served and held).
    pub fn in_flight_now(&self, plugin: &str) -> i64 {
        read(&self.handles.plugins)
            .get(plugin)
            .and_then(|p| p.in_flight.as_ref())
            .map_or(0, Gauge::get)
    }

    /// Invokes of `plugin` started since the gateway started.
    pub fn started(&self, plugin: &str) -> u64 {
        read(&self.handles.plugins)
            .get(plugin)
            .map_or(0, |p| p.started.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `plugin`'s answered invokes, 5xx answers and latency buckets since the gateway started.
    pub fn invoke_stats(&self, plugin: &str) -> crate::history::Snapshot {
        read(&self.handles.plugins)
            .get(plugin)
            .map(|p| p.stats.snapshot())
            .unwrap_or_default()
    }

    /// The held-invokes gauge of `plugin`.
    pub fn held(&self, plugin: &str) -> Gauge {
        self.held_requests
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .clone()
    }

    /// The autoscaler's desired-replicas gauge of `plugin`.
    pub fn desired(&self, plugin: &str) -> Gauge {
        self.desired_replicas
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .clone()
    }

    /// Records how long a held invoke waited for a replica.
    pub fn observe_activation(&self, plugin: &str, waited: std::time::Duration) {
        self.activation
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Counts an invoke of a known plugin as in flight until the returned guard is dropped.
    pub fn in_flight(&self, plugin: &str) -> InFlight {
        let cached = read(&self.handles.plugins).get(plugin).and_then(|p| {
            p.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            p.in_flight.clone()
        });
        let gauge = cached.unwrap_or_else(|| {
            let gauge = self
                .in_flight
                .get_or_create(&PluginLabels {
                    plugin: plugin.to_owned(),
                })
                .clone();
            let mut plugins = write(&self.handles.plugins);
            let handles = plugins.entry(plugin.to_owned()).or_default();
            handles.in_flight = Some(gauge.clone());
            handles
                .started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gauge
        });
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts an invoke refused by the rate limiter.
    pub fn observe_rate_limited(&self, plugin: &str, capability: &str) {
        self.rate_limited
            .get_or_create(&CapabilityLabels {
                plugin: plugin.to_owned(),
                capability: capability.to_owned(),
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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn cached_handles_count_on_the_registered_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        for code in [200, 200, 503] {
            metrics.observe_invoke("echo", "echo", code, Duration::from_millis(2));
        }
        metrics.observe_key("ci");
        metrics.observe_key("ci");
        let in_flight = metrics.in_flight("echo");
        let during = exposition(&registry);
        drop(in_flight);
        let after = exposition(&registry);
        for line in [
            r#"bkg_gateway_invoke_requests_total{plugin="echo",capability="echo",code="200"} 2"#,
            r#"bkg_gateway_invoke_requests_total{plugin="echo",capability="echo",code="503"} 1"#,
            r#"bkg_gateway_invoke_duration_seconds_count{plugin="echo",capability="echo"} 3"#,
            r#"bkg_gateway_api_key_requests_total{key_id="ci"} 2"#,
            r#"bkg_gateway_invoke_in_flight{plugin="echo"} 0"#,
        ] {
            assert!(after.contains(line), "{line} missing in\n{after}");
        }
        assert!(during.contains(r#"bkg_gateway_invoke_in_flight{plugin="echo"} 1"#));
    }

    #[test]
    fn tokens_and_token_latencies_are_exposed_per_plugin_and_key() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let usage = crate::tokens::Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
        };
        metrics.observe_tokens("llm", "ci", usage);
        metrics.observe_tokens("llm", "ci", usage);
        metrics.observe_first_token("llm", Duration::from_millis(20));
        metrics.observe_inter_token("llm", Duration::from_millis(2));
        let text = exposition(&registry);
        for line in [
            r#"bkg_gateway_tokens_total{plugin="llm",kind="prompt"} 14"#,
            r#"bkg_gateway_tokens_total{plugin="llm",kind="completion"} 6"#,
            r#"bkg_gateway_api_key_tokens_total{key_id="ci",kind="completion"} 6"#,
            r#"bkg_gateway_time_to_first_token_seconds_count{plugin="llm"} 1"#,
            r#"bkg_gateway_inter_token_latency_seconds_count{plugin="llm"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
