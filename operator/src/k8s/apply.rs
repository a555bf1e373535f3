//! Step 3 of the pipeline: server-side apply the children, delete the ones no longer wanted.
//!
//! One field manager ([`super::MANAGER`]) with `force`, so the operator owns exactly the fields it
//! sets and a `kubectl edit` of another field survives.
//!
//! The Deployment's `spec.replicas` is the one field that may belong to someone else: while
//! `spec.scaling` owns the count ([`ReplicaCount::HandedOver`]) the operator's apply leaves it
//! out. Leaving out a field this manager alone owns would reset it (to 1), so the count is first
//! handed over, as the Kubernetes docs prescribe for handing `replicas` to an HPA: applied alone
//! under [`SCALE_MANAGER`], which the gateway's autoscaler also writes the scale subresource as.
//!
//! ```text
//!  Deployment absent ─▶ apply with replicas: initial ─▶ hand over (SCALE_MANAGER) ─┐
//!  only we own replicas, or the count is outside [initial, max] ─▶ hand over the ──┤
//!    current count moved within [initial, max]                                     ├▶ apply without replicas
//!  another manager owns it (autoscaler, HPA), within bounds ───────────────────────┘
//! ```

use std::fmt::Debug;
use std::time::Duration;

use bkg_core::wire::SCALE_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{Children, ReplicaCount};
use super::{Error, MANAGER, Result};

/// Attempts of one API call that the server answered with 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 3;

/// Whether a kube error is the API server's 409.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Runs `call` again when it fails with 409 Conflict (a concurrent writer won the race); any
/// other error, or the last conflict, is returned.
pub async fn retry_on_conflict<T, F, Fut>(action: &'static str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(action, attempt, "conflict; retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(Error::kube(action, e)),
        }
    }
}

async fn apply_one<K>(client: &Client, namespace: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    let action = apply_action::<K>();
    let patch = Patch::Apply(obj);
    retry_on_conflict(action, || api.patch(&name, &params, &patch)).await
}

fn apply_action<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "ConfigMap" => "apply ConfigMap",
        "Service" => "apply Service",
        "Deployment" => "apply Deployment",
        "PodDisruptionBudget" => "apply PodDisruptionBudget",
        "HorizontalPodAutoscaler" => "apply HorizontalPodAutoscaler",
        _ => "apply",
    }
}

/// Deletes a child that is no longer wanted; already gone is fine.
async fn delete_one<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube("delete child", e)),
    }
}

/// Applies every child and returns the Deployment as the API server now has it (with status).
pub async fn apply(
    client: &Client,
    namespace: &str,
    name: &str,
    children: &Children,
) -> Result<Deployment> {
    // Destructured, not accessed by field: a new child kind fails to compile here until it is
    // applied and cleaned up.
    let Children {
        config_map,
        service,
        deployment,
        pdb,
        hpa,
        replicas,
    } = children;
    apply_one(client, namespace, config_map).await?;
    apply_one(client, namespace, service).await?;
    match pdb {
        Some(pdb) => {
            apply_one(client, namespace, pdb).await?;
        }
        None => delete_one::<PodDisruptionBudget>(client, namespace, name).await?,
    }
    let deployment = apply_deployment(client, namespace, name, deployment, *replicas).await?;
    // After the Deployment: the HPA's target exists once it starts scaling.
    match hpa {
        Some(hpa) => {
            apply_one(client, namespace, hpa).await?;
        }
        None => delete_one::<HorizontalPodAutoscaler>(client, namespace, name).await?,
    }
    Ok(deployment)
}

/// Applies the Deployment; when the count is not the operator's, hands it over first (see the
/// module docs).
async fn apply_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    deployment: &Deployment,
    replicas: ReplicaCount,
) -> Result<Deployment> {
    if replicas == ReplicaCount::Applied {
        return apply_one(client, namespace, deployment).await;
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let live = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("get Deployment", e))?;
    match live {
        None => {
            let mut first = deployment.clone();
            first.spec.replicas = replicas.handover(None);
            let created = apply_one(client, namespace, &first).await?;
            let n = replicas.handover(None).unwrap_or_default();
            hand_over(&api, name, n).await?;
            Ok(created)
        }
        Some(live) => {
            let current = live.spec.replicas;
            let n = replicas.handover(current).unwrap_or_default();
            // Another owner's count within the bounds is left alone; one outside them (the
            // bounds just changed) is moved inside at once rather than at its next decision.
            if !replicas_owned_by_another(&live) || Some(n) != current {
                hand_over(&api, name, n).await?;
            }
            apply_one(client, namespace, deployment).await
        }
    }
}

/// Applies `spec.replicas` alone under [`SCALE_MANAGER`], so it keeps an owner when the
/// operator's applies leave it out.
async fn hand_over(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<Deployment> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    let params = PatchParams::apply(SCALE_MANAGER).force();
    let patch = Patch::Apply(&body);
    retry_on_conflict("hand over Deployment replicas", || {
        api.patch(name, &params, &patch)
    })
    .await
}

/// Whether a field manager other than the operator's own applies owns `spec.replicas`: the
/// autoscaler's scale writes, the HPA controller's, or an earlier hand-over.
pub fn replicas_owned_by_another(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            !(m.manager.as_deref() == Some(MANAGER) && m.operation.as_deref() == Some("Apply"))
        })
        .any(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(managed: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "echo", "managedFields": managed},
            "spec": {"selector": {}, "template": {}},
        }))
        .expect("deployment")
    }

    #[test]
    fn replicas_belong_to_another_manager_only_when_another_manager_owns_them() {
        let replicas = serde_json::json!({"f:spec": {"f:replicas": {}}});
        let ours = deployment(serde_json::json!([
            {"manager": "bkg-operator", "operation": "Apply", "fieldsV1": replicas},
        ]));
        assert!(!replicas_owned_by_another(&ours));
        let none = deployment(serde_json::json!([]));
        assert!(!replicas_owned_by_another(&none));
        for (manager, operation) in [
            ("bkg-autoscaler", "Apply"),
            ("bkg-autoscaler", "Update"),
            ("kube-controller-manager", "Update"),
            // Our name, but an Update (e.g. `kubectl scale --field-manager`): not our apply.
            ("bkg-operator", "Update"),
        ] {
            let d = deployment(serde_json::json!([
                {"manager": "bkg-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
                {"manager": manager, "operation": operation, "subresource": "scale", "fieldsV1": replicas},
            ]));
            assert!(replicas_owned_by_another(&d), "{manager} {operation}");
        }
    }
}
