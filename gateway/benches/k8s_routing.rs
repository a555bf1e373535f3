//! Cost of one invoke's routing in Kubernetes mode: `Backend::route` plus the round-robin pick,
//! against caches holding 1,000 Plugins with one EndpointSlice of 10 ready endpoints each.
//!
//! ```text
//! cargo bench -p bkg-gateway --bench k8s_routing
//! ```

use std::hint::black_box;

use axum::http::{Request, Response};
use bkg_core::Plugin;
use bkg_gateway::backend::Backend;
use bkg_gateway::backend::kubernetes::KubernetesBackend;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::json;

const PLUGINS: usize = 1_000;
const ENDPOINTS: usize = 10;

fn plugin(name: &str) -> Plugin {
    serde_json::from_value(json!({
        "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin",
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": "7", "generation": 3},
        "spec": {"implementation": "echo", "config": {"greeting": "hello"}},
    }))
    .expect("plugin")
}

/// The slice the EndpointSlice controller writes for the plugin's Service.
fn slice(p: usize, name: &str) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            json!({
                "addresses": [format!("10.{}.{}.{}", p / 250, p % 250, e + 1)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "ml", "name": format!("{name}-7d9f-{e:05}")},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-x7k2p"), "namespace": "ml",
                     "labels": {"kubernetes.io/service-name": name,
                                "app.kubernetes.io/managed-by": "bkg-operator"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

/// A backend over filled caches; its client answers nothing (routing never calls the API).
fn backend(names: &[String]) -> KubernetesBackend {
    let service = tower::service_fn(|_: Request<Body>| async {
        Err::<Response<Body>, _>(std::io::Error::other("routing never calls the API"))
    });
    let client = Client::new(service, "ml");
    let (plugins, mut pw) = reflector::store();
    let (slices, mut sw) = reflector::store();
    for (p, name) in names.iter().enumerate() {
        pw.apply_watcher_event(&Event::Apply(plugin(name)));
        sw.apply_watcher_event(&Event::Apply(slice(p, name)));
    }
    KubernetesBackend::from_stores(client, "ml".into(), plugins, slices)
}

fn routing(c: &mut Criterion) {
    let names: Vec<String> = (0..PLUGINS).map(|p| format!("plugin-{p:04}")).collect();
    // The client spawns its request buffer on a runtime; routing itself never waits.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let b = backend(&names);
    let mut next = 0usize;
    c.bench_function("k8s route + pick (1,000 plugins x 10 endpoints)", |bench| {
        bench.iter(|| {
            next = next.wrapping_add(1);
            let id = &names[next % PLUGINS];
            let route = b
                .route(black_box(id))
                .now_or_never()
                .expect("route never waits")
                .expect("plugin");
            black_box(route.endpoints[next % route.endpoints.len()])
        });
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
