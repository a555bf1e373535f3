//! The real reconcile against the in-memory API server ([`super::fake`]): objects are stored,
//! merged by server-side apply and returned by the double, the status subresource is separate,
//! and deleting a Plugin removes its children through their owner references. A scenario
//! creates a Plugin, reconciles, plays the other controllers' part (the Deployment controller's
//! status, the autoscaler's scale writes) and reconciles again. Expected statuses are written
//! out here, not computed by the code under test.

use std::sync::Arc;
use std::time::Duration;

use bkg_core::crd::Plugin;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fake::ApiServer;
use super::fixtures::plugin_from_yaml;
use super::validate::Images;
use super::{Context, Error, backoff, error_policy, metrics::Metrics, reconcile};

mod scaling;

const CM: &str = "/api/v1/namespaces/default/configmaps/echo-config";
const SVC: &str = "/api/v1/namespaces/default/services/echo";
const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/echo";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/echo";
const HPA: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/echo";
const PLUGIN: &str = "/apis/bkg.rs/v1alpha1/namespaces/default/plugins/echo";
const SELECTOR: &str = "app.kubernetes.io/instance=echo,app.kubernetes.io/name=bkg-plugin";

/// The double, the operator's context on it, and `kubectl` (another client, for the user's
/// writes).
struct Cluster {
    server: ApiServer,
    ctx: Arc<Context>,
}

impl Cluster {
    fn new() -> Self {
        let server = ApiServer::default();
        let images = Images {
            cpu: "runtime:cpu".into(),
            gpu: "runtime:gpu".into(),
            ..Images::default()
        };
        let ctx = Arc::new(Context::new(
            server.client("operator"),
            images,
            Metrics::default(),
        ));
        Self { server, ctx }
    }

    fn plugins(&self, namespace: &str) -> Api<Plugin> {
        Api::namespaced(self.server.client("kubectl"), namespace)
    }

    /// Creates the Plugin as `kubectl create` would (the server assigns uid and generation).
    async fn create(&self, plugin: &Plugin) {
        let ns = plugin.metadata.namespace.clone().unwrap_or_default();
        let mut plugin = plugin.clone();
        plugin.metadata.uid = None;
        plugin.metadata.generation = None;
        self.plugins(&ns)
            .create(&PostParams::default(), &plugin)
            .await
            .expect("create Plugin");
    }

    /// Merge-patches the Plugin, as `kubectl patch --type merge` would.
    async fn patch(&self, patch: Value) {
        self.plugins("default")
            .patch("echo", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch Plugin");
    }

    /// One reconcile of the Plugin as the double now stores it.
    async fn reconcile_in(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let plugin = self.plugins(namespace).get(name).await.expect("Plugin");
        tokio::time::timeout(
            Duration::from_secs(120),
            reconcile(Arc::new(plugin), self.ctx.clone()),
        )
        .await
        .expect("reconcile finished")
    }

    async fn reconcile(&self) -> Action {
        self.reconcile_in("default", "echo")
            .await
            .expect("reconciled")
    }

    fn get(&self, path: &str) -> Value {
        self.server
            .get(path)
            .unwrap_or_else(|| panic!("{path} is stored"))
    }

    /// The Plugin's status with the conditions' transition times taken out (they are `now`).
    fn status(&self) -> Value {
        status_of(&self.get(PLUGIN))
    }

    /// The Deployment controller's part: `n` replicas, all updated and ready, for the
    /// Deployment's current generation.
    fn deployment_runs(&self, n: i64) {
        let generation = self.get(DEPLOY)["metadata"]["generation"].clone();
        self.server.set_status(
            DEPLOY,
            json!({"observedGeneration": generation, "replicas": n, "updatedReplicas": n,
                   "readyReplicas": n, "availableReplicas": n}),
        );
    }

    /// The reasons of the Events the operator recorded, oldest first.
    fn events(&self) -> Vec<String> {
        let mut events = self.server.objects("events.k8s.io/v1", "events");
        events.sort_by_key(|e| e["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
        events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn status_of(plugin: &Value) -> Value {
    let mut s = plugin["status"].clone();
    if let Some(cs) = s["conditions"].as_array_mut() {
        for c in cs {
            assert!(c["lastTransitionTime"].is_string(), "{c}");
            c.as_object_mut().map(|c| c.remove("lastTransitionTime"));
        }
    }
    s
}

fn cond(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": generation})
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

const CPU: &str = "
spec:
  implementation: echo
  config: {greeting: hello}
  resources: {memory: 256Mi, cpu: 500m, timeoutSeconds: 10}";

#[tokio::test]
async fn cpu_plugin_gets_its_children_and_becomes_running() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(CPU)).await;
    assert_eq!(k.reconcile().await, Action::requeue(super::RESYNC));

    let plugin_uid = k.get(PLUGIN)["metadata"]["uid"].clone();
    let cm = k.get(CM);
    assert_eq!(cm["data"]["config.json"], r#"{"greeting":"hello"}"#);
    for child in [&cm, &k.get(SVC), &k.get(DEPLOY)] {
        let owner = &child["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["uid"]),
            (&json!("Plugin"), &plugin_uid)
        );
        assert_eq!(
            child["metadata"]["managedFields"][0]["manager"],
            super::MANAGER
        );
    }
    let svc = k.get(SVC);
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
               {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/instance"],
        "echo"
    );
    assert!(k.server.get(PDB).is_none(), "one replica: no PDB");
    assert!(k.server.get(HPA).is_none());
    let d = k.get(DEPLOY);
    assert_eq!(d["spec"]["replicas"], 1);
    let c = container(&d);
    assert_eq!(c["image"], "runtime:cpu");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // Metrics on their own port, so a NetworkPolicy can admit Prometheus to it alone.
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"},
               {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    let env = c["env"].as_array().expect("env");
    assert!(env.contains(&json!({"name": "BKG_METRICS_LISTEN", "value": "0.0.0.0:9090"})));
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        25
    );

    // No pod is ready yet: the Deployment has no status.
    assert_eq!(
        k.status(),
        json!({
            "phase": "Starting",
            "conditions": [
                cond("Ready", "False", "NoReplicaReady", "0/1 replicas ready", 1),
                cond("Progressing", "True", "RollingOut", "0/1 updated, 0 ready", 1),
                cond("Degraded", "False", "AsExpected", "", 1),
            ],
            "observedGeneration": 1, "replicas": 0, "readyReplicas": 0, "desiredReplicas": 1,
            "scalingOwner": "replicas", "selector": SELECTOR,
            "endpoint": "http://echo.default.svc:8080",
        })
    );

    k.deployment_runs(1);
    k.reconcile().await;
    assert_eq!(
        k.status(),
        json!({
            "phase": "Running",
            "conditions": [
                cond("Ready", "True", "AllReplicasReady", "1/1 replicas ready", 1),
                cond("Progressing", "False", "RolloutComplete", "the Deployment is up to date", 1),
                cond("Degraded", "False", "AsExpected", "", 1),
            ],
            "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "desiredReplicas": 1,
            "scalingOwner": "replicas", "selector": SELECTOR,
            "endpoint": "http://echo.default.svc:8080",
        })
    );
    assert_eq!(k.events(), ["Starting", "Running"]);
    assert_eq!(k.ctx.metrics.status_writes.get(), 2);

    // Steady state: applies change nothing (no new generation) and no status is written.
    k.reconcile().await;
    assert_eq!(k.ctx.metrics.status_writes.get(), 2);
    assert_eq!(k.get(DEPLOY)["metadata"]["generation"], 1);
    assert_eq!(k.events(), ["Starting", "Running"]);
}

#[tokio::test]
async fn gpu_plugin_gets_gpus_tolerations_and_a_pdb() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec:
  implementation: candle
  replicas: 2
  resources:
    gpu: {count: 1, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}",
    ))
    .await;
    k.reconcile().await;
    let pdb = k.get(PDB);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let d = k.get(DEPLOY);
    let c = container(&d);
    assert_eq!(c["image"], "runtime:gpu");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.product"], "NVIDIA-L4");
    assert_eq!(k.status()["phase"], "Starting");
    assert_eq!(
        k.status()["conditions"][1],
        cond(
            "Progressing",
            "True",
            "RollingOut",
            "0/2 updated, 0 ready",
            1
        )
    );
    assert_eq!(k.events(), ["Starting"]);
}

#[tokio::test]
async fn disabled_plugin_scales_to_zero_and_is_stopped() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(CPU)).await;
    k.reconcile().await;
    k.deployment_runs(1);
    k.reconcile().await;
    k.patch(json!({"spec": {"enabled": false}})).await;
    k.reconcile().await;
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 0);
    // The Deployment controller has not caught up: the pod is still there.
    assert_eq!(k.status()["phase"], "Stopping");
    k.server
        .set_status(DEPLOY, json!({"observedGeneration": 2, "replicas": 0}));
    k.reconcile().await;
    assert_eq!(
        k.status(),
        json!({
            "phase": "Stopped",
            "conditions": [
                cond("Ready", "False", "Disabled", "spec.enabled is false", 2),
                cond("Progressing", "False", "RolloutComplete", "the Deployment is up to date", 2),
                cond("Degraded", "False", "AsExpected", "", 2),
            ],
            "observedGeneration": 2, "replicas": 0, "readyReplicas": 0, "desiredReplicas": 0,
            "scalingOwner": "replicas", "selector": SELECTOR,
            "endpoint": "http://echo.default.svc:8080",
            "lastScaleTime": k.status()["lastScaleTime"],
            "scaleHistory": [{"from": 1, "to": 0, "reason": "by spec.replicas",
                              "time": k.status()["lastScaleTime"]}],
        })
    );
    assert_eq!(
        k.events(),
        ["Starting", "Running", "Stopping", "Scaled", "Stopped"]
    );
}

#[tokio::test]
async fn restart_and_config_change_roll_the_pods() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(CPU)).await;
    k.reconcile().await;
    k.deployment_runs(1);
    k.reconcile().await;
    let annotations =
        |k: &Cluster| k.get(DEPLOY)["spec"]["template"]["metadata"]["annotations"].clone();
    let before = annotations(&k);
    assert!(before.get("bkg.rs/restartedAt").is_none());

    k.patch(json!({"metadata": {"annotations": {"bkg.rs/restartedAt": "2026-11-25T03:00:00Z"}}}))
        .await;
    k.reconcile().await;
    let after_restart = annotations(&k);
    assert_eq!(after_restart["bkg.rs/restartedAt"], "2026-11-25T03:00:00Z");
    assert_eq!(
        after_restart["bkg.rs/config-hash"],
        before["bkg.rs/config-hash"]
    );
    assert_eq!(k.get(DEPLOY)["metadata"]["generation"], 2, "a new rollout");
    // The pods are still the old ones: still ready, but rolling out.
    assert_eq!(k.status()["phase"], "Running");
    assert_eq!(
        k.status()["conditions"][1],
        cond(
            "Progressing",
            "True",
            "RollingOut",
            "1/1 updated, 1 ready",
            1
        )
    );

    k.patch(json!({"spec": {"config": {"greeting": "bonjour"}}}))
        .await;
    k.reconcile().await;
    let after_config = annotations(&k);
    assert_ne!(
        after_config["bkg.rs/config-hash"],
        before["bkg.rs/config-hash"]
    );
    assert_eq!(
        k.get(CM)["data"]["config.json"],
        r#"{"greeting":"bonjour"}"#
    );
    assert_eq!(k.get(DEPLOY)["metadata"]["generation"], 3);
}

#[tokio::test]
async fn scaling_down_to_one_replica_deletes_the_pdb() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, replicas: 2, resources: {cpu: 500m}}",
    ))
    .await;
    k.reconcile().await;
    assert_eq!(k.get(PDB)["spec"]["maxUnavailable"], 1);
    k.patch(json!({"spec": {"replicas": 1}})).await;
    k.reconcile().await;
    assert!(k.server.get(PDB).is_none());
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 1);
}

#[tokio::test]
async fn deleting_the_plugin_takes_its_children_through_their_owner_references() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, resources: {cpu: 500m},
                scaling: {minReplicas: 2, maxReplicas: 5, metric: cpu}}",
    ))
    .await;
    k.reconcile().await;
    let children = [CM, SVC, PDB, DEPLOY, HPA];
    for path in children {
        k.get(path);
    }
    k.plugins("default")
        .delete("echo", &DeleteParams::background())
        .await
        .expect("delete");
    for path in children {
        assert!(k.server.get(path).is_none(), "{path} was collected");
    }
}

#[tokio::test]
async fn a_plugin_being_deleted_is_left_to_the_garbage_collector() {
    let k = Cluster::new();
    let mut plugin = plugin_from_yaml(CPU);
    plugin.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let action = reconcile(Arc::new(plugin), k.ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert!(k.server.requests().is_empty(), "no call at all");
}

#[tokio::test]
async fn invalid_spec_sets_ready_false_and_waits_for_a_change() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, env: [{name: BKG_LISTEN, value: '0.0.0.0:1'}]}",
    ))
    .await;
    assert_eq!(k.reconcile().await, Action::await_change());
    let message = r#"spec.env[0].name: "BKG_LISTEN" is set by the operator"#;
    assert_eq!(
        k.status(),
        json!({
            "phase": "Error",
            "conditions": [
                cond("Ready", "False", "InvalidSpec", message, 1),
                cond("Progressing", "False", "InvalidSpec", "waiting for the spec to change", 1),
                cond("Degraded", "True", "InvalidSpec", message, 1),
            ],
            "observedGeneration": 1,
            "lastError": message,
        })
    );
    assert!(
        k.server.get(CM).is_none() && k.server.get(DEPLOY).is_none(),
        "no child"
    );
    assert_eq!(k.events(), ["InvalidSpec"]);
}

/// The shipped GPU sample with one config value broken: refused before any child is touched,
/// with the field named in the Ready condition and the Event.
#[tokio::test]
async fn a_bad_config_is_refused_naming_the_field_before_any_child_changes() {
    let sample = include_str!("../../../../config/samples/gpu-candle.yaml");
    assert!(sample.contains("dtype: f16"), "the sample still sets dtype");
    let k = Cluster::new();
    k.create(&plugin_from_yaml(sample)).await;
    k.reconcile_in("ml", "minilm-gpu")
        .await
        .expect("reconciled");
    let deploy = "/apis/apps/v1/namespaces/ml/deployments/minilm-gpu";
    let before = k.get(deploy);
    assert_eq!(k.server.objects("events.k8s.io/v1", "events").len(), 1);

    let patch = json!({"spec": {"config": {"dtype": "f64"}}});
    k.plugins("ml")
        .patch("minilm-gpu", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let action = k
        .reconcile_in("ml", "minilm-gpu")
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    let expected = r#"spec.config.dtype: "f64" is not one of "f32", "bf16" or "f16""#;
    let status = status_of(&k.get("/apis/bkg.rs/v1alpha1/namespaces/ml/plugins/minilm-gpu"));
    assert_eq!(status["phase"], "Error");
    assert_eq!(
        status["conditions"][0],
        cond("Ready", "False", "InvalidSpec", expected, 2)
    );
    assert_eq!(
        k.get(deploy),
        before,
        "the last valid Deployment is untouched"
    );
    let events = k.server.objects("events.k8s.io/v1", "events");
    let invalid = events
        .iter()
        .find(|e| e["reason"] == "InvalidSpec")
        .expect("event");
    assert_eq!(invalid["note"], expected);
    assert_eq!(invalid["type"], "Warning");
}

#[tokio::test]
async fn conflict_is_retried_within_the_reconcile() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(CPU)).await;
    k.server.fail_next("PATCH", DEPLOY, 409);
    k.reconcile().await;
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 1);
}

#[tokio::test]
async fn server_errors_requeue_with_growing_backoff() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(CPU)).await;
    k.server.fail_next("PATCH", CM, 500);
    let error = k
        .reconcile_in("default", "echo")
        .await
        .expect_err("500 fails the reconcile");
    assert_eq!(error.category(), "api_server");
    let plugin = Arc::new(plugin_from_yaml(CPU));
    assert_eq!(
        error_policy(plugin.clone(), &error, k.ctx.clone()),
        Action::requeue(backoff(1))
    );
    assert_eq!(
        error_policy(plugin.clone(), &error, k.ctx.clone()),
        Action::requeue(backoff(2))
    );
    assert!(backoff(2) > backoff(1));
    assert_eq!(backoff(40), Duration::from_secs(300));

    // A conflict that persists is an error too, and categorised as such.
    for _ in 0..3 {
        k.server.fail_next("PATCH", CM, 409);
    }
    let error = k
        .reconcile_in("default", "echo")
        .await
        .expect_err("conflict persists");
    assert_eq!(error.category(), "conflict");
}
