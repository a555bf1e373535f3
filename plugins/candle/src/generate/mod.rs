//! Text generation with candle-transformers' causal language models.
//!
//! ```text
//!  messages ─▶ chat::ChatTemplate (minijinja) ─▶ prompt text ─▶ tokenizer ─▶ prompt ids
//!                                                                              │
//!  scheduler (one thread, bounded queue) ◀─────────────────────────────────────┘
//!     │ every step: join ≤ 1 new prompt, one token for each active conversation,
//!     │ drop finished and abandoned ones
//!     ▼
//!  model::LanguageModel (llama, qwen2, mistral, phi3, gemma; GGUF llama/qwen2 through
//!                        gguf; a KV cache per conversation)
//!     ─▶ sampling::Sampler ─▶ text::Detokenizer ─▶ text::StopText ─▶ events (text, done)
//! ```
//!
//! The events of a request arrive on its own channel as the text is decided, so the same path
//! serves a streamed and a whole answer.

pub mod api;
pub mod chat;
pub mod decoder;
pub mod gguf;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod text;

#[cfg(test)]
mod tests;

pub use chat::{ChatTemplate, Message};
pub use model::LanguageModel;
pub use sampling::SamplingParams;
pub use scheduler::{Event, FinishReason, GenerateRequest, Limits, Scheduler, Usage};

/// A directory holds a causal language model to generate with (not an embedder built on one,
/// like gte-Qwen2, which ships sentence-transformers' `modules.json`).
pub fn is_generator(dir: &std::path::Path) -> bool {
    if dir.join("modules.json").is_file() {
        return false;
    }
    let Ok(bytes) = std::fs::read(dir.join("config.json")) else {
        return false;
    };
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(serde_json::Value::as_str)
        .is_some_and(|a| a.ends_with("ForCausalLM"))
}

use crate::error::{Error, Result};

/// A whole answer: what a non-streamed request returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Collects a request's events into its answer.
pub async fn collect(mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Result<Answer> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish_reason,
                usage,
            } => {
                return Ok(Answer {
                    text,
                    finish_reason,
                    usage,
                });
            }
            Event::Failed(message) => return Err(Error::Inference(message)),
        }
    }
    Err(Error::Inference(
        "the generation thread dropped the request".into(),
    ))
}
