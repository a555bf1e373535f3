//! The real reconcile against a scripted, mocked API server (`tower_test::mock::pair`).
//!
//! Each scenario lists the calls the operator must make, in order: method, path, a check on the
//! parsed body, and the answer. Anything else, or a missing call, fails the test.

use std::sync::Arc;
use std::time::Duration;

use bkg_core::crd::Plugin;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::plugin_from_yaml;
use super::validate::Images;
use super::{Context, Error, backoff, error_policy, metrics::Metrics, reconcile};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the mocked API server answers.
enum Reply {
    /// The request body back, with this `status` (applies: the object as now stored).
    Echo(Option<Value>),
    /// The Plugin with the requested status (status subresource).
    Plugin(Box<Plugin>),
    /// This object, 200.
    Json(Value),
    /// A Kubernetes `Status` error with this code.
    Code(u16),
}

struct Step {
    method: &'static str,
    path: String,
    /// Field manager of a PATCH (a server-side apply with force).
    manager: &'static str,
    check: Box<dyn Fn(&Value) + Send>,
    reply: Reply,
}

fn step(method: &'static str, path: &str, reply: Reply) -> Step {
    Step {
        method,
        path: path.to_owned(),
        manager: super::MANAGER,
        check: Box::new(|_| {}),
        reply,
    }
}

impl Step {
    fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }

    fn manager(mut self, manager: &'static str) -> Self {
        self.manager = manager;
        self
    }
}

const CM: &str = "/api/v1/namespaces/default/configmaps/echo-config";
const SVC: &str = "/api/v1/namespaces/default/services/echo";
const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/echo";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/echo";
const HPA: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/echo";
const STATUS: &str = "/apis/bkg.rs/v1alpha1/namespaces/default/plugins/echo/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn status_json(code: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
           "reason": match code { 404 => "NotFound", 409 => "Conflict", _ => "InternalError" },
           "message": format!("scripted {code}")})
}

async fn serve(mut handle: Handle, steps: Vec<Step>) {
    for (i, s) in steps.into_iter().enumerate() {
        let (request, send) = handle.next_request().await.unwrap_or_else(|| {
            panic!("step {i}: expected {} {}, got no request", s.method, s.path)
        });
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert_eq!(
            (method.as_str(), path.as_str()),
            (s.method, s.path.as_str()),
            "step {i}"
        );
        if method == "PATCH" {
            assert!(
                query.contains(&format!("fieldManager={}", s.manager)),
                "step {i}: {query}"
            );
            assert!(
                query.contains("force=true"),
                "step {i}: server-side apply with force"
            );
        }
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (s.check)(&body);
        let (code, answer) = match s.reply {
            Reply::Echo(status) => {
                let mut obj = body.clone();
                obj["metadata"]["generation"] = json!(1);
                if let Some(status) = status {
                    obj["status"] = status;
                }
                (200, obj)
            }
            Reply::Plugin(plugin) => {
                let mut obj = serde_json::to_value(&*plugin).expect("plugin json");
                obj["status"] = body["status"].clone();
                (200, obj)
            }
            Reply::Json(v) => (200, v),
            Reply::Code(code) => (code, status_json(code)),
        };
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
            .expect("response");
        send.send_response(response);
    }
    // Every client clone is gone once the reconcile is done: any further call is a failure.
    if let Some((request, _)) = handle.next_request().await {
        panic!("unexpected {} {}", request.method(), request.uri().path());
    }
}

/// Runs one reconcile of `plugin` against the scripted server.
async fn run(plugin: Plugin, steps: Vec<Step>) -> (Result<Action, Error>, Arc<Context>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let images = Images {
        cpu: "runtime:cpu".into(),
        gpu: "runtime:gpu".into(),
        ..Images::default()
    };
    let ctx = Arc::new(Context::new(client, images, Metrics::default()));
    let server = tokio::spawn(serve(handle, steps));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(plugin), ctx.clone()),
    )
    .await
    .expect("reconcile finished");
    (result, finish(ctx, server).await)
}

async fn finish(ctx: Arc<Context>, server: tokio::task::JoinHandle<()>) -> Arc<Context> {
    // The mock keeps the script open while any Client clone lives; the context holds two
    // (API and event recorder). Keep the metrics, drop the clients.
    let metrics = ctx.metrics.clone();
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("script finished")
        .expect("script passed");
    let (mock, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    Arc::new(Context::new(
        kube::Client::new(mock, "default"),
        Images::default(),
        metrics,
    ))
}

fn running() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .expect("condition")
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
    let plugin = plugin_from_yaml(CPU);
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)).check(|b| {
            assert_eq!(b["kind"], "ConfigMap");
            assert_eq!(b["data"]["config.json"], r#"{"greeting":"hello"}"#);
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Plugin");
        }),
        step("PATCH", SVC, Reply::Echo(None)).check(|b| {
            assert_eq!(b["spec"]["ports"][0]["port"], 8080);
            assert_eq!(b["spec"]["ports"][0]["targetPort"], "http");
            assert_eq!(b["spec"]["ports"][1]["port"], 9090);
            assert_eq!(b["spec"]["ports"][1]["targetPort"], "metrics");
            assert_eq!(b["spec"]["selector"]["app.kubernetes.io/instance"], "echo");
        }),
        step("DELETE", PDB, Reply::Code(404)),
        step("PATCH", DEPLOY, Reply::Echo(Some(running()))).check(|b| {
            assert_eq!(b["spec"]["replicas"], 1);
            let c = container(b);
            assert_eq!(c["image"], "runtime:cpu");
            assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
            assert!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
            // Metrics on their own port, so a NetworkPolicy can admit Prometheus to it alone.
            assert_eq!(
                c["ports"],
                serde_json::json!([
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                ])
            );
            let metrics_env = c["env"]
                .as_array()
                .and_then(|env| env.iter().find(|e| e["name"] == "BKG_METRICS_LISTEN"));
            assert_eq!(
                metrics_env.map(|e| &e["value"]),
                Some(&serde_json::json!("0.0.0.0:9090"))
            );
            assert_eq!(
                b["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
                "9090"
            );
            assert_eq!(
                b["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                25
            );
        }),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Running");
            assert_eq!(s["readyReplicas"], 1);
            assert_eq!(s["observedGeneration"], 1);
            assert_eq!(s["endpoint"], "http://echo.default.svc:8080");
            assert_eq!(condition(s, "Ready")["status"], "True");
            assert_eq!(condition(s, "Progressing")["status"], "False");
            assert_eq!(condition(s, "Degraded")["status"], "False");
        }),
        step("POST", EVENTS, Reply::Echo(None)).check(|b| {
            assert_eq!(b["reason"], "Running");
            assert_eq!(b["type"], "Normal");
            assert_eq!(b["regarding"]["name"], "echo");
        }),
    ];
    let (result, ctx) = run(plugin, steps).await;
    assert_eq!(result.expect("reconciled"), Action::requeue(super::RESYNC));
    assert_eq!(ctx.metrics.status_writes.get(), 1);
}

#[tokio::test]
async fn gpu_plugin_gets_gpus_tolerations_and_a_pdb() {
    let plugin = plugin_from_yaml(
        "spec:
  implementation: candle
  replicas: 2
  resources:
    gpu: {count: 1, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}",
    );
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("PATCH", PDB, Reply::Echo(None)).check(|b| {
            assert_eq!(b["kind"], "PodDisruptionBudget");
            assert_eq!(b["spec"]["maxUnavailable"], 1);
        }),
        step("PATCH", DEPLOY, Reply::Echo(Some(json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 0}))))
            .check(|b| {
                let c = container(b);
                assert_eq!(c["image"], "runtime:gpu");
                assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
                let pod = &b["spec"]["template"]["spec"];
                assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
                assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
                assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.product"], "NVIDIA-L4");
            }),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            assert_eq!(b["status"]["phase"], "Starting");
            assert_eq!(condition(&b["status"], "Progressing")["status"], "True");
        }),
        step("POST", EVENTS, Reply::Echo(None)).check(|b| assert_eq!(b["reason"], "Starting")),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn disabled_plugin_scales_to_zero_and_is_stopped() {
    let mut plugin = plugin_from_yaml("spec: {implementation: echo, enabled: false}");
    plugin.status = Some(serde_json::from_value(json!({"phase": "Running"})).expect("status"));
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("DELETE", PDB, Reply::Code(404)),
        step(
            "PATCH",
            DEPLOY,
            Reply::Echo(Some(json!({"observedGeneration": 1}))),
        )
        .check(|b| assert_eq!(b["spec"]["replicas"], 0)),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            assert_eq!(b["status"]["phase"], "Stopped");
            assert_eq!(condition(&b["status"], "Ready")["reason"], "Disabled");
        }),
        step("POST", EVENTS, Reply::Echo(None)).check(|b| assert_eq!(b["reason"], "Stopped")),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

/// Reconciles `plugin` whose status is already what the operator would write; returns the pod
/// template annotations it applied. No status write happens.
async fn steady_template_annotations(plugin: Plugin) -> Value {
    let (tx, rx) = std::sync::mpsc::channel();
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("DELETE", PDB, Reply::Code(404)),
        step("PATCH", DEPLOY, Reply::Echo(Some(running()))).check(move |b| {
            tx.send(b["spec"]["template"]["metadata"]["annotations"].clone())
                .expect("send");
        }),
        step("DELETE", HPA, Reply::Code(404)),
    ];
    let (result, ctx) = run(plugin, steps).await;
    result.expect("reconciled");
    assert_eq!(
        ctx.metrics.status_writes.get(),
        0,
        "steady state writes no status"
    );
    rx.recv().expect("annotations")
}

/// The status the operator writes for a running echo, so a scenario can start from it.
fn settled(mut plugin: Plugin) -> Plugin {
    let v = super::validate::validate(&plugin, &Images::default()).expect("valid");
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(json!({"metadata": {"generation": 1}, "status": running()}))
            .expect("deployment");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    let status = super::status::observed(&plugin, &v, &deployment);
    plugin.status = Some(super::status::merge(&Default::default(), status, &now));
    plugin
}

#[tokio::test]
async fn restart_and_config_change_roll_the_pods_without_status_churn() {
    let base = settled(plugin_from_yaml(CPU));
    let before = steady_template_annotations(base.clone()).await;
    assert!(before.get("bkg.rs/restartedAt").is_none());

    let mut restarted = base.clone();
    restarted.metadata.annotations = Some(
        [(
            "bkg.rs/restartedAt".to_owned(),
            "2026-11-25T03:00:00Z".to_owned(),
        )]
        .into(),
    );
    let after_restart = steady_template_annotations(restarted).await;
    assert_eq!(after_restart["bkg.rs/restartedAt"], "2026-11-25T03:00:00Z");
    assert_eq!(
        after_restart["bkg.rs/config-hash"],
        before["bkg.rs/config-hash"]
    );

    let mut reconfigured = base;
    reconfigured.spec.config = Some(json!({"greeting": "bonjour"}));
    let after_config = steady_template_annotations(reconfigured).await;
    assert_ne!(
        after_config["bkg.rs/config-hash"],
        before["bkg.rs/config-hash"]
    );
}

#[tokio::test]
async fn scaling_down_to_one_replica_deletes_the_pdb() {
    let plugin = settled(plugin_from_yaml(CPU));
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                     "metadata": {"name": "echo", "namespace": "default"}});
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("DELETE", PDB, Reply::Json(pdb)),
        step("PATCH", DEPLOY, Reply::Echo(Some(running()))),
        step("DELETE", HPA, Reply::Code(404)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn deleted_plugin_is_left_to_the_garbage_collector() {
    let mut plugin = plugin_from_yaml(CPU);
    plugin.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let (result, _) = run(plugin, vec![]).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn invalid_spec_sets_ready_false_and_waits_for_a_change() {
    let plugin = plugin_from_yaml(
        "spec: {implementation: echo, env: [{name: BKG_LISTEN, value: '0.0.0.0:1'}]}",
    );
    let steps = vec![
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Error");
            let ready = condition(s, "Ready");
            assert_eq!(
                (ready["status"].as_str(), ready["reason"].as_str()),
                (Some("False"), Some("InvalidSpec"))
            );
            assert!(
                ready["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("spec.env[0].name")
            );
            assert_eq!(condition(s, "Degraded")["status"], "True");
        }),
        step("POST", EVENTS, Reply::Echo(None)).check(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reason"], "InvalidSpec");
        }),
    ];
    let (result, _) = run(plugin, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}

/// The shipped GPU sample with one config value broken: refused before any child is touched
/// (the script has no ConfigMap or Deployment step, so the last valid Deployment stays as it
/// was), with the field named in the Ready condition and the Event.
#[tokio::test]
async fn a_bad_config_is_refused_naming_the_field_before_any_child_changes() {
    let sample = include_str!("../../../config/samples/gpu-candle.yaml");
    assert!(sample.contains("dtype: f16"), "the sample still sets dtype");
    let valid = plugin_from_yaml(sample);
    assert!(
        super::validate::validate(&valid, &Images::default()).is_ok(),
        "the shipped sample is valid"
    );
    let plugin = plugin_from_yaml(&sample.replace("dtype: f16", "dtype: f64"));
    let expected = r#"spec.config.dtype: "f64" is not one of "f32", "bf16" or "f16""#;
    let steps = vec![
        step(
            "PATCH",
            "/apis/bkg.rs/v1alpha1/namespaces/ml/plugins/minilm-gpu/status",
            Reply::Plugin(Box::new(plugin.clone())),
        )
        .check(move |b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Error");
            let ready = condition(s, "Ready");
            assert_eq!(
                (ready["status"].as_str(), ready["reason"].as_str()),
                (Some("False"), Some("InvalidSpec"))
            );
            assert_eq!(ready["message"], expected);
        }),
        step(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/ml/events",
            Reply::Echo(None),
        )
        .check(move |b| {
            assert_eq!(b["reason"], "InvalidSpec");
            assert!(
                b["note"].as_str().unwrap_or_default().contains(expected),
                "{b}"
            );
        }),
    ];
    let (result, _) = run(plugin, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn conflict_is_retried_within_the_reconcile() {
    let plugin = settled(plugin_from_yaml(CPU));
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("DELETE", PDB, Reply::Code(404)),
        step("PATCH", DEPLOY, Reply::Code(409)),
        step("PATCH", DEPLOY, Reply::Echo(Some(running()))),
        step("DELETE", HPA, Reply::Code(404)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("conflict retried");
}

#[tokio::test]
async fn server_errors_requeue_with_growing_backoff() {
    let plugin = settled(plugin_from_yaml(CPU));
    let (result, ctx) = run(plugin.clone(), vec![step("PATCH", CM, Reply::Code(500))]).await;
    let error = result.expect_err("500 fails the reconcile");
    assert_eq!(error.category(), "api_server");
    let plugin = Arc::new(plugin);
    assert_eq!(
        error_policy(plugin.clone(), &error, ctx.clone()),
        Action::requeue(backoff(1))
    );
    assert_eq!(
        error_policy(plugin.clone(), &error, ctx.clone()),
        Action::requeue(backoff(2))
    );
    assert!(backoff(2) > backoff(1));
    assert_eq!(backoff(40), Duration::from_secs(300));

    // A conflict that persists is an error too, and categorised as such.
    let (result, _) = run(
        plugin.as_ref().clone(),
        vec![
            step("PATCH", CM, Reply::Code(409)),
            step("PATCH", CM, Reply::Code(409)),
            step("PATCH", CM, Reply::Code(409)),
        ],
    )
    .await;
    assert_eq!(
        result.expect_err("conflict persists").category(),
        "conflict"
    );
}

/// A live Deployment at `replicas`, whose `spec.replicas` field `manager` last wrote (through
/// the scale subresource when `subresource` is set), running every replica.
fn live_deployment(replicas: i32, manager: &str, subresource: Option<&str>) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": if subresource.is_some() { "Update" } else { "Apply" },
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": "default", "generation": 4,
                     "managedFields": [
                        {"manager": "bkg-operator", "operation": "Apply", "apiVersion": "apps/v1",
                         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
                        entry,
                     ]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/instance": "echo"}},
                 "template": {"spec": {"containers": []}}},
        "status": {"observedGeneration": 4, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": replicas, "availableReplicas": replicas},
    })
}

#[tokio::test]
async fn kubectl_scale_of_the_plugin_is_followed_not_reverted() {
    // The manifest said 1; `kubectl scale plugin/echo --replicas=3` wrote spec.replicas through
    // the Plugin's scale subresource.
    let mut plugin = settled(plugin_from_yaml(
        "spec: {implementation: echo, replicas: 1, resources: {cpu: 500m}}",
    ));
    plugin.spec.replicas = Some(3);
    plugin.metadata.generation = Some(2);
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        // More than one replica now: a PDB.
        step("PATCH", PDB, Reply::Echo(None)),
        step(
            "PATCH",
            DEPLOY,
            Reply::Json(live_deployment(3, "bkg-operator", None)),
        )
        .check(|b| assert_eq!(b["spec"]["replicas"], 3, "the scaled count, not 1")),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            let s = &b["status"];
            assert_eq!(s["desiredReplicas"], 3);
            assert_eq!(s["replicas"], 3);
            assert_eq!(s["scalingOwner"], "replicas");
            assert!(s["lastScaleTime"].is_string(), "{s}");
            assert_eq!(s["scaleHistory"][0]["from"], 1);
            assert_eq!(s["scaleHistory"][0]["to"], 3);
            assert_eq!(s["scaleHistory"][0]["reason"], "by spec.replicas");
        }),
        step("POST", EVENTS, Reply::Echo(None)).check(|b| {
            assert_eq!(b["reason"], "Scaled");
            assert_eq!(b["note"], "from 1 to 3: spec.replicas");
        }),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

const AUTOSCALED: &str = "
spec:
  implementation: echo
  scaling: {minReplicas: 0, maxReplicas: 4}";

#[tokio::test]
async fn autoscaled_deployment_is_applied_without_replicas_so_scale_writes_survive() {
    // The gateway's autoscaler set 3 through the Deployment's scale subresource.
    let plugin = plugin_from_yaml(AUTOSCALED);
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        // The PDB follows maxReplicas (4), not the count of the moment.
        step("PATCH", PDB, Reply::Echo(None)),
        step(
            "GET",
            DEPLOY,
            Reply::Json(live_deployment(3, "bkg-autoscaler", Some("scale"))),
        ),
        step(
            "PATCH",
            DEPLOY,
            Reply::Json(live_deployment(3, "bkg-autoscaler", Some("scale"))),
        )
        .check(|b| {
            assert_eq!(b["kind"], "Deployment");
            assert!(b["spec"].get("replicas").is_none(), "{}", b["spec"]);
            assert!(b["spec"]["template"].is_object());
        }),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            let s = &b["status"];
            assert_eq!(s["desiredReplicas"], 3, "what the autoscaler set");
            assert_eq!(s["scalingOwner"], "autoscaler");
            assert_eq!(
                s["selector"],
                "app.kubernetes.io/instance=echo,app.kubernetes.io/name=bkg-plugin"
            );
        }),
        // The phase change only: the gateway records its own scales.
        step("POST", EVENTS, Reply::Echo(None)).check(|b| assert_eq!(b["reason"], "Running")),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn autoscaled_deployment_is_created_at_min_and_handed_to_the_autoscaler() {
    let plugin = plugin_from_yaml(AUTOSCALED);
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("PATCH", PDB, Reply::Echo(None)),
        step("GET", DEPLOY, Reply::Code(404)),
        // Created at minReplicas (0: scaled to zero until the first invoke) …
        step(
            "PATCH",
            DEPLOY,
            Reply::Echo(Some(json!({"observedGeneration": 1}))),
        )
        .check(|b| assert_eq!(b["spec"]["replicas"], 0)),
        // … and the count handed to the autoscaler's field manager, alone.
        step("PATCH", DEPLOY, Reply::Echo(None))
            .manager(bkg_core::wire::SCALE_MANAGER)
            .check(|b| {
                assert_eq!(b["spec"], json!({"replicas": 0}));
                assert_eq!(b["metadata"]["name"], "echo");
            }),
        step("DELETE", HPA, Reply::Code(404)),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            let s = &b["status"];
            assert_eq!(s["desiredReplicas"], 0);
            assert_eq!(s["phase"], "Running", "scaled to zero still serves");
            assert_eq!(condition(s, "Ready")["reason"], "ScaledToZero");
            assert_eq!(condition(s, "Ready")["status"], "True");
        }),
        step("POST", EVENTS, Reply::Echo(None)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn a_count_the_operator_applied_is_handed_over_within_bounds_before_it_is_left_out() {
    // The Plugin had `replicas: 6` (the operator's apply owns 6); now it scales between 0 and 4.
    let plugin = settled(plugin_from_yaml(AUTOSCALED));
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("PATCH", PDB, Reply::Echo(None)),
        step(
            "GET",
            DEPLOY,
            Reply::Json(live_deployment(6, "bkg-operator", None)),
        ),
        step("PATCH", DEPLOY, Reply::Echo(None))
            .manager(bkg_core::wire::SCALE_MANAGER)
            .check(|b| assert_eq!(b["spec"], json!({"replicas": 4}))),
        step("PATCH", DEPLOY, Reply::Echo(Some(running())))
            .check(|b| assert!(b["spec"].get("replicas").is_none())),
        step("DELETE", HPA, Reply::Code(404)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn cpu_scaling_renders_an_hpa_and_leaves_the_count_to_it() {
    let plugin = plugin_from_yaml(
        "spec:
  implementation: echo
  resources: {cpu: 500m}
  scaling: {minReplicas: 2, maxReplicas: 5, metric: cpu, target: 70, scaleDownDelaySeconds: 120}",
    );
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("PATCH", PDB, Reply::Echo(None)),
        // The HPA controller scaled the Deployment to 4.
        step(
            "GET",
            DEPLOY,
            Reply::Json(live_deployment(4, "kube-controller-manager", Some("scale"))),
        ),
        step(
            "PATCH",
            DEPLOY,
            Reply::Json(live_deployment(4, "kube-controller-manager", Some("scale"))),
        )
        .check(|b| assert!(b["spec"].get("replicas").is_none(), "{}", b["spec"])),
        step("PATCH", HPA, Reply::Echo(None)).check(|b| {
            assert_eq!(b["apiVersion"], "autoscaling/v2");
            assert_eq!(b["kind"], "HorizontalPodAutoscaler");
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Plugin");
            let spec = &b["spec"];
            assert_eq!(
                spec["scaleTargetRef"],
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "echo"})
            );
            assert_eq!(
                (spec["minReplicas"].as_i64(), spec["maxReplicas"].as_i64()),
                (Some(2), Some(5))
            );
            assert_eq!(
                spec["metrics"],
                json!([{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70}}}])
            );
            assert_eq!(
                spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
                120
            );
        }),
        step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(|b| {
            assert_eq!(b["status"]["desiredReplicas"], 4);
            assert_eq!(b["status"]["scalingOwner"], "hpa");
        }),
        step("POST", EVENTS, Reply::Echo(None)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn bad_scaling_is_refused_naming_the_field_and_the_deployment_is_left_alone() {
    for (yaml, fields) in [
        (
            "spec: {implementation: echo, scaling: {minReplicas: 5, maxReplicas: 2}}",
            &["spec.scaling.minReplicas"][..],
        ),
        (
            "spec: {implementation: echo, scaling: {minReplicas: -1, maxReplicas: 2, target: 0}}",
            &["spec.scaling.minReplicas", "spec.scaling.target"][..],
        ),
        (
            "spec: {implementation: echo, replicas: 2, scaling: {maxReplicas: 2}}",
            &["spec.replicas"][..],
        ),
        (
            "spec: {implementation: echo, scaling: {minReplicas: 1, maxReplicas: 2, metric: cpu}}",
            &["spec.resources.cpu"][..],
        ),
    ] {
        // It ran before as a valid Plugin: its status keeps the replicas it had.
        let mut plugin = settled(plugin_from_yaml("spec: {implementation: echo}"));
        plugin.spec = plugin_from_yaml(yaml).spec;
        let fields: Vec<&'static str> = fields.to_vec();
        // No apply of any child: the last valid Deployment keeps serving.
        let steps = vec![
            step("PATCH", STATUS, Reply::Plugin(Box::new(plugin.clone()))).check(move |b| {
                let s = &b["status"];
                let ready = condition(s, "Ready");
                assert_eq!(
                    (ready["status"].as_str(), ready["reason"].as_str()),
                    (Some("False"), Some("InvalidSpec"))
                );
                let message = ready["message"].as_str().unwrap_or_default();
                for f in &fields {
                    assert!(message.contains(&format!("{f}:")), "{message} names {f}");
                }
                assert_eq!(s["readyReplicas"], 1);
            }),
            step("POST", EVENTS, Reply::Echo(None))
                .check(|b| assert_eq!(b["reason"], "InvalidSpec")),
        ];
        let (result, _) = run(plugin, steps).await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
    }
}

#[tokio::test]
async fn a_lowered_max_moves_the_autoscalers_count_inside_at_once() {
    // The autoscaler had 6 under maxReplicas 8; the manifest now says 4.
    let plugin = settled(plugin_from_yaml(AUTOSCALED));
    let steps = vec![
        step("PATCH", CM, Reply::Echo(None)),
        step("PATCH", SVC, Reply::Echo(None)),
        step("PATCH", PDB, Reply::Echo(None)),
        step(
            "GET",
            DEPLOY,
            Reply::Json(live_deployment(6, "bkg-autoscaler", Some("scale"))),
        ),
        step("PATCH", DEPLOY, Reply::Echo(None))
            .manager(bkg_core::wire::SCALE_MANAGER)
            .check(|b| assert_eq!(b["spec"], json!({"replicas": 4}))),
        step("PATCH", DEPLOY, Reply::Echo(Some(running())))
            .check(|b| assert!(b["spec"].get("replicas").is_none())),
        step("DELETE", HPA, Reply::Code(404)),
    ];
    let (result, _) = run(plugin, steps).await;
    result.expect("reconciled");
}
