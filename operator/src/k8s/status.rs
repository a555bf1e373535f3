//! Step 4 of the pipeline: what the Plugin's status should say, merged with what it says.
//!
//! Pure apart from [`patch_status`]. Conditions keep their `lastTransitionTime` unless their
//! status flips, and the caller writes only when the merged status differs from the old one, so
//! a steady state costs no writes.

use bkg_core::crd::{Phase, Plugin, PluginStatus, SCALE_HISTORY, ScaleRecord, ScalingOwner};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::apply::retry_on_conflict;
use super::build::endpoint;
use super::validate::{InvalidSpec, ValidatedPlugin};
use super::{MANAGER, Result};

/// Condition types the operator maintains.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

fn condition(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        // Filled in by `merge`.
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// Status of a Plugin whose spec cannot run.
pub fn invalid(plugin: &Plugin, invalid: &InvalidSpec) -> PluginStatus {
    let old = plugin.status.clone().unwrap_or_default();
    let message = invalid.to_string();
    PluginStatus {
        phase: Some(Phase::Error),
        conditions: vec![
            condition(READY, false, "InvalidSpec", message.clone()),
            condition(
                PROGRESSING,
                false,
                "InvalidSpec",
                "waiting for the spec to change",
            ),
            condition(DEGRADED, true, "InvalidSpec", message.clone()),
        ],
        observed_generation: plugin.metadata.generation,
        ready_replicas: old.ready_replicas,
        endpoint: old.endpoint,
        last_error: Some(message),
        ..old
    }
}

/// Why the Deployment controller gave up, if it did.
fn deployment_failure(deployment: &Deployment) -> Option<(String, String)> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| {
        let (type_, status) = (c.type_.as_deref(), c.status.as_deref());
        let failed = (type_ == Some("Progressing") && status == Some("False"))
            || (type_ == Some("ReplicaFailure") && status == Some("True"));
        failed.then(|| {
            (
                c.reason
                    .clone()
                    .or_else(|| c.type_.clone())
                    .unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
    })
}

/// Status of a Plugin whose children were applied, from the Deployment the API server returned.
pub fn observed(plugin: &Plugin, v: &ValidatedPlugin, deployment: &Deployment) -> PluginStatus {
    let old = plugin.status.clone().unwrap_or_default();
    let s = deployment.status.clone().unwrap_or_default();
    // The Deployment's own count: the operator's, or what the autoscaler or HPA set.
    let desired = deployment
        .spec
        .replicas
        .filter(|_| v.managed_replicas().is_none())
        .unwrap_or(v.replicas);
    let autoscaled = v.managed_replicas().is_none();
    let ready = s.ready_replicas.unwrap_or(0);
    let updated = s.updated_replicas.unwrap_or(0);
    let total = s.replicas.unwrap_or(0);
    let seen = s.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let rolled_out = seen && updated >= desired && ready >= desired && total == desired;
    let failure = deployment_failure(deployment);

    let phase = if desired == 0 && autoscaled && total == 0 {
        // Scaled to zero: the gateway holds an invoke while a replica starts, so it serves.
        Phase::Running
    } else if desired == 0 {
        if total > 0 {
            Phase::Stopping
        } else {
            Phase::Stopped
        }
    } else if ready > 0 {
        Phase::Running
    } else if failure.is_some() {
        Phase::Error
    } else {
        Phase::Starting
    };
    let ready_condition = if !v.enabled {
        condition(READY, false, "Disabled", "spec.enabled is false")
    } else if desired == 0 && autoscaled {
        condition(
            READY,
            true,
            "ScaledToZero",
            "scaled to zero by the autoscaler: an invoke is held while a replica starts",
        )
    } else if desired == 0 {
        condition(READY, false, "ScaledToZero", "spec.replicas is 0")
    } else if ready >= desired {
        condition(
            READY,
            true,
            "AllReplicasReady",
            format!("{ready}/{desired} replicas ready"),
        )
    } else if ready > 0 {
        condition(
            READY,
            true,
            "SomeReplicasReady",
            format!("{ready}/{desired} replicas ready"),
        )
    } else {
        condition(
            READY,
            false,
            "NoReplicaReady",
            format!("0/{desired} replicas ready"),
        )
    };
    let progressing = if rolled_out {
        condition(
            PROGRESSING,
            false,
            "RolloutComplete",
            "the Deployment is up to date",
        )
    } else if desired == 0 {
        condition(
            PROGRESSING,
            true,
            "ScalingDown",
            format!("{total} pods terminating"),
        )
    } else {
        condition(
            PROGRESSING,
            true,
            "RollingOut",
            format!("{updated}/{desired} updated, {ready} ready"),
        )
    };
    let degraded = match &failure {
        Some((reason, message)) => condition(DEGRADED, true, reason, message.clone()),
        None => condition(DEGRADED, false, "AsExpected", ""),
    };
    let last_error = match failure {
        Some((reason, message)) => Some(format!("{reason}: {message}")),
        None if ready_condition.status == "True" || desired == 0 => None,
        None => old.last_error,
    };
    PluginStatus {
        phase: Some(phase),
        conditions: vec![ready_condition, progressing, degraded],
        observed_generation: plugin.metadata.generation,
        replicas: Some(total),
        ready_replicas: Some(ready),
        desired_replicas: Some(desired),
        scaling_owner: Some(plugin.spec.scaling_owner()),
        selector: Some(
            super::build::selector_labels(&v.name)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        last_scale_time: old.last_scale_time,
        scale_history: old.scale_history,
        endpoint: Some(endpoint(&v.name, &v.namespace)),
        last_error,
    }
}

/// Merges `new` into `old`: a condition whose status did not change keeps its transition time;
/// one that did, or is new, gets `now`. A change of the desired count sets `lastScaleTime` and
/// is added to `scaleHistory` (the last [`SCALE_HISTORY`]), which the dashboard's timeline shows.
pub fn merge(old: &PluginStatus, mut new: PluginStatus, now: &Time) -> PluginStatus {
    new.last_scale_time.clone_from(&old.last_scale_time);
    new.scale_history.clone_from(&old.scale_history);
    if let (Some(from), Some(to)) = (old.desired_replicas, new.desired_replicas)
        && from != to
    {
        let time = now.0.to_string();
        new.last_scale_time = Some(time.clone());
        new.scale_history.push(ScaleRecord {
            time,
            from,
            to,
            reason: format!("by {}", scaled_by(new.scaling_owner)),
        });
        let excess = new.scale_history.len().saturating_sub(SCALE_HISTORY);
        new.scale_history.drain(..excess);
    }
    for c in &mut new.conditions {
        c.observed_generation = new.observed_generation;
        c.last_transition_time = match old.conditions.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => now.clone(),
        };
    }
    new
}

/// A transition worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Event a status change deserves, if any: phase changes and newly invalid specs.
pub fn transition(old: &PluginStatus, new: &PluginStatus) -> Option<Transition> {
    if old.phase == new.phase {
        return None;
    }
    let note = new.last_error.clone().unwrap_or_else(|| {
        format!(
            "{} → {}",
            old.phase.map_or("unknown", Phase::as_str),
            new.phase.map_or("unknown", Phase::as_str)
        )
    });
    let (warning, reason) = match new.phase? {
        Phase::Running => (false, "Running"),
        Phase::Starting => (false, "Starting"),
        Phase::Stopping => (false, "Stopping"),
        Phase::Stopped => (false, "Stopped"),
        Phase::Error => {
            let invalid = new.conditions.iter().any(|c| c.reason == "InvalidSpec");
            (true, if invalid { "InvalidSpec" } else { "Degraded" })
        }
    };
    Some(Transition {
        warning,
        reason,
        note,
    })
}

/// The Event a change of the desired count deserves. The gateway records its own scales
/// (owner `autoscaler`) on the Plugin; the operator records the others: `kubectl scale` or an
/// HPA on the Plugin (owner `replicas`) and the rendered HPA (owner `hpa`).
pub fn scaled(old: &PluginStatus, new: &PluginStatus) -> Option<Transition> {
    let (from, to) = (old.desired_replicas?, new.desired_replicas?);
    if from == to || new.scaling_owner == Some(ScalingOwner::Autoscaler) {
        return None;
    }
    Some(Transition {
        warning: false,
        reason: "Scaled",
        note: format!("from {from} to {to}: {}", scaled_by(new.scaling_owner)),
    })
}

/// Who changed the count, as Events and `scaleHistory` say it.
fn scaled_by(owner: Option<ScalingOwner>) -> &'static str {
    match owner {
        Some(ScalingOwner::Hpa) => "the HorizontalPodAutoscaler",
        Some(ScalingOwner::Autoscaler) => "bkg's autoscaler (the gateway's Scaled Events say why)",
        _ => "spec.replicas",
    }
}

/// Writes `status` through the status subresource (server-side apply, same field manager).
pub async fn patch_status(client: &Client, plugin: &Plugin, status: &PluginStatus) -> Result<()> {
    let api: Api<Plugin> = Api::namespaced(client.clone(), &plugin.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": bkg_core::manifest::API_VERSION,
        "kind": "Plugin",
        "status": status,
    });
    let params = PatchParams::apply(MANAGER).force();
    let name = plugin.name_any();
    let patch = Patch::Apply(&body);
    retry_on_conflict("patch Plugin status", || {
        api.patch_status(&name, &params, &patch)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures::{deployment_status, plugin_from_yaml};
    use crate::k8s::validate::{Images, validate};

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    fn status_of(yaml: &str, ready: i32, updated: i32, total: i32) -> PluginStatus {
        let p = plugin_from_yaml(yaml);
        let v = validate(&p, &Images::default()).expect("valid");
        observed(&p, &v, &deployment_status(ready, updated, total))
    }

    fn cond<'a>(s: &'a PluginStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn ready_plugin_is_running_with_its_service_endpoint() {
        let s = status_of("spec: {implementation: echo, replicas: 2}", 2, 2, 2);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.endpoint.as_deref(), Some("http://echo.default.svc:8080"));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "False");
    }

    #[test]
    fn starting_plugin_is_progressing_and_not_ready() {
        let s = status_of("spec: {implementation: echo}", 0, 1, 1);
        assert_eq!(s.phase, Some(Phase::Starting));
        assert_eq!(cond(&s, READY).reason, "NoReplicaReady");
        assert_eq!(cond(&s, PROGRESSING).status, "True");
    }

    #[test]
    fn disabled_plugin_is_stopping_then_stopped() {
        let yaml = "spec: {implementation: echo, enabled: false}";
        assert_eq!(status_of(yaml, 0, 0, 1).phase, Some(Phase::Stopping));
        let s = status_of(yaml, 0, 0, 0);
        assert_eq!(s.phase, Some(Phase::Stopped));
        assert_eq!(cond(&s, READY).reason, "Disabled");
    }

    #[test]
    fn invalid_spec_is_an_error_naming_the_field() {
        let p = plugin_from_yaml("spec: {implementation: echo, config: 1}");
        let Err(e) = validate(&p, &Images::default()) else {
            panic!("should be invalid")
        };
        let s = invalid(&p, &e);
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(cond(&s, READY).reason, "InvalidSpec");
        assert!(cond(&s, READY).message.contains("spec.config"));
        assert_eq!(
            transition(&PluginStatus::default(), &s).map(|t| t.reason),
            Some("InvalidSpec")
        );
    }

    #[test]
    fn an_autoscaled_plugin_at_zero_serves_and_reports_the_deployments_count() {
        let p = plugin_from_yaml(
            "spec: {implementation: echo, scaling: {minReplicas: 0, maxReplicas: 4}}",
        );
        let v = validate(&p, &Images::default()).expect("valid");
        let mut d = deployment_status(0, 0, 0);
        d.spec.replicas = Some(0);
        let s = observed(&p, &v, &d);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(cond(&s, READY).reason, "ScaledToZero");
        assert_eq!(cond(&s, READY).status, "True");
        // The autoscaler scaled to 3: desired follows the Deployment, not minReplicas.
        let mut d = deployment_status(1, 3, 3);
        d.spec.replicas = Some(3);
        let s = observed(&p, &v, &d);
        assert_eq!(s.desired_replicas, Some(3));
        assert_eq!(cond(&s, READY).reason, "SomeReplicasReady");
    }

    #[test]
    fn a_scale_moves_last_scale_time_and_is_an_event_unless_the_gateway_made_it() {
        let one = merge(
            &PluginStatus::default(),
            status_of("spec: {implementation: echo, replicas: 1}", 1, 1, 1),
            &at(100),
        );
        assert_eq!(one.last_scale_time, None, "a first status is no scale");
        let three = merge(
            &one,
            status_of("spec: {implementation: echo, replicas: 3}", 1, 3, 3),
            &at(200),
        );
        assert_eq!(
            three.last_scale_time.as_deref(),
            Some("1970-01-01T00:03:20Z")
        );
        assert_eq!(
            three.scale_history,
            [ScaleRecord {
                time: "1970-01-01T00:03:20Z".into(),
                from: 1,
                to: 3,
                reason: "by spec.replicas".into(),
            }]
        );
        let event = scaled(&one, &three).expect("event");
        assert_eq!(
            (event.reason, event.note.as_str()),
            ("Scaled", "from 1 to 3: spec.replicas")
        );
        // Same count later: the time stays, no event, no write.
        let again = merge(
            &three,
            status_of("spec: {implementation: echo, replicas: 3}", 1, 3, 3),
            &at(300),
        );
        assert_eq!(again.last_scale_time, three.last_scale_time);
        assert_eq!(again.scale_history, three.scale_history);
        // The history keeps the last SCALE_HISTORY changes.
        let mut s = again.clone();
        for n in 4..30 {
            s = merge(
                &s,
                status_of(
                    &format!("spec: {{implementation: echo, replicas: {n}}}"),
                    1,
                    1,
                    1,
                ),
                &at(300 + i64::from(n)),
            );
        }
        assert_eq!(s.scale_history.len(), SCALE_HISTORY);
        assert_eq!(s.scale_history.last().map(|r| r.to), Some(29));
        assert_eq!(scaled(&three, &again), None);
        // The gateway's autoscaler records its own Events.
        let mut by_gateway = three.clone();
        by_gateway.scaling_owner = Some(ScalingOwner::Autoscaler);
        assert_eq!(scaled(&one, &by_gateway), None);
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let starting = merge(
            &PluginStatus::default(),
            status_of("spec: {implementation: echo}", 0, 1, 1),
            &at(100),
        );
        assert_eq!(cond(&starting, READY).last_transition_time, at(100));
        // Same statuses later: nothing moves, and the merged status equals the old one.
        let again = merge(
            &starting,
            status_of("spec: {implementation: echo}", 0, 1, 1),
            &at(200),
        );
        assert_eq!(again, starting);
        // Ready flips: only Ready and Progressing move.
        let running = merge(
            &starting,
            status_of("spec: {implementation: echo}", 1, 1, 1),
            &at(300),
        );
        assert_eq!(cond(&running, READY).last_transition_time, at(300));
        assert_eq!(cond(&running, PROGRESSING).last_transition_time, at(300));
        assert_eq!(cond(&running, DEGRADED).last_transition_time, at(100));
        assert_eq!(
            transition(&starting, &running).map(|t| t.reason),
            Some("Running")
        );
        assert_eq!(transition(&running, &running), None);
    }
}
