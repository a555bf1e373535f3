//! The gateway's recent history: `GET /api/plugins/{id}/telemetry/history` and `GET /api/overview`.

use serde::{Deserialize, Serialize};

/// One sample of a plugin (or, in [`Overview`], of every plugin together), taken by the gateway
/// every sampling interval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetrySample {
    /// When it was taken: milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// CPU use summed over the ready replicas.
    pub cpu_percent: f64,
    /// Resident memory summed over the ready replicas.
    pub memory_mb: f64,
    /// Replicas that answered the telemetry request.
    pub replicas: u32,
    /// Invokes the gateway answered since it started (every status code).
    pub requests: u64,
    /// Of those, answers with a 5xx status.
    pub errors: u64,
    /// Invokes answered per second since the previous sample.
    pub request_rate: f64,
    /// Share of the invokes answered since the previous sample that were 5xx (0 to 1).
    pub error_rate: f64,
    /// Median gateway latency of the invokes answered since the previous sample; null without any.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same; null without any.
    pub p99_ms: Option<f64>,
    /// Requests the runtimes counted, summed over replicas, including replicas that restarted
    /// or went away since (their last count is kept).
    pub runtime_requests: u64,
    /// Errors the runtimes counted, kept across restarts the same way.
    pub runtime_errors: u64,
}

/// Something that happened to a plugin: a start, a stop, a crash, a scale or a config change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginEvent {
    /// RFC 3339.
    pub time: String,
    /// `start`, `stop`, `crash`, `scale`, `config`, `error` or `info`.
    pub kind: String,
    pub message: String,
}

/// Body of `GET /api/plugins/{id}/telemetry/history`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetryHistory {
    pub plugin_id: String,
    /// The sampling interval.
    pub interval_ms: u64,
    /// How far back samples are kept.
    pub window_secs: u64,
    /// Oldest first.
    pub samples: Vec<TelemetrySample>,
    /// Oldest first.
    pub events: Vec<PluginEvent>,
}

/// One plugin's recent activity, for the dashboard's sparklines.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginSparkline {
    pub plugin_id: String,
    /// Invokes per second at each sample, oldest first.
    pub request_rate: Vec<f64>,
    /// CPU percent at each sample, oldest first.
    pub cpu_percent: Vec<f64>,
}

/// Body of `GET /api/overview`: the gateway as a whole over the kept window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    pub interval_ms: u64,
    pub window_secs: u64,
    /// Every plugin together, oldest first (cpu and memory summed, latency over all invokes).
    pub samples: Vec<TelemetrySample>,
    pub plugins: Vec<PluginSparkline>,
}
