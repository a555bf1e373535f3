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
    validation = Rule::new("!has(self.spec.replicas) || !has(self.spec.scaling)")
        .message("spec.replicas (a fixed count, also what `kubectl scale` and an HPA set) and spec.scaling (bkg's autoscaler) each own the replica count: set one of them, not both"),
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn(name = "Impl", type_ = "string", json_path = ".spec.implementation", description = "plugin implementation"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "lifecycle phase"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas", description = "replicas wanted now"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.replicas", description = "replicas running"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "ready replicas"),
    printcolumn(name = "Scaling", type_ = "string", json_path = ".status.scalingOwner", description = "who owns the replica count"),
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

    /// A fixed number of runtime replicas while enabled (1 when neither this nor `scaling` is
    /// set). `kubectl scale plugin/<id>` and an HPA that targets the Plugin write this field
    /// through the scale subresource, and the operator follows it. Leave it unset when
    /// `scaling` is set: then bkg's autoscaler owns the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: Option<i32>,

    /// Autoscaling between `minReplicas` and `maxReplicas` by load, with scale to zero when
    /// `minReplicas` is 0. Exclusive with `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,

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

    /// Other names clients may call this plugin by (the `model` of `/v1/embeddings`, or the id
    /// in `/api/plugins/{id}/invoke`). Plugins naming the same alias share its traffic by
    /// `weight` (a canary: 90 on the current version, 10 on the new one). A plugin's own id
    /// wins over an alias of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub aliases: Vec<AliasSpec>,
}

/// One alias of a Plugin and the share of the alias's traffic it takes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasSpec {
    /// The alias, spelled like a plugin id (a DNS-1035 label).
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// This plugin's share of the alias's traffic, relative to the weights of the other
    /// Plugins naming it (default 100; 0 takes no traffic).
    #[serde(default = "default_alias_weight")]
    #[schemars(range(max = 10000))]
    pub weight: u32,
}

/// The largest alias weight.
pub const MAX_ALIAS_WEIGHT: u32 = 10_000;

/// The weight of an alias that names none.
pub const DEFAULT_ALIAS_WEIGHT: u32 = 100;

fn default_alias_weight() -> u32 {
    DEFAULT_ALIAS_WEIGHT
}

/// How a Plugin scales with load. The autoscaler keeps `ceil(load / target)` replicas within
/// `[minReplicas, maxReplicas]`: it scales up at once and down only after `scaleDownDelaySeconds`
/// of lower load, and to zero after `scaleToZeroAfterSeconds` without an invoke.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Fewest replicas. 0 allows scale to zero: invokes that arrive then are held by the
    /// gateway while one replica starts.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 64))]
    pub min_replicas: i32,

    /// Most replicas.
    #[schemars(range(min = 1, max = 64))]
    pub max_replicas: i32,

    /// The load signal: `inFlight` (invokes being served or queued per replica; the signal that
    /// fits inference) or `cpu` (CPU utilisation of a replica in percent of its `resources.cpu`).
    #[serde(default)]
    pub metric: ScalingMetric,

    /// Load one replica should carry: in-flight invokes per replica for `inFlight` (default
    /// 8), percent CPU utilisation for `cpu` (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target: Option<u32>,

    /// How long the load must stay lower before replicas are removed.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(max = 86400))]
    pub scale_down_delay_seconds: u32,

    /// With `minReplicas: 0`: seconds without an invoke after which the plugin goes to zero.
    #[serde(default = "default_scale_to_zero_after")]
    #[schemars(range(min = 1, max = 86400))]
    pub scale_to_zero_after_seconds: u32,

    /// How long the gateway holds an invoke for a plugin at zero replicas before it answers
    /// 503 with `Retry-After`.
    #[serde(default = "default_activation_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub activation_timeout_seconds: u32,

    /// Most invokes the gateway holds for this plugin while it has no ready replica; beyond
    /// it, 429.
    #[serde(default = "default_max_held")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_held_requests: u32,
}

/// The load signal of [`Scaling`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScalingMetric {
    /// Invokes in flight (served or queued) per replica.
    #[default]
    InFlight,
    /// CPU utilisation per replica, percent of `resources.cpu`.
    Cpu,
}

impl ScalingMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingMetric::InFlight => "inFlight",
            ScalingMetric::Cpu => "cpu",
        }
    }
}

impl Scaling {
    /// `target`, or the metric's default.
    pub fn target(&self) -> u32 {
        self.target.unwrap_or(match self.metric {
            ScalingMetric::InFlight => 8,
            ScalingMetric::Cpu => 80,
        })
    }
}

/// Changes of the replica count kept in `status.scaleHistory`.
pub const SCALE_HISTORY: usize = 10;

/// One change of a Plugin's replica count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRecord {
    /// When (RFC 3339).
    pub time: String,
    pub from: i32,
    pub to: i32,
    /// Why, e.g. `inFlight 9.0 for a target of 2 per replica`.
    pub reason: String,
}

/// Who owns a Plugin's replica count (`status.scalingOwner`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScalingOwner {
    /// `spec.replicas`, which `kubectl scale` and an HPA targeting the Plugin also write.
    Replicas,
    /// bkg's autoscaler (`spec.scaling` with `metric: inFlight`).
    Autoscaler,
    /// A HorizontalPodAutoscaler the operator renders (`spec.scaling` with `metric: cpu`).
    Hpa,
}

impl ScalingOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingOwner::Replicas => "replicas",
            ScalingOwner::Autoscaler => "autoscaler",
            ScalingOwner::Hpa => "hpa",
        }
    }
}

impl PluginSpec {
    /// The fixed replica count while enabled, when `spec.scaling` does not own it.
    pub fn fixed_replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }

    /// Who owns the replica count.
    pub fn scaling_owner(&self) -> ScalingOwner {
        match &self.scaling {
            None => ScalingOwner::Replicas,
            Some(s) if s.metric == ScalingMetric::Cpu => ScalingOwner::Hpa,
            Some(_) => ScalingOwner::Autoscaler,
        }
    }

    /// Replicas a freshly applied spec starts with: the fixed count, or `minReplicas`
    /// (at least 1 for an HPA, which cannot scale to zero).
    pub fn initial_replicas(&self) -> i32 {
        if !self.enabled {
            return 0;
        }
        match &self.scaling {
            None => self.fixed_replicas(),
            Some(s) if s.metric == ScalingMetric::Cpu => s.min_replicas.max(1),
            Some(s) => s.min_replicas,
        }
    }

    /// Checks across fields that the CRD's schema cannot express: `(field path, message)`.
    pub fn cross_field_errors(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut push = |f: &str, m: String| errors.push((f.to_owned(), m));
        if let Some(r) = self.replicas
            && r < 0
        {
            push("spec.replicas", format!("{r} must not be negative"));
        }
        if let Some(s) = &self.scaling {
            if self.replicas.is_some() {
                push(
                    "spec.replicas",
                    "set spec.replicas (a fixed count) or spec.scaling (autoscaling), not both"
                        .into(),
                );
            }
            if s.min_replicas < 0 {
                push(
                    "spec.scaling.minReplicas",
                    format!("{} must not be negative", s.min_replicas),
                );
            }
            if s.max_replicas < 1 {
                push(
                    "spec.scaling.maxReplicas",
                    format!("{} must be at least 1", s.max_replicas),
                );
            }
            if s.min_replicas > s.max_replicas {
                push(
                    "spec.scaling.minReplicas",
                    format!(
                        "{} is above spec.scaling.maxReplicas ({})",
                        s.min_replicas, s.max_replicas
                    ),
                );
            }
            if s.target == Some(0) {
                push("spec.scaling.target", "must be at least 1".into());
            }
            if s.metric == ScalingMetric::Cpu && s.min_replicas == 0 {
                push(
                    "spec.scaling.minReplicas",
                    "metric cpu cannot scale to zero (an idle replica uses no CPU to wake it): use metric inFlight for minReplicas 0".into(),
                );
            }
        }
        for (i, alias) in self.aliases.iter().enumerate() {
            if self.aliases[..i].iter().any(|a| a.name == alias.name) {
                push(
                    &format!("spec.aliases[{i}].name"),
                    format!("{:?} is listed twice", alias.name),
                );
            }
            if alias.weight > MAX_ALIAS_WEIGHT {
                push(
                    &format!("spec.aliases[{i}].weight"),
                    format!("{} is above {MAX_ALIAS_WEIGHT}", alias.weight),
                );
            }
        }
        errors
    }
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
    /// The capability also answers as a stream (e.g. text generation token by token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
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

/// An environment variable: a literal `value`, or `valueFrom` a key of a Secret or ConfigMap in
/// the Plugin's namespace, as in a container's env. On a cluster the pod gets the reference
/// (the kubelet reads the key, the operator never does); `bkg up` reads it from its own
/// environment, `BKG_SECRET_<NAME>_<KEY>` or `BKG_CONFIGMAP_<NAME>_<KEY>` (see the README).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))")
    .message("set value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Variable value (empty when neither `value` nor `valueFrom` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from instead: one key of a Secret or a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// The source of an environment variable's value: exactly one of its fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("set exactly one of secretKeyRef or configMapKeyRef"))]
pub struct EnvVarSource {
    /// A key of a Secret in the Plugin's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A key of a ConfigMap in the Plugin's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
}

/// One key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KeySelector {
    /// Name of the Secret or ConfigMap.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// The key whose value the variable gets.
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(max = 253))]
    pub key: String,
    /// `true`: a missing Secret, ConfigMap or key leaves the variable unset instead of
    /// keeping the plugin from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Whether a [`KeySelector`] names a Secret or a ConfigMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Secret,
    ConfigMap,
}

impl EnvVarSource {
    /// The one reference this source holds, or `None` when it holds none or both (the CRD's
    /// rule refuses both on a cluster; [`crate::manifest`] refuses them locally).
    pub fn reference(&self) -> Option<(KeySource, &KeySelector)> {
        match (&self.secret_key_ref, &self.config_map_key_ref) {
            (Some(s), None) => Some((KeySource::Secret, s)),
            (None, Some(c)) => Some((KeySource::ConfigMap, c)),
            _ => None,
        }
    }
}

impl KeySelector {
    /// The variable of `bkg up`'s own environment that stands in for this key locally:
    /// `BKG_SECRET_<NAME>_<KEY>` or `BKG_CONFIGMAP_<NAME>_<KEY>`, with name and key upper-cased
    /// and every character other than a letter or digit written `_`. A secretKeyRef
    /// `{name: hf, key: token}` is `BKG_SECRET_HF_TOKEN`.
    pub fn local_variable(&self, source: KeySource) -> String {
        let prefix = match source {
            KeySource::Secret => "BKG_SECRET",
            KeySource::ConfigMap => "BKG_CONFIGMAP",
        };
        let upper = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!("{prefix}_{}_{}", upper(&self.name), upper(&self.key))
    }
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
    /// Replicas running (ready or not): the scale subresource's status replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Replicas wanted now: the fixed count or the autoscaler's latest decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Who owns the replica count: `replicas`, `autoscaler` or `hpa`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_owner: Option<ScalingOwner>,
    /// Label selector of the plugin's pods, for the scale subresource (HPA, KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// When the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// The latest changes of the replica count, oldest first (at most [`SCALE_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub scale_history: Vec<ScaleRecord>,
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

fn default_min_replicas() -> i32 {
    1
}

fn default_scale_down_delay() -> u32 {
    30
}

fn default_scale_to_zero_after() -> u32 {
    60
}

fn default_activation_timeout() -> u32 {
    30
}

fn default_max_held() -> u32 {
    256
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_variables_for_references() {
        let key = |name: &str, key: &str| KeySelector {
            name: name.into(),
            key: key.into(),
            optional: None,
        };
        assert_eq!(
            key("hf", "token").local_variable(KeySource::Secret),
            "BKG_SECRET_HF_TOKEN"
        );
        assert_eq!(
            key("model-settings.v2", "max.len").local_variable(KeySource::ConfigMap),
            "BKG_CONFIGMAP_MODEL_SETTINGS_V2_MAX_LEN"
        );
    }
}
