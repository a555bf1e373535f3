//! Llama-style decoders (Llama 2/3, SmolLM, TinyLlama, Qwen2/2.5, Qwen3) that run many
//! conversations in one forward pass, each at its own position.
//!
//! Why not candle-transformers' `llama`/`qwen2`/`qwen3` here: their `forward` takes one
//! position offset for the whole batch and one cache, so conversations at different lengths
//! cannot share a step. Run one after another, 32 conversations read all the weights 32 times
//! per step, and a decode step is bound by that read on a CPU (by kernel launches on a GPU).
//! Here every dense layer runs once per step over all rows: `scripts/candle/bench-generate.sh`
//! measured 293 tokens/s at 32 streams against 46.5 at one (6.3×, f32, 2 cores; PyTorch's
//! static batch of 32: 148; docs/BENCHMARKS.md).
//!
//! The batch is *packed*: the rows of every conversation in the step are stacked (a new
//! prompt's tokens and the one new token of each generating conversation alike), dense layers
//! and norms run once over all rows, RoPE takes each row's own position, and each
//! conversation attends over its own KV cache. So a prompt can join a step in which others
//! decode, and nothing is padded. On CPUs with AVX-512 attention is two kernel calls per
//! layer for the whole step: fresh prompts through [`kernels::attention`] on their packed
//! rows, decoding conversations through [`kernels::cached_attention`] over caches kept in its
//! layout ([`kernels::KvRows`]). Elsewhere (GPUs) each conversation runs candle's ops over
//! candle-nn's `KvCache`, one conversation after another.
//!
//! The dense layers are [`crate::layers::Linear`]: the packed AVX-512 kernels on CPUs that
//! have them (f32, or bf16 weights with f32 accumulation), candle's matmul elsewhere. Q, K
//! and V are fused into one layer, as are the MLP's gate and up projections.

use candle_core::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Module, RmsNorm};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::kernels::{self, AttentionTerms};
use crate::layers::{HiddenAct, Linear, Weights, with_cpu_f32};

/// The `model_type`s this decoder generates with.
pub const MODEL_TYPES: &[&str] = &["llama", "qwen2", "qwen3"];

/// The `model_type`s it embeds with ([`crate::models::causal`]): Mistral too, whose sliding
/// window the attention mask applies.
pub const EMBEDDING_MODEL_TYPES: &[&str] = &["llama", "qwen2", "qwen3", "mistral"];

/// Llama 3's RoPE frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, Deserialize)]
struct Llama3Scaling {
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max_position_embeddings: usize,
}

/// What the decoder reads from `config.json`.
#[derive(Debug, Clone)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    llama3: Option<Llama3Scaling>,
    /// Q, K and V projections have biases (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// The MLP's projections have biases (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm of each head's query and key before RoPE (Qwen3).
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
    pub max_positions: usize,
    /// Mistral's sliding window: query position p sees keys p − window < t ≤ p.
    pub window: Option<usize>,
}

impl Config {
    /// Reads a Hugging Face `config.json` of a `model_type` it generates with; the error
    /// names the field.
    pub fn from_json(c: &Value) -> std::result::Result<Self, String> {
        Self::read(c, MODEL_TYPES)
    }

    /// Reads the `config.json` of a decoder embedder (`EMBEDDING_MODEL_TYPES`).
    pub fn for_embeddings(c: &Value) -> std::result::Result<Self, String> {
        Self::read(c, EMBEDDING_MODEL_TYPES)
    }

    fn read(c: &Value, model_types: &[&str]) -> std::result::Result<Self, String> {
        let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !model_types.contains(&model_type) {
            return Err(format!(
                "model_type {model_type:?} is not one of {model_types:?}"
            ));
        }
        let num = |k: &str| -> std::result::Result<usize, String> {
            c.get(k)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| format!("{k}: missing or not a number"))
        };
        let float = |k: &str| c.get(k).and_then(Value::as_f64);
        let flag = |k: &str| c.get(k).and_then(Value::as_bool);
        let hidden_size = num("hidden_size")?;
        let heads = num("num_attention_heads")?;
        let kv_heads = num("num_key_value_heads").unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(format!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            ));
        }
        let head_dim = num("head_dim").unwrap_or(hidden_size / heads);
        if head_dim % 2 != 0 {
            return Err(format!("head_dim: {head_dim} is odd; RoPE needs pairs"));
        }
        if let Some(act) = c.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(format!("hidden_act: {act:?} (only silu is supported)"));
        }
        // transformers 5 writes `rope_parameters`, older versions `rope_theta`/`rope_scaling`.
        let rope = c
            .get("rope_parameters")
            .or_else(|| c.get("rope_scaling"))
            .filter(|v| v.is_object());
        let rope_theta = float("rope_theta")
            .or_else(|| {
                rope.and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let llama3 = match rope_type {
            "default" => None,
            "llama3" => Some(
                serde_json::from_value(rope.cloned().unwrap_or_default())
                    .map_err(|e| format!("rope_scaling: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "rope_scaling: rope_type {other:?} is not supported (default, llama3)"
                ));
            }
        };
        let qwen2 = model_type == "qwen2";
        let mut max_positions = num("max_position_embeddings")?;
        // A sliding window shorter than the context: answer within the window only, where
        // full attention and windowed attention agree.
        if flag("use_sliding_window") == Some(true)
            && let Ok(window) = num("sliding_window")
        {
            max_positions = max_positions.min(window);
        }
        Ok(Self {
            vocab_size: num("vocab_size")?,
            hidden_size,
            intermediate_size: num("intermediate_size")?,
            layers: num("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            rms_norm_eps: float("rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            llama3,
            qkv_bias: qwen2 || flag("attention_bias").unwrap_or(false),
            mlp_bias: flag("mlp_bias").unwrap_or(false),
            qk_norm: model_type == "qwen3",
            tie_word_embeddings: flag("tie_word_embeddings").unwrap_or(false),
            max_positions,
            // Mistral applies `sliding_window` whenever it is set (a number).
            window: (model_type == "mistral")
                .then(|| num("sliding_window").ok())
                .flatten()
                .filter(|w| *w > 0),
        })
    }

    /// Query heads, K/V heads and the head size.
    fn attention_shape(&self) -> (usize, usize, usize) {
        (self.heads, self.kv_heads, self.head_dim)
    }

    /// The inverse frequencies of RoPE, with Llama 3's scaling when configured.
    fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        (0..dim)
            .step_by(2)
            .map(|i| {
                let f = 1.0 / self.rope_theta.powf(i as f64 / dim as f64);
                let Some(s) = self.llama3 else {
                    return f as f32;
                };
                let old = s.original_max_position_embeddings as f64;
                let low_wavelen = old / s.low_freq_factor;
                let high_wavelen = old / s.high_freq_factor;
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let scaled = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                scaled as f32
            })
            .collect()
    }
}

struct Layer {
    input_norm: RmsNorm,
    /// Q, K and V in one: `[rows, (heads + 2·kv_heads)·head_dim]`.
    qkv: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    o: Linear,
    post_norm: RmsNorm,
    /// Gate and up in one: `[rows, 2·intermediate]`.
    gate_up: Linear,
    down: Linear,
}

/// One conversation's KV cache, a cache per layer.
#[derive(Clone)]
pub struct Cache {
    layers: Vec<LayerCache>,
}

/// One layer's keys and values: in the attention kernels' layout where they run (CPUs with
/// AVX-512), in candle-nn's `KvCache` elsewhere.
#[derive(Clone)]
enum LayerCache {
    Kernel(kernels::KvRows),
    Candle(KvCache),
}

impl LayerCache {
    fn len(&self) -> usize {
        match self {
            Self::Kernel(rows) => rows.len(),
            Self::Candle(cache) => cache.current_seq_len(),
        }
    }
}

impl Cache {
    /// Positions the cache holds.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Decoder {
    cfg: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// None when loaded to embed ([`Decoder::load_without_head`]).
    lm_head: Option<Linear>,
    /// `[max_positions, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    device: Device,
    dtype: DType,
    /// Prompts run [`kernels::attention`] (weights loaded for the CPU kernels).
    cpu_kernels: bool,
}

/// KV cache room allocated at a time (a conversation grows it in steps of this many).
const KV_CHUNK: usize = 128;

impl Decoder {
    pub fn load(cfg: Config, mut w: Weights) -> Result<Self> {
        Self::load_inner(cfg, &mut w, true)
    }

    /// The network without its output layer, for [`Decoder::hidden_states`] (embedding
    /// checkpoints such as Qwen3-Embedding carry none, and a tied one would be a second copy
    /// of the embedding table).
    pub fn load_without_head(cfg: Config, w: &mut Weights) -> Result<Self> {
        Self::load_inner(cfg, w, false)
    }

    fn load_inner(cfg: Config, w: &mut Weights, with_head: bool) -> Result<Self> {
        w.detect_prefix("embed_tokens.weight", &["model.", ""]);
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.heads * d, cfg.kv_heads * d);
        let device = w.device().clone();
        let dtype = w.dtype();
        let zeros = |n: usize| Tensor::zeros(n, dtype, &device);
        let part = |name: &str, out: usize, input: usize, bias: bool| -> Result<(Tensor, Tensor)> {
            let weight = w.get(&format!("{name}.weight"), &[out, input])?;
            let bias = match bias {
                true => w.get(&format!("{name}.bias"), &[out])?,
                false => zeros(out)?,
            };
            Ok((weight, bias))
        };
        let norm = |name: &str, size: usize| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                w.get(&format!("{name}.weight"), &[size])?,
                cfg.rms_norm_eps,
            ))
        };
        let packing = w.packing();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("layers.{i}");
            let attn = format!("{p}.self_attn");
            let mlp = format!("{p}.mlp");
            let qkv = [("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)]
                .iter()
                .map(|(n, out)| part(&format!("{attn}.{n}"), *out, h, cfg.qkv_bias))
                .collect::<Result<Vec<_>>>()?;
            let gate_up = ["gate_proj", "up_proj"]
                .iter()
                .map(|n| {
                    part(
                        &format!("{mlp}.{n}"),
                        cfg.intermediate_size,
                        h,
                        cfg.mlp_bias,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            layers.push(Layer {
                input_norm: norm(&format!("{p}.input_layernorm"), h)?,
                qkv: Linear::fuse(&qkv, packing)?,
                q_norm: cfg
                    .qk_norm
                    .then(|| norm(&format!("{attn}.q_norm"), d))
                    .transpose()?,
                k_norm: cfg
                    .qk_norm
                    .then(|| norm(&format!("{attn}.k_norm"), d))
                    .transpose()?,
                o: Linear::fuse(
                    &[part(&format!("{attn}.o_proj"), h, q_out, false)?],
                    packing,
                )?,
                post_norm: norm(&format!("{p}.post_attention_layernorm"), h)?,
                gate_up: Linear::fuse(&gate_up, packing)?,
                down: Linear::fuse(
                    &[part(
                        &format!("{mlp}.down_proj"),
                        h,
                        cfg.intermediate_size,
                        cfg.mlp_bias,
                    )?],
                    packing,
                )?,
            });
        }
        let embed = w.get("embed_tokens.weight", &[cfg.vocab_size, h])?;
        // Small models tie the output layer to the embedding (and may not say so).
        let lm_head = match with_head {
            false => None,
            true => {
                let head_weight =
                    match cfg.tie_word_embeddings || !w.contains_exact("lm_head.weight") {
                        true => embed.clone(),
                        false => w.get_exact("lm_head.weight", &[cfg.vocab_size, h])?,
                    };
                Some(Linear::fuse(
                    &[(head_weight, zeros(cfg.vocab_size)?)],
                    packing,
                )?)
            }
        };
        let inv_freq = cfg.inv_freq();
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), &device)?;
        let t = Tensor::arange(0u32, cfg.max_positions as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Self {
            norm: norm("norm", h)?,
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            embed,
            layers,
            lm_head,
            cfg,
            device,
            dtype,
            cpu_kernels: w.cpu_kernels(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// An empty cache for a new conversation.
    pub fn cache(&self) -> Cache {
        Cache {
            layers: (0..self.cfg.layers)
                .map(|_| match self.cpu_kernels {
                    true => LayerCache::Kernel(kernels::KvRows::new(
                        self.cfg.kv_heads,
                        self.cfg.head_dim,
                    )),
                    false => LayerCache::Candle(KvCache::new(2, KV_CHUNK)),
                })
                .collect(),
        }
    }

    /// Runs each conversation's `tokens` after what its cache holds (a whole prompt, or the one
    /// token picked last), all in one pass; returns the next token's logits of each,
    /// `[conversations, vocab]` in f32.
    pub fn forward(&self, caches: &mut [&mut Cache], tokens: &[&[u32]]) -> Result<Tensor> {
        let Some(lm_head) = &self.lm_head else {
            return Err(Error::Inference(
                "this decoder was loaded without its output layer".into(),
            ));
        };
        let (xs, spans) = self.layers_forward(caches, tokens)?;
        // Only the last row of each conversation picks a token.
        let last: Vec<u32> = spans.iter().map(|(s, n)| (s + n - 1) as u32).collect();
        let last = Tensor::from_vec(last, spans.len(), &self.device)?;
        let xs = self.norm.forward(&xs.index_select(&last, 0)?)?;
        Ok(lm_head.forward(&xs)?.to_dtype(DType::F32)?)
    }

    /// The final hidden state (after the last norm) of every token of every sequence, packed:
    /// `[total tokens, hidden]`, each sequence run from position 0 with causal attention.
    pub fn hidden_states(&self, tokens: &[&[u32]]) -> Result<Tensor> {
        let mut caches: Vec<Cache> = tokens.iter().map(|_| self.cache()).collect();
        let mut caches: Vec<&mut Cache> = caches.iter_mut().collect();
        let (xs, _) = self.layers_forward(&mut caches, tokens)?;
        Ok(self.norm.forward(&xs)?)
    }

    /// Every layer over the packed rows; the rows and each conversation's (start, len).
    fn layers_forward(
        &self,
        caches: &mut [&mut Cache],
        tokens: &[&[u32]],
    ) -> Result<(Tensor, Vec<(usize, usize)>)> {
        if caches.len() != tokens.len() || tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::InvalidInput(
                "every conversation in a step needs at least one token".into(),
            ));
        }
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut spans = Vec::with_capacity(tokens.len());
        for (cache, t) in caches.iter().zip(tokens) {
            let start = cache.len();
            if start + t.len() > self.cfg.max_positions {
                return Err(Error::InvalidInput(format!(
                    "{} tokens exceed the model's context of {} positions",
                    start + t.len(),
                    self.cfg.max_positions
                )));
            }
            spans.push((ids.len(), t.len()));
            ids.extend_from_slice(t);
            positions.extend((start..start + t.len()).map(|p| p as u32));
        }
        let rows = ids.len();
        let ids = Tensor::from_vec(ids, rows, &self.device)?;
        let positions = Tensor::from_vec(positions, rows, &self.device)?;
        let half = self.cfg.head_dim / 2;
        let cos = self
            .cos
            .index_select(&positions, 0)?
            .reshape((rows, 1, half))?;
        let sin = self
            .sin
            .index_select(&positions, 0)?
            .reshape((rows, 1, half))?;
        let mut xs = self.embed.index_select(&ids, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_norm.forward(&xs)?;
            let attn = self.attention(layer, l, &normed, (&cos, &sin), caches, &spans)?;
            xs = (xs + layer.o.forward(&attn)?)?;
            let act = layer.gate_up.forward_gated(
                &layer.post_norm.forward(&xs)?,
                HiddenAct::Silu,
                self.cfg.intermediate_size,
                true,
            )?;
            xs = (xs + layer.down.forward(&act)?)?;
        }
        Ok((xs, spans))
    }

    /// Self-attention of every conversation over its own cache; `xs`: the normed rows.
    fn attention(
        &self,
        layer: &Layer,
        l: usize,
        xs: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        caches: &mut [&mut Cache],
        spans: &[(usize, usize)],
    ) -> Result<Tensor> {
        let (heads, kv_heads, d) = self.cfg.attention_shape();
        let rows = xs.dim(0)?;
        let groups = heads / kv_heads;
        let qkv = layer.qkv.forward(xs)?;
        let split = |from: usize, n: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, from * d, n * d)?
                .contiguous()?
                .reshape((rows, n, 1, d))
        };
        let (mut q, mut k) = (split(0, heads)?, split(heads, kv_heads)?);
        let v = split(heads + kv_heads, kv_heads)?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        // Each row is a batch of one position: RoPE at that row's own position.
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        if self.cpu_kernels {
            return self.kernel_attention(l, (&q, &k, &v), caches, spans);
        }
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = Vec::with_capacity(spans.len());
        for (i, &(start, n)) in spans.iter().enumerate() {
            let LayerCache::Candle(cache) = &mut caches[i].layers[l] else {
                return Err(Error::Inference(
                    "a kernel cache reached candle's attention".into(),
                ));
            };
            // [n, heads, 1, d] → [kv_heads, groups·n, d]: the query rows sharing a KV head.
            let q = q
                .narrow(0, start, n)?
                .reshape((n, kv_heads, groups, d))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((kv_heads, groups * n, d))?;
            let (keys, values) = cache.append(
                &as_cache(&k, start, n, kv_heads, d)?,
                &as_cache(&v, start, n, kv_heads, d)?,
            )?;
            let (keys, values) = (keys.squeeze(0)?, values.squeeze(0)?);
            let total = keys.dim(1)?;
            let mut scores = (q.matmul(&keys.t()?)? * scale)?;
            let window = self.cfg.window.filter(|w| *w < total);
            if n > 1 || window.is_some() {
                // Causal: query row j (at position p = total - n + j) sees keys up to it, and
                // within a sliding window only those after p − window.
                let mask: Vec<f32> = (0..n)
                    .flat_map(|j| {
                        let p = total - n + j;
                        (0..total).map(move |t| {
                            if t > p || window.is_some_and(|w| t + w <= p) {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                let mask =
                    Tensor::from_vec(mask, (n, total), &self.device)?.to_dtype(self.dtype)?;
                scores = scores
                    .reshape((kv_heads, groups, n, total))?
                    .broadcast_add(&mask)?
                    .reshape((kv_heads, groups * n, total))?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&values)?; // [kv_heads, groups·n, d]
            out.push(
                ctx.reshape((kv_heads, groups, n, d))?
                    .permute((2, 0, 1, 3))?
                    .reshape((n, heads * d))?,
            );
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// Attention on the CPU kernels: conversations starting from an empty cache (whole
    /// prompts, every embedding) run [`kernels::attention`] together over their packed rows;
    /// the others (decoding steps) run [`kernels::cached_attention`] over their caches, all in
    /// one call. `q`: `[rows, heads, 1, d]`, `k`, `v`: `[rows, kv_heads, 1, d]`, after RoPE.
    /// On an error the caches hold this layer's rows and not the next layers' (as candle's
    /// path leaves them): the scheduler ends every conversation of a step that failed.
    fn kernel_attention(
        &self,
        l: usize,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        caches: &mut [&mut Cache],
        spans: &[(usize, usize)],
    ) -> Result<Tensor> {
        let (heads, kv_heads, d) = self.cfg.attention_shape();
        let (rows, hd, kvd) = (q.dim(0)?, heads * d, kv_heads * d);
        let fresh: Vec<bool> = caches.iter().map(|c| c.layers[l].len() == 0).collect();
        let prompts = match fresh.iter().any(|&f| f) {
            true => Some(self.prompt_attention((q, k, v), &fresh, spans)?),
            false => None,
        };
        let mut kv: Vec<&mut kernels::KvRows> = caches
            .iter_mut()
            .map(|c| match &mut c.layers[l] {
                LayerCache::Kernel(rows) => Ok(rows),
                LayerCache::Candle(_) => Err(Error::Inference(
                    "a candle cache reached the attention kernels".into(),
                )),
            })
            .collect::<Result<_>>()?;
        with_cpu_f32(k, |k| {
            with_cpu_f32(v, |v| {
                for (rows, &(start, n)) in kv.iter_mut().zip(spans) {
                    let (from, to) = (start * kvd, (start + n) * kvd);
                    rows.append(&k[from..to], &v[from..to]);
                }
            })
        })??;
        if fresh.iter().all(|&f| f)
            && let Some(ctx) = prompts
        {
            // Only prompts: the kernel's rows are the answer already, in order.
            return Ok(ctx);
        }
        let decoding: Vec<kernels::CachedRows<'_>> = kv
            .iter()
            .zip(spans)
            .zip(&fresh)
            .filter(|(_, f)| !**f)
            .map(|((rows, &(start, n)), _)| kernels::CachedRows {
                start,
                n,
                cache: rows,
            })
            .collect();
        let mut out = vec![0f32; rows * hd];
        let done = with_cpu_f32(q, |q| {
            kernels::cached_attention(q, &decoding, heads, self.cfg.window, &mut out)
        })?;
        if !done {
            return Err(Error::Inference(
                "the cached attention kernel declined these shapes".into(),
            ));
        }
        if let Some(ctx) = &prompts {
            // The prompts' rows, in the order `prompt_attention` packed them.
            with_cpu_f32(ctx, |ctx| {
                let mut row = 0;
                for (&(start, n), _) in spans.iter().zip(&fresh).filter(|(_, f)| **f) {
                    out[start * hd..(start + n) * hd]
                        .copy_from_slice(&ctx[row * hd..(row + n) * hd]);
                    row += n;
                }
            })?;
        }
        Ok(Tensor::from_vec(out, (rows, hd), &self.device)?)
    }

    /// The context rows of the conversations marked `fresh` (their caches empty: whole
    /// prompts, and every embedding), in order: the CPU kernel over their packed rows, causal
    /// within each conversation, grouped-query heads read in place. `q`: `[rows, heads, 1, d]`,
    /// `k`, `v`: `[rows, kv_heads, 1, d]`.
    fn prompt_attention(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        fresh: &[bool],
        spans: &[(usize, usize)],
    ) -> Result<Tensor> {
        let (heads, kv_heads, d) = self.cfg.attention_shape();
        let rows = q.dim(0)?;
        let mut qkv = Tensor::cat(
            &[
                q.reshape((rows, heads * d))?,
                k.reshape((rows, kv_heads * d))?,
                v.reshape((rows, kv_heads * d))?,
            ],
            1,
        )?;
        let mut offsets = vec![0];
        let mut picked = Vec::new();
        for (&(start, n), _) in spans.iter().zip(fresh).filter(|(_, f)| **f) {
            offsets.push(offsets[offsets.len() - 1] + n);
            picked.extend((start..start + n).map(|r| r as u32));
        }
        if picked.len() < rows {
            let picked = Tensor::from_vec(picked, offsets[offsets.len() - 1], &self.device)?;
            qkv = qkv.index_select(&picked, 0)?;
        }
        let terms = AttentionTerms {
            causal: true,
            window: self.cfg.window,
            ..AttentionTerms::default()
        };
        let ctx = with_cpu_f32(&qkv, |data| {
            kernels::attention(data, &offsets, heads, kv_heads, d, terms)
        })?
        .ok_or_else(|| Error::Inference("the attention kernel declined these shapes".into()))?;
        let total = offsets[offsets.len() - 1];
        Ok(Tensor::from_vec(ctx, (total, heads * d), &self.device)?)
    }

    /// Softmax and the rest run in this dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Rows `start..start + n` of `t` (`[rows, kv_heads, 1, d]`) in the cache's layout,
/// `[1, kv_heads, n, d]`.
fn as_cache(
    t: &Tensor,
    start: usize,
    n: usize,
    kv_heads: usize,
    d: usize,
) -> candle_core::Result<Tensor> {
    t.narrow(0, start, n)?
        .reshape((n, kv_heads, d))?
        .transpose(0, 1)?
        .unsqueeze(0)?
        .contiguous()
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("cfg", &self.cfg).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Llama 3.1/3.2's scaled RoPE frequencies, as transformers 5.25 computes them
    /// (`ROPE_INIT_FUNCTIONS["llama3"]` for this config).
    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        let c = Config::from_json(&json!({
            "model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
            "head_dim": 16, "max_position_embeddings": 131072,
            "rope_parameters": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                "rope_theta": 500000.0}
        }))
        .unwrap();
        let expected = [
            1.0,
            0.193_922_76,
            0.037_606_03,
            0.007_292_665,
            0.000_429_556_7,
            8.570_256e-6,
            1.661_967_4e-6,
            3.222_933e-7,
        ];
        for (got, want) in c.inv_freq().iter().zip(expected) {
            assert!((got - want).abs() <= want * 1e-5, "{got} vs {want}");
        }
    }

    /// The kernels' caches and candle's (GPUs, CPUs without AVX-512) give the same logits step
    /// by step: prompts, decoding steps, a conversation joining while another decodes, and a
    /// continued prompt of several rows over a non-empty cache.
    #[test]
    fn kernel_and_candle_caches_give_the_same_logits() {
        if !kernels::support().avx512 {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED generate::decoder::tests::kernel_and_candle_caches_give_the_same_logits: \
                 needs AVX-512F, which this CPU lacks; nothing checked"
            );
            return;
        }
        let steps: [&[&[u32]]; 4] = [
            &[&[1, 2, 3, 4, 5, 6, 7, 8, 9]],
            &[&[5], &[3, 4, 5, 6]],
            &[&[7], &[8]],
            &[&[2, 3, 11], &[9]],
        ];
        for name in ["llama-chat", "qwen2-chat", "qwen3-chat"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/tiny")
                .join(name);
            let config: Value =
                serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
            let load = |kernels| {
                let cfg = Config::from_json(&config).unwrap();
                let w = Weights::load(
                    &dir.join("model.safetensors"),
                    DType::F32,
                    &Device::Cpu,
                    kernels,
                )
                .unwrap();
                Decoder::load(cfg, w).unwrap()
            };
            let logits = |model: &Decoder| {
                let mut caches = [model.cache(), model.cache()];
                steps
                    .iter()
                    .map(|tokens| {
                        let mut live: Vec<&mut Cache> =
                            caches.iter_mut().take(tokens.len()).collect();
                        let out = model.forward(&mut live, tokens).unwrap();
                        out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    })
                    .collect::<Vec<_>>()
            };
            let (fast, portable) = (load(true), load(false));
            assert!(fast.cpu_kernels && !portable.cpu_kernels);
            for (step, (a, b)) in logits(&fast).iter().zip(logits(&portable)).enumerate() {
                let diff = crate::testutil::max_abs_diff(a, &b);
                assert!(diff < 1e-4, "{name}, step {step}: logits differ by {diff}");
            }
        }
    }

    #[test]
    fn configs_it_cannot_run_are_refused_naming_the_field() {
        let base = json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
            "max_position_embeddings": 64});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            Config::from_json(&c).unwrap_err()
        };
        assert!(with("hidden_act", json!("gelu")).starts_with("hidden_act"));
        assert!(with("num_key_value_heads", json!(3)).contains("num_key_value_heads"));
        assert!(
            with("rope_scaling", json!({"rope_type": "yarn", "factor": 4.0}))
                .starts_with("rope_scaling")
        );
        assert!(with("model_type", json!("gpt2")).contains("gpt2"));
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove("vocab_size");
        assert!(Config::from_json(&c).unwrap_err().starts_with("vocab_size"));
    }
}
