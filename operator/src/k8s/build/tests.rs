use super::*;
use crate::k8s::fixtures::plugin_from_yaml;
use crate::k8s::validate::{Images, validate};

fn children(yaml: &str) -> Children {
    let images = Images {
        cpu: "runtime:cpu".into(),
        gpu: "runtime:gpu".into(),
        ..Images::default()
    };
    build(&validate(&plugin_from_yaml(yaml), &images).expect("valid"))
}

fn pod(c: &Children) -> &PodSpec {
    c.deployment.spec.template.spec.as_ref().expect("pod spec")
}

fn env_of(c: &Children) -> BTreeMap<String, String> {
    pod(c).containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

const CPU: &str = "
spec:
  implementation: echo
  env: [{name: GREETING, value: hi}]
  config: {greeting: hello}
  resources: {memory: 256Mi, cpu: 500m, timeoutSeconds: 10, maxConcurrency: 8}";

#[test]
fn every_child_is_labelled_and_owned() {
    let c = children(CPU);
    let metas = [
        &c.config_map.metadata,
        &c.service.metadata,
        &c.deployment.metadata,
    ];
    for m in metas {
        let labels = m.labels.as_ref().expect("labels");
        for key in ["name", "instance", "component", "managed-by", "part-of"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "{key}"
            );
        }
        assert_eq!(labels["app.kubernetes.io/managed-by"], "bkg-operator");
        let owner = &m.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Plugin", "echo")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(m.namespace.as_deref(), Some("default"));
    }
    assert_eq!(c.pdb, None, "one replica: no PDB");
}

#[test]
fn cpu_pod_runs_the_plugin_restricted_with_probes_and_limits() {
    let c = children(CPU);
    let pod = pod(&c);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("runtime:cpu"));
    assert_eq!(
        container.args.as_deref(),
        Some(&["--plugin", "echo", "--id", "echo"].map(String::from)[..])
    );
    let env = env_of(&c);
    assert_eq!(env["BKG_PLUGIN_CONFIG_FILE"], "/etc/bkg/config.json");
    assert_eq!(env["BKG_INVOKE_TIMEOUT_SECS"], "10");
    assert_eq!(env["BKG_MAX_CONCURRENCY"], "8");
    assert_eq!(env["HF_HOME"], MODEL_CACHE_DIR);
    assert_eq!(env["GREETING"], "hi");
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["memory"].0, "256Mi");
    assert_eq!(limits["cpu"].0, "500m");
    assert!(!limits.keys().any(|k| k.contains("gpu")));
    let port = &container.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http"), 8080)
    );
    let live = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/livez"));
    assert_eq!(live.port, IntOrString::String("http".into()));
    let ready = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let sc = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".into()])
    );
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(pod.termination_grace_period_seconds > Some(10));
    let volumes: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["config", "model-cache", "tmp"]);
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .all(|v| v.persistent_volume_claim.is_none())
    );
    assert_eq!(pod.tolerations, None);
    assert_eq!(pod.node_selector, None);
    let annotations = Some(&c.deployment.spec)
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations[CONFIG_HASH].len(), 16);
    assert_eq!(
        c.config_map.data.as_ref().expect("data")["config.json"],
        r#"{"greeting":"hello"}"#
    );
    let ports: Vec<_> = c
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports")
        .into_iter()
        .map(|p| p.name.unwrap_or_default())
        .collect();
    assert_eq!(ports, ["http", "metrics"]);
}

#[test]
fn gpu_pod_gets_the_vendor_resource_toleration_node_selector_and_image() {
    for (vendor, resource) in [
        ("nvidia", "nvidia.com/gpu"),
        ("amd", "amd.com/gpu"),
        ("intel", "gpu.intel.com/i915"),
    ] {
        let c = children(&format!(
            "spec:
  implementation: candle
  replicas: 2
  resources:
    memory: 8Gi
    gpu: {{count: 2, vendor: {vendor}, nodeSelector: {{gpu.product: L4}}}}
    modelCache: {{persistentVolumeClaim: models}}"
        ));
        let pod = pod(&c);
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("runtime:gpu"));
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits[resource].0, "2");
        let toleration = &pod.tolerations.as_ref().expect("tolerations")[0];
        assert_eq!(toleration.key.as_deref(), Some(resource));
        assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
        assert_eq!(toleration.operator.as_deref(), Some("Exists"));
        assert_eq!(
            pod.node_selector.as_ref().expect("nodeSelector")["gpu.product"],
            "L4"
        );
        let cache = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "model-cache")
            .expect("cache");
        assert_eq!(
            cache
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("models")
        );
        let strategy = Some(&c.deployment.spec)
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .expect("rolling update");
        assert_eq!(
            strategy.max_surge,
            Some(IntOrString::Int(0)),
            "no spare GPU to surge onto"
        );
        assert!(c.pdb.is_some(), "two replicas: a PDB");
    }
}

#[test]
fn disabled_plugin_scales_to_zero_and_drops_the_pdb() {
    let c = children("spec: {implementation: echo, replicas: 3, enabled: false}");
    assert_eq!(Some(&c.deployment.spec).and_then(|s| s.replicas), Some(0));
    assert_eq!(c.pdb, None);
}

#[test]
fn restart_annotation_reaches_the_pod_template() {
    let c = children(
        "metadata: {annotations: {bkg.rs/restartedAt: '2026-01-01T00:00:00Z'}}
spec: {implementation: echo}",
    );
    let annotations = Some(&c.deployment.spec)
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations");
    assert_eq!(annotations[RESTARTED_AT], "2026-01-01T00:00:00Z");
}

#[test]
fn offline_render_has_no_owner_reference() {
    let mut p = plugin_from_yaml("spec: {implementation: echo}");
    p.metadata.uid = None;
    let c = build(&validate(&p, &Images::default()).expect("valid"));
    assert_eq!(c.deployment.metadata.owner_references, None);
}

#[test]
fn runtime_pods_pull_with_the_operators_secrets() {
    assert_eq!(
        pod(&children(CPU)).image_pull_secrets,
        None,
        "none configured"
    );
    let images = Images {
        pull_secrets: vec!["regcred".into(), "mirror".into()],
        ..Images::default()
    };
    let c = build(&validate(&plugin_from_yaml(CPU), &images).expect("valid"));
    let names: Vec<_> = pod(&c)
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["regcred", "mirror"]);
}

#[test]
fn spec_env_references_reach_the_pod_as_references() {
    let c = children(
        "
spec:
  implementation: echo
  env:
    - {name: GREETING, value: hi}
    - {name: EMPTY}
    - {name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode, optional: true}}}",
    );
    let env = pod(&c).containers[0].env.as_deref().unwrap_or_default();
    let by_name = |n: &str| env.iter().find(|e| e.name == n).expect(n);
    assert_eq!(by_name("GREETING").value.as_deref(), Some("hi"));
    assert_eq!(by_name("EMPTY").value.as_deref(), Some(""));
    let token = by_name("HF_TOKEN");
    assert_eq!(token.value, None);
    let secret = token
        .value_from
        .as_ref()
        .and_then(|f| f.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str(), secret.optional),
        ("hf", "token", None)
    );
    let mode = by_name("MODE").value_from.as_ref().expect("valueFrom");
    assert!(mode.secret_key_ref.is_none());
    let cm = mode.config_map_key_ref.as_ref().expect("configMapKeyRef");
    assert_eq!(
        (cm.name.as_str(), cm.key.as_str(), cm.optional),
        ("settings", "mode", Some(true))
    );
}

#[test]
fn the_pod_gets_only_its_settings_and_spec_env_never_a_secret() {
    // The gateway's keys live in the gateway's Secret; nothing of it (or of any other
    // Secret) may reach a plugin's container unless its spec.env names it: a fixed list of
    // settings, then spec.env, no envFrom, no service links, no service-account token.
    let c = children(CPU);
    let pod = pod(&c);
    let container = &pod.containers[0];
    assert!(container.env_from.is_none());
    let env = container.env.as_deref().unwrap_or_default();
    assert!(env.iter().all(|e| e.value_from.is_none()), "{env:?}");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "BKG_LISTEN",
            "BKG_METRICS_LISTEN",
            "BKG_PLUGIN_CONFIG_FILE",
            "BKG_INVOKE_TIMEOUT_SECS",
            "BKG_MAX_CONCURRENCY",
            "HF_HOME",
            "GREETING"
        ]
    );
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    assert!(volumes.iter().all(|v| v.secret.is_none()), "{volumes:?}");
}

#[test]
fn fixed_replicas_are_applied_with_every_deployment() {
    let c = children("spec: {implementation: echo, replicas: 3}");
    assert_eq!(c.deployment.spec.replicas, Some(3));
    assert_eq!(c.replicas, ReplicaCount::Applied);
    assert!(c.pdb.is_some());
    assert_eq!(c.hpa, None);
    // Neither replicas nor scaling: one replica, still the operator's.
    let one = children("spec: {implementation: echo}");
    assert_eq!(one.deployment.spec.replicas, Some(1));
    assert_eq!(one.replicas, ReplicaCount::Applied);
}

#[test]
fn autoscaled_deployment_leaves_replicas_out_and_the_pdb_follows_the_max() {
    let c = children("spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 4}}");
    assert_eq!(c.deployment.spec.replicas, None);
    assert_eq!(c.replicas, ReplicaCount::HandedOver { initial: 0, max: 4 });
    assert!(c.pdb.is_some(), "max 4 although at 0 now");
    assert_eq!(c.hpa, None, "inFlight: the gateway scales, no HPA");
    let serialized = serde_json::to_value(&c.deployment).expect("json");
    assert!(serialized["spec"].get("replicas").is_none());

    let single =
        children("spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 1}}");
    assert_eq!(single.pdb, None);
}

#[test]
fn a_disabled_autoscaled_plugin_is_the_operators_zero() {
    let c = children(
        "spec: {implementation: echo, enabled: false, resources: {cpu: 1}, scaling: {minReplicas: 1, maxReplicas: 4, metric: cpu}}",
    );
    assert_eq!(c.deployment.spec.replicas, Some(0));
    assert_eq!(c.replicas, ReplicaCount::Applied);
    assert_eq!((c.pdb, c.hpa), (None, None));
}

#[test]
fn handover_keeps_the_current_count_within_bounds() {
    let r = ReplicaCount::HandedOver { initial: 1, max: 4 };
    assert_eq!(r.handover(None), Some(1));
    assert_eq!(r.handover(Some(0)), Some(1));
    assert_eq!(r.handover(Some(3)), Some(3));
    assert_eq!(r.handover(Some(9)), Some(4));
    assert_eq!(ReplicaCount::Applied.handover(Some(3)), None);
}

#[test]
fn cpu_scaling_gets_an_hpa_on_the_deployment() {
    let c = children(
        "spec: {implementation: echo, resources: {cpu: 250m}, scaling: {minReplicas: 1, maxReplicas: 6, metric: cpu}}",
    );
    let hpa = c.hpa.expect("hpa");
    assert_eq!(hpa.metadata.name.as_deref(), Some("echo"));
    assert!(hpa.metadata.owner_references.is_some());
    let spec = hpa.spec;
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "echo");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 6));
    let metric = &spec.metrics.expect("metrics")[0];
    let resource = metric.resource.as_ref().expect("resource metric");
    assert_eq!(resource.name, "cpu");
    // The default target of metric cpu, and the default scale-down delay as the window.
    assert_eq!(resource.target.average_utilization, Some(80));
    let window = spec
        .behavior
        .and_then(|b| b.scale_down)
        .and_then(|d| d.stabilization_window_seconds);
    assert_eq!(window, Some(30));
    assert_eq!(c.deployment.spec.replicas, None);
    assert_eq!(c.replicas, ReplicaCount::HandedOver { initial: 1, max: 6 });
}
