//! The plugin's Prometheus metrics. Created with the plugin (before any model) so the runtime
//! can register them whenever it likes; the batching threads update clones of them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone)]
pub struct Metrics {
    /// Inputs per forward pass.
    pub batch_size: Histogram,
    /// Tokens per forward pass (without padding).
    pub batch_tokens: Histogram,
    /// Inputs waiting for a batch.
    pub queue_depth: Gauge,
    /// Wall time of one forward pass including pooling.
    pub inference_duration: Histogram,
    /// Inputs refused because the queue was full.
    pub rejected: Counter,
    /// Inputs embedded.
    pub embedded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            batch_tokens: Histogram::new(exponential_buckets(16.0, 2.0, 12)),
            queue_depth: Gauge::default(),
            inference_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rejected: Counter::default(),
            embedded: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "bkg_candle_batch_size",
            "Inputs per forward pass",
            self.batch_size.clone(),
        );
        registry.register(
            "bkg_candle_batch_tokens",
            "Tokens per forward pass, padding excluded",
            self.batch_tokens.clone(),
        );
        registry.register(
            "bkg_candle_queue_depth",
            "Inputs waiting for a batch",
            self.queue_depth.clone(),
        );
        registry.register_with_unit(
            "bkg_candle_inference_duration",
            "Wall time of one forward pass including pooling",
            Unit::Seconds,
            self.inference_duration.clone(),
        );
        registry.register(
            "bkg_candle_rejected_inputs",
            "Inputs refused because the queue was full",
            self.rejected.clone(),
        );
        registry.register(
            "bkg_candle_embedded_inputs",
            "Inputs embedded",
            self.embedded.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_units_and_conventional_suffixes() {
        let mut registry = Registry::default();
        Metrics::default().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "bkg_candle_batch_size_bucket",
            "bkg_candle_queue_depth ",
            "bkg_candle_inference_duration_seconds_bucket",
            "bkg_candle_rejected_inputs_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
