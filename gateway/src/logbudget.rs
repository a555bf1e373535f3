//! How many log lines failed invokes may write: an outage of a busy plugin fails thousands of
//! invokes a second, and one WARN line each buries everything else in the log.
//!
//! Per plugin, the first [`LogBudget::per_window`] failures of each window are logged one by one
//! (with their request and trace ids, so a client's report can be found); the rest are counted,
//! and one line per plugin says how many were left out when the window closes
//! ([`LogBudget::flush`], called by the gateway's housekeeping tick). Metrics count every
//! failure regardless.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::FastMap;

/// Failed-invoke log lines allowed per plugin and window.
pub(crate) struct LogBudget {
    window: Duration,
    per_window: u32,
    plugins: Mutex<FastMap<String, Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    left_out: u64,
}

/// Failures whose lines were left out of one closed window of one plugin.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LeftOut {
    pub plugin: String,
    pub count: u64,
    pub window: Duration,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10)
    }
}

impl LogBudget {
    pub(crate) fn new(window: Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            plugins: Mutex::default(),
        }
    }

    /// Whether the failure of an invoke of `plugin` at `now` gets its own log line.
    pub(crate) fn admit(&self, plugin: &str, now: Instant) -> bool {
        let mut plugins = self.plugins.lock();
        let window = match plugins.get_mut(plugin) {
            Some(window) => window,
            None => plugins.entry(plugin.to_owned()).or_insert(Window {
                started: now,
                logged: 0,
                left_out: 0,
            }),
        };
        if now.duration_since(window.started) >= self.window && window.left_out == 0 {
            // A closed window with nothing left out needs no summary: start afresh.
            window.started = now;
            window.logged = 0;
        }
        if window.logged < self.per_window {
            window.logged += 1;
            true
        } else {
            window.left_out += 1;
            false
        }
    }

    /// Closes the windows that have ended by `now` and returns what they left out.
    pub(crate) fn flush(&self, now: Instant) -> Vec<LeftOut> {
        let mut plugins = self.plugins.lock();
        let mut out = Vec::new();
        plugins.retain(|plugin, window| {
            let age = now.duration_since(window.started);
            if age < self.window {
                return true;
            }
            if window.left_out > 0 {
                out.push(LeftOut {
                    plugin: plugin.clone(),
                    count: window.left_out,
                    window: age,
                });
            }
            false
        });
        out
    }

    /// Logs one line per plugin whose window left failures out.
    pub(crate) fn log_left_out(&self, now: Instant) {
        for LeftOut {
            plugin,
            count,
            window,
        } in self.flush(now)
        {
            tracing::warn!(
                plugin,
                left_out = count,
                window_secs = window.as_secs(),
                "{count} more failed invokes of {plugin} in {}s were not logged one by one (see bkg_gateway_invoke_requests_total)",
                window.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failures_of_a_window_are_logged_and_the_rest_counted() {
        let budget = LogBudget::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..1000)
            .map(|i| budget.admit("echo", t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 3);
        assert!(logged[..3].iter().all(|l| *l), "the first ones are logged");
        // Another plugin has its own budget.
        assert!(budget.admit("candle", t0));
        assert!(
            budget.flush(t0 + Duration::from_secs(5)).is_empty(),
            "window still open"
        );
        assert_eq!(
            budget.flush(t0 + Duration::from_secs(10)),
            vec![LeftOut {
                plugin: "echo".into(),
                count: 997,
                window: Duration::from_secs(10),
            }]
        );
        // A new window logs again.
        assert!(budget.admit("echo", t0 + Duration::from_secs(11)));
    }

    #[test]
    fn a_window_with_nothing_left_out_restarts_without_a_summary() {
        let budget = LogBudget::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(budget.admit("echo", t0));
        assert!(budget.admit("echo", t0 + Duration::from_secs(11)));
        assert!(budget.admit("echo", t0 + Duration::from_secs(12)));
        assert!(!budget.admit("echo", t0 + Duration::from_secs(13)));
        assert_eq!(budget.flush(t0 + Duration::from_secs(21)).len(), 1);
    }
}
