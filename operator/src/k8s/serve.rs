//! `bkg operator`: probes and metrics, leader election, then the controller until shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::{Config, Context, Error, Result, leader, metrics::Metrics};

struct Shared {
    registry: Registry,
}

async fn metrics_handler(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
        Ok(()) => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let (content_type, body) = bkg_core::exposition::negotiate(accept, body);
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Runs the operator until `shutdown` resolves or leadership is lost (then the pod restarts and
/// stands by). Connects with the in-cluster config or `KUBECONFIG`.
pub async fn operate(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| Error::kube("connect to the API server", e))?;
    run(client, config, shutdown).await
}

/// [`operate`] with a given client (tests pass one on the API double).
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let shared = Arc::new(Shared { registry });
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| Error::Lease(format!("cannot listen on {}: {e}", config.metrics_listen)))?;
    tracing::info!(addr = %config.metrics_listen, "serving /metrics, /livez, /readyz");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server_stop = stopped(stop_rx.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(server_stop)
            .await
        {
            tracing::error!(error = %e, "metrics server");
        }
    });

    let (lost_tx, lost_rx) = watch::channel(false);
    let mut renewing = None;
    if let Some(lease) = &config.lease {
        tokio::select! {
            () = leader::acquire(&client, lease) => {}
            () = stopped(stop_rx.clone()) => return Ok(()),
        }
        metrics.leader.set(1);
        let (client, lease) = (client.clone(), lease.clone());
        renewing = Some(tokio::spawn(async move {
            let e = leader::hold(client, lease).await;
            tracing::error!(error = %e, "leadership lost; stopping");
            let _ = lost_tx.send(true);
        }));
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.images.clone(),
        metrics.clone(),
    ));
    let until = stop_or_lost(stop_rx.clone(), lost_rx.clone());
    // kube's graceful shutdown waits for the watch caches' first list before it lets the
    // controller end, so with the API server unreachable it would never end: give in-flight
    // reconciles DRAIN, then go (reconciles are idempotent; the next leader redoes one cut off).
    let drain_deadline = async {
        stop_or_lost(stop_rx.clone(), lost_rx.clone()).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        () = super::controller(client.clone(), &config, ctx, until) => {}
        () = drain_deadline => {
            tracing::warn!(drain = ?DRAIN, "reconciles still running after the stop; exiting without them");
        }
    }
    if let Some(lease) = &config.lease {
        // Stop renewing first: a renewal after the release would take the Lease back.
        if let Some(renewing) = renewing {
            renewing.abort();
            let _ = renewing.await;
        }
        leader::release(&client, lease).await;
        metrics.leader.set(0);
    }
    if *lost_rx.borrow() {
        return Err(Error::Lease("leadership lost".into()));
    }
    Ok(())
}

/// How long reconciles in flight may finish after SIGTERM or a lost Lease (the kubelet's grace
/// period is 30 s by default).
const DRAIN: Duration = Duration::from_secs(5);

/// Resolves once the stop signal came or leadership was lost.
async fn stop_or_lost(mut stop: watch::Receiver<bool>, mut lost: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = lost.wait_for(|l| *l) => {}
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
