//! Step 1 of the pipeline: turn a Plugin into a [`ValidatedPlugin`] or say which field is wrong.
//!
//! The API server already enforced the CRD schema; what is checked here is what a schema cannot
//! express (quantities that parse, env names the runtime reserves, `spec.config` against the
//! schema its implementation publishes) and what the operator decides once (image, effective
//! replicas, config hash), so [`super::build`] never has to fail. A bad config is caught here,
//! before a Deployment changes, rather than as a pod that exits 78 in a crash loop.

use std::collections::BTreeSet;

use bkg_core::crd::KeySource;
use bkg_core::crd::{GpuRequest, ModelCache, Plugin, Scaling, ScalingMetric, ScalingOwner};
use bkg_core::manifest::{validate_env, validate_id};
use bkg_core::quantity;
use bkg_core::wire::FieldError;
use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

/// Plugin annotation the gateway sets to restart a plugin; copied onto the pod template so a
/// new value rolls every pod.
pub use bkg_core::wire::RESTARTED_AT;

/// Env names the pod template sets itself; a spec that sets them would silently lose.
pub const RESERVED_ENV: [&str; 7] = [
    "BKG_PLUGIN",
    "BKG_PLUGIN_ID",
    "BKG_LISTEN",
    "BKG_PLUGIN_CONFIG_FILE",
    "BKG_INVOKE_TIMEOUT_SECS",
    "BKG_MAX_CONCURRENCY",
    "HF_HOME",
];

const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Longest `behavior.scaleDown.stabilizationWindowSeconds` the HPA API accepts.
pub const HPA_MAX_STABILIZATION_SECS: u32 = 3600;

/// Runtime images the operator chooses from when a Plugin names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Image for plugins without GPUs.
    pub cpu: String,
    /// Image variant with GPU libraries, for plugins with `resources.gpu`.
    pub gpu: String,
    /// OTLP endpoint handed to every runtime as `OTEL_EXPORTER_OTLP_ENDPOINT`, so its spans
    /// join the gateway's traces; a Plugin's own `env` entry wins.
    pub otlp_endpoint: Option<String>,
    /// Secrets (in each Plugin's namespace) the kubelet pulls runtime images with: a private
    /// registry's credentials.
    pub pull_secrets: Vec<String>,
    /// Secrets no Plugin's `spec.env` may reference, as `namespace/name`: the gateway's API
    /// keys. A Plugin may otherwise name any Secret of its namespace, as a Pod may.
    pub protected_secrets: Vec<String>,
}

impl Default for Images {
    fn default() -> Self {
        let version = env!("CARGO_PKG_VERSION");
        Self {
            cpu: format!("ghcr.io/bkg-rs/plugin-runtime:{version}"),
            gpu: format!("ghcr.io/bkg-rs/plugin-runtime:{version}-cuda"),
            otlp_endpoint: None,
            pull_secrets: Vec::new(),
            protected_secrets: Vec::new(),
        }
    }
}

/// A Plugin whose spec the operator can run, with every decision already taken.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedPlugin {
    pub name: String,
    pub namespace: String,
    /// Absent only when rendering offline (no uid yet).
    pub owner: Option<OwnerReference>,
    pub implementation: String,
    pub enabled: bool,
    /// Replicas the Deployment gets while the operator owns the count (fixed, or 0 while
    /// disabled); otherwise the count it is created with.
    pub replicas: i32,
    /// Who owns the replica count (`spec.replicas`, the gateway's autoscaler, or the HPA).
    pub scaling_owner: ScalingOwner,
    /// `spec.scaling`, validated.
    pub scaling: Option<Scaling>,
    pub image: String,
    /// `imagePullSecrets` of the pods.
    pub pull_secrets: Vec<String>,
    pub memory: Option<Quantity>,
    pub cpu: Option<Quantity>,
    pub gpu: Option<GpuRequest>,
    pub timeout_seconds: u32,
    pub max_concurrency: u32,
    /// The spec's env, in order, as Kubernetes env vars.
    pub env: Vec<EnvVar>,
    /// `spec.config` as the JSON the runtime reads from its mounted file.
    pub config_json: String,
    /// Short digest of `config_json`: a pod-template annotation, so a config change rolls out.
    pub config_hash: String,
    pub model_cache: ModelCache,
    /// Value of the Plugin's [`RESTARTED_AT`] annotation.
    pub restarted_at: Option<String>,
}

impl ValidatedPlugin {
    /// The Deployment's `spec.replicas` when the operator owns it: the fixed count, or 0 while
    /// disabled. `None` when the gateway's autoscaler or the HPA owns it: the operator's apply
    /// then leaves the field out, so server-side apply neither owns nor reverts their writes.
    pub fn managed_replicas(&self) -> Option<i32> {
        (!self.enabled || self.scaling_owner == ScalingOwner::Replicas).then_some(self.replicas)
    }

    /// The most replicas the plugin can have: PDBs follow it, not the count of the moment.
    pub fn max_replicas(&self) -> i32 {
        match (&self.scaling, self.enabled) {
            (_, false) => 0,
            (Some(s), true) => s.max_replicas,
            (None, true) => self.replicas,
        }
    }
}

/// Why a spec cannot run. Not retried: the operator waits for the Plugin to change.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct InvalidSpec(pub Vec<FieldError>);

fn field(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
}

/// A `spec.env` entry as the container gets it: the literal value, or the Secret or ConfigMap
/// reference for the kubelet to resolve (the operator never reads either).
fn pod_env(var: &bkg_core::crd::EnvVar) -> EnvVar {
    let value_from = var
        .value_from
        .as_ref()
        .and_then(|f| f.reference())
        .map(|(source, key)| match source {
            KeySource::Secret => EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: key.name.clone(),
                    key: key.key.clone(),
                    optional: key.optional,
                }),
                ..EnvVarSource::default()
            },
            KeySource::ConfigMap => EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: key.name.clone(),
                    key: key.key.clone(),
                    optional: key.optional,
                }),
                ..EnvVarSource::default()
            },
        });
    EnvVar {
        name: var.name.clone(),
        value: if value_from.is_some() {
            None
        } else {
            Some(var.value.clone().unwrap_or_default())
        },
        value_from,
    }
}

/// Checks `plugin` and takes the operator's decisions about it. Pure.
pub fn validate(plugin: &Plugin, images: &Images) -> Result<ValidatedPlugin, InvalidSpec> {
    let spec = &plugin.spec;
    let mut errors = Vec::new();
    let name = plugin.name_any();
    if let Err(message) = validate_id(&name) {
        field(&mut errors, "metadata.name", message);
    }
    let namespace = plugin.namespace().unwrap_or_default();
    if namespace.is_empty() {
        field(&mut errors, "metadata.namespace", "required");
    }
    if spec.implementation.is_empty() {
        field(&mut errors, "spec.implementation", "required");
    }
    for (path, message) in spec.cross_field_errors() {
        field(&mut errors, path, message);
    }
    for (path, q) in [
        ("spec.resources.memory", &spec.resources.memory),
        ("spec.resources.cpu", &spec.resources.cpu),
    ] {
        if let Some(q) = q {
            match quantity::to_cores(q) {
                Ok(v) if v > 0.0 => {}
                Ok(_) => field(&mut errors, path, format!("{:?} must be positive", q.0)),
                Err(message) => field(&mut errors, path, message),
            }
        }
    }
    if spec.resources.timeout_seconds == 0 {
        field(
            &mut errors,
            "spec.resources.timeoutSeconds",
            "must be at least 1",
        );
    }
    if spec.resources.max_concurrency == 0 {
        field(
            &mut errors,
            "spec.resources.maxConcurrency",
            "must be at least 1",
        );
    }
    if let Some(gpu) = &spec.resources.gpu
        && gpu.count == 0
    {
        field(
            &mut errors,
            "spec.resources.gpu.count",
            "must be at least 1",
        );
    }
    let model_cache = spec.resources.model_cache.clone().unwrap_or_default();
    if let Some(q) = &model_cache.size_limit
        && let Err(message) = quantity::to_bytes(q)
    {
        field(&mut errors, "spec.resources.modelCache.sizeLimit", message);
    }
    errors.extend(validate_env(&spec.env));
    for (i, var) in spec.env.iter().enumerate() {
        let secret = var
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref());
        if let Some(secret) = secret
            && images
                .protected_secrets
                .contains(&format!("{namespace}/{}", secret.name))
        {
            field(
                &mut errors,
                format!("spec.env[{i}].valueFrom.secretKeyRef.name"),
                format!(
                    "Secret {:?} holds the gateway's API keys; no plugin may read it",
                    secret.name
                ),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, var) in spec.env.iter().enumerate() {
        let path = format!("spec.env[{i}].name");
        if RESERVED_ENV.contains(&var.name.as_str()) {
            field(
                &mut errors,
                path,
                format!("{:?} is set by the operator", var.name),
            );
        } else if !seen.insert(var.name.as_str()) {
            field(&mut errors, path, format!("{:?} is set twice", var.name));
        }
    }
    let config = spec
        .config
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if config.is_object() {
        errors.extend(bkg_core::plugin_config::validate(
            &spec.implementation,
            Some(&config),
        ));
    } else {
        field(&mut errors, "spec.config", "must be an object");
    }
    if let Some(s) = spec
        .scaling
        .as_ref()
        .filter(|s| s.metric == ScalingMetric::Cpu)
    {
        // The HPA measures utilisation against the pods' CPU request.
        if spec.resources.cpu.is_none() {
            field(
                &mut errors,
                "spec.resources.cpu",
                "required with spec.scaling.metric cpu: utilisation is measured against this request",
            );
        }
        if s.scale_down_delay_seconds > HPA_MAX_STABILIZATION_SECS {
            field(
                &mut errors,
                "spec.scaling.scaleDownDelaySeconds",
                format!(
                    "{} is above {HPA_MAX_STABILIZATION_SECS}, the most a HorizontalPodAutoscaler (metric cpu) waits",
                    s.scale_down_delay_seconds
                ),
            );
        }
    }
    if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        field(&mut errors, "spec.image", "must not be empty when set");
    }
    if !errors.is_empty() {
        return Err(InvalidSpec(errors));
    }

    let config_json = config.to_string();
    let digest = Sha256::digest(config_json.as_bytes());
    let config_hash = digest
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let gpu = spec.resources.gpu.clone();
    let image = spec.image.clone().unwrap_or_else(|| {
        if gpu.is_some() {
            images.gpu.clone()
        } else {
            images.cpu.clone()
        }
    });
    let mut env: Vec<EnvVar> = spec.env.iter().map(pod_env).collect();
    if let Some(endpoint) = &images.otlp_endpoint
        && !env.iter().any(|e| e.name == OTLP_ENDPOINT)
    {
        env.push(EnvVar {
            name: OTLP_ENDPOINT.to_owned(),
            value: Some(endpoint.clone()),
            value_from: None,
        });
    }
    Ok(ValidatedPlugin {
        owner: plugin
            .meta()
            .uid
            .as_ref()
            .and_then(|_| plugin.controller_owner_ref(&())),
        name,
        namespace,
        implementation: spec.implementation.clone(),
        enabled: spec.enabled,
        replicas: spec.initial_replicas(),
        scaling_owner: spec.scaling_owner(),
        scaling: spec.scaling.clone(),
        image,
        pull_secrets: images.pull_secrets.clone(),
        memory: spec.resources.memory.clone(),
        cpu: spec.resources.cpu.clone(),
        gpu,
        timeout_seconds: spec.resources.timeout_seconds,
        max_concurrency: spec.resources.max_concurrency,
        env,
        config_json,
        config_hash,
        model_cache,
        restarted_at: plugin.annotations().get(RESTARTED_AT).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures::plugin_from_yaml;

    fn errors_of(yaml: &str) -> Vec<String> {
        match validate(&plugin_from_yaml(yaml), &Images::default()) {
            Ok(_) => Vec::new(),
            Err(InvalidSpec(errors)) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn runtimes_get_the_otlp_endpoint_unless_their_env_names_one() {
        let images = Images {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..Images::default()
        };
        let endpoint_of = |v: &ValidatedPlugin| {
            v.env
                .iter()
                .filter(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|e| e.value.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let plain = plugin_from_yaml("spec: {implementation: echo}");
        let v = validate(&plain, &images).expect("valid");
        assert_eq!(endpoint_of(&v), ["http://collector:4318"]);
        let own = plugin_from_yaml(
            "spec: {implementation: echo, env: [{name: OTEL_EXPORTER_OTLP_ENDPOINT, value: 'http://mine:4318'}]}",
        );
        let v = validate(&own, &images).expect("valid");
        assert_eq!(endpoint_of(&v), ["http://mine:4318"]);
        let v = validate(&plain, &Images::default()).expect("valid");
        assert!(endpoint_of(&v).is_empty());
    }

    #[test]
    fn disabled_plugin_runs_zero_replicas() {
        let p = plugin_from_yaml("spec: {implementation: echo, replicas: 3, enabled: false}");
        let v = validate(&p, &Images::default()).expect("valid");
        assert_eq!(v.replicas, 0);
        assert!(!v.enabled);
    }

    #[test]
    fn gpu_plugins_get_the_gpu_image_unless_the_spec_names_one() {
        let images = Images {
            cpu: "cpu:1".into(),
            gpu: "gpu:1".into(),
            ..Images::default()
        };
        let gpu = plugin_from_yaml("spec: {implementation: candle, resources: {gpu: {count: 1}}}");
        assert_eq!(validate(&gpu, &images).expect("valid").image, "gpu:1");
        let cpu = plugin_from_yaml("spec: {implementation: echo}");
        assert_eq!(validate(&cpu, &images).expect("valid").image, "cpu:1");
        let own = plugin_from_yaml("spec: {implementation: echo, image: mine:2}");
        assert_eq!(validate(&own, &images).expect("valid").image, "mine:2");
    }

    #[test]
    fn config_hash_follows_the_config() {
        let a = plugin_from_yaml("spec: {implementation: echo, config: {greeting: hello}}");
        let b = plugin_from_yaml("spec: {implementation: echo, config: {greeting: hallo}}");
        let (a, b) = (
            validate(&a, &Images::default()).expect("valid"),
            validate(&b, &Images::default()).expect("valid"),
        );
        assert_eq!(a.config_json, r#"{"greeting":"hello"}"#);
        assert_eq!(a.config_hash.len(), 16);
        assert_ne!(a.config_hash, b.config_hash);
    }

    #[test]
    fn reserved_and_duplicate_env_and_bad_quantities_name_their_field() {
        let errors = errors_of(
            "spec:
  implementation: echo
  env: [{name: HF_HOME, value: x}, {name: A, value: '1'}, {name: A, value: '2'}]
  resources: {memory: lots, cpu: '0'}",
        );
        assert_eq!(
            errors,
            [
                "spec.resources.memory",
                "spec.resources.cpu",
                "spec.env[0].name",
                "spec.env[2].name"
            ]
        );
    }

    #[test]
    fn config_is_checked_against_the_implementations_schema() {
        let err = validate(
            &plugin_from_yaml(
                "spec: {implementation: candle, config: {dtype: f64, max_batch_size: 0}}",
            ),
            &Images::default(),
        )
        .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            r#"spec.config.dtype: "f64" is not one of "f32", "bf16" or "f16"; spec.config.max_batch_size: 0 is less than the minimum of 1"#
        );
        let gpu = plugin_from_yaml(
            "spec: {implementation: candle, config: {dtype: f16, device: cuda}, resources: {gpu: {count: 1}}}",
        );
        assert!(validate(&gpu, &Images::default()).is_ok());
        assert_eq!(
            errors_of("spec: {implementation: candle, config: {dtype: f16, device: cpu}}"),
            ["spec.config.device"]
        );
    }

    #[test]
    fn cpu_scaling_needs_a_cpu_request_and_an_hpa_sized_delay() {
        assert_eq!(
            errors_of(
                "spec: {implementation: echo, scaling: {minReplicas: 1, maxReplicas: 3, metric: cpu, scaleDownDelaySeconds: 7200}}"
            ),
            ["spec.resources.cpu", "spec.scaling.scaleDownDelaySeconds"]
        );
        // inFlight needs neither.
        assert!(
            errors_of(
                "spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 3, scaleDownDelaySeconds: 7200}}"
            )
            .is_empty()
        );
    }

    #[test]
    fn the_gateways_key_secret_cannot_be_referenced() {
        let images = Images {
            protected_secrets: vec!["bkg-system/bkg-api-keys".into()],
            ..Images::default()
        };
        let env = "[{name: K, valueFrom: {secretKeyRef: {name: bkg-api-keys, key: admin-key}}}]";
        let in_ns = |ns: &str| {
            plugin_from_yaml(&format!(
                "metadata: {{name: echo, namespace: {ns}}}\nspec: {{implementation: echo, env: {env}}}"
            ))
        };
        let err = validate(&in_ns("bkg-system"), &images).expect_err("refused");
        assert_eq!(
            err.to_string(),
            r#"spec.env[0].valueFrom.secretKeyRef.name: Secret "bkg-api-keys" holds the gateway's API keys; no plugin may read it"#
        );
        // A Secret of that name elsewhere is the other namespace's own.
        assert!(validate(&in_ns("ml"), &images).is_ok());
    }

    #[test]
    fn the_operator_owns_the_count_only_when_fixed_or_disabled() {
        let of = |yaml: &str| validate(&plugin_from_yaml(yaml), &Images::default()).expect("valid");
        let fixed = of("spec: {implementation: echo, replicas: 2}");
        assert_eq!(
            (fixed.managed_replicas(), fixed.max_replicas()),
            (Some(2), 2)
        );
        let scaled = of("spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 5}}");
        assert_eq!(
            (scaled.managed_replicas(), scaled.max_replicas()),
            (None, 5)
        );
        assert_eq!(scaled.replicas, 0);
        let off = of("spec: {implementation: echo, enabled: false, scaling: {maxReplicas: 5}}");
        assert_eq!((off.managed_replicas(), off.max_replicas()), (Some(0), 0));
    }

    #[test]
    fn non_object_config_is_refused() {
        assert_eq!(
            errors_of("spec: {implementation: echo, config: 3}"),
            ["spec.config"]
        );
    }
}
