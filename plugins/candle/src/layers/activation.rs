//! Feed-forward activations, named as Hugging Face configs name them.

use candle_core::Tensor;
use serde::Deserialize;

/// `hidden_act` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HiddenAct {
    /// Exact (erf) GELU, what BERT was trained with.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", rename = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    /// SiLU (swish), the gate of SwiGLU feed-forwards (NomicBERT).
    #[serde(alias = "swish", rename = "silu")]
    Silu,
}

impl HiddenAct {
    pub fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Relu => xs.relu(),
            Self::Silu => candle_nn::ops::silu(xs),
        }
    }
}
