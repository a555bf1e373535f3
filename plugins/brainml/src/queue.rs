//! The inference queue: an actor on its own OS threads.
//!
//! ```text
//!  invoke ──try_acquire(1 permit)──full?──▶ 429 Overloaded
//!                  │ ok
//!                  ▼
//!            mpsc ──▶ [worker threads ×workers]  tract plan.run ──oneshot──▶ caller
//! ```
//!
//! At most `queue_capacity` requests are accepted and not yet answered, so the memory held by
//! queued tensors is bounded; the rest are refused at the door. Inference runs on these
//! threads, never on tokio's workers. The plan is shared: tract's `SimplePlan::run` takes
//! `&self` and keeps each run's state on the calling thread.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};
use crate::model::Model;

struct Job {
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Vec<Tensor>>>,
    _permit: OwnedSemaphorePermit,
}

/// Handle to the worker threads; dropping it stops them once queued jobs are answered.
pub struct Queue {
    tx: Sender<Job>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl Queue {
    pub fn spawn(model: Arc<Model>, workers: usize, capacity: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let (rx, model) = (Arc::clone(&rx), Arc::clone(&model));
            std::thread::Builder::new()
                .name(format!("bkg-brainml-{i}"))
                .spawn(move || run(&rx, &model))
                .map_err(|e| Error::Inference(format!("cannot start an inference thread: {e}")))?;
        }
        Ok(Self {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        })
    }

    /// Requests accepted and not yet answered.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Queues one request and waits for its outputs; refuses at once when the queue is full.
    pub async fn run(&self, inputs: Vec<Tensor>, deadline: Option<Instant>) -> Result<Vec<Tensor>> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Error::QueueFull)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                inputs,
                deadline,
                reply,
                _permit: permit,
            })
            .map_err(|_| Error::Unloaded)?;
        answer.await.map_err(|_| Error::Unloaded)?
    }
}

fn run(rx: &Mutex<Receiver<Job>>, model: &Model) {
    loop {
        // The lock is held only while taking a job, never while running one.
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let Job {
            inputs,
            deadline,
            reply,
            _permit,
        } = job;
        if reply.is_closed() || deadline.is_some_and(|d| d <= Instant::now()) {
            // The caller gave up or its time is over: don't spend compute on it.
            continue;
        }
        // A panic inside an operator must not take the thread (and later requests) with it.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.run(inputs)))
            .unwrap_or_else(|_| Err(Error::Inference("the model panicked on this input".into())));
        let _ = reply.send(result);
    }
}
