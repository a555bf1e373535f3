//! Invoke rate limits: one token bucket per API key × plugin × capability (GCRA, `governor`).
//!
//! The limit that applies is the capability's `rateLimit`, else the plugin's, else the
//! gateway's default. Buckets of a (plugin, capability) are rebuilt when its limit changes;
//! idle keys are forgotten by [`RateLimiter::sweep`], so memory is bounded by the number of
//! API keys that called recently, never by the number of requests.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bkg_core::{Plugin, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::FastMap;

struct Bucket {
    limit: RateLimit,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

/// Every rate limit the gateway enforces.
pub struct RateLimiter {
    default: Option<RateLimit>,
    clock: DefaultClock,
    /// plugin id → capability id → bucket set.
    buckets: RwLock<FastMap<String, FastMap<String, Bucket>>>,
}

/// A refused call: how long until the key may call this capability again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: RateLimit,
    pub retry_after: Duration,
}

impl Exceeded {
    /// Whole seconds for `Retry-After`, never 0 (a client retrying at once would be refused).
    pub fn retry_after_secs(&self) -> u32 {
        let secs = self.retry_after.as_secs_f64().ceil() as u32;
        secs.max(1)
    }
}

impl RateLimiter {
    /// `default` applies to capabilities whose Plugin sets no limit; `None` leaves them unlimited.
    pub fn new(default: Option<RateLimit>) -> Self {
        Self {
            default,
            clock: DefaultClock::default(),
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

    /// Takes one token from `key_id`'s bucket for this capability.
    pub fn check(&self, plugin: &Plugin, capability: &str, key_id: &str) -> Result<(), Exceeded> {
        let Some(limit) = self.limit_for(plugin, capability) else {
            return Ok(());
        };
        let plugin_id = plugin.metadata.name.as_deref().unwrap_or_default();
        let limiter = self.limiter(plugin_id, capability, limit);
        limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| Exceeded {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    fn limiter(
        &self,
        plugin: &str,
        capability: &str,
        limit: RateLimit,
    ) -> Arc<DefaultKeyedRateLimiter<String>> {
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
                let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(quota(limit)));
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
        let limiter = RateLimiter::new(Some(limit(50, None)));
        let p = echo();
        assert_eq!(limiter.limit_for(&p, "sleep"), Some(limit(1000, Some(1))));
        assert_eq!(limiter.limit_for(&p, "echo"), Some(limit(1, Some(3))));
        let mut bare = p.clone();
        bare.spec.rate_limit = None;
        assert_eq!(limiter.limit_for(&bare, "echo"), Some(limit(50, None)));
        assert_eq!(RateLimiter::new(None).limit_for(&bare, "echo"), None);
    }

    #[test]
    fn the_burst_passes_then_calls_are_refused_with_a_wait() {
        let limiter = RateLimiter::new(None);
        let p = echo();
        for _ in 0..3 {
            limiter.check(&p, "echo", "k1").expect("within the burst");
        }
        let refused = limiter.check(&p, "echo", "k1").expect_err("burst used up");
        assert_eq!(refused.limit, limit(1, Some(3)));
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
    }

    #[test]
    fn keys_and_capabilities_have_their_own_buckets() {
        let limiter = RateLimiter::new(None);
        let p = echo();
        for _ in 0..3 {
            limiter
                .check(&p, "echo", "k1")
                .expect("k1 within its burst");
        }
        assert!(limiter.check(&p, "echo", "k1").is_err());
        limiter
            .check(&p, "echo", "k2")
            .expect("k2 has its own bucket");
        limiter
            .check(&p, "sleep", "k1")
            .expect("sleep has its own bucket");
        assert!(
            limiter.check(&p, "sleep", "k1").is_err(),
            "sleep's burst is 1"
        );
    }

    #[test]
    fn a_changed_limit_takes_effect_at_once() {
        let limiter = RateLimiter::new(None);
        let mut p = echo();
        for _ in 0..3 {
            limiter.check(&p, "echo", "k1").expect("within the burst");
        }
        assert!(limiter.check(&p, "echo", "k1").is_err());
        p.spec.rate_limit = Some(limit(1, Some(10)));
        limiter
            .check(&p, "echo", "k1")
            .expect("a new bucket under the new limit");
    }

    #[test]
    fn no_limit_means_no_bucket() {
        let limiter = RateLimiter::new(None);
        let mut p = echo();
        p.spec.rate_limit = None;
        for _ in 0..1000 {
            limiter.check(&p, "echo", "k1").expect("unlimited");
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }
}
