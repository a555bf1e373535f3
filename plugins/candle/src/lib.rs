//! bkg's Candle plugin: sentence embedders, cross-encoders and classifiers (BERT, XLM-RoBERTa,
//! Qwen2/3 decoder embedders) served with dynamic batching.
//!
//! ```text
//!  invoke ─▶ schema (parse) ─▶ tokenize (max_seq_length, no baked-in padding)
//!                                   │
//!                                   ▼
//!                         batcher (own thread, bounded) ─▶ models::<arch> forward on a packed
//!                                   │                     batch ─▶ pooling ─▶ normalize
//!                                   ▼
//!                       {"embeddings": [[…]], "truncated": […], "usage": …}
//! ```
//!
//! | capability     | does |
//! |----------------|------|
//! | `model.load`   | loads `{model_id, revision?}` from the Hub cache or `{path}` from disk |
//! | `model.unload` | drops the model; embedding requests then answer 503 |
//! | `model.infer`  | embeds `input` (string or list), reports truncation and token usage |
//! | `embeddings`   | the same, in OpenAI's `/v1/embeddings` shapes |
//! | `rerank`       | a cross-encoder's scores of `texts` against `query`, best first (TEI) |
//! | `classify`     | a sequence classifier's labels and probabilities per input (TEI) |
//!
//! Config keys are documented on [`config::PluginConfig`].

// `unsafe` is denied everywhere except `kernels`, which needs SIMD intrinsics.
#![deny(unsafe_code)]

pub mod artifacts;
pub mod batcher;
pub mod config;
pub mod engine;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod layers;
pub mod metrics;
pub mod models;
pub mod plugin;
pub mod pooling;
pub mod schema;
pub mod scoring;
pub mod source;
pub mod tokenize;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use config::{BatchPolicy, PluginConfig};
pub use engine::{Embedder, LoadOptions, ModelInfo};
pub use error::{Error, Result};
pub use plugin::CandlePlugin;

/// Creates the plugin; the runtime calls this once per process.
pub fn new_plugin() -> Box<dyn bkg_plugin_api::Plugin> {
    Box::new(CandlePlugin::default())
}
