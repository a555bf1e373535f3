//! Behaviour tests on a tiny random-weight BERT written to a temp dir.

use std::time::{Duration, Instant};

use bkg_plugin_api::{InvokeContext, Plugin, PluginError, StartContext};
use serde_json::{Value, json};

use crate::CandlePlugin;
use crate::config::ModelSource;
use crate::engine::{Embedder, LoadOptions};
use crate::error::Error;
use crate::pooling::Pooling;
use crate::testutil::{self, Tiny, cosine, max_abs_diff, tiny, words};

fn load(dir: &std::path::Path) -> Embedder {
    Embedder::load(dir, "tiny".into(), &LoadOptions::default()).unwrap()
}

fn load_err(dir: &std::path::Path) -> Error {
    match Embedder::load(dir, "tiny".into(), &LoadOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn ctx() -> InvokeContext {
    InvokeContext {
        request_id: "test".into(),
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

async fn started(config: Value) -> CandlePlugin {
    let plugin = CandlePlugin::default();
    plugin
        .start(StartContext {
            plugin_id: "candle".into(),
            config,
        })
        .await
        .unwrap();
    plugin
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn vectors(response: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(response["embeddings"].clone()).unwrap()
}

// ---- model and pooling -------------------------------------------------------------------

#[test]
fn batching_with_longer_inputs_does_not_change_an_embedding() {
    let dir = tiny(&Tiny::default());
    let m = load(dir.path());
    let short = words(3);
    let alone = m.embed(&[short.as_str()], true).unwrap();
    let batched = m
        .embed(
            &[words(11).as_str(), short.as_str(), words(6).as_str()],
            true,
        )
        .unwrap();
    assert!(
        max_abs_diff(&alone[0], &batched[1]) < 1e-5,
        "padding leaked into attention or pooling"
    );
    assert_eq!(batched.len(), 3);
    assert!(
        cosine(&batched[0], &batched[1]) < 0.9999,
        "different inputs should differ"
    );
}

#[test]
fn pooling_follows_the_sentence_transformers_config() {
    let mean = tiny(&Tiny {
        normalize: false,
        ..Tiny::default()
    });
    let cls = tiny(&Tiny {
        pooling: Some("cls"),
        normalize: false,
        ..Tiny::default()
    });
    let none = tiny(&Tiny {
        pooling: None,
        normalize: false,
        ..Tiny::default()
    });
    assert_eq!(load(mean.path()).info().pooling, Pooling::Mean);
    assert_eq!(load(cls.path()).info().pooling, Pooling::Cls);
    assert_eq!(
        load(none.path()).info().pooling,
        Pooling::Mean,
        "mean is the default without a pooling config"
    );
    let text = [words(5)];
    let a = load(mean.path()).embed(&text, true).unwrap();
    let b = load(cls.path()).embed(&text, true).unwrap();
    assert!(
        max_abs_diff(&a[0], &b[0]) > 1e-3,
        "cls and mean pooling should differ"
    );
    let forced = Embedder::load(
        mean.path(),
        "t".into(),
        &LoadOptions {
            pooling: Some(Pooling::Cls),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(
        max_abs_diff(&forced.embed(&text, true).unwrap()[0], &b[0]) < 1e-6,
        "config override wins"
    );
}

#[test]
fn normalization_follows_the_normalize_module_and_options() {
    let with = tiny(&Tiny::default());
    let without = tiny(&Tiny {
        normalize: false,
        ..Tiny::default()
    });
    let text = [words(4)];
    let v = load(with.path()).embed(&text, true).unwrap();
    assert!((norm(&v[0]) - 1.0).abs() < 1e-5);
    let m = load(without.path());
    assert!(!m.info().normalize);
    assert!((norm(&m.embed(&text, true).unwrap()[0]) - 1.0).abs() > 1e-2);
    let forced = Embedder::load(
        without.path(),
        "t".into(),
        &LoadOptions {
            normalize: Some(true),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(forced.info().normalize);
}

#[test]
fn baked_in_tokenizer_padding_and_truncation_are_ignored() {
    // The tokenizer.json pads to 16 and truncates there; max_seq_length (32) must win.
    let dir = tiny(&Tiny::default());
    let m = load(dir.path());
    assert_eq!(m.info().max_seq_length, 32);
    assert_eq!(
        m.encoder().encode("hello world", true).unwrap().len(),
        4,
        "no padding to 16"
    );
    let long = m.encoder().encode(&words(20), true).unwrap();
    assert_eq!(
        (long.len(), long.truncated),
        (22, false),
        "not truncated at the baked-in 16"
    );
}

#[test]
fn truncation_keeps_the_closing_token_and_is_reported() {
    let dir = tiny(&Tiny {
        max_seq_length: Some(8),
        ..Tiny::default()
    });
    let m = load(dir.path());
    let e = m.encoder().encode(&words(20), true).unwrap();
    assert_eq!(e.len(), 8);
    assert!(e.truncated);
    assert_eq!(e.ids.last(), Some(&3), "[SEP] stays last");
    assert!(
        !m.encoder().encode(&words(6), true).unwrap().truncated,
        "6 words + 2 specials fit in 8"
    );
    let err = m.encoder().encode(&words(7), false).unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(ref s) if s.contains("limit of 8")),
        "{err}"
    );
}

#[test]
fn max_length_falls_back_to_the_position_table() {
    let dir = tiny(&Tiny {
        max_seq_length: None,
        ..Tiny::default()
    });
    assert_eq!(load(dir.path()).info().max_seq_length, testutil::POSITIONS);
}

#[test]
fn empty_inputs_are_refused() {
    let dir = tiny(&Tiny::default());
    let m = load(dir.path());
    assert!(matches!(m.embed(&[""], true), Err(Error::InvalidInput(_))));
    assert!(
        matches!(m.embed(&["ok", "  "], true), Err(Error::InvalidInput(ref s)) if s.starts_with("input[1]"))
    );
    assert!(matches!(
        m.embed::<&str>(&[], true),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn weights_under_a_bert_prefix_load_too() {
    let dir = tiny(&Tiny::default());
    let plain = load(dir.path()).embed(&[words(4)], true).unwrap();
    candle_core::safetensors::save(
        &testutil::weights(7, "bert."),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let prefixed = load(dir.path()).embed(&[words(4)], true).unwrap();
    assert!(max_abs_diff(&plain[0], &prefixed[0]) < 1e-6);
}

#[test]
fn bf16_stays_close_to_f32() {
    let dir = tiny(&Tiny::default());
    let f32m = load(dir.path());
    let bf16 = Embedder::load(
        dir.path(),
        "t".into(),
        &LoadOptions {
            dtype: crate::config::Dtype::Bf16,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let texts = [words(3), words(9)];
    let a = f32m.embed(&texts, true).unwrap();
    let b = bf16.embed(&texts, true).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(x, y) > 0.99, "bf16 drifted: {}", cosine(x, y));
    }
}

/// The f16 path (weights, activations and the attention mask in f16) on candle's portable
/// ops. The config allows f16 only with `device: cuda`; the engine runs it anywhere, so the
/// numerics are checked here without a GPU, with inputs of different lengths (padding masked).
#[test]
fn f16_stays_close_to_f32() {
    let dir = tiny(&Tiny::default());
    let f32m = load(dir.path());
    let f16 = Embedder::load(
        dir.path(),
        "t".into(),
        &LoadOptions {
            dtype: crate::config::Dtype::F16,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!((f16.info().dtype, f16.info().kernels), ("f16", "candle"));
    let texts = [words(3), words(9), words(17)];
    let a = f32m.embed(&texts, true).unwrap();
    let b = f16.embed(&texts, true).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(x, y) > 0.999, "f16 drifted: {}", cosine(x, y));
    }
}

#[test]
fn cpu_kernels_agree_with_the_portable_candle_path() {
    if !crate::kernels::support().avx512 {
        // Both loads would run candle's path, and comparing it with itself proves nothing. The
        // harness does not capture the process's own stderr, so `cargo test` shows this line.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tests::cpu_kernels_agree_with_the_portable_candle_path: needs AVX-512F, \
             which this CPU lacks; nothing checked"
        );
        return;
    }
    let dir = tiny(&Tiny::default());
    let texts = [words(3), words(17), words(9)];
    for dtype in [crate::config::Dtype::F32, crate::config::Dtype::Bf16] {
        let load = |cpu_kernels| {
            Embedder::load(
                dir.path(),
                "t".into(),
                &LoadOptions {
                    dtype,
                    cpu_kernels,
                    ..LoadOptions::default()
                },
            )
            .unwrap()
        };
        let (fast, portable) = (load(true), load(false));
        assert_eq!(portable.info().kernels, "candle");
        if dtype == crate::config::Dtype::F32 {
            assert_eq!(fast.info().kernels, "avx512-f32", "the kernels are in use");
        }
        let (a, b) = (
            fast.embed(&texts, true).unwrap(),
            portable.embed(&texts, true).unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(cosine(x, y) > 0.999, "{dtype:?}: {}", cosine(x, y));
        }
    }
}

// ---- broken model directories ------------------------------------------------------------

#[test]
fn a_missing_directory_or_file_is_named() {
    let err = load_err(std::path::Path::new("/nonexistent/model"));
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    let dir = tiny(&Tiny::default());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(
            err,
            Error::MissingFile {
                file: "model.safetensors",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_or_truncated_weights_are_refused() {
    let dir = tiny(&Tiny::default());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Weights { .. }));
    std::fs::write(&path, b"this is not safetensors").unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::Weights { .. }) && err.to_string().contains("safetensors"),
        "{err}"
    );
}

#[test]
fn weights_that_do_not_fit_the_config_are_refused() {
    let dir = tiny(&Tiny::default());
    let mut w = testutil::weights(7, "");
    w.remove("encoder.layer.1.output.dense.weight");
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.to_string()
            .contains("encoder.layer.1.output.dense.weight"),
        "{err}"
    );
}

#[test]
fn an_unknown_architecture_is_refused_by_name() {
    let dir = tiny(&Tiny::default());
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::UnsupportedArchitecture(ref a) if a == "llama"),
        "{err}"
    );
}

#[test]
fn offline_hub_load_with_an_empty_cache_fails_clearly() {
    let cache = tempfile::tempdir().unwrap();
    let source = ModelSource::hub("sentence-transformers/all-MiniLM-L6-v2", None);
    let err = match Embedder::load_source_with(&source, cache.path(), true, &LoadOptions::default())
    {
        Ok(_) => panic!("nothing is cached"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

// ---- the plugin --------------------------------------------------------------------------

#[tokio::test]
async fn without_a_model_start_succeeds_and_infer_is_not_ready() {
    let plugin = started(json!({})).await;
    let err = plugin
        .invoke("model.infer", json!({"input": "hi"}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::NotReady(_)), "{err}");
    assert_eq!(plugin.telemetry()["model_loaded"], json!(false));
    assert_eq!(plugin.details()["device"], json!("cpu"));
}

#[tokio::test]
async fn a_bad_configured_model_fails_start_with_a_config_error() {
    let plugin = CandlePlugin::default();
    let err = plugin
        .start(StartContext {
            plugin_id: "c".into(),
            config: json!({"model": {"path": "/nonexistent"}}),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Config(_)), "{err}");
}

#[tokio::test]
async fn infer_reports_dimensions_truncation_and_usage() {
    let dir = tiny(&Tiny {
        max_seq_length: Some(8),
        ..Tiny::default()
    });
    let plugin = started(json!({"model": {"path": dir.path()}})).await;
    let r = plugin
        .invoke(
            "model.infer",
            json!({"input": ["hello world", words(20)]}),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(r["dimensions"], json!(testutil::HIDDEN));
    assert_eq!(r["truncated"], json!([false, true]));
    assert_eq!(r["usage"]["prompt_tokens"], json!(4 + 8));
    assert_eq!(r["normalized"], json!(true));
    let v = vectors(&r);
    assert_eq!((v.len(), v[0].len()), (2, testutil::HIDDEN));
    let raw = plugin
        .invoke(
            "model.infer",
            json!({"input": "hello world", "normalize": false}),
            ctx(),
        )
        .await
        .unwrap();
    assert!((norm(&vectors(&raw)[0]) - 1.0).abs() > 1e-3);
    let err = plugin
        .invoke(
            "model.infer",
            json!({"input": words(20), "truncate": false}),
            ctx(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
    let err = plugin
        .invoke("model.infer", json!({"input": []}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn truncate_off_in_config_refuses_long_inputs() {
    let dir = tiny(&Tiny {
        max_seq_length: Some(8),
        ..Tiny::default()
    });
    let plugin = started(json!({"model": {"path": dir.path()}, "truncate": false})).await;
    let err = plugin
        .invoke("model.infer", json!({"input": words(20)}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn openai_embeddings_shape() {
    use base64::Engine as _;
    let dir = tiny(&Tiny::default());
    let plugin = started(json!({"model": {"path": dir.path()}})).await;
    let r = plugin
        .invoke(
            "embeddings",
            json!({"input": ["a cat", "a dog"], "model": "x"}),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(r["object"], json!("list"));
    assert_eq!(r["data"][1]["index"], json!(1));
    assert_eq!(r["data"][0]["object"], json!("embedding"));
    assert_eq!(r["usage"]["prompt_tokens"], r["usage"]["total_tokens"]);
    let floats: Vec<f32> = serde_json::from_value(r["data"][0]["embedding"].clone()).unwrap();
    let b = plugin
        .invoke(
            "embeddings",
            json!({"input": "a cat", "encoding_format": "base64"}),
            ctx(),
        )
        .await
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(max_abs_diff(&floats, &decoded) < 1e-6);
    // Matryoshka: fewer dimensions are a cut; more than the model has are refused by name.
    let cut = plugin
        .invoke("embeddings", json!({"input": "a", "dimensions": 7}), ctx())
        .await
        .unwrap();
    assert_eq!(cut["data"][0]["embedding"].as_array().unwrap().len(), 7);
    let err = plugin
        .invoke("embeddings", json!({"input": "a", "dimensions": 33}), ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::InvalidInput(ref m) if m.starts_with("dimensions:")),
        "{err}"
    );
}

/// A model root holding one tiny model in `tiny/`.
fn model_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("tiny")).unwrap();
    testutil::write_tiny(&root.path().join("tiny"), &Tiny::default());
    root
}

#[tokio::test]
async fn model_load_reads_only_inside_the_model_root_and_says_nothing_of_outside() {
    let root = model_root();
    let outside = tiny(&Tiny::default());
    std::os::unix::fs::symlink(outside.path(), root.path().join("link-out")).unwrap();
    std::os::unix::fs::symlink("/etc", root.path().join("etc")).unwrap();
    let plugin = started(json!({"model_root": root.path()})).await;
    // Inside: relative or absolute, it loads.
    for path in [json!("tiny"), json!(root.path().join("tiny"))] {
        let r = plugin
            .invoke("model.load", json!({"path": path}), ctx())
            .await
            .unwrap();
        assert_eq!(r["model"]["dimensions"], json!(testutil::HIDDEN));
    }
    // Outside: a real model, existing and missing directories, `..` and symlinks out all
    // get the one answer, naming no path.
    let mut details = Vec::new();
    for path in [
        outside.path().display().to_string(),
        "/etc".into(),
        "/nonexistent-bkg-test".into(),
        "../../../../etc".into(),
        "../../../../nonexistent-bkg-test".into(),
        "link-out".into(),
        "etc".into(),
        "etc/nonexistent-bkg-test".into(),
        "tiny/config.json".into(),
    ] {
        let err = plugin
            .invoke("model.load", json!({"path": path}), ctx())
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)), "{path}: {err}");
        let text = err.to_string();
        assert!(
            !text.contains("etc") && !text.contains("nonexistent") && !text.contains('/'),
            "{text}"
        );
        details.push(text);
    }
    details.dedup();
    assert_eq!(details.len(), 1, "{details:?}");
    // The model loaded last (inside the root) still serves.
    plugin
        .invoke("model.infer", json!({"input": "hello"}), ctx())
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_model_root_model_load_by_path_is_refused() {
    // SAFETY of the assumption: the test environment does not set BKG_MODEL_ROOT.
    if std::env::var_os(crate::config::MODEL_ROOT_ENV).is_some() {
        return;
    }
    let dir = tiny(&Tiny::default());
    let plugin = started(json!({})).await;
    let err = plugin
        .invoke("model.load", json!({"path": dir.path()}), ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no model root"), "{err}");
    let err = plugin
        .invoke("model.load", json!({"model_id": "../../etc"}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
    let err = plugin
        .invoke(
            "model.load",
            json!({"model_id": "a/b", "revision": "../../x"}),
            ctx(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revision"), "{err}");
}

#[tokio::test]
async fn a_failed_load_keeps_the_old_model_serving() {
    let root = model_root();
    let dir = root.path().join("tiny");
    let plugin = started(json!({"model": {"path": "tiny"}, "model_root": root.path()})).await;
    let err = plugin
        .invoke("model.load", json!({"path": "/nonexistent"}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
    plugin
        .invoke("model.infer", json!({"input": "hello"}), ctx())
        .await
        .unwrap();
    let r = plugin
        .invoke("model.unload", json!({}), ctx())
        .await
        .unwrap();
    assert_eq!(r["unloaded"], json!(dir.display().to_string()));
    let err = plugin
        .invoke("model.infer", json!({"input": "hello"}), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::NotReady(_)));
    let r = plugin
        .invoke("model.load", json!({"path": dir}), ctx())
        .await
        .unwrap();
    assert_eq!(r["model"]["dimensions"], json!(testutil::HIDDEN));
    plugin
        .invoke("model.infer", json!({"input": "hello"}), ctx())
        .await
        .unwrap();
    let err = plugin.invoke("nope", json!({}), ctx()).await.unwrap_err();
    assert!(matches!(err, PluginError::UnknownCapability(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_answered_in_order() {
    let dir = tiny(&Tiny::default());
    // The batcher waits (up to a minute, a guard against hangs only) until 8 inputs are there,
    // however slowly a busy machine delivers them.
    let plugin = std::sync::Arc::new(
        started(json!({"model": {"path": dir.path()}, "max_wait_ms": 60_000, "max_batch_size": 8}))
            .await,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    plugin.register_metrics(&mut registry);
    let tasks: Vec<_> = (1..=8)
        .map(|n| {
            let p = std::sync::Arc::clone(&plugin);
            tokio::spawn(async move {
                p.invoke("model.infer", json!({"input": words(n)}), ctx())
                    .await
            })
        })
        .collect();
    let alone = load(dir.path()).embed(&[words(5)], true).unwrap();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert!(
        max_abs_diff(&vectors(&results[4])[0], &alone[0]) < 1e-5,
        "answers went to the right callers"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let batches: f64 = metric(&text, "bkg_candle_batch_size_count");
    let inputs: f64 = metric(&text, "bkg_candle_batch_size_sum");
    assert_eq!(inputs, 8.0);
    assert_eq!(
        batches, 1.0,
        "8 concurrent inputs ran in {batches} batches:\n{text}"
    );
    assert_eq!(metric(&text, "bkg_candle_queue_depth"), 0.0);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_retry_after() {
    let dir = tiny(&Tiny::default());
    // A batch runs when 4 inputs are there (or after a minute, a guard against hangs only), so
    // the first request's 3 inputs wait, holding 3 of the queue's 4 places, until the test
    // sends the fourth.
    let plugin = std::sync::Arc::new(
        started(json!({"model": {"path": dir.path()}, "max_wait_ms": 60_000, "max_batch_size": 4, "queue_capacity": 4}))
            .await,
    );
    let p = std::sync::Arc::clone(&plugin);
    let first = tokio::spawn(async move {
        p.invoke("model.infer", json!({"input": ["a", "b", "c"]}), ctx())
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while plugin.telemetry()["queue_depth"] != json!(3) {
        assert!(Instant::now() < deadline, "the first request never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Refused while the first request still waits: a refusal that waited for room would
    // only come once the first batch ran, which nothing but the fourth input below starts.
    let err = plugin
        .invoke("model.infer", json!({"input": ["d", "e"]}), ctx())
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
    assert!(!first.is_finished(), "refused without waiting for room");
    assert_eq!(plugin.telemetry()["queue_depth"], json!(3));
    let err = plugin
        .invoke(
            "model.infer",
            json!({"input": ["a", "b", "c", "d", "e"]}),
            ctx(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::InvalidInput(_)),
        "more inputs than the queue holds: {err}"
    );
    // The fourth input fills the batch: both requests are answered.
    plugin
        .invoke("model.infer", json!({"input": ["d"]}), ctx())
        .await
        .unwrap();
    first.await.unwrap().unwrap();
    // Their room is free again.
    plugin
        .invoke("model.infer", json!({"input": ["d", "e", "f", "g"]}), ctx())
        .await
        .unwrap();
}

#[tokio::test]
async fn batching_off_runs_inputs_one_by_one() {
    let dir = tiny(&Tiny::default());
    let plugin = started(json!({"model": {"path": dir.path()}, "batching": false})).await;
    let mut registry = prometheus_client::registry::Registry::default();
    plugin.register_metrics(&mut registry);
    plugin
        .invoke("model.infer", json!({"input": ["a", "b", "c"]}), ctx())
        .await
        .unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(metric(&text, "bkg_candle_batch_size_count"), 3.0);
    assert_eq!(plugin.details()["batching"]["max_batch_size"], json!(1));
}
