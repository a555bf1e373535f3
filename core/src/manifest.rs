//! Reading Plugin manifests from YAML the way the API server would accept them.
//!
//! Local mode has no API server, so the same checks run here: the document is validated against the
//! generated CRD schema (types, patterns, bounds), unknown fields are refused as `kubectl apply`'s
//! strict field validation does, `spec.config` is checked against the schema its implementation
//! publishes ([`crate::plugin_config`]), and every error names the field it is about.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::{EnvVar, PLUGIN_ID_MAX_LEN, Plugin};
use crate::wire::FieldError;

/// API version every Plugin manifest carries.
pub const API_VERSION: &str = "bkg.rs/v1alpha1";

/// Why a manifest was refused, with every offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid Plugin manifest{}: {}", name.as_ref().map(|n| format!(" {n:?}")).unwrap_or_default(), summary(errors))]
pub struct ManifestError {
    /// `metadata.name` when the document had a readable one.
    pub name: Option<String>,
    pub errors: Vec<FieldError>,
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ManifestError {
    fn single(name: Option<String>, field: &str, message: impl Into<String>) -> Self {
        Self {
            name,
            errors: vec![FieldError {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// Parses every YAML document in `text` (separated by `---`) as a Plugin. Empty documents are
/// skipped. One bad document fails with its own error; the others are still returned.
pub fn parse_documents(text: &str) -> Vec<Result<Plugin, ManifestError>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(from_value(value)),
            Err(e) => {
                // The YAML stream cannot be resynchronised after a syntax error.
                out.push(Err(ManifestError::single(None, "(yaml)", e.to_string())));
                break;
            }
        }
    }
    out
}

/// Validates one manifest document and turns it into a Plugin.
pub fn from_value(value: Value) -> Result<Plugin, ManifestError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut errors = Vec::new();
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => errors.push(FieldError {
            field: "apiVersion".into(),
            message: format!("must be {API_VERSION:?}, found {other:?}"),
        }),
    }
    match value.get("kind").and_then(Value::as_str) {
        Some("Plugin") => {}
        other => errors.push(FieldError {
            field: "kind".into(),
            message: format!("must be \"Plugin\", found {other:?}"),
        }),
    }
    match name.as_deref() {
        None => errors.push(FieldError {
            field: "metadata.name".into(),
            message: "required (it is the plugin id)".into(),
        }),
        Some(id) => {
            if let Err(message) = validate_id(id) {
                errors.push(FieldError {
                    field: "metadata.name".into(),
                    message,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ManifestError { name, errors });
    }

    let schema = crd_schema();
    unknown_fields(&value, schema, "", &mut errors);
    if let Some(validator) = validator() {
        for e in validator.iter_errors(&value) {
            errors.push(FieldError {
                field: pointer_to_path(e.instance_path().as_str()),
                message: e.to_string(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ManifestError { name, errors });
    }
    let plugin = serde_json::from_value::<Plugin>(value)
        .map_err(|e| ManifestError::single(name.clone(), "(document)", e.to_string()))?;
    let mut errors: Vec<FieldError> = plugin
        .spec
        .cross_field_errors()
        .into_iter()
        .map(|(field, message)| FieldError { field, message })
        .collect();
    errors.extend(validate_env(&plugin.spec.env));
    errors.extend(crate::plugin_config::validate(
        &plugin.spec.implementation,
        plugin.spec.config.as_ref(),
    ));
    if !errors.is_empty() {
        return Err(ManifestError { name, errors });
    }
    Ok(plugin)
}

/// The CRD's CEL rules on `spec.env`, which the API server enforces and a JSON Schema validator
/// does not: `value` or `valueFrom`, not both; a `valueFrom` names exactly one source.
pub fn validate_env(env: &[EnvVar]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, var) in env.iter().enumerate() {
        if var.value.is_some() && var.value_from.is_some() {
            errors.push(FieldError {
                field: format!("spec.env[{i}]"),
                message: "set value or valueFrom, not both".into(),
            });
        }
        if var
            .value_from
            .as_ref()
            .is_some_and(|f| f.reference().is_none())
        {
            errors.push(FieldError {
                field: format!("spec.env[{i}].valueFrom"),
                message: "set exactly one of secretKeyRef or configMapKeyRef".into(),
            });
        }
    }
    errors
}

/// Checks a plugin id (a DNS-1035 label), the same rule the CRD's CEL validation enforces.
pub fn validate_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts = id.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let ends = id.bytes().last().is_some_and(|b| b != b'-');
    if id.len() <= PLUGIN_ID_MAX_LEN && ok_chars && starts && ends {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid plugin id: use lower-case letters, digits and '-', start with a letter, end with a letter or digit, at most {PLUGIN_ID_MAX_LEN} characters"
        ))
    }
}

/// The `openAPIV3Schema` of the generated CRD.
pub fn crd_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = Plugin::crd();
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema).unwrap_or(Value::Null)
    })
}

fn validator() -> Option<&'static jsonschema::Validator> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| jsonschema::draft4::new(crd_schema()).ok())
        .as_ref()
}

/// Reports fields the schema does not declare, as the API server's strict field validation does.
fn unknown_fields(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    // Checked above; the API server owns the schema of these.
                    continue;
                }
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    unknown_fields(child, child_schema, &child_path, errors);
                } else if let Some(child_schema) = additional {
                    unknown_fields(child, child_schema, &child_path, errors);
                } else if properties.is_some() {
                    errors.push(FieldError {
                        field: child_path,
                        message: format!("unknown field {key:?}{}", suggestion(key, properties)),
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item, item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// "did you mean" for a misspelt field: the declared field with the smallest edit distance.
pub(crate) fn suggestion(key: &str, properties: Option<&serde_json::Map<String, Value>>) -> String {
    let best = properties
        .into_iter()
        .flat_map(|p| p.keys())
        .map(|k| (edit_distance(key, k), k))
        .min();
    match best {
        Some((d, k)) if d <= 2 || d * 3 <= key.len() => format!(" (did you mean {k:?}?)"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `/spec/capabilities/0/id` → `spec.capabilities[0].id`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    if out.is_empty() { "(root)".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = r#"
apiVersion: bkg.rs/v1alpha1
kind: Plugin
metadata:
  name: echo
spec:
  implementation: echo
  capabilities:
    - id: echo
      inputSchema: {type: object}
  resources:
    memory: 256Mi
    timeoutSeconds: 5
"#;

    fn errors_of(text: &str) -> Vec<FieldError> {
        match parse_documents(text).remove(0) {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => e.errors,
        }
    }

    #[test]
    fn a_valid_manifest_parses_with_defaults() {
        let plugin = parse_documents(ECHO).remove(0).expect("valid");
        assert_eq!(plugin.id(), "echo");
        assert!(plugin.spec.enabled);
        assert_eq!(plugin.spec.fixed_replicas(), 1);
        assert_eq!(plugin.spec.resources.timeout_seconds, 5);
        assert_eq!(plugin.spec.resources.max_concurrency, 64);
        assert_eq!(
            plugin
                .capability("echo")
                .and_then(|c| c.input_schema.clone()),
            Some(serde_json::json!({"type": "object"}))
        );
    }

    #[test]
    fn a_misspelt_field_is_named_with_a_suggestion() {
        let errors = errors_of(&ECHO.replace("capabilities:", "capabilites:"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.capabilites");
        assert!(
            errors[0].message.contains("did you mean \"capabilities\"?"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn unknown_fields_inside_lists_are_located() {
        let errors = errors_of(&ECHO.replace("inputSchema:", "inputSchem:"));
        assert_eq!(errors[0].field, "spec.capabilities[0].inputSchem");
    }

    #[test]
    fn free_form_config_and_schemas_accept_anything() {
        let text = format!("{ECHO}  config:\n    anything: [1, {{deep: true}}]\n");
        let plugin = parse_documents(&text).remove(0).expect("valid");
        assert_eq!(
            plugin.spec.config,
            Some(serde_json::json!({"anything": [1, {"deep": true}]}))
        );
    }

    #[test]
    fn the_config_is_checked_against_its_implementations_schema() {
        let candle = ECHO
            .replace("implementation: echo", "implementation: candle")
            .replace(
                "  capabilities:",
                "  config: {dtype: f64, device: cpu}\n  capabilities:",
            );
        let errors = errors_of(&candle);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.config.dtype");
        assert_eq!(
            errors[0].message,
            r#""f64" is not one of "f32", "bf16" or "f16""#
        );
        let fine = candle.replace("dtype: f64", "dtype: bf16");
        assert!(parse_documents(&fine).remove(0).is_ok());
    }

    #[test]
    fn env_takes_a_value_or_one_reference() {
        let with_env =
            |env: &str| ECHO.replace("  capabilities:", &format!("  env: {env}\n  capabilities:"));
        let plugin = parse_documents(&with_env(
            "[{name: A, value: x}, {name: B}, {name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}, {name: C, valueFrom: {configMapKeyRef: {name: settings, key: c.txt, optional: true}}}]",
        ))
        .remove(0)
        .expect("valid");
        let env = &plugin.spec.env;
        assert_eq!(env[0].value.as_deref(), Some("x"));
        assert_eq!(env[1].value, None);
        let (source, key) = env[2]
            .value_from
            .as_ref()
            .and_then(|f| f.reference())
            .expect("a reference");
        assert_eq!(
            (source, key.name.as_str(), key.key.as_str(), key.optional),
            (crate::crd::KeySource::Secret, "hf", "token", None)
        );
        let errors = errors_of(&with_env(
            "[{name: A, value: x, valueFrom: {secretKeyRef: {name: hf, key: token}}}, {name: B, valueFrom: {}}]",
        ));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.env[0]", "spec.env[1].valueFrom"],
            "{errors:?}"
        );
        let errors = errors_of(&with_env(
            "[{name: A, valueFrom: {secretKeyRef: {name: hf}}}]",
        ));
        assert_eq!(
            errors[0].field, "spec.env[0].valueFrom.secretKeyRef",
            "{errors:?}"
        );
        assert!(errors[0].message.contains("key"), "{errors:?}");
        let errors = errors_of(&with_env("[{name: A, valueFrom: {secretRef: {name: hf}}}]"));
        assert_eq!(
            errors[0].field, "spec.env[0].valueFrom.secretRef",
            "{errors:?}"
        );
    }

    #[test]
    fn bounds_and_types_come_from_the_crd_schema() {
        let errors = errors_of(&ECHO.replace("timeoutSeconds: 5", "timeoutSeconds: 0"));
        assert_eq!(errors[0].field, "spec.resources.timeoutSeconds");
        let errors = errors_of(&ECHO.replace("timeoutSeconds: 5", "timeoutSeconds: soon"));
        assert_eq!(errors[0].field, "spec.resources.timeoutSeconds");
        let errors = errors_of(&ECHO.replace("  implementation: echo\n", ""));
        assert!(
            errors.iter().any(|e| e.message.contains("implementation")),
            "{errors:?}"
        );
    }

    #[test]
    fn ids_must_be_dns_labels() {
        let errors = errors_of(&ECHO.replace("name: echo", "name: Echo_1"));
        assert_eq!(errors[0].field, "metadata.name");
        assert!(validate_id("echo-2").is_ok());
        assert!(validate_id("2echo").is_err());
        assert!(validate_id("echo-").is_err());
        assert!(validate_id(&"a".repeat(64)).is_err());
    }

    #[test]
    fn wrong_kind_and_yaml_errors_are_reported() {
        let errors = errors_of(&ECHO.replace("kind: Plugin", "kind: Deployment"));
        assert_eq!(errors[0].field, "kind");
        let errors = errors_of("apiVersion: [unclosed");
        assert_eq!(errors[0].field, "(yaml)");
    }

    #[test]
    fn several_documents_are_read_independently() {
        let text = format!("{ECHO}---\n{}", ECHO.replace("name: echo", "name: bad_id"));
        let docs = parse_documents(&text);
        assert_eq!(docs.len(), 2);
        assert!(docs[0].is_ok());
        assert!(docs[1].is_err());
    }
}
