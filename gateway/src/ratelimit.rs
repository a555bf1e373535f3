//! Invoke rate limits: one token bucket per API key × plugin × capability (GCRA, `governor`).
//!
//! The limit that applies is the capability's `rateLimit`, else the plugin's, else the
//! gateway's default. A call takes as many units from its bucket as it costs (the
//! capability's `cost`, one by default), so one call embedding 256 texts uses what 256
//! one-text calls use; a call costing more than the bucket holds can never pass and is refused
//! as such, not told to retry. Buckets of a (plugin, capability) are rebuilt when its limit
//! changes; idle keys are forgotten by [`RateLimiter::sweep`], so memory is bounded by the
//! number of API keys that called recently, never by the number of requests.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bkg_core::{Plugin, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{InsufficientCapacity, Quota};

use crate::FastMap;

/// The buckets of one (plugin, capability): one per API key.
type Keyed<C> = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

struct Bucket<C: Clock> {
    limit: RateLimit,
    limiter: Arc<Keyed<C>>,
}

/// Every rate limit the gateway enforces. The clock is a parameter so tests can move time
/// by hand instead of sleeping.
pub struct RateLimiter<C: Clock = DefaultClock> {
    default: Option<RateLimit>,
    clock: C,
    /// plugin id → capability id → bucket set.
    buckets: RwLock<FastMap<String, FastMap<String, Bucket<C>>>>,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The bucket holds too few units now; retry after the wait.
    Exceeded(Exceeded),
    /// The call costs more units than the bucket ever holds (its burst): retrying cannot help.
    OverBurst { limit: RateLimit, cost: u32 },
}

/// A refused call: how long until the key may call this capability again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: RateLimit,
    /// The units the refused call would have taken.
    pub cost: u32,
    pub retry_after: Duration,
}

impl Exceeded {
    /// Whole seconds for `Retry-After`, never 0 (a client retrying at once would be refused).
    pub fn retry_after_secs(&self) -> u32 {
        let secs = self.retry_after.as_secs_f64().ceil() as u32;
        secs.max(1)
    }
}

impl RateLimiter<DefaultClock> {
    /// `default` applies to capabilities whose Plugin sets no limit; `None` leaves them unlimited.
    pub fn new(default: Option<RateLimit>) -> Self {
        Self::with_clock(default, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter reading time from `clock`.
    pub fn with_clock(default: Option<RateLimit>, clock: C) -> Self {
        Self {
            default,
            clock,
            buckets: RwLock::default(),
        }
    }

    /// The limit for one capability of a plugin.
    pub fn limit_for(&self, plugin: &Plugin, capability: &str) -> Option<RateLimit> {
        plugin
            .spec
            .capabilities
            .iter()
            .find(|c| c.id == capability)
            .and_then(|c| c.rate_limit)
            .or(plugin.spec.rate_limit)
            .or(self.default)
    }

    /// Takes `cost` units (at least one) from `key_id`'s bucket for this capability, or none
    /// when the bucket lacks them.
    pub fn check(
        &self,
        plugin: &Plugin,
        capability: &str,
        key_id: &str,
        cost: u32,
    ) -> Result<(), Refused> {
        let Some(limit) = self.limit_for(plugin, capability) else {
            return Ok(());
        };
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let plugin_id = plugin.metadata.name.as_deref().unwrap_or_default();
        let limiter = self.limiter(plugin_id, capability, limit);
        let key = key_id.to_owned();
        let outcome = if cost == NonZeroU32::MIN {
            Ok(limiter.check_key(&key))
        } else {
            limiter.check_key_n(&key, cost)
        };
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not_until)) => Err(Refused::Exceeded(Exceeded {
                limit,
                cost: cost.get(),
                retry_after: not_until.wait_time_from(self.clock.now()),
            })),
            Err(InsufficientCapacity(_)) => Err(Refused::OverBurst {
                limit,
                cost: cost.get(),
            }),
        }
    }

    fn limiter(&self, plugin: &str, capability: &str, limit: RateLimit) -> Arc<Keyed<C>> {
        {
            let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = buckets.get(plugin).and_then(|caps| caps.get(capability))
                && b.limit == limit
            {
                return b.limiter.clone();
            }
        }
        let mut buckets = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        let caps = buckets.entry(plugin.to_owned()).or_default();
        match caps.get(capability) {
            // Another request built it between the two locks.
            Some(b) if b.limit == limit => b.limiter.clone(),
            _ => {
                let limiter = Arc::new(Keyed::dashmap_with_clock(quota(limit), self.clock.clone()));
                caps.insert(
                    capability.to_owned(),
                    Bucket {
                        limit,
                        limiter: limiter.clone(),
                    },
                );
                limiter
            }
        }
    }

    /// Forgets keys whose buckets are full again (they would be recreated identical).
    pub fn sweep(&self) {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        for bucket in buckets.values().flat_map(FastMap::values) {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    /// Keys currently tracked, across every bucket set (for tests).
    pub fn tracked_keys(&self) -> usize {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        buckets
            .values()
            .flat_map(FastMap::values)
            .map(|b| b.limiter.len())
            .sum()
    }
}

fn quota(limit: RateLimit) -> Quota {
    let rate = NonZeroU32::new(limit.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst()).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn plugin(yaml: &str) -> Plugin {
        serde_yaml::from_str(yaml).expect("valid test manifest")
    }

    fn echo() -> Plugin {
        plugin(
            r#"
apiVersion: bkg.rs/v1alpha1
kind: Plugin
metadata: {name: echo}
spec:
  implementation: echo
  rateLimit: {requestsPerSecond: 1, burst: 3}
  capabilities:
    - id: echo
    - id: sleep
      rateLimit: {requestsPerSecond: 1000, burst: 1}
"#,
        )
    }

    fn limit(rps: u32, burst: Option<u32>) -> RateLimit {
        RateLimit {
            requests_per_second: rps,
            burst,
        }
    }

    #[test]
    fn capability_beats_plugin_beats_default() {
        let limiter = RateLimiter::with_clock(Some(limit(50, None)), FakeRelativeClock::default());
        let p = echo();
        assert_eq!(limiter.limit_for(&p, "sleep"), Some(limit(1000, Some(1))));
        assert_eq!(limiter.limit_for(&p, "echo"), Some(limit(1, Some(3))));
        let mut bare = p.clone();
        bare.spec.rate_limit = None;
        assert_eq!(limiter.limit_for(&bare, "echo"), Some(limit(50, None)));
        assert_eq!(frozen().0.limit_for(&bare, "echo"), None);
    }

    #[test]
    fn the_burst_passes_then_calls_are_refused_with_a_wait() {
        let (limiter, clock) = frozen();
        let p = echo();
        for _ in 0..3 {
            limiter
                .check(&p, "echo", "k1", 1)
                .expect("within the burst");
        }
        let Err(Refused::Exceeded(refused)) = limiter.check(&p, "echo", "k1", 1) else {
            panic!("burst used up");
        };
        assert_eq!(refused.limit, limit(1, Some(3)));
        // One call a second: the next unit is a whole second away on a clock that stood still.
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        clock.advance(Duration::from_millis(999));
        assert!(limiter.check(&p, "echo", "k1", 1).is_err(), "1 ms early");
        clock.advance(Duration::from_millis(1));
        limiter
            .check(&p, "echo", "k1", 1)
            .expect("the wait told is the wait needed");
        assert!(limiter.check(&p, "echo", "k1", 1).is_err());
    }

    #[test]
    fn keys_and_capabilities_have_their_own_buckets() {
        let (limiter, clock) = frozen();
        let p = echo();
        for _ in 0..3 {
            limiter
                .check(&p, "echo", "k1", 1)
                .expect("k1 within its burst");
        }
        assert!(limiter.check(&p, "echo", "k1", 1).is_err());
        limiter
            .check(&p, "echo", "k2", 1)
            .expect("k2 has its own bucket");
        limiter
            .check(&p, "sleep", "k1", 1)
            .expect("sleep has its own bucket");
        assert!(
            limiter.check(&p, "sleep", "k1", 1).is_err(),
            "sleep's burst is 1"
        );
        clock.advance(Duration::from_millis(1));
        limiter
            .check(&p, "sleep", "k1", 1)
            .expect("1000 a second: one more after 1 ms");
        assert!(
            limiter.check(&p, "echo", "k1", 1).is_err(),
            "1 ms gives echo (1 a second) nothing back"
        );
    }

    #[test]
    fn a_changed_limit_takes_effect_at_once() {
        let (limiter, _clock) = frozen();
        let mut p = echo();
        for _ in 0..3 {
            limiter
                .check(&p, "echo", "k1", 1)
                .expect("within the burst");
        }
        assert!(limiter.check(&p, "echo", "k1", 1).is_err());
        p.spec.rate_limit = Some(limit(1, Some(10)));
        limiter
            .check(&p, "echo", "k1", 1)
            .expect("a new bucket under the new limit");
    }

    #[test]
    fn no_limit_means_no_bucket() {
        let (limiter, _clock) = frozen();
        let mut p = echo();
        p.spec.rate_limit = None;
        for _ in 0..1000 {
            limiter.check(&p, "echo", "k1", 1).expect("unlimited");
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    fn costly() -> Plugin {
        plugin(
            r#"
apiVersion: bkg.rs/v1alpha1
kind: Plugin
metadata: {name: candle}
spec:
  implementation: candle
  capabilities:
    - id: model.infer
      rateLimit: {requestsPerSecond: 10, burst: 300}
      cost: {unit: inputs}
"#,
        )
    }

    /// A limiter on a clock that moves only when the test says so.
    fn frozen() -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(None, clock.clone()), clock)
    }

    #[test]
    fn a_call_takes_as_many_units_as_it_costs() {
        let (limiter, _clock) = frozen();
        let p = costly();
        limiter
            .check(&p, "model.infer", "k1", 256)
            .expect("256 of 300");
        // 44 units are left, exactly: 45 are refused, 44 pass, then not even one does.
        let Err(Refused::Exceeded(refused)) = limiter.check(&p, "model.infer", "k1", 45) else {
            panic!("only 44 units left");
        };
        assert_eq!(refused.cost, 45);
        // One unit comes back every 100 ms at 10 per second: one short, 100 ms to wait.
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        limiter
            .check(&p, "model.infer", "k1", 44)
            .expect("the 44 left");
        assert!(limiter.check(&p, "model.infer", "k1", 1).is_err());
        limiter
            .check(&p, "model.infer", "k2", 300)
            .expect("another key has its own 300");
    }

    #[test]
    fn units_come_back_at_the_limit_rate() {
        let (limiter, clock) = frozen();
        let p = costly();
        limiter.check(&p, "model.infer", "k1", 300).expect("all");
        assert!(limiter.check(&p, "model.infer", "k1", 1).is_err());
        clock.advance(Duration::from_secs(2));
        limiter
            .check(&p, "model.infer", "k1", 20)
            .expect("2 s at 10 per second");
        assert!(limiter.check(&p, "model.infer", "k1", 1).is_err());
        clock.advance(Duration::from_secs(60));
        limiter
            .check(&p, "model.infer", "k1", 300)
            .expect("full again, never above the burst");
        assert!(limiter.check(&p, "model.infer", "k1", 1).is_err());
    }

    #[test]
    fn a_call_costing_more_than_the_burst_is_refused_for_good() {
        let (limiter, clock) = frozen();
        let p = costly();
        let refused = limiter.check(&p, "model.infer", "k1", 301);
        assert_eq!(
            refused,
            Err(Refused::OverBurst {
                limit: limit(10, Some(300)),
                cost: 301
            })
        );
        clock.advance(Duration::from_secs(3600));
        assert!(matches!(
            limiter.check(&p, "model.infer", "k1", 301),
            Err(Refused::OverBurst { .. })
        ));
        limiter
            .check(&p, "model.infer", "k1", 300)
            .expect("the refused call took nothing");
    }

    #[test]
    fn a_cost_of_zero_counts_as_one() {
        let (limiter, _clock) = frozen();
        let p = echo();
        for _ in 0..3 {
            limiter
                .check(&p, "echo", "k1", 0)
                .expect("within the burst");
        }
        assert!(limiter.check(&p, "echo", "k1", 0).is_err());
    }
}
