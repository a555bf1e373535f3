//! The generation loop (continuous batching): one thread owns the model and advances every
//! active conversation one token per step, all in one forward pass
//! ([`LanguageModel::forward_batch`]). Requests join between steps: their prompts run in the
//! same pass as the others' next tokens, up to [`PREFILL_BUDGET`] prompt tokens a step, so a
//! long prompt delays the others by about one pass. Finished or abandoned conversations leave,
//! each keeps its own KV cache, and a bounded queue refuses the rest (429).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::model::{LanguageModel, Session};
use super::sampling::{Sampler, SamplingParams};
use super::text::{Detokenizer, StopText};
use crate::error::{Error, Result};

/// Why an answer ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens`, or the model's context, was reached.
    Length,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// What a request's channel receives: text as it is decided, then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: FinishReason,
        usage: Usage,
    },
    Failed(String),
}

pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Generate past end-of-sequence tokens (benchmarks and tests want fixed lengths).
    pub ignore_eos: bool,
    /// Dropping the receiver cancels the request at the next step.
    pub events: UnboundedSender<Event>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Conversations generating at once.
    pub max_active: usize,
    /// Requests waiting beyond those; more are refused.
    pub max_queued: usize,
    /// `max_tokens` when a request sets none.
    pub default_max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_active: 16,
            max_queued: 64,
            default_max_tokens: 256,
        }
    }
}

/// Counts the loop keeps for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub active: AtomicUsize,
    pub queued: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub generated_tokens: AtomicUsize,
}

pub struct Scheduler {
    tx: SyncSender<GenerateRequest>,
    pub counters: Arc<Counters>,
    model: Arc<LanguageModel>,
    limits: Limits,
}

impl Scheduler {
    pub fn start(model: Arc<LanguageModel>, limits: Limits) -> Self {
        let (tx, rx) = sync_channel(limits.max_queued);
        let counters = Arc::new(Counters::default());
        let (m, c) = (model.clone(), counters.clone());
        std::thread::Builder::new()
            .name("candle-generate".into())
            .spawn(move || run(&m, limits, &rx, &c))
            .expect("spawn the generation thread");
        Self {
            tx,
            counters,
            model,
            limits,
        }
    }

    pub fn model(&self) -> &LanguageModel {
        &self.model
    }

    /// Checks the request against the model and queues it; the answer comes as events.
    pub fn submit(&self, request: GenerateRequest) -> Result<()> {
        request.params.validate()?;
        let context = self.model.max_positions;
        if request.prompt.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        if request.prompt.len() >= context {
            return Err(Error::InvalidInput(format!(
                "the prompt has {} tokens; the model's context is {context} tokens",
                request.prompt.len()
            )));
        }
        if let Some(max) = request.params.max_tokens
            && request.prompt.len() + max > context
        {
            return Err(Error::InvalidInput(format!(
                "max_tokens: {max} new tokens after a prompt of {} exceed the model's context of {context} tokens",
                request.prompt.len()
            )));
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(request).map_err(|e| {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Error::QueueFull,
                TrySendError::Disconnected(_) => {
                    Error::Inference("the generation thread stopped".into())
                }
            }
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

struct Sequence {
    session: Session,
    sampler: Sampler,
    /// Prompt and answer, for the repetition penalty.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_new: usize,
    ignore_eos: bool,
    detok: Detokenizer,
    stop: StopText,
    events: UnboundedSender<Event>,
}

impl Sequence {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Ends the answer; `flush`: release text held back for an incomplete character (not when
    /// a stop sequence ended it: what follows the stop is cut).
    fn finish(&mut self, tokenizer: &tokenizers::Tokenizer, mut reason: FinishReason, flush: bool) {
        if flush {
            // Text held back for an incomplete character, then through the stop check.
            let tail = self.detok.finish(tokenizer).unwrap_or_default();
            let (text, stopped) = self.stop.push(&tail);
            if !text.is_empty() {
                let _ = self.events.send(Event::Text(text));
            }
            if stopped {
                reason = FinishReason::Stop;
            }
        }
        let rest = self.stop.finish();
        if !rest.is_empty() {
            let _ = self.events.send(Event::Text(rest));
        }
        let _ = self.events.send(Event::Done {
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: self.prompt_len,
                completion_tokens: self.generated(),
            },
        });
    }
}

fn seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    t ^ (NEXT.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Prompt tokens that may join one step: new conversations start together, yet a burst of long
/// prompts delays the conversations already generating by about one such pass.
const PREFILL_BUDGET: usize = 512;

fn run(model: &LanguageModel, limits: Limits, rx: &Receiver<GenerateRequest>, c: &Counters) {
    let mut active: Vec<Sequence> = Vec::new();
    loop {
        // Conversations whose prompt runs in this step.
        let mut joining: Vec<Sequence> = Vec::new();
        // Join: block while idle; otherwise take new prompts while room and budget allow
        // (always at least one, however long).
        let mut budget = PREFILL_BUDGET;
        while active.len() + joining.len() < limits.max_active {
            let next = if active.is_empty() && joining.is_empty() {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            c.queued.fetch_sub(1, Ordering::Relaxed);
            let len = next.prompt.len();
            if let Some(seq) = admit(model, limits, next, c) {
                joining.push(seq);
            }
            budget = budget.saturating_sub(len);
            if budget == 0 {
                break;
            }
        }
        // Abandoned conversations leave before the step.
        for list in [&mut active, &mut joining] {
            list.retain(|seq| {
                let gone = seq.events.is_closed();
                if gone {
                    c.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                !gone
            });
        }
        if active.is_empty() && joining.is_empty() {
            c.active.store(0, Ordering::Relaxed);
            continue;
        }
        // One pass: the joining prompts and the last token of every generating conversation.
        let started = active.len();
        active.append(&mut joining);
        let inputs: Vec<Vec<u32>> = active
            .iter()
            .enumerate()
            .map(|(i, seq)| match i < started {
                true => vec![*seq.tokens.last().expect("a started sequence has tokens")],
                false => seq.tokens.clone(),
            })
            .collect();
        let inputs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut sessions: Vec<&mut Session> = active.iter_mut().map(|s| &mut s.session).collect();
        match model.forward_batch(&mut sessions, &inputs) {
            Ok(logits) => {
                let mut row = 0;
                active.retain_mut(|seq| {
                    let keep = match logits.get(row) {
                        Ok(l) => accept(model, seq, &l, c),
                        Err(e) => {
                            let _ = seq.events.send(Event::Failed(e.to_string()));
                            false
                        }
                    };
                    row += 1;
                    keep
                });
            }
            Err(e) => {
                for seq in active.drain(..) {
                    let _ = seq.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        c.active.store(active.len(), Ordering::Relaxed);
    }
}

/// A request as a conversation that has not run yet; `None` when its client already left.
fn admit(
    model: &LanguageModel,
    limits: Limits,
    r: GenerateRequest,
    c: &Counters,
) -> Option<Sequence> {
    if r.events.is_closed() {
        c.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let room = model.max_positions - r.prompt.len();
    Some(Sequence {
        session: model.session(),
        sampler: Sampler::new(&r.params, seed()),
        detok: Detokenizer::new(&r.prompt),
        stop: StopText::new(r.params.stop.clone()),
        prompt_len: r.prompt.len(),
        max_new: r
            .params
            .max_tokens
            .unwrap_or(limits.default_max_tokens)
            .min(room),
        ignore_eos: r.ignore_eos,
        tokens: r.prompt,
        events: r.events,
    })
}

/// Picks the next token from `logits` and passes on its text; false when the answer ended.
fn accept(
    model: &LanguageModel,
    seq: &mut Sequence,
    logits: &candle_core::Tensor,
    c: &Counters,
) -> bool {
    let token = match seq.sampler.next(logits, &seq.tokens) {
        Ok(t) => t,
        Err(e) => {
            let _ = seq.events.send(Event::Failed(e.to_string()));
            return false;
        }
    };
    if !seq.ignore_eos && model.eos.contains(&token) {
        seq.finish(&model.tokenizer, FinishReason::Stop, true);
        return false;
    }
    seq.tokens.push(token);
    c.generated_tokens.fetch_add(1, Ordering::Relaxed);
    let delta = match seq.detok.push(&model.tokenizer, token) {
        Ok(d) => d,
        Err(e) => {
            let _ = seq.events.send(Event::Failed(e.to_string()));
            return false;
        }
    };
    let (text, stopped) = seq.stop.push(&delta);
    if !text.is_empty() && seq.events.send(Event::Text(text)).is_err() {
        c.cancelled.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if stopped {
        seq.finish(&model.tokenizer, FinishReason::Stop, false);
        return false;
    }
    if seq.generated() >= seq.max_new {
        seq.finish(&model.tokenizer, FinishReason::Length, true);
        return false;
    }
    true
}
