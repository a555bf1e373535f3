//! Hand-written CPU kernels for the hot spots candle's generic CPU backend handles poorly
//! on this class of machine (profiled on a 2-core AVX-512 EPYC):
//!
//! | kernel      | replaces                                   | why |
//! |-------------|--------------------------------------------|-----|
//! | `gemm_bf16` | `matmul` + `broadcast_add` in dense layers | candle has no bf16 CPU gemm (it widens to f32); `vdpbf16ps` doubles the FLOP rate |
//! | `gemm_f32`  | the same, f32                              | weights packed once at load, bias fused, same thread pool as the other kernels |
//! | `attention` | pad → batched matmul → mask → softmax (+ relative bias, ALiBi, rotary) | thousands of tiny per-head gemm calls and libm `expf`; this works on the packed rows directly, position terms inside, for every encoder family |
//! | `cached_attention` | per conversation: narrow → permute → cache append → matmul → softmax → matmul | a decoding step ran a dozen tiny candle ops per conversation and layer, 26 % of a 32-stream step in thread-pool hand-offs; this runs every conversation's new rows over its cache ([`KvRows`], keys stored transposed) in one parallel call (docs/BENCHMARKS.md) |
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

/// A [`KvRows`]' room is a multiple of this many positions (of the kernel's 32-key blocks).
const KV_CHUNK: usize = 128;

/// One conversation's keys and values for one layer, laid out for [`cached_attention`]: per
/// K/V head, the keys transposed (`[dim padded to 16][cap]`, so Q·Kᵀ loads 32 keys at a time
/// as the prompt kernel does) and the values by position (`[cap][dim padded to 16]`). Room
/// grows by half again (in whole 128 positions) when full; what lies past `len` is zeros.
#[derive(Debug, Clone)]
pub struct KvRows {
    kv_heads: usize,
    dim: usize,
    /// `dim` rounded up to a whole AVX-512 vector.
    dp: usize,
    len: usize,
    cap: usize,
    kt: Vec<f32>,
    v: Vec<f32>,
}

impl KvRows {
    pub fn new(kv_heads: usize, dim: usize) -> Self {
        Self {
            kv_heads,
            dim,
            dp: dim.next_multiple_of(16),
            len: 0,
            cap: 0,
            kt: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `n` positions: `k` and `v` are `[n, kv_heads·dim]` (rows as the fused QKV
    /// projection writes them, after RoPE).
    pub fn append(&mut self, k: &[f32], v: &[f32]) {
        let (dim, dp) = (self.dim, self.dp);
        let kvd = self.kv_heads * dim;
        assert!(
            k.len() == v.len() && kvd > 0 && k.len().is_multiple_of(kvd),
            "KvRows::append: {} keys and {} values for rows of {kvd}",
            k.len(),
            v.len()
        );
        let n = k.len() / kvd;
        if self.len + n > self.cap {
            self.grow(self.len + n);
        }
        let cap = self.cap;
        for (j, (kr, vr)) in k.chunks_exact(kvd).zip(v.chunks_exact(kvd)).enumerate() {
            let t = self.len + j;
            for h in 0..self.kv_heads {
                let kt = &mut self.kt[h * dp * cap..(h + 1) * dp * cap];
                for (d, x) in kr[h * dim..(h + 1) * dim].iter().enumerate() {
                    kt[d * cap + t] = *x;
                }
                self.v[(h * cap + t) * dp..][..dim].copy_from_slice(&vr[h * dim..(h + 1) * dim]);
            }
        }
        self.len += n;
    }

    /// Room for at least `need` positions, what is held copied over.
    fn grow(&mut self, need: usize) {
        let (dp, len, old) = (self.dp, self.len, self.cap);
        // By half again, at least to `need`: a long conversation copies its cache a
        // logarithmic number of times, not once every 128 positions.
        let cap = need.max(old + old / 2).next_multiple_of(KV_CHUNK);
        let mut kt = vec![0f32; self.kv_heads * dp * cap];
        let mut v = vec![0f32; self.kv_heads * cap * dp];
        if len > 0 {
            for (dst, src) in kt.chunks_exact_mut(cap).zip(self.kt.chunks_exact(old)) {
                dst[..len].copy_from_slice(&src[..len]);
            }
            for (dst, src) in v
                .chunks_exact_mut(cap * dp)
                .zip(self.v.chunks_exact(old * dp))
            {
                dst[..len * dp].copy_from_slice(&src[..len * dp]);
            }
        }
        (self.cap, self.kt, self.v) = (cap, kt, v);
    }
}

/// The rows of one conversation that attend over its [`KvRows`]: query rows
/// `start..start + n` of `q`, which are the cache's last `n` positions (appended before).
#[derive(Debug, Clone, Copy)]
pub struct CachedRows<'a> {
    pub start: usize,
    pub n: usize,
    pub cache: &'a KvRows,
}

/// Causal multi-head attention of new rows over their conversations' caches (a decoding
/// step: one row each, or a few for a continued prompt): `q` is `[T, heads·dim]` after RoPE;
/// each query row at position p sees the cache's keys `..= p` (with a sliding `window`, only
/// the last `window` of those). Writes rows `start..start + n` of `out` (`[T, heads·dim]`) for
/// every conversation and leaves the other rows as they are. `false` when the CPU lacks
/// AVX-512F or the shapes do not fit.
pub fn cached_attention(
    q: &[f32],
    seqs: &[CachedRows<'_>],
    heads: usize,
    window: Option<usize>,
    out: &mut [f32],
) -> bool {
    let Some(first) = seqs.first() else {
        return true;
    };
    let (kv_heads, dim) = (first.cache.kv_heads, first.cache.dim);
    // Rows are counted without overflow: the kernel's tasks write rows through one pointer,
    // so rows that only look disjoint after wrapping around would race.
    let Some(hd) = heads.checked_mul(dim).filter(|&hd| hd > 0) else {
        return false;
    };
    let total = q.len() / hd;
    let fits = kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && q.len().is_multiple_of(hd)
        && out.len() == q.len()
        && seqs.iter().all(|s| {
            s.cache.kv_heads == kv_heads
                && s.cache.dim == dim
                && s.n > 0
                && s.n <= s.cache.len
                && s.start <= total
                && s.n <= total - s.start
        });
    if !support().avx512 || !fits || window == Some(0) {
        return false;
    }
    // Each row range ends by `total`, so `start + n` is exact here.
    let mut rows: Vec<(usize, usize)> = seqs.iter().map(|s| (s.start, s.start + s.n)).collect();
    rows.sort_unstable();
    if !rows.windows(2).all(|w| w[0].1 <= w[1].0) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86::cached_attention(q, seqs, heads, window, out);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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
