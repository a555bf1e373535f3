//! Step 2 of the pipeline: the children a [`ValidatedPlugin`] needs, built without a client.
//!
//! ```text
//!   Plugin ──validate──▶ ValidatedPlugin ──build──▶ Children { ConfigMap, Service, Deployment, PDB?, HPA? }
//! ```
//!
//! Who owns the Deployment's `spec.replicas` ([`ReplicaCount`]):
//!
//! | Plugin spec                 | owner                                   | operator's apply       |
//! |-----------------------------|-----------------------------------------|------------------------|
//! | `replicas` (or neither)     | `spec.replicas` (kubectl scale, an HPA on the Plugin) | `replicas: N` |
//! | `scaling`, metric `inFlight`| the gateway's autoscaler (scale subresource) | no `replicas` field |
//! | `scaling`, metric `cpu`     | the rendered HorizontalPodAutoscaler    | no `replicas` field    |
//! | `enabled: false`            | the operator                            | `replicas: 0`          |
//!
//! Pure, so `bkg render` prints exactly what the operator applies and tests check it from YAML.

use std::collections::BTreeMap;

use bkg_core::crd::{Scaling, ScalingOwner};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, LocalObjectReference, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::{RESTARTED_AT, ValidatedPlugin};

/// Port the runtime serves its protocol and probes on (only the gateway may reach it).
pub const HTTP_PORT: i32 = bkg_core::wire::RUNTIME_PORT as i32;
/// Port the runtime serves only `/metrics` on (`BKG_METRICS_LISTEN`), so a NetworkPolicy can let
/// Prometheus scrape without reaching the invoke API.
pub const METRICS_PORT: i32 = bkg_core::wire::RUNTIME_METRICS_PORT as i32;
/// Pod-template annotation carrying the config digest, so a config change rolls the pods.
pub const CONFIG_HASH: &str = "bkg.rs/config-hash";
/// Where the ConfigMap is mounted; the runtime reads `config.json` from here.
pub const CONFIG_DIR: &str = "/etc/bkg";
/// Where downloaded models live (`HF_HOME`).
pub const MODEL_CACHE_DIR: &str = "/var/cache/bkg/models";
/// Non-root uid/gid of the runtime (distroless `nonroot`).
const RUNTIME_UID: i64 = 65532;
/// Seconds between SIGTERM and SIGKILL on top of the invoke timeout: the runtime drains in-flight
/// invokes for timeout + 5 s, so the kubelet must wait longer than that.
const GRACE_MARGIN_SECS: i64 = 15;

/// Every object one Plugin owns. Adding a field here breaks [`super::apply`] until the new kind
/// is applied and cleaned up there.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service: Service,
    pub deployment: Deployment,
    /// Only when the plugin can have more than one replica (`maxReplicas` when it scales, not
    /// the count of the moment): a PDB over a single pod would block node drains.
    pub pdb: Option<PodDisruptionBudget>,
    /// Only for `spec.scaling` with metric `cpu`, while enabled.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// How the Deployment's `spec.replicas` is set.
    pub replicas: ReplicaCount,
}

/// How the Deployment's `spec.replicas` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaCount {
    /// Part of every apply (`deployment.spec.replicas` is set): the operator owns the count.
    Applied,
    /// Owned by the gateway's autoscaler or the HPA: `deployment.spec.replicas` is left out, so
    /// server-side apply never reverts their writes. The operator sets the count only when it
    /// creates the Deployment (`initial`) or takes it over from its own earlier applies (the
    /// current count, kept within `[initial, max]`), and hands it to
    /// [`bkg_core::wire::SCALE_MANAGER`].
    HandedOver { initial: i32, max: i32 },
}

impl ReplicaCount {
    /// The count a Deployment found at `current` replicas (`None`: not created yet) is handed
    /// over with.
    pub fn handover(self, current: Option<i32>) -> Option<i32> {
        match self {
            ReplicaCount::Applied => None,
            ReplicaCount::HandedOver { initial, max } => {
                Some(current.map_or(initial, |c| c.max(initial).min(max)))
            }
        }
    }
}

/// Labels every child carries.
pub fn labels(v: &ValidatedPlugin) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&v.name);
    for (k, val) in [
        ("app.kubernetes.io/component", "plugin-runtime"),
        ("app.kubernetes.io/managed-by", crate::k8s::MANAGER),
        ("app.kubernetes.io/part-of", "bkg"),
        ("bkg.rs/implementation", v.implementation.as_str()),
    ] {
        labels.insert(k.to_owned(), val.to_owned());
    }
    labels
}

/// The labels selecting a plugin's pods: only what never changes (a Deployment's selector is
/// immutable).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "bkg-plugin".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
    ])
}

/// Name of the ConfigMap holding a plugin's config.
pub fn config_map_name(plugin: &str) -> String {
    format!("{plugin}-config")
}

/// Where the gateway reaches a plugin through its Service.
pub fn endpoint(name: &str, namespace: &str) -> String {
    format!("http://{name}.{namespace}.svc:{HTTP_PORT}")
}

fn meta(v: &ValidatedPlugin, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(v)),
        owner_references: v.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Builds every child of `v`.
pub fn build(v: &ValidatedPlugin) -> Children {
    Children {
        config_map: build_config_map(v),
        service: build_service(v),
        deployment: build_deployment(v),
        pdb: (v.max_replicas() > 1).then(|| build_pdb(v)),
        hpa: v
            .scaling
            .as_ref()
            .filter(|_| v.enabled && v.scaling_owner == ScalingOwner::Hpa)
            .map(|s| build_hpa(v, s)),
        replicas: match v.managed_replicas() {
            Some(_) => ReplicaCount::Applied,
            None => ReplicaCount::HandedOver {
                initial: v.replicas,
                max: v.max_replicas(),
            },
        },
    }
}

/// The HorizontalPodAutoscaler of a plugin scaled by CPU: it scales the Deployment (not the
/// Plugin, whose `spec.replicas` stays unset) between `max(minReplicas, 1)` and `maxReplicas`.
pub fn build_hpa(v: &ValidatedPlugin, s: &Scaling) -> HorizontalPodAutoscaler {
    let target = i32::try_from(s.target()).unwrap_or(i32::MAX);
    let window = i32::try_from(s.scale_down_delay_seconds).unwrap_or(i32::MAX);
    HorizontalPodAutoscaler {
        metadata: meta(v, v.name.clone()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: v.name.clone(),
            },
            min_replicas: Some(s.min_replicas.max(1)),
            max_replicas: s.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(target),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(window),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            }),
        },
        ..HorizontalPodAutoscaler::default()
    }
}

pub fn build_config_map(v: &ValidatedPlugin) -> ConfigMap {
    ConfigMap {
        metadata: meta(v, config_map_name(&v.name)),
        data: Some(BTreeMap::from([(
            "config.json".to_owned(),
            v.config_json.clone(),
        )])),
        ..ConfigMap::default()
    }
}

pub fn build_service(v: &ValidatedPlugin) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(v, v.name.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&v.name)),
            ports: Some(vec![port("http", HTTP_PORT), port("metrics", METRICS_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn build_pdb(v: &ValidatedPlugin) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(v, v.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&v.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

pub fn build_deployment(v: &ValidatedPlugin) -> Deployment {
    // A GPU plugin cannot surge: the extra pod would wait for a GPU that is not there.
    let (surge, unavailable) = if v.gpu.is_some() { (0, 1) } else { (1, 0) };
    Deployment {
        metadata: meta(v, v.name.clone()),
        spec: DeploymentSpec {
            replicas: v.managed_replicas(),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&v.name)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(surge)),
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                }),
            }),
            template: build_pod_template(v),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_annotations(v: &ValidatedPlugin) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        (CONFIG_HASH.to_owned(), v.config_hash.clone()),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    if let Some(at) = &v.restarted_at {
        a.insert(RESTARTED_AT.to_owned(), at.clone());
    }
    a
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn resources(v: &ValidatedPlugin) -> ResourceRequirements {
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(m) = &v.memory {
        // Memory is not compressible: request what the limit allows so the pod is not evicted
        // for using what it was promised.
        limits.insert("memory".to_owned(), m.clone());
        requests.insert("memory".to_owned(), m.clone());
    }
    if let Some(c) = &v.cpu {
        limits.insert("cpu".to_owned(), c.clone());
        requests.insert("cpu".to_owned(), c.clone());
    }
    if let Some(gpu) = &v.gpu {
        limits.insert(
            gpu.vendor.resource_name().to_owned(),
            Quantity(gpu.count.to_string()),
        );
    }
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..ResourceRequirements::default()
    }
}

fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn volumes(v: &ValidatedPlugin) -> Vec<Volume> {
    let model_cache = match &v.model_cache.persistent_volume_claim {
        Some(claim) => Volume {
            name: "model-cache".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "model-cache".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: v.model_cache.size_limit.clone(),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    };
    vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&v.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        model_cache,
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}

fn build_pod_template(v: &ValidatedPlugin) -> PodTemplateSpec {
    let mut env_vars = vec![
        env("BKG_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
        env("BKG_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        env(
            "BKG_PLUGIN_CONFIG_FILE",
            format!("{CONFIG_DIR}/config.json"),
        ),
        env("BKG_INVOKE_TIMEOUT_SECS", v.timeout_seconds.to_string()),
        env("BKG_MAX_CONCURRENCY", v.max_concurrency.to_string()),
        env("HF_HOME", MODEL_CACHE_DIR),
    ];
    env_vars.extend(v.env.iter().cloned());
    let container = Container {
        name: "runtime".to_owned(),
        image: Some(v.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(vec![
            "--plugin".to_owned(),
            v.implementation.clone(),
            "--id".to_owned(),
            v.name.clone(),
        ]),
        env: Some(env_vars),
        ports: Some(
            [("http", HTTP_PORT), ("metrics", METRICS_PORT)]
                .into_iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.to_owned()),
                    container_port: port,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        liveness_probe: Some(probe("/livez", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: Some(resources(v)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            volume_mount("config", CONFIG_DIR, true),
            volume_mount("model-cache", MODEL_CACHE_DIR, false),
            volume_mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    };
    let gpu = v.gpu.as_ref();
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(v)),
            annotations: Some(pod_annotations(v)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            image_pull_secrets: (!v.pull_secrets.is_empty()).then(|| {
                v.pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            // The runtime never talks to the API server.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(
                i64::from(v.timeout_seconds) + GRACE_MARGIN_SECS,
            ),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUNTIME_UID),
                run_as_group: Some(RUNTIME_UID),
                fs_group: Some(RUNTIME_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            tolerations: gpu.map(|g| {
                vec![Toleration {
                    key: Some(g.vendor.resource_name().to_owned()),
                    operator: Some("Exists".to_owned()),
                    effect: Some("NoSchedule".to_owned()),
                    ..Toleration::default()
                }]
            }),
            node_selector: gpu
                .filter(|g| !g.node_selector.is_empty())
                .map(|g| g.node_selector.clone()),
            volumes: Some(volumes(v)),
            ..PodSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests;
