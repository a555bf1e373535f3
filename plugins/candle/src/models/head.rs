//! The sequence-classification head of cross-encoders and classifiers.
//!
//! ```text
//!  [CLS] state ─▶ dense ─▶ tanh ─▶ out ─▶ logits [labels]
//!   BERT:        bert.pooler.dense        classifier
//!   XLM-RoBERTa: classifier.dense         classifier.out_proj
//! ```
//!
//! Both heads are the same computation under different tensor names. It runs in f32 on a
//! few rows per batch, so its cost is nothing next to the encoder's.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use crate::error::Result;
use crate::layers::Weights;

pub struct ClassifierHead {
    dense: Linear,
    out: Linear,
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
        Ok(Self { dense, out })
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
        Ok(Self { dense, out })
    }

    /// Logits `[n, labels]` from the first token's states `[n, hidden]` (f32).
    pub fn forward(&self, cls: &Tensor) -> Result<Tensor> {
        Ok(self.out.forward(&self.dense.forward(cls)?.tanh()?)?)
    }
}
