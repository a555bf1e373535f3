//! `cargo bench -p bkg-operator --bench reconcile`: 1,000 Plugins reconciled against an in-process
//! mocked API server; prints wall time to converge (every Plugin's status written as Running) and
//! the process's peak RSS. A command, not a test: figures go to docs/bench/operator.md.
//!
//! The mock answers at once, so this measures the operator's own cost (serialization, pipeline,
//! client), not API-server latency. Options: `-- --plugins N --concurrency C`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bkg_core::crd::Plugin;
use bkg_operator::k8s::metrics::Metrics;
use bkg_operator::k8s::{Context, Images, reconcile};
use futures::StreamExt;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// Status of each Plugin as the fake API server stores it.
type Statuses = Arc<Mutex<HashMap<String, Value>>>;

fn plugin(i: usize) -> Plugin {
    let gpu = i.is_multiple_of(10);
    let mut spec = json!({
        "implementation": if gpu { "candle" } else { "echo" },
        "replicas": 1 + (i % 3) as i64,
        "enabled": !i.is_multiple_of(17),
        "config": {"greeting": format!("hello {i}")},
        "resources": {"memory": "256Mi", "cpu": "250m"},
    });
    if gpu {
        spec["resources"]["gpu"] = json!({"count": 1});
    }
    serde_json::from_value(json!({
        "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin",
        "metadata": {"name": format!("plugin-{i}"), "namespace": "bench",
                     "uid": format!("00000000-0000-0000-0000-{i:012}"), "generation": 1,
                     "resourceVersion": "1"},
        "spec": spec,
    }))
    .expect("bench plugin")
}

/// The fake API server: applies echo the object (Deployments come back fully ready), deletes of
/// absent PDBs and HPAs are 404, status writes are stored.
async fn answer(req: Request<Body>, statuses: Statuses) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (code, answer) = if method == "DELETE" {
        (
            404,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"}),
        )
    } else if path.ends_with("/status") {
        let name = path.rsplit('/').nth(1).unwrap_or_default().to_owned();
        statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, body["status"].clone());
        // The operator does not read the answer's spec; a minimal Plugin suffices.
        let mut obj = body.clone();
        obj["metadata"] = json!({"name": "x", "namespace": "bench"});
        obj["spec"] = json!({"implementation": "echo"});
        (200, obj)
    } else {
        let mut obj = body.clone();
        obj["metadata"]["generation"] = json!(1);
        if body["kind"] == "Deployment" {
            let n = body["spec"]["replicas"].clone();
            obj["status"] = json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                                   "readyReplicas": n, "availableReplicas": n});
        }
        (if method == "POST" { 201 } else { 200 }, obj)
    };
    Ok(Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
        .expect("response"))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = arg("--plugins", 1000);
    let concurrency = arg("--concurrency", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let statuses: Statuses = Arc::default();
        let server_statuses = statuses.clone();
        let service = tower::service_fn(move |req| answer(req, server_statuses.clone()));
        let client = kube::Client::new(service, "bench");
        let ctx = Arc::new(Context::new(client, Images::default(), Metrics::default()));
        let plugins: Vec<Arc<Plugin>> = (0..n).map(|i| Arc::new(plugin(i))).collect();

        let start = Instant::now();
        let failures = futures::stream::iter(plugins.iter().cloned())
            .map(|p| reconcile(p, ctx.clone()))
            .buffer_unordered(concurrency)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        let converge = start.elapsed();
        let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
        let settled = plugins
            .iter()
            .filter(|p| {
                let want = if p.spec.enabled { "Running" } else { "Stopped" };
                statuses
                    .get(p.metadata.name.as_deref().unwrap_or_default())
                    .is_some_and(|s| s["phase"] == want)
            })
            .count();

        // Steady state: reconcile again with the status the operator wrote; expect no writes.
        let writes_before = ctx.metrics.status_writes.get();
        let settled_plugins: Vec<Arc<Plugin>> = plugins
            .iter()
            .map(|p| {
                let mut p = (**p).clone();
                let name = p.metadata.name.clone().unwrap_or_default();
                p.status = statuses
                    .get(&name)
                    .and_then(|s| serde_json::from_value(s.clone()).ok());
                Arc::new(p)
            })
            .collect();
        let start = Instant::now();
        futures::stream::iter(settled_plugins)
            .map(|p| reconcile(p, ctx.clone()))
            .buffer_unordered(concurrency)
            .count()
            .await;
        let steady = start.elapsed();
        let steady_writes = ctx.metrics.status_writes.get() - writes_before;

        println!("plugins:               {n} (every 10th with a GPU, every 17th disabled)");
        println!("concurrency:           {concurrency}");
        println!("converged:             {settled}/{n} (failed reconciles: {failures})");
        println!("wall time to converge: {:.3} s", converge.as_secs_f64());
        println!(
            "per reconcile:         {:.1} µs",
            converge.as_secs_f64() * 1e6 / n as f64
        );
        println!(
            "steady-state pass:     {:.3} s, {steady_writes} status writes",
            steady.as_secs_f64()
        );
        println!(
            "peak RSS:              {:.1} MiB",
            peak_rss_kib() as f64 / 1024.0
        );
        assert_eq!(settled, n, "every Plugin converged");
    });
}
