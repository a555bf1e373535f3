//! What every long-running `bkg` command shares: log and trace set-up, and the stop signal.

use bkg_trace::Tracing;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Logs to stderr (`text` or `json`; JSON lines carry the fields of every open span: request
/// id, trace id, plugin, capability) and traces through OpenTelemetry (see `bkg-trace`).
/// Keep the returned value alive: dropping it flushes the spans still buffered.
pub(crate) fn init_tracing(format: &str, service: &'static str) -> Tracing {
    use tracing_subscriber::EnvFilter;
    let tracing = Tracing::init(service);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing.layer());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    registry
        .with(bkg_trace::log_layer(
            format == "json",
            ansi,
            std::io::stderr,
        ))
        .init();
    if let Some(e) = &tracing.export_error {
        ::tracing::warn!("OpenTelemetry export disabled: {e}");
    }
    tracing
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
