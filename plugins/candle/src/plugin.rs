//! The [`Plugin`] implementation: config, model lifecycle and request routing.
//!
//! ```text
//!  start ──▶ PluginConfig ──▶ device ──▶ (model configured?) load ──▶ Loaded{Embedder, Batcher}
//!  invoke(model.infer | embeddings) ──▶ prompt, tokenize here ──▶ Batcher (own thread)
//!                                   ──▶ normalize, Matryoshka-truncate ──▶ JSON
//!  invoke(rerank | classify)        ──▶ tokenize (query, text) pairs or inputs ──▶ Batcher
//!                                   ──▶ logits ──▶ sigmoid / softmax, sorted ──▶ JSON
//!  invoke(model.load)  ──▶ path confined to the model root ──▶ load on a blocking thread
//!                      ──▶ swap; the old model drains and stops
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use bkg_plugin_api::{
    CapabilityDescriptor, InvokeContext, Plugin, PluginError, StartContext, ValueStream,
    async_trait,
};
use candle_core::Device;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::batcher::Batcher;
use crate::config::{self, Kernels, ModelSource, PluginConfig};
use crate::engine::{Embedder, LoadOptions, device_name, select_device};
use crate::error::{Error, Result};
use crate::generate::{Event, GenerateRequest, LanguageModel, Scheduler, api};
use crate::metrics::Metrics;
use crate::pooling::l2_normalize;
use crate::schema::{self, Embedded};
use crate::scoring;
use crate::tokenize::Encoded;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// What both embedding capabilities ask for.
struct EmbedRequest {
    texts: Vec<String>,
    normalize: Option<bool>,
    truncate: Option<bool>,
    prompt_name: Option<String>,
    dimensions: Option<usize>,
}

/// A model ready to serve: the embedder (shared with its batching thread) and its queue.
struct Loaded {
    embedder: Arc<Embedder>,
    batcher: Batcher,
}

/// A causal language model ready to generate: its scheduler (which owns the model's thread).
struct Generating {
    name: String,
    scheduler: Scheduler,
}

struct State {
    config: PluginConfig,
    device: Device,
    /// An embedder, cross-encoder or classifier; or else
    current: Option<Arc<Loaded>>,
    /// a causal language model. At most one of the two is loaded.
    generator: Option<Arc<Generating>>,
}

/// The Candle embedding plugin. Construct with [`crate::new_plugin`] or [`CandlePlugin::default`].
pub struct CandlePlugin {
    metrics: Metrics,
    state: RwLock<State>,
    /// Serializes loads so two concurrent `model.load` calls cannot interleave their swaps.
    load_lock: tokio::sync::Mutex<()>,
}

impl Default for CandlePlugin {
    fn default() -> Self {
        Self {
            metrics: Metrics::default(),
            state: RwLock::new(State {
                config: PluginConfig::default(),
                device: Device::Cpu,
                current: None,
                generator: None,
            }),
            load_lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl CandlePlugin {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is plain data.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Result<Arc<Loaded>> {
        let s = self.read();
        match (&s.current, &s.generator) {
            (Some(loaded), _) => Ok(loaded.clone()),
            (None, Some(g)) => Err(Error::InvalidInput(format!(
                "the loaded model {} generates text: it serves {}, {} only",
                g.name,
                api::CHAT,
                api::COMPLETIONS
            ))),
            (None, None) => Err(Error::NoModel),
        }
    }

    fn generator(&self) -> Result<Arc<Generating>> {
        let s = self.read();
        match (&s.generator, &s.current) {
            (Some(g), _) => Ok(g.clone()),
            (None, Some(loaded)) => {
                let info = loaded.embedder.info();
                Err(Error::InvalidInput(format!(
                    "the loaded model {} ({}) serves {} only; chat and completions need a causal language model ({})",
                    info.name,
                    info.architecture,
                    info.capabilities.join(", "),
                    crate::generate::model::SUPPORTED
                )))
            }
            (None, None) => Err(Error::NoModel),
        }
    }

    /// Renders and tokenizes a generation request and queues it; its events follow.
    fn generate(
        &self,
        capability: &str,
        payload: Value,
    ) -> Result<(Arc<Generating>, UnboundedReceiver<Event>)> {
        let call = api::parse(capability, payload)?;
        let g = self.generator()?;
        let model = g.scheduler.model();
        let prompt = match &call.prompt {
            api::Prompt::Chat(messages) => {
                let template = model.template.as_ref().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "messages: the model {} has no chat template (tokenizer_config.json's chat_template); use completions",
                        g.name
                    ))
                })?;
                model.encode(&template.render(messages, true)?, false)?
            }
            api::Prompt::Text(text) => model.encode(text, true)?,
        };
        let (tx, rx) = unbounded_channel();
        g.scheduler.submit(GenerateRequest {
            prompt,
            params: call.params,
            ignore_eos: call.ignore_eos,
            events: tx,
        })?;
        Ok((g, rx))
    }

    /// Loads `source` off the async runtime and swaps it in. The previous model keeps serving
    /// until the new one is ready, and stays if loading fails.
    async fn load(&self, source: ModelSource) -> Result<Value> {
        let _guard = self.load_lock.lock().await;
        let (config, device) = {
            let s = self.read();
            (s.config.clone(), s.device.clone())
        };
        let opts = LoadOptions {
            dtype: config.dtype,
            device,
            pooling: config.pooling,
            normalize: config.normalize,
            cpu_kernels: config.kernels == Kernels::Auto,
        };
        let started = Instant::now();
        let name = source.display_name();
        let files = tokio::task::spawn_blocking(move || crate::source::materialize(&source))
            .await
            .map_err(|e| Error::Inference(format!("model loading thread failed: {e}")))??;
        let dir = files.dir;
        if files.gguf.is_some() || crate::generate::is_generator(&dir) {
            let (device, dtype) = (opts.device.clone(), opts.dtype.candle());
            let model = tokio::task::spawn_blocking(move || match &files.gguf {
                Some(gguf) => LanguageModel::load_gguf(gguf, &dir, &device),
                None => LanguageModel::load(&dir, &device, dtype),
            })
            .await
            .map_err(|e| Error::Inference(format!("model loading thread failed: {e}")))??;
            let (model_type, context) = (model.model_type.clone(), model.max_positions);
            let scheduler = Scheduler::start(Arc::new(model), config.generation.limits());
            let mut s = self.write();
            s.current = None;
            s.generator = Some(Arc::new(Generating {
                name: name.clone(),
                scheduler,
            }));
            return Ok(json!({
                "model": {"name": name, "architecture": model_type, "context_length": context,
                          "capabilities": [api::CHAT, api::COMPLETIONS]},
                "load_ms": started.elapsed().as_millis() as u64
            }));
        }
        let embedder = tokio::task::spawn_blocking(move || Embedder::load(&dir, name, &opts))
            .await
            .map_err(|e| Error::Inference(format!("model loading thread failed: {e}")))??;
        let embedder = Arc::new(embedder);
        let batcher = Batcher::spawn(
            Arc::clone(&embedder),
            config.batch_policy(),
            self.metrics.clone(),
        )?;
        let info = embedder.info().clone();
        let mut s = self.write();
        s.current = Some(Arc::new(Loaded { embedder, batcher }));
        s.generator = None;
        Ok(json!({"model": info, "load_ms": started.elapsed().as_millis() as u64}))
    }

    /// The loaded model, if it serves `capability`; a model of another kind is refused with
    /// what it does serve.
    fn serving(&self, capability: &str) -> Result<Arc<Loaded>> {
        let loaded = self.current()?;
        let info = loaded.embedder.info();
        if !loaded.embedder.serves(capability) {
            return Err(Error::InvalidInput(format!(
                "capability {capability}: the loaded model {} ({}) serves {} only",
                info.name,
                info.architecture,
                info.capabilities.join(", ")
            )));
        }
        Ok(loaded)
    }

    /// Prompts, tokenizes, queues, (optionally) normalizes and truncates to `dimensions`;
    /// shared by both embedding capabilities.
    async fn embed(&self, req: EmbedRequest, deadline: Instant) -> Result<(Arc<Loaded>, Embedded)> {
        let loaded = self.serving(schema::INFER)?;
        let dims = loaded.embedder.info().dimensions;
        if let Some(d) = req.dimensions
            && d > dims
        {
            return Err(Error::InvalidInput(format!(
                "dimensions: {d} is more than the model's {dims}"
            )));
        }
        let truncate = req.truncate.unwrap_or_else(|| self.read().config.truncate);
        let prefix = loaded
            .embedder
            .prompt(req.prompt_name.as_deref())?
            .map(str::to_owned);
        let texts = req.texts;
        let encoded: Vec<Encoded> = tokenized(&loaded, move |encoder| match prefix {
            None => encoder.encode_all(&texts, truncate),
            Some(prefix) => {
                let prompted: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
                encoder.encode_all(&prompted, truncate)
            }
        })
        .await?;
        let truncated: Vec<bool> = encoded.iter().map(|e| e.truncated).collect();
        let prompt_tokens = encoded.iter().map(Encoded::len).sum();
        let mut vectors = loaded.batcher.embed(encoded, Some(deadline)).await?;
        let normalized = req.normalize.unwrap_or(loaded.embedder.info().normalize);
        // Matryoshka: the first d dimensions carry a coarser embedding; renormalize after the cut.
        if let Some(d) = req.dimensions {
            vectors.iter_mut().for_each(|v| v.truncate(d));
        }
        if normalized {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok((
            loaded,
            Embedded {
                vectors,
                truncated,
                prompt_tokens,
                normalized,
            },
        ))
    }

    async fn invoke_inner(
        &self,
        capability: &str,
        payload: Value,
        ctx: &InvokeContext,
    ) -> Result<Box<RawValue>, PluginError> {
        let value: Value = match capability {
            schema::INFER => {
                let req = schema::parse_infer(payload)?;
                let (loaded, e) = self
                    .embed(
                        EmbedRequest {
                            texts: req.texts,
                            normalize: req.normalize,
                            truncate: req.truncate,
                            prompt_name: req.prompt_name,
                            dimensions: req.dimensions,
                        },
                        ctx.deadline,
                    )
                    .await?;
                return Ok(schema::infer_response(loaded.embedder.info(), e));
            }
            schema::EMBEDDINGS => {
                let req = schema::parse_openai(payload)?;
                let (loaded, e) = self
                    .embed(
                        EmbedRequest {
                            texts: req.texts,
                            normalize: None,
                            truncate: None,
                            prompt_name: req.prompt_name,
                            dimensions: req.dimensions,
                        },
                        ctx.deadline,
                    )
                    .await?;
                return Ok(schema::openai_response(
                    loaded.embedder.info(),
                    e,
                    req.encoding_format,
                ));
            }
            scoring::RERANK => {
                let max = self.read().config.max_rerank_texts;
                let req = scoring::parse_rerank(payload, max)?;
                let loaded = self.serving(scoring::RERANK)?;
                let truncate = req.truncate.unwrap_or_else(|| self.read().config.truncate);
                let (query, texts) = (req.query.clone(), req.texts.clone());
                let pairs = tokenized(&loaded, move |encoder| {
                    texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            encoder
                                .encode_pair(&query, t, truncate)
                                .map_err(|e| match e {
                                    Error::InvalidInput(m) => {
                                        Error::InvalidInput(format!("texts[{i}]: {m}"))
                                    }
                                    other => other,
                                })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await?;
                let logits = loaded.batcher.embed(pairs, Some(ctx.deadline)).await?;
                Ok(scoring::rerank_response(&req, &logits))
            }
            scoring::CLASSIFY => {
                let max = self.read().config.max_rerank_texts;
                let req = scoring::parse_classify(payload, max)?;
                let loaded = self.serving(scoring::CLASSIFY)?;
                let truncate = req.truncate.unwrap_or_else(|| self.read().config.truncate);
                let inputs = req.inputs.clone();
                let encoded = tokenized(&loaded, move |encoder| {
                    encoder.encode_all(&inputs, truncate)
                })
                .await
                .map_err(|e| match e {
                    Error::InvalidInput(m) => Error::InvalidInput(format!("inputs: {m}")),
                    other => other,
                })?;
                let logits = loaded.batcher.embed(encoded, Some(ctx.deadline)).await?;
                Ok(scoring::classify_response(
                    &req,
                    &loaded.embedder.info().labels,
                    &logits,
                ))
            }
            schema::LOAD => {
                let source = match schema::parse_load(payload)? {
                    ModelSource::Path { path, gguf_file } => {
                        let root = self.read().config.model_root();
                        let confined = tokio::task::spawn_blocking(move || {
                            config::confine(root.as_deref(), &path)
                        })
                        .await
                        .map_err(|e| Error::Inference(format!("path check failed: {e}")))?;
                        // parse_load has refused a gguf_file that walks out of the directory.
                        ModelSource::Path {
                            path: confined.map_err(|e| e.into_load_error(false))?,
                            gguf_file,
                        }
                    }
                    hub => hub,
                };
                tracing::info!(request_id = %ctx.request_id, model = %source.display_name(), "model.load");
                self.load(source)
                    .await
                    .map_err(|e| e.into_load_error(false))
            }
            api::CHAT | api::COMPLETIONS => {
                let (g, events) = self.generate(capability, payload)?;
                let answer = crate::generate::collect(events).await?;
                Ok(api::answer(
                    &g.name,
                    &answer.text,
                    answer.finish_reason,
                    &answer.usage,
                ))
            }
            schema::UNLOAD => {
                let (old, generator) = {
                    let mut s = self.write();
                    (s.current.take(), s.generator.take())
                };
                let name = old
                    .map(|l| l.embedder.info().name.clone())
                    .or(generator.map(|g| g.name.clone()));
                tracing::info!(request_id = %ctx.request_id, model = ?name, "model.unload");
                Ok(json!({"unloaded": name}))
            }
            other => Err(PluginError::UnknownCapability(other.to_owned())),
        }?;
        serde_json::value::to_raw_value(&value)
            .map_err(|e| PluginError::failed(format!("the answer cannot be encoded: {e}")))
    }
}

/// Tokenizes on the tokenization threads, off tokio's workers (as TEI's tokenization
/// workers): while one request's texts are tokenized there, the async workers go on reading
/// requests and writing answers, and concurrent requests tokenize on all cores at once.
/// rayon's pool does the scheduling; it is a pool of its own, apart from the global one the
/// forward pass runs on, sized to the cores this process may use.
async fn tokenized<T: Send + 'static>(
    loaded: &Arc<Loaded>,
    job: impl FnOnce(&crate::tokenize::Encoder) -> Result<T> + Send + 'static,
) -> Result<T> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tokenize-{i}"))
            .build()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no tokenization threads; tokenizing in place"),
            )
            .ok()
    });
    let embedder = Arc::clone(&loaded.embedder);
    let Some(pool) = pool else {
        return job(embedder.encoder());
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        // A panic would abort the process from a rayon thread: it drops `tx` instead, and the
        // request gets an error.
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| job(embedder.encoder())));
        if let Ok(answer) = answer {
            let _ = tx.send(answer);
        }
    });
    rx.await
        .map_err(|_| Error::Inference("tokenization stopped before answering".into()))?
}

#[async_trait]
impl Plugin for CandlePlugin {
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> Vec<CapabilityDescriptor> {
        let mut all = schema::descriptors();
        all.extend(api::descriptors());
        all
    }

    fn config_schema(&self) -> Value {
        config::schema()
    }

    async fn start(&self, ctx: StartContext) -> Result<(), PluginError> {
        let config = PluginConfig::from_value(&ctx.config)?;
        let device =
            select_device(config.device).map_err(|e| PluginError::Config(e.to_string()))?;
        tracing::info!(plugin = %ctx.plugin_id, device = %device_name(&device), dtype = config.dtype.as_str(),
            batching = config.batching, "starting candle plugin");
        let model = config.model.clone();
        {
            let mut s = self.write();
            s.config = config;
            s.device = device;
        }
        match model {
            Some(source) => self
                .load(source)
                .await
                .map(drop)
                .map_err(|e| e.into_load_error(true)),
            None => {
                tracing::info!(
                    "no model configured; embedding requests answer 503 until model.load"
                );
                Ok(())
            }
        }
    }

    async fn invoke(
        &self,
        capability: &str,
        payload: Value,
        ctx: InvokeContext,
    ) -> Result<Value, PluginError> {
        let answer = self.invoke_inner(capability, payload, &ctx).await?;
        serde_json::from_str(answer.get())
            .map_err(|e| PluginError::failed(format!("the answer cannot be read back: {e}")))
    }

    /// Embeddings are answered as JSON text written from typed structs (`schema`), never as
    /// a [`Value`] tree with a node per float.
    async fn invoke_raw(
        &self,
        capability: &str,
        payload: &RawValue,
        ctx: InvokeContext,
    ) -> Result<Box<RawValue>, PluginError> {
        let payload = bkg_plugin_api::parse_payload(payload)?;
        self.invoke_inner(capability, payload, &ctx).await
    }

    async fn invoke_stream(
        &self,
        capability: &str,
        payload: Value,
        _ctx: InvokeContext,
    ) -> Result<ValueStream, PluginError> {
        if ![api::CHAT, api::COMPLETIONS].contains(&capability) {
            return Err(PluginError::InvalidInput(format!(
                "capability {capability:?} does not stream"
            )));
        }
        let (g, events) = self.generate(capability, payload)?;
        // Dropping this stream (the client went away) drops `events`' receiver: the scheduler
        // sees it closed and frees the conversation's place at its next step.
        Ok(Box::pin(futures_util::stream::unfold(
            Some((events, g)),
            |state| async move {
                let (mut events, g) = state?;
                match events.recv().await? {
                    Event::Text(text) => Some((Ok(json!({"text": text})), Some((events, g)))),
                    Event::Done {
                        finish_reason,
                        usage,
                    } => Some((Ok(api::last_chunk(&g.name, finish_reason, &usage)), None)),
                    Event::Failed(message) => Some((Err(Error::Inference(message).into()), None)),
                }
            },
        )))
    }

    async fn stop(&self) -> Result<(), PluginError> {
        let mut s = self.write();
        s.current = None;
        s.generator = None;
        Ok(())
    }

    fn details(&self) -> Map<String, Value> {
        let s = self.read();
        let mut m = Map::new();
        m.insert("device".into(), json!(device_name(&s.device)));
        m.insert("dtype".into(), json!(s.config.dtype.as_str()));
        m.insert("cuda_support".into(), json!(cfg!(feature = "cuda")));
        m.insert(
            "model".into(),
            match (&s.current, &s.generator) {
                (Some(l), _) => json!(l.embedder.info().clone()),
                (None, Some(g)) => json!({"name": g.name, "capabilities": [api::CHAT, api::COMPLETIONS],
                    "architecture": g.scheduler.model().model_type, "context_length": g.scheduler.model().max_positions}),
                (None, None) => Value::Null,
            },
        );
        let p = s.config.batch_policy();
        m.insert(
            "batching".into(),
            json!({
                "enabled": s.config.batching,
                "max_batch_size": p.max_batch_size,
                "max_batch_tokens": p.max_batch_tokens,
                "max_wait_ms": p.max_wait.as_millis() as u64,
                "queue_capacity": p.queue_capacity,
            }),
        );
        m
    }

    fn telemetry(&self) -> Map<String, Value> {
        let s = self.read();
        let mut m = Map::new();
        m.insert("device".into(), json!(device_name(&s.device)));
        m.insert(
            "model_loaded".into(),
            json!(s.current.is_some() || s.generator.is_some()),
        );
        m.insert(
            "model".into(),
            json!(
                s.current
                    .as_ref()
                    .map(|l| l.embedder.info().name.clone())
                    .or(s.generator.as_ref().map(|g| g.name.clone()))
            ),
        );
        if let Some(g) = &s.generator {
            let c = &g.scheduler.counters;
            use std::sync::atomic::Ordering::Relaxed;
            m.insert("generating".into(), json!(c.active.load(Relaxed)));
            m.insert("generation_queued".into(), json!(c.queued.load(Relaxed)));
            m.insert(
                "generated_tokens".into(),
                json!(c.generated_tokens.load(Relaxed)),
            );
        }
        m.insert("queue_depth".into(), json!(self.metrics.queue_depth.get()));
        m.insert(
            "in_flight".into(),
            json!(s.current.as_ref().map_or(0, |l| l.batcher.in_flight())),
        );
        m
    }

    fn register_metrics(
        &self,
        registry: &mut bkg_plugin_api::prometheus_client::registry::Registry,
    ) {
        self.metrics.register(registry);
    }
}
