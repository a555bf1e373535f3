//! Tiny random-weight models of every supported family against PyPI `transformers`.
//!
//! `testdata/tiny/<name>/` holds each model (f32 safetensors, a small WordPiece tokenizer,
//! sentence-transformers files) and `reference.json`, what transformers computed for it, one
//! text at a time; `scripts/candle/make_tiny_models.py` writes them. Here every model runs in
//! mixed-length batches (so packing, padding and unpadding are exercised) and must agree:
//! embeddings at cosine ≥ 0.9999, rerank and classify logits within 1e-4.

// The helpers below are test code too: a panic there is the failure report we want.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bkg_plugin_api::{InvokeContext, Plugin, PluginError, StartContext};
use bkg_plugin_candle::config::Dtype;
use bkg_plugin_candle::{CandlePlugin, Embedder, Error, LoadOptions};
use serde::Deserialize;
use serde_json::{Value, json};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tiny")
        .join(name)
}

#[derive(Deserialize)]
struct EmbedRef {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    prompted: std::collections::HashMap<String, Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct RerankRef {
    queries: Vec<String>,
    texts: Vec<String>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct ClassifyRef {
    sentences: Vec<String>,
    logits: Vec<Vec<f32>>,
}

fn reference<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference json")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn ctx() -> InvokeContext {
    InvokeContext {
        request_id: "test".into(),
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

async fn plugin(name: &str, extra: Value) -> CandlePlugin {
    let mut config = json!({"model": {"path": dir(name)}, "device": "cpu"});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let p = CandlePlugin::default();
    p.start(StartContext {
        plugin_id: "candle".into(),
        config,
    })
    .await
    .unwrap_or_else(|e| panic!("start {name}: {e}"));
    p
}

fn invalid(r: Result<Value, PluginError>) -> String {
    match r {
        Err(PluginError::InvalidInput(m)) => m,
        other => panic!("expected 422 InvalidInput, got {other:?}"),
    }
}

/// Smallest cosine between what we compute and the reference, per sentence.
fn min_cosine(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| cosine(g, w))
        .fold(f32::INFINITY, f32::min)
}

const EMBEDDERS: &[&str] = &[
    "bert-embed",
    "xlm-roberta-embed",
    "modernbert-embed",
    "qwen3-embed",
    "qwen2-embed",
    "mpnet-embed",
    "mistral-embed",
    "gte-embed",
    "nomic-bert-embed",
    "jina-bert-embed",
];

#[test]
fn every_embedder_matches_transformers_in_f32_on_both_cpu_paths() {
    for name in EMBEDDERS {
        let r: EmbedRef = reference(name);
        for cpu_kernels in [true, false] {
            let opts = LoadOptions {
                cpu_kernels,
                ..LoadOptions::default()
            };
            let m = Embedder::load(&dir(name), (*name).into(), &opts).unwrap();
            // One batch of mixed lengths, then each alone: both must match.
            let batched = m.embed(&r.sentences, true).unwrap();
            let cos = min_cosine(&batched, &r.embeddings);
            println!("{name} kernels={}: min cosine {cos:.7}", m.info().kernels);
            assert!(cos >= 0.9999, "{name}: cosine {cos}");
            for (s, want) in r.sentences.iter().zip(&r.embeddings) {
                let alone = m.embed(&[s], true).unwrap();
                assert!(cosine(&alone[0], want) >= 0.9999, "{name}: {s:?} alone");
            }
        }
    }
}

/// transformers has no JinaBERT class: the reference comes from our PyTorch transcription of
/// jinaai's remote code (`make_tiny_models.py`). candle-transformers' `jina_bert` is another,
/// independent transcription of the same code (it takes no attention mask, so one unpadded
/// text at a time): it must agree with the reference and with ours, so a misreading of ALiBi
/// or of the gated feed-forward would have to be made twice, the same way, to pass.
#[test]
fn jina_bert_agrees_with_candle_transformers_transcription() {
    use candle_core::Module as _;
    use candle_transformers::models::jina_bert;
    let name = "jina-bert-embed";
    let dir = dir(name);
    let r: EmbedRef = reference(name);
    let config: jina_bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
            .expect("candle-transformers reads the config");
    let device = candle_core::Device::Cpu;
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let vb =
        candle_nn::VarBuilder::from_buffered_safetensors(bytes, candle_core::DType::F32, &device)
            .expect("weights");
    let theirs = jina_bert::BertModel::new(vb, &config).expect("candle-transformers loads it");
    let tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let ours = Embedder::load(&dir, name.into(), &LoadOptions::default()).unwrap();
    for (s, want) in r.sentences.iter().zip(&r.embeddings) {
        let ids = tokenizer
            .encode(s.as_str(), true)
            .expect("tokens")
            .get_ids()
            .to_vec();
        let n = ids.len();
        let input = candle_core::Tensor::from_vec(ids, (1, n), &device).expect("ids");
        let hidden = theirs.forward(&input).expect("forward");
        // sentence-transformers' mean pooling and Normalize (the model's modules.json).
        let mean: Vec<f32> = hidden
            .mean(1)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1())
            .expect("pooled");
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        let candle_transformers: Vec<f32> = mean.iter().map(|x| x / norm).collect();
        let vs_reference = cosine(&candle_transformers, want);
        let vs_ours = cosine(&candle_transformers, &ours.embed(&[s], true).unwrap()[0]);
        println!("{s:?}: cosine to the reference {vs_reference:.7}, to ours {vs_ours:.7}");
        assert!(vs_reference >= 0.9999, "{s:?}: {vs_reference}");
        assert!(vs_ours >= 0.9999, "{s:?}: {vs_ours}");
    }
}

#[test]
fn embedders_stay_close_in_bf16() {
    for name in EMBEDDERS {
        let r: EmbedRef = reference(name);
        let opts = LoadOptions {
            dtype: Dtype::Bf16,
            ..LoadOptions::default()
        };
        let m = Embedder::load(&dir(name), (*name).into(), &opts).unwrap();
        let cos = min_cosine(&m.embed(&r.sentences, true).unwrap(), &r.embeddings);
        println!("{name} bf16: min cosine {cos:.6}");
        assert!(cos >= 0.999, "{name} bf16: cosine {cos}");
    }
}

#[test]
fn loaded_models_report_what_they_serve() {
    let info = |name: &str| {
        Embedder::load(&dir(name), name.into(), &LoadOptions::default())
            .unwrap()
            .info()
            .clone()
    };
    let e = info("qwen3-embed");
    assert_eq!(
        (e.architecture, e.capabilities.clone()),
        ("qwen3", vec!["model.infer", "embeddings"])
    );
    assert_eq!(e.pooling.as_str(), "last_token");
    assert_eq!(info("modernbert-embed").dtype, "f32");
    let m = info("modernbert-rerank");
    assert_eq!(
        (m.architecture, m.capabilities),
        ("modernbert", vec!["rerank", "classify"])
    );
    let r = info("xlm-roberta-rerank");
    assert_eq!(
        (r.architecture, r.capabilities),
        ("xlm-roberta", vec!["rerank", "classify"])
    );
    let c = info("bert-classify");
    assert_eq!(c.capabilities, vec!["classify"]);
    assert_eq!(c.labels, vec!["negative", "neutral", "positive"]);
    assert_eq!(
        info("bert-embed").max_seq_length,
        24,
        "sentence_bert_config.json"
    );
}

#[tokio::test]
async fn rerank_scores_match_transformers_logits() {
    for name in ["bert-rerank", "xlm-roberta-rerank", "modernbert-rerank"] {
        let r: RerankRef = reference(name);
        let p = plugin(name, json!({})).await;
        let mut worst = 0f32;
        for (qi, query) in r.queries.iter().enumerate() {
            let want = &r.logits[qi * r.texts.len()..(qi + 1) * r.texts.len()];
            let raw = p
                .invoke(
                    "rerank",
                    json!({"query": query, "texts": r.texts, "raw_scores": true, "return_text": true}),
                    ctx(),
                )
                .await
                .unwrap();
            let ranked = raw.as_array().unwrap();
            assert_eq!(ranked.len(), r.texts.len());
            let scores: Vec<f32> = ranked
                .iter()
                .map(|x| x["score"].as_f64().unwrap() as f32)
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted best first");
            for x in ranked {
                let i = x["index"].as_u64().unwrap() as usize;
                assert_eq!(x["text"], r.texts[i]);
                let d = (x["score"].as_f64().unwrap() as f32 - want[i]).abs();
                worst = worst.max(d);
            }
            // Default: sigmoid of the logit; top_n cuts.
            let top = p
                .invoke(
                    "rerank",
                    json!({"query": query, "texts": r.texts, "top_n": 2}),
                    ctx(),
                )
                .await
                .unwrap();
            assert_eq!(top.as_array().unwrap().len(), 2);
            assert_eq!(top[0]["index"], ranked[0]["index"]);
            assert!(top[0].get("text").is_none());
            let sig = 1.0 / (1.0 + (-scores[0]).exp());
            assert!((top[0]["score"].as_f64().unwrap() as f32 - sig).abs() < 1e-5);
        }
        println!("{name}: max |logit - transformers| {worst:.2e}");
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}

#[tokio::test]
async fn classify_matches_transformers_logits_and_softmax() {
    let r: ClassifyRef = reference("bert-classify");
    let p = plugin("bert-classify", json!({})).await;
    let raw = p
        .invoke(
            "classify",
            json!({"inputs": r.sentences, "raw_scores": true}),
            ctx(),
        )
        .await
        .unwrap();
    let labels = ["negative", "neutral", "positive"];
    let mut worst = 0f32;
    for (got, want) in raw.as_array().unwrap().iter().zip(&r.logits) {
        for x in got.as_array().unwrap() {
            let i = labels.iter().position(|l| x["label"] == *l).unwrap();
            worst = worst.max((x["score"].as_f64().unwrap() as f32 - want[i]).abs());
        }
    }
    println!("bert-classify: max |logit - transformers| {worst:.2e}");
    assert!(worst <= 1e-4, "{worst}");
    // One string in, one list of probabilities out, best first and summing to one.
    let one = p
        .invoke("classify", json!({"inputs": r.sentences[0]}), ctx())
        .await
        .unwrap();
    let scores: Vec<f64> = one
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-5);
}

#[tokio::test]
async fn prompts_follow_prompt_name_and_the_default() {
    let r: EmbedRef = reference("bert-embed");
    let p = plugin("bert-embed", json!({})).await;
    let out = p
        .invoke(
            "model.infer",
            json!({"input": r.sentences, "prompt_name": "query"}),
            ctx(),
        )
        .await
        .unwrap();
    let got: Vec<Vec<f32>> = serde_json::from_value(out["embeddings"].clone()).unwrap();
    let cos = min_cosine(&got, &r.prompted["query"]);
    println!("bert-embed prompt query: min cosine {cos:.7}");
    assert!(cos >= 0.9999);
    // No default prompt: plain texts.
    let out = p
        .invoke("embeddings", json!({"input": r.sentences}), ctx())
        .await
        .unwrap();
    let plain: Vec<Vec<f32>> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert!(min_cosine(&plain, &r.embeddings) >= 0.9999);
    let err = invalid(
        p.invoke(
            "embeddings",
            json!({"input": "hi", "prompt_name": "nope"}),
            ctx(),
        )
        .await,
    );
    assert!(
        err.starts_with("prompt_name:") && err.contains("query"),
        "{err}"
    );

    // xlm-roberta-embed names `query` as its default_prompt_name.
    let r: EmbedRef = reference("xlm-roberta-embed");
    let p = plugin("xlm-roberta-embed", json!({})).await;
    let out = p
        .invoke("model.infer", json!({"input": r.sentences}), ctx())
        .await
        .unwrap();
    let got: Vec<Vec<f32>> = serde_json::from_value(out["embeddings"].clone()).unwrap();
    assert!(min_cosine(&got, &r.prompted["query"]) >= 0.9999);
    assert!(
        min_cosine(&got, &r.embeddings) < 0.9999,
        "the prompt changes the input"
    );
}

#[tokio::test]
async fn dimensions_truncate_then_renormalize_and_too_many_are_refused() {
    let r: EmbedRef = reference("qwen3-embed");
    let p = plugin("qwen3-embed", json!({})).await;
    let out = p
        .invoke(
            "embeddings",
            json!({"input": r.sentences, "dimensions": 16}),
            ctx(),
        )
        .await
        .unwrap();
    for (d, want) in out["data"].as_array().unwrap().iter().zip(&r.embeddings) {
        let v: Vec<f32> = serde_json::from_value(d["embedding"].clone()).unwrap();
        assert_eq!(v.len(), 16);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "renormalized: {norm}");
        assert!(
            cosine(&v, &want[..16]) >= 0.9999,
            "the first 16 of the full vector"
        );
    }
    let infer = p
        .invoke(
            "model.infer",
            json!({"input": "hi", "dimensions": 8}),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(infer["dimensions"], 8);
    for too_many in [json!(33), json!(0)] {
        let err = invalid(
            p.invoke(
                "embeddings",
                json!({"input": "hi", "dimensions": too_many}),
                ctx(),
            )
            .await,
        );
        assert!(err.starts_with("dimensions:"), "{err}");
    }
}

#[tokio::test]
async fn bad_rerank_requests_get_422_naming_the_field() {
    let p = plugin("bert-rerank", json!({"max_rerank_texts": 3})).await;
    let err = |payload: Value| {
        let p = &p;
        async move { invalid(p.invoke("rerank", payload, ctx()).await) }
    };
    assert!(
        err(json!({"query": "q", "texts": []}))
            .await
            .starts_with("texts:")
    );
    let e = err(json!({"query": "q", "texts": ["a", "b", "c", "d"]})).await;
    assert!(e.starts_with("texts:") && e.contains("at most 3"), "{e}");
    assert!(
        err(json!({"query": "", "texts": ["a"]}))
            .await
            .starts_with("query:")
    );
    let e = invalid(
        p.invoke("classify", json!({"inputs": ["a", "b", "c", "d"]}), ctx())
            .await,
    );
    assert!(e.starts_with("inputs:"), "{e}");
}

#[tokio::test]
async fn a_model_serves_only_its_own_capabilities() {
    let reranker = plugin("bert-rerank", json!({})).await;
    let e = invalid(
        reranker
            .invoke("embeddings", json!({"input": "hi"}), ctx())
            .await,
    );
    assert!(e.contains("rerank, classify"), "{e}");
    let embedder = plugin("bert-embed", json!({})).await;
    let e = invalid(
        embedder
            .invoke("rerank", json!({"query": "q", "texts": ["a"]}), ctx())
            .await,
    );
    assert!(e.contains("capability rerank"), "{e}");
    let classifier = plugin("bert-classify", json!({})).await;
    let e = invalid(
        classifier
            .invoke("rerank", json!({"query": "q", "texts": ["a"]}), ctx())
            .await,
    );
    assert!(e.contains("serves classify only"), "{e}");
}

/// Copies a tiny model to a temp dir and lets `edit` break its config.json.
fn broken(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir(name)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    let path = tmp.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    tmp
}

fn load_error(dir: &Path) -> Error {
    match Embedder::load(dir, "broken".into(), &LoadOptions::default()) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn unknown_model_types_and_mismatched_weights_fail_to_load_with_the_reason() {
    let d = broken("qwen3-embed", |c| c["model_type"] = json!("gpt_neox"));
    let e = load_error(d.path()).to_string();
    assert!(e.contains("\"gpt_neox\"") && e.contains("qwen3"), "{e}");
    for name in [
        "qwen3-embed",
        "qwen2-embed",
        "modernbert-embed",
        "modernbert-rerank",
        "xlm-roberta-rerank",
        "mpnet-embed",
        "mistral-embed",
        "gte-embed",
        "nomic-bert-embed",
        "jina-bert-embed",
    ] {
        let d = broken(name, |c| c["intermediate_size"] = json!(48));
        let e = load_error(d.path());
        assert!(matches!(e, Error::Weights { .. }), "{name}: {e}");
        println!("{name}: {e}");
    }
    // A classifier whose config promises more labels than its head has.
    let d = broken("bert-classify", |c| {
        c["id2label"] = json!({"0": "a", "1": "b", "2": "c", "3": "d"})
    });
    let e = load_error(d.path()).to_string();
    assert!(e.contains("classifier.weight"), "{e}");
    // A head on a decoder is refused by name, not loaded half-way.
    let d = broken("qwen3-embed", |c| {
        c["architectures"] = json!(["Qwen3ForSequenceClassification"])
    });
    let e = load_error(d.path()).to_string();
    assert!(e.contains("qwen3"), "{e}");
}

#[tokio::test]
async fn model_load_switches_families_and_what_the_plugin_serves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny");
    let p = plugin("bert-embed", json!({"model_root": root})).await;
    let loaded = p
        .invoke("model.load", json!({"path": "xlm-roberta-rerank"}), ctx())
        .await
        .unwrap();
    assert_eq!(loaded["model"]["architecture"], "xlm-roberta");
    assert_eq!(
        p.details()["model"]["capabilities"],
        json!(["rerank", "classify"])
    );
    let ranked = p
        .invoke("rerank", json!({"query": "q", "texts": ["a", "b"]}), ctx())
        .await
        .unwrap();
    assert_eq!(ranked.as_array().unwrap().len(), 2);
    invalid(p.invoke("embeddings", json!({"input": "a"}), ctx()).await);
    let loaded = p
        .invoke("model.load", json!({"path": "qwen3-embed"}), ctx())
        .await
        .unwrap();
    assert_eq!(loaded["model"]["architecture"], "qwen3");
    let out = p
        .invoke("embeddings", json!({"input": ["a b", "c"]}), ctx())
        .await
        .unwrap();
    assert_eq!(out["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rerank_and_classify_share_the_queue_and_its_429() {
    // A batch runs when 4 inputs are there (a minute is only a guard against hangs): the first
    // rerank's 3 pairs hold 3 of the queue's 4 places until the test sends a fourth input.
    let p = std::sync::Arc::new(
        plugin(
            "bert-classify",
            json!({"max_wait_ms": 60_000, "max_batch_size": 4, "queue_capacity": 4}),
        )
        .await,
    );
    let q = std::sync::Arc::clone(&p);
    let first = tokio::spawn(async move {
        q.invoke("classify", json!({"inputs": ["a", "b", "c"]}), ctx())
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.telemetry()["queue_depth"] != json!(3) {
        assert!(Instant::now() < deadline, "the first request never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = p
        .invoke("classify", json!({"inputs": ["d", "e"]}), ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Overloaded {
                retry_after_secs: 1
            }
        ),
        "{err}"
    );
    // The fourth input fills the batch: both calls are answered.
    let second = p
        .invoke("classify", json!({"inputs": "d"}), ctx())
        .await
        .unwrap();
    assert_eq!(second.as_array().unwrap().len(), 3);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.as_array().unwrap().len(), 3);

    let reranker = plugin(
        "bert-rerank",
        json!({"queue_capacity": 2, "max_rerank_texts": 10}),
    )
    .await;
    let e = invalid(
        reranker
            .invoke(
                "rerank",
                json!({"query": "q", "texts": ["a", "b", "c"]}),
                ctx(),
            )
            .await,
    );
    assert!(e.contains("queue"), "more pairs than the queue holds: {e}");
}
