//! Building blocks shared by every architecture: weights access, linear and norm layers,
//! activations and attention over packed (padding-free) batches.

mod activation;
mod attention;
mod layer_norm;
mod linear;
mod weights;

pub use activation::HiddenAct;
pub use attention::{
    AttentionLayout, BatchPositions, PositionTerms, attention, packed_attention_with,
};
pub use layer_norm::LayerNorm;
pub use linear::{Linear, Packing};
pub use weights::Weights;

use candle_core::{Storage, Tensor};

use crate::error::{Error, Result};

/// Runs `f` on a CPU f32 tensor's contiguous data without copying it.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Inference(
            "CPU kernel called on a non-CPU tensor".into(),
        ));
    };
    let data = cpu.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Inference("CPU kernel needs a contiguous tensor".into()))?;
    Ok(f(&data[start..end]))
}
