//! The Kubernetes backend: plugins are Plugin resources run by `bkg operator`.
//!
//! ```text
//!  watch Plugins ───────▶ Store<Plugin> ─────────┬▶ PluginView { plugin, instances: ready pod IPs }
//!  watch EndpointSlices ▶ Store<EndpointSlice> ──┘
//!                       └▶ Routes: plugin ─▶ Arc<[SocketAddr]> ──▶ route(id): one lookup
//!  start/stop/restart/config ──▶ merge patch of the Plugin (the operator does the rest)
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
use bkg_core::wire::{Instance, LogLine};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
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
        tokio::spawn(
            watcher(plugin_api, watcher::Config::default())
                .default_backoff()
                .reflect(plugin_writer)
                .for_each(|e| async move {
                    if let Err(e) = e {
                        tracing::warn!(error = %e, "Plugin watch");
                    }
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
        Self {
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
