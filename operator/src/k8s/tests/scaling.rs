//! Scaling against the API double: bad scaling refused, `kubectl scale` followed, the
//! autoscaler's count handed over and kept within bounds, CPU scaling through an HPA.

use super::*;

#[tokio::test]
async fn bad_scaling_is_refused_naming_the_field_and_the_deployment_is_left_alone() {
    for (patch, message) in [
        (
            json!({"scaling": {"minReplicas": 5, "maxReplicas": 2}}),
            "spec.scaling.minReplicas: 5 is above spec.scaling.maxReplicas (2)",
        ),
        (
            json!({"replicas": 2, "scaling": {"maxReplicas": 2}}),
            "spec.replicas: set spec.replicas (a fixed count) or spec.scaling (autoscaling), not both",
        ),
        (
            json!({"scaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "cpu"}}),
            "spec.resources.cpu: required with spec.scaling.metric cpu: utilisation is measured against this request",
        ),
    ] {
        // It ran before as a valid Plugin: its status keeps the replicas it had.
        let k = Cluster::new();
        k.create(&plugin_from_yaml("spec: {implementation: echo}"))
            .await;
        k.reconcile().await;
        k.deployment_runs(1);
        k.reconcile().await;
        let before = k.get(DEPLOY);
        k.patch(json!({"spec": patch})).await;
        assert_eq!(k.reconcile().await, Action::await_change());
        let status = k.status();
        assert_eq!(
            status["conditions"][0],
            cond("Ready", "False", "InvalidSpec", message, 2)
        );
        assert_eq!(status["readyReplicas"], 1, "{patch}");
        assert_eq!(
            k.get(DEPLOY),
            before,
            "{patch}: the Deployment is untouched"
        );
    }
}

#[tokio::test]
async fn kubectl_scale_of_the_plugin_is_followed_not_reverted() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, replicas: 1, resources: {cpu: 500m}}",
    ))
    .await;
    k.reconcile().await;
    k.deployment_runs(1);
    k.reconcile().await;
    // `kubectl scale plugin/echo --replicas=3` writes spec.replicas.
    k.patch(json!({"spec": {"replicas": 3}})).await;
    k.reconcile().await;
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 3);
    k.get(PDB);
    let s = k.status();
    assert_eq!(
        (&s["desiredReplicas"], &s["scalingOwner"]),
        (&json!(3), &json!("replicas"))
    );
    assert_eq!(
        s["scaleHistory"],
        json!([{"from": 1, "to": 3, "reason": "by spec.replicas", "time": s["lastScaleTime"]}])
    );
    let events = k.server.objects("events.k8s.io/v1", "events");
    let scaled = events
        .iter()
        .find(|e| e["reason"] == "Scaled")
        .expect("Scaled");
    assert_eq!(scaled["note"], "from 1 to 3: spec.replicas");
}

const AUTOSCALED: &str = "
spec:
  implementation: echo
  scaling: {minReplicas: 0, maxReplicas: 4}";

/// The managers that own the Deployment's `spec.replicas`, as `manager/operation`.
fn replica_owners(deployment: &Value) -> Vec<String> {
    deployment["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter(|m| !m["fieldsV1"]["f:spec"]["f:replicas"].is_null())
        .map(|m| {
            format!(
                "{}/{}",
                m["manager"].as_str().unwrap_or_default(),
                m["operation"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn autoscaled_deployment_is_created_at_min_handed_over_and_its_scale_writes_survive() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(AUTOSCALED)).await;
    k.reconcile().await;
    let d = k.get(DEPLOY);
    assert_eq!(d["spec"]["replicas"], 0, "created at minReplicas");
    // Applied at creation, then handed over with the same value: owned by both for now.
    assert_eq!(
        replica_owners(&d),
        ["bkg-operator/Apply", "bkg-autoscaler/Apply"]
    );
    k.deployment_runs(0);
    k.reconcile().await;
    // The operator's second apply leaves the count out: the autoscaler alone owns it.
    assert_eq!(replica_owners(&k.get(DEPLOY)), ["bkg-autoscaler/Apply"]);
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 0);
    assert_eq!(
        k.status(),
        json!({
            "phase": "Running",
            "conditions": [
                cond("Ready", "True", "ScaledToZero",
                     "scaled to zero by the autoscaler: an invoke is held while a replica starts", 1),
                cond("Progressing", "False", "RolloutComplete", "the Deployment is up to date", 1),
                cond("Degraded", "False", "AsExpected", "", 1),
            ],
            "observedGeneration": 1, "replicas": 0, "readyReplicas": 0, "desiredReplicas": 0,
            "scalingOwner": "autoscaler", "selector": SELECTOR,
            "endpoint": "http://echo.default.svc:8080",
        })
    );
    // The gateway's autoscaler scales to 3 through the scale subresource.
    k.server.scale(DEPLOY, 3, bkg_core::wire::SCALE_MANAGER);
    k.deployment_runs(3);
    k.reconcile().await;
    let d = k.get(DEPLOY);
    assert_eq!(
        d["spec"]["replicas"], 3,
        "the operator's apply left the count alone"
    );
    assert_eq!(replica_owners(&d), ["bkg-autoscaler/Update"]);
    let s = k.status();
    assert_eq!(
        (&s["desiredReplicas"], &s["phase"]),
        (&json!(3), &json!("Running"))
    );
    // The PDB follows maxReplicas, not the count of the moment.
    assert_eq!(k.get(PDB)["spec"]["maxUnavailable"], 1);
}

#[tokio::test]
async fn a_count_the_operator_applied_is_handed_over_within_bounds_before_it_is_left_out() {
    // The Plugin had `replicas: 6` (the operator's apply owns 6); now it scales between 0 and 4.
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, replicas: 6}",
    ))
    .await;
    k.reconcile().await;
    assert_eq!(replica_owners(&k.get(DEPLOY)), ["bkg-operator/Apply"]);
    k.patch(json!({"spec": {"replicas": null, "scaling": {"minReplicas": 0, "maxReplicas": 4}}}))
        .await;
    k.reconcile().await;
    let d = k.get(DEPLOY);
    // Left out of the operator's apply without a hand-over, the field would be removed.
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(replica_owners(&d), ["bkg-autoscaler/Apply"]);
}

#[tokio::test]
async fn a_lowered_max_moves_the_autoscalers_count_inside_at_once() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 8}}",
    ))
    .await;
    k.reconcile().await;
    k.server.scale(DEPLOY, 6, bkg_core::wire::SCALE_MANAGER);
    k.patch(json!({"spec": {"scaling": {"maxReplicas": 4}}}))
        .await;
    k.reconcile().await;
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 4);
}

#[tokio::test]
async fn cpu_scaling_renders_an_hpa_and_leaves_the_count_to_it() {
    let k = Cluster::new();
    k.create(&plugin_from_yaml(
        "spec:
  implementation: echo
  resources: {cpu: 500m}
  scaling: {minReplicas: 2, maxReplicas: 5, metric: cpu, target: 70, scaleDownDelaySeconds: 120}",
    ))
    .await;
    k.reconcile().await;
    let hpa = k.get(HPA);
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["kind"], "Plugin");
    let spec = &hpa["spec"];
    assert_eq!(
        spec["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "echo"})
    );
    assert_eq!(
        (&spec["minReplicas"], &spec["maxReplicas"]),
        (&json!(2), &json!(5))
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
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 2);

    // The HPA controller scales the Deployment to 4.
    k.server.scale(DEPLOY, 4, "kube-controller-manager");
    k.reconcile().await;
    assert_eq!(k.get(DEPLOY)["spec"]["replicas"], 4);
    let s = k.status();
    assert_eq!(
        (&s["desiredReplicas"], &s["scalingOwner"]),
        (&json!(4), &json!("hpa"))
    );
}
