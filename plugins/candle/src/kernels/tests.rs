use super::*;
use crate::testutil::max_abs_diff;

/// Whether the CPU runs what `test` checks; when not, says so on the process's own stderr,
/// which the test harness does not capture, so `cargo test` shows which test checked nothing
/// and why (a test cannot mark itself ignored at run time).
fn runs(test: &str, supported: bool, needs: &str) -> bool {
    if !supported {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED kernels::tests::{test}: needs {needs}, which this CPU lacks; nothing checked"
        );
    }
    supported
}

/// candle's padded attention with `terms`, flattened: what the kernel must reproduce.
fn candle_reference(
    qkv: &candle_core::Tensor,
    layout: &crate::layers::AttentionLayout,
    heads: usize,
    dim: usize,
    terms: crate::layers::PositionTerms<'_>,
) -> Vec<f32> {
    crate::layers::packed_attention_with(qkv, layout, heads, dim, terms)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn exp_and_erf_match_libm() {
    let mut worst_exp = 0f32;
    let mut worst_erf = 0f64;
    for i in 0..20_000 {
        let x = -30.0 + i as f32 * 0.0015;
        worst_exp = worst_exp.max(((exp(x) - x.exp()) / x.exp()).abs());
        let y = -6.0 + i as f64 * 0.0006;
        worst_erf = worst_erf.max((erf(y as f32) as f64 - libm_erf(y)).abs());
    }
    assert!(worst_exp < 1e-6, "exp relative error {worst_exp}");
    assert!(worst_erf < 2e-6, "erf abs error {worst_erf}");
}

/// erf via candle's reference implementation (f64).
fn libm_erf(x: f64) -> f64 {
    candle_core::cpu::erf::erf_f64(x)
}

#[test]
fn bf16_gemm_matches_f32_reference() {
    if !runs(
        "bf16_gemm_matches_f32_reference",
        support().bf16_gemm,
        "AVX-512 BF16",
    ) {
        return;
    }
    for &(m, k, n) in &[(1, 8, 3), (7, 33, 50), (53, 64, 96), (100, 384, 1536)] {
        let a = rand_vec(m * k, 1);
        let w = rand_vec(n * k, 2);
        let bias = rand_vec(n, 3);
        let got = gemm_bf16(&a, m, &PackedBf16::pack(&w, &bias, n, k)).unwrap();
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| a[r * k + i] * w[c * k + i]).sum::<f32>() + bias[c];
                let tol = 0.02 * (k as f32).sqrt();
                assert!(
                    (got[r * n + c] - want).abs() < tol,
                    "({m},{k},{n}) [{r},{c}] {} vs {want}",
                    got[r * n + c]
                );
            }
        }
    }
}

#[test]
fn f32_gemm_matches_f32_reference() {
    if !runs(
        "f32_gemm_matches_f32_reference",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    for &(m, k, n) in &[(1, 8, 3), (7, 33, 50), (53, 64, 96), (100, 384, 1536)] {
        let a = rand_vec(m * k, 1);
        let w = rand_vec(n * k, 2);
        let bias = rand_vec(n, 3);
        let got = gemm_f32(&a, m, &PackedF32::pack(&w, &bias, n, k)).unwrap();
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| a[r * k + i] * w[c * k + i]).sum::<f32>() + bias[c];
                assert!(
                    (got[r * n + c] - want).abs() < 1e-4,
                    "({m},{k},{n}) [{r},{c}]"
                );
            }
        }
    }
}

#[test]
fn attention_matches_the_padded_candle_path() {
    if !runs(
        "attention_matches_the_padded_candle_path",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    use crate::layers::AttentionLayout;
    // dim 8 is padded to a whole vector, 32 fills one block of two, 48 is a block and one
    // vector; lengths cover partial query blocks (of 8) and key blocks (of 32).
    for (heads, dim, offsets) in [
        (4, 8, vec![0usize, 5, 6, 17]),
        (3, 32, vec![0, 1, 9, 26, 60]),
        (2, 16, vec![0, 16, 24]),
        (2, 48, vec![0, 33, 40]),
    ] {
        let t = *offsets.last().unwrap();
        let qkv = rand_vec(t * 3 * heads * dim, 9);
        let got = attention(&qkv, &offsets, heads, heads, dim, AttentionTerms::default()).unwrap();
        let dev = candle_core::Device::Cpu;
        let tensor = candle_core::Tensor::from_vec(qkv, (t, 3 * heads * dim), &dev).unwrap();
        let layout = AttentionLayout::new(&offsets, false, candle_core::DType::F32, &dev).unwrap();
        let want = candle_reference(&tensor, &layout, heads, dim, Default::default());
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "heads {heads} dim {dim}: max diff {diff}");
    }
}

#[test]
fn attention_terms_match_the_padded_candle_path() {
    if !runs(
        "attention_terms_match_the_padded_candle_path",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    use crate::layers::{AttentionLayout, PositionTerms};
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    // A relative bias (MPNet, ALiBi) and rotary positions, alone and together; dims that
    // fill whole vectors and one that is padded.
    for (heads, dim, offsets) in [(3, 32, vec![0usize, 1, 9, 26, 60]), (2, 24, vec![0, 7, 40])] {
        let t = *offsets.last().unwrap();
        let span = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        let qkv = rand_vec(t * 3 * heads * dim, 11);
        let table = rand_vec(heads * (2 * span - 1), 12);
        let angles: Vec<f32> = rand_vec(span * dim / 2, 13)
            .iter()
            .map(|a| a * 3.0)
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let dense: Vec<f32> = (0..heads)
            .flat_map(|h| (0..span).flat_map(move |i| (0..span).map(move |j| (h, i, j))))
            .map(|(h, i, j)| table[h * (2 * span - 1) + span - 1 + j - i])
            .collect();
        let bias = Tensor::from_vec(dense, (1, heads, span, span), &dev).unwrap();
        let half = dim / 2;
        let cos_t = Tensor::from_vec(cos.clone(), (span, half), &dev).unwrap();
        let sin_t = Tensor::from_vec(sin.clone(), (span, half), &dev).unwrap();
        let tensor = Tensor::from_vec(qkv.clone(), (t, 3 * heads * dim), &dev).unwrap();
        let layout = AttentionLayout::new(&offsets, false, candle_core::DType::F32, &dev).unwrap();
        for (relative, rope) in [(true, false), (false, true), (true, true)] {
            let terms = AttentionTerms {
                relative: relative.then_some(table.as_slice()),
                rope: rope.then_some((cos.as_slice(), sin.as_slice())),
                span,
                ..AttentionTerms::default()
            };
            let got = attention(&qkv, &offsets, heads, heads, dim, terms).unwrap();
            let position = PositionTerms {
                bias: relative.then_some(&bias),
                rope: rope.then_some((&cos_t, &sin_t)),
            };
            let want = candle_reference(&tensor, &layout, heads, dim, position);
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < 1e-5,
                "dim {dim} relative {relative} rope {rope}: max diff {diff}"
            );
        }
        // Tables that do not fit the shapes are declined, not read out of bounds.
        let short = AttentionTerms {
            relative: Some(&table[1..]),
            span,
            ..AttentionTerms::default()
        };
        assert!(attention(&qkv, &offsets, heads, heads, dim, short).is_none());
    }
}

#[test]
fn causal_grouped_attention_matches_the_padded_candle_path() {
    if !runs(
        "causal_grouped_attention_matches_the_padded_candle_path",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    use crate::layers::{AttentionLayout, PositionTerms};
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    // 4 query heads over 2 K/V heads; the reference repeats each K/V head for its queries and
    // masks the keys after each query (and outside the window) in the padded layout.
    let (heads, kv_heads, dim) = (4, 2, 16);
    let offsets = vec![0usize, 5, 40, 43];
    let t = *offsets.last().unwrap();
    let span = 35;
    let (hd, kvd) = (heads * dim, kv_heads * dim);
    let qkv = rand_vec(t * (hd + 2 * kvd), 14);
    let expanded: Vec<f32> = qkv
        .chunks(hd + 2 * kvd)
        .flat_map(|row| {
            let kv = |base: usize| {
                (0..heads).flat_map(move |h| {
                    let g = h / (heads / kv_heads);
                    row[base + g * dim..base + (g + 1) * dim].iter().copied()
                })
            };
            row[..hd].iter().copied().chain(kv(hd)).chain(kv(hd + kvd))
        })
        .collect();
    let tensor = Tensor::from_vec(expanded, (t, 3 * hd), &dev).unwrap();
    let layout = AttentionLayout::new(&offsets, false, candle_core::DType::F32, &dev).unwrap();
    for window in [None, Some(7)] {
        let sees = |i: usize, j: usize| j <= i && window.is_none_or(|w| i - j < w);
        let mask: Vec<f32> = (0..heads)
            .flat_map(|_| (0..span).flat_map(move |i| (0..span).map(move |j| (i, j))))
            .map(|(i, j)| if sees(i, j) { 0.0 } else { -1e9 })
            .collect();
        let mask = Tensor::from_vec(mask, (1, heads, span, span), &dev).unwrap();
        let terms = AttentionTerms {
            causal: true,
            window,
            span,
            ..AttentionTerms::default()
        };
        let got = attention(&qkv, &offsets, heads, kv_heads, dim, terms).unwrap();
        let position = PositionTerms {
            bias: Some(&mask),
            rope: None,
        };
        let want = candle_reference(&tensor, &layout, heads, dim, position);
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "window {window:?}: max diff {diff}");
    }
}

/// Decoding: each conversation's rows run over its cache a few at a time (a prompt, then
/// rows one by one or in short runs, as a continued conversation does), and every row's
/// context must equal the causal prompt kernel's over the whole sequence at once, itself
/// checked against candle above. Grouped-query heads, a head size that is not a whole vector,
/// a window, and caches growing past their first 128 positions.
#[test]
fn cached_attention_matches_attention_over_the_whole_sequence() {
    if !runs(
        "cached_attention_matches_attention_over_the_whole_sequence",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    let (heads, kv_heads, dim) = (6, 2, 24);
    let (hd, kvd) = (heads * dim, kv_heads * dim);
    // Rows each conversation runs per step: its prompt first, then what it adds.
    let steps: [&[usize]; 3] = [&[5, 1, 1, 3, 1], &[130, 1, 2, 1], &[1, 1, 126, 1, 1, 4]];
    let lens: Vec<usize> = steps.iter().map(|s| s.iter().sum()).collect();
    for window in [None, Some(9)] {
        let mut caches: Vec<KvRows> = (0..steps.len())
            .map(|_| KvRows::new(kv_heads, dim))
            .collect();
        let mut want = Vec::new();
        let mut rows = Vec::new();
        for (s, &len) in lens.iter().enumerate() {
            let qkv = rand_vec(len * (hd + 2 * kvd), 20 + s as u64);
            let terms = AttentionTerms {
                causal: true,
                window,
                ..AttentionTerms::default()
            };
            want.push(attention(&qkv, &[0, len], heads, kv_heads, dim, terms).unwrap());
            rows.push(qkv);
        }
        let mut got: Vec<Vec<f32>> = lens.iter().map(|&l| vec![f32::NAN; l * hd]).collect();
        let mut done = vec![0usize; steps.len()];
        for step in 0..steps.iter().map(|s| s.len()).max().unwrap() {
            // This step's new rows of every conversation that has some, packed as the decoder
            // packs them.
            let mut q = Vec::new();
            let mut spans = Vec::new();
            for (s, qkv) in rows.iter().enumerate() {
                let Some(&n) = steps[s].get(step) else {
                    continue;
                };
                let from = done[s];
                let row = |j: usize| &qkv[j * (hd + 2 * kvd)..(j + 1) * (hd + 2 * kvd)];
                let (k, v): (Vec<f32>, Vec<f32>) = (
                    (from..from + n)
                        .flat_map(|j| row(j)[hd..hd + kvd].to_vec())
                        .collect(),
                    (from..from + n)
                        .flat_map(|j| row(j)[hd + kvd..].to_vec())
                        .collect(),
                );
                caches[s].append(&k, &v);
                spans.push((s, q.len() / hd, n));
                q.extend((from..from + n).flat_map(|j| row(j)[..hd].to_vec()));
            }
            let seqs: Vec<CachedRows<'_>> = spans
                .iter()
                .map(|&(s, start, n)| CachedRows {
                    start,
                    n,
                    cache: &caches[s],
                })
                .collect();
            let mut out = vec![f32::NAN; q.len()];
            assert!(cached_attention(&q, &seqs, heads, window, &mut out));
            for &(s, start, n) in &spans {
                let from = done[s];
                got[s][from * hd..(from + n) * hd]
                    .copy_from_slice(&out[start * hd..(start + n) * hd]);
                done[s] += n;
            }
        }
        for (s, (got, want)) in got.iter().zip(&want).enumerate() {
            let diff = max_abs_diff(got, want);
            assert!(
                diff < 1e-5,
                "window {window:?}, conversation {s}: max diff {diff}"
            );
        }
    }
}

#[test]
fn cached_attention_refuses_rows_it_cannot_place() {
    let mut cache = KvRows::new(2, 16);
    cache.append(&[0.5; 32], &[0.5; 32]);
    let q = vec![0.1; 2 * 64];
    let mut out = vec![0.0; q.len()];
    let seq = |start, n| CachedRows {
        start,
        n,
        cache: &cache,
    };
    // More new rows than the cache holds, rows past q (also where counting them overflows),
    // overlapping conversations, heads that are not a multiple of the K/V heads.
    assert!(!cached_attention(&q, &[seq(0, 2)], 4, None, &mut out));
    assert!(!cached_attention(&q, &[seq(2, 1)], 4, None, &mut out));
    assert!(!cached_attention(
        &q,
        &[seq(usize::MAX, 1), seq(0, 1)],
        4,
        None,
        &mut out
    ));
    assert!(!cached_attention(
        &q,
        &[seq(0, 1), seq(0, 1)],
        4,
        None,
        &mut out
    ));
    assert!(!cached_attention(&q, &[seq(0, 1)], 3, None, &mut out));
}

#[test]
fn gelu_matches_candle() {
    let xs = rand_vec(5000, 4)
        .iter()
        .map(|x| x * 6.0)
        .collect::<Vec<_>>();
    if !runs("gelu_matches_candle", support().avx512, "AVX-512F") {
        return;
    }
    let mut got = xs.clone();
    assert!(gelu_erf(&mut got), "the kernel declined on an AVX-512 CPU");
    let want: Vec<f32> = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
        .unwrap()
        .gelu_erf()
        .unwrap()
        .to_vec1()
        .unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(diff < 1e-5, "max diff {diff}");
}

#[test]
fn gated_matches_candle() {
    use candle_core::{Device, Tensor};
    let (rows, n) = (37, 96);
    let both: Vec<f32> = rand_vec(rows * 2 * n, 9).iter().map(|x| x * 6.0).collect();
    if !runs("gated_matches_candle", support().avx512, "AVX-512F") {
        return;
    }
    let t = Tensor::from_vec(both.clone(), (rows, 2 * n), &Device::Cpu).unwrap();
    type Reference = fn(&Tensor) -> candle_core::Result<Tensor>;
    let acts: [(GateAct, Reference); 4] = [
        (GateAct::GeluErf, |t| t.gelu_erf()),
        (GateAct::GeluTanh, |t| t.gelu()),
        (GateAct::Silu, candle_nn::ops::silu),
        (GateAct::Relu, |t| t.relu()),
    ];
    for (act, reference) in acts {
        for gate_first in [true, false] {
            let got = gated(&both, n, gate_first, act).expect("declined on an AVX-512 CPU");
            let (g, u) = if gate_first { (0, n) } else { (n, 0) };
            let want: Vec<f32> = (reference(&t.narrow(1, g, n).unwrap()).unwrap()
                * t.narrow(1, u, n).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-5,
                "{act:?} gate_first {gate_first}: max diff {diff}"
            );
        }
    }
}

#[test]
fn add_layer_norm_matches_candle() {
    let (rows, hidden) = (70, 48);
    let x = rand_vec(rows * hidden, 5);
    let r = rand_vec(rows * hidden, 6);
    let g = rand_vec(hidden, 7);
    let b = rand_vec(hidden, 8);
    if !runs(
        "add_layer_norm_matches_candle",
        support().avx512,
        "AVX-512F",
    ) {
        return;
    }
    let got = add_layer_norm(&x, &r, &g, &b, 1e-12).expect("the kernel runs on an AVX-512 CPU");
    let dev = candle_core::Device::Cpu;
    let t = |v: &[f32], shape: &[usize]| {
        candle_core::Tensor::from_vec(v.to_vec(), shape, &dev).unwrap()
    };
    let sum = t(&x, &[rows, hidden]).add(&t(&r, &[rows, hidden])).unwrap();
    let want: Vec<f32> =
        candle_nn::ops::layer_norm(&sum, &t(&g, &[hidden]), &t(&b, &[hidden]), 1e-12)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(diff < 1e-4, "max diff {diff}");
}
