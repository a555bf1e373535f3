//! The last ten minutes of every plugin, kept by the gateway so a dashboard opened now shows
//! what happened before it was opened.
//!
//! ```text
//!  every interval (BKG_TELEMETRY_INTERVAL_MS, 5 s):
//!    runtimes' /v1/telemetry ─▶ telemetry::aggregate ─┐  (runtime counters kept across restarts
//!    gateway invoke counters and latency buckets ─────┤   by RuntimeCounters)
//!                                                     ▼
//!            one TelemetrySample per plugin + one for all plugins ─▶ ring (10 min)
//! ```
//!
//! Request counts and latency come from the gateway's own counters ([`InvokeStats`]), which a
//! replica restart does not reset; the runtimes' counters are summed per endpoint with the last
//! count of a replica that restarted or went away kept ([`RuntimeCounters`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bkg_core::wire::{
    LogLine, Overview, PluginEvent, PluginSparkline, ScaleEvent, Telemetry, TelemetryHistory,
    TelemetrySample,
};
use parking_lot::Mutex;
use serde_json::Value;

use crate::FastMap;

/// How far back samples are kept.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Events kept per plugin (besides the backend's own log ring).
const EVENTS: usize = 100;
/// Latency buckets: upper bounds 0.5 ms · 2ᵏ, k = 0‥19 (0.5 ms to 262 s), then one overflow.
const BUCKETS: usize = 21;

fn bucket_bound_ms(i: usize) -> f64 {
    0.5 * f64::from(1u32 << i.min(30))
}

fn bucket_of(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1000.0;
    (0..BUCKETS - 1)
        .find(|&i| ms <= bucket_bound_ms(i))
        .unwrap_or(BUCKETS - 1)
}

/// A plugin's answered invokes, 5xx answers and latency buckets since the gateway started:
/// relaxed atomics the invoke path adds to (see `metrics::Metrics::observe_invoke`).
#[derive(Default)]
pub struct InvokeStats {
    answered: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl InvokeStats {
    pub fn record(&self, code: u16, took: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if code >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            answered: self.answered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// [`InvokeStats`] at one moment; the difference of two is what happened in between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub answered: u64,
    pub errors: u64,
    pub buckets: [u64; BUCKETS],
}

impl Snapshot {
    fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            answered: self.answered.saturating_sub(earlier.answered),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    fn add(&mut self, other: &Snapshot) {
        self.answered += other.answered;
        self.errors += other.errors;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    /// The `q` quantile in milliseconds, interpolated inside its bucket; `None` without calls.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let low = if i == 0 { 0.0 } else { bucket_bound_ms(i - 1) };
                // The overflow bucket has no upper bound: report its lower one.
                let high = if i == BUCKETS - 1 {
                    low
                } else {
                    bucket_bound_ms(i)
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(low + (high - low) * within);
            }
            below += n;
        }
        None
    }
}

/// The runtimes' request and error counters of one plugin, summed per endpoint so that a
/// replica that restarts (its counters start again at 0) or goes away keeps its count.
#[derive(Default, Debug)]
pub struct RuntimeCounters {
    endpoints: FastMap<String, Seen>,
    /// Counts of replicas that restarted or were forgotten.
    retired: (u64, u64),
}

#[derive(Debug)]
struct Seen {
    requests: u64,
    errors: u64,
    at: Instant,
}

impl RuntimeCounters {
    /// Records what the replica at `endpoint` reports now.
    pub fn observe(&mut self, endpoint: &str, requests: u64, errors: u64, now: Instant) {
        match self.endpoints.get_mut(endpoint) {
            Some(seen) => {
                // A counter that went down belongs to a new process at the same address.
                if requests < seen.requests || errors < seen.errors {
                    self.retired.0 += seen.requests;
                    self.retired.1 += seen.errors;
                }
                *seen = Seen {
                    requests,
                    errors,
                    at: now,
                };
            }
            None => {
                self.endpoints.insert(
                    endpoint.to_owned(),
                    Seen {
                        requests,
                        errors,
                        at: now,
                    },
                );
            }
        }
        // Endpoints not heard of for a window are gone; their counts stay in `retired`.
        let before = self.endpoints.len();
        let mut retired = self.retired;
        self.endpoints.retain(|_, seen| {
            let keep = now.saturating_duration_since(seen.at) < WINDOW;
            if !keep {
                retired.0 += seen.requests;
                retired.1 += seen.errors;
            }
            keep
        });
        if self.endpoints.len() != before {
            self.retired = retired;
        }
    }

    /// Requests and errors counted by every replica this plugin has had.
    pub fn total(&self) -> (u64, u64) {
        self.endpoints
            .values()
            .fold(self.retired, |(r, e), s| (r + s.requests, e + s.errors))
    }
}

/// Appends `sample` and drops what is older than the window (and, should the wall clock jump
/// back, anything beyond the count the window holds).
pub fn push(ring: &mut VecDeque<TelemetrySample>, sample: TelemetrySample, max_len: usize) {
    let window_ms = WINDOW.as_millis() as u64;
    ring.push_back(sample);
    let newest = ring.back().map_or(0, |s| s.time_ms);
    while ring
        .front()
        .is_some_and(|s| s.time_ms + window_ms <= newest)
        || ring.len() > max_len
    {
        ring.pop_front();
    }
}

/// A sample from aggregated telemetry and the gateway's counters now and at the previous
/// sample (`elapsed` before).
pub fn sample(
    time_ms: u64,
    telemetry: &Telemetry,
    now: &Snapshot,
    previous: Option<&Snapshot>,
    elapsed: Duration,
) -> TelemetrySample {
    let delta = previous.map(|p| now.since(p)).unwrap_or_default();
    let secs = elapsed.as_secs_f64();
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    TelemetrySample {
        time_ms,
        cpu_percent: finite(telemetry.cpu_percent),
        memory_mb: finite(telemetry.memory_mb),
        replicas: telemetry.replicas,
        requests: now.answered,
        errors: now.errors,
        request_rate: if secs > 0.0 {
            delta.answered as f64 / secs
        } else {
            0.0
        },
        error_rate: if delta.answered > 0 {
            delta.errors as f64 / delta.answered as f64
        } else {
            0.0
        },
        p50_ms: delta.quantile_ms(0.5),
        p99_ms: delta.quantile_ms(0.99),
        runtime_requests: telemetry.request_count,
        runtime_errors: telemetry.error_count,
    }
}

#[derive(Default)]
struct PluginHistory {
    samples: VecDeque<TelemetrySample>,
    previous: Option<(Snapshot, Instant)>,
    counters: RuntimeCounters,
    /// Changes the sampler saw: config and phase.
    events: VecDeque<PluginEvent>,
    last_config: Option<Value>,
    last_phase: Option<String>,
    seen_at: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    plugins: FastMap<String, PluginHistory>,
    overall: VecDeque<TelemetrySample>,
    overall_previous: Option<(Snapshot, Instant)>,
}

/// Every plugin's recent samples and events.
pub struct History {
    interval: Duration,
    inner: Mutex<Inner>,
}

/// What the sampler read of one plugin in one round.
pub struct Reading<'a> {
    pub id: &'a str,
    pub telemetry: Telemetry,
    pub stats: Snapshot,
    pub phase: String,
    pub config: &'a Value,
}

impl History {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(10)),
            inner: Mutex::default(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn max_len(&self) -> usize {
        (WINDOW.as_millis() / self.interval.as_millis().max(1)) as usize + 1
    }

    /// Sums the runtimes' counters of `plugin` across restarts: `answers` are (endpoint,
    /// requests, errors) as the ready replicas report them now.
    pub fn runtime_totals<'a>(
        &self,
        plugin: &str,
        answers: impl IntoIterator<Item = (&'a str, u64, u64)>,
    ) -> (u64, u64) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let counters = &mut inner.plugins.entry(plugin.to_owned()).or_default().counters;
        for (endpoint, requests, errors) in answers {
            counters.observe(endpoint, requests, errors, now);
        }
        counters.total()
    }

    /// Records one sampling round: a sample per plugin and one for all of them. Plugins not in
    /// `readings` (removed) are forgotten.
    pub fn record(&self, readings: Vec<Reading<'_>>) {
        let now = Instant::now();
        let time_ms = unix_ms();
        let max_len = self.max_len();
        let mut inner = self.inner.lock();
        let mut all = Telemetry::default();
        let mut all_stats = Snapshot::default();
        for r in &readings {
            let h = inner.plugins.entry(r.id.to_owned()).or_default();
            let previous = h.previous.map(|(s, _)| s);
            let elapsed = h.previous.map_or(Duration::ZERO, |(_, at)| now - at);
            push(
                &mut h.samples,
                sample(time_ms, &r.telemetry, &r.stats, previous.as_ref(), elapsed),
                max_len,
            );
            h.previous = Some((r.stats, now));
            h.seen_at = Some(now);
            if h.last_config.as_ref().is_some_and(|c| c != r.config) {
                push_event(&mut h.events, "config", "config changed".into());
            }
            h.last_config = Some(r.config.clone());
            if h.last_phase.as_deref() != Some(r.phase.as_str()) {
                if h.last_phase.is_some() {
                    let kind = match r.phase.as_str() {
                        "running" => "start",
                        "stopped" => "stop",
                        "error" => "error",
                        _ => "info",
                    };
                    push_event(&mut h.events, kind, format!("now {}", r.phase));
                }
                h.last_phase = Some(r.phase.clone());
            }
            all.cpu_percent += r.telemetry.cpu_percent;
            all.memory_mb += r.telemetry.memory_mb;
            all.replicas += r.telemetry.replicas;
            all.request_count += r.telemetry.request_count;
            all.error_count += r.telemetry.error_count;
            all_stats.add(&r.stats);
        }
        inner
            .plugins
            .retain(|_, h| h.seen_at == Some(now) || h.seen_at.is_none());
        let previous = inner.overall_previous.map(|(s, _)| s);
        let elapsed = inner
            .overall_previous
            .map_or(Duration::ZERO, |(_, at)| now - at);
        let overall = sample(time_ms, &all, &all_stats, previous.as_ref(), elapsed);
        push(&mut inner.overall, overall, max_len);
        inner.overall_previous = Some((all_stats, now));
    }

    /// The kept samples of `plugin` and its events: the backend's supervisor log lines (local),
    /// the scale history, and the changes the sampler saw.
    pub fn of(&self, plugin: &str, logs: &[LogLine], scale: &[ScaleEvent]) -> TelemetryHistory {
        let inner = self.inner.lock();
        let h = inner.plugins.get(plugin);
        let mut events: Vec<PluginEvent> = logs
            .iter()
            .filter(|l| l.stream == "supervisor")
            .map(|l| PluginEvent {
                time: l.ts.clone(),
                kind: classify(&l.message).to_owned(),
                message: l.message.clone(),
            })
            .collect();
        let from_supervisor = !events.is_empty();
        if !events.iter().any(|e| e.kind == "scale") {
            events.extend(scale.iter().map(|s| PluginEvent {
                time: s.time.clone(),
                kind: "scale".into(),
                message: format!("scaled from {} to {}: {}", s.from, s.to, s.reason),
            }));
        }
        if let Some(h) = h {
            // Locally the supervisor's lines already say when replicas started and stopped.
            events.extend(
                h.events
                    .iter()
                    .filter(|e| !from_supervisor || e.kind == "config")
                    .cloned(),
            );
        }
        events.sort_by_key(|e| {
            e.time
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_nanosecond())
                .unwrap_or_default()
        });
        TelemetryHistory {
            plugin_id: plugin.to_owned(),
            interval_ms: self.interval.as_millis() as u64,
            window_secs: WINDOW.as_secs(),
            samples: h
                .map(|h| h.samples.iter().cloned().collect())
                .unwrap_or_default(),
            events,
        }
    }

    /// Every plugin together, and each plugin's request rate and CPU for sparklines.
    pub fn overview(&self) -> Overview {
        let inner = self.inner.lock();
        let mut plugins: Vec<PluginSparkline> = inner
            .plugins
            .iter()
            .map(|(id, h)| PluginSparkline {
                plugin_id: id.clone(),
                request_rate: h.samples.iter().map(|s| s.request_rate).collect(),
                cpu_percent: h.samples.iter().map(|s| s.cpu_percent).collect(),
            })
            .collect();
        plugins.sort_by(|a, b| a.plugin_id.cmp(&b.plugin_id));
        Overview {
            interval_ms: self.interval.as_millis() as u64,
            window_secs: WINDOW.as_secs(),
            samples: inner.overall.iter().cloned().collect(),
            plugins,
        }
    }
}

fn push_event(events: &mut VecDeque<PluginEvent>, kind: &str, message: String) {
    if events.len() == EVENTS {
        events.pop_front();
    }
    events.push_back(PluginEvent {
        time: jiff::Timestamp::now().to_string(),
        kind: kind.to_owned(),
        message,
    });
}

/// The kind of event a supervisor log line records (supervisor/src/replica.rs words them).
fn classify(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("giving up") {
        "error"
    } else if m.contains("scaled from") {
        "scale"
    } else if m.contains("ready at") || m.contains("started plugin-runtime") {
        "start"
    } else if m.contains("exited") || m.contains("killed") || m.contains("restarting in") {
        "crash"
    } else if m.contains("stopping") || m.contains("stopped") {
        "stop"
    } else if m.contains("config") || m.contains("manifest") {
        "config"
    } else {
        "info"
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_ms: u64) -> TelemetrySample {
        TelemetrySample {
            time_ms,
            ..Default::default()
        }
    }

    #[test]
    fn the_ring_keeps_ten_minutes() {
        let interval = 5_000;
        let max_len = (WINDOW.as_millis() as usize) / interval + 1;
        let mut ring = VecDeque::new();
        // 15 minutes of samples every 5 s.
        for i in 0..=180u64 {
            push(&mut ring, at(1_000_000 + i * 5_000), max_len);
        }
        let newest = ring.back().expect("samples").time_ms;
        let oldest = ring.front().expect("samples").time_ms;
        assert_eq!(newest, 1_000_000 + 900_000);
        assert!(newest - oldest < 600_000, "{oldest}..{newest}");
        assert_eq!(ring.len(), 120, "10 min / 5 s");
        // A clock that jumps back cannot grow the ring past what the window holds.
        for i in 0..1_000u64 {
            push(&mut ring, at(i), max_len);
        }
        assert!(ring.len() <= max_len);
    }

    #[test]
    fn runtime_counts_survive_a_restart_and_a_replaced_replica() {
        let t0 = Instant::now();
        let mut c = RuntimeCounters::default();
        c.observe("http://127.0.0.1:4000", 10, 1, t0);
        assert_eq!(c.total(), (10, 1));
        // The process at that address restarted: its counters start again.
        c.observe("http://127.0.0.1:4000", 3, 0, t0);
        assert_eq!(c.total(), (13, 1));
        // A replacement replica on another port; the old one is no longer reported.
        c.observe("http://127.0.0.1:4001", 5, 2, t0);
        assert_eq!(c.total(), (18, 3));
        // Seeing the same count again changes nothing.
        c.observe("http://127.0.0.1:4001", 5, 2, t0);
        assert_eq!(c.total(), (18, 3));
        // Forgotten after a window without news, the old replica's count stays.
        c.observe(
            "http://127.0.0.1:4001",
            6,
            2,
            t0 + WINDOW + Duration::from_secs(1),
        );
        assert_eq!(c.total(), (19, 3));
        assert_eq!(c.endpoints.len(), 1);
    }

    #[test]
    fn history_aggregates_across_a_restart() {
        let history = History::new(Duration::from_millis(100));
        let config = serde_json::json!({});
        let round = |requests: u64, endpoint: &str| {
            let (r, e) = history.runtime_totals("echo", [(endpoint, requests, 0)]);
            let reading = Reading {
                id: "echo",
                telemetry: Telemetry {
                    request_count: r,
                    error_count: e,
                    replicas: 1,
                    ..Default::default()
                },
                stats: Snapshot::default(),
                phase: "running".into(),
                config: &config,
            };
            history.record(vec![reading]);
        };
        round(7, "http://a");
        round(2, "http://a"); // restarted and served 2 since
        let h = history.of("echo", &[], &[]);
        let counts: Vec<u64> = h.samples.iter().map(|s| s.runtime_requests).collect();
        assert_eq!(counts, [7, 9]);
        assert_eq!(
            history
                .overview()
                .samples
                .last()
                .map(|s| s.runtime_requests),
            Some(9)
        );
    }

    #[test]
    fn rates_and_percentiles_come_from_the_gateway_counters() {
        let stats = InvokeStats::default();
        let before = stats.snapshot();
        for _ in 0..98 {
            stats.record(200, Duration::from_millis(3));
        }
        stats.record(503, Duration::from_millis(100));
        stats.record(200, Duration::from_millis(100));
        let now = stats.snapshot();
        let s = sample(
            0,
            &Telemetry::default(),
            &now,
            Some(&before),
            Duration::from_secs(2),
        );
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 1);
        assert!((s.request_rate - 50.0).abs() < 1e-9);
        assert!((s.error_rate - 0.01).abs() < 1e-9);
        let p50 = s.p50_ms.expect("p50");
        let p99 = s.p99_ms.expect("p99");
        assert!((2.0..=4.0).contains(&p50), "p50 {p50}");
        assert!((64.0..=128.0).contains(&p99), "p99 {p99}");
        // No calls in the interval: no latency, not zero latency.
        let idle = sample(
            0,
            &Telemetry::default(),
            &now,
            Some(&now),
            Duration::from_secs(2),
        );
        assert_eq!((idle.p50_ms, idle.request_rate), (None, 0.0));
    }

    #[test]
    fn supervisor_lines_become_events() {
        let history = History::new(Duration::from_secs(5));
        let line = |ts: &str, m: &str| LogLine {
            ts: ts.into(),
            stream: "supervisor".into(),
            message: m.into(),
        };
        let logs = [
            line(
                "2026-01-01T00:00:01Z",
                "started plugin-runtime pid 7 (generation 1)",
            ),
            line(
                "2026-01-01T00:00:02Z",
                "exited with status 1; restarting in 500ms",
            ),
            LogLine {
                ts: "2026-01-01T00:00:02Z".into(),
                stream: "stdout".into(),
                message: "hello".into(),
            },
            line("2026-01-01T00:00:03Z", "pid 9 stopped"),
        ];
        let scale = [ScaleEvent {
            time: "2026-01-01T00:00:00Z".into(),
            from: 1,
            to: 2,
            reason: "load".into(),
        }];
        let h = history.of("echo", &logs, &scale);
        let kinds: Vec<&str> = h.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["scale", "start", "crash", "stop"]);
    }
}
