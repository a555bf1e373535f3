//! The dynamic batching queue: an actor on its own OS thread.
//!
//! ```text
//!  invoke ──tokenize──▶ try_acquire(n permits) ──full?──▶ 429 Overloaded
//!                             │ ok
//!                             ▼
//!                       mpsc ──▶ [batcher thread]  gather ≤ max_wait / max_batch_size
//!                                     │  sort all waiting inputs by length, cut into
//!                                     │  batches ≤ max_batch_size and ≤ max_batch_tokens
//!                                     ▼
//!                              forward + pool ──oneshot──▶ caller (as soon as its inputs are done)
//! ```
//!
//! Memory is bounded by the semaphore: at most `queue_capacity` inputs are ever accepted and
//! not yet answered; the rest are refused at the door. Inference runs here, never on tokio's
//! worker threads, so a long batch cannot stall the runtime's HTTP handling.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::BatchPolicy;
use crate::engine::Embedder;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::tokenize::Encoded;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>>>;

struct Job {
    seqs: Vec<Encoded>,
    reply: Reply,
    deadline: Option<Instant>,
    /// The job's room in the queue, released once it is answered.
    _permit: OwnedSemaphorePermit,
}

/// Handle to one model's batching thread. Dropping the last handle stops the thread once
/// the jobs already queued are answered.
pub struct Batcher {
    tx: Sender<Job>,
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: Metrics,
}

impl Batcher {
    pub fn spawn(embedder: Arc<Embedder>, policy: BatchPolicy, metrics: Metrics) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            rx,
            embedder,
            policy,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("bkg-candle-batcher".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Inference(format!("cannot start the batching thread: {e}")))?;
        Ok(Self {
            tx,
            permits: Arc::new(Semaphore::new(policy.queue_capacity)),
            capacity: policy.queue_capacity,
            metrics,
        })
    }

    /// Queues `seqs` and waits for their pooled embeddings (input order). Refuses at once,
    /// without waiting, when the queue cannot take all of them.
    pub async fn embed(
        &self,
        seqs: Vec<Encoded>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<f32>>> {
        let n = seqs.len();
        if n > self.capacity {
            return Err(Error::InvalidInput(format!(
                "{n} inputs in one request; at most {} fit in the queue",
                self.capacity
            )));
        }
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(n as u32)
            .map_err(|_| {
                self.metrics.rejected.inc_by(n as u64);
                Error::QueueFull
            })?;
        let (reply, answer) = oneshot::channel();
        self.metrics.queue_depth.inc_by(n as i64);
        if self
            .tx
            .send(Job {
                seqs,
                reply,
                deadline,
                _permit: permit,
            })
            .is_err()
        {
            self.metrics.queue_depth.dec_by(n as i64);
            return Err(Error::Unloaded);
        }
        answer.await.map_err(|_| Error::Unloaded)?
    }

    /// Inputs accepted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

struct Worker {
    rx: Receiver<Job>,
    embedder: Arc<Embedder>,
    policy: BatchPolicy,
    metrics: Metrics,
}

/// One input's place: which job, which of its inputs, how many tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    job: usize,
    seq: usize,
    len: usize,
}

struct Pending {
    seqs: Vec<Encoded>,
    results: Vec<Vec<f32>>,
    remaining: usize,
    /// Taken when answered; dropping the permit frees the job's room in the queue.
    reply: Option<(Reply, OwnedSemaphorePermit)>,
}

impl Worker {
    fn run(self) {
        let mut jobs: Vec<Job> = Vec::new();
        loop {
            if jobs.is_empty() {
                match self.rx.recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => return, // every handle dropped: the model was unloaded
                }
            }
            self.gather(&mut jobs);
            self.process(std::mem::take(&mut jobs));
        }
    }

    /// Waits up to `max_wait` for a full batch, then takes whatever else is already queued
    /// (bounded, so one round never grows past a few batches).
    fn gather(&self, jobs: &mut Vec<Job>) {
        let count = |jobs: &Vec<Job>| jobs.iter().map(|j| j.seqs.len()).sum::<usize>();
        let until = Instant::now() + self.policy.max_wait;
        let mut n = count(jobs);
        while n < self.policy.max_batch_size {
            let now = Instant::now();
            if now >= until {
                break;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(job) => {
                    n += job.seqs.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        while n < self.policy.max_batch_size * 4 {
            match self.rx.try_recv() {
                Ok(job) => {
                    n += job.seqs.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
    }

    fn process(&self, jobs: Vec<Job>) {
        let now = Instant::now();
        let mut pending = Vec::with_capacity(jobs.len());
        for Job {
            seqs,
            reply,
            deadline,
            _permit: permit,
        } in jobs
        {
            let n = seqs.len();
            if reply.is_closed() {
                // The caller gave up (timeout, disconnect): don't spend compute on it.
                self.metrics.queue_depth.dec_by(n as i64);
                continue;
            }
            if deadline.is_some_and(|d| d <= now) {
                self.metrics.queue_depth.dec_by(n as i64);
                let _ = reply.send(Err(Error::DeadlineExceeded));
                continue;
            }
            pending.push(Pending {
                seqs,
                results: vec![Vec::new(); n],
                remaining: n,
                reply: Some((reply, permit)),
            });
        }
        let slots = sorted_slots(&pending);
        for batch in cut_batches(
            &slots,
            self.policy.max_batch_size,
            self.policy.max_batch_tokens,
        ) {
            self.run_batch(batch, &mut pending);
        }
    }

    fn run_batch(&self, batch: &[Slot], pending: &mut [Pending]) {
        let seqs: Vec<&Encoded> = batch.iter().map(|s| &pending[s.job].seqs[s.seq]).collect();
        self.metrics.queue_depth.dec_by(batch.len() as i64);
        self.metrics.batch_size.observe(batch.len() as f64);
        self.metrics
            .batch_tokens
            .observe(seqs.iter().map(|s| s.len()).sum::<usize>() as f64);
        let started = Instant::now();
        // A panic inside the tensor code must not take the queue down with it.
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.embedder.embed_encoded(&seqs)))
                .unwrap_or_else(|_| {
                    Err(Error::Inference("the model panicked on this batch".into()))
                });
        self.metrics
            .inference_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(vectors) => {
                self.metrics.embedded.inc_by(batch.len() as u64);
                for (slot, v) in batch.iter().zip(vectors) {
                    let p = &mut pending[slot.job];
                    p.results[slot.seq] = v;
                    p.remaining -= 1;
                    if p.remaining == 0
                        && let Some((reply, permit)) = p.reply.take()
                    {
                        // Free the room first: a caller that resubmits the moment it has its
                        // answer must find it free.
                        drop(permit);
                        let _ = reply.send(Ok(std::mem::take(&mut p.results)));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = batch.len(), "batch failed");
                let message = e.to_string();
                for slot in batch {
                    if let Some((reply, permit)) = pending[slot.job].reply.take() {
                        drop(permit);
                        let err = match &e {
                            Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
                            _ => Error::Inference(message.clone()),
                        };
                        let _ = reply.send(Err(err));
                    }
                }
            }
        }
    }
}

/// Every input of every job, shortest first; ties keep arrival order.
fn sorted_slots(pending: &[Pending]) -> Vec<Slot> {
    let mut slots: Vec<Slot> = pending
        .iter()
        .enumerate()
        .flat_map(|(job, p)| {
            p.seqs.iter().enumerate().map(move |(seq, e)| Slot {
                job,
                seq,
                len: e.len(),
            })
        })
        .collect();
    slots.sort_by_key(|s| s.len);
    slots
}

/// Cuts length-sorted slots into batches of at most `max_size` inputs whose padded size
/// (inputs × longest) stays within `max_tokens`; an input longer than that runs alone.
fn cut_batches(slots: &[Slot], max_size: usize, max_tokens: usize) -> Vec<&[Slot]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < slots.len() {
        let mut end = start + 1;
        while end < slots.len()
            && end - start < max_size
            && (end - start + 1) * slots[end].len <= max_tokens
        {
            end += 1;
        }
        batches.push(&slots[start..end]);
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(lens: &[usize]) -> Vec<Slot> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Slot {
                job: i,
                seq: 0,
                len,
            })
            .collect()
    }

    #[test]
    fn batches_respect_size_and_padded_token_limits() {
        let s = slots(&[2, 2, 3, 3, 4, 10]);
        let sizes: Vec<usize> = cut_batches(&s, 4, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![4, 2]);
        // 3 inputs × 4 tokens = 12 > 10: the batch closes before the longer input.
        let sizes: Vec<usize> = cut_batches(&s, 8, 10).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![3, 2, 1], "{:?}", cut_batches(&s, 8, 10));
        // An input longer than the token budget still runs, alone.
        assert_eq!(cut_batches(&slots(&[50]), 8, 10).len(), 1);
    }
}
