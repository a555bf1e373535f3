#!/usr/bin/env python3
"""Makes tiny random-weight causal language models, offline, and what `transformers` generates
with them: the test data of the candle plugin's text generation.

One directory per model under plugins/candle/testdata/tiny/<name>/ in Hugging Face layout
(config.json, generation_config.json, tokenizer.json, tokenizer_config.json with the model's
chat template, model.safetensors in float32) plus reference.json:

  - `greedy`: for each prompt, the prompt's token ids and the 32 tokens `generate` picks with
    `do_sample=False` (EOS does not stop it, so all 32 come; EOS may be among them), and the smallest gap between the best and
    the second-best logit along the way (a gap near zero would make the test a coin toss);
  - `chat`: messages, the text `apply_chat_template(..., add_generation_prompt=True)` renders
    (the Rust side renders the same template with minijinja and must match it byte for byte)
    and its token ids.

The tokenizer is a byte-level BPE trained here on a few sentences (any text encodes), with the
special tokens of each family's chat format. Families: Llama 3, Qwen2, Mistral, Phi-3, Gemma.

Llama and Qwen2 also get GGUF files as llama.cpp's convert_hf_to_gguf.py writes them (tensor
names, metadata keys, Llama's Q/K rows permuted for interleaved RoPE), quantized with gguf-py:
model-q8_0.gguf and model-q4_0.gguf (gguf-py cannot quantize k-quants such as Q4_K, and their
256-wide blocks do not fit a 64-wide model anyway). Norms and biases stay f32, as llama.cpp
keeps them.

    python3 -m venv /work/.venv-models
    /work/.venv-models/bin/pip install torch transformers==5.25.0 tokenizers gguf==0.19.0
    /work/.venv-models/bin/python scripts/candle/make_tiny_lms.py [NAME ...]   # e.g. qwen3-chat
"""

import json
import os
import shutil
import sys

import gguf
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "candle", "testdata", "tiny"
)
NEW_TOKENS = 32

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "kubernetes operators reconcile plugins into deployments and services",
    "a gateway streams tokens to the client as server sent events",
    "paris is the capital of france and berlin is the capital of germany",
    "rust has memory safety without a garbage collector",
    "what is the capital of france? the capital of france is paris.",
    "hello! how are you today? i am fine, thank you.",
]

PROMPTS = ["the capital of france is", "hello", "kubernetes operators reconcile"]

CHAT = [
    {"role": "system", "content": "you are a helpful assistant."},
    {"role": "user", "content": "what is the capital of france?"},
]
# Mistral's and Gemma's templates refuse a system message.
CHAT_USER = CHAT[1:]

# ChatML, as Qwen2/Qwen2.5 ship it (shortened: no tools).
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Llama 3's header format (shortened: no tools, no date).
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


# Mistral's v0.1 instruct format (shortened: its exact error messages).
MISTRAL = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# Phi-3-mini-instruct's format.
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Gemma's turn format.
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def tokenizer(special):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def llama_config(vocab, bos, eos):
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.2,
        bos_token_id=bos, eos_token_id=eos,
    )


def qwen2_config(vocab, eos):
    return transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=eos, eos_token_id=eos, use_sliding_window=False, sliding_window=256,
        max_window_layers=2,
    )


def qwen3_config(vocab, eos):
    return transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=eos, eos_token_id=eos, use_sliding_window=False, attention_bias=False,
    )


def mistral_config(vocab, bos, eos):
    # No sliding window, as Mistral 7B v0.2/v0.3 ship it.
    return transformers.MistralConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, initializer_range=0.2, sliding_window=None,
        bos_token_id=bos, eos_token_id=eos,
    )


def phi3_config(vocab, bos, eos, pad):
    # Phi-3-mini-4k's shape in small: fused qkv_proj and gate_up_proj, no RoPE scaling.
    return transformers.Phi3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        original_max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, initializer_range=0.2, sliding_window=None,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )


def gemma_config(vocab, bos, eos, pad):
    # Gemma 2B's shape in small: one KV head, head_dim apart from hidden/heads, tied embeddings,
    # GeLU (tanh) MLP. A wider init than the others: Gemma scales the (tied) embedding by
    # sqrt(hidden), and at 0.2 it drowns the layers, so greedy repeats the last token.
    return transformers.GemmaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, initializer_range=0.5,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )


def rope_theta(config):
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute: HF's rotate-half Q/K rows into the interleaved order
    GGUF's `llama` RoPE (and candle's quantized_llama) expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_gguf(path, arch, model, config, fast, template, qtype, file_type):
    """A GGUF as convert_hf_to_gguf.py + llama-quantize would write it for `arch` (llama, qwen2)."""
    w = gguf.GGUFWriter(path, arch)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    w.add_name(os.path.basename(os.path.dirname(path)))
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(config.hidden_size // heads)
    w.add_rope_freq_base(rope_theta(config))
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_file_type(file_type)
    w.add_vocab_size(config.vocab_size)
    if fast.bos_token_id is not None:
        w.add_bos_token_id(fast.bos_token_id)
    w.add_eos_token_id(fast.eos_token_id)
    w.add_chat_template(template)
    for name, t in model.state_dict().items():
        t = t.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            if config.tie_word_embeddings:
                continue
            out = "output.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            out = f"blk.{layer}.{GGUF_NAMES[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                t = permute(t, heads)
            elif arch == "llama" and rest == "self_attn.k_proj.weight":
                t = permute(t, kv_heads)
        if t.ndim == 1:
            w.add_tensor(out, t.astype(np.float32))
        else:
            w.add_tensor(out, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy(model, ids):
    # No EOS (the generation config's is cleared in `make`), so all 32 tokens are pure argmax;
    # the Rust side runs with `ignore_eos` to compare, and stops at the first EOS without it.
    # An explicit attention mask: without one, generate takes tokens equal to the pad id for
    # padding (Llama 3's BOS and pad are both 0 here).
    out = model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
        return_dict_in_generate=True, pad_token_id=model.config.eos_token_id,
    )
    new = out.sequences[0, len(ids):].tolist()
    gap = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores)
    return new, gap


def make(name, cls, config, tok, special_map, template, chat=CHAT, gguf_arch=None):
    if ONLY and name not in ONLY:
        return
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(d, safe_serialization=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special_map)
    fast.chat_template = template
    fast.save_pretrained(os.path.join(d, ".hf_tok"))
    shutil.copy(os.path.join(d, ".hf_tok", "tokenizer_config.json"), d)
    shutil.rmtree(os.path.join(d, ".hf_tok"))
    # transformers may write the template to chat_template.jinja instead; keep it in the config
    # file, where most published models have it.
    cfg_path = os.path.join(d, "tokenizer_config.json")
    with open(cfg_path) as f:
        tc = json.load(f)
    tc["chat_template"] = template
    with open(cfg_path, "w") as f:
        json.dump(tc, f, indent=2)
    model.generation_config.eos_token_id = None
    ref = {"new_tokens": NEW_TOKENS, "greedy": [], "chat": {}}
    with torch.no_grad():
        for p in PROMPTS:
            ids = fast(p, add_special_tokens=False)["input_ids"]
            new, gap = greedy(model, ids)
            ref["greedy"].append({"prompt": p, "prompt_ids": ids, "ids": new, "min_logit_gap": gap,
                                  "text": fast.decode(new)})
        text = fast.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = fast(text, add_special_tokens=False)["input_ids"]
        new, gap = greedy(model, ids)
        ref["chat"] = {"messages": chat, "text": text, "prompt_ids": ids, "ids": new, "min_logit_gap": gap}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    if gguf_arch:
        for qtype, file_type in [
            (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
            (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
        ]:
            path = os.path.join(d, f"model-{qtype.name.lower()}.gguf")
            write_gguf(path, gguf_arch, model, config, fast, template, qtype, file_type)
            print(f"{name}: {os.path.basename(path)} {os.path.getsize(path)} bytes")
    gaps = [g["min_logit_gap"] for g in ref["greedy"]] + [ref["chat"]["min_logit_gap"]]
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, smallest logit gap {min(gaps):.2e}")


def main():
    chatml = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = tokenizer(chatml)
    eos = tok.token_to_id("<|im_end|>")
    make("qwen2-chat", transformers.Qwen2ForCausalLM, qwen2_config(tok.get_vocab_size(), eos), tok,
         {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, CHATML, gguf_arch="qwen2")
    make("qwen3-chat", transformers.Qwen3ForCausalLM, qwen3_config(tok.get_vocab_size(), eos), tok,
         {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, CHATML)

    llama = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = tokenizer(llama)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|eot_id|>")
    make("llama-chat", transformers.LlamaForCausalLM, llama_config(tok.get_vocab_size(), bos, eos), tok,
         {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, LLAMA3, gguf_arch="llama")

    mistral = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    tok = tokenizer(mistral)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    make("mistral-chat", transformers.MistralForCausalLM, mistral_config(tok.get_vocab_size(), bos, eos),
         tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, MISTRAL, chat=CHAT_USER)

    phi3 = ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tokenizer(phi3)
    bos, eos, pad = tok.token_to_id("<s>"), tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")
    make("phi3-chat", transformers.Phi3ForCausalLM, phi3_config(tok.get_vocab_size(), bos, eos, pad), tok,
         {"bos_token": "<s>", "eos_token": "<|end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"},
         PHI3)

    gemma = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tok = tokenizer(gemma)
    bos, eos, pad = tok.token_to_id("<bos>"), tok.token_to_id("<end_of_turn>"), tok.token_to_id("<pad>")
    make("gemma-chat", transformers.GemmaForCausalLM, gemma_config(tok.get_vocab_size(), bos, eos, pad), tok,
         {"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>", "unk_token": "<unk>"},
         GEMMA, chat=CHAT_USER)


# Names given on the command line: make only those (the others' committed files stay as they are).
ONLY = set(sys.argv[1:])

if __name__ == "__main__":
    main()
