//! The Kubernetes controller: Plugin resources become Deployments, Services, ConfigMaps,
//! PodDisruptionBudgets and (for `scaling.metric: cpu`) HorizontalPodAutoscalers.
//!
//! ```text
//!  watch Plugin ─┐                     ┌─ validate (pure) ── InvalidSpec ─▶ status Ready=False, await change
//!  watch children┴▶ reconcile(plugin) ─┤
//!                                      └─ build (pure) ─▶ apply (SSA, delete unwanted) ─▶ status (write if changed)
//! ```
//!
//! Only the Lease holder reconciles ([`leader`]); metrics and probes are served by every replica.

pub mod apply;
pub mod build;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod serve;
pub mod status;
pub mod validate;

#[cfg(test)]
mod election_tests;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bkg_core::crd::Plugin;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource};

pub use validate::Images;

/// Field manager of every server-side apply, and the `managed-by` label value.
pub use bkg_core::wire::MANAGER;

/// Longest wait between retries of a failing Plugin.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Periodic re-check of a healthy Plugin, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(600);

/// Errors of one reconcile. Invalid specs are not errors: they become status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("leader election: {0}")]
    Lease(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kube(action: &'static str, source: kube::Error) -> Self {
        Error::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// Short label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(s) if s.code == 403 || s.code == 401 => "forbidden",
                kube::Error::Api(s) if s.code >= 500 => "api_server",
                kube::Error::Api(_) => "api_rejected",
                _ => "transport",
            },
            Error::Lease(_) => "lease",
        }
    }
}

/// Typed operator configuration (from `bkg operator` flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub images: Images,
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/livez` and `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<leader::LeaseConfig>,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub images: Images,
    pub recorder: Recorder,
    pub metrics: metrics::Metrics,
    /// Consecutive failures per Plugin, for exponential backoff; cleared on success.
    failures: Mutex<HashMap<ObjectRef<Plugin>, u32>>,
}

impl Context {
    pub fn new(client: Client, images: Images, metrics: metrics::Metrics) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            images,
            metrics,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Plugin>, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One pass of validate → build → apply → status for `plugin`.
pub async fn reconcile(plugin: Arc<Plugin>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if plugin.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let old = plugin.status.clone().unwrap_or_default();
    let (new, action) = match validate::validate(&plugin, &ctx.images) {
        Err(invalid) => (status::invalid(&plugin, &invalid), Action::await_change()),
        Ok(v) => {
            let children = build::build(&v);
            let deployment = apply::apply(&ctx.client, &v.namespace, &v.name, &children).await?;
            (
                status::observed(&plugin, &v, &deployment),
                Action::requeue(RESYNC),
            )
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = status::merge(&old, new, &now);
    if new != old {
        status::patch_status(&ctx.client, &plugin, &new).await?;
        ctx.metrics.status_writes.inc();
        if let Some(t) = status::transition(&old, &new) {
            publish(&ctx, &plugin, t).await;
        }
        if let Some(t) = status::scaled(&old, &new) {
            publish(&ctx, &plugin, t).await;
        }
    }
    ctx.failures().remove(&ObjectRef::from_obj(plugin.as_ref()));
    Ok(action)
}

async fn publish(ctx: &Context, plugin: &Plugin, t: status::Transition) {
    let event = Event {
        type_: if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.to_owned(),
        note: Some(t.note.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // Events are best effort: a refused Event must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &plugin.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// Records the failure and retries later, waiting twice as long after each consecutive failure.
pub fn error_policy(plugin: Arc<Plugin>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.category());
    let failures = {
        let mut map = ctx.failures();
        let n = map.entry(ObjectRef::from_obj(plugin.as_ref())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    tracing::warn!(
        plugin = %ObjectRef::from_obj(plugin.as_ref()),
        category = error.category(),
        error = %error,
        retry_in_secs = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// 2 s, 4 s, 8 s … capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.min(16))
        .unwrap_or(u64::MAX)
        .min(MAX_BACKOFF.as_secs());
    Duration::from_secs(secs)
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn controller(
    client: Client,
    config: &Config,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (plugins, deployments, services, config_maps, pdbs, hpas) = match &config.namespace {
        Some(ns) => (
            Api::<Plugin>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // Only children we manage: the watch caches stay small on a busy cluster.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    Controller::new(plugins, watcher::Config::default().any_semantic())
        .owns(deployments, owned.clone())
        .owns(services, owned.clone())
        .owns(config_maps, owned.clone())
        .owns(pdbs, owned.clone())
        .owns(hpas, owned)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
