//! Sampling parameters, checked once per request, and the per-sequence sampler built from
//! them: candle-transformers' `LogitsProcessor` (temperature, top-k, top-p, seeded RNG) after
//! the repetition penalty of `candle_transformers::utils`.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Deserialize;

use crate::error::{Error, Result};

/// What a request may set. Field names follow OpenAI (`max_tokens`, `stop`, `seed`) and, for
/// what OpenAI lacks, transformers' `generate` (`top_k`, `repetition_penalty`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy); OpenAI's range is 0–2.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability sums to `top_p`.
    #[serde(default = "one")]
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens (0: all).
    #[serde(default)]
    pub top_k: usize,
    /// Divides the logits of tokens already in the prompt or answer (1: off).
    #[serde(default = "one_f32")]
    pub repetition_penalty: f32,
    /// Same seed, same parameters, same prompt: same answer.
    #[serde(default)]
    pub seed: Option<u64>,
    /// At most this many new tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Generation stops before the first of these strings (at most 4, as OpenAI).
    #[serde(default)]
    pub stop: Vec<String>,
}

fn one() -> f64 {
    1.0
}
fn one_f32() -> f32 {
    1.0
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
        }
    }
}

pub const MAX_STOP: usize = 4;

impl SamplingParams {
    /// Greedy decoding: what tests and reproducible answers use.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Refuses values no sampler can honour, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::InvalidInput(format!("{field}: {why}")));
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("temperature", "must be between 0 and 2");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be greater than 0 and at most 1");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", "must be a positive number");
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens", "must be at least 1");
        }
        if self.stop.len() > MAX_STOP {
            return bad("stop", "at most 4 sequences");
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop", "an empty string would stop at once");
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        if self.temperature == 0.0 {
            return Sampling::ArgMax;
        }
        let temperature = self.temperature;
        match (self.top_k, self.top_p < 1.0) {
            (0, false) => Sampling::All { temperature },
            (k, false) => Sampling::TopK { k, temperature },
            (0, true) => Sampling::TopP {
                p: self.top_p,
                temperature,
            },
            (k, true) => Sampling::TopKThenTopP {
                k,
                p: self.top_p,
                temperature,
            },
        }
    }
}

/// Picks each next token of one sequence.
pub struct Sampler {
    processor: LogitsProcessor,
    penalty: f32,
}

impl Sampler {
    /// `fallback_seed` is used when the request set none (each request draws its own).
    pub fn new(params: &SamplingParams, fallback_seed: u64) -> Self {
        Self {
            processor: LogitsProcessor::from_sampling(
                params.seed.unwrap_or(fallback_seed),
                params.sampling(),
            ),
            penalty: params.repetition_penalty,
        }
    }

    /// The next token from the last position's logits (`[vocab]`, f32); `context` is every
    /// token so far (prompt and answer), which the repetition penalty looks at.
    pub fn next(&mut self, logits: &Tensor, context: &[u32]) -> Result<u32> {
        let logits = if self.penalty == 1.0 {
            logits.clone()
        } else {
            candle_transformers::utils::apply_repeat_penalty(logits, self.penalty, context)?
        };
        Ok(self.processor.sample(&logits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<SamplingParams> {
        let p: SamplingParams =
            serde_json::from_value(v).map_err(|e| Error::InvalidInput(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    #[test]
    fn bad_values_name_their_field() {
        for (body, field) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
        ] {
            let err = parse(body.clone()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{body}: {err}");
        }
        let err = parse(json!({"temprature": 1})).unwrap_err().to_string();
        assert!(err.contains("temprature"), "{err}");
    }

    #[test]
    fn the_sampling_follows_the_parameters() {
        assert!(matches!(
            SamplingParams::greedy().sampling(),
            Sampling::ArgMax
        ));
        let p = parse(json!({"temperature": 0.7, "top_k": 40, "top_p": 0.9})).unwrap();
        assert!(matches!(p.sampling(), Sampling::TopKThenTopP { k: 40, .. }));
        let p = parse(json!({"temperature": 0.7})).unwrap();
        assert!(matches!(p.sampling(), Sampling::All { .. }));
    }
}
