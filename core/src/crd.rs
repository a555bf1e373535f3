//! The `Plugin` custom resource (`plugins.bkg.rs/v1alpha1`).
//!
//! One manifest format serves both modes: `kubectl apply -f plugin.yaml` on a cluster and
//! `bkg up --plugins config/plugins` on a laptop. The plugin id is `metadata.name`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A plugin id (and Kubernetes object name) must be a DNS-1035 label, because it names the
/// plugin's Service.
pub const PLUGIN_ID_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// Longest plugin id: a DNS label.
pub const PLUGIN_ID_MAX_LEN: usize = 63;

/// A Plugin runs one ML plugin implementation as managed runtime processes (pods on a cluster,
/// child processes locally) and exposes its capabilities through the bkg gateway.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bkg.rs",
    version = "v1alpha1",
    kind = "Plugin",
    namespaced,
    status = "PluginStatus",
    shortname = "plg",
    category = "bkg",
    derive = "PartialEq",
    doc = "A bkg Plugin: one ML plugin implementation run as managed runtime processes behind the bkg gateway.",
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name (the plugin id) must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter, at most 63 characters"),
    printcolumn(name = "Impl", type_ = "string", json_path = ".spec.implementation", description = "plugin implementation"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "lifecycle phase"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "ready replicas"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "desired replicas"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".spec.resources.gpu.count", description = "GPUs per replica"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// The plugin implementation compiled into the runtime image that hosts this plugin,
    /// e.g. `echo` or `candle`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_.-]{0,62}$"))]
    pub implementation: String,

    /// Human-readable name shown in the dashboard; defaults to the plugin id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Version of the plugin as its author publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,

    /// What the plugin does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,

    /// Who maintains the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub author: Option<String>,

    /// Capabilities this plugin offers. The gateway validates every invoke payload against the
    /// capability's input schema before it reaches the plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub capabilities: Vec<CapabilitySpec>,

    /// `false` scales the plugin to zero and sets phase Stopped.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Number of runtime replicas while enabled.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: i32,

    /// Environment variables for the runtime process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Free-form configuration handed to the plugin at start (for Candle: which model to load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub config: Option<serde_json::Value>,

    /// Compute resources and limits of one runtime replica.
    #[serde(default)]
    pub resources: PluginResources,

    /// Invoke rate limit for every capability of this plugin, applied by the gateway per API key
    /// and capability. A capability's own `rateLimit` overrides it; unset, the gateway's
    /// default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Overrides the runtime image the operator would choose (cluster mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One capability a plugin offers, with JSON Schemas for its input and output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitySpec {
    /// Capability id used in invoke calls, e.g. `echo` or `model.infer`.
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"))]
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the capability does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema (2020-12 or draft 7) every invoke payload must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of what the capability returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub output_schema: Option<serde_json::Value>,
    /// Invoke rate limit of this capability per API key; overrides the plugin's `rateLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A management capability (e.g. `model.load`, `model.unload`) changes the plugin for every
    /// caller, so it needs the `admin` or `manage:<plugin>` scope; the invoke scopes do not
    /// grant it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub management: bool,
    /// What one call costs against the rate limit; unset, every call costs one unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

pub use bkg_wire::{Cost, CostUnit, Phase};

/// A token bucket: each API key may call a capability `requestsPerSecond` times per second on
/// average, and up to `burst` times at once. Calls over the limit are answered 429 with
/// Retry-After.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained calls per second.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: u32,
    /// Calls allowed at once after a quiet period; defaults to `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The bucket size: `burst`, or one second's worth of calls.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_second).max(1)
    }
}

/// An environment variable with a literal value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// Resources and limits of one runtime replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginResources {
    /// Memory limit (Kubernetes quantity, e.g. `512Mi`). Locally the supervisor kills a runtime
    /// whose resident memory exceeds it, as the kernel's OOM killer would in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// CPU limit (Kubernetes quantity, e.g. `500m` or `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Longest time one invoke may take before it is answered with 504.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
    /// Invokes one replica runs at once; further calls wait in the runtime's bounded queue.
    #[serde(default = "default_max_concurrency")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_concurrency: u32,
    /// GPUs per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
    /// Where downloaded model weights live (cluster mode; `HF_HOME`). An emptyDir by default, so
    /// every new pod downloads again; name a PersistentVolumeClaim to keep them across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache: Option<ModelCache>,
}

/// The volume holding a replica's model cache.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCache {
    /// An existing PersistentVolumeClaim in the Plugin's namespace (ReadWriteMany when
    /// replicas > 1). Unset: an emptyDir per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub persistent_volume_claim: Option<String>,
    /// Size limit of the emptyDir (Kubernetes quantity, e.g. `10Gi`); ignored with a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

impl Default for PluginResources {
    fn default() -> Self {
        Self {
            memory: None,
            cpu: None,
            timeout_seconds: default_timeout_seconds(),
            max_concurrency: default_max_concurrency(),
            gpu: None,
            model_cache: None,
        }
    }
}

/// A request for GPUs on each replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequest {
    /// Number of GPUs per replica.
    #[schemars(range(min = 1, max = 16))]
    pub count: u32,
    /// GPU vendor; selects the extended resource name (`nvidia.com/gpu`, `amd.com/gpu`,
    /// `gpu.intel.com/i915`).
    #[serde(default)]
    pub vendor: GpuVendor,
    /// Extra node labels the pod must match, e.g. `nvidia.com/gpu.product: NVIDIA-L4`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// GPU vendors bkg knows the device-plugin resource names of.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// NVIDIA device plugin: `nvidia.com/gpu`.
    #[default]
    Nvidia,
    /// AMD device plugin: `amd.com/gpu`.
    Amd,
    /// Intel device plugin: `gpu.intel.com/i915`.
    Intel,
}

impl GpuVendor {
    /// The extended resource name the vendor's device plugin advertises.
    pub fn resource_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia.com/gpu",
            GpuVendor::Amd => "amd.com/gpu",
            GpuVendor::Intel => "gpu.intel.com/i915",
        }
    }
}

/// Observed state of a Plugin, written by the operator (or the local supervisor).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions: Ready, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Where the gateway reaches the plugin (a Service URL or a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The most recent error, e.g. why the runtime exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Plugin {
    /// The plugin id: `metadata.name`.
    pub fn id(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The capability with this id, if the manifest declares it.
    pub fn capability(&self, id: &str) -> Option<&CapabilitySpec> {
        self.spec.capabilities.iter().find(|c| c.id == id)
    }
}

fn default_true() -> bool {
    true
}

fn default_replicas() -> i32 {
    1
}

fn default_timeout_seconds() -> u32 {
    30
}

fn default_max_concurrency() -> u32 {
    64
}

/// Free-form JSON objects (plugin config, JSON Schemas) are kept verbatim by the API server.
fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
