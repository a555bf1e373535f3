//! Hand-written CPU kernels for the hot spots candle's generic CPU backend handles poorly
//! on this class of machine (profiled on a 2-core AVX-512 EPYC):
//!
//! | kernel      | replaces                                   | why |
//! |-------------|--------------------------------------------|-----|
//! | `gemm_bf16` | `matmul` + `broadcast_add` in dense layers | candle has no bf16 CPU gemm (it widens to f32); `vdpbf16ps` doubles the FLOP rate |
//! | `gemm_f32`  | the same, f32                              | weights packed once at load, bias fused, same thread pool as the other kernels |
//! | `attention` | pad → batched matmul → mask → softmax (+ relative bias, ALiBi, rotary) | thousands of tiny per-head gemm calls and libm `expf`; this works on the packed rows directly, position terms inside, for every encoder family |
//! | `gelu_erf`  | `gelu_erf` (scalar libm `erf`)             | a branch-free rational erf the compiler vectorizes |
//! | `gated`     | narrow → activation → product (GEGLU, SwiGLU) | one pass over the fused gate/up output; candle's scalar `exp`/`erf` and strided product were 15 % of a bf16 forward |
//! | `add_layer_norm` | residual `add` + `layer_norm`         | one pass, and no hand-off to candle's spinning thread pool between kernels |
//!
//! Every kernel has a safe candle fallback and is chosen at run time from the CPU's feature
//! flags, so the same binary runs everywhere. This is the only module allowed `unsafe`:
//! SIMD intrinsics and `#[target_feature]` functions need it. Each `unsafe` block states the
//! invariant it relies on, and the kernels are tested against the candle reference paths.

#![allow(unsafe_code)]

mod math;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use rayon::prelude::*;

pub use math::{erf, exp};

/// What this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// AVX-512F: the vectorized attention and GELU kernels.
    pub avx512: bool,
    /// AVX-512 BF16 (`vdpbf16ps`): the bf16 dense-layer kernel.
    pub bf16_gemm: bool,
}

/// Detected once per process.
pub fn support() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Support {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    Support {
        avx512,
        bf16_gemm: avx512 && std::arch::is_x86_feature_detected!("avx512bf16"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Support {
    Support {
        avx512: false,
        bf16_gemm: false,
    }
}

/// Keeps large, short-lived buffers (a batch's activations, tens of MB) in the malloc heap.
///
/// glibc serves allocations above its mmap threshold with fresh `mmap`s and returns them on
/// free, so every forward pass page-faults its activations in again: measured here at ~20%
/// of CPU time in the kernel (and half the long-input throughput under CPU contention). A
/// fixed 64 MB mmap threshold and a 128 MB trim threshold stop that churn; freed memory is
/// reused instead, and at most 128 MB of it is kept beyond what the process uses. Process-wide,
/// so it runs once, when the first model is loaded for the CPU kernels.
pub fn tune_allocator() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc and
        // takes plain integers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        }
    });
}

/// Weights of a dense layer in the bf16 kernel's layout: panels of 32 output columns, and
/// within a panel the two k-values of each pair interleaved per column, so one 64-byte load
/// feeds one `vdpbf16ps` for 16 columns.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) k2: usize,
    pub(crate) panels: usize,
    pub(crate) data: Vec<u16>,
    /// Bias padded with zeros to `panels * 32`.
    pub(crate) bias: Vec<f32>,
}

pub(crate) const NR: usize = 32;

/// Round-to-nearest-even f32 → bf16 (inputs are finite weights and activations).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounding = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

impl PackedBf16 {
    /// `weight`: `[n, k]` row-major (the checkpoint's `[out, in]`); `bias`: `[n]`.
    pub fn pack(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        let k2 = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * k2 * NR * 2];
        data.par_chunks_mut(k2 * NR * 2)
            .enumerate()
            .for_each(|(panel, dst)| {
                for c in 0..NR.min(n - panel * NR) {
                    let src = &weight[(panel * NR + c) * k..(panel * NR + c + 1) * k];
                    for (kk, v) in src.iter().enumerate() {
                        dst[(kk / 2) * NR * 2 + c * 2 + kk % 2] = to_bf16(*v);
                    }
                }
            });
        let mut padded = bias.to_vec();
        padded.resize(panels * NR, 0.0);
        Self {
            n,
            k,
            k2,
            panels,
            data,
            bias: padded,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }
}

/// Weights of a dense layer for the f32 kernel: panels of 32 output columns, each k-row of a
/// panel contiguous (two 64-byte vectors).
#[derive(Debug, Clone)]
pub struct PackedF32 {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) panels: usize,
    pub(crate) data: Vec<f32>,
    /// Bias padded with zeros to `panels * 32`.
    pub(crate) bias: Vec<f32>,
}

impl PackedF32 {
    /// `weight`: `[n, k]` row-major (the checkpoint's `[out, in]`); `bias`: `[n]`.
    pub fn pack(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        // Panels are independent: pack them in parallel (a good part of model load time).
        data.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(panel, dst)| {
                for c in 0..NR.min(n - panel * NR) {
                    let src = &weight[(panel * NR + c) * k..(panel * NR + c + 1) * k];
                    for (kk, v) in src.iter().enumerate() {
                        dst[kk * NR + c] = *v;
                    }
                }
            });
        let mut padded = bias.to_vec();
        padded.resize(panels * NR, 0.0);
        Self {
            n,
            k,
            panels,
            data,
            bias: padded,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }
}

/// `out[m, n] = a[m, k] · Wᵀ + bias` in f32. `None` when the CPU lacks AVX-512F.
pub fn gemm_f32(a: &[f32], m: usize, w: &PackedF32) -> Option<Vec<f32>> {
    if !support().avx512 || a.len() != m * w.k {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::gemm_f32(a, m, w))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `out[m, n] = a[m, k] · Wᵀ + bias` with bf16 inputs and f32 accumulation.
/// Returns `None` when the CPU lacks AVX-512 BF16 (callers then use the candle path).
pub fn gemm_bf16(a: &[f32], m: usize, w: &PackedBf16) -> Option<Vec<f32>> {
    if !support().bf16_gemm || a.len() != m * w.k {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::gemm_bf16(a, m, w))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Position terms the attention kernel applies, for sequences of up to `span` tokens, with
/// positions counted from each sequence's first token.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionTerms<'a> {
    /// Per head, a score bias that depends only on the distance `j − i` of key `j` from query
    /// `i` (MPNet's relative position buckets, ALiBi): `[heads, 2·span − 1]`, entry
    /// `span − 1 + (j − i)`.
    pub relative: Option<&'a [f32]>,
    /// Rotary positions applied to Q and K, halves rotated (GPT-NeoX / Llama layout): `cos`
    /// and `sin`, `[span, dim / 2]`.
    pub rope: Option<(&'a [f32], &'a [f32])>,
    pub span: usize,
    /// Decoders: query `i` sees keys `..= i` only, and with a sliding `window` only the last
    /// `window` of those (Mistral).
    pub causal: bool,
    pub window: Option<usize>,
}

/// Multi-head self-attention over packed rows: `qkv` is `[T, (heads + 2·kv_heads)·dim]` (Q,
/// K, V per row; `kv_heads < heads` for grouped-query attention), sequence `i` owns rows
/// `offsets[i]..offsets[i + 1]`; returns the context `[T, heads·dim]`. `None` when the CPU
/// lacks AVX-512F, or when the shapes or `terms` do not fit.
pub fn attention(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    kv_heads: usize,
    dim: usize,
    terms: AttentionTerms<'_>,
) -> Option<Vec<f32>> {
    let total = *offsets.last()?;
    let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let fits = match (terms.relative, terms.rope) {
        (None, None) => true,
        (relative, rope) => {
            longest <= terms.span
                && relative.is_none_or(|t| t.len() == heads * (2 * terms.span).saturating_sub(1))
                && rope.is_none_or(|(cos, sin)| {
                    dim.is_multiple_of(2)
                        && cos.len() == terms.span * dim / 2
                        && sin.len() == cos.len()
                })
        }
    };
    let groups_ok = kv_heads > 0 && heads.is_multiple_of(kv_heads);
    if !support().avx512 || !groups_ok || qkv.len() != total * (heads + 2 * kv_heads) * dim || !fits
    {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::attention(qkv, offsets, heads, kv_heads, dim, terms))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `LayerNorm(x + residual)` row by row (`gamma.len()` columns). `None` when not supported.
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Option<Vec<f32>> {
    let hidden = gamma.len();
    if !support().avx512
        || hidden == 0
        || x.len() != residual.len()
        || !x.len().is_multiple_of(hidden)
        || beta.len() != hidden
    {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::add_layer_norm(x, residual, gamma, beta, eps))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The gate's activation in a gated feed-forward (GEGLU, SwiGLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAct {
    GeluErf,
    GeluTanh,
    Silu,
    Relu,
}

/// `act(gate) · up`, row by row, over the output of one fused matmul: `both` is `m × 2n`
/// (`[gate | up]` when `gate_first`, else `[up | gate]`); the result is `m × n`. One pass
/// instead of a strided copy, an activation and a product as three tensors. `None` when not
/// supported.
pub fn gated(both: &[f32], n: usize, gate_first: bool, act: GateAct) -> Option<Vec<f32>> {
    if !support().avx512 || n == 0 || !both.len().is_multiple_of(2 * n) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::gated(both, n, gate_first, act))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (gate_first, act);
        None
    }
}

/// In-place exact-form GELU, `x·Φ(x)`, with the rational erf. `false` when not supported.
pub fn gelu_erf(xs: &mut [f32]) -> bool {
    if !support().avx512 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86::gelu_erf(xs);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests;
