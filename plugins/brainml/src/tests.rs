use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

fn ctx() -> InvokeContext {
    InvokeContext {
        request_id: "test".into(),
        deadline: Instant::now() + Duration::from_secs(120),
    }
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).join(name)
}

fn reference(model: &str) -> Value {
    let text =
        std::fs::read_to_string(testdata(&format!("{model}.reference.json"))).expect("reference");
    serde_json::from_str(&text).expect("json")
}

async fn start(config: Value) -> Result<Box<dyn Plugin>, PluginError> {
    let plugin = new_plugin();
    plugin
        .start(StartContext {
            plugin_id: "brainml".into(),
            config,
        })
        .await?;
    Ok(plugin)
}

async fn started(model: &str) -> Box<dyn Plugin> {
    start(json!({"model": {"path": testdata(&format!("{model}.onnx"))}}))
        .await
        .expect("start")
}

/// The reference's inputs as a payload: `{shape, data}` of each.
fn payload(reference: &Value) -> Value {
    let inputs: Map<String, Value> = reference["inputs"]
        .as_object()
        .expect("inputs")
        .iter()
        .map(|(k, v)| (k.clone(), json!({"shape": v["shape"], "data": v["data"]})))
        .collect();
    json!({"inputs": inputs})
}

/// Plain nested arrays of a flat row-major tensor.
fn nest(shape: &[usize], data: &[Value]) -> Value {
    match shape.split_first() {
        None => data[0].clone(),
        Some((&n, rest)) => {
            let step = rest.iter().product::<usize>();
            Value::Array(
                (0..n)
                    .map(|i| nest(rest, &data[i * step..(i + 1) * step]))
                    .collect(),
            )
        }
    }
}

/// Every output matches onnxruntime's: same dtype and shape, values within 1e-5.
fn assert_matches(answer: &Value, reference: &Value) {
    let want = reference["outputs"].as_object().expect("outputs");
    let got = answer["outputs"].as_object().expect("outputs in answer");
    assert_eq!(got.len(), want.len(), "{answer:#}");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g["dtype"], w["dtype"], "{name}");
        assert_eq!(g["shape"], w["shape"], "{name}");
        let (g, w) = (
            g["data"].as_array().expect("data"),
            w["data"].as_array().expect("data"),
        );
        assert_eq!(g.len(), w.len(), "{name}");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            let (a, b) = (a.as_f64().expect("number"), b.as_f64().expect("number"));
            assert!(
                (a - b).abs() <= 1e-5,
                "{name}[{i}]: tract {a}, onnxruntime {b}"
            );
        }
    }
}

#[tokio::test]
async fn the_sklearn_forest_matches_onnxruntime() {
    let plugin = started("iris_forest").await;
    let reference = reference("iris_forest");
    let answer = plugin
        .invoke(PREDICT, payload(&reference), ctx())
        .await
        .expect("predict");
    assert_matches(&answer, &reference);
    // The classes are not all one: the reference exercises the trees' branches.
    let labels = &reference["outputs"]["label"]["data"];
    assert!(
        labels
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x != &l[0])),
        "{labels}"
    );
}

#[tokio::test]
async fn the_pytorch_cnn_matches_onnxruntime_in_both_input_forms() {
    let plugin = started("tiny_cnn").await;
    let reference = reference("tiny_cnn");
    let answer = plugin
        .invoke(PREDICT, payload(&reference), ctx())
        .await
        .expect("predict");
    assert_matches(&answer, &reference);

    let image = &reference["inputs"]["image"];
    let shape: Vec<usize> = serde_json::from_value(image["shape"].clone()).expect("shape");
    let nested = nest(&shape, image["data"].as_array().expect("data"));
    let answer = plugin
        .invoke(PREDICT, json!({"inputs": {"image": nested}}), ctx())
        .await
        .expect("predict nested");
    assert_matches(&answer, &reference);
}

#[tokio::test]
async fn the_signature_is_the_models_own() {
    let iris = started("iris_forest").await;
    let details = iris.details();
    assert_eq!(
        details["inputs"],
        json!([{"name": "X", "dtype": "float32", "shape": ["N", "4"]}])
    );
    assert_eq!(
        details["outputs"],
        json!([
            {"name": "label", "dtype": "int64", "shape": ["N"]},
            {"name": "probabilities", "dtype": "float32", "shape": ["N", "3"]}
        ])
    );
    let cnn = started("tiny_cnn").await;
    assert_eq!(
        cnn.details()["inputs"],
        json!([{"name": "image", "dtype": "float32", "shape": ["batch", "1", "8", "8"]}])
    );
    assert_eq!(
        cnn.details()["outputs"],
        json!([{"name": "logits", "dtype": "float32", "shape": ["batch", "3"]}])
    );
}

#[tokio::test]
async fn predicts_schemas_are_derived_after_start() {
    let before = new_plugin().capabilities();
    assert_eq!(before.len(), 1);
    assert!(before[0].input_schema["properties"]["inputs"]["properties"].is_null());

    let plugin = started("iris_forest").await;
    let caps = plugin.capabilities();
    assert_eq!(caps[0].id, PREDICT);
    let input = &caps[0].input_schema;
    assert_eq!(input["properties"]["inputs"]["required"], json!(["X"]));
    let validator = jsonschema::validator_for(input).expect("a valid schema");
    // The reference payload, in both forms, is valid.
    let reference = reference("iris_forest");
    assert!(validator.is_valid(&payload(&reference)));
    assert!(validator.is_valid(&json!({"inputs": {"X": [[5.1, 3.5, 1.4, 0.2]]}})));
    // A wrong shape, an integer tensor given strings, a missing input: refused at /inputs/X
    // (or /inputs for the missing one).
    for (bad, at) in [
        (
            json!({"inputs": {"X": {"shape": [1, 5], "data": [1, 2, 3, 4, 5]}}}),
            "/inputs/X",
        ),
        (json!({"inputs": {"X": [[1, 2, 3]]}}), "/inputs/X"),
        (
            json!({"inputs": {"X": {"shape": [1, 4], "data": ["a", 2, 3, 4]}}}),
            "/inputs/X",
        ),
        (
            json!({"inputs": {"X": {"shape": [1, 4], "data": [1, 2, 3, 4], "dtype": "float64"}}}),
            "/inputs/X",
        ),
        (json!({"inputs": {}}), "/inputs"),
    ] {
        let errors: Vec<String> = validator
            .iter_errors(&bad)
            .map(|e| e.instance_path().as_str().to_owned())
            .collect();
        assert!(!errors.is_empty(), "{bad} passed");
        assert!(errors.iter().all(|p| p == at), "{bad}: {errors:?}");
    }
    // Outputs: the model's names and dtypes.
    let output = &caps[0].output_schema["properties"]["outputs"]["properties"];
    assert_eq!(
        output["label"]["properties"]["dtype"],
        json!({"const": "int64"})
    );
    assert_eq!(
        output["probabilities"]["properties"]["shape"]["prefixItems"][1],
        json!({"const": 3})
    );
    let answer = plugin
        .invoke(PREDICT, payload(&reference), ctx())
        .await
        .expect("predict");
    let out = jsonschema::validator_for(&caps[0].output_schema).expect("schema");
    assert!(out.is_valid(&answer), "{answer:#}");
}

/// Every refusal is a 422 naming the field; the plugin answers the next request.
#[tokio::test]
async fn bad_tensors_are_a_422_naming_the_input_and_the_plugin_keeps_serving() {
    let plugin = started("iris_forest").await;
    let cases = [
        (
            json!({"inputs": {"X": {"shape": [1, 5], "data": [1, 2, 3, 4, 5]}}}),
            "`/inputs/X/shape`",
        ),
        (
            json!({"inputs": {"X": {"shape": [2, 4], "data": [1, 2, 3, 4]}}}),
            "`/inputs/X/data`",
        ),
        (
            json!({"inputs": {"X": {"shape": [1, 4], "data": [1, "2", 3, 4]}}}),
            "`/inputs/X/data/1`",
        ),
        (
            json!({"inputs": {"X": {"shape": [1, 4], "data": [1, 2, 3, 4], "dtype": "int64"}}}),
            "`/inputs/X/dtype`",
        ),
        (
            json!({"inputs": {"X": {"shape": [4], "data": [1, 2, 3, 4]}}}),
            "`/inputs/X/shape`",
        ),
        (
            json!({"inputs": {"X": {"data": [1, 2, 3, 4]}}}),
            "`/inputs/X/shape`",
        ),
        (
            json!({"inputs": {"X": [[1, 2, 3, 4], [1, 2, 3]]}}),
            "`/inputs/X/1`",
        ),
        (
            json!({"inputs": {"X": [[1, 2, 3, 4], [1, 2, 3, [4]]]}}),
            "`/inputs/X/1/3`",
        ),
        (
            json!({"inputs": {"X": [[true, 2, 3, 4]]}}),
            "`/inputs/X/0/0`",
        ),
        (json!({"inputs": {"X": "1,2,3,4"}}), "`/inputs/X`"),
        (json!({"inputs": {}}), "`/inputs/X`"),
        (
            json!({"inputs": {"X": [[1, 2, 3, 4]], "Y": [1]}}),
            "`/inputs/Y`",
        ),
        (
            json!({"inputs": {"X": [[1, 2, 3, 4]]}, "outputs": ["score"]}),
            "`/outputs/0`",
        ),
        (json!({"input": {"X": [[1, 2, 3, 4]]}}), "`/input`"),
        (json!([1, 2]), "`/`"),
    ];
    for (bad, named) in cases {
        let err = plugin
            .invoke(PREDICT, bad.clone(), ctx())
            .await
            .expect_err("refused");
        let PluginError::InvalidInput(message) = &err else {
            panic!("{bad}: {err:?}");
        };
        assert!(message.starts_with(named), "{bad}: {message}");
    }
    // An int64 input refuses fractions and out-of-range values (the CNN has none: checked on
    // the parser with a spec of its own).
    let spec = signature::TensorSpec {
        name: "ids".into(),
        dtype: signature::Dtype::I64,
        dims: vec![signature::Dim::Dynamic("N".into())],
    };
    let mut bound = HashMap::new();
    let err = tensor::parse_input(&spec, &json!([1, 2.5]), &mut bound).expect_err("fraction");
    assert!(err.to_string().starts_with("`/inputs/ids/1`"), "{err}");
    let err = tensor::parse_input(&spec, &json!([1e30]), &mut HashMap::new()).expect_err("range");
    assert!(err.to_string().starts_with("`/inputs/ids/0`"), "{err}");
    assert!(tensor::parse_input(&spec, &json!([1, 2.0, -3]), &mut HashMap::new()).is_ok());

    // Still serving, and `outputs` selects.
    let answer = plugin
        .invoke(
            PREDICT,
            json!({"inputs": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "outputs": ["label"]}),
            ctx(),
        )
        .await
        .expect("predict");
    assert_eq!(
        answer["outputs"]["label"],
        json!({"dtype": "int64", "shape": [1], "data": [0]})
    );
    assert!(answer["outputs"].get("probabilities").is_none());
}

#[tokio::test]
async fn a_file_that_is_not_onnx_is_a_clear_start_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("model.onnx");
    std::fs::write(&text, "this is a text file, not a model\n").expect("write");
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(testdata("iris_forest.onnx")).expect("model");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    for path in [&text, &truncated, &empty] {
        let err = start(json!({"model": {"path": path}}))
            .await
            .err()
            .expect("refused");
        let PluginError::Config(message) = &err else {
            panic!("{path:?}: {err:?}");
        };
        assert!(message.contains("is not an ONNX model"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    let err = start(json!({"model": {"path": dir.path().join("missing.onnx")}}))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, PluginError::Config(m) if m.contains("cannot read the model file")),
        "{err:?}"
    );
    for config in [
        json!({}),
        json!({"model": {"paht": "x.onnx"}}),
        json!({"model": {"path": "x.onnx"}, "workers": 0}),
    ] {
        let err = start(config.clone()).await.err().expect("refused");
        assert!(matches!(err, PluginError::Config(_)), "{config}: {err:?}");
    }
}

#[test]
fn relative_paths_resolve_against_the_model_root() {
    let root = std::path::Path::new("/models");
    assert_eq!(
        source::resolve("a/m.onnx".as_ref(), Some(root)),
        PathBuf::from("/models/a/m.onnx")
    );
    assert_eq!(
        source::resolve("/x/m.onnx".as_ref(), Some(root)),
        PathBuf::from("/x/m.onnx")
    );
    assert_eq!(
        source::resolve("m.onnx".as_ref(), None),
        PathBuf::from("m.onnx")
    );
}

/// The pool's behaviour is `bkg_plugin_api::worker_pool`'s to test; here, that the plugin runs
/// on it with the configured workers.
#[tokio::test]
async fn predicts_on_the_configured_workers() {
    let reference = reference("iris_forest");
    let plugin = start(json!({
        "model": {"path": testdata("iris_forest.onnx")},
        "workers": 3,
        "queue_capacity": 3,
    }))
    .await
    .expect("start");
    // Three calls in the queue at once: its capacity, all answered.
    let call = || plugin.invoke(PREDICT, payload(&reference), ctx());
    let (a, b, c) = tokio::join!(call(), call(), call());
    for answer in [a, b, c] {
        assert_matches(&answer.expect("predict"), &reference);
    }
    assert_eq!(plugin.telemetry()["queue_depth"], json!(0));
}

/// The committed schema (read by the operator and `bkg up`) is this type's schema.
#[test]
fn the_committed_config_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or_default();
    assert!(
        on_disk == config_schema(),
        "plugins/brainml/config.schema.json is stale: run `make config-schemas`"
    );
}
