//! The autoscaler and the activator: replicas follow load, and a plugin at zero replicas wakes
//! on its first invoke.
//!
//! ```text
//!  invoke ─▶ in-flight gauge (per plugin) ──sampled every TICK──▶ Scaler::decide ─▶ Backend::scale
//!     │
//!     └─ no ready instance, spec.scaling set ─▶ hold (FIFO per plugin, ≤ maxHeldRequests)
//!              ├─ asks for one replica at once (activation)
//!              ├─ a replica is ready ─▶ released in arrival order ─▶ forwarded
//!              └─ activationTimeoutSeconds ─▶ 503 + Retry-After; queue full ─▶ 429
//! ```
//!
//! The gateway is the autoscaler in both modes because it is where the signal is: every
//! invoke, held or served, is counted in flight here, and only here can an invoke wait for a
//! replica that does not exist yet. Decisions follow Knative's KPA and KubeAI in shape:
//!
//! - `desired = ceil(load / target)` for `metric: inFlight`, where load is the invokes in
//!   flight (served and held): this gateway's count with `bkg up`; on a cluster, where each
//!   gateway replica serves a share, the sum of every ready replica's `GET /v1/load` plus the
//!   invokes held here ([`Signal`]), so every gateway replica reaches the same decision and a
//!   gateway without traffic does not scale away replicas another one is using;
//! - scale up at once to the highest `desired` of the last [`PANIC_WINDOW`] (a burst is met
//!   within a tick);
//! - scale down only to the highest `desired` of the last `scaleDownDelaySeconds` (a stable
//!   window: the count falls only when the load stayed lower that long);
//! - with `minReplicas: 0`, to zero when no invoke was in flight for `scaleToZeroAfterSeconds`.
//!
//! For `metric: cpu`, a cluster runs the HPA the operator renders; locally the supervisor's
//! processes are measured from `/proc` (`cpu_load`).
//!
//! The decision function ([`Scaler::decide`]) is pure over its samples and the clock it is given,
//! so the rules are unit-tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bkg_core::{Plugin, Scaling, ScalingMetric};
use tokio::sync::oneshot;

use crate::AppState;
use crate::backend::Route;
use crate::problem::ApiError;

/// How often the autoscaler samples load and decides.
pub const TICK: Duration = Duration::from_millis(250);
/// How often it does when it asks every replica ([`Signal::Runtimes`]).
pub const RUNTIMES_TICK: Duration = Duration::from_secs(1);

/// Where the autoscaler reads a plugin's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// This gateway's in-flight gauge (held invokes included): every invoke when this gateway is
    /// the only one, as with `bkg up`.
    Gateway,
    /// Each ready replica's `GET /v1/load`, summed, plus the invokes this gateway holds: the
    /// same total for every gateway replica of a cluster, so their decisions agree.
    Runtimes,
}

impl Signal {
    /// `BKG_AUTOSCALE_SIGNAL` (`gateway` or `runtimes`), else `runtimes` on a cluster and
    /// `gateway` locally.
    pub fn for_mode(mode: &str) -> Self {
        match std::env::var("BKG_AUTOSCALE_SIGNAL").as_deref() {
            Ok("runtimes") => Signal::Runtimes,
            Ok("gateway") => Signal::Gateway,
            _ if mode == "local" => Signal::Gateway,
            _ => Signal::Runtimes,
        }
    }
}
/// Scale-up looks at the highest load this recent.
pub const PANIC_WINDOW: Duration = Duration::from_secs(2);
/// How often held invokes look for a ready replica.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// What the autoscaler knows about one plugin.
#[derive(Debug, Default)]
pub struct Scaler {
    /// `(when, desired replicas for the load then)`, oldest first.
    samples: VecDeque<(Instant, u32)>,
    /// Last time an invoke was in flight; `None` before the first.
    last_busy: Option<Instant>,
    /// The count last asked of the backend.
    pub desired: Option<u32>,
    /// Invokes started, as counted at the previous sample.
    started: u64,
    /// Each replica's invokes received, at the previous sample ([`Signal::Runtimes`]).
    replica_requests: HashMap<std::net::SocketAddr, u64>,
}

impl Scaler {
    /// Records the load at `now` (in the metric's unit: invokes in flight, or CPU percent of
    /// one replica's share summed over replicas) and returns the replica count wanted.
    pub fn decide(&mut self, scaling: &Scaling, now: Instant, load: f64, busy: bool) -> u32 {
        if busy {
            self.last_busy = Some(now);
        }
        let target = f64::from(scaling.target().max(1));
        let wanted = (load / target).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
        self.samples.push_back((now, wanted));
        let keep =
            Duration::from_secs(u64::from(scaling.scale_down_delay_seconds)).max(PANIC_WINDOW);
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > keep)
        {
            self.samples.pop_front();
        }
        let max_since = |window: Duration| {
            self.samples
                .iter()
                .filter(|(t, _)| now.duration_since(*t) <= window)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        };
        let current = self.desired.unwrap_or(0);
        let up = max_since(PANIC_WINDOW);
        let stable = max_since(Duration::from_secs(u64::from(
            scaling.scale_down_delay_seconds,
        )));
        let mut desired = if up > current {
            up
        } else {
            stable.min(current)
        };
        let min = u32::try_from(scaling.min_replicas).unwrap_or(0);
        let max = u32::try_from(scaling.max_replicas).unwrap_or(1).max(1);
        // A plugin that may go to zero keeps one replica until it was idle long enough.
        let idle = self.last_busy.is_none_or(|t| {
            now.duration_since(t)
                >= Duration::from_secs(u64::from(scaling.scale_to_zero_after_seconds))
        });
        let floor = if min == 0 && !idle { 1 } else { min };
        desired = desired.clamp(floor, max);
        self.desired = Some(desired);
        desired
    }
}

/// Invokes held for one plugin while it has no ready replica.
#[derive(Default)]
struct Held {
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
    next_ticket: u64,
    /// A task releasing this plugin's held invokes is running.
    releasing: bool,
}

/// The gateway's autoscaler state: one [`Scaler`] and one hold queue per plugin.
#[derive(Default)]
pub struct Autoscaler {
    scalers: Mutex<HashMap<String, Scaler>>,
    held: Mutex<HashMap<String, Held>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Autoscaler {
    /// Invokes held now for `id`.
    pub fn held(&self, id: &str) -> usize {
        lock(&self.held).get(id).map_or(0, |h| h.waiting.len())
    }

    /// Marks `id` busy now. Returns the replica count to ask for when the autoscaler had
    /// it at zero (or has not decided yet), `None` when replicas are already on their way.
    fn activated(&self, id: &str, scaling: &Scaling, now: Instant) -> Option<u32> {
        let mut scalers = lock(&self.scalers);
        let scaler = scalers.entry(id.to_owned()).or_default();
        scaler.last_busy = Some(now);
        let ask = match scaler.desired {
            Some(0) => 1,
            Some(_) => return None,
            None => u32::try_from(scaling.min_replicas).unwrap_or(0).max(1),
        };
        scaler.desired = Some(ask);
        Some(ask)
    }
}

/// Holds an invoke for a plugin with `spec.scaling` and no ready replica until one is ready
/// (asking for one if the plugin is at zero), then returns the fresh route. `Err` past the
/// plugin's `activationTimeoutSeconds` (503, Retry-After) or when its queue is full (429).
pub async fn hold(state: &AppState, id: &str, scaling: &Scaling) -> Result<Route, ApiError> {
    let started = Instant::now();
    let (tx, rx) = oneshot::channel();
    let ticket = {
        let mut held = lock(&state.autoscaler.held);
        let queue = held.entry(id.to_owned()).or_default();
        if queue.waiting.len() >= scaling.max_held_requests as usize {
            return Err(ApiError::Overloaded(format!(
                "plugin {id:?} is starting and already holds {} invokes (spec.scaling.maxHeldRequests); retry shortly",
                scaling.max_held_requests
            )));
        }
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push_back((ticket, tx));
        state.metrics.held(id).set(queue.waiting.len() as i64);
        if !queue.releasing {
            queue.releasing = true;
            tokio::spawn(release(state.clone(), id.to_owned()));
        }
        ticket
    };
    // Activation: ask for a replica now rather than at the next tick.
    if let Some(replicas) = state.autoscaler.activated(id, scaling, started)
        && let Err(e) = state
            .backend
            .scale(
                id,
                replicas,
                "activation: an invoke arrived at zero replicas",
            )
            .await
    {
        tracing::warn!(plugin = id, error = %e, "activation failed");
    }
    let timeout = Duration::from_secs(u64::from(scaling.activation_timeout_seconds));
    let released = tokio::time::timeout(timeout, rx).await;
    if !matches!(released, Ok(Ok(()))) {
        let mut held = lock(&state.autoscaler.held);
        if let Some(queue) = held.get_mut(id) {
            queue.waiting.retain(|(t, _)| *t != ticket);
            state.metrics.held(id).set(queue.waiting.len() as i64);
        }
        return Err(ApiError::Unavailable {
            detail: format!(
                "plugin {id:?} had no ready replica within {}s (spec.scaling.activationTimeoutSeconds)",
                scaling.activation_timeout_seconds
            ),
            retry_after: Some(scaling.activation_timeout_seconds.clamp(1, 30)),
        });
    }
    state.metrics.observe_activation(id, started.elapsed());
    match state.backend.route(id).await {
        Some(route) if !route.endpoints.is_empty() => Ok(route),
        // Released, then gone again at once (a stop): say why.
        _ => Err(Box::pin(crate::invoke::unavailable(state, id)).await),
    }
}

/// Releases the invokes held for `id`, in arrival order, as soon as it has a ready replica;
/// ends when none is held.
async fn release(state: AppState, id: String) {
    loop {
        tokio::time::sleep(RELEASE_POLL).await;
        let ready = state
            .backend
            .route(&id)
            .await
            .is_some_and(|r| !r.endpoints.is_empty());
        let mut held = lock(&state.autoscaler.held);
        let Some(queue) = held.get_mut(&id) else {
            return;
        };
        if ready {
            while let Some((_, tx)) = queue.waiting.pop_front() {
                let _ = tx.send(());
            }
        }
        // Timed-out waiters are gone from the queue; closed ones need no answer.
        queue.waiting.retain(|(_, tx)| !tx.is_closed());
        state.metrics.held(&id).set(queue.waiting.len() as i64);
        if queue.waiting.is_empty() {
            queue.releasing = false;
            return;
        }
    }
}

/// One autoscaler round: every plugin with `spec.scaling` (metric inFlight, or cpu locally)
/// gets a decision from its load now, and the backend is told when it changed.
pub async fn tick(state: &AppState, now: Instant, signal: Signal) {
    let views = state.backend.list().await;
    for view in views {
        let plugin = &view.plugin;
        let Some(scaling) = plugin.spec.scaling.as_ref() else {
            continue;
        };
        if !plugin.spec.enabled {
            continue;
        }
        let id = plugin.id();
        let (in_flight, replicas) = match signal {
            Signal::Gateway => (state.metrics.in_flight_now(id), Vec::new()),
            Signal::Runtimes => {
                let replicas = replica_loads(state, id).await;
                let busy: u64 = replicas.iter().map(|(_, l)| l.in_flight + l.waiting).sum();
                let held = state.autoscaler.held(id) as u64;
                (i64::try_from(busy + held).unwrap_or(i64::MAX), replicas)
            }
        };
        let started = state.metrics.started(id);
        let load = match scaling.metric {
            ScalingMetric::InFlight => in_flight as f64,
            ScalingMetric::Cpu => {
                if state.backend.mode() != "local" {
                    continue; // the operator's HPA owns it on a cluster
                }
                cpu_load(state, plugin, &view.instances)
            }
        };
        let desired = {
            let mut scalers = lock(&state.autoscaler.scalers);
            let scaler = scalers.entry(id.to_owned()).or_insert_with(|| {
                let mut s = Scaler::default();
                s.desired = plugin
                    .status
                    .as_ref()
                    .and_then(|s| s.desired_replicas)
                    .and_then(|n| u32::try_from(n).ok());
                s
            });
            let before = scaler.desired;
            // Busy: an invoke in flight now, or one that came and went since the last round
            // (here, or at any replica).
            let mut busy = in_flight > 0 || started != scaler.started;
            scaler.started = started;
            if signal == Signal::Runtimes {
                let mut seen = HashMap::with_capacity(replicas.len());
                for (addr, l) in &replicas {
                    busy |= scaler
                        .replica_requests
                        .get(addr)
                        .is_some_and(|before| l.requests > *before);
                    seen.insert(*addr, l.requests);
                }
                scaler.replica_requests = seen;
            }
            let desired = scaler.decide(scaling, now, load, busy);
            (before != Some(desired)).then_some((before, desired))
        };
        state.metrics.desired(id).set(i64::from(
            lock(&state.autoscaler.scalers)
                .get(id)
                .and_then(|s| s.desired)
                .unwrap_or(0),
        ));
        if let Some((before, desired)) = desired {
            let reason = format!(
                "{} {load:.1} for a target of {} per replica (was {})",
                scaling.metric.as_str(),
                scaling.target(),
                before.map_or("unset".to_owned(), |n| n.to_string())
            );
            if let Err(e) = state.backend.scale(id, desired, &reason).await {
                tracing::warn!(plugin = id, error = %e, "scaling failed");
            }
        }
    }
}

/// `GET /v1/load` of each ready replica of `id` (those that do not answer within the round
/// count as idle).
async fn replica_loads(
    state: &AppState,
    id: &str,
) -> Vec<(std::net::SocketAddr, bkg_core::wire::Load)> {
    let Some(route) = state.backend.route(id).await else {
        return Vec::new();
    };
    let asks = route.endpoints.iter().map(|addr| async move {
        let answer = state
            .http
            .get(format!("http://{addr}/v1/load"))
            .timeout(RUNTIMES_TICK / 2)
            .send()
            .await
            .ok()?
            .json::<bkg_core::wire::Load>()
            .await
            .ok()?;
        Some((*addr, answer))
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// CPU load of a local plugin's replicas: percent of one replica's `resources.cpu` (1 core when
/// unset) used since the previous round, summed over replicas.
fn cpu_load(state: &AppState, plugin: &Plugin, instances: &[bkg_core::wire::Instance]) -> f64 {
    let cores = plugin
        .spec
        .resources
        .cpu
        .as_ref()
        .and_then(|q| bkg_core::quantity::to_cores(q).ok())
        .filter(|c| *c > 0.0)
        .unwrap_or(1.0);
    let mut samples = lock(&state.cpu_samples);
    let now = Instant::now();
    let mut total = 0.0;
    for pid in instances.iter().filter_map(|i| i.pid) {
        let Some(ticks) = cpu_ticks(pid) else {
            continue;
        };
        if let Some((then, before)) = samples.insert(pid, (now, ticks)) {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let used = (ticks.saturating_sub(before)) as f64 / CLOCK_TICKS_PER_SEC / secs;
                total += used / cores * 100.0;
            }
        }
    }
    total
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14
/// and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count from its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Runs [`tick`] every [`TICK`] until the gateway stops.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let signal = Signal::for_mode(state.backend.mode());
    tracing::debug!(?signal, "autoscaler started");
    tokio::spawn(async move {
        let mut every = tokio::time::interval(match signal {
            Signal::Gateway => TICK,
            Signal::Runtimes => RUNTIMES_TICK,
        });
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            tick(&state, Instant::now(), signal).await;
        }
    })
}

/// Shared so the hold path can reach it.
pub type CpuSamples = Mutex<HashMap<u32, (Instant, u64)>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(min: i32, max: i32, delay: u32, zero_after: u32) -> Scaling {
        serde_json::from_value(serde_json::json!({
            "minReplicas": min, "maxReplicas": max, "target": 4,
            "scaleDownDelaySeconds": delay, "scaleToZeroAfterSeconds": zero_after,
        }))
        .expect("scaling")
    }

    #[test]
    fn a_burst_scales_up_at_once_within_the_bounds() {
        let s = scaling(1, 4, 30, 60);
        let t0 = Instant::now();
        let mut scaler = Scaler::default();
        assert_eq!(scaler.decide(&s, t0, 0.0, false), 1, "minReplicas");
        assert_eq!(scaler.decide(&s, t0 + TICK, 9.0, true), 3, "ceil(9 / 4)");
        assert_eq!(
            scaler.decide(&s, t0 + TICK * 2, 64.0, true),
            4,
            "maxReplicas"
        );
    }

    #[test]
    fn scale_down_waits_for_the_delay_and_zero_waits_for_idle() {
        let s = scaling(0, 4, 10, 20);
        let t0 = Instant::now();
        let mut scaler = Scaler::default();
        assert_eq!(scaler.decide(&s, t0, 16.0, true), 4);
        // Load gone: the stable window still remembers it for 10 s.
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        assert_eq!(scaler.decide(&s, at(1.0), 0.0, false), 4);
        assert_eq!(scaler.decide(&s, at(9.0), 0.0, false), 4);
        // After the delay: one replica, kept until 20 s without an invoke.
        assert_eq!(scaler.decide(&s, at(10.5), 0.0, false), 1);
        assert_eq!(scaler.decide(&s, at(19.0), 0.0, false), 1);
        assert_eq!(scaler.decide(&s, at(20.5), 0.0, false), 0);
        // An invoke at zero: one replica again at once.
        assert_eq!(scaler.decide(&s, at(21.0), 1.0, true), 1);
    }

    #[test]
    fn a_lower_load_inside_the_delay_lowers_nothing_and_min_holds() {
        let s = scaling(2, 8, 5, 60);
        let t0 = Instant::now();
        let mut scaler = Scaler::default();
        assert_eq!(scaler.decide(&s, t0, 24.0, true), 6);
        assert_eq!(scaler.decide(&s, t0 + Duration::from_secs(3), 4.0, true), 6);
        assert_eq!(
            scaler.decide(&s, t0 + Duration::from_secs(9), 4.0, true),
            2,
            "ceil(4 / 4) = 1, held at minReplicas"
        );
    }

    #[test]
    fn a_plugin_never_called_stays_at_zero() {
        let s = scaling(0, 4, 10, 20);
        let t0 = Instant::now();
        let mut scaler = Scaler::default();
        assert_eq!(scaler.decide(&s, t0, 0.0, false), 0);
        assert_eq!(scaler.decide(&s, t0 + TICK, 0.0, false), 0);
    }

    #[test]
    fn cpu_ticks_of_this_process_are_read() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
