//! `bkg render`: the children the operator would apply, as multi-document YAML, offline.

use bkg_core::crd::Plugin;
use kube::ResourceExt;
use serde::Serialize;

use super::build::{Children, ReplicaCount, build};
use super::validate::{Images, InvalidSpec, validate};

/// Why a Plugin could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("Plugin {name:?}: {source}")]
    Invalid {
        name: String,
        #[source]
        source: InvalidSpec,
    },
    #[error("cannot serialize a child of Plugin {name:?}: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
}

/// Namespace of Plugins that name none, as `kubectl apply` would choose without `-n`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Renders every child of every plugin. `namespace` overrides the manifests' namespaces.
/// Without a uid (the Plugin is not on a cluster yet) the owner reference is left out; the
/// operator adds it from the live object. A Deployment whose count the autoscaler or an HPA
/// owns is shown as the operator creates it (with its initial `replicas`); later applies leave
/// the field out.
pub fn render(
    plugins: &[Plugin],
    namespace: Option<&str>,
    images: &Images,
) -> Result<String, RenderError> {
    let mut docs = Vec::new();
    for plugin in plugins {
        let mut plugin = plugin.clone();
        let ns = namespace
            .map(str::to_owned)
            .or_else(|| plugin.namespace())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        plugin.metadata.namespace = Some(ns);
        let name = plugin.name_any();
        let v = validate(&plugin, images).map_err(|source| RenderError::Invalid {
            name: name.clone(),
            source,
        })?;
        let Children {
            config_map,
            service,
            mut deployment,
            pdb,
            hpa,
            replicas,
        } = build(&v);
        if let ReplicaCount::HandedOver { .. } = replicas {
            deployment.spec.replicas = replicas.handover(None);
        }
        docs.push(to_yaml(&name, &config_map)?);
        docs.push(to_yaml(&name, &service)?);
        docs.push(to_yaml(&name, &deployment)?);
        if let Some(pdb) = pdb {
            docs.push(to_yaml(&name, &pdb)?);
        }
        if let Some(hpa) = hpa {
            docs.push(to_yaml(&name, &hpa)?);
        }
    }
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect::<String>())
}

fn to_yaml<T: Serialize>(name: &str, obj: &T) -> Result<String, RenderError> {
    serde_yaml::to_string(obj).map_err(|source| RenderError::Yaml {
        name: name.to_owned(),
        source,
    })
}
