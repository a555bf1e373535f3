//! A plugin's telemetry: each ready instance's figures, summed.

use std::time::Duration;

use bkg_core::wire::Telemetry;

use crate::AppState;
use crate::backend::PluginView;

/// Asks every ready instance for its telemetry and sums it: cpu and memory add up, uptime is the
/// oldest instance's, counters add up (and keep what replicas that restarted or went away
/// counted: `history::RuntimeCounters`), the last error is the newest one reported.
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
            response.json::<Telemetry>().await.ok().map(|t| (e, t))
        }
    }))
    .await;
    let answers: Vec<(&String, Telemetry)> = answers.into_iter().flatten().collect();
    let mut total = Telemetry {
        plugin_id: view.plugin.id().to_owned(),
        last_error: view
            .plugin
            .status
            .as_ref()
            .and_then(|s| s.last_error.clone()),
        ..Default::default()
    };
    let (requests, errors) = state.history.runtime_totals(
        view.plugin.id(),
        answers
            .iter()
            .map(|(e, t)| (e.as_str(), t.request_count, t.error_count)),
    );
    for (_, t) in answers {
        total.cpu_percent += t.cpu_percent;
        total.memory_mb += t.memory_mb;
        total.uptime_secs = total.uptime_secs.max(t.uptime_secs);
        if t.last_error.is_some() {
            total.last_error = t.last_error;
        }
        total.replicas += 1;
        if total.extra.is_empty() {
            total.extra = t.extra;
        }
    }
    total.request_count = requests;
    total.error_count = errors;
    total
}

/// Samples every plugin into the gateway's history each `Config::telemetry_interval`.
pub fn spawn_sampler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.history.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let views = state.backend.list().await;
            let telemetry =
                futures::future::join_all(views.iter().map(|v| aggregate(&state, v))).await;
            let readings = views
                .iter()
                .zip(telemetry)
                .map(|(view, telemetry)| crate::history::Reading {
                    id: view.plugin.id(),
                    stats: state.metrics.invoke_stats(view.plugin.id()),
                    telemetry,
                    phase: view
                        .plugin
                        .status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .unwrap_or(bkg_core::Phase::Starting)
                        .as_str()
                        .to_owned(),
                    config: view.plugin.spec.config.as_ref().unwrap_or(&NO_CONFIG),
                })
                .collect();
            state.history.record(readings);
        }
    })
}

static NO_CONFIG: serde_json::Value = serde_json::Value::Null;
