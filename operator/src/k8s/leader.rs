//! Leader election on a `coordination.k8s.io/v1` Lease, so only one operator replica writes.
//!
//! ```text
//!  acquire: GET lease ─ 404 ─▶ POST (holder = me)
//!                     └ held by someone else and fresh ─▶ wait, retry
//!                     └ mine, or expired ─▶ PUT with resourceVersion (409 = someone was faster)
//!  hold:    renew every `renew` ; if renewing fails for `duration - renew` ─▶ leadership lost ─▶ stop
//!  release: on shutdown, clear the holder so a standby takes over at once
//! ```
//!
//! Written against the Lease API directly: no maintained crate targets kube 5 yet, and the
//! protocol is the one client-go's `leaderelection` package implements.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::{Error, Result};

/// Which Lease to hold, and how.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew: Duration,
    /// Where the Lease's timestamps come from.
    pub clock: Clock,
}

/// The time written into and compared with the Lease. The system clock in production; tests
/// anchor it to tokio's clock, so a paused runtime moves Lease time and timers together.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    origin: Option<(Timestamp, tokio::time::Instant)>,
}

impl Clock {
    /// `at` now, then advancing with `tokio::time`.
    pub fn tokio(at: Timestamp) -> Self {
        Self {
            origin: Some((at, tokio::time::Instant::now())),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self.origin {
            None => Timestamp::now(),
            Some((at, started)) => {
                let elapsed =
                    SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::MAX);
                at.saturating_add(elapsed).unwrap_or(at)
            }
        }
    }
}

impl LeaseConfig {
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        Self {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            clock: Clock::default(),
        }
    }
}

/// What the Lease says, decided without a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ours (new, renewed or taken over): write it back.
    Take,
    /// Someone else holds a fresh lease.
    Wait,
}

/// Whether `me` may take or renew `lease` at `now`.
pub fn decide(lease: &Lease, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = &lease.spec else {
        return Decision::Take;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(MicroTime(renewed)) if *renewed + duration > now => Decision::Wait,
        _ => Decision::Take,
    }
}

fn spec_for(cfg: &LeaseConfig, old: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let mine = old.and_then(|s| s.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: if mine {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

/// One attempt to take or renew the lease. `Ok(true)`: we hold it now.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = cfg.clock.now();
    let existing = api
        .get_opt(&cfg.name)
        .await
        .map_err(|e| Error::kube("get Lease", e))?;
    let result = match existing {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(lease) => {
            if decide(&lease, &cfg.identity, now) == Decision::Wait {
                return Ok(false);
            }
            let mut next = lease.clone();
            // The resourceVersion in `next.metadata` makes the replace fail with 409 if anyone
            // wrote the lease since we read it.
            next.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            api.replace(&cfg.name, &PostParams::default(), &next).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube("write Lease", e)),
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) {
    loop {
        match try_acquire(client, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return;
            }
            Ok(false) => tracing::debug!(lease = %cfg.name, "another replica leads"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.renew).await;
    }
}

/// Renews the lease until renewing has failed for the renew deadline (the lease duration less
/// one renew interval, as client-go's `renewDeadline`); returns then, so this replica stops
/// before its Lease can expire and a standby take over (no two leaders at once).
pub async fn hold(client: Client, cfg: LeaseConfig) -> Error {
    let deadline = cfg.duration.saturating_sub(cfg.renew);
    // When the last renewal that succeeded was sent: the Lease's renewTime is no earlier.
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew).await;
        let attempt = tokio::time::Instant::now();
        match try_acquire(&client, &cfg).await {
            Ok(true) => last_ok = attempt,
            Ok(false) => return Error::Lease(format!("lease {} taken over", cfg.name)),
            Err(e) => tracing::warn!(error = %e, "renewing the lease"),
        }
        if last_ok.elapsed() >= deadline {
            return Error::Lease(format!("could not renew lease {} in time", cfg.name));
        }
    }
}

/// Gives the lease up (best effort) so a standby replica takes over without waiting it out.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
        tracing::debug!(error = %e, "releasing the lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_secs).expect("ts"))),
                ..LeaseSpec::default()
            }),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("ts")
    }

    #[test]
    fn fresh_lease_of_another_replica_is_respected() {
        assert_eq!(
            decide(&lease(Some("b"), 100, 15), "a", at(110)),
            Decision::Wait
        );
    }

    #[test]
    fn expired_own_or_released_leases_are_taken() {
        assert_eq!(
            decide(&lease(Some("b"), 100, 15), "a", at(116)),
            Decision::Take
        );
        assert_eq!(
            decide(&lease(Some("a"), 100, 15), "a", at(101)),
            Decision::Take
        );
        assert_eq!(decide(&lease(None, 100, 15), "a", at(101)), Decision::Take);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let cfg = LeaseConfig::new("l".into(), "ns".into(), "a".into());
        let other = lease(Some("b"), 100, 15).spec;
        let taken = spec_for(&cfg, other.as_ref(), at(200));
        assert_eq!(taken.lease_transitions, Some(1));
        let renewed = spec_for(&cfg, Some(&taken), at(205));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(at(205))));
    }
}
