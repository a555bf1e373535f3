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
"""

import inspect
import json
import os
import shutil
import sys

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


def pool(hidden, mode):
    h = hidden[0]
    if mode == "mean":
        return h.mean(0)
    if mode == "cls":
        return h[0]
    if mode == "lasttoken":
        return h[-1]
    raise ValueError(mode)


def write_st_files(d, mode, normalize, prompts=None, default_prompt=None, max_seq_length=None):
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
    pc = {"word_embedding_dimension": 32}
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
    print(f"wrote {OUT} with transformers {transformers.__version__}, torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
