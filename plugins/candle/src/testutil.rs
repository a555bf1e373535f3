//! A tiny random-weight BERT written to a temp dir, in the exact layout of a real
//! sentence-transformers checkpoint (including a tokenizer.json that bakes in fixed padding,
//! like all-MiniLM-L6-v2's does), so loading, tokenization and pooling are tested for real.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

pub const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "is", "big", "small", "red",
    "blue", "run", "fast", ".", ",", "##s", "and",
];
pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;
pub const INTERMEDIATE: usize = 64;
pub const POSITIONS: usize = 64;
/// What the tokenizer.json pads to and truncates at (must be ignored by the plugin).
pub const BAKED_PAD: usize = 16;

/// What optional sentence-transformers files to write.
#[derive(Clone, Debug)]
pub struct Tiny {
    pub max_seq_length: Option<usize>,
    pub pooling: Option<&'static str>,
    pub normalize: bool,
    pub seed: u64,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            max_seq_length: Some(32),
            pooling: Some("mean"),
            normalize: true,
            seed: 7,
        }
    }
}

/// Deterministic pseudo-random numbers in [-scale, scale] (xorshift), so test failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next(scale)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

pub fn vocab_size() -> usize {
    5 + WORDS.len()
}

pub fn write_config(dir: &Path) {
    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

pub fn tokenizer_json() -> Value {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let mut vocab = serde_json::Map::new();
    for (i, t) in specials.iter().chain(WORDS).enumerate() {
        vocab.insert((*t).to_owned(), json!(i));
    }
    let added: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": BAKED_PAD, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": BAKED_PAD}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

pub fn weights(seed: u64, prefix: &str) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut w = HashMap::new();
    let mut put = |name: String, t: Tensor| {
        w.insert(format!("{prefix}{name}"), t);
    };
    let h = HIDDEN;
    put(
        "embeddings.word_embeddings.weight".into(),
        rng.tensor(&[vocab_size(), h], 1.0),
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        rng.tensor(&[POSITIONS, h], 0.5),
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        rng.tensor(&[2, h], 0.1),
    );
    let ln = |rng: &mut Rng| {
        (
            rng.tensor(&[h], 0.1).affine(1.0, 1.0).unwrap(),
            rng.tensor(&[h], 0.1),
        )
    };
    let (g, b) = ln(&mut rng);
    put("embeddings.LayerNorm.weight".into(), g);
    put("embeddings.LayerNorm.bias".into(), b);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", INTERMEDIATE, h),
            ("output.dense", h, INTERMEDIATE),
        ] {
            put(format!("{p}.{name}.weight"), rng.tensor(&[out, inp], 0.3));
            put(format!("{p}.{name}.bias"), rng.tensor(&[out], 0.1));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            let (g, b) = ln(&mut rng);
            put(format!("{p}.{name}.weight"), g);
            put(format!("{p}.{name}.bias"), b);
        }
    }
    put("pooler.dense.weight".into(), rng.tensor(&[h, h], 0.1));
    w
}

/// Writes a complete tiny model into `dir`.
pub fn write_tiny(dir: &Path, opts: &Tiny) {
    write_config(dir);
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    candle_core::safetensors::save(&weights(opts.seed, ""), dir.join("model.safetensors")).unwrap();
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
    ];
    if let Some(mode) = opts.pooling {
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        let cfg = json!({
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": mode == "max",
            "pooling_mode_mean_sqrt_len_tokens": false
        });
        std::fs::write(dir.join("1_Pooling/config.json"), cfg.to_string()).unwrap();
        modules.push(json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}));
    }
    if opts.normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    std::fs::write(dir.join("modules.json"), Value::Array(modules).to_string()).unwrap();
    if let Some(n) = opts.max_seq_length {
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            json!({"max_seq_length": n, "do_lower_case": false}).to_string(),
        )
        .unwrap();
    }
}

/// A temp dir holding a tiny model.
pub fn tiny(opts: &Tiny) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), opts);
    dir
}

/// A sentence of `n` known words (each one token).
pub fn words(n: usize) -> String {
    (0..n).map(|i| WORDS[i % 16]).collect::<Vec<_>>().join(" ")
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
