//! The Kubernetes backend: plugins are Plugin resources run by `bkg operator`.
//!
//! ```text
//!  watch Plugins ───────▶ Store<Plugin> ─────────┬▶ PluginView { plugin, instances: ready pod IPs }
//!  watch EndpointSlices ▶ Store<EndpointSlice> ──┘
//!                       └▶ Routes: plugin ─▶ Arc<[SocketAddr]> ──▶ route(id): one lookup
//!  start/stop/restart/config ──▶ merge patch of the Plugin (the operator does the rest)
//!  scale (the autoscaler) ──▶ merge patch of the Deployment's scale subresource + an Event
//!  logs ──▶ the pods' log subresource
//! ```
//!
//! The gateway reads from watch caches, never from the API server on the request path, and sends
//! invokes straight to ready pod IPs (what the Service would pick, without its extra hop).
//! The invoke path reads the routing index ([`index::Routes`]), which the slice watch keeps per
//! plugin; the management path (list, get) still derives instances from the slice cache.

mod index;

use std::sync::Arc;

use bkg_core::Plugin;
use bkg_core::crd::ScalingOwner;
use bkg_core::wire::{Instance, LogLine, SCALE_MANAGER};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Backend, BackendError, PluginView, Route};

pub use bkg_core::wire::RESTARTED_AT;
/// Port the plugin runtime listens on in its pod.
const RUNTIME_PORT: i32 = bkg_core::wire::RUNTIME_PORT as i32;
/// Label selector of what the operator manages (its Services' EndpointSlices inherit it).
fn managed() -> String {
    format!("app.kubernetes.io/managed-by={}", bkg_core::wire::MANAGER)
}
/// Label tying an EndpointSlice to its Service, named after the Plugin.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Reads Plugins and their endpoints from watch caches; writes intent to the Plugin resource.
#[derive(Clone)]
pub struct KubernetesBackend {
    client: Client,
    namespace: String,
    plugins: Store<Plugin>,
    slices: Store<EndpointSlice>,
    routes: index::Routes,
    /// Every alias of the namespace's Plugins, derived again on each Plugin event.
    aliases: Arc<std::sync::RwLock<Arc<crate::aliases::AliasTable>>>,
    /// Records an Event on the Plugin for each scale.
    recorder: Recorder,
}

/// Who Events the gateway records come from.
fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "bkg-gateway".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

impl KubernetesBackend {
    /// Connects with the in-cluster config or `KUBECONFIG` and starts the watches on `namespace`
    /// (the kubeconfig's namespace when `None`).
    pub async fn connect(namespace: Option<String>) -> Result<Self, BackendError> {
        let client = Client::try_default()
            .await
            .map_err(|e| BackendError::Unavailable(format!("no Kubernetes API: {e}")))?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        Self::start(client, namespace).await
    }

    /// Starts the watches on `namespace` and waits until both caches hold a first full list.
    pub async fn start(client: Client, namespace: String) -> Result<Self, BackendError> {
        let (plugins, plugin_writer) = reflector::store();
        let (slices, slice_writer) = reflector::store();
        let (routes, mut route_writer) = index::routes();
        let plugin_api: Api<Plugin> = Api::namespaced(client.clone(), &namespace);
        let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
        let aliases: Arc<std::sync::RwLock<Arc<crate::aliases::AliasTable>>> = Arc::default();
        let (alias_store, alias_table, alias_namespace) =
            (plugins.clone(), aliases.clone(), namespace.clone());
        tokio::spawn(
            watcher(plugin_api, watcher::Config::default())
                .default_backoff()
                .reflect(plugin_writer)
                .for_each(move |e| {
                    match e {
                        // The store already holds the change: the table follows every spec
                        // edit (a weight, an alias, enabled) without a restart.
                        Ok(_) => {
                            let table = alias_table_of(&alias_store, &alias_namespace);
                            *alias_table.write().unwrap_or_else(|e| e.into_inner()) =
                                Arc::new(table);
                        }
                        Err(e) => tracing::warn!(error = %e, "Plugin watch"),
                    }
                    futures::future::ready(())
                }),
        );
        tokio::spawn(
            watcher(slice_api, watcher::Config::default().labels(&managed()))
                .default_backoff()
                .reflect(slice_writer)
                .for_each(move |e| {
                    match e {
                        Ok(event) => route_writer.apply(&event),
                        Err(e) => tracing::warn!(error = %e, "EndpointSlice watch"),
                    }
                    futures::future::ready(())
                }),
        );
        let unavailable = |_| BackendError::Unavailable("watch ended".into());
        plugins.wait_until_ready().await.map_err(unavailable)?;
        slices.wait_until_ready().await.map_err(unavailable)?;
        routes
            .wait_until_ready()
            .await
            .map_err(|_| BackendError::Unavailable("watch ended".into()))?;
        Ok(Self {
            aliases,
            recorder: recorder(&client),
            client,
            namespace,
            plugins,
            slices,
            routes,
        })
    }

    /// A backend over caches someone else fills (tests, benchmarks). The routing index is built
    /// from `slices` as they are now and does not follow later changes to that store.
    pub fn from_stores(
        client: Client,
        namespace: String,
        plugins: Store<Plugin>,
        slices: Store<EndpointSlice>,
    ) -> Self {
        let routes = index::Routes::from_slices(slices.state().iter().map(Arc::as_ref));
        let aliases = Arc::new(std::sync::RwLock::new(Arc::new(alias_table_of(
            &plugins, &namespace,
        ))));
        Self {
            aliases,
            recorder: recorder(&client),
            client,
            namespace,
            plugins,
            slices,
            routes,
        }
    }

    fn plugin(&self, id: &str) -> Result<Arc<Plugin>, BackendError> {
        self.plugins
            .get(&ObjectRef::new(id).within(&self.namespace))
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))
    }

    fn view(&self, plugin: &Plugin) -> PluginView {
        let slices = self.slices.state();
        PluginView {
            plugin: plugin.clone(),
            generation: plugin
                .metadata
                .generation
                .and_then(|g| u64::try_from(g).ok())
                .unwrap_or_default(),
            instances: instances(plugin.name_any().as_str(), slices.iter().map(Arc::as_ref)),
            manifest_error: None,
        }
    }

    /// Merge-patches the Plugin, guarded by its cached resourceVersion: a concurrent writer
    /// makes this a conflict instead of a lost update.
    async fn patch(&self, id: &str, mut patch: Value) -> Result<(), BackendError> {
        let plugin = self.plugin(id)?;
        patch["metadata"]["resourceVersion"] = json!(plugin.resource_version());
        let api: Api<Plugin> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(id, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| map_err(id, e))
    }
}

/// The bounds `[min, max]` of a plugin whose replica count the gateway's autoscaler owns; a
/// Conflict naming the owner otherwise (fixed `replicas`, the HPA of `metric: cpu`, disabled).
pub fn autoscaler_bounds(plugin: &Plugin) -> Result<(i32, i32), BackendError> {
    let id = plugin.id();
    let spec = &plugin.spec;
    let owner = spec.scaling_owner();
    match &spec.scaling {
        _ if !spec.enabled => Err(BackendError::Conflict(format!(
            "plugin {id:?} is disabled; start it first"
        ))),
        Some(s) if owner == ScalingOwner::Autoscaler => {
            if let Some((field, message)) = spec.cross_field_errors().into_iter().next() {
                return Err(BackendError::Conflict(format!(
                    "plugin {id:?} has an invalid spec: {field}: {message}"
                )));
            }
            Ok((s.min_replicas, s.max_replicas))
        }
        _ => Err(BackendError::Conflict(format!(
            "the replica count of plugin {id:?} is owned by {}, not bkg's autoscaler",
            match owner {
                ScalingOwner::Hpa => "its HorizontalPodAutoscaler (spec.scaling.metric cpu)",
                _ => "spec.replicas (kubectl scale or an HPA on the Plugin)",
            }
        ))),
    }
}

fn map_err(id: &str, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(s) if s.code == 404 => BackendError::NotFound(id.to_owned()),
        kube::Error::Api(s) if s.code == 409 => BackendError::Conflict(format!(
            "Plugin {id} changed meanwhile; try again ({})",
            s.message
        )),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => BackendError::Conflict(s.message),
        e => BackendError::Unavailable(e.to_string()),
    }
}

/// The port of a slice's `http` port, else the runtime's.
fn slice_port(slice: &EndpointSlice) -> i32 {
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| p.port)
        .unwrap_or(RUNTIME_PORT)
}

/// Whether an endpoint takes traffic: absent `ready` means ready (EndpointSlice API contract);
/// a terminating one takes no new calls.
fn endpoint_ready(ep: &Endpoint) -> bool {
    let conditions = ep.conditions.as_ref();
    conditions.and_then(|c| c.ready) != Some(false)
        && conditions.and_then(|c| c.terminating) != Some(true)
}

/// The instances of plugin `name`: one per endpoint of its Service's EndpointSlices, by name
/// (then endpoint, for a pod listed in two slices).
pub fn instances<'a>(name: &str, slices: impl Iterator<Item = &'a EndpointSlice>) -> Vec<Instance> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.labels().get(SERVICE_NAME).map(String::as_str) != Some(name) {
            continue;
        }
        let port = slice_port(slice);
        for ep in slice.endpoints.iter().flatten() {
            let Some(address) = ep.addresses.first() else {
                continue;
            };
            let ready = endpoint_ready(ep);
            let terminating = ep.conditions.as_ref().and_then(|c| c.terminating) == Some(true);
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            out.push(Instance {
                name: ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_else(|| address.clone()),
                state: if terminating {
                    "stopping"
                } else if ready {
                    "running"
                } else {
                    "starting"
                }
                .to_owned(),
                ready,
                endpoint: Some(format!("http://{host}:{port}")),
                pid: None,
                restarts: 0,
                started_at: None,
                last_error: None,
            });
        }
    }
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    out
}

/// The aliases of the Plugins of `namespace` in `plugins`.
fn alias_table_of(plugins: &Store<Plugin>, namespace: &str) -> crate::aliases::AliasTable {
    let state = plugins.state();
    crate::aliases::AliasTable::build(
        state
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .map(|p| &**p),
    )
}

/// RFC 7386 merge patch turning `old` into `new` (keys missing from `new` become `null`), so a
/// config update replaces the object instead of merging into it.
pub fn replace_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for key in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in n {
                let entry = match o.get(key) {
                    Some(old_value) if old_value == value => continue,
                    Some(old_value) => replace_patch(old_value, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), entry);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// One log line as `kubectl logs --timestamps` prints it: `<RFC 3339> <message>`.
fn log_line(pod: &str, multi: bool, raw: &str) -> LogLine {
    let (ts, message) = raw.split_once(' ').unwrap_or(("", raw));
    LogLine {
        ts: ts.to_owned(),
        stream: "stdout".to_owned(),
        message: if multi {
            format!("[{pod}] {message}")
        } else {
            message.to_owned()
        },
    }
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    fn mode(&self) -> &'static str {
        "kubernetes"
    }

    async fn list(&self) -> Vec<PluginView> {
        let mut views: Vec<_> = self
            .plugins
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(self.namespace.as_str()))
            .map(|p| self.view(p))
            .collect();
        views.sort_by(|a, b| a.plugin.id().cmp(b.plugin.id()));
        views
    }

    async fn get(&self, id: &str) -> Option<PluginView> {
        self.plugin(id).ok().map(|p| self.view(&p))
    }

    async fn route(&self, id: &str) -> Option<Route> {
        let plugin = self.plugin(id).ok()?;
        let endpoints = self
            .routes
            .ready(id)
            .map(|ready| ready.to_vec())
            .unwrap_or_default();
        Some(Route {
            generation: plugin
                .metadata
                .generation
                .and_then(|g| u64::try_from(g).ok())
                .unwrap_or_default(),
            plugin,
            endpoints,
        })
    }

    async fn aliases(&self) -> Arc<crate::aliases::AliasTable> {
        self.aliases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn start(&self, id: &str) -> Result<(), BackendError> {
        self.patch(id, json!({"spec": {"enabled": true}})).await
    }

    async fn stop(&self, id: &str) -> Result<(), BackendError> {
        self.patch(id, json!({"spec": {"enabled": false}})).await
    }

    async fn restart(&self, id: &str) -> Result<(), BackendError> {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.patch(
            id,
            json!({"metadata": {"annotations": {RESTARTED_AT: now}}}),
        )
        .await
    }

    async fn set_config(&self, id: &str, config: Value) -> Result<(), BackendError> {
        if !config.is_object() {
            return Err(BackendError::Conflict(
                "config must be a JSON object".into(),
            ));
        }
        let old = self.plugin(id)?.spec.config.clone().unwrap_or(Value::Null);
        let patch = if old.is_object() {
            replace_patch(&old, &config)
        } else {
            config
        };
        self.patch(id, json!({"spec": {"config": patch}})).await
    }

    /// Patches the Deployment's scale subresource under [`SCALE_MANAGER`] (the field manager the
    /// operator hands the count to, so its applies leave it alone) and records a `Scaled` Event
    /// on the Plugin. Status (`desiredReplicas`, `lastScaleTime`) is the operator's: it sees the
    /// Deployment change and writes it.
    async fn scale(&self, id: &str, replicas: u32, reason: &str) -> Result<u32, BackendError> {
        let plugin = self.plugin(id)?;
        let (min, max) = autoscaler_bounds(&plugin)?;
        let wanted = i32::try_from(replicas)
            .unwrap_or(i32::MAX)
            .max(min)
            .min(max);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let no_deployment = |e| match e {
            kube::Error::Api(s) if s.code == 404 => BackendError::Unavailable(format!(
                "plugin {id:?} has no Deployment yet (is `bkg operator` running?)"
            )),
            e => map_err(id, e),
        };
        let before = deployments
            .get_scale(id)
            .await
            .map_err(no_deployment)?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        if before != wanted {
            let params = PatchParams {
                field_manager: Some(SCALE_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let patch = Patch::Merge(json!({"spec": {"replicas": wanted}}));
            deployments
                .patch_scale(id, &params, &patch)
                .await
                .map_err(no_deployment)?;
            tracing::info!(plugin = id, from = before, to = wanted, reason, "scaled");
            let event = Event {
                type_: EventType::Normal,
                reason: "Scaled".to_owned(),
                note: Some(
                    format!("from {before} to {wanted}: {reason}")
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "Scale".to_owned(),
                secondary: None,
            };
            // Best effort: a refused Event must not undo or fail the scale.
            if let Err(e) = self.recorder.publish(&event, &plugin.object_ref(&())).await {
                tracing::debug!(plugin = id, error = %e, "scale event not recorded");
            }
        }
        Ok(u32::try_from(wanted).unwrap_or_default())
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, BackendError> {
        self.plugin(id)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/name=bkg-plugin,app.kubernetes.io/instance={id}");
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| map_err(id, e))?;
        let multi = list.items.len() > 1;
        let params = LogParams {
            tail_lines: Some(i64::try_from(lines).unwrap_or(i64::MAX)),
            timestamps: true,
            ..LogParams::default()
        };
        let mut out = Vec::new();
        for pod in &list.items {
            let name = pod.name_any();
            match pods.logs(&name, &params).await {
                Ok(text) => out.extend(text.lines().map(|l| log_line(&name, multi, l))),
                // A pod still pulling its image has no log yet.
                Err(e) => tracing::debug!(pod = %name, error = %e, "no logs"),
            }
        }
        out.sort_by(|a, b| a.ts.cmp(&b.ts));
        let skip = out.len().saturating_sub(lines);
        Ok(out.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alias_table_follows_the_store_and_its_namespace() {
        let plugin = |name: &str, ns: &str, weight: u32| -> Plugin {
            serde_json::from_value(json!({
                "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"implementation": "echo", "aliases": [{"name": "stable", "weight": weight}]},
            }))
            .expect("plugin")
        };
        let (store, mut writer) = reflector::store();
        for p in [
            plugin("v1", "ml", 90),
            plugin("v2", "ml", 10),
            plugin("x", "other", 50),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let table = alias_table_of(&store, "ml");
        assert_eq!(table.percent("stable", "v1"), 90.0);
        assert_eq!(
            table.percent("stable", "x"),
            0.0,
            "another namespace's Plugin"
        );
        // An edited weight, as the next watch event brings it.
        writer.apply_watcher_event(&watcher::Event::Apply(plugin("v2", "ml", 90)));
        assert_eq!(alias_table_of(&store, "ml").percent("stable", "v2"), 50.0);
    }

    fn slice(service: &str, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abcde"), "namespace": "ml",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    #[test]
    fn ready_endpoints_become_instances_of_their_plugin() {
        let slices = [
            slice(
                "echo",
                json!([
                    {"addresses": ["10.0.0.7"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "echo-b"}},
                    {"addresses": ["10.0.0.6"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "echo-a"}},
                    {"addresses": ["10.0.0.8"], "conditions": {"ready": false, "terminating": true}, "targetRef": {"kind": "Pod", "name": "echo-c"}},
                ]),
            ),
            slice("other", json!([{"addresses": ["10.0.0.9"]}])),
        ];
        let got = instances("echo", slices.iter());
        let summary: Vec<_> = got
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.state.as_str(),
                    i.ready,
                    i.endpoint.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("echo-a", "starting", false, Some("http://10.0.0.6:8080")),
                ("echo-b", "running", true, Some("http://10.0.0.7:8080")),
                ("echo-c", "stopping", false, Some("http://10.0.0.8:8080")),
            ]
        );
        assert!(instances("other", slices.iter())[0].ready);
    }

    #[test]
    fn config_patch_replaces_instead_of_merging() {
        let old = json!({"model": "a", "batch": {"max": 8, "wait_ms": 2}});
        let new = json!({"model": "b", "batch": {"max": 8}});
        assert_eq!(
            replace_patch(&old, &new),
            json!({"model": "b", "batch": {"wait_ms": null}})
        );
        // Applying the patch (RFC 7386) yields exactly `new`.
        let mut applied = old.clone();
        merge(&mut applied, &replace_patch(&old, &new));
        assert_eq!(applied, new);
    }

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    #[test]
    fn log_lines_split_their_timestamp() {
        let l = log_line("echo-a", true, "2026-11-25T03:00:00.1Z {\"msg\":\"hi\"}");
        assert_eq!(l.ts, "2026-11-25T03:00:00.1Z");
        assert_eq!(l.message, "[echo-a] {\"msg\":\"hi\"}");
    }

    mod with_api {
        use std::sync::{Arc, Mutex};

        use axum::http::{Request, Response};
        use kube::client::Body;
        use kube::runtime::watcher::Event;

        use super::super::*;
        use super::slice;

        type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

        /// A backend over filled caches and a fake API server that records each call and
        /// answers with `code`.
        fn backend(code: u16) -> (KubernetesBackend, Seen) {
            let seen: Seen = Arc::default();
            let log = seen.clone();
            let service = tower::service_fn(move |req: Request<Body>| {
                let log = log.clone();
                async move {
                    let method = req.method().to_string();
                    let path = req.uri().path().to_owned();
                    let ctype = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    log.lock().expect("log").push((method, path, ctype, body));
                    let answer = if code == 200 {
                        serde_json::to_value(echo()).expect("plugin")
                    } else {
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "code": code, "message": "the object has been modified"})
                    };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                            .expect("response"),
                    )
                }
            });
            let client = Client::new(service, "ml");
            let (plugins, mut pw) = reflector::store();
            let (slices, mut sw) = reflector::store();
            pw.apply_watcher_event(&Event::Apply(echo()));
            sw.apply_watcher_event(&Event::Apply(slice(
                "echo",
                json!([{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}]),
            )));
            (
                KubernetesBackend::from_stores(client, "ml".into(), plugins, slices),
                seen,
            )
        }

        fn echo() -> Plugin {
            serde_json::from_value(json!({
                "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin",
                "metadata": {"name": "echo", "namespace": "ml", "resourceVersion": "7", "generation": 3},
                "spec": {"implementation": "echo", "config": {"greeting": "hello", "lang": "en"}},
            }))
            .expect("plugin")
        }

        #[tokio::test]
        async fn views_come_from_the_caches() {
            let (b, seen) = backend(200);
            let views = b.list().await;
            assert_eq!(views.len(), 1);
            assert_eq!(views[0].generation, 3);
            assert_eq!(views[0].ready_endpoints(), ["http://10.0.0.7:8080"]);
            let route = b.route("echo").await.expect("route");
            assert_eq!(route.generation, 3);
            assert_eq!(route.endpoints, ["10.0.0.7:8080".parse().expect("addr")]);
            assert!(b.get("nope").await.is_none());
            assert!(matches!(
                b.start("nope").await,
                Err(BackendError::NotFound(_))
            ));
            assert!(
                seen.lock().expect("log").is_empty(),
                "reads never hit the API"
            );
        }

        #[tokio::test]
        async fn lifecycle_is_a_guarded_merge_patch_of_the_plugin() {
            let (b, seen) = backend(200);
            b.stop("echo").await.expect("stop");
            b.restart("echo").await.expect("restart");
            b.set_config("echo", json!({"greeting": "hi"}))
                .await
                .expect("config");
            let seen = seen.lock().expect("log").clone();
            for (method, path, ctype, body) in &seen {
                assert_eq!(method, "PATCH");
                assert_eq!(path, "/apis/bkg.rs/v1alpha1/namespaces/ml/plugins/echo");
                assert_eq!(ctype, "application/merge-patch+json");
                assert_eq!(body["metadata"]["resourceVersion"], "7");
            }
            assert_eq!(seen[0].3["spec"], json!({"enabled": false}));
            assert!(seen[1].3["metadata"]["annotations"][RESTARTED_AT].is_string());
            assert_eq!(
                seen[2].3["spec"]["config"],
                json!({"greeting": "hi", "lang": null})
            );
        }

        /// A backend over one Plugin with this spec, whose Deployment is at `now` replicas; the
        /// fake API server answers the scale subresource and Events, and records each call.
        fn scaling_backend(spec: Value, now: i32) -> (KubernetesBackend, Seen) {
            let seen: Seen = Arc::default();
            let log = seen.clone();
            let service = tower::service_fn(move |req: Request<Body>| {
                let log = log.clone();
                async move {
                    let method = req.method().to_string();
                    let path = req.uri().path().to_owned();
                    let query = req.uri().query().unwrap_or_default().to_owned();
                    let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    log.lock().expect("log").push((
                        method.clone(),
                        path.clone(),
                        query,
                        body.clone(),
                    ));
                    let scale = |n: &Value| {
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                               "metadata": {"name": "echo", "namespace": "ml"},
                               "spec": {"replicas": n}, "status": {"replicas": now}})
                    };
                    let answer = match (method.as_str(), path.ends_with("/scale")) {
                        ("GET", true) => scale(&json!(now)),
                        ("PATCH", true) => scale(&body["spec"]["replicas"]),
                        _ => body,
                    };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                            .expect("response"),
                    )
                }
            });
            let client = Client::new(service, "ml");
            let (plugins, mut pw) = reflector::store();
            let (slices, _sw) = reflector::store();
            let plugin: Plugin = serde_json::from_value(json!({
                "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin",
                "metadata": {"name": "echo", "namespace": "ml", "uid": "u-1", "resourceVersion": "7"},
                "spec": spec,
            }))
            .expect("plugin");
            pw.apply_watcher_event(&Event::Apply(plugin));
            (
                KubernetesBackend::from_stores(client, "ml".into(), plugins, slices),
                seen,
            )
        }

        const SCALE: &str = "/apis/apps/v1/namespaces/ml/deployments/echo/scale";

        #[tokio::test]
        async fn scale_patches_the_deployments_scale_subresource_within_bounds_and_records_an_event()
         {
            let spec =
                json!({"implementation": "echo", "scaling": {"minReplicas": 0, "maxReplicas": 4}});
            let (b, seen) = scaling_backend(spec, 1);
            assert_eq!(
                b.scale("echo", 9, "in-flight 70 over target 8")
                    .await
                    .expect("scale"),
                4
            );
            let seen = seen.lock().expect("log").clone();
            let calls: Vec<_> = seen
                .iter()
                .map(|(m, p, _, _)| (m.as_str(), p.as_str()))
                .collect();
            assert_eq!(
                calls,
                [
                    ("GET", SCALE),
                    ("PATCH", SCALE),
                    ("POST", "/apis/events.k8s.io/v1/namespaces/ml/events"),
                ]
            );
            let (_, _, query, body) = &seen[1];
            assert!(query.contains("fieldManager=bkg-autoscaler"), "{query}");
            assert_eq!(body, &json!({"spec": {"replicas": 4}}));
            let event = &seen[2].3;
            assert_eq!(event["reason"], "Scaled");
            assert_eq!(event["note"], "from 1 to 4: in-flight 70 over target 8");
            assert_eq!(event["regarding"]["kind"], "Plugin");
            assert_eq!(event["regarding"]["name"], "echo");
            assert_eq!(event["reportingController"], "bkg-gateway");
        }

        #[tokio::test]
        async fn scale_to_the_current_count_writes_nothing() {
            let spec =
                json!({"implementation": "echo", "scaling": {"minReplicas": 2, "maxReplicas": 4}});
            let (b, seen) = scaling_backend(spec, 2);
            // 0 is below minReplicas: clamped to 2, which it already has.
            assert_eq!(b.scale("echo", 0, "idle").await.expect("scale"), 2);
            let seen = seen.lock().expect("log").clone();
            assert_eq!(seen.len(), 1, "only the GET: {seen:?}");
        }

        #[tokio::test]
        async fn scale_is_refused_for_a_count_the_autoscaler_does_not_own() {
            for spec in [
                json!({"implementation": "echo", "replicas": 2}),
                json!({"implementation": "echo", "resources": {"cpu": "1"},
                       "scaling": {"minReplicas": 1, "maxReplicas": 4, "metric": "cpu"}}),
                json!({"implementation": "echo", "enabled": false, "scaling": {"maxReplicas": 4}}),
                json!({"implementation": "echo", "scaling": {"minReplicas": 5, "maxReplicas": 4}}),
            ] {
                let (b, seen) = scaling_backend(spec.clone(), 1);
                let result = b.scale("echo", 3, "load").await;
                assert!(
                    matches!(result, Err(BackendError::Conflict(_))),
                    "{spec}: {result:?}"
                );
                assert!(seen.lock().expect("log").is_empty(), "{spec}: no API call");
            }
        }

        #[tokio::test]
        async fn a_concurrent_edit_is_a_conflict() {
            let (b, _) = backend(409);
            assert!(matches!(
                b.start("echo").await,
                Err(BackendError::Conflict(_))
            ));
        }
    }
}
