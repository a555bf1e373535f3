//! The Candle plugin end to end: `bkg up` with the sample manifest loads all-MiniLM-L6-v2 from
//! the Hugging Face cache offline and answers real embeddings through the gateway.

use bkg_e2e::{Stack, repo_root};
use serde_json::{Value, json};

fn vectors(body: &Value) -> Vec<Vec<f64>> {
    body["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|v| {
            v.as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn candle_embeds_through_the_gateway() {
    let hf_home = std::env::var("HF_HOME")
        .unwrap_or_else(|_| repo_root().join(".tools/huggingface").display().to_string());
    assert!(
        std::path::Path::new(&hf_home)
            .join("hub/models--sentence-transformers--all-MiniLM-L6-v2/refs/main")
            .is_file(),
        "the test model is not in the HF cache at {hf_home}: run scripts/setup.sh (make test does)"
    );
    let manifest =
        std::fs::read_to_string(repo_root().join("config/plugins/candle.yaml")).expect("manifest");
    let stack = Stack::start_env(
        &[("candle.yaml", &manifest)],
        &[("HF_HOME", &hf_home), ("HF_HUB_OFFLINE", "1")],
    );
    let plugin = stack.wait_plugin("candle", "running", |p| {
        p["status"] == "running" || p["status"] == "error"
    });
    assert_eq!(plugin["status"], "running", "{plugin:#}");

    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
    ];
    let r = stack.invoke("candle", "model.infer", json!({"input": texts}));
    assert_eq!(r.status, 200, "{:#}", r.body);
    let v = vectors(&r.body);
    assert_eq!(v.len(), 3);
    for e in &v {
        assert_eq!(e.len(), 384);
        let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit vectors, got norm {norm}");
    }
    let related = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        related > 0.6 && unrelated < 0.3,
        "related {related}, unrelated {unrelated}"
    );

    // One string in, one vector out; the OpenAI shape carries the same vector.
    let single = stack.invoke("candle", "model.infer", json!({"input": texts[0]}));
    let openai = stack.invoke("candle", "embeddings", json!({"input": [texts[0]]}));
    assert_eq!(openai.status, 200, "{:#}", openai.body);
    let a = &vectors(&single.body)[0];
    let b: Vec<f64> = openai.body["data"][0]["embedding"]
        .as_array()
        .expect("data[0].embedding")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(cosine(a, &b) > 0.9999);
    assert!(openai.body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0);

    // Bad input gets a clear 4xx and the plugin keeps serving.
    let r = stack.invoke("candle", "model.infer", json!({"input": ""}));
    assert_eq!(r.status, 400, "{:#}", r.body);
    let long = "word ".repeat(600);
    let r = stack.invoke(
        "candle",
        "model.infer",
        json!({"input": long, "truncate": false}),
    );
    assert_eq!(r.status, 422, "{:#}", r.body);
    let r = stack.invoke("candle", "model.infer", json!({"input": long}));
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["truncated"], json!([true]));
    let (_, t) = stack.get("/api/plugins/candle/telemetry");
    assert!(t["memory_mb"].as_f64().unwrap_or(0.0) > 20.0, "{t:#}");
}
