//! bkg-wire: what crosses a process boundary, and nothing else: the gateway's REST and WebSocket
//! types, the plugin-runtime protocol, problem bodies, header names and the constants the
//! operator, gateway and runtime must agree on. serde only (schemars and utoipa derives behind
//! features), so the runtime image links no Kubernetes crate.
//!
//! Field names follow the seed design (snake_case: `cpu_percent`, `memory_mb`, …) so the admin UI
//! and scripts see one vocabulary on every endpoint.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod exposition;
pub mod history;
pub mod logs;

pub use history::{Overview, PluginEvent, PluginSparkline, TelemetryHistory, TelemetrySample};

/// Version string of the plugin-runtime HTTP protocol (docs/PLUGIN-PROTOCOL.md).
pub const PROTOCOL_VERSION: &str = "bkg.plugin/v1";

/// The request id header: taken from the caller when usable ([`usable_request_id`]), else made;
/// passed to the runtime and returned on every answer.
pub const REQUEST_ID: &str = "x-request-id";

/// Whether a caller's `x-request-id` is kept: 1–128 printable ASCII characters, no spaces. The
/// gateway and the runtime apply this one rule.
pub fn usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Port of the plugin protocol in a runtime pod (the Service's `http` port).
pub const RUNTIME_PORT: u16 = 8080;

/// Port of a runtime pod's `/metrics` (the Service's `metrics` port).
pub const RUNTIME_METRICS_PORT: u16 = 9090;

/// Annotation on a Plugin whose change restarts its replicas: the gateway's restart sets it, the
/// operator copies it into the pod template.
pub const RESTARTED_AT: &str = "bkg.rs/restartedAt";

/// `app.kubernetes.io/managed-by` of every object the operator applies, and what the gateway
/// selects EndpointSlices by.
pub const MANAGER: &str = "bkg-operator";

/// Field manager that owns a Deployment's `spec.replicas` while a Plugin's `spec.scaling` does:
/// the operator hands the count over to it when it creates the Deployment (so its own applies
/// can leave the field out without resetting it), and the gateway's autoscaler writes the
/// scale subresource under it.
pub const SCALE_MANAGER: &str = "bkg-autoscaler";

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
    /// Also answers as a stream: NDJSON from the runtime's `/v1/invoke/{capability}/stream`,
    /// relayed by the gateway (and as server-sent events on its OpenAI routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
}

/// The schema that accepts anything (`true`): what an undeclared schema means.
pub fn any_schema() -> Value {
    Value::Bool(true)
}

/// A Plugin's `spec.scaling`, as the dashboard shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScalingInfo {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// `inFlight` or `cpu`.
    pub metric: String,
    /// Load one replica should carry.
    pub target: u32,
    pub scale_down_delay_seconds: u32,
    pub scale_to_zero_after_seconds: u32,
}

/// One change of a plugin's replica count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaleEvent {
    /// RFC 3339.
    pub time: String,
    pub from: i32,
    pub to: i32,
    pub reason: String,
}

/// One alias of a plugin (`spec.aliases`) and the share of the alias's traffic it gets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AliasShare {
    /// The alias clients may call the plugin by.
    pub name: String,
    /// The plugin's weight in the alias.
    pub weight: u32,
    /// Percent of the alias's requests this plugin gets: its weight over the weights of every
    /// enabled plugin naming the alias.
    pub percent: f64,
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
    /// Replicas wanted now: the fixed count or the autoscaler's latest decision.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Who owns the replica count: `replicas`, `autoscaler` or `hpa`.
    pub scaling_owner: String,
    /// The autoscaling bounds, when `spec.scaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingInfo>,
    /// The latest changes of the replica count, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_history: Vec<ScaleEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set while the newest manifest of this plugin is invalid, with what is wrong: what runs
    /// (if anything) is the last valid version. Locally the manifest file's error; on a cluster
    /// the message of `Ready=False, reason InvalidSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_error: Option<String>,
    pub capabilities: Vec<Capability>,
    pub config: Value,
    pub resources: ResourcesInfo,
    /// Kubernetes-style conditions (cluster mode); empty locally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionInfo>,
    /// The runtime instances (local child processes or pods) behind the plugin.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// The names besides its id that route to this plugin, with its share of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<AliasShare>,
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

/// A runtime's load on `GET /v1/load`: what the autoscaler reads from every replica on a
/// cluster, where each gateway replica sees only its share of the invokes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Invokes running in the plugin now.
    pub in_flight: u64,
    /// Invokes admitted and waiting for a slot.
    pub waiting: u64,
    /// Invokes received since the runtime started.
    pub requests: u64,
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

/// Every kind of problem the gateway and the runtime answer with; the last segment of a
/// problem's `type` URI. One list, so both processes spell each kind alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The request is not valid HTTP or lacks what it must carry.
    BadRequest,
    /// The body is not JSON, or not the expected envelope.
    MalformedJson,
    /// The body is larger than the limit.
    BodyTooLarge,
    /// The body could not be read.
    BadBody,
    /// The request target is longer than the gateway accepts.
    UriTooLong,
    /// The request head is larger than the gateway accepts.
    HeadersTooLarge,
    /// No API key, or not a valid one.
    Unauthorized,
    /// The key lacks the scope.
    Forbidden,
    /// No such route.
    NotFound,
    /// The route does not answer this method.
    MethodNotAllowed,
    /// No plugin with this id.
    UnknownPlugin,
    /// The plugin has no such capability.
    UnknownCapability,
    /// The payload violates the capability's input schema (gateway).
    InvalidPayload,
    /// The plugin refused the input (runtime, 422).
    InvalidInput,
    /// The change conflicts with the plugin's state.
    Conflict,
    /// The key's rate limit is used up (429, Retry-After).
    RateLimited,
    /// The call costs more than the rate limit's burst can ever hold (413).
    CostOverBurst,
    /// No ready instance (gateway, 503).
    PluginUnavailable,
    /// The runtime or its plugin is not ready (503).
    NotReady,
    /// Admission or the plugin's queue is full (503 or 429).
    Overloaded,
    /// The plugin did not answer within the manifest's timeout (504).
    InvokeTimeout,
    /// The runtime's answer could not be relayed (502).
    BadGateway,
    /// The plugin failed (500).
    PluginError,
    /// The metrics could not be encoded (500).
    Metrics,
    /// Anything else that went wrong inside (500).
    Internal,
}

impl ProblemKind {
    /// Every kind.
    pub const ALL: [ProblemKind; 25] = [
        ProblemKind::BadRequest,
        ProblemKind::MalformedJson,
        ProblemKind::BodyTooLarge,
        ProblemKind::BadBody,
        ProblemKind::UriTooLong,
        ProblemKind::HeadersTooLarge,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::UnknownPlugin,
        ProblemKind::UnknownCapability,
        ProblemKind::InvalidPayload,
        ProblemKind::InvalidInput,
        ProblemKind::Conflict,
        ProblemKind::RateLimited,
        ProblemKind::CostOverBurst,
        ProblemKind::PluginUnavailable,
        ProblemKind::NotReady,
        ProblemKind::Overloaded,
        ProblemKind::InvokeTimeout,
        ProblemKind::BadGateway,
        ProblemKind::PluginError,
        ProblemKind::Metrics,
        ProblemKind::Internal,
    ];

    /// The kind's slug, e.g. `invalid-payload`.
    pub const fn slug(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "bad-request",
            ProblemKind::MalformedJson => "malformed-json",
            ProblemKind::BodyTooLarge => "body-too-large",
            ProblemKind::BadBody => "bad-body",
            ProblemKind::UriTooLong => "uri-too-long",
            ProblemKind::HeadersTooLarge => "headers-too-large",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::UnknownPlugin => "unknown-plugin",
            ProblemKind::UnknownCapability => "unknown-capability",
            ProblemKind::InvalidPayload => "invalid-payload",
            ProblemKind::InvalidInput => "invalid-input",
            ProblemKind::Conflict => "conflict",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::CostOverBurst => "cost-over-burst",
            ProblemKind::PluginUnavailable => "plugin-unavailable",
            ProblemKind::NotReady => "not-ready",
            ProblemKind::Overloaded => "overloaded",
            ProblemKind::InvokeTimeout => "invoke-timeout",
            ProblemKind::BadGateway => "bad-gateway",
            ProblemKind::PluginError => "plugin-error",
            ProblemKind::Metrics => "metrics",
            ProblemKind::Internal => "internal",
        }
    }
}

impl Problem {
    /// A problem of `kind` (the last segment of its type URI).
    pub fn new(status: u16, kind: ProblemKind, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("https://bkg.rs/problems/{}", kind.slug()),
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

    use crate::Phase;

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

/// How much of a rate limit one call uses: the bucket is charged `ceil(measure / per)` units
/// (at least one), where the measure is what `unit` names. A call costing more than the
/// limit's `burst` can never pass and is refused with 413.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cost {
    /// What is counted.
    pub unit: CostUnit,
    /// JSON pointer to the payload field counted by `inputs` and `tokens`; defaults to
    /// `/input`. Ignored for `bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schemars",
        schemars(regex(pattern = r"^(/[^/]*)*$"), length(max = 256))
    )]
    pub field: Option<String>,
    /// How many counted things make one unit (e.g. 1024 with `bytes`: one unit per KiB);
    /// defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = 1_000_000_000)))]
    pub per: Option<u32>,
}

/// What a [`Cost`] counts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CostUnit {
    /// Items of the array at `field` (a single value counts as one).
    Inputs,
    /// Bytes of the payload's JSON text as the client sent it.
    Bytes,
    /// Estimated tokens of the text at `field` (a string or an array of strings): a quarter
    /// of its UTF-8 bytes, rounded up, per string. The gateway has no tokenizer.
    Tokens,
}

impl Cost {
    /// The field `inputs` and `tokens` count.
    pub const DEFAULT_FIELD: &'static str = "/input";

    /// The JSON pointer counted by `inputs` and `tokens`.
    pub fn field(&self) -> &str {
        self.field.as_deref().unwrap_or(Self::DEFAULT_FIELD)
    }

    /// Units charged for a measure of `counted` things: `ceil(counted / per)`, at least one.
    pub fn units(&self, counted: u64) -> u32 {
        let per = u64::from(self.per.unwrap_or(1).max(1));
        u32::try_from(counted.div_ceil(per))
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// Lifecycle phase of a plugin (the seed's PluginStatus).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Phase {
    /// Disabled or stopped: no replica runs.
    Stopped,
    /// Replicas are starting (e.g. loading a model) and none is ready yet.
    Starting,
    /// At least one replica is ready.
    Running,
    /// Replicas are draining in-flight calls before exit.
    Stopping,
    /// The plugin cannot run; `lastError` says why.
    Error,
}

impl Phase {
    /// Every phase, for metrics that report one series per phase.
    pub const ALL: [Phase; 5] = [
        Phase::Stopped,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Error,
    ];

    /// Lower-case name used on the REST API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Error => "error",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_slugs_are_distinct_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for kind in ProblemKind::ALL {
            let slug = kind.slug();
            assert!(seen.insert(slug), "{slug} twice");
            assert!(
                slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{slug}"
            );
        }
        let p = Problem::new(503, ProblemKind::NotReady, "Plugin not ready", "loading");
        assert_eq!(p.type_, "https://bkg.rs/problems/not-ready");
    }

    #[test]
    fn request_ids_are_short_printable_ascii() {
        assert!(usable_request_id("r-1"));
        assert!(usable_request_id(&"a".repeat(128)));
        for bad in ["", "a b", "é", "a\tb"] {
            assert!(!usable_request_id(bad), "{bad:?}");
        }
        assert!(!usable_request_id(&"a".repeat(129)));
    }
}
