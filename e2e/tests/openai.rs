//! The OpenAI-compatible routes and weighted aliases on the real `bkg up`:
//!
//! - the official `openai` Python client (PyPI, installed by scripts/setup.sh into
//!   .tools/venv) embeds through `/v1/embeddings` with the real all-MiniLM-L6-v2, lists models,
//!   and gets `AuthenticationError`, `PermissionDeniedError` and `NotFoundError` where it should;
//! - `/v1/rerank` reaches the Candle plugin's cross-encoder (a tiny random-weight BERT) in TEI's
//!   and Cohere's shapes;
//! - two echo plugins sharing an alias 90/10 split 2,000 invokes within ±3 percentage points,
//!   and an edit of the weights moves the split without restarting either plugin.

use std::process::Command;

use bkg_e2e::{ADMIN_KEY, Stack, create_key, python_with_openai, repo_root};
use serde_json::{Value, json};

const CLIENT: &str = r#"
import json, sys
import openai

url, key, echo_key = sys.argv[1:4]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
out = {}
texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
for model in ["candle", "minilm"]:
    r = client.embeddings.create(model=model, input=texts)
    out[model] = {
        "count": len(r.data),
        "dims": sorted({len(d.embedding) for d in r.data}),
        "indexes": [d.index for d in r.data],
        "prompt_tokens": r.usage.prompt_tokens,
    }
floats = client.embeddings.create(model="minilm", input="one text", encoding_format="float")
out["float_dims"] = len(floats.data[0].embedding)
out["models"] = sorted(m.id for m in client.models.list())
out["models_echo_key"] = sorted(
    m.id for m in openai.OpenAI(base_url=url + "/v1", api_key=echo_key, max_retries=0).models.list()
)

def raised(call):
    try:
        call()
        return "no error"
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "code": e.code, "param": e.param}

wrong = openai.OpenAI(base_url=url + "/v1", api_key="bkg_notAKey", max_retries=0)
out["wrong_key"] = raised(lambda: wrong.embeddings.create(model="candle", input="x"))
out["wrong_key_models"] = raised(lambda: wrong.models.list())
echo_only = openai.OpenAI(base_url=url + "/v1", api_key=echo_key, max_retries=0)
out["other_plugin"] = raised(lambda: echo_only.embeddings.create(model="candle", input="x"))
out["unknown_model"] = raised(lambda: client.embeddings.create(model="no-such-model", input="x"))
out["empty_input"] = raised(lambda: client.embeddings.create(model="candle", input=""))
print(json.dumps(out))
"#;

#[test]
fn the_openai_python_client_embeds_lists_models_and_gets_its_errors() {
    let python = python_with_openai();
    let hf_home = std::env::var("HF_HOME")
        .unwrap_or_else(|_| repo_root().join(".tools/huggingface").display().to_string());
    assert!(
        std::path::Path::new(&hf_home)
            .join("hub/models--sentence-transformers--all-MiniLM-L6-v2/refs/main")
            .is_file(),
        "the test model is not in the HF cache at {hf_home}: run scripts/setup.sh (make test does)"
    );
    let candle = std::fs::read_to_string(repo_root().join("config/plugins/candle.yaml"))
        .expect("manifest")
        .replace(
            "  replicas: 1\n",
            "  replicas: 1\n  aliases: [{name: minilm}]\n",
        );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("candle.yaml"), &candle).expect("write");
    std::fs::write(dir.path().join("echo.yaml"), bkg_e2e::sample_echo()).expect("write");
    let echo_key = create_key(
        &dir.path().join("keys/keys.yaml"),
        "echo-only",
        "invoke:echo",
    );
    let stack = Stack::start_with_env(dir, &[], &[("HF_HOME", &hf_home), ("HF_HUB_OFFLINE", "1")]);
    let plugin = stack.wait_plugin("candle", "running", |p| {
        p["status"] == "running" || p["status"] == "error"
    });
    assert_eq!(plugin["status"], "running", "{plugin:#}");
    stack.wait_running("echo");

    let out = Command::new(python)
        .args(["-c", CLIENT, &stack.url, ADMIN_KEY, &echo_key])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the openai client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("client output");
    for model in ["candle", "minilm"] {
        assert_eq!(got[model]["count"], 3, "{got:#}");
        assert_eq!(got[model]["dims"], json!([384]), "{got:#}");
        assert_eq!(got[model]["indexes"], json!([0, 1, 2]), "{got:#}");
        assert!(
            got[model]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
            "{got:#}"
        );
    }
    assert_eq!(got["float_dims"], 384);
    assert_eq!(
        got["models"],
        json!(["candle", "echo", "minilm"]),
        "{got:#}"
    );
    assert_eq!(got["models_echo_key"], json!(["echo"]), "{got:#}");
    let error = |name: &str| &got[name];
    assert_eq!(
        error("wrong_key")["class"],
        "AuthenticationError",
        "{got:#}"
    );
    assert_eq!(error("wrong_key")["code"], "invalid_api_key");
    assert_eq!(error("wrong_key_models")["class"], "AuthenticationError");
    assert_eq!(
        error("other_plugin")["class"],
        "PermissionDeniedError",
        "{got:#}"
    );
    assert_eq!(error("unknown_model")["class"], "NotFoundError", "{got:#}");
    assert_eq!(error("unknown_model")["code"], "model_not_found");
    assert_eq!(error("unknown_model")["param"], "model");
    assert_eq!(error("empty_input")["class"], "BadRequestError", "{got:#}");
    assert_eq!(error("empty_input")["param"], "input", "{got:#}");

    // The same calls counted as invokes of the plugin: one path, one set of metrics.
    let (_, history) = stack.get("/api/plugins/candle");
    assert_eq!(
        history["aliases"],
        json!([{"name": "minilm", "weight": 100, "percent": 100.0}])
    );
}

fn echo_manifest(id: &str, weight: u32) -> String {
    bkg_e2e::sample_echo()
        .replace("  name: echo\n", &format!("  name: {id}\n"))
        .replace(
            "  replicas: 1\n",
            // The gateway's default limit (100 calls a second per key) would refuse the run.
            &format!(
                "  replicas: 1\n  rateLimit: {{requestsPerSecond: 100000}}\n  aliases: [{{name: echo-stable, weight: {weight}}}]\n"
            ),
        )
        .replace("    greeting: hello\n", &format!("    greeting: {id}\n"))
}

/// Invokes the alias `n` times and counts which plugin answered (each echoes its own config).
fn split(stack: &Stack, n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let r = stack.invoke("echo-stable", "config", json!({}));
        assert_eq!(r.status, 200, "{:#}", r.body);
        let greeting = r.body["config"]["greeting"]
            .as_str()
            .or_else(|| r.body["greeting"].as_str())
            .unwrap_or_default()
            .to_owned();
        match greeting.as_str() {
            "echo-v1" => v1 += 1,
            "echo-v2" => v2 += 1,
            other => panic!("answered by {other:?}: {:#}", r.body),
        }
    }
    (v1, v2)
}

fn pids(stack: &Stack, id: &str) -> Vec<Value> {
    let (_, p) = stack.get(&format!("/api/plugins/{id}"));
    p["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["pid"].clone())
        .collect()
}

#[test]
fn a_90_10_alias_splits_2000_invokes_and_follows_a_weight_edit_without_restarts() {
    let stack = Stack::start(&[
        ("echo-v1.yaml", &echo_manifest("echo-v1", 90)),
        ("echo-v2.yaml", &echo_manifest("echo-v2", 10)),
    ]);
    stack.wait_running("echo-v1");
    stack.wait_running("echo-v2");
    let (_, aliases) = stack.get("/api/aliases");
    assert_eq!(
        aliases,
        json!([{"name": "echo-stable", "targets": [
            {"plugin": "echo-v1", "weight": 90, "percent": 90.0},
            {"plugin": "echo-v2", "weight": 10, "percent": 10.0}
        ]}])
    );
    let (_, v2) = stack.get("/api/plugins/echo-v2");
    assert_eq!(
        v2["aliases"],
        json!([{"name": "echo-stable", "weight": 10, "percent": 10.0}])
    );

    let (a, b) = split(&stack, 2000);
    eprintln!("alias echo-stable 90/10: echo-v1 answered {a}, echo-v2 {b} of 2000");
    let share = a as f64 / 2000.0 * 100.0;
    assert!(
        (87.0..=93.0).contains(&share),
        "echo-v1 got {a}, echo-v2 {b} of 2000"
    );
    assert_eq!(a + b, 2000);

    let before = (pids(&stack, "echo-v1"), pids(&stack, "echo-v2"));
    std::fs::write(
        stack.manifest_path("echo-v2.yaml"),
        echo_manifest("echo-v2", 90),
    )
    .expect("edit weight");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, aliases) = stack.get("/api/aliases");
        if aliases[0]["targets"][1]["percent"] == 50.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "weights never changed: {aliases:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (a, b) = split(&stack, 200);
    assert_eq!((a, b), (100, 100), "after the edit to 90/90");
    assert_eq!(
        (pids(&stack, "echo-v1"), pids(&stack, "echo-v2")),
        before,
        "a weight edit restarts nothing"
    );
}

#[test]
fn rerank_reaches_the_candle_cross_encoder_in_tei_and_cohere_shapes() {
    // The tiny random-weight BERT cross-encoder the Candle plugin's tests use.
    let model = repo_root().join("plugins/candle/testdata/tiny/bert-rerank");
    assert!(
        model.join("model.safetensors").is_file(),
        "{} missing",
        model.display()
    );
    let manifest = format!(
        "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {{name: reranker}}\nspec:\n  implementation: candle\n  aliases: [{{name: rr}}]\n  capabilities: [{{id: rerank}}]\n  config:\n    model: {{path: {}}}\n    dtype: f32\n",
        model.display()
    );
    let stack = Stack::start(&[("reranker.yaml", &manifest)]);
    let plugin = stack.wait_plugin("reranker", "running", |p| {
        p["status"] == "running" || p["status"] == "error"
    });
    assert_eq!(plugin["status"], "running", "{plugin:#}");

    let texts = [
        "a gateway for ML plugins",
        "a cat on a mat",
        "bkg runs plugins",
    ];
    // TEI's shape, without a model: the one plugin that offers rerank.
    let tei = stack.post(
        "/v1/rerank",
        json!({"query": "what is bkg?", "texts": texts}).to_string(),
    );
    assert_eq!(tei.status, 200, "{:#}", tei.body);
    let ranked = tei.body.as_array().expect("TEI's list");
    assert_eq!(ranked.len(), 3, "{:#}", tei.body);
    let scores: Vec<f64> = ranked.iter().filter_map(|r| r["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted: {scores:?}"
    );

    // Cohere's shape through the alias: the same scores under relevance_score.
    let cohere = stack.post(
        "/v1/rerank",
        json!({"model": "rr", "query": "what is bkg?", "documents": texts, "top_n": 2}).to_string(),
    );
    assert_eq!(cohere.status, 200, "{:#}", cohere.body);
    let results = cohere.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for (r, t) in results.iter().zip(ranked) {
        assert_eq!(r["index"], t["index"]);
        let (a, b) = (r["relevance_score"].as_f64(), t["score"].as_f64());
        assert!(
            matches!((a, b), (Some(a), Some(b)) if (a - b).abs() < 1e-6),
            "{r} vs {t}"
        );
    }

    // The plugin's refusal in OpenAI's shape.
    let empty = stack.post(
        "/v1/rerank",
        json!({"model": "reranker", "query": "q", "texts": []}).to_string(),
    );
    assert_eq!(empty.status, 422, "{:#}", empty.body);
    assert_eq!(empty.body["error"]["type"], "invalid_request_error");
    assert!(
        empty.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("texts"),
        "{:#}",
        empty.body
    );
}
