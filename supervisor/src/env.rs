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
//! 2. the manifest's `spec.env`;
//! 3. the supervisor's settings for the runtime (`BKG_PLUGIN_CONFIG`, `BKG_MEMORY_LIMIT_BYTES`;
//!    the rest are command-line arguments), which a manifest cannot replace.
//!
//! Everything else stays with `bkg up`: `BKG_API_KEY`, other `BKG_*` settings of the host (a
//! host's `BKG_MAX_BODY_BYTES` is not the runtime's), cloud credentials, tokens (`HF_TOKEN`
//! too: a plugin that needs one gets it through its manifest's `spec.env`).

use std::ffi::{OsStr, OsString};

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

#[cfg(test)]
mod tests {
    use super::*;

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
