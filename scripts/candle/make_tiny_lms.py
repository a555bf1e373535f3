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
special tokens of each family's chat format.

    /work/.venv-models/bin/python scripts/candle/make_tiny_lms.py
"""

import json
import os
import shutil

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


def make(name, cls, config, tok, special_map, template):
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
        text = fast.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        ids = fast(text, add_special_tokens=False)["input_ids"]
        new, gap = greedy(model, ids)
        ref["chat"] = {"messages": CHAT, "text": text, "prompt_ids": ids, "ids": new, "min_logit_gap": gap}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    gaps = [g["min_logit_gap"] for g in ref["greedy"]] + [ref["chat"]["min_logit_gap"]]
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, smallest logit gap {min(gaps):.2e}")


def main():
    chatml = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = tokenizer(chatml)
    eos = tok.token_to_id("<|im_end|>")
    make("qwen2-chat", transformers.Qwen2ForCausalLM, qwen2_config(tok.get_vocab_size(), eos), tok,
         {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, CHATML)

    llama = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = tokenizer(llama)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|eot_id|>")
    make("llama-chat", transformers.LlamaForCausalLM, llama_config(tok.get_vocab_size(), bos, eos), tok,
         {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, LLAMA3)


if __name__ == "__main__":
    main()
