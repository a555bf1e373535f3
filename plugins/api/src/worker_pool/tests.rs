use std::sync::Barrier;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use super::*;

/// A bound on how long a test waits for an answer before it fails as hung; never a measure.
const HANG: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer (hung)"))
}

/// A job that says it started, then waits until its release is sent or dropped.
struct Gated {
    n: u32,
    release: std_mpsc::Receiver<()>,
}

/// Job `n` and the handle that releases it.
fn job(n: u32) -> (Gated, std_mpsc::Sender<()>) {
    let (release, rx) = std_mpsc::channel();
    (Gated { n, release: rx }, release)
}

/// A pool of gated jobs answering `n * 10`, and where their starts are reported.
fn gated(workers: usize, capacity: usize) -> (WorkerPool<Gated, u32>, std_mpsc::Receiver<u32>) {
    let (started_tx, started) = std_mpsc::channel();
    let pool = WorkerPool::spawn("test-gated", workers, capacity, |_| {
        let started_tx = started_tx.clone();
        move |job: Gated| {
            started_tx.send(job.n).expect("the test listens");
            let _ = job.release.recv();
            job.n * 10
        }
    })
    .expect("spawn");
    (pool, started)
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_frees_a_place_per_answer() {
    let (pool, started) = gated(2, 3);
    let [(j1, r1), (j2, r2), (j3, r3), (j4, _r4)] = [1, 2, 3, 4].map(job);
    let first = pool.submit(j1, None).expect("place 1");
    let second = pool.submit(j2, None).expect("place 2");
    let mut running = [
        started
            .recv_timeout(HANG)
            .expect("a worker runs job 1 or 2"),
        started
            .recv_timeout(HANG)
            .expect("the other worker runs the other"),
    ];
    running.sort_unstable();
    assert_eq!(running, [1, 2]);
    let third = pool.submit(j3, None).expect("place 3 (queued)");
    assert_eq!((pool.depth(), pool.in_flight()), (3, 2));

    // Both workers are held and the third place is taken: refused, not queued.
    assert_eq!(pool.submit(j4, None).err(), Some(Error::Full));
    assert_eq!(pool.depth(), 3);

    drop((r1, r2));
    assert_eq!(within("job 1", first.answer()).await, Ok(10));
    assert_eq!(within("job 2", second.answer()).await, Ok(20));
    // An answered job's place is free by the time its caller sees the answer: both are
    // taken again at once, and the queue is full again.
    let [(j5, r5), (j6, r6), (j7, _r7)] = [5, 6, 7].map(job);
    let fifth = pool.submit(j5, None).expect("a freed place");
    let sixth = pool.submit(j6, None).expect("the other freed place");
    assert_eq!(pool.submit(j7, None).err(), Some(Error::Full));
    drop((r3, r5, r6));
    assert_eq!(within("job 3", third.answer()).await, Ok(30));
    assert_eq!(within("job 5", fifth.answer()).await, Ok(50));
    assert_eq!(within("job 6", sixth.answer()).await, Ok(60));
    assert_eq!((pool.depth(), pool.in_flight()), (0, 0));
}

#[tokio::test]
async fn n_workers_run_n_jobs_at_once_each_with_its_own_state() {
    const N: usize = 3;
    // Each job waits until all N are inside their work: with fewer than N running at once,
    // none would return.
    let barrier = Arc::new(Barrier::new(N));
    let pool = WorkerPool::spawn("test-barrier", N, N, |i| {
        let barrier = Arc::clone(&barrier);
        move |(): ()| {
            barrier.wait();
            i
        }
    })
    .expect("spawn");
    assert_eq!(pool.workers(), N);
    let tickets: Vec<_> = (0..N)
        .map(|_| pool.submit((), None).expect("a place"))
        .collect();
    let mut served_by = Vec::new();
    for t in tickets {
        served_by.push(within("a job", t.answer()).await.expect("answer"));
    }
    served_by.sort_unstable();
    assert_eq!(
        served_by,
        [0, 1, 2],
        "each worker ran one job, with its own state"
    );
}

#[tokio::test]
async fn a_panicking_job_is_an_error_and_the_worker_keeps_serving() {
    let pool = WorkerPool::spawn("test-panic", 1, 4, |_| {
        let mut served = 0_u32;
        move |panic: bool| {
            served += 1;
            assert!(!panic, "the job asked to panic");
            served
        }
    })
    .expect("spawn");
    assert_eq!(within("ok", pool.run(false, None)).await, Ok(1));
    assert_eq!(
        within("panic", pool.run(true, None)).await,
        Err(Error::Panicked)
    );
    // The one worker is still there, with its state.
    assert_eq!(within("after", pool.run(false, None)).await, Ok(3));
    assert_eq!(pool.depth(), 0);
}

#[tokio::test]
async fn a_job_past_its_deadline_or_left_by_its_caller_is_not_run() {
    let (pool, started) = gated(1, 4);
    let [(j1, r1), (j2, _r2), (j3, _r3), (j4, r4)] = [1, 2, 3, 4].map(job);
    let blocker = pool.submit(j1, None).expect("place");
    assert_eq!(started.recv_timeout(HANG).expect("job 1 runs"), 1);
    // Queued behind job 1: one whose caller goes away, one whose deadline has passed.
    drop(pool.submit(j2, None).expect("place"));
    let expired = pool.submit(j3, Some(Instant::now())).expect("place");
    let last = pool.submit(j4, None).expect("place");
    drop(r1);
    assert_eq!(within("job 1", blocker.answer()).await, Ok(10));
    assert_eq!(within("job 3", expired.answer()).await, Err(Error::Expired));
    // The worker's next start is job 4: 2 and 3 were skipped.
    assert_eq!(started.recv_timeout(HANG).expect("job 4 runs"), 4);
    drop(r4);
    assert_eq!(within("job 4", last.answer()).await, Ok(40));
}

#[tokio::test]
async fn a_dropped_pool_answers_queued_jobs_then_stops() {
    let (pool, started) = gated(1, 2);
    let [(j1, r1), (j2, r2)] = [1, 2].map(job);
    let first = pool.submit(j1, None).expect("place");
    let queued = pool.submit(j2, None).expect("place");
    assert_eq!(started.recv_timeout(HANG).expect("job 1 runs"), 1);
    drop(pool);
    drop((r1, r2));
    assert_eq!(within("job 1", first.answer()).await, Ok(10));
    assert_eq!(within("job 2", queued.answer()).await, Ok(20));
}

#[test]
fn each_refusal_is_the_protocols_error() {
    use crate::PluginError;
    assert!(matches!(
        PluginError::from(Error::Full),
        PluginError::Overloaded {
            retry_after_secs: 1
        }
    ));
    assert!(matches!(
        PluginError::from(Error::Stopped),
        PluginError::NotReady(_)
    ));
    for e in [Error::Expired, Error::Panicked] {
        assert_eq!(PluginError::from(e.clone()).to_string(), e.to_string());
        assert_eq!(PluginError::from(e).category(), "failed");
    }
}
