//! Types that cross a process boundary: the gateway's REST API and the plugin-runtime protocol.
//!
//! Field names follow the seed design (snake_case: `cpu_percent`, `memory_mb`, …) so the admin UI
//! and scripts see one vocabulary on every endpoint.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crd::{CapabilitySpec, Cost, Phase, Plugin};

/// Version string of the plugin-runtime HTTP protocol (docs/PLUGIN-PROTOCOL.md).
pub const PROTOCOL_VERSION: &str = "bkg.plugin/v1";

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One capability as the REST API and the runtime protocol show it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capability {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "any_schema")]
    pub input_schema: Value,
    #[serde(default = "any_schema")]
    pub output_schema: Value,
    /// Needs the `admin` or `manage:<plugin>` scope; the invoke scopes do not grant it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub management: bool,
    /// What one call costs against the rate limit; absent, one unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

fn any_schema() -> Value {
    Value::Bool(true)
}

impl From<&CapabilitySpec> for Capability {
    fn from(spec: &CapabilitySpec) -> Self {
        Self {
            id: spec.id.clone(),
            name: spec.name.clone().unwrap_or_else(|| spec.id.clone()),
            description: spec.description.clone().unwrap_or_default(),
            input_schema: spec.input_schema.clone().unwrap_or_else(any_schema),
            output_schema: spec.output_schema.clone().unwrap_or_else(any_schema),
            management: spec.management,
            cost: spec.cost.clone(),
        }
    }
}

/// What `GET /api/plugins[/{id}]` answers (the seed's PluginInfo, plus what the platform adds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub implementation: String,
    #[serde(with = "phase_lowercase")]
    #[cfg_attr(feature = "openapi", schema(schema_with = phase_schema))]
    pub status: Phase,
    pub enabled: bool,
    pub replicas: i32,
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub capabilities: Vec<Capability>,
    pub config: Value,
    pub resources: ResourcesInfo,
    /// Kubernetes-style conditions (cluster mode); empty locally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionInfo>,
    /// The runtime instances (local child processes or pods) behind the plugin.
    #[serde(default)]
    pub instances: Vec<Instance>,
}

/// One runtime instance of a plugin: a local child process or a pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// `echo-0` locally, the pod name on a cluster.
    pub name: String,
    /// `starting`, `running`, `stopping`, `stopped`, `backoff` or `error`.
    pub state: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The manifest's resource limits, in the units the dashboard shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourcesInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub timeout_secs: u32,
    pub max_concurrency: u32,
    pub gpu_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_vendor: Option<String>,
}

/// A condition as the REST API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConditionInfo {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

impl PluginInfo {
    /// Describes a plugin from its manifest and observed state. `capabilities` overrides the
    /// manifest's list when the manifest declares none (the runtime then reports its own).
    pub fn from_plugin(
        plugin: &Plugin,
        runtime_capabilities: Option<&[Capability]>,
        instances: Vec<Instance>,
    ) -> Self {
        let spec = &plugin.spec;
        let status = plugin.status.clone().unwrap_or_default();
        let declared: Vec<Capability> = spec.capabilities.iter().map(Capability::from).collect();
        let capabilities = match runtime_capabilities {
            Some(reported) if declared.is_empty() => reported.to_vec(),
            _ => declared,
        };
        let gpu = spec.resources.gpu.as_ref();
        Self {
            id: plugin.id().to_owned(),
            name: spec
                .display_name
                .clone()
                .unwrap_or_else(|| plugin.id().to_owned()),
            version: spec.version.clone().unwrap_or_default(),
            description: spec.description.clone().unwrap_or_default(),
            author: spec.author.clone().unwrap_or_default(),
            implementation: spec.implementation.clone(),
            status: status.phase.unwrap_or(if spec.enabled {
                Phase::Starting
            } else {
                Phase::Stopped
            }),
            enabled: spec.enabled,
            replicas: spec.replicas,
            ready_replicas: status.ready_replicas.unwrap_or(0),
            endpoint: status.endpoint.clone(),
            last_error: status.last_error.clone(),
            capabilities,
            config: spec
                .config
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            resources: ResourcesInfo {
                memory: spec.resources.memory.as_ref().map(|q| q.0.clone()),
                cpu: spec.resources.cpu.as_ref().map(|q| q.0.clone()),
                timeout_secs: spec.resources.timeout_seconds,
                max_concurrency: spec.resources.max_concurrency,
                gpu_count: gpu.map_or(0, |g| g.count),
                gpu_vendor: gpu.map(|g| format!("{:?}", g.vendor).to_lowercase()),
            },
            conditions: status
                .conditions
                .iter()
                .map(|c| ConditionInfo {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.0.to_string(),
                })
                .collect(),
            instances,
        }
    }
}

/// Body of `POST /api/plugins/{id}/invoke`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvokeRequest {
    pub capability: String,
    #[serde(default)]
    pub payload: Value,
}

/// Resource use of one runtime process, or of a plugin summed over its replicas
/// (the seed's PluginTelemetry).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Telemetry {
    pub plugin_id: String,
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub uptime_secs: u64,
    pub request_count: u64,
    pub error_count: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Replicas that answered (1 for a single runtime).
    #[serde(default)]
    pub replicas: u32,
    /// Plugin-specific gauges (e.g. Candle's device and queue depth).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}

/// One captured log line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// RFC 3339 time the line was captured.
    pub ts: String,
    /// `stdout`, `stderr` or `supervisor`.
    pub stream: String,
    pub message: String,
}

/// Body of `GET /api/plugins/{id}/logs` and the runtime's `/v1/logs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Logs {
    pub plugin_id: String,
    pub lines: Vec<LogLine>,
}

/// What a runtime says about itself on `GET /v1/info`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RuntimeInfo {
    pub protocol: String,
    pub plugin_id: String,
    pub implementation: String,
    pub implementation_version: String,
    pub ready: bool,
    pub capabilities: Vec<Capability>,
    /// Implementation-specific facts, e.g. the compute device.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, Value>,
}

/// RFC 9457 problem details: the one shape of every error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem kind, e.g. `https://bkg.rs/problems/invalid-payload`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level errors, e.g. each JSON Schema violation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One violation, located by a JSON pointer (payloads) or a dotted path (manifests).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem of kind `slug` (the last segment of its type URI).
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("https://bkg.rs/problems/{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            instance: None,
            request_id: None,
            errors: Vec::new(),
        }
    }

    /// Adds field-level errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }
}

/// The phase as the REST API spells it: one of the lower-case names.
#[cfg(feature = "openapi")]
fn phase_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(Phase::ALL.iter().map(|p| p.as_str())))
        .description(Some("Lifecycle phase"))
        .build()
}

mod phase_lowercase {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::crd::Phase;

    pub fn serialize<S: Serializer>(phase: &Phase, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(phase.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Phase, D::Error> {
        let name = String::deserialize(d)?;
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown status {name:?}")))
    }
}
