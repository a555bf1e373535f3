//! The environment of a plugin-runtime child: what running needs, and nothing else.
//!
//! A child starts from an empty environment (`env_clear`). It then gets, in this order:
//! 1. these variables of `bkg up`'s own environment, when set:
//!    - the process basics: `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `TMPDIR`, `TZ`, `LANG`,
//!      `LANGUAGE` and every `LC_*`;
//!    - Rust diagnostics: `RUST_LOG`, `RUST_BACKTRACE`, `RUST_LIB_BACKTRACE`;
//!    - tracing export: every `OTEL_*` except `OTEL_SERVICE_NAME` (the host's service name is
//!      not the runtime's);
//!    - model caches and compute: `BKG_MODEL_ROOT`, `HF_HOME`, `HF_HUB_CACHE`,
//!      `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_HUB_DISABLE_TELEMETRY`,
//!      `HUGGINGFACE_HUB_CACHE`, `XDG_CACHE_HOME`, `RAYON_NUM_THREADS`, `OMP_NUM_THREADS`,
//!      `CUDA_VISIBLE_DEVICES`, `CUDA_CACHE_PATH`, `LD_LIBRARY_PATH`;
//! 2. the manifest's `spec.env`: literal values, and `valueFrom` references resolved from
//!    `bkg up`'s own environment ([`resolve`]: a secretKeyRef `{name: hf, key: token}` is the
//!    variable `BKG_SECRET_HF_TOKEN`, a configMapKeyRef the same with `BKG_CONFIGMAP_`);
//! 3. the supervisor's settings for the runtime (`BKG_PLUGIN_CONFIG`, `BKG_MEMORY_LIMIT_BYTES`;
//!    the rest are command-line arguments), which a manifest cannot replace.
//!
//! Everything else stays with `bkg up`: `BKG_API_KEY`, other `BKG_*` settings of the host (a
//! host's `BKG_MAX_BODY_BYTES` is not the runtime's), cloud credentials, tokens (`HF_TOKEN`
//! too: a plugin that needs one gets it through its manifest's `spec.env`, as a `valueFrom`
//! reference, so the token is not written in the manifest).

use std::ffi::{OsStr, OsString};

use bkg_core::crd::{EnvVar, KeySource};
use bkg_core::wire::FieldError;

/// Variables passed through by exact name.
pub const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "BKG_MODEL_ROOT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_HUB_DISABLE_TELEMETRY",
    "HUGGINGFACE_HUB_CACHE",
    "XDG_CACHE_HOME",
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_CACHE_PATH",
    "LD_LIBRARY_PATH",
];

/// Variables passed through by prefix.
pub const INHERITED_PREFIXES: &[&str] = &["LC_", "OTEL_"];

/// Variables never passed through even when a prefix matches.
const WITHHELD: &[&str] = &["OTEL_SERVICE_NAME"];

/// True when a child gets the host's value of `name`.
pub fn is_inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    if WITHHELD.contains(&name) {
        return false;
    }
    INHERITED.contains(&name) || INHERITED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The host variables (from `vars`, usually `std::env::vars_os()`) a child gets.
pub fn inherited(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> impl Iterator<Item = (OsString, OsString)> {
    vars.into_iter().filter(|(name, _)| is_inherited(name))
}

/// The values of `spec.env` for a local child, in order. A `valueFrom` reference is read with
/// `lookup` (`bkg up`'s environment) from the variable [`KeySelector::local_variable`] names;
/// a missing optional one leaves the variable unset, as the kubelet does; a missing required one
/// is an error naming the field and the variable to set (never a value).
///
/// [`KeySelector::local_variable`]: bkg_core::crd::KeySelector::local_variable
pub fn resolve(
    env: &[EnvVar],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, Vec<FieldError>> {
    let mut values = Vec::with_capacity(env.len());
    let mut errors = Vec::new();
    for (i, var) in env.iter().enumerate() {
        let Some(from) = &var.value_from else {
            values.push((var.name.clone(), var.value.clone().unwrap_or_default()));
            continue;
        };
        let Some((source, key)) = from.reference() else {
            errors.push(FieldError {
                field: format!("spec.env[{i}].valueFrom"),
                message: "set exactly one of secretKeyRef or configMapKeyRef".into(),
            });
            continue;
        };
        let local = key.local_variable(source);
        match lookup(&local) {
            Some(value) => values.push((var.name.clone(), value)),
            None if key.optional == Some(true) => {}
            None => {
                let (field, what) = match source {
                    KeySource::Secret => ("secretKeyRef", "Secret"),
                    KeySource::ConfigMap => ("configMapKeyRef", "ConfigMap"),
                };
                errors.push(FieldError {
                    field: format!("spec.env[{i}].valueFrom.{field}"),
                    message: format!(
                        "{what} {:?} key {:?} is not available: bkg up reads it from its environment variable {local}, which is not set",
                        key.name, key.key
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use bkg_core::crd::{EnvVarSource, KeySelector};

    use super::*;

    fn reference(source: KeySource, name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        let key = Some(KeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        });
        match source {
            KeySource::Secret => EnvVarSource {
                secret_key_ref: key,
                config_map_key_ref: None,
            },
            KeySource::ConfigMap => EnvVarSource {
                secret_key_ref: None,
                config_map_key_ref: key,
            },
        }
    }

    fn var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(str::to_owned),
            value_from: from,
        }
    }

    #[test]
    fn references_are_read_from_the_hosts_environment() {
        let host = |name: &str| match name {
            "BKG_SECRET_HF_TOKEN" => Some("hf_secret".to_owned()),
            "BKG_CONFIGMAP_SETTINGS_MODE" => Some("fast".to_owned()),
            _ => None,
        };
        let env = [
            var("GREETING", Some("hi"), None),
            var("EMPTY", None, None),
            var(
                "HF_TOKEN",
                None,
                Some(reference(KeySource::Secret, "hf", "token", None)),
            ),
            var(
                "MODE",
                None,
                Some(reference(KeySource::ConfigMap, "settings", "mode", None)),
            ),
            var(
                "EXTRA",
                None,
                Some(reference(KeySource::Secret, "extra", "x", Some(true))),
            ),
        ];
        let values = resolve(&env, host).expect("resolved");
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("GREETING", "hi"),
                ("EMPTY", ""),
                ("HF_TOKEN", "hf_secret"),
                ("MODE", "fast")
            ],
            "an optional reference that is missing leaves its variable unset"
        );
    }

    #[test]
    fn a_missing_required_reference_names_the_field_and_the_variable() {
        let env = [
            var("A", Some("1"), None),
            var(
                "HF_TOKEN",
                None,
                Some(reference(KeySource::Secret, "hf", "token", Some(false))),
            ),
            var(
                "MODE",
                None,
                Some(reference(KeySource::ConfigMap, "settings", "mode", None)),
            ),
        ];
        let errors = resolve(&env, |_| None).expect_err("missing");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.env[1].valueFrom.secretKeyRef",
                "spec.env[2].valueFrom.configMapKeyRef"
            ]
        );
        assert!(
            errors[0].message.contains("BKG_SECRET_HF_TOKEN"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[1].message.contains("BKG_CONFIGMAP_SETTINGS_MODE"),
            "{}",
            errors[1].message
        );
    }

    fn names(vars: &[(&str, &str)]) -> Vec<String> {
        inherited(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .map(|(k, _)| k.into_string().expect("utf-8"))
        .collect()
    }

    #[test]
    fn secrets_and_host_settings_stay_with_the_host() {
        let host = [
            ("PATH", "/usr/bin"),
            ("BKG_API_KEY", "bkg_secret"),
            ("BKG_MAX_BODY_BYTES", "1"),
            ("BKG_KEYS_FILE", "/keys.yaml"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("HF_TOKEN", "hf_x"),
            ("GITHUB_TOKEN", "x"),
            ("LC_ALL", "C.UTF-8"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "bkg-gateway"),
            ("HF_HOME", "/models"),
            ("BKG_MODEL_ROOT", "/models"),
            ("RUST_LOG", "info"),
        ];
        assert_eq!(
            names(&host),
            [
                "PATH",
                "LC_ALL",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "HF_HOME",
                "BKG_MODEL_ROOT",
                "RUST_LOG"
            ]
        );
    }
}
