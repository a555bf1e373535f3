//! The detection queue: an actor on its own OS thread.
//!
//! ```text
//!  invoke ──try_acquire(1 permit)──full?──▶ 429 Overloaded
//!                  │ ok
//!                  ▼
//!            mpsc ──▶ [detector thread]  decode → detect → annotate? ──oneshot──▶ caller
//! ```
//!
//! At most `queue_capacity` images are accepted and not yet answered, so the memory held by
//! queued images is bounded; the rest are refused at the door. Decoding and detection run on
//! this thread (and rustface's rayon pool), never on tokio's workers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Instant;

use rustface::Model;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::detect::{self, Face, Params};
use crate::error::{Error, Result};

/// What one request asks of the detector.
pub struct Request {
    pub image: Vec<u8>,
    pub params: Params,
    pub annotate: bool,
    pub deadline: Option<Instant>,
}

/// What the detector found.
#[derive(Debug)]
pub struct Detection {
    pub faces: Vec<Face>,
    pub width: u32,
    pub height: u32,
    /// The annotated PNG, when asked for.
    pub annotated: Option<Vec<u8>>,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Detection>>,
    _permit: OwnedSemaphorePermit,
}

/// Handle to the detector thread; dropping it stops the thread once queued jobs are answered.
pub struct Queue {
    tx: Sender<Job>,
    permits: Arc<Semaphore>,
}

impl Queue {
    pub fn spawn(model: Model, capacity: usize, max_pixels: u64) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bkg-rustyface".into())
            .spawn(move || run(rx, model, max_pixels))
            .map_err(|e| Error::Inference(format!("cannot start the detector thread: {e}")))?;
        Ok(Self {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
        })
    }

    /// Queues one image and waits for its faces; refuses at once when the queue is full.
    pub async fn detect(&self, request: Request) -> Result<Detection> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Error::QueueFull)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                request,
                reply,
                _permit: permit,
            })
            .map_err(|_| Error::Unloaded)?;
        answer.await.map_err(|_| Error::Unloaded)?
    }
}

fn run(rx: Receiver<Job>, model: Model, max_pixels: u64) {
    while let Ok(job) = rx.recv() {
        let Job {
            request,
            reply,
            _permit,
        } = job;
        if reply.is_closed() || request.deadline.is_some_and(|d| d <= Instant::now()) {
            // The caller gave up or its time is over: don't spend compute on it.
            continue;
        }
        // rustface panics on inputs it considers illegal; one request must not take the
        // thread (and every later request) down with it.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| process(&model, request, max_pixels)))
                .unwrap_or_else(|_| {
                    Err(Error::Inference(
                        "the detector panicked on this image".into(),
                    ))
                });
        let _ = reply.send(result);
    }
}

fn process(model: &Model, request: Request, max_pixels: u64) -> Result<Detection> {
    let decoded = detect::decode("image", &request.image, max_pixels)?;
    let (width, height) = decoded.gray.dimensions();
    let faces = detect::detect(model, &decoded.gray, request.params);
    let annotated = if request.annotate {
        Some(detect::annotate(decoded.rgb, &faces)?)
    } else {
        None
    };
    Ok(Detection {
        faces,
        width,
        height,
        annotated,
    })
}
