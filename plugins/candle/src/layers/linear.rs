//! Dense layers, `y = x Wᵀ + b`, on 2-D packed activations.
//!
//! Two kernels: candle's matmul (any device, any dtype), or — for `dtype: bf16` on a CPU with
//! AVX-512 BF16 — [`crate::kernels::gemm_bf16`], with the weights packed once at load time
//! and the bias (and GELU, see [`Linear::forward_act`]) applied while the output is written.

use candle_core::Tensor;

use super::{HiddenAct, Weights, with_cpu_f32};
use crate::error::{Error, Result};
use crate::kernels::{self, PackedBf16, PackedF32};

/// Which kernel a dense layer's weights are prepared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// candle's matmul (GPU, non-AVX-512 CPUs).
    None,
    F32,
    Bf16,
}

#[derive(Debug, Clone)]
enum Kernel {
    /// Weight stored transposed (`[in, out]`, contiguous) so the matmul streams it row by row.
    Candle {
        weight_t: Tensor,
        bias: Tensor,
    },
    Bf16(PackedBf16),
    F32(PackedF32),
}

#[derive(Debug, Clone)]
pub struct Linear {
    kernel: Kernel,
}

impl Linear {
    /// Loads `{name}.weight` (`[out, in]`) and `{name}.bias` (`[out]`).
    pub fn load(w: &Weights, name: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = w.get(&format!("{name}.bias"), &[out_dim])?;
        Self::from_parts(&weight, bias, w.packing())
    }

    /// Loads `{name}.weight`, and `{name}.bias` when `bias` (otherwise a zero bias).
    pub fn load_opt_bias(
        w: &Weights,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        if bias {
            return Self::load(w, name, in_dim, out_dim);
        }
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let zeros = Tensor::zeros(out_dim, weight.dtype(), weight.device())?;
        Self::from_parts(&weight, zeros, w.packing())
    }

    /// Stacks several layers that read the same input into one (e.g. Q, K and V), so the
    /// input is read once and the kernel sees one larger, more efficient matmul.
    pub fn fuse(parts: &[(Tensor, Tensor)], packing: Packing) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|(w, _)| w).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|(_, b)| b).collect();
        Self::from_parts(
            &Tensor::cat(&weights, 0)?,
            Tensor::cat(&biases, 0)?,
            packing,
        )
    }

    fn from_parts(weight: &Tensor, bias: Tensor, packing: Packing) -> Result<Self> {
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?)
        };
        let kernel = match packing {
            Packing::None => Kernel::Candle {
                weight_t: weight.t()?.contiguous()?,
                bias,
            },
            Packing::F32 => {
                let (n, k) = weight.dims2()?;
                Kernel::F32(PackedF32::pack(&host(weight)?, &host(&bias)?, n, k))
            }
            Packing::Bf16 => {
                let (n, k) = weight.dims2()?;
                Kernel::Bf16(PackedBf16::pack(&host(weight)?, &host(&bias)?, n, k))
            }
        };
        Ok(Self { kernel })
    }

    /// `xs`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_act(xs, None)
    }

    /// A gated feed-forward's first half, `act(gate) · up`, where this layer is the fused
    /// `[gate | up]` (`gate_first`) or `[up | gate]` projection with `2·n` outputs: `[tokens, n]`.
    /// The packed kernels do the activation and product in one pass over the matmul's output
    /// ([`kernels::gated`]); candle's matmul gets candle's ops.
    pub fn forward_gated(
        &self,
        xs: &Tensor,
        act: HiddenAct,
        n: usize,
        gate_first: bool,
    ) -> Result<Tensor> {
        let (gate, up) = if gate_first { (0, n) } else { (n, 0) };
        let split = |both: &Tensor| -> Result<Tensor> {
            let g = act.forward(&both.narrow(1, gate, n)?)?;
            Ok((g * both.narrow(1, up, n)?)?)
        };
        let m = xs.dim(0)?;
        let both = match self.matmul(xs)? {
            Product::Tensor(both) => return split(&both),
            Product::Host(both, _) => both,
        };
        let kind = match act {
            HiddenAct::Gelu => kernels::GateAct::GeluErf,
            HiddenAct::GeluTanh => kernels::GateAct::GeluTanh,
            HiddenAct::Silu => kernels::GateAct::Silu,
            HiddenAct::Relu => kernels::GateAct::Relu,
        };
        match kernels::gated(&both, n, gate_first, kind) {
            Some(out) => Ok(Tensor::from_vec(out, (m, n), xs.device())?),
            None => split(&Tensor::from_vec(both, (m, 2 * n), xs.device())?),
        }
    }

    /// The layer followed by an activation, fused into the output pass when the kernel can.
    pub fn forward_act(&self, xs: &Tensor, act: Option<HiddenAct>) -> Result<Tensor> {
        let m = xs.dim(0)?;
        let (mut out, n) = match self.matmul(xs)? {
            Product::Tensor(ys) => {
                return Ok(match act {
                    Some(a) => a.forward(&ys)?,
                    None => ys,
                });
            }
            Product::Host(out, n) => (out, n),
        };
        let fused = match act {
            Some(HiddenAct::Gelu) => kernels::gelu_erf(&mut out),
            None => true,
            Some(_) => false,
        };
        let ys = Tensor::from_vec(out, (m, n), xs.device())?;
        match (fused, act) {
            (false, Some(a)) => Ok(a.forward(&ys)?),
            _ => Ok(ys),
        }
    }

    /// `xs · Wᵀ + b`: candle's matmul gives a tensor, the packed kernels their host output.
    fn matmul(&self, xs: &Tensor) -> Result<Product> {
        let m = xs.dim(0)?;
        let host = match &self.kernel {
            Kernel::Candle { weight_t, bias } => {
                return Ok(Product::Tensor(xs.matmul(weight_t)?.broadcast_add(bias)?));
            }
            Kernel::Bf16(w) => {
                with_cpu_f32(xs, |a| kernels::gemm_bf16(a, m, w))?.map(|o| (o, w.out_dim()))
            }
            Kernel::F32(w) => {
                with_cpu_f32(xs, |a| kernels::gemm_f32(a, m, w))?.map(|o| (o, w.out_dim()))
            }
        };
        let (out, n) = host.ok_or_else(|| {
            Error::Inference("the packed CPU kernel is not supported on this CPU".into())
        })?;
        Ok(Product::Host(out, n))
    }
}

/// What [`Linear::matmul`] produced: `[tokens, out]` as a tensor, or as the packed kernel's
/// row-major host output with its width `out`.
enum Product {
    Tensor(Tensor),
    Host(Vec<f32>, usize),
}
