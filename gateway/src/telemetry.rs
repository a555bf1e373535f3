//! A plugin's telemetry: each ready instance's figures, summed.

use std::time::Duration;

use bkg_core::wire::Telemetry;

use crate::AppState;
use crate::backend::PluginView;

/// Asks every ready instance for its telemetry and sums it: cpu and memory add up, uptime is the
/// oldest instance's, counters add up, the last error is the newest one reported.
pub async fn aggregate(state: &AppState, view: &PluginView) -> Telemetry {
    let endpoints: Vec<String> = view
        .ready_endpoints()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let answers = futures::future::join_all(endpoints.iter().map(|e| {
        let http = state.http.clone();
        async move {
            let response = http
                .get(format!("{e}/v1/telemetry"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            response.json::<Telemetry>().await.ok()
        }
    }))
    .await;
    let mut total = Telemetry {
        plugin_id: view.plugin.id().to_owned(),
        last_error: view
            .plugin
            .status
            .as_ref()
            .and_then(|s| s.last_error.clone()),
        ..Default::default()
    };
    for t in answers.into_iter().flatten() {
        total.cpu_percent += t.cpu_percent;
        total.memory_mb += t.memory_mb;
        total.uptime_secs = total.uptime_secs.max(t.uptime_secs);
        total.request_count += t.request_count;
        total.error_count += t.error_count;
        if t.last_error.is_some() {
            total.last_error = t.last_error;
        }
        total.replicas += 1;
        if total.extra.is_empty() {
            total.extra = t.extra;
        }
    }
    total
}
