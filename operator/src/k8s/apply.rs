//! Step 3 of the pipeline: server-side apply the children, delete the ones no longer wanted.
//!
//! One field manager ([`super::MANAGER`]) with `force`, so the operator owns exactly the fields it
//! sets and a `kubectl edit` of another field survives.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::Children;
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
    } = children;
    apply_one(client, namespace, config_map).await?;
    apply_one(client, namespace, service).await?;
    match pdb {
        Some(pdb) => {
            apply_one(client, namespace, pdb).await?;
        }
        None => delete_one::<PodDisruptionBudget>(client, namespace, name).await?,
    }
    apply_one(client, namespace, deployment).await
}
