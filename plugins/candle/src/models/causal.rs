//! Decoder embedders (Qwen2, Qwen3, Mistral: gte-Qwen2, Qwen3-Embedding, e5-mistral) on our
//! packed decoder ([`crate::generate::decoder`], the one text generation runs on) where the CPU
//! has its kernels; elsewhere (GPU, `kernels: candle`) candle-transformers' networks through
//! the padded adapter ([`super::qwen2`], [`super::qwen3`], [`super::mistral`]).
//!
//! Why ours on the CPU: the padded adapter pads every sequence of a batch to the longest and
//! runs candle's matmul, whose bf16 on CPU is slower than its f32. The packed decoder runs the
//! dense layers once over the real tokens only, on the AVX-512 kernels (bf16 weights with f32
//! accumulation), and attention per sequence. `scripts/candle/bench-families.sh` measured both
//! in one run (docs/BENCHMARKS.md, "Candle embeddings: every family").

use candle_core::Tensor;

use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::generate::decoder::{Config, Decoder};
use crate::layers::Weights;

pub struct PackedDecoder {
    decoder: Decoder,
    architecture: &'static str,
}

impl PackedDecoder {
    pub fn load(c: &Config, w: &mut Weights, architecture: &'static str) -> Result<Self> {
        Ok(Self {
            decoder: Decoder::load_without_head(c.clone(), w)?,
            architecture,
        })
    }
}

impl EmbeddingModel for PackedDecoder {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        super::post_norm::check_len(batch, self.max_positions())?;
        let tokens: Vec<&[u32]> = batch
            .offsets
            .windows(2)
            .map(|w| &batch.input_ids[w[0]..w[1]])
            .collect();
        self.decoder.hidden_states(&tokens)
    }

    fn hidden_size(&self) -> usize {
        self.decoder.config().hidden_size
    }

    fn max_positions(&self) -> usize {
        self.decoder.config().max_positions
    }

    fn architecture(&self) -> &'static str {
        self.architecture
    }
}
