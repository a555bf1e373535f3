//! The routing index: per plugin, its ready endpoints, kept up to date by the EndpointSlice watch
//! so that an invoke does one map lookup instead of scanning every slice in the namespace.
//!
//! ```text
//!  watcher events ─▶ RoutesWriter (per slice: its service, its ready endpoints)
//!                        │ recomputes only the services an event touched
//!                        ▼
//!  route(id) ───────▶ Routes: service name ─▶ Arc<[SocketAddr]> (sorted like `instances`)
//! ```
//!
//! The writer holds the lock only to swap one `Arc` (or, after a relist, the whole map), so
//! readers never wait on parsing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use parking_lot::RwLock;
use tokio::sync::watch;

use super::{SERVICE_NAME, endpoint_ready, slice_port};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type SliceKey = ObjectRef<EndpointSlice>;
/// Plugin (Service) name → its ready endpoints.
type Table = Map<Box<str>, Arc<[SocketAddr]>>;

/// Read side: the ready endpoints of each plugin's Service. Cheap to clone.
#[derive(Clone)]
pub struct Routes {
    ready: Arc<RwLock<Table>>,
    initialised: watch::Receiver<bool>,
}

/// Write side, owned by the EndpointSlice watch task.
pub struct RoutesWriter {
    routes: Routes,
    initialised: watch::Sender<bool>,
    /// Ready endpoints of each labelled slice, grouped by service.
    services: Map<String, Map<SliceKey, Vec<Ready>>>,
    /// The service each slice was last seen under (a slice's label may change).
    service_of: Map<SliceKey, String>,
    /// Slices listed since the last `Init`, swapped in at `InitDone`.
    relist: Option<Vec<EndpointSlice>>,
}

/// One ready endpoint; `name` orders it the way [`super::instances`] does.
#[derive(Clone, Debug)]
struct Ready {
    name: String,
    addr: SocketAddr,
}

/// An empty index and the writer that fills it.
pub fn routes() -> (Routes, RoutesWriter) {
    let (tx, rx) = watch::channel(false);
    let routes = Routes {
        ready: Arc::default(),
        initialised: rx,
    };
    let writer = RoutesWriter {
        routes: routes.clone(),
        initialised: tx,
        services: Map::default(),
        service_of: Map::default(),
        relist: None,
    };
    (routes, writer)
}

impl Routes {
    /// An index of `slices` as they are now (tests and benchmarks: nothing updates it later).
    pub fn from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Self {
        let (routes, mut writer) = routes();
        writer.apply(&Event::Init);
        for slice in slices {
            writer.apply(&Event::InitApply(slice.clone()));
        }
        writer.apply(&Event::InitDone);
        routes
    }

    /// Ready endpoints of `service`, in the order [`super::instances`] lists them.
    pub fn ready(&self, service: &str) -> Option<Arc<[SocketAddr]>> {
        self.ready.read().get(service).cloned()
    }

    /// Waits for the first full list of slices.
    pub async fn wait_until_ready(&self) -> Result<(), watch::error::RecvError> {
        self.initialised
            .clone()
            .wait_for(|done| *done)
            .await
            .map(drop)
    }
}

impl RoutesWriter {
    /// Applies one watcher event, the way a reflector store does.
    pub fn apply(&mut self, event: &Event<EndpointSlice>) {
        match event {
            Event::Apply(slice) => {
                let key = ObjectRef::from_obj(slice);
                let old = self.remove(&key);
                let new = self.insert(key, slice);
                for service in old
                    .iter()
                    .chain(new.iter().filter(|n| old.as_ref() != Some(n)))
                {
                    self.publish(service);
                }
            }
            Event::Delete(slice) => {
                if let Some(service) = self.remove(&ObjectRef::from_obj(slice)) {
                    self.publish(&service);
                }
            }
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(slice) => self.relist.get_or_insert_default().push(slice.clone()),
            Event::InitDone => {
                self.services.clear();
                self.service_of.clear();
                for slice in self.relist.take().unwrap_or_default() {
                    self.insert(ObjectRef::from_obj(&slice), &slice);
                }
                let all = self
                    .services
                    .iter()
                    .map(|(service, slices)| (service.as_str().into(), sorted(slices)))
                    .collect();
                *self.routes.ready.write() = all;
                self.initialised.send_replace(true);
            }
        }
    }

    /// Forgets a slice; returns the service it belonged to.
    fn remove(&mut self, key: &SliceKey) -> Option<String> {
        let service = self.service_of.remove(key)?;
        if let Some(slices) = self.services.get_mut(&service) {
            slices.remove(key);
            if slices.is_empty() {
                self.services.remove(&service);
            }
        }
        Some(service)
    }

    /// Records a slice's ready endpoints; returns its service (none without the label).
    fn insert(&mut self, key: SliceKey, slice: &EndpointSlice) -> Option<String> {
        let service = slice.labels().get(SERVICE_NAME)?.clone();
        self.service_of.insert(key.clone(), service.clone());
        self.services
            .entry(service.clone())
            .or_default()
            .insert(key, ready_endpoints(slice));
        Some(service)
    }

    /// Swaps in the recomputed endpoints of one service.
    fn publish(&self, service: &str) {
        let ready = self.services.get(service).map(sorted);
        let mut map = self.routes.ready.write();
        match ready {
            Some(ready) => {
                map.insert(service.into(), ready);
            }
            None => {
                map.remove(service);
            }
        }
    }
}

/// The ready endpoints of one slice, addressed as [`super::instances`] addresses them.
fn ready_endpoints(slice: &EndpointSlice) -> Vec<Ready> {
    let Ok(port) = u16::try_from(slice_port(slice)) else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|ep| endpoint_ready(ep))
        .filter_map(|ep| {
            let address = ep.addresses.first()?;
            let ip: IpAddr = address.parse().ok()?;
            Some(Ready {
                name: ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_else(|| address.clone()),
                addr: SocketAddr::new(ip, port),
            })
        })
        .collect()
}

/// All ready endpoints of a service's slices, by instance name (address breaks ties, e.g. a
/// dual-stack pod listed in an IPv4 and an IPv6 slice).
fn sorted(slices: &Map<SliceKey, Vec<Ready>>) -> Arc<[SocketAddr]> {
    let mut all: Vec<&Ready> = slices.values().flatten().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
    all.into_iter().map(|r| r.addr).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn slice(name: &str, service: Option<&str>, family: &str, endpoints: Value) -> EndpointSlice {
        let labels = service.map_or(json!({}), |s| json!({SERVICE_NAME: s}));
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "ml", "labels": labels},
            "addressType": family,
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn ep(pod: &str, address: &str, ready: bool) -> Value {
        json!({"addresses": [address], "conditions": {"ready": ready},
               "targetRef": {"kind": "Pod", "name": pod}})
    }

    fn ready(routes: &Routes, service: &str) -> Vec<String> {
        routes
            .ready(service)
            .map(|r| r.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// What the scan over every slice chose before the index existed.
    fn scanned(service: &str, slices: &[EndpointSlice]) -> Vec<String> {
        super::super::instances(service, slices.iter())
            .into_iter()
            .filter(|i| i.ready)
            .filter_map(|i| i.endpoint.as_deref().and_then(crate::backend::socket_addr))
            .map(|a| a.to_string())
            .collect()
    }

    fn started() -> (Routes, RoutesWriter) {
        let (routes, mut w) = routes();
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        (routes, w)
    }

    #[test]
    fn slices_added_updated_and_deleted() {
        let (routes, mut w) = started();
        let a = slice(
            "echo-a",
            Some("echo"),
            "IPv4",
            json!([
                ep("echo-2", "10.0.0.2", true),
                ep("echo-1", "10.0.0.1", true)
            ]),
        );
        w.apply(&Event::Apply(a));
        assert_eq!(ready(&routes, "echo"), ["10.0.0.1:8080", "10.0.0.2:8080"]);

        // echo-1 turns unready, then terminating; absent conditions mean ready.
        let a = slice(
            "echo-a",
            Some("echo"),
            "IPv4",
            json!([ep("echo-2", "10.0.0.2", true), ep("echo-1", "10.0.0.1", false),
                       {"addresses": ["10.0.0.3"], "conditions": {"terminating": true}},
                       {"addresses": ["10.0.0.4"]}]),
        );
        w.apply(&Event::Apply(a.clone()));
        assert_eq!(ready(&routes, "echo"), ["10.0.0.4:8080", "10.0.0.2:8080"]);
        assert_eq!(
            ready(&routes, "echo"),
            scanned("echo", std::slice::from_ref(&a))
        );

        w.apply(&Event::Delete(a));
        assert!(routes.ready("echo").is_none());
    }

    #[test]
    fn several_slices_of_one_service_merge_in_instance_order() {
        let (routes, mut w) = started();
        let slices = [
            slice(
                "echo-a",
                Some("echo"),
                "IPv4",
                json!([
                    ep("echo-3", "10.0.0.3", true),
                    ep("echo-1", "10.0.0.1", true)
                ]),
            ),
            slice(
                "echo-b",
                Some("echo"),
                "IPv4",
                json!([ep("echo-2", "10.0.0.2", true)]),
            ),
            slice(
                "other-a",
                Some("other"),
                "IPv4",
                json!([ep("other-1", "10.0.1.1", true)]),
            ),
        ];
        for s in &slices {
            w.apply(&Event::Apply(s.clone()));
        }
        assert_eq!(
            ready(&routes, "echo"),
            ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
        );
        assert_eq!(ready(&routes, "echo"), scanned("echo", &slices));
        assert_eq!(ready(&routes, "other"), scanned("other", &slices));

        w.apply(&Event::Delete(slices[0].clone()));
        assert_eq!(ready(&routes, "echo"), ["10.0.0.2:8080"]);
    }

    #[test]
    fn ipv6_endpoints_and_ports() {
        let (routes, mut w) = started();
        let mut v6 = slice(
            "echo-v6",
            Some("echo"),
            "IPv6",
            json!([ep("echo-1", "fd00::1", true)]),
        );
        v6.ports = Some(vec![
            serde_json::from_value(json!({"name": "http", "port": 9000})).expect("port"),
        ]);
        let v4 = slice(
            "echo-v4",
            Some("echo"),
            "IPv4",
            json!([ep("echo-1", "10.0.0.1", true)]),
        );
        // A slice without a port named http is reached on the runtime's port.
        let mut bare = slice(
            "bare-a",
            Some("bare"),
            "IPv4",
            json!([ep("bare-1", "10.0.2.1", true)]),
        );
        bare.ports = None;
        for s in [&v6, &v4, &bare] {
            w.apply(&Event::Apply(s.clone()));
        }
        // A dual-stack pod: both families, IPv4 first.
        assert_eq!(ready(&routes, "echo"), ["10.0.0.1:8080", "[fd00::1]:9000"]);
        assert_eq!(ready(&routes, "echo"), scanned("echo", &[v6, v4]));
        assert_eq!(ready(&routes, "bare"), ["10.0.2.1:8080"]);
    }

    #[test]
    fn a_slice_without_the_label_routes_nowhere() {
        let (routes, mut w) = started();
        w.apply(&Event::Apply(slice(
            "loose",
            None,
            "IPv4",
            json!([ep("x", "10.0.0.9", true)]),
        )));
        assert!(routes.ready.read().is_empty());

        // A slice that loses its label (or moves to another service) leaves its old service.
        let labelled = slice(
            "echo-a",
            Some("echo"),
            "IPv4",
            json!([ep("echo-1", "10.0.0.1", true)]),
        );
        w.apply(&Event::Apply(labelled));
        w.apply(&Event::Apply(slice(
            "echo-a",
            Some("other"),
            "IPv4",
            json!([ep("echo-1", "10.0.0.1", true)]),
        )));
        assert!(routes.ready("echo").is_none());
        assert_eq!(ready(&routes, "other"), ["10.0.0.1:8080"]);
        w.apply(&Event::Apply(slice(
            "echo-a",
            None,
            "IPv4",
            json!([ep("echo-1", "10.0.0.1", true)]),
        )));
        assert!(routes.ready.read().is_empty());
    }

    #[tokio::test]
    async fn a_relist_replaces_everything_at_once() {
        let (routes, mut w) = routes();
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(slice(
            "old-a",
            Some("old"),
            "IPv4",
            json!([ep("old-1", "10.0.0.1", true)]),
        )));
        assert!(
            routes.ready("old").is_none(),
            "nothing before the list is complete"
        );
        w.apply(&Event::InitDone);
        routes.wait_until_ready().await.expect("ready");
        assert_eq!(ready(&routes, "old"), ["10.0.0.1:8080"]);

        // The watch restarts; `old` was deleted meanwhile.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(slice(
            "new-a",
            Some("new"),
            "IPv4",
            json!([ep("new-1", "10.0.0.2", true)]),
        )));
        assert_eq!(
            ready(&routes, "old"),
            ["10.0.0.1:8080"],
            "served until the relist is done"
        );
        w.apply(&Event::InitDone);
        assert!(routes.ready("old").is_none());
        assert_eq!(ready(&routes, "new"), ["10.0.0.2:8080"]);
    }
}
