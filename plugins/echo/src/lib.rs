//! The echo plugin: the reference plugin for tests and docs.
//!
//! | capability | does |
//! |---|---|
//! | `echo`   | returns its payload's JSON text unchanged (numbers exactly as written) |
//! | `sleep`  | waits `ms` milliseconds, then answers, so timeouts can be tested |
//! | `fail`   | fails with the requested error kind, so error paths can be tested |
//! | `config` | returns the config the plugin was started with |
//!
//! Config: `startupDelayMs` delays readiness (to exercise probes), `startupError` makes start
//! fail with that message as a config error (exit 78: to exercise how a config the schema
//! accepts but the plugin refuses is handled); anything else is kept and shown by the `config`
//! capability. [`config_schema`] says so as a JSON Schema;
//! `plugins/echo/config.schema.json` is the committed copy the operator and `bkg up` check
//! manifests against (a test holds it to [`EchoConfig`]).

#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

use bkg_plugin_api::{
    CapabilityDescriptor, InvokeContext, Plugin, PluginError, StartContext, async_trait,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Longest sleep the `sleep` capability accepts (ten minutes).
const MAX_SLEEP_MS: u64 = 600_000;

/// Creates the plugin; the runtime calls this once per process.
pub fn new_plugin() -> Box<dyn Plugin> {
    Box::new(EchoPlugin::default())
}

/// The echo plugin's `spec.config`: the keys it reads. Other keys are allowed (no
/// `deny_unknown_fields`): the `config` capability shows them back, which is what tests of
/// config changes look for.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[schemars(title = "Echo plugin config")]
pub struct EchoConfig {
    /// Milliseconds `start` waits before the plugin reports ready (to exercise readiness
    /// probes and slow rollouts).
    #[serde(rename = "startupDelayMs", default)]
    pub startup_delay_ms: Option<u64>,
    /// When set, `start` fails with this message as a config error (the runtime exits 78):
    /// a config that passes the schema and is still refused, for tests of that path.
    #[serde(rename = "startupError", default)]
    pub startup_error: Option<String>,
}

/// The JSON Schema of `spec.config` (draft 2020-12), as `plugins/echo/config.schema.json`
/// holds it.
pub fn config_schema() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<EchoConfig>();
    Value::from(schema)
}

#[derive(Default)]
struct EchoPlugin {
    config: OnceLock<Value>,
}

fn capability(
    id: &str,
    name: &str,
    description: &str,
    input: Value,
    output: Value,
) -> CapabilityDescriptor {
    CapabilityDescriptor {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        input_schema: input,
        output_schema: output,
        ..CapabilityDescriptor::default()
    }
}

#[async_trait]
impl Plugin for EchoPlugin {
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn config_schema(&self) -> Value {
        config_schema()
    }

    fn capabilities(&self) -> Vec<CapabilityDescriptor> {
        vec![
            capability(
                "echo",
                "Echo",
                "Returns the payload unchanged.",
                json!(true),
                json!(true),
            ),
            capability(
                "sleep",
                "Sleep",
                "Waits `ms` milliseconds, then answers with the time slept.",
                json!({
                    "type": "object",
                    "required": ["ms"],
                    "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS}}
                }),
                json!({"type": "object", "properties": {"slept_ms": {"type": "integer"}}}),
            ),
            capability(
                "fail",
                "Fail",
                "Fails on demand with the requested error kind.",
                json!({
                    "type": "object",
                    "properties": {
                        "kind": {"enum": ["failed", "invalid_input", "not_ready", "overloaded"]},
                        "message": {"type": "string"}
                    }
                }),
                json!(false),
            ),
            capability(
                "config",
                "Config",
                "Returns the config the plugin was started with.",
                json!({"type": "object"}),
                json!({"type": "object"}),
            ),
        ]
    }

    async fn start(&self, ctx: StartContext) -> Result<(), PluginError> {
        let config: EchoConfig = serde_json::from_value(ctx.config.clone()).map_err(|e| {
            PluginError::Config(format!("the config does not match its schema: {e}"))
        })?;
        if let Some(message) = config.startup_error {
            return Err(PluginError::Config(message));
        }
        let delay = config.startup_delay_ms.unwrap_or(0);
        if delay > 0 {
            tracing::info!(delay_ms = delay, "simulating a slow start");
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // A second start keeps the first config: the runtime starts a plugin once per process.
        let _ = self.config.set(ctx.config);
        tracing::info!(plugin_id = %ctx.plugin_id, "echo plugin started");
        Ok(())
    }

    async fn invoke(
        &self,
        capability: &str,
        payload: Value,
        ctx: InvokeContext,
    ) -> Result<Value, PluginError> {
        match capability {
            "echo" => {
                tracing::debug!(request_id = %ctx.request_id, "echo");
                Ok(payload)
            }
            "sleep" => {
                // `1500.0` is an integer too (JSON Schema's rule, which the gateway applies).
                let ms = payload
                    .get("ms")
                    .and_then(bkg_plugin_api::as_u64)
                    .filter(|ms| *ms <= MAX_SLEEP_MS)
                    .ok_or_else(|| {
                        PluginError::InvalidInput(format!(
                            "`ms` must be an integer between 0 and {MAX_SLEEP_MS}"
                        ))
                    })?;
                tracing::info!(request_id = %ctx.request_id, ms, "sleeping");
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!({"slept_ms": ms}))
            }
            "fail" => {
                let message = payload
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("failure requested")
                    .to_owned();
                tracing::warn!(request_id = %ctx.request_id, %message, "failing on request");
                Err(match payload.get("kind").and_then(Value::as_str) {
                    Some("invalid_input") => PluginError::InvalidInput(message),
                    Some("not_ready") => PluginError::NotReady(message),
                    Some("overloaded") => PluginError::Overloaded {
                        retry_after_secs: 1,
                    },
                    _ => PluginError::failed(message),
                })
            }
            "config" => Ok(self.config.get().cloned().unwrap_or_else(|| json!({}))),
            other => Err(PluginError::UnknownCapability(other.to_owned())),
        }
    }

    /// `echo` answers the caller's JSON text itself: parsed into a [`Value`], a 60-digit
    /// integer would come back as `1.2345678901234567e+59` and `-0` as `-0.0`.
    async fn invoke_raw(
        &self,
        capability: &str,
        payload: &RawValue,
        ctx: InvokeContext,
    ) -> Result<Box<RawValue>, PluginError> {
        if capability != "echo" {
            let output = self
                .invoke(capability, bkg_plugin_api::parse_payload(payload)?, ctx)
                .await?;
            return serde_json::value::to_raw_value(&output)
                .map_err(|e| PluginError::failed(e.to_string()));
        }
        tracing::debug!(request_id = %ctx.request_id, "echo");
        Ok(payload.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ctx() -> InvokeContext {
        InvokeContext {
            request_id: "test".into(),
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    async fn started(config: Value) -> Box<dyn Plugin> {
        let plugin = new_plugin();
        plugin
            .start(StartContext {
                plugin_id: "echo".into(),
                config,
            })
            .await
            .expect("start");
        plugin
    }

    #[tokio::test]
    async fn echo_returns_the_payload_and_config_the_config() {
        let plugin = started(json!({"greeting": "hi"})).await;
        let payload = json!({"x": 1, "nested": [true, null]});
        assert_eq!(
            plugin.invoke("echo", payload.clone(), ctx()).await.ok(),
            Some(payload)
        );
        assert_eq!(
            plugin.invoke("config", json!({}), ctx()).await.ok(),
            Some(json!({"greeting": "hi"}))
        );
    }

    #[tokio::test]
    async fn echo_returns_numbers_exactly_as_written() {
        let plugin = started(json!({})).await;
        let text = r#"{"big": 123456789012345678901234567890123456789012345678901234567890, "zero": -0, "f": 1.50, "e": 1E400}"#;
        let payload: &RawValue = serde_json::from_str(text).expect("json");
        let out = plugin
            .invoke_raw("echo", payload, ctx())
            .await
            .expect("echo");
        assert_eq!(out.get(), text);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_takes_integers_written_with_a_zero_fraction() {
        let plugin = started(json!({})).await;
        for ms in ["1.0", "1e1", "10"] {
            let text = format!(r#"{{"ms": {ms}}}"#);
            let payload: &RawValue = serde_json::from_str(&text).expect("json");
            let out = plugin.invoke_raw("sleep", payload, ctx()).await;
            assert!(out.is_ok(), "{ms}: {out:?}");
        }
        let payload: &RawValue = serde_json::from_str(r#"{"ms": 1.5}"#).expect("json");
        let err = plugin.invoke_raw("sleep", payload, ctx()).await;
        assert!(matches!(err, Err(PluginError::InvalidInput(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_the_requested_time() {
        let plugin = started(json!({})).await;
        let before = tokio::time::Instant::now();
        let out = plugin
            .invoke("sleep", json!({"ms": 1500}), ctx())
            .await
            .ok();
        assert_eq!(out, Some(json!({"slept_ms": 1500})));
        assert!(before.elapsed() >= Duration::from_millis(1500));
        let err = plugin.invoke("sleep", json!({"ms": "long"}), ctx()).await;
        assert!(matches!(err, Err(PluginError::InvalidInput(_))));
    }

    #[tokio::test]
    async fn fail_yields_each_requested_kind() {
        let plugin = started(json!({})).await;
        for (kind, category) in [
            ("failed", "failed"),
            ("invalid_input", "invalid_input"),
            ("not_ready", "not_ready"),
            ("overloaded", "overloaded"),
        ] {
            let err = plugin
                .invoke("fail", json!({"kind": kind}), ctx())
                .await
                .expect_err("must fail");
            assert_eq!(err.category(), category);
        }
        let err = plugin
            .invoke("nope", json!({}), ctx())
            .await
            .expect_err("unknown");
        assert!(matches!(err, PluginError::UnknownCapability(c) if c == "nope"));
    }

    #[tokio::test]
    async fn a_bad_startup_delay_is_a_config_error() {
        let plugin = new_plugin();
        let err = plugin
            .start(StartContext {
                plugin_id: "echo".into(),
                config: json!({"startupDelayMs": -1}),
            })
            .await
            .expect_err("bad config");
        assert!(matches!(err, PluginError::Config(_)));
        let err = plugin
            .start(StartContext {
                plugin_id: "echo".into(),
                config: json!({"startupError": "refused on purpose"}),
            })
            .await
            .expect_err("refused");
        assert!(matches!(err, PluginError::Config(m) if m == "refused on purpose"));
    }

    #[test]
    fn the_config_schema_bounds_the_delay_and_allows_other_keys() {
        let schema = config_schema();
        let delay = &schema["properties"]["startupDelayMs"];
        assert_eq!(delay["minimum"], json!(0), "{schema}");
        assert!(schema.get("additionalProperties").is_none(), "{schema}");
    }

    /// The committed schema (read by the operator and `bkg up`) is this type's schema.
    #[test]
    fn the_committed_config_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
                .unwrap_or_default();
        assert!(
            on_disk == config_schema(),
            "plugins/echo/config.schema.json is stale: run `make config-schemas`"
        );
    }
}
