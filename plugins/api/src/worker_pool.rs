//! A bounded queue served by a fixed pool of OS threads: how a plugin runs blocking work
//! (a face detector, an ONNX plan) off the async runtime, with overload refused at the door.
//!
//! ```text
//!  submit ──(capacity taken?)──yes──▶ Error::Full            (the plugin's 429)
//!     │ no: one place held until the job is answered
//!     ▼
//!   mpsc ──▶ [worker 0: its own state] ─┐
//!       ──▶ [worker 1: its own state] ─┼─ deadline passed / caller gone? skip
//!       ──▶ [worker N-1 …]             ─┘  else work(job), a panic answered as Error::Panicked
//!                                                         ──oneshot──▶ Ticket::answer
//! ```
//!
//! Each worker owns what its factory built for it: a `rustface` detector model (the detector is
//! not `Sync`, so each thread keeps its own), or a clone of an `Arc` of a tract plan (which runs
//! through `&self`). At most `capacity` jobs are accepted and not yet answered, so the memory
//! queued work holds is bounded.
//!
//! Why our own: no maintained crate in the workspace's lock file gives this shape. rayon's pool
//! has no admission limit, no per-thread state and aborts the process on a panic in `spawn` by
//! default, and a job run inside it would also capture rustface's own `par_iter`s; tokio's
//! `spawn_blocking` grows to hundreds of threads and keeps no state per thread. What is here is
//! std's threads and channel plus tokio's `Semaphore` and `oneshot`, which every plugin already
//! links.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Why a job got no answer from its work. Each is one of the protocol's errors
/// (`From<Error> for PluginError`): a full queue is `Overloaded` (429), stopped workers
/// `NotReady` (503), an expired or panicked job `Failed` (500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Every place in the queue is taken; refused without waiting.
    #[error("the queue is full")]
    Full,
    /// The workers are gone (the pool was dropped, or no worker thread runs).
    #[error("the worker threads are not running")]
    Stopped,
    /// The job's deadline passed before a worker took it, so it was not run.
    #[error("the deadline passed before a worker was free")]
    Expired,
    /// The work panicked; the worker caught it and serves the next job.
    #[error("the work panicked on this input")]
    Panicked,
}

impl From<Error> for crate::PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::Full => Self::Overloaded {
                retry_after_secs: 1,
            },
            Error::Stopped => Self::NotReady(e.to_string()),
            Error::Expired | Error::Panicked => Self::failed(e.to_string()),
        }
    }
}

struct Job<J, R> {
    input: J,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<R, Error>>,
    place: OwnedSemaphorePermit,
}

/// The queue and its workers; dropping it stops them once the queued jobs are answered.
pub struct WorkerPool<J, R> {
    tx: Sender<Job<J, R>>,
    places: Arc<Semaphore>,
    capacity: usize,
    workers: usize,
    in_flight: Arc<AtomicUsize>,
}

/// An accepted job's answer, to be awaited. Dropping it tells the pool the caller went away:
/// a job not yet started is then skipped.
pub struct Ticket<R>(oneshot::Receiver<Result<R, Error>>);

impl<R> Ticket<R> {
    /// Waits for the job's answer.
    pub async fn answer(self) -> Result<R, Error> {
        self.0.await.unwrap_or(Err(Error::Stopped))
    }
}

impl<J: Send + 'static, R: Send + 'static> WorkerPool<J, R> {
    /// Starts `workers` threads (at least one) named `{name}-{i}`; `worker(i)` builds the work
    /// function thread `i` owns, with whatever state it captures. `capacity` bounds the jobs
    /// accepted and not yet answered, running ones included.
    pub fn spawn<W>(
        name: &str,
        workers: usize,
        capacity: usize,
        mut worker: impl FnMut(usize) -> W,
    ) -> std::io::Result<Self>
    where
        W: FnMut(J) -> R + Send + 'static,
    {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job<J, R>>();
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        for i in 0..workers {
            let (rx, in_flight, work) = (Arc::clone(&rx), Arc::clone(&in_flight), worker(i));
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || serve(&rx, &in_flight, work))?;
        }
        Ok(Self {
            tx,
            places: Arc::new(Semaphore::new(capacity)),
            capacity,
            workers,
            in_flight,
        })
    }

    /// Accepts one job, or refuses it at once with [`Error::Full`]. A job whose `deadline`
    /// has passed when a worker reaches it is answered [`Error::Expired`] without running.
    pub fn submit(&self, input: J, deadline: Option<Instant>) -> Result<Ticket<R>, Error> {
        let place = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| Error::Full)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                input,
                deadline,
                reply,
                place,
            })
            .map_err(|_| Error::Stopped)?;
        Ok(Ticket(answer))
    }

    /// [`WorkerPool::submit`], then waits for the answer.
    pub async fn run(&self, input: J, deadline: Option<Instant>) -> Result<R, Error> {
        self.submit(input, deadline)?.answer().await
    }
}

impl<J, R> WorkerPool<J, R> {
    /// Jobs accepted and not yet answered (queued or running): the queue-depth gauge.
    pub fn depth(&self) -> usize {
        self.capacity
            .saturating_sub(self.places.available_permits())
    }

    /// Jobs a worker is running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

fn serve<J, R>(
    rx: &Mutex<Receiver<Job<J, R>>>,
    in_flight: &AtomicUsize,
    mut work: impl FnMut(J) -> R,
) {
    loop {
        // The lock is held only while taking a job, never while running one.
        let Ok(job) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
            return;
        };
        let Job {
            input,
            deadline,
            reply,
            place,
        } = job;
        if reply.is_closed() {
            // The caller went away: don't spend compute on it.
            continue;
        }
        let answer = if deadline.is_some_and(|d| d <= Instant::now()) {
            Err(Error::Expired)
        } else {
            in_flight.fetch_add(1, Ordering::Relaxed);
            // One job's panic must not take the thread (and every later job) with it.
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| work(input)))
                .map_err(|_| Error::Panicked);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            answer
        };
        // The place is free before the caller sees its answer, so a caller that submits again
        // on an answer finds it free.
        drop(place);
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests;
