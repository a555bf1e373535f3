//! AVX-512 implementations. Callers in `mod.rs` check [`super::support`] first; every
//! `#[target_feature]` function here is only reached after that check.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::math::{erf, exp};
use super::{AttentionTerms, CachedRows, GateAct, NR, PackedBf16, PackedF32};

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

pub fn attention(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    kv_heads: usize,
    dim: usize,
    terms: AttentionTerms<'_>,
) -> Vec<f32> {
    let total = offsets[offsets.len() - 1];
    let hd = heads * dim;
    let mut out = Vec::with_capacity(total * hd);
    let ptr = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast());
    let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    tasks.par_iter().for_each(|&(s, h)| {
        let head = Head {
            start: offsets[s],
            end: offsets[s + 1],
            h,
            heads,
            kv_heads,
            dim,
        };
        // SAFETY: CPU support checked by the caller; task (s, h) writes only rows of sequence
        // s, columns h·dim..(h+1)·dim, which no other task touches; `out` outlives the loop.
        unsafe { attend(qkv, head, terms, ptr.get()) };
    });
    // SAFETY: the tasks cover every (sequence, head) pair, and each stored all of its rows ×
    // its `dim` columns, so all total × heads·dim outputs are written.
    unsafe { out.set_len(total * hd) };
    out
}

/// Queries per register block.
const QB: usize = 8;

/// Calls `f::<R>(args)` with `R` the first of 1, 2, 4, 8 (`QB`) that holds `rows` rows.
macro_rules! by_rows {
    ($rows:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $rows {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 | 4 => $f::<4>($($arg),*),
            _ => $f::<QB>($($arg),*),
        }
    };
}
/// f32 lanes per AVX-512 vector.
const LANES: usize = 16;
/// Keys (in Q·Kᵀ) or head dimensions (in P·V) per register block: two vectors.
const KB: usize = 2 * LANES;

/// One attention problem: head `h` of the sequence at packed rows `start..end`; rows are
/// `[Q: heads·dim | K: kv_heads·dim | V: kv_heads·dim]`, query head `h` reads K/V head
/// `h / (heads / kv_heads)` (grouped-query attention when `kv_heads < heads`).
#[derive(Clone, Copy)]
struct Head {
    start: usize,
    end: usize,
    h: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
}

/// One head of one sequence. Q (scaled, rotated), Kᵀ (rotated) and V are gathered into
/// zero-padded blocks: the head dimension to whole vectors, keys to whole key blocks, queries
/// to whole query blocks. Then, per block of 8 queries, the scores `8 × keys` and the context
/// `8 × dim` are accumulated in 16 vector registers at a time while the shared operand is
/// loaded once, so the FMA units, not loads, set the pace.
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend(qkv: &[f32], head: Head, terms: AttentionTerms<'_>, out: *mut f32) {
    let Head {
        start,
        end,
        h,
        heads,
        kv_heads,
        dim,
    } = head;
    let len = end - start;
    if len == 0 {
        return;
    }
    let dp = dim.next_multiple_of(LANES);
    let lk = len.next_multiple_of(KB);
    let lq = len.next_multiple_of(QB);
    let (hd, kvd) = (heads * dim, kv_heads * dim);
    let stride = hd + 2 * kvd;
    let g = h / (heads / kv_heads);
    let scale = 1.0 / (dim as f32).sqrt();
    let mut q = vec![0f32; lq * dp];
    let mut kt = vec![0f32; dp * lk];
    let mut v = vec![0f32; len * dp];
    let mut k = vec![0f32; dim];
    for j in 0..len {
        let row = &qkv[(start + j) * stride..(start + j + 1) * stride];
        let (qs, ks, vs) = (
            &row[h * dim..(h + 1) * dim],
            &row[hd + g * dim..hd + (g + 1) * dim],
            &row[hd + kvd + g * dim..hd + kvd + (g + 1) * dim],
        );
        let qj = &mut q[j * dp..j * dp + dim];
        let ks = match terms.rope {
            Some((cos, sin)) => {
                let half = dim / 2;
                let (cos, sin) = (
                    &cos[j * half..(j + 1) * half],
                    &sin[j * half..(j + 1) * half],
                );
                rotate(qs, cos, sin, qj);
                qj.iter_mut().for_each(|x| *x *= scale);
                rotate(ks, cos, sin, &mut k);
                &k
            }
            None => {
                scale_row(qj, qs.as_ptr(), scale);
                ks
            }
        };
        scale_row(&mut v[j * dp..j * dp + dim], vs.as_ptr(), 1.0);
        for (d, x) in ks.iter().enumerate() {
            kt[d * lk + j] = *x;
        }
    }
    let mut scores = vec![0f32; QB * lk];
    for qb in (0..lq).step_by(QB) {
        // Causal: this block's queries see no key after its last one.
        let keys = match terms.causal {
            true => (qb + QB).min(len),
            false => len,
        };
        scores_block::<QB>(&q[qb * dp..], dp, &kt, lk, dim, keys, &mut scores, lk);
        // Position bias and softmax over the keys each real query sees (all of them, or with
        // `causal` those up to its own position and within the window); the others get
        // weight 0, and the padding queries' rows are never stored.
        let rows = (len - qb).min(QB);
        let live = |r: usize| match terms.causal {
            true => (
                terms.window.map_or(0, |w| (qb + r + 1).saturating_sub(w)),
                qb + r + 1,
            ),
            false => (0, len),
        };
        let inv = softmax_block(&mut scores, lk, keys, rows, live, |r, lo, live| {
            if let Some(table) = terms.relative {
                // Entry span − 1 + (j − i) of head h's row; i < len ≤ span, j ≥ lo.
                let at = h * (2 * terms.span - 1) + terms.span - 1 - (qb + r) + lo;
                let n = live.len();
                for (s, b) in live.iter_mut().zip(&table[at..at + n]) {
                    *s += b;
                }
            }
        });
        // ctx[q, d] = Σ_j P[q, j] · V[j, d], 8 queries × 32 dimensions at a time.
        let block = Block {
            rows,
            inv: &inv,
            // SAFETY: row start + qb < end ≤ the caller's rows.
            out: unsafe { out.add((start + qb) * hd + h * dim) },
            ld: hd,
            dim,
        };
        // SAFETY: v is len × dp and scores 8 × lk with keys ≤ len ≤ lk; the block's rows and
        // columns are this task's own (the caller's contract for `out`).
        unsafe { contexts::<QB>(&scores, lk, &v, dp, keys, &block) };
    }
}

/// `S[r, j] = Σ_d Q[r, d] · Kᵀ[d, j]` for the `R` (≤ 8) query rows of `q` (leading dimension
/// `ldq`) and the keys `0..keys` rounded up to whole 32-key blocks of `kt` (`dim` rows,
/// leading dimension `ldk`), into `scores` (leading dimension `lds`): `R` queries × 32 keys in
/// `2·R` registers at a time.
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn scores_block<const R: usize>(
    q: &[f32],
    ldq: usize,
    kt: &[f32],
    ldk: usize,
    dim: usize,
    keys: usize,
    scores: &mut [f32],
    lds: usize,
) {
    let whole = keys.next_multiple_of(KB);
    assert!(
        dim <= ldq
            && (1..=QB).contains(&R)
            && q.len() >= (R - 1) * ldq + dim
            && whole <= ldk
            && kt.len() >= dim.saturating_sub(1) * ldk + whole
            && whole <= lds
            && scores.len() >= (R - 1) * lds + whole,
        "scores_block: operands too small"
    );
    for jc in (0..keys).step_by(KB) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: d < dim and jc + 32 ≤ whole, so by the assertion every load is inside kt
        // and q (r < R rows), and every store inside scores.
        unsafe {
            for d in 0..dim {
                let kp = kt.as_ptr().add(d * ldk + jc);
                let (k0, k1) = (_mm512_loadu_ps(kp), _mm512_loadu_ps(kp.add(LANES)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*q.get_unchecked(r * ldq + d));
                    acc_r[0] = _mm512_fmadd_ps(a, k0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(a, k1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let sp = scores.as_mut_ptr().add(r * lds + jc);
                _mm512_storeu_ps(sp, acc_r[0]);
                _mm512_storeu_ps(sp.add(LANES), acc_r[1]);
            }
        }
    }
}

/// The context `P · V` of one query block (its first `R` rows, `R ≥ block.rows`) over the
/// keys `0..keys`, every column, into `block`.
///
/// # Safety
/// `v` has `keys` rows of `dp` values (`dp` a multiple of 16), `scores` `R` rows of
/// `lds ≥ keys`, and `block` names rows and columns the caller may write.
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn contexts<const R: usize>(
    scores: &[f32],
    lds: usize,
    v: &[f32],
    dp: usize,
    keys: usize,
    block: &Block<'_>,
) {
    let mut dc = 0;
    // SAFETY: the caller's contract, with dc + 16·NV ≤ dp in each call.
    unsafe {
        while dc + KB <= dp {
            context::<2, R>(scores, lds, v, dp, dc, keys, block);
            dc += KB;
        }
        if dc < dp {
            context::<1, R>(scores, lds, v, dp, dc, keys, block);
        }
    }
}

pub fn cached_attention(
    q: &[f32],
    seqs: &[CachedRows<'_>],
    heads: usize,
    window: Option<usize>,
    out: &mut [f32],
) {
    let kv_heads = seqs[0].cache.kv_heads;
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..kv_heads).map(move |g| (s, g)))
        .collect();
    tasks.par_iter().for_each(|&(s, g)| {
        // SAFETY: CPU support and shapes checked by the caller; task (s, g) writes only rows
        // start..start + n of sequence s (the caller checked that sequences' rows do not
        // overlap), columns of the query heads that read K/V head g; `out` outlives the loop.
        unsafe { attend_cached(q, seqs[s], g, heads, window, ptr.get()) };
    });
}

/// The query heads of K/V head `g` for one conversation's new rows, over its cache. The
/// block's query rows run position-major (`groups` heads of one position, then the next), so
/// a block's last row sees the most keys; each row's softmax covers its own causal range.
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_cached(
    q: &[f32],
    seq: CachedRows<'_>,
    g: usize,
    heads: usize,
    window: Option<usize>,
    out: *mut f32,
) {
    let CachedRows { start, n, cache } = seq;
    let (dim, dp, len, cap) = (cache.dim, cache.dp, cache.len, cache.cap);
    let groups = heads / cache.kv_heads;
    let hd = heads * dim;
    let rows = n * groups;
    let kt = &cache.kt[g * dp * cap..(g + 1) * dp * cap];
    let v = &cache.v[g * cap * dp..(g + 1) * cap * dp];
    let scale = 1.0 / (dim as f32).sqrt();
    let mut qs = vec![0f32; QB * dp];
    let mut scores = vec![0f32; QB * cap];
    let mut ctx = vec![0f32; QB * dim];
    // Block row r: the new position (qb + r) / groups, query head g·groups + (qb + r) % groups.
    let at = |qb: usize, r: usize| ((qb + r) / groups, g * groups + (qb + r) % groups);
    for qb in (0..rows).step_by(QB) {
        let block_rows = (rows - qb).min(QB);
        for r in 0..block_rows {
            let (j, h) = at(qb, r);
            let src = &q[(start + j) * hd + h * dim..][..dim];
            scale_row(&mut qs[r * dp..r * dp + dim], src.as_ptr(), scale);
        }
        qs[block_rows * dp..].fill(0.0);
        // The cache's last n positions are the new rows: row j is at position len − n + j.
        let keys = len - n + at(qb, block_rows - 1).0 + 1;
        // A decoding step has `groups` rows (3 to 8 in common models): blocks of 1, 2, 4 or 8
        // rows, so a short block does not pay for eight.
        by_rows!(
            block_rows,
            scores_block(&qs, dp, kt, cap, dim, keys, &mut scores, cap)
        );
        let live = |r: usize| {
            let p = len - n + at(qb, r).0;
            (window.map_or(0, |w| (p + 1).saturating_sub(w)), p + 1)
        };
        let inv = softmax_block(&mut scores, cap, keys, block_rows, live, |_, _, _| ());
        let block = Block {
            rows: block_rows,
            inv: &inv,
            out: ctx.as_mut_ptr(),
            ld: dim,
            dim,
        };
        // SAFETY: v holds cap ≥ keys rows of dp, scores 8 rows of cap ≥ keys; the block
        // writes ctx, 8 rows of dim.
        unsafe { by_rows!(block_rows, contexts(&scores, cap, v, dp, keys, &block)) };
        for r in 0..block_rows {
            let (j, h) = at(qb, r);
            // SAFETY: row start + j < start + n and columns h·dim.. of query head h of K/V
            // head g: this task's own part of `out` (the caller's contract).
            let dst =
                unsafe { std::slice::from_raw_parts_mut(out.add((start + j) * hd + h * dim), dim) };
            scale_row(dst, ctx[r * dim..].as_ptr(), 1.0);
        }
    }
}

/// Softmax of a query block's score rows (leading dimension `ld`, `keys` computed): row
/// `r < rows` over its live keys `lo..hi = live(r)`, after `bias(r, lo, live part)` adds any
/// position terms; the keys outside get weight 0. The rows from `rows` on (padding queries,
/// whose context is never stored) are left as they are. Returns each row's 1 / Σ.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn softmax_block(
    scores: &mut [f32],
    ld: usize,
    keys: usize,
    rows: usize,
    live: impl Fn(usize) -> (usize, usize),
    mut bias: impl FnMut(usize, usize, &mut [f32]),
) -> [f32; QB] {
    let mut inv = [0f32; QB];
    for (r, inv_r) in inv.iter_mut().enumerate() {
        if r >= rows {
            // Padding rows: computed alongside, never stored.
            break;
        }
        let row = &mut scores[r * ld..r * ld + keys];
        let (lo, hi) = live(r);
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        bias(r, lo, &mut row[lo..hi]);
        *inv_r = softmax_row(&mut row[lo..hi]);
    }
    inv
}

/// Where one query block's context goes: `rows` real rows, scaled by `inv`, at `out` with
/// leading dimension `ld`, `dim` columns.
struct Block<'a> {
    rows: usize,
    inv: &'a [f32; QB],
    out: *mut f32,
    ld: usize,
    dim: usize,
}

/// `NV` vectors of context columns from `dc` for the first `R` rows of one query block.
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn context<const NV: usize, const R: usize>(
    scores: &[f32],
    lk: usize,
    v: &[f32],
    dp: usize,
    dc: usize,
    len: usize,
    block: &Block<'_>,
) {
    // SAFETY: the caller's contract: j < len rows of v (dp wide, dc + NV·16 ≤ dp), scores
    // R × lk with len ≤ lk, and `block` names rows and columns this task owns.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for j in 0..len {
            let vp = v.as_ptr().add(j * dp + dc);
            let mut vv = [_mm512_setzero_ps(); NV];
            for (c, x) in vv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(vp.add(c * LANES));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*scores.get_unchecked(r * lk + j));
                for c in 0..NV {
                    acc_r[c] = _mm512_fmadd_ps(p, vv[c], acc_r[c]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(block.rows) {
            let s = _mm512_set1_ps(block.inv[r]);
            for (c, a) in acc_r.iter().enumerate() {
                let col = dc + c * LANES;
                if col >= block.dim {
                    break;
                }
                let dst = block.out.add(r * block.ld + col);
                let x = _mm512_mul_ps(*a, s);
                _mm512_mask_storeu_ps(dst, mask(block.dim - col), x);
            }
        }
    }
}

/// `row ← exp(row − max(row))` in place; returns 1 / Σ row. Vectors with vector
/// accumulators: the scalar folds the compiler made of `max` and `sum` (ordered, NaN-aware)
/// were half of the softmax.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn softmax_row(row: &mut [f32]) -> f32 {
    let (n, p) = (row.len(), row.as_mut_ptr());
    let full = n - n % LANES;
    let tail = mask(n % LANES);
    // SAFETY: every access is at c + 16 ≤ full ≤ n, or masked to the n − full values after.
    unsafe {
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in (0..full).step_by(LANES) {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(c)));
        }
        let last = _mm512_mask_loadu_ps(mx, tail, p.add(full));
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(mx, last)));
        let mut sum = _mm512_setzero_ps();
        for c in (0..full).step_by(LANES) {
            let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(p.add(c)), max));
            _mm512_storeu_ps(p.add(c), e);
            sum = _mm512_add_ps(sum, e);
        }
        let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.add(full)), max));
        _mm512_mask_storeu_ps(p.add(full), tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
        1.0 / _mm512_reduce_add_ps(sum)
    }
}

/// [`exp`] on 16 lanes: the same range reduction and polynomial, and `scalef` for the 2ⁿ.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn exp512(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut q = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(q, n)
}

/// `dst ← scale · src[..dst.len()]` in vectors: rows of one head are a few dozen values, where
/// `copy_from_slice`'s call to `memcpy` cost more than the copy (5 % of a forward).
#[target_feature(enable = "avx512f")]
#[inline]
fn scale_row(dst: &mut [f32], src: *const f32, scale: f32) {
    let (n, s) = (dst.len(), _mm512_set1_ps(scale));
    for c in (0..n).step_by(LANES) {
        let m = mask(n - c);
        // SAFETY: the caller's src has dst.len() readable values; lanes from n on are masked.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, src.add(c));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(c), m, _mm512_mul_ps(x, s));
        }
    }
}

/// The first `min(n, 16)` lanes.
#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    if n >= LANES {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// Rotary positions, halves rotated (GPT-NeoX / Llama): `x` of `2·half` values.
#[inline(always)]
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    let (lo, hi) = x.split_at(half);
    let (out_lo, out_hi) = out.split_at_mut(half);
    for d in 0..half {
        out_lo[d] = lo[d] * cos[d] - hi[d] * sin[d];
        out_hi[d] = hi[d] * cos[d] + lo[d] * sin[d];
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
    // Written once each below, so not zeroed first (as the gemm outputs).
    let mut out = Vec::with_capacity(rows * n);
    // ~16 K outputs per task, at least one row.
    let rows_per_task = (16 * 1024 / n).max(1);
    let (gate, up) = if gate_first { (0, n) } else { (n, 0) };
    out.spare_capacity_mut()[..rows * n]
        .par_chunks_mut(n * rows_per_task)
        .zip(both.par_chunks(2 * n * rows_per_task))
        .for_each(|(o, b)| {
            for (o, row) in o.chunks_exact_mut(n).zip(b.chunks_exact(2 * n)) {
                // SAFETY: CPU support checked by the caller.
                unsafe { gated_row(&row[gate..gate + n], &row[up..up + n], o, act) }
            }
        });
    // SAFETY: gated_row wrote every element of every row, and there are `rows` of them.
    unsafe { out.set_len(rows * n) };
    out
}

/// One loop per activation, so each vectorizes without a branch inside.
#[target_feature(enable = "avx512f")]
unsafe fn gated_row(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>], act: GateAct) {
    let lanes = out.iter_mut().zip(gate.iter().zip(up));
    match act {
        GateAct::GeluErf => lanes.for_each(|(o, (&g, &u))| {
            o.write(0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)) * u);
        }),
        GateAct::GeluTanh => lanes.for_each(|(o, (&g, &u))| {
            // tanh(y) = 1 − 2 / (e^{2y} + 1), exact at both ends with exp's clamp.
            let y = 0.797_884_6 * (g + 0.044_715 * g * g * g);
            o.write(0.5 * g * (2.0 - 2.0 / (exp(2.0 * y) + 1.0)) * u);
        }),
        GateAct::Silu => lanes.for_each(|(o, (&g, &u))| {
            o.write(g / (1.0 + exp(-g)) * u);
        }),
        GateAct::Relu => lanes.for_each(|(o, (&g, &u))| {
            o.write(g.max(0.0) * u);
        }),
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
