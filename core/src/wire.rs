//! The wire types (the `bkg-wire` crate), and how the Plugin resource turns into them.

pub use bkg_wire::*;

use serde_json::Value;

use crate::crd::{CapabilitySpec, Plugin};

impl From<&CapabilitySpec> for Capability {
    fn from(spec: &CapabilitySpec) -> Self {
        Self {
            id: spec.id.clone(),
            name: spec.name.clone().unwrap_or_else(|| spec.id.clone()),
            description: spec.description.clone().unwrap_or_default(),
            input_schema: spec.input_schema.clone().unwrap_or_else(any_schema),
            output_schema: spec.output_schema.clone().unwrap_or_else(any_schema),
            management: spec.management,
            cost: spec.cost.clone(),
            streaming: spec.streaming,
        }
    }
}

/// Describes a plugin from its manifest and observed state. `capabilities` overrides the
/// manifest's list when the manifest declares none (the runtime then reports its own).
pub fn plugin_info(
    plugin: &Plugin,
    runtime_capabilities: Option<&[Capability]>,
    instances: Vec<Instance>,
) -> PluginInfo {
    let spec = &plugin.spec;
    let status = plugin.status.clone().unwrap_or_default();
    let declared: Vec<Capability> = spec.capabilities.iter().map(Capability::from).collect();
    let capabilities = match runtime_capabilities {
        Some(reported) if declared.is_empty() => reported.to_vec(),
        _ => declared,
    };
    let gpu = spec.resources.gpu.as_ref();
    PluginInfo {
        id: plugin.id().to_owned(),
        name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| plugin.id().to_owned()),
        version: spec.version.clone().unwrap_or_default(),
        description: spec.description.clone().unwrap_or_default(),
        author: spec.author.clone().unwrap_or_default(),
        implementation: spec.implementation.clone(),
        status: status.phase.unwrap_or(if spec.enabled {
            Phase::Starting
        } else {
            Phase::Stopped
        }),
        enabled: spec.enabled,
        replicas: status
            .desired_replicas
            .unwrap_or_else(|| spec.initial_replicas()),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        scaling_owner: spec.scaling_owner().as_str().to_owned(),
        scale_history: status
            .scale_history
            .iter()
            .map(|r| ScaleEvent {
                time: r.time.clone(),
                from: r.from,
                to: r.to,
                reason: r.reason.clone(),
            })
            .collect(),
        scaling: spec.scaling.as_ref().map(|s| ScalingInfo {
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
            metric: s.metric.as_str().to_owned(),
            target: s.target(),
            scale_down_delay_seconds: s.scale_down_delay_seconds,
            scale_to_zero_after_seconds: s.scale_to_zero_after_seconds,
        }),
        endpoint: status.endpoint.clone(),
        last_error: status.last_error.clone(),
        // The operator does not apply an invalid spec: the previous children keep running.
        manifest_error: status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
            .map(|c| c.message.clone()),
        capabilities,
        config: spec
            .config
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default())),
        resources: ResourcesInfo {
            memory: spec.resources.memory.as_ref().map(|q| q.0.clone()),
            cpu: spec.resources.cpu.as_ref().map(|q| q.0.clone()),
            timeout_secs: spec.resources.timeout_seconds,
            max_concurrency: spec.resources.max_concurrency,
            gpu_count: gpu.map_or(0, |g| g.count),
            gpu_vendor: gpu.map(|g| format!("{:?}", g.vendor).to_lowercase()),
        },
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionInfo {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.0.to_string(),
            })
            .collect(),
        instances,
        // Shares as if the plugin were alone in each alias; the gateway, which sees every
        // plugin, fills in the real split.
        aliases: spec
            .aliases
            .iter()
            .map(|a| AliasShare {
                name: a.name.clone(),
                weight: a.weight,
                percent: if a.weight > 0 && spec.enabled {
                    100.0
                } else {
                    0.0
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PluginStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn an_invalid_spec_on_a_cluster_is_the_manifest_error() {
        let spec =
            serde_json::from_value(serde_json::json!({"implementation": "echo"})).expect("spec");
        let mut plugin = Plugin::new("echo", spec);
        assert_eq!(plugin_info(&plugin, None, vec![]).manifest_error, None);
        let condition = |reason: &str| Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: reason.into(),
            message: "spec.replicas: -1 is less than the minimum of 0".into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        plugin.status = Some(PluginStatus {
            conditions: vec![condition("Unavailable")],
            ..Default::default()
        });
        assert_eq!(plugin_info(&plugin, None, vec![]).manifest_error, None);
        plugin.status = Some(PluginStatus {
            conditions: vec![condition("InvalidSpec")],
            ..Default::default()
        });
        assert_eq!(
            plugin_info(&plugin, None, vec![]).manifest_error.as_deref(),
            Some("spec.replicas: -1 is less than the minimum of 0")
        );
    }
}
