//! Test fixtures: Plugins from small YAML snippets, Deployments with a given status.

use bkg_core::crd::Plugin;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use serde_json::{Value, json};

/// A Plugin from a YAML snippet; `apiVersion`, `kind` and `metadata` (name `echo`, namespace
/// `default`, a uid, generation 1) are filled in when the snippet leaves them out.
pub fn plugin_from_yaml(yaml: &str) -> Plugin {
    let mut value: Value = serde_yaml::from_str(yaml).expect("fixture YAML");
    let obj = value.as_object_mut().expect("fixture is a mapping");
    obj.entry("apiVersion").or_insert(json!("bkg.rs/v1alpha1"));
    obj.entry("kind").or_insert(json!("Plugin"));
    let meta = obj.entry("metadata").or_insert(json!({}));
    let meta = meta.as_object_mut().expect("metadata is a mapping");
    meta.entry("name").or_insert(json!("echo"));
    meta.entry("namespace").or_insert(json!("default"));
    meta.entry("uid")
        .or_insert(json!("0f6c0e0e-8f5d-4a55-9a62-8e8a2c1b5d01"));
    meta.entry("generation").or_insert(json!(1));
    serde_json::from_value(value).expect("fixture is a Plugin")
}

/// A Deployment (generation 1, observed) with the given replica counts.
pub fn deployment_status(ready: i32, updated: i32, total: i32) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        ready_replicas: Some(ready),
        updated_replicas: Some(updated),
        replicas: Some(total),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    d
}
