//! The sequence-classification head of cross-encoders and classifiers.
//!
//! ```text
//!  [CLS] state ─▶ dense ─▶ tanh ─▶ out ─▶ logits [labels]
//!   BERT:        bert.pooler.dense        classifier
//!   XLM-RoBERTa: classifier.dense         classifier.out_proj
//!
//!  [CLS] or mean ─▶ head.dense ─▶ GELU ─▶ head.norm ─▶ classifier   (ModernBERT)
//! ```
//!
//! BERT's and XLM-RoBERTa's heads are the same computation under different tensor names. It runs in f32 on a
//! few rows per batch, so its cost is nothing next to the encoder's.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use crate::error::Result;
use crate::layers::Weights;
use crate::pooling::Pooling;

pub struct ClassifierHead {
    dense: Linear,
    /// ModernBERT: GELU and a LayerNorm between dense and out (else tanh).
    norm: Option<LayerNorm>,
    out: Linear,
    /// Which token states feed the head: the first token, or (ModernBERT) their mean.
    pooling: Pooling,
}

/// What `config.json` says about a ModernBERT head.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertHead {
    pub pooling: Pooling,
    pub dense_bias: bool,
    pub norm_bias: bool,
    pub eps: f64,
}

impl ClassifierHead {
    /// `BertForSequenceClassification`: the pooler under the encoder's prefix, the classifier
    /// beside it.
    pub fn load_bert(w: &Weights, hidden: usize, labels: usize, device: &Device) -> Result<Self> {
        let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };
        let dense = Linear::new(
            f32(w.get("pooler.dense.weight", &[hidden, hidden])?)?,
            Some(f32(w.get("pooler.dense.bias", &[hidden])?)?),
        );
        let out = Linear::new(
            f32(w.get_exact("classifier.weight", &[labels, hidden])?)?,
            Some(f32(w.get_exact("classifier.bias", &[labels])?)?),
        );
        Ok(Self::tanh(dense, out))
    }

    fn tanh(dense: Linear, out: Linear) -> Self {
        Self {
            dense,
            norm: None,
            out,
            pooling: Pooling::Cls,
        }
    }

    /// `XLMRobertaForSequenceClassification`: `classifier.dense` then `classifier.out_proj`.
    pub fn load_roberta(
        w: &Weights,
        hidden: usize,
        labels: usize,
        device: &Device,
    ) -> Result<Self> {
        let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };
        let dense = Linear::new(
            f32(w.get_exact("classifier.dense.weight", &[hidden, hidden])?)?,
            Some(f32(w.get_exact("classifier.dense.bias", &[hidden])?)?),
        );
        let out = Linear::new(
            f32(w.get_exact("classifier.out_proj.weight", &[labels, hidden])?)?,
            Some(f32(w.get_exact("classifier.out_proj.bias", &[labels])?)?),
        );
        Ok(Self::tanh(dense, out))
    }

    /// `ModernBertForSequenceClassification`: `head.dense`, GELU, `head.norm`, `classifier`.
    pub fn load_modernbert(
        w: &Weights,
        hidden: usize,
        labels: usize,
        c: &ModernBertHead,
        device: &Device,
    ) -> Result<Self> {
        let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };
        let bias = |on: bool, name: &str| -> Result<Option<Tensor>> {
            on.then(|| f32(w.get_exact(name, &[hidden])?)).transpose()
        };
        let dense = Linear::new(
            f32(w.get_exact("head.dense.weight", &[hidden, hidden])?)?,
            bias(c.dense_bias, "head.dense.bias")?,
        );
        let weight = f32(w.get_exact("head.norm.weight", &[hidden])?)?;
        let norm = match bias(c.norm_bias, "head.norm.bias")? {
            Some(b) => LayerNorm::new(weight, b, c.eps),
            None => LayerNorm::new_no_bias(weight, c.eps),
        };
        let out = Linear::new(
            f32(w.get_exact("classifier.weight", &[labels, hidden])?)?,
            Some(f32(w.get_exact("classifier.bias", &[labels])?)?),
        );
        Ok(Self {
            dense,
            norm: Some(norm),
            out,
            pooling: c.pooling,
        })
    }

    /// Logits `[n, labels]` (f32) from the packed token states `[total_tokens, hidden]`.
    pub fn forward(&self, hidden: &Tensor, offsets: &[usize]) -> Result<Tensor> {
        let pooled = self.pooling.apply(hidden, offsets)?;
        let x = self.dense.forward(&pooled)?;
        let x = match &self.norm {
            None => x.tanh()?,
            Some(norm) => norm.forward(&x.gelu_erf()?)?,
        };
        Ok(self.out.forward(&x)?)
    }
}
