//! brainml end to end: `bkg up` with the sample manifest (`config/plugins/brainml.yaml`, the
//! scikit-learn iris forest of `plugins/brainml/testdata/`) shows `predict` with the schemas the
//! runtime derived from the model (the manifest lists no capabilities), answers onnxruntime's
//! reference outputs through the gateway, refuses a wrong shape with a 400 naming the input
//! (the gateway, against the derived schema) and a tensor whose data does not fill its shape
//! with a 422 naming it (the plugin), and keeps serving.

use bkg_e2e::{Stack, repo_root};
use serde_json::{Map, Value, json};

fn reference() -> Value {
    let text = std::fs::read_to_string(
        repo_root().join("plugins/brainml/testdata/iris_forest.reference.json"),
    )
    .expect("reference");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn brainml_predicts_through_the_gateway_with_the_models_schema() {
    let manifest =
        std::fs::read_to_string(repo_root().join("config/plugins/brainml.yaml")).expect("manifest");
    // The manifest's relative model path resolves against the model root, here the
    // repository (under `make up`, the working directory is).
    let root = repo_root().display().to_string();
    let stack = Stack::start_env(&[("brainml.yaml", &manifest)], &[("BKG_MODEL_ROOT", &root)]);
    stack.wait_running("brainml");

    // The derived schema, as clients see it.
    let (status, plugin) = stack.get("/api/plugins/brainml");
    assert_eq!(status, 200, "{plugin:#}");
    let caps = plugin["capabilities"].as_array().expect("capabilities");
    let predict = caps.iter().find(|c| c["id"] == "predict").expect("predict");
    let x = &predict["input_schema"]["properties"]["inputs"]["properties"]["X"];
    assert_eq!(x["x-dtype"], "float32", "{predict:#}");
    assert_eq!(x["x-shape"], json!(["N", 4]), "{predict:#}");
    let outputs = &predict["output_schema"]["properties"]["outputs"]["properties"];
    assert_eq!(
        outputs["label"]["properties"]["dtype"],
        json!({"const": "int64"})
    );

    // onnxruntime's outputs on the reference inputs.
    let reference = reference();
    let input = &reference["inputs"]["X"];
    let payload = json!({"inputs": {"X": {"shape": input["shape"], "data": input["data"]}}});
    let r = stack.invoke("brainml", "predict", payload.clone());
    assert_eq!(r.status, 200, "{:#}", r.body);
    let want: &Map<String, Value> = reference["outputs"].as_object().expect("outputs");
    for (name, w) in want {
        let g = &r.body["outputs"][name];
        assert_eq!(
            (&g["dtype"], &g["shape"]),
            (&w["dtype"], &w["shape"]),
            "{name}"
        );
        let (g, w) = (
            g["data"].as_array().expect("data"),
            w["data"].as_array().expect("data"),
        );
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            let (a, b) = (a.as_f64().expect("num"), b.as_f64().expect("num"));
            assert!((a - b).abs() <= 1e-5, "{name}: {a} vs onnxruntime {b}");
        }
    }

    // A wrong shape: the gateway refuses it against the derived schema, naming the input.
    let r = stack.invoke(
        "brainml",
        "predict",
        json!({"inputs": {"X": [[5.1, 3.5, 1.4]]}}),
    );
    assert_eq!(r.status, 400, "{:#}", r.body);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["/inputs/X"], "{:#}", r.body);
    // A missing input too.
    let r = stack.invoke("brainml", "predict", json!({"inputs": {}}));
    assert_eq!(r.status, 400, "{:#}", r.body);
    // Data that does not fill its shape passes the schema; the plugin refuses it naming it.
    let r = stack.invoke(
        "brainml",
        "predict",
        json!({"inputs": {"X": {"shape": [2, 4], "data": [5.1, 3.5, 1.4, 0.2]}}}),
    );
    assert_eq!(r.status, 422, "{:#}", r.body);
    assert!(
        r.body.to_string().contains("`/inputs/X/data`"),
        "{:#}",
        r.body
    );

    // Still serving: plain nested arrays, the first reference row.
    let row: Vec<Value> = input["data"].as_array().expect("data")[..4].to_vec();
    let r = stack.invoke(
        "brainml",
        "predict",
        json!({"inputs": {"X": [row]}, "outputs": ["label"]}),
    );
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(
        r.body["outputs"]["label"]["data"],
        json!([reference["outputs"]["label"]["data"][0]])
    );
}
