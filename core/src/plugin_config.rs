//! Checking a manifest's `spec.config` against the JSON Schema its implementation publishes.
//!
//! ```text
//!  plugins/<impl>/src: config type ──schemars──▶ Plugin::config_schema()
//!                                                    │ make config-schemas (drift test in the plugin)
//!                                                    ▼
//!                               plugins/<impl>/config.schema.json ──include_str!──▶ SCHEMAS (here)
//!                                                                        │
//!            bkg up · bkg render (manifest::from_value), bkg operator (validate) ◀─┘
//! ```
//!
//! Why a committed file and not a dependency on the plugin crates: the schema comes from the
//! plugin's config type, but the operator, the supervisor and `bkg render` must not link Candle
//! (`scripts/test.d/15-crate-graph.sh`), and a plugin crate does not depend on this one. A JSON
//! file read at compile time keeps the graph as it is and costs nothing at run time; each plugin
//! crate has a test that fails when its file no longer equals what its type generates.
//!
//! An implementation this table does not know (a runtime image of one's own, `spec.image`) is
//! not checked here: its runtime checks its config when it starts.

use std::sync::OnceLock;

use serde_json::Value;

use crate::wire::FieldError;

/// Implementation name → its config schema, as committed next to the plugin's code.
const SCHEMAS: &[(&str, &str)] = &[
    (
        "echo",
        include_str!("../../plugins/echo/config.schema.json"),
    ),
    (
        "candle",
        include_str!("../../plugins/candle/config.schema.json"),
    ),
    (
        "rustyface",
        include_str!("../../plugins/rustyface/config.schema.json"),
    ),
    (
        "brainml",
        include_str!("../../plugins/brainml/config.schema.json"),
    ),
];

/// The field path every error of this check starts with.
const ROOT: &str = "spec.config";

struct Compiled {
    schema: Value,
    validator: jsonschema::Validator,
}

fn compiled() -> &'static [(&'static str, Compiled)] {
    static COMPILED: OnceLock<Vec<(&'static str, Compiled)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        SCHEMAS
            .iter()
            .filter_map(|(name, text)| {
                // A committed schema that does not parse or compile fails this crate's tests;
                // at run time the implementation is then treated as unknown.
                let schema: Value = serde_json::from_str(text).ok()?;
                let validator = jsonschema::validator_for(&schema).ok()?;
                Some((*name, Compiled { schema, validator }))
            })
            .collect()
    })
}

/// Implementations whose config is checked here.
pub fn implementations() -> impl Iterator<Item = &'static str> {
    SCHEMAS.iter().map(|(name, _)| *name)
}

/// The config schema `implementation` publishes, if it is one this build knows.
pub fn schema(implementation: &str) -> Option<&'static Value> {
    compiled()
        .iter()
        .find(|(name, _)| *name == implementation)
        .map(|(_, c)| &c.schema)
}

/// Checks `config` (the manifest's `spec.config`; absent counts as `{}`, as the runtime reads
/// it) against the implementation's schema. Every error names its field from `spec.config`.
pub fn validate(implementation: &str, config: Option<&Value>) -> Vec<FieldError> {
    let Some((_, compiled)) = compiled().iter().find(|(name, _)| *name == implementation) else {
        return Vec::new();
    };
    let empty = Value::Object(Default::default());
    let config = config.unwrap_or(&empty);
    let mut errors = Vec::new();
    for e in compiled.validator.iter_errors(config) {
        let field = path(e.instance_path().as_str());
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let declared = config_properties(&compiled.schema, e.instance_path().as_str());
                for key in unexpected {
                    errors.push(FieldError {
                        field: format!("{field}.{key}"),
                        message: format!(
                            "unknown field {key:?}{}",
                            crate::manifest::suggestion(key, declared)
                        ),
                    });
                }
            }
            _ => {
                let schema_path = e.schema_path().as_str();
                let message = match conditional_rule(&compiled.schema, schema_path) {
                    Some(rule) => format!("{rule} (found {})", e.instance()),
                    None => e.to_string(),
                };
                errors.push(FieldError { field, message });
            }
        }
    }
    errors
}

/// `/model/path` → `spec.config.model.path`.
fn path(pointer: &str) -> String {
    let mut out = ROOT.to_owned();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            out.push('.');
            out.push_str(&segment);
        }
    }
    out
}

/// The declared properties of the object at `pointer` of a config, for "did you mean". Only
/// the top level is looked up (nested objects come through `$ref`s); deeper keys get no hint.
fn config_properties<'a>(
    schema: &'a Value,
    pointer: &str,
) -> Option<&'a serde_json::Map<String, Value>> {
    if pointer.is_empty() {
        schema.get("properties").and_then(Value::as_object)
    } else {
        None
    }
}

/// A failure inside an `if`/`then` rule (say, `dtype: f16` needs `device: cuda`) is explained by
/// the `description` of its `then` schema: the raw message ("\"cuda\" was expected") does not
/// say why.
fn conditional_rule<'a>(schema: &'a Value, schema_path: &str) -> Option<&'a str> {
    let end = schema_path.find("/then/").map(|i| i + "/then".len())?;
    schema
        .pointer(&schema_path[..end])?
        .get("description")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(implementation: &str, config: Value) -> Vec<(String, String)> {
        validate(implementation, Some(&config))
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn every_committed_schema_parses_and_compiles() {
        assert_eq!(compiled().len(), SCHEMAS.len());
        for name in implementations() {
            assert!(schema(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_wrong_enum_value_is_named_with_its_choices() {
        assert_eq!(
            fields("candle", json!({"dtype": "f64"})),
            [(
                "spec.config.dtype".to_owned(),
                r#""f64" is not one of "f32", "bf16" or "f16""#.to_owned()
            )]
        );
    }

    #[test]
    fn f16_needs_cuda() {
        assert!(fields("candle", json!({"dtype": "f16", "device": "cuda"})).is_empty());
        let errors = fields("candle", json!({"dtype": "f16", "device": "cpu"}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "spec.config.device");
        assert!(
            errors[0].1.starts_with("dtype f16 needs a CUDA device")
                && errors[0].1.contains("\"cpu\""),
            "{}",
            errors[0].1
        );
        // Without a device the default (auto) may be a CPU: refused at the config itself.
        let errors = fields("candle", json!({"dtype": "f16"}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "spec.config");
        assert!(errors[0].1.starts_with("dtype f16 needs a CUDA device"));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        assert_eq!(
            fields("candle", json!({"max_batchsize": 4})),
            [(
                "spec.config.max_batchsize".to_owned(),
                r#"unknown field "max_batchsize" (did you mean "max_batch_size"?)"#.to_owned()
            )]
        );
    }

    #[test]
    fn nested_and_bounded_fields_are_located() {
        let errors = fields("candle", json!({"max_batch_size": 0, "model": {"path": 3}}));
        let names: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert!(names.contains(&"spec.config.max_batch_size"), "{errors:?}");
        assert!(
            names.iter().any(|f| f.starts_with("spec.config.model")),
            "{errors:?}"
        );
    }

    #[test]
    fn the_shipped_samples_configs_pass() {
        assert!(fields("candle", json!({"model": {"model_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main"}, "device": "cuda", "dtype": "f16", "max_batch_size": 64})).is_empty());
        assert!(fields("candle", json!({"model": {"path": "minilm"}, "dtype": "bf16", "kernels": "candle", "pooling": "last_token"})).is_empty());
        assert!(validate("candle", None).is_empty());
        // echo keeps any key; only its delay is typed.
        assert!(fields("echo", json!({"greeting": "hi", "startupDelayMs": 10})).is_empty());
        assert_eq!(
            fields("echo", json!({"startupDelayMs": -1}))[0].0,
            "spec.config.startupDelayMs"
        );
        // rustyface: its samples pass, with a worker count or the default (null); a minimum face
        // smaller than rustface allows, an unknown key, a pyramid factor of 1 and zero workers
        // are refused before any process starts.
        assert!(fields("rustyface", json!({"min_face_size": 40, "score_threshold": 2.0, "max_pixels": 12000000, "queue_capacity": 16})).is_empty());
        assert!(fields("rustyface", json!({"workers": 4})).is_empty());
        assert!(fields("rustyface", json!({"workers": null})).is_empty());
        assert_eq!(
            fields("rustyface", json!({"workers": 0}))[0].0,
            "spec.config.workers"
        );
        assert_eq!(
            fields("rustyface", json!({"min_face_size": 10}))[0].0,
            "spec.config.min_face_size"
        );
        assert!(!fields("rustyface", json!({"min_face_sise": 40})).is_empty());
        assert!(!fields("rustyface", json!({"pyramid_scale_factor": 1.0})).is_empty());
        // brainml: its samples pass (a path, or a Hub file); no model, a misspelt source key
        // and zero workers are refused.
        assert!(fields("brainml", json!({"model": {"path": "plugins/brainml/testdata/iris_forest.onnx"}, "queue_capacity": 64, "workers": 2})).is_empty());
        assert!(
            fields(
                "brainml",
                json!({"model": {"model_id": "org/model", "file": "model.onnx"}})
            )
            .is_empty()
        );
        assert!(!validate("brainml", None).is_empty());
        assert!(!fields("brainml", json!({"model": {"paht": "m.onnx"}})).is_empty());
        assert_eq!(
            fields(
                "brainml",
                json!({"model": {"path": "m.onnx"}, "workers": 0})
            )[0]
            .0,
            "spec.config.workers"
        );
    }

    #[test]
    fn unknown_implementations_and_non_objects() {
        assert!(fields("custom", json!({"anything": 1})).is_empty());
        assert_eq!(fields("candle", json!(3))[0].0, "spec.config");
    }
}
