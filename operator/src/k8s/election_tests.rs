//! Leader election end to end: two operators ([`super::serve::run`], the code `bkg operator`
//! runs, with its Lease loop and controller) against one API double, on a paused tokio clock
//! that the Lease's timestamps follow ([`Clock::tokio`]). Waits are on what the double saw,
//! with deadlines that only guard against hangs.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake::ApiServer;
use super::fixtures::plugin_from_yaml;
use super::leader::{Clock, LeaseConfig};
use super::{Config, Images, Result, serve};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/bkg-operator";
/// Far longer than any wait below: a standby that waited a Lease out would trip the guards.
const LONG_LEASE: Duration = Duration::from_secs(3600);
const GUARD: Duration = Duration::from_secs(600);

struct Replica {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

fn start(server: &ApiServer, identity: &str, duration: Duration, clock: Clock) -> Replica {
    let lease = LeaseConfig {
        duration,
        renew: Duration::from_secs(2),
        clock,
        ..LeaseConfig::new("bkg-operator".into(), "default".into(), identity.into())
    };
    let config = Config {
        images: Images {
            cpu: "runtime:cpu".into(),
            gpu: "runtime:gpu".into(),
            ..Images::default()
        },
        namespace: Some("default".into()),
        metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        lease: Some(lease),
        concurrency: 2,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::run(server.client(identity), config, async {
        let _ = stopped.await;
    }));
    Replica {
        stop: Some(stop),
        task,
    }
}

/// Writes of `identity` other than to the Lease: its reconciles (applies, status, Events).
fn reconcile_writes(server: &ApiServer, identity: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.identity == identity && r.is_write() && !r.path.contains("/leases"))
        .count()
}

fn holder(server: &ApiServer) -> Option<String> {
    server
        .get(LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// Waits (on the paused clock) until `done` holds; fails after [`GUARD`].
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cluster_with_a_plugin() -> ApiServer {
    let server = ApiServer::default();
    let mut plugin = plugin_from_yaml("spec: {implementation: echo}");
    plugin.metadata.uid = None;
    Api::namespaced(server.client("kubectl"), "default")
        .create(&PostParams::default(), &plugin)
        .await
        .expect("create Plugin");
    server
}

fn running_status(server: &ApiServer) -> Value {
    server
        .get("/apis/bkg.rs/v1alpha1/namespaces/default/plugins/echo")
        .map(|p| p["status"]["phase"].clone())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn one_replica_leads_and_the_other_takes_over_when_its_lease_expires() {
    let server = cluster_with_a_plugin().await;
    let clock = Clock::tokio(Timestamp::from_second(1_800_000_000).expect("ts"));
    let duration = Duration::from_secs(10);
    let a = start(&server, "a", duration, clock);
    let b = start(&server, "b", duration, clock);
    until("a leader reconciles", || {
        running_status(&server) != Value::Null
    })
    .await;
    // Several Lease durations on: still exactly one writer, and it is the holder.
    tokio::time::sleep(duration * 6).await;
    let leader = holder(&server).expect("a holder");
    let (leader, standby, mut leader_replica, standby_replica) = if leader == "a" {
        ("a", "b", a, b)
    } else {
        ("b", "a", b, a)
    };
    assert!(reconcile_writes(&server, leader) > 0);
    assert_eq!(reconcile_writes(&server, standby), 0, "the standby wrote");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.identity == standby && r.path == LEASE),
        "the standby keeps trying for the Lease"
    );

    // The leader is cut off: it cannot renew. It stops before its Lease expires (no two leaders
    // at once); then the standby takes the Lease and reconciles.
    server.cut_off(leader, true);
    let lost = tokio::time::timeout(GUARD, &mut leader_replica.task)
        .await
        .expect("the old leader stops")
        .expect("task");
    assert_eq!(
        lost.expect_err("leadership lost").to_string(),
        "leader election: leadership lost"
    );
    assert_eq!(
        holder(&server).as_deref(),
        Some(leader),
        "the old leader stopped only after the standby took over"
    );
    assert_eq!(reconcile_writes(&server, standby), 0);
    until("the standby holds the Lease", || {
        holder(&server).as_deref() == Some(standby)
    })
    .await;
    until("the new leader reconciles", || {
        reconcile_writes(&server, standby) > 0
    })
    .await;
    // Reachable again, the old leader sends nothing more: it stopped, it does not reconcile.
    server.cut_off(leader, false);
    let before = server
        .requests()
        .iter()
        .filter(|r| r.identity == leader)
        .count();
    tokio::time::sleep(duration * 6).await;
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.identity == leader)
            .count(),
        before
    );
    assert_eq!(holder(&server).as_deref(), Some(standby));
    let lease = server.get(LEASE).expect("lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 2, "{lease}");
    drop(leader_replica.stop.take());
    drop(standby_replica);
}

#[tokio::test(start_paused = true)]
async fn a_leader_shutting_down_releases_the_lease_and_the_standby_takes_over_at_once() {
    let server = cluster_with_a_plugin().await;
    let clock = Clock::tokio(Timestamp::from_second(1_800_000_000).expect("ts"));
    let mut a = start(&server, "a", LONG_LEASE, clock);
    until("a leads", || holder(&server).as_deref() == Some("a")).await;
    until("a reconciles", || reconcile_writes(&server, "a") > 0).await;
    let b = start(&server, "b", LONG_LEASE, clock);
    until("b asks for the Lease", || {
        server
            .requests()
            .iter()
            .any(|r| r.identity == "b" && r.path == LEASE)
    })
    .await;

    // SIGTERM: a finishes, clears the holder, and b takes over well before the hour-long Lease
    // would have run out (the guard is ten minutes).
    let _ = a.stop.take().map(|s| s.send(()));
    tokio::time::timeout(GUARD, &mut a.task)
        .await
        .expect("a stops")
        .expect("task")
        .expect("a stopped cleanly");
    let writes_of_a = reconcile_writes(&server, "a");
    until("b holds the Lease", || {
        holder(&server).as_deref() == Some("b")
    })
    .await;
    until("b reconciles", || reconcile_writes(&server, "b") > 0).await;
    assert_eq!(reconcile_writes(&server, "a"), writes_of_a);
    drop(b);
}
