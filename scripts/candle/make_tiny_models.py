#!/usr/bin/env python3
"""Makes tiny random-weight models, offline, and their reference outputs for the candle plugin.

One directory per model under plugins/candle/testdata/tiny/<name>/, in Hugging Face layout
(config.json, tokenizer.json, model.safetensors in float32, sentence-transformers files where
the model is an embedder) plus reference.json with what PyPI `transformers` computes:

  - embedders: the pooled (and, with a Normalize module, normalized) sentence embedding, pooled
    as sentence-transformers pools (mean / cls / last token over the real tokens), also with
    the model's prompts prepended;
  - cross-encoders (`*ForSequenceClassification`, 1 label): the raw logit of each
    (query, text) pair;
  - classifiers (n labels): the logits of each input.

Every text is run alone (no padding), so the reference is the unambiguous answer; the Rust
side batches, pads and packs however it likes and must still match.

    python3 -m venv /work/.venv-models
    /work/.venv-models/bin/pip install torch transformers tokenizers
    /work/.venv-models/bin/python scripts/candle/make_tiny_models.py

Needs no network: the tokenizer is a small WordPiece vocabulary built here with `tokenizers`.

    make_tiny_models.py bench OUT TOKENIZER_DIR

writes instead, for scripts/candle/bench-families.sh, one random-weight model per new family at
all-MiniLM-L6-v2's size (hidden 384, 6 layers, 12 heads, feed-forward 1536, vocab 30522) under
OUT/<family>/, with the tokenizer of TOKENIZER_DIR (all-MiniLM-L6-v2's): random weights cost the
same per token as trained ones. Never committed (~90 MB each).
"""

import inspect
import json
import math
import os
import shutil
import sys
import types

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "candle", "testdata", "tiny"
)

WORDS = """
a an the is are was of to in on for with and or not no yes what how why who where when
man woman girl boy child baby dog cat horse monkey food bread apple music violin drums guitar
eating playing riding carrying sleeping running reading writing cooking walking
kubernetes operator cluster pod node container plugin gateway model embedding search query
document password email reset access rust memory safety garbage collector compile time
paris france capital city river country large small fast slow good bad happy sad
""".split()

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

QUERIES = ["what is the capital of france", "how do i reset my password"]
TEXTS = [
    "paris is the capital of france",
    "the river is large",
    "reset your password with your email",
    "a dog is running",
    "rust has memory safety without a garbage collector",
]
SENTENCES = [
    "a man is eating food",
    "a woman is playing violin",
    "the girl is carrying a baby",
    "kubernetes operator reconciles the cluster",
    "hi",
    "xyz unknownword",
    " ".join(["the cat is sleeping on the large dog"] * 6),
]


def vocab():
    letters = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    toks = SPECIAL + WORDS + list(letters) + ["##" + c for c in letters]
    seen, out = set(), []
    for t in toks:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return {t: i for i, t in enumerate(out)}


def tokenizer(style):
    """WordPiece; `style` picks the special-token template: bert (types 0/1), roberta-like
    pairs (all type 0, since XLM-R has one token type) or decoder (text then EOS)."""
    tok = Tokenizer(models.WordPiece(vocab(), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    special = [("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=special
        )
    elif style == "roberta":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] [SEP] $B [SEP]", special_tokens=special
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A [SEP]", pair="$A [SEP] $B [SEP]", special_tokens=special
        )
    return tok


def fast(tok):
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def takes_type_ids(model):
    return "token_type_ids" in inspect.signature(model.forward).parameters


def ids(tok, a, b=None):
    enc = tok.encode(a, b) if b is not None else tok.encode(a)
    return (
        torch.tensor([enc.ids], dtype=torch.long),
        torch.tensor([enc.type_ids], dtype=torch.long),
    )


COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def bert_config(**kw):
    c = dict(COMMON, vocab_size=len(vocab()), max_position_embeddings=64, hidden_act="gelu",
             initializer_range=0.2, pad_token_id=0)
    c.update(kw)
    return transformers.BertConfig(**c)


def xlmr_config(**kw):
    # pad_token_id is the tokenizer's [PAD] (0): XLM-R positions count from pad_token_id + 1.
    c = dict(COMMON, vocab_size=len(vocab()), max_position_embeddings=66, hidden_act="gelu",
             initializer_range=0.2, pad_token_id=0, type_vocab_size=1)
    c.update(kw)
    return transformers.XLMRobertaConfig(**c)


def qwen3_config():
    return transformers.Qwen3Config(
        vocab_size=len(vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
        pad_token_id=0, use_sliding_window=False, max_window_layers=2,
    )


def qwen2_config():
    return transformers.Qwen2Config(
        vocab_size=len(vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
        pad_token_id=0, use_sliding_window=False, sliding_window=128, max_window_layers=2,
    )


def mpnet_config(**kw):
    # transformers counts MPNet positions from 2 whatever pad_token_id is (padding_idx is fixed
    # at 1, MPNet's <pad>); the longest sentence (~60 tokens) reaches the logarithmic
    # relative-position buckets (distances of 8 and more).
    c = dict(COMMON, vocab_size=len(vocab()), max_position_embeddings=66, hidden_act="gelu",
             initializer_range=0.2, pad_token_id=1, layer_norm_eps=1e-5)
    c.update(kw)
    return transformers.MPNetConfig(**c)


def gte_config():
    # Rotary positions (no table) up to 128; a small rope base so the tiny head_dim of 8 turns.
    return transformers.GteConfig(
        **COMMON, vocab_size=len(vocab()), max_position_embeddings=128, hidden_act="gelu",
        initializer_range=0.2, pad_token_id=0, type_vocab_size=1, layer_norm_eps=1e-12,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def nomic_bert_config():
    return transformers.NomicBertConfig(
        **COMMON, vocab_size=len(vocab()), max_position_embeddings=128, hidden_act="silu",
        initializer_range=0.2, pad_token_id=0, type_vocab_size=2, layer_norm_eps=1e-12,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
    )


def mistral_config():
    # A 16-token sliding window: the longest sentence runs past it.
    return transformers.MistralConfig(
        vocab_size=len(vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.2,
        pad_token_id=0, sliding_window=16,
    )


def modernbert_config(**kw):
    # Three layers, a global one every second: layer 1 attends within a window of 8 tokens, so
    # the longer sentences exercise the sliding-window mask.
    return transformers.ModernBertConfig(
        vocab_size=len(vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=128, local_attention=8,
        global_attn_every_n_layers=2, initializer_range=0.2, pad_token_id=0, bos_token_id=2,
        cls_token_id=2, eos_token_id=3, sep_token_id=3, **kw,
    )


class JinaBertV2(torch.nn.Module):
    """JinaBERT v2 (jina-embeddings-v2-*), written here because transformers has no class for it
    (the published models run jinaai's remote code, which this script does not download). It
    follows that code's forward and its tensor names: BERT's post-LayerNorm encoder without a
    position table, ALiBi biases -slope_h * |i - j| on the attention scores, and a gated
    feed-forward LayerNorm(x + wo(gelu(g) * r)) with [g, r] = gated_layers(x)."""

    def __init__(self, c):
        super().__init__()
        nn = torch.nn
        h, i, self.heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
        eps = c["layer_norm_eps"]
        self.inter = i
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(c["vocab_size"], h)
        self.embeddings.token_type_embeddings = nn.Embedding(c["type_vocab_size"], h)
        self.embeddings.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            layer = nn.Module()
            layer.attention = nn.Module()
            layer.attention.self = nn.Module()
            for n in ["query", "key", "value"]:
                setattr(layer.attention.self, n, nn.Linear(h, h))
            layer.attention.output = nn.Module()
            layer.attention.output.dense = nn.Linear(h, h)
            layer.attention.output.LayerNorm = nn.LayerNorm(h, eps=eps)
            layer.mlp = nn.Module()
            layer.mlp.gated_layers = nn.Linear(h, 2 * i, bias=False)
            layer.mlp.wo = nn.Linear(i, h)
            layer.mlp.layernorm = nn.LayerNorm(h, eps=eps)
            self.encoder.layer.append(layer)
        for p in self.parameters():
            torch.nn.init.normal_(p, std=c["initializer_range"])
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                torch.nn.init.ones_(m.weight)
                torch.nn.init.zeros_(m.bias)

    @staticmethod
    def slopes(n):
        def power_of_2(n):
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start**i for i in range(n)]
        if math.log2(n).is_integer():
            return power_of_2(n)
        closest = 2 ** math.floor(math.log2(n))
        return power_of_2(closest) + JinaBertV2.slopes(2 * closest)[0::2][: n - closest]

    def forward(self, input_ids, token_type_ids, attention_mask=None):
        e = self.embeddings
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.token_type_embeddings(token_type_ids))
        b, n, _ = x.shape
        d = x.shape[-1] // self.heads
        pos = torch.arange(n)
        alibi = -torch.tensor(self.slopes(self.heads))[:, None, None] * (pos[None, :] - pos[:, None]).abs()
        alibi = alibi[None]
        if attention_mask is not None:  # padded keys get no weight, as in jinaai's code
            alibi = alibi + (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.encoder.layer:
            a = layer.attention.self
            q, k, v = (getattr(a, p)(x).view(b, n, self.heads, d).transpose(1, 2) for p in ["query", "key", "value"])
            scores = q @ k.transpose(-1, -2) / math.sqrt(d) + alibi
            ctx = (scores.softmax(-1).to(v.dtype) @ v).transpose(1, 2).reshape(b, n, -1)
            o = layer.attention.output
            x = o.LayerNorm(o.dense(ctx) + x)
            gr = layer.mlp.gated_layers(x)
            ff = layer.mlp.wo(torch.nn.functional.gelu(gr[..., : self.inter]) * gr[..., self.inter:])
            x = layer.mlp.layernorm(ff + x)
        return types.SimpleNamespace(last_hidden_state=x)


def jina_bert_config():
    return dict(COMMON, vocab_size=len(vocab()), model_type="bert", architectures=["JinaBertModel"],
                position_embedding_type="alibi", feed_forward_type="geglu", hidden_act="gelu",
                max_position_embeddings=128, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                initializer_range=0.2)


@torch.no_grad()
def jina_bert(name, tok):
    """Saves JinaBertV2 in the published checkpoints' layout, then embeds like `embedder`."""
    config = jina_bert_config()
    model = JinaBertV2(config).eval()
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "model.safetensors"))
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=2)
    tok.save(os.path.join(d, "tokenizer.json"))
    write_st_files(d, "mean", True)

    def embed(text):
        i, t = ids(tok, text)
        v = pool(model(i, t).last_hidden_state, "mean")
        return torch.nn.functional.normalize(v, dim=0).tolist()

    json.dump({"sentences": SENTENCES, "embeddings": [embed(s) for s in SENTENCES]},
              open(os.path.join(d, "reference.json"), "w"))


def pool(hidden, mode):
    h = hidden[0]
    if mode == "mean":
        return h.mean(0)
    if mode == "cls":
        return h[0]
    if mode == "lasttoken":
        return h[-1]
    raise ValueError(mode)


def write_st_files(d, mode, normalize, prompts=None, default_prompt=None, max_seq_length=None, dim=32):
    mods = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        mods.append({"idx": 2, "name": "2", "path": "2_Normalize",
                     "type": "sentence_transformers.models.Normalize"})
    json.dump(mods, open(os.path.join(d, "modules.json"), "w"), indent=2)
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    keys = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"]
    flag = {"mean": "mean_tokens", "cls": "cls_token", "lasttoken": "lasttoken"}[mode]
    pc = {"word_embedding_dimension": dim}
    pc.update({f"pooling_mode_{k}": k == flag for k in keys})
    json.dump(pc, open(os.path.join(d, "1_Pooling", "config.json"), "w"), indent=2)
    if max_seq_length:
        json.dump({"max_seq_length": max_seq_length, "do_lower_case": False},
                  open(os.path.join(d, "sentence_bert_config.json"), "w"), indent=2)
    if prompts is not None:
        json.dump({"prompts": prompts, "default_prompt_name": default_prompt, "similarity_fn_name": "cosine"},
                  open(os.path.join(d, "config_sentence_transformers.json"), "w"), indent=2)


def save(name, model, tok):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save_pretrained(d, safe_serialization=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    fast(tok).save_pretrained(d + "/.hf_tok")  # tokenizer_config.json only; the rest is ours
    shutil.copy(os.path.join(d, ".hf_tok", "tokenizer_config.json"), d)
    shutil.rmtree(os.path.join(d, ".hf_tok"))
    for junk in ["generation_config.json"]:
        p = os.path.join(d, junk)
        if os.path.exists(p):
            os.remove(p)
    return d


@torch.no_grad()
def embedder(name, model, tok, mode, normalize, prompts=None, default_prompt=None, max_seq_length=None):
    model.eval()
    d = save(name, model, tok)
    write_st_files(d, mode, normalize, prompts, default_prompt, max_seq_length)

    def embed(text):
        i, t = ids(tok, text)
        kwargs = {"input_ids": i}
        if takes_type_ids(model):
            kwargs["token_type_ids"] = t
        v = pool(model(**kwargs).last_hidden_state, mode)
        if normalize:
            v = torch.nn.functional.normalize(v, dim=0)
        return v.tolist()

    # sentence-transformers cuts inputs at max_seq_length (special tokens included).
    if max_seq_length:
        tok.enable_truncation(max_seq_length)
    ref = {"sentences": SENTENCES, "embeddings": [embed(s) for s in SENTENCES]}
    if prompts:
        ref["prompted"] = {p: [embed(prefix + s) for s in SENTENCES] for p, prefix in prompts.items()}
    tok.no_truncation()
    json.dump(ref, open(os.path.join(d, "reference.json"), "w"))


@torch.no_grad()
def cross_encoder(name, model, tok):
    model.eval()
    d = save(name, model, tok)
    pairs = [(q, t) for q in QUERIES for t in TEXTS]
    logits = []
    for q, t in pairs:
        i, ty = ids(tok, q, t)
        kwargs = {"token_type_ids": ty} if takes_type_ids(model) else {}
        logits.append(model(input_ids=i, **kwargs).logits[0].tolist())
    flat = [l[0] for l in logits]
    assert max(flat) - min(flat) > 0.05, f"{name}: logits hardly differ ({flat}); raise initializer_range"
    json.dump({"queries": QUERIES, "texts": TEXTS, "logits": flat}, open(os.path.join(d, "reference.json"), "w"))


@torch.no_grad()
def classifier(name, model, tok):
    model.eval()
    d = save(name, model, tok)
    logits = []
    for s in SENTENCES:
        i, ty = ids(tok, s)
        logits.append(model(input_ids=i, token_type_ids=ty).logits[0].tolist())
    json.dump({"sentences": SENTENCES, "logits": logits, "id2label": model.config.id2label},
              open(os.path.join(d, "reference.json"), "w"))


def main():
    torch.manual_seed(17)
    bert_tok, roberta_tok, decoder_tok = tokenizer("bert"), tokenizer("roberta"), tokenizer("decoder")
    embedder("bert-embed", transformers.BertModel(bert_config(), add_pooling_layer=False), bert_tok,
             "mean", True, prompts={"query": "query: ", "document": ""}, default_prompt=None,
             max_seq_length=24)
    embedder("xlm-roberta-embed", transformers.XLMRobertaModel(xlmr_config(), add_pooling_layer=False),
             roberta_tok, "cls", False, prompts={"query": "search query: "}, default_prompt="query")
    cross_encoder("bert-rerank", transformers.BertForSequenceClassification(bert_config(num_labels=1)), bert_tok)
    cross_encoder("xlm-roberta-rerank",
                  transformers.XLMRobertaForSequenceClassification(xlmr_config(num_labels=1)), roberta_tok)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    classifier("bert-classify", transformers.BertForSequenceClassification(
        bert_config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})), bert_tok)
    embedder("qwen3-embed", transformers.Qwen3Model(qwen3_config()), decoder_tok, "lasttoken", True,
             prompts={"query": "instruct: search\nquery: "}, default_prompt=None)
    embedder("qwen2-embed", transformers.Qwen2Model(qwen2_config()), decoder_tok, "lasttoken", True)
    embedder("modernbert-embed", transformers.ModernBertModel(modernbert_config()), bert_tok, "mean", True)
    # Mean-pooled head (the default is cls): the less common path gets the test.
    cross_encoder("modernbert-rerank", transformers.ModernBertForSequenceClassification(
        modernbert_config(num_labels=1, classifier_pooling="mean")), roberta_tok)
    embedder("mpnet-embed", transformers.MPNetModel(mpnet_config(), add_pooling_layer=False), roberta_tok,
             "mean", True)
    embedder("mistral-embed", transformers.MistralModel(mistral_config()), decoder_tok, "lasttoken", True,
             prompts={"query": "instruct: search\nquery: "}, default_prompt=None)
    embedder("gte-embed", transformers.GteModel(gte_config()), bert_tok, "cls", True)
    embedder("nomic-bert-embed", transformers.NomicBertModel(nomic_bert_config()), bert_tok, "mean", True,
             prompts={"query": "search_query: ", "document": "search_document: "}, default_prompt="document")
    jina_bert("jina-bert-embed", bert_tok)
    print(f"wrote {OUT} with transformers {transformers.__version__}, torch {torch.__version__}", file=sys.stderr)


BENCH = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
             vocab_size=30522, initializer_range=0.02)


def bench_models(out, tokenizer_dir):
    """MiniLM-sized random models of the families added after BERT, for the speed comparison."""
    torch.manual_seed(17)
    models = {
        "mpnet": (transformers.MPNetModel(transformers.MPNetConfig(**BENCH, max_position_embeddings=514),
                                          add_pooling_layer=False), "mean"),
        "gte": (transformers.GteModel(transformers.GteConfig(**BENCH, max_position_embeddings=512,
                                                             type_vocab_size=1, pad_token_id=0)), "cls"),
        "nomic_bert": (transformers.NomicBertModel(transformers.NomicBertConfig(
            **BENCH, max_position_embeddings=512, pad_token_id=0)), "mean"),
        "mistral": (transformers.MistralModel(transformers.MistralConfig(
            **BENCH, num_key_value_heads=4, max_position_embeddings=512, sliding_window=None,
            pad_token_id=0, tie_word_embeddings=False)), "lasttoken"),
    }
    jina = JinaBertV2(dict(jina_bert_config(), **BENCH, max_position_embeddings=512)).eval()
    jina.config = dict(jina_bert_config(), **BENCH, max_position_embeddings=512)
    models["jina_bert"] = (jina, "mean")
    for name, (model, mode) in models.items():
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        if isinstance(model, JinaBertV2):  # the published checkpoints' layout
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "model.safetensors"))
            json.dump(model.config, open(os.path.join(d, "config.json"), "w"), indent=2)
        else:
            model.eval().save_pretrained(d, safe_serialization=True)
        for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
            if os.path.exists(os.path.join(tokenizer_dir, f)):
                shutil.copy(os.path.join(tokenizer_dir, f), d)
        write_st_files(d, mode, True, max_seq_length=256, dim=384)
        print(d, file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["bench"]:
        bench_models(sys.argv[2], sys.argv[3])
    else:
        main()
