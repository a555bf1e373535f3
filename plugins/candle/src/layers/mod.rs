//! Building blocks shared by every architecture: weights access, linear and norm layers,
//! activations and attention over packed (padding-free) batches.

mod activation;
mod attention;
mod layer_norm;
mod linear;
mod weights;

pub use activation::HiddenAct;
pub use attention::{AttentionLayout, packed_attention};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use weights::Weights;
