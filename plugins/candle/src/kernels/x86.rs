//! AVX-512 implementations. Callers in `mod.rs` check [`super::support`] first; every
//! `#[target_feature]` function here is only reached after that check.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::math::{erf, exp};
use super::{GateAct, NR, PackedBf16, PackedF32};

/// Rows per micro-kernel call: 6 rows × 2 vectors = 12 accumulators, leaving registers for
/// the two weight vectors and the broadcast.
const MR: usize = 6;
/// Rows per parallel task: A-rows stay in L1/L2 while the task sweeps the weight panels.
const MB: usize = 48;

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint index ranges of one live allocation; see each use.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Taking `self` makes closures capture the whole (Send) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

pub fn gemm_bf16(a: &[f32], m: usize, w: &PackedBf16) -> Vec<f32> {
    let (k, k2, n) = (w.k, w.k2, w.n);
    // A as bf16 pairs: row r, pair p at a16[r * 2k2 + 2p .. +2] (zero-padded when k is odd).
    let mut a16 = vec![0u16; m * 2 * k2];
    a16.par_chunks_mut(2 * k2)
        .zip(a.par_chunks(k))
        .for_each(|(dst, src)| {
            // SAFETY: the caller verified AVX-512F/BF16 support (super::gemm_bf16).
            unsafe { convert_row(src, dst) }
        });
    let mut out = Vec::with_capacity(m * n);
    let ptr = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast());
    let row_blocks = m.div_ceil(MB);
    // With few rows (one short input), split the columns too so both cores work.
    let col_groups = if row_blocks >= 2 { 1 } else { w.panels.min(4) };
    let panels_per_group = w.panels.div_ceil(col_groups);
    (0..row_blocks * col_groups)
        .into_par_iter()
        .for_each(|task| {
            let (rb, cg) = (task / col_groups, task % col_groups);
            let rows = rb * MB..((rb + 1) * MB).min(m);
            let panels = cg * panels_per_group..((cg + 1) * panels_per_group).min(w.panels);
            // SAFETY: CPU support checked by the caller; task (rb, cg) writes only rows `rows` ×
            // columns of `panels`, which no other task touches; `out` outlives the parallel loop.
            unsafe { gemm_block(&a16, k2, w, rows, panels, ptr.get(), n) };
        });
    // SAFETY: the tasks above stored every one of the m × n outputs (all row blocks × all
    // panels, each panel's stores masked to the columns below n). Not zeroing the buffer
    // first saves a memset that was 5 % of a batch-32 forward pass.
    unsafe { out.set_len(m * n) };
    out
}

pub fn gemm_f32(a: &[f32], m: usize, w: &PackedF32) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    let mut out = Vec::with_capacity(m * n);
    let ptr = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast());
    let row_blocks = m.div_ceil(MB);
    let col_groups = if row_blocks >= 2 { 1 } else { w.panels.min(4) };
    let panels_per_group = w.panels.div_ceil(col_groups);
    (0..row_blocks * col_groups)
        .into_par_iter()
        .for_each(|task| {
            let (rb, cg) = (task / col_groups, task % col_groups);
            let rows = rb * MB..((rb + 1) * MB).min(m);
            let panels = cg * panels_per_group..((cg + 1) * panels_per_group).min(w.panels);
            // SAFETY: as in gemm_bf16: disjoint (rows × panels) output tiles, CPU support checked.
            unsafe { gemm_f32_block(a, k, w, rows, panels, ptr.get(), n) };
        });
    // SAFETY: as in gemm_bf16, every output was stored.
    unsafe { out.set_len(m * n) };
    out
}

#[target_feature(enable = "avx512f")]
unsafe fn gemm_f32_block(
    a: &[f32],
    k: usize,
    w: &PackedF32,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    out: *mut f32,
    ldo: usize,
) {
    for panel in panels {
        let b = unsafe { w.data.as_ptr().add(panel * k * NR) };
        let bias = unsafe { w.bias.as_ptr().add(panel * NR) };
        let cols = (w.n - panel * NR).min(NR);
        let mut r = rows.start;
        while r < rows.end {
            let left = rows.end - r;
            // SAFETY: rows r..r+mr exist in a (m rows of k) and out (m rows of ldo); the panel
            // holds k × 32 values; columns beyond `cols` are masked off.
            unsafe {
                let a = a.as_ptr().add(r * k);
                let o = out.add(r * ldo + panel * NR);
                match left {
                    6.. => micro_f32::<6>(a, k, b, bias, o, ldo, cols),
                    5 => micro_f32::<5>(a, k, b, bias, o, ldo, cols),
                    4 => micro_f32::<4>(a, k, b, bias, o, ldo, cols),
                    3 => micro_f32::<3>(a, k, b, bias, o, ldo, cols),
                    2 => micro_f32::<2>(a, k, b, bias, o, ldo, cols),
                    _ => micro_f32::<1>(a, k, b, bias, o, ldo, cols),
                }
            }
            r += left.min(MR);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro_f32<const R: usize>(
    a: *const f32,
    k: usize,
    b: *const f32,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..k {
        // SAFETY (whole loop): kk < k, so b + kk*32 + 32 stays in the panel and a + r*k + kk
        // in row r of A.
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * k + kk));
                acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
            }
        }
    }
    // SAFETY: same output contract as `micro`.
    unsafe { store_tile(&acc, bias, out, ldo, cols) };
}

/// Adds the bias and stores `R` rows × up to 32 columns, masking columns past `cols`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile<const R: usize>(
    acc: &[[__m512; 2]; R],
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, acc_v) in acc_r.iter().enumerate() {
            let valid = cols.saturating_sub(v * 16).min(16);
            // SAFETY: bias is padded to whole panels; the store is masked to the `valid`
            // columns that exist in this row of `out`.
            unsafe {
                let value = _mm512_add_ps(*acc_v, _mm512_loadu_ps(bias.add(v * 16)));
                let dst = out.add(r * ldo + v * 16);
                if valid == 16 {
                    _mm512_storeu_ps(dst, value);
                } else if valid > 0 {
                    _mm512_mask_storeu_ps(dst, ((1u32 << valid) - 1) as u16, value);
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn convert_row(src: &[f32], dst: &mut [u16]) {
    let full = src.len() / 32 * 32;
    let mut i = 0;
    while i < full {
        // SAFETY: i + 32 <= src.len() and dst.len() >= src.len().
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut __m512i, packed);
        }
        i += 32;
    }
    for j in full..src.len() {
        dst[j] = super::to_bf16(src[j]);
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn gemm_block(
    a16: &[u16],
    k2: usize,
    w: &PackedBf16,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    out: *mut f32,
    ldo: usize,
) {
    let a32 = a16.as_ptr() as *const u32;
    for panel in panels {
        let b = unsafe { w.data.as_ptr().add(panel * k2 * NR * 2) };
        let bias = unsafe { w.bias.as_ptr().add(panel * NR) };
        let cols = (w.n - panel * NR).min(NR);
        let mut r = rows.start;
        while r < rows.end {
            let left = rows.end - r;
            // SAFETY: rows r..r+mr exist in a16 (m rows of k2 pairs) and out (m rows of ldo);
            // the panel holds k2 × 64 bf16 values; columns beyond `cols` are masked off.
            unsafe {
                let a = a32.add(r * k2);
                let o = out.add(r * ldo + panel * NR);
                match left {
                    6.. => micro::<6>(a, k2, b, bias, o, ldo, cols),
                    5 => micro::<5>(a, k2, b, bias, o, ldo, cols),
                    4 => micro::<4>(a, k2, b, bias, o, ldo, cols),
                    3 => micro::<3>(a, k2, b, bias, o, ldo, cols),
                    2 => micro::<2>(a, k2, b, bias, o, ldo, cols),
                    _ => micro::<1>(a, k2, b, bias, o, ldo, cols),
                }
            }
            r += left.min(MR);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro<const R: usize>(
    a: *const u32,
    k2: usize,
    b: *const u16,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for p in 0..k2 {
        // SAFETY (whole loop): p < k2, so b + p*64 + 64 stays in the panel and a + r*k2 + p
        // in row r of A.
        unsafe {
            let b0: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 64) as *const __m512i));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 64 + 32) as *const __m512i));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * k2 + p) as i32));
                acc_r[0] = _mm512_dpbf16_ps(acc_r[0], av, b0);
                acc_r[1] = _mm512_dpbf16_ps(acc_r[1], av, b1);
            }
        }
    }
    // SAFETY: the caller's output contract (rows × `cols` columns of `out` exist).
    unsafe { store_tile(&acc, bias, out, ldo, cols) };
}

pub fn attention(qkv: &[f32], offsets: &[usize], heads: usize, dim: usize) -> Vec<f32> {
    let total = offsets[offsets.len() - 1];
    let hd = heads * dim;
    let mut out = vec![0f32; total * hd];
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    tasks.par_iter().for_each(|&(s, h)| {
        // SAFETY: CPU support checked by the caller; task (s, h) writes only rows of sequence
        // s, columns h·dim..(h+1)·dim, which no other task touches; `out` outlives the loop.
        unsafe {
            if dim.is_multiple_of(16) {
                attend_blocked(qkv, offsets[s], offsets[s + 1], h, heads, dim, ptr.get())
            } else {
                attend(qkv, offsets[s], offsets[s + 1], h, heads, dim, ptr.get())
            }
        };
    });
    out
}

#[target_feature(enable = "avx512f")]
unsafe fn attend(
    qkv: &[f32],
    start: usize,
    end: usize,
    h: usize,
    heads: usize,
    dim: usize,
    out: *mut f32,
) {
    let len = end - start;
    let hd = heads * dim;
    let stride = 3 * hd;
    let scale = 1.0 / (dim as f32).sqrt();
    // Kᵀ (dim × len) and V (len × dim) of this head, so both inner loops are unit-stride
    // multiply-adds the compiler vectorizes.
    let mut kt = vec![0f32; dim * len];
    let mut v = vec![0f32; len * dim];
    for j in 0..len {
        let row = &qkv[(start + j) * stride..(start + j + 1) * stride];
        for d in 0..dim {
            kt[d * len + j] = row[hd + h * dim + d];
        }
        v[j * dim..(j + 1) * dim].copy_from_slice(&row[2 * hd + h * dim..2 * hd + (h + 1) * dim]);
    }
    let mut scores = vec![0f32; len];
    let mut ctx = vec![0f32; dim];
    for i in 0..len {
        let q = &qkv[(start + i) * stride + h * dim..(start + i) * stride + (h + 1) * dim];
        scores.fill(0.0);
        for d in 0..dim {
            let qd = q[d] * scale;
            for (s, k) in scores.iter_mut().zip(&kt[d * len..(d + 1) * len]) {
                *s += qd * k;
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in scores.iter_mut() {
            *s = exp(*s - max);
        }
        let sum: f32 = scores.iter().sum();
        ctx.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            for (c, x) in ctx.iter_mut().zip(&v[j * dim..(j + 1) * dim]) {
                *c += p * x;
            }
        }
        let inv = 1.0 / sum;
        for (d, c) in ctx.iter().enumerate() {
            // SAFETY: row start+i < total rows, column h·dim + d < heads·dim.
            unsafe { *out.add((start + i) * hd + h * dim + d) = c * inv };
        }
    }
}

/// Queries per register block.
const QB: usize = 8;
/// f32 lanes per AVX-512 vector.
const LANES: usize = 16;

/// [`attend`] register-blocked: 8 queries × 16 keys (or 16 dims) of accumulators stay in
/// vector registers while the shared operand is loaded once, so the FMA units, not loads,
/// set the pace. Needs `dim % 16 == 0`; rows are zero-padded to whole blocks.
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_blocked(
    qkv: &[f32],
    start: usize,
    end: usize,
    h: usize,
    heads: usize,
    dim: usize,
    out: *mut f32,
) {
    let len = end - start;
    let lk = len.div_ceil(LANES) * LANES;
    let lq = len.div_ceil(QB) * QB;
    let hd = heads * dim;
    let stride = 3 * hd;
    let scale = 1.0 / (dim as f32).sqrt();
    let mut q = vec![0f32; lq * dim];
    let mut kt = vec![0f32; dim * lk];
    let mut v = vec![0f32; len * dim];
    // Separate unit-stride copies for Q and V (vectorized) and the one strided scatter Kᵀ
    // needs; interleaving them had kept the compiler to scalar moves.
    for j in 0..len {
        let row = &qkv[(start + j) * stride..(start + j + 1) * stride];
        let (qs, ks, vs) = (
            &row[h * dim..(h + 1) * dim],
            &row[hd + h * dim..hd + (h + 1) * dim],
            &row[2 * hd + h * dim..2 * hd + (h + 1) * dim],
        );
        for (dst, x) in q[j * dim..(j + 1) * dim].iter_mut().zip(qs) {
            *dst = x * scale;
        }
        v[j * dim..(j + 1) * dim].copy_from_slice(vs);
        for (d, x) in ks.iter().enumerate() {
            kt[d * lk + j] = *x;
        }
    }
    let mut scores = vec![0f32; QB * lk];
    for qb in (0..lq).step_by(QB) {
        // S[q, j] = Σ_d Q[q, d] · Kᵀ[d, j]
        for jc in (0..lk).step_by(LANES) {
            let mut acc = [[0f32; LANES]; QB];
            for d in 0..dim {
                let k: &[f32; LANES] = kt[d * lk + jc..d * lk + jc + LANES]
                    .try_into()
                    .unwrap_or(&[0.0; LANES]);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a = q[(qb + r) * dim + d];
                    for l in 0..LANES {
                        acc_r[l] = a.mul_add(k[l], acc_r[l]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                scores[r * lk + jc..r * lk + jc + LANES].copy_from_slice(acc_r);
            }
        }
        // Softmax over the real keys of each row.
        let mut inv = [0f32; QB];
        for r in 0..QB {
            let row = &mut scores[r * lk..r * lk + len];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for x in row.iter_mut() {
                *x = exp(*x - max);
            }
            inv[r] = 1.0 / row.iter().sum::<f32>();
        }
        // ctx[q, d] = Σ_j P[q, j] · V[j, d]
        for dc in (0..dim).step_by(LANES) {
            let mut acc = [[0f32; LANES]; QB];
            for j in 0..len {
                let vv: &[f32; LANES] = v[j * dim + dc..j * dim + dc + LANES]
                    .try_into()
                    .unwrap_or(&[0.0; LANES]);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let p = scores[r * lk + j];
                    for l in 0..LANES {
                        acc_r[l] = p.mul_add(vv[l], acc_r[l]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(len.saturating_sub(qb).min(QB)) {
                for (l, x) in acc_r.iter().enumerate() {
                    // SAFETY: row start+qb+r < end ≤ total rows; column h·dim+dc+l < heads·dim.
                    unsafe { *out.add((start + qb + r) * hd + h * dim + dc + l) = x * inv[r] };
                }
            }
        }
    }
}

pub fn gelu_erf(xs: &mut [f32]) {
    xs.par_chunks_mut(16 * 1024).for_each(|chunk| {
        // SAFETY: CPU support checked by the caller.
        unsafe { gelu_chunk(chunk) }
    });
}

#[target_feature(enable = "avx512f")]
unsafe fn gelu_chunk(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

pub fn gated(both: &[f32], n: usize, gate_first: bool, act: GateAct) -> Vec<f32> {
    let rows = both.len() / (2 * n);
    let mut out = vec![0f32; rows * n];
    // ~16 K outputs per task, at least one row.
    let rows_per_task = (16 * 1024 / n).max(1);
    let (gate, up) = if gate_first { (0, n) } else { (n, 0) };
    out.par_chunks_mut(n * rows_per_task)
        .zip(both.par_chunks(2 * n * rows_per_task))
        .for_each(|(o, b)| {
            for (o, row) in o.chunks_exact_mut(n).zip(b.chunks_exact(2 * n)) {
                // SAFETY: CPU support checked by the caller.
                unsafe { gated_row(&row[gate..gate + n], &row[up..up + n], o, act) }
            }
        });
    out
}

/// One loop per activation, so each vectorizes without a branch inside.
#[target_feature(enable = "avx512f")]
unsafe fn gated_row(gate: &[f32], up: &[f32], out: &mut [f32], act: GateAct) {
    let lanes = out.iter_mut().zip(gate.iter().zip(up));
    match act {
        GateAct::GeluErf => lanes.for_each(|(o, (&g, &u))| {
            *o = 0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)) * u;
        }),
        GateAct::GeluTanh => lanes.for_each(|(o, (&g, &u))| {
            // tanh(y) = 1 − 2 / (e^{2y} + 1), exact at both ends with exp's clamp.
            let y = 0.797_884_6 * (g + 0.044_715 * g * g * g);
            *o = 0.5 * g * (2.0 - 2.0 / (exp(2.0 * y) + 1.0)) * u;
        }),
        GateAct::Silu => lanes.for_each(|(o, (&g, &u))| *o = g / (1.0 + exp(-g)) * u),
        GateAct::Relu => lanes.for_each(|(o, (&g, &u))| *o = g.max(0.0) * u),
    }
}

pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Vec<f32> {
    let hidden = gamma.len();
    let mut out = vec![0f32; x.len()];
    // ~32 rows per task: enough work to amortize the hand-off, enough tasks to balance.
    let rows_per_task = 32;
    out.par_chunks_mut(hidden * rows_per_task)
        .zip(
            x.par_chunks(hidden * rows_per_task)
                .zip(residual.par_chunks(hidden * rows_per_task)),
        )
        .for_each(|(o, (x, r))| {
            // SAFETY: CPU support checked by the caller.
            unsafe { add_layer_norm_rows(x, r, gamma, beta, eps, o) }
        });
    out
}

#[target_feature(enable = "avx512f")]
unsafe fn add_layer_norm_rows(
    x: &[f32],
    r: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let hidden = gamma.len();
    for ((o, x), r) in out
        .chunks_exact_mut(hidden)
        .zip(x.chunks_exact(hidden))
        .zip(r.chunks_exact(hidden))
    {
        for ((o, x), r) in o.iter_mut().zip(x).zip(r) {
            *o = x + r;
        }
        // Lane-wise partial sums so the reductions vectorize (f32 addition order is fixed).
        let mut sum = [0f32; LANES];
        for chunk in o.chunks(LANES) {
            for (s, v) in sum.iter_mut().zip(chunk) {
                *s += v;
            }
        }
        let mean = sum.iter().sum::<f32>() / hidden as f32;
        let mut sq = [0f32; LANES];
        for chunk in o.chunks(LANES) {
            for (s, v) in sq.iter_mut().zip(chunk) {
                *s += (v - mean) * (v - mean);
            }
        }
        let inv = 1.0 / (sq.iter().sum::<f32>() / hidden as f32 + eps).sqrt();
        for ((o, g), b) in o.iter_mut().zip(gamma).zip(beta) {
            *o = (*o - mean) * inv * g + b;
        }
    }
}
