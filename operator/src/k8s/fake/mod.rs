//! An in-memory Kubernetes API server for the operator's tests: a tower `Service` behind
//! `kube::Client::new`, so the real kube client, watcher, controller and event recorder talk
//! HTTP/JSON to it. (No maintained fake fits kube 5: kube-fake-client 0.3 targets kube 4.)
//!
//! ```text
//!  Client("a") ─┐                 ┌ objects by (apiVersion, plural, namespace, name), resourceVersion
//!  Client("b") ─┼▶ ApiServer ─────┤ field owners per (manager, operation, subresource)
//!  test helpers ┘  (log per       └ change log ─▶ watch streams
//!                   identity)
//! ```
//!
//! What it models:
//! - GET, LIST (with `k=v` label selectors) and WATCH (from a resourceVersion, replayed from the
//!   change log, then live); POST (409 AlreadyExists); PUT with optimistic concurrency (a stale
//!   `resourceVersion` is a 409); JSON merge patch; DELETE.
//! - One resourceVersion counter for the whole store, bumped on every write and returned in the
//!   object; `metadata.generation` bumped when anything outside metadata and status changes.
//! - Server-side apply (`application/apply-patch+yaml`, `fieldManager`, `force`): the applied
//!   fields are merged into the stored object, and each manager's leaf fields are recorded and
//!   returned in `metadata.managedFields` (FieldsV1). Applying a field another manager owns with
//!   a different value is a 409 naming the manager and field unless `force`, which moves the
//!   field. A field the manager applied before and leaves out now is removed, unless another
//!   manager owns it too.
//! - The status subresource: a write to `/status` changes only status; a write to the main
//!   resource (create, PUT, apply, merge patch) leaves status as it was.
//! - Deletion with the garbage collector's cascade: objects whose owner reference names a deleted
//!   uid are deleted too, at once.
//! - Per-identity request logs (one `Client` per identity) and a per-identity cut-off (503), for
//!   leader election tests; faults injected per method and path.
//!
//! What it does not model: admission and schema validation; defaulting (a field removed by an
//! apply stays absent instead of taking its default); lists merged by key (lists are atomic, so
//! two managers cannot share a list's items); ownership of fields written by PUT or merge patch
//! (only [`ApiServer::scale`] records an `Update` owner); field selectors, set-based label
//! selectors, pagination, bookmarks, watch timeouts and 410 Gone; finalizers and foreground
//! deletion (deletion is immediate); strategic merge and JSON patch; dry run; discovery; RBAC;
//! controllers (a Deployment gets no status unless the test writes it with
//! [`ApiServer::set_status`]).

mod store;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use store::Key;
use store::{Apply, Change, Refusal, Store};

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A recorded request: who sent it, and what.
#[derive(Clone, Debug)]
pub struct Call {
    pub identity: String,
    pub method: String,
    pub path: String,
}

impl Call {
    /// Whether it changed something (or tried to).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

struct Fault {
    method: String,
    path: String,
    code: u16,
}

#[derive(Default)]
struct State {
    store: Store,
    requests: Vec<Call>,
    cut_off: HashSet<String>,
    faults: Vec<Fault>,
}

/// The double. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changes: broadcast::channel(4096).0,
        }
    }
}

/// Where a request goes, from its path.
struct Target {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (api_version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ((*v).to_owned(), rest),
            ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [p] => (p, None, None),
            [p, n] => (p, Some(n), None),
            [p, n, s] => (p, Some(n), Some(s)),
            _ => return None,
        };
        Some(Self {
            api_version,
            plural: (*plural).to_owned(),
            namespace,
            name: name.map(|n| (*n).to_owned()),
            subresource: subresource.map(|s| (*s).to_owned()),
        })
    }

    fn key(&self, name: &str) -> Key {
        Key {
            api_version: self.api_version.clone(),
            plural: self.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    /// Whether a change belongs to this collection and matches `selector` (`k=v,k=v`).
    fn matches(&self, key: &Key, object: &Value, selector: &[(String, String)]) -> bool {
        key.api_version == self.api_version
            && key.plural == self.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && selector
                .iter()
                .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v))
    }
}

fn path_key(path: &str) -> Key {
    let t = Target::parse(path).unwrap_or_else(|| panic!("not an object path: {path}"));
    t.key(
        t.name
            .as_deref()
            .unwrap_or_else(|| panic!("no name in {path}")),
    )
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "plugins" => "Plugin",
        "deployments" => "Deployment",
        "services" => "Service",
        "configmaps" => "ConfigMap",
        "poddisruptionbudgets" => "PodDisruptionBudget",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "leases" => "Lease",
        "events" => "Event",
        _ => "Object",
    }
}

fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).expect("json"))).boxed_unsync())
        .expect("response")
}

fn refused(r: &Refusal) -> Response<ResponseBody> {
    json_response(
        r.code,
        &json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "code": r.code, "reason": r.reason, "message": r.message}),
    )
}

impl ApiServer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client whose requests are logged as `identity`'s.
    pub fn client(&self, identity: &str) -> kube::Client {
        kube::Client::new(
            Endpoint {
                server: self.clone(),
                identity: identity.into(),
            },
            "default",
        )
    }

    /// The object at an API path (`/apis/apps/v1/namespaces/default/deployments/echo`).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state()
            .store
            .objects
            .get(&path_key(path))
            .map(|s| s.object.clone())
    }

    /// Every stored object of a collection (`"apps/v1", "deployments"`), all namespaces.
    pub fn objects(&self, api_version: &str, plural: &str) -> Vec<Value> {
        self.state()
            .store
            .objects
            .iter()
            .filter(|(k, _)| k.api_version == api_version && k.plural == plural)
            .map(|(_, s)| s.object.clone())
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Call> {
        self.state().requests.clone()
    }

    /// While cut off, `identity`'s requests are answered 503 and its watches end (a partitioned
    /// replica).
    pub fn cut_off(&self, identity: &str, cut: bool) {
        let mut st = self.state();
        if cut {
            st.cut_off.insert(identity.to_owned());
        } else {
            st.cut_off.remove(identity);
        }
    }

    /// The next `method` request to `path` is answered with `code`.
    pub fn fail_next(&self, method: &str, path: &str, code: u16) {
        self.state().faults.push(Fault {
            method: method.to_owned(),
            path: path.to_owned(),
            code,
        });
    }

    /// Replaces the status of the object at `path`, as its controller does with a PUT to
    /// `/status` (the Deployment controller, for a Deployment).
    pub fn set_status(&self, path: &str, status: Value) -> Value {
        self.write(|store| {
            store.replace(&path_key(path), json!({"status": status}), Some("status"))
        })
        .expect("set status")
    }

    /// Writes `spec.replicas` through the scale subresource as `manager`.
    pub fn scale(&self, path: &str, replicas: i64, manager: &str) -> Value {
        self.write(|store| store.scale(&path_key(path), replicas, manager))
            .expect("scale")
    }

    /// Runs a write and sends its changes to the watches (under the lock, so a watch that
    /// starts meanwhile sees each change once, from the log or from the channel).
    fn write(
        &self,
        op: impl FnOnce(&mut Store) -> Result<Value, Refusal>,
    ) -> Result<Value, Refusal> {
        let mut st = self.state();
        let from = st.store.log.len();
        let result = op(&mut st.store);
        for change in &st.store.log[from..] {
            let _ = self.changes.send(change.clone());
        }
        result
    }

    fn handle(
        &self,
        identity: &str,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ResponseBody> {
        let method = parts.method.as_str();
        let path = parts.uri.path();
        let query: HashMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        {
            let mut st = self.state();
            st.requests.push(Call {
                identity: identity.to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
            });
            if st.cut_off.contains(identity) {
                return refused(&Refusal::new(503, "ServiceUnavailable", "cut off"));
            }
            if let Some(i) = st
                .faults
                .iter()
                .position(|f| f.method == method && f.path == path)
            {
                let f = st.faults.remove(i);
                return refused(&Refusal::new(
                    f.code,
                    "Injected",
                    format!("injected {}", f.code),
                ));
            }
        }
        let Some(target) = Target::parse(path) else {
            return refused(&Refusal::new(404, "NotFound", format!("no route {path}")));
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return refused(&Refusal::new(400, "BadRequest", e.to_string())),
            }
        };
        let sub = target.subresource.as_deref();
        let result = match (method, target.name.as_deref()) {
            ("GET", Some(name)) => self
                .state()
                .store
                .objects
                .get(&target.key(name))
                .map(|s| s.object.clone())
                .ok_or_else(|| Refusal::not_found(&target.key(name))),
            ("GET", None) => {
                let selector: Vec<(String, String)> = query
                    .get("labelSelector")
                    .map(|s| {
                        s.split(',')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    let since = query
                        .get("resourceVersion")
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or(0);
                    return self.watch(identity, target, since, selector);
                }
                Ok(self.list(&target, &selector))
            }
            ("POST", None) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = target.key(name);
                self.write(|s| s.create(key, body))
            }
            ("PUT", Some(name)) => self.write(|s| s.replace(&target.key(name), body, sub)),
            ("PATCH", Some(name)) => {
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let key = target.key(name);
                match content_type {
                    "application/apply-patch+yaml" => match query.get("fieldManager") {
                        None => Err(Refusal::new(
                            400,
                            "BadRequest",
                            "fieldManager is required for apply",
                        )),
                        Some(manager) => {
                            let how = Apply {
                                manager,
                                force: query.get("force").is_some_and(|f| f == "true"),
                                subresource: sub,
                            };
                            self.write(|s| s.apply(&key, &body, &how))
                        }
                    },
                    "application/merge-patch+json" => {
                        self.write(|s| s.patch_merge(&key, &body, sub))
                    }
                    other => Err(Refusal::new(
                        415,
                        "UnsupportedMediaType",
                        format!("patch type {other}"),
                    )),
                }
            }
            ("DELETE", Some(name)) => self.write(|s| s.delete(&target.key(name))),
            _ => Err(Refusal::new(
                405,
                "MethodNotAllowed",
                format!("{method} {path}"),
            )),
        };
        match result {
            Ok(v) => json_response(if method == "POST" { 201 } else { 200 }, &v),
            Err(r) => refused(&r),
        }
    }

    fn list(&self, target: &Target, selector: &[(String, String)]) -> Value {
        let st = self.state();
        let items: Vec<Value> = st
            .store
            .objects
            .iter()
            .filter(|(k, s)| target.matches(k, &s.object, selector))
            .map(|(_, s)| s.object.clone())
            .collect();
        json!({
            "apiVersion": target.api_version,
            "kind": format!("{}List", kind_of(&target.plural)),
            "metadata": {"resourceVersion": st.store.rv.to_string()},
            "items": items,
        })
    }

    /// A watch: the logged changes after `since`, then live ones, one JSON line each.
    fn watch(
        &self,
        identity: &str,
        target: Target,
        since: u64,
        selector: Vec<(String, String)>,
    ) -> Response<ResponseBody> {
        let (replay, rx) = {
            let st = self.state();
            let replay: Vec<Change> = st
                .store
                .log
                .iter()
                .filter(|c| c.rv > since)
                .cloned()
                .collect();
            (replay, self.changes.subscribe())
        };
        let live = futures::stream::unfold(rx, |mut rx| async move {
            // A lagging watch ends; the watcher lists again.
            rx.recv().await.ok().map(|c| (c, rx))
        });
        // A watch of an identity that is cut off ends with its next event.
        let (server, identity) = (self.clone(), identity.to_owned());
        let frames = futures::stream::iter(replay)
            .chain(live)
            .take_while(move |_| std::future::ready(!server.state().cut_off.contains(&identity)))
            .filter(move |c| std::future::ready(target.matches(&c.key, &c.object, &selector)))
            .map(|c| {
                let mut line = serde_json::to_vec(&json!({"type": c.type_, "object": c.object}))
                    .expect("json");
                line.push(b'\n');
                Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
            });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(frames).boxed_unsync())
            .expect("response")
    }
}

/// One identity's connection to the double.
#[derive(Clone)]
struct Endpoint {
    server: ApiServer,
    identity: Arc<str>,
}

impl tower::Service<Request<Body>> for Endpoint {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (server, identity) = (self.server.clone(), self.identity.clone());
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            Ok(server.handle(&identity, &parts, &bytes))
        })
    }
}

#[cfg(test)]
mod tests;
