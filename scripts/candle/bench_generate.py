#!/usr/bin/env python3
"""Text generation benchmark, the PyTorch side, and the model both sides run.

    bench_generate.py make DIR         # a SmolLM2-135M-shaped Llama with random weights in DIR
                                       # (config, safetensors, a word-level tokenizer covering
                                       # the whole vocabulary) and DIR/prompts.json
    bench_generate.py run DIR --streams 1,8,32 --new-tokens 64 --threads 2

No download: the architecture is SmolLM2-135M's (30 layers, hidden 576, 9 heads, 3 KV heads,
vocab 49,152), the weights are random (seeded), which costs the same per token as the real
ones. Every token of the vocabulary decodes to text, so each generated token is a text event
on the bkg side. Prompts are 32 lists of 128 token ids (seeded), the same for both sides; a
run uses the first `--prompt-len` (64) of each.

PyTorch runs `transformers` `generate` (greedy, KV cache, EOS ignored): one stream is one
`generate` per prompt; N streams are one `generate` over a batch of N prompts (static batching,
what `transformers` offers without a serving layer; all prompts have the same length, so no
padding). Time to first token is measured with a streamer: the time until the first new token
of the batch is produced.
"""

import argparse
import json
import os
import sys
import time

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 0,
    "eos_token_id": 0,
    "torch_dtype": "float32",
}
PROMPTS, PROMPT_LEN = 32, 128


def make(out):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(**CONFIG)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    vocab = {f"w{i}": i for i in range(CONFIG["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.save(os.path.join(out, "tokenizer.json"))
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(1, CONFIG["vocab_size"], (PROMPTS, PROMPT_LEN), generator=g)
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompts.tolist(), f)


def run(out, streams, new_tokens, threads, repeat, prompt_len):
    import torch
    from transformers import LlamaForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    prompts = torch.tensor(json.load(open(os.path.join(out, "prompts.json"))))[:, :prompt_len]

    class First(BaseStreamer):
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # the 1st put is the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    def generate(batch):
        s = First()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out_ids = model.generate(
                batch, attention_mask=torch.ones_like(batch), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, streamer=s,
                pad_token_id=0,
            )
        t1 = time.perf_counter()
        assert out_ids.shape[1] - batch.shape[1] == new_tokens
        return t1 - t0, (s.first - t0)

    # streamer= needs batch size 1 in transformers; for batches, time the first token with a
    # one-token generate of the same batch (prefill + first pick), then the whole generate.
    def generate_batch(batch):
        if batch.shape[0] == 1:
            return generate(batch)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=1,
                           do_sample=False, pad_token_id=0)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            out_ids = model.generate(
                batch, attention_mask=torch.ones_like(batch), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
            )
        assert out_ids.shape[1] - batch.shape[1] == new_tokens
        return time.perf_counter() - t0, ttft

    generate_batch(prompts[:1, :16])  # warm-up
    for n in streams:
        best = None
        for _ in range(repeat):
            if n == 1:
                wall, ttft = generate_batch(prompts[:1])
                ttfts = [ttft]
            else:
                wall, ttft = generate_batch(prompts[:n])
                ttfts = [ttft] * n
            if best is None or wall < best[0]:
                best = (wall, ttfts)
        wall, ttfts = best
        ttfts.sort()
        print(json.dumps({
            "contender": "pytorch-transformers", "dtype": "f32", "streams": n,
            "new_tokens": new_tokens, "prompt_tokens": prompts.shape[1], "wall_s": wall,
            "tokens_per_s": n * new_tokens / wall,
            "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1e3,
            "ttft_p99_ms": ttfts[min(len(ttfts) - 1, round((len(ttfts) - 1) * 0.99))] * 1e3,
            "torch": torch.__version__,
        }), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["make", "run"])
    p.add_argument("dir")
    p.add_argument("--streams", default="1,8,32")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=64)
    a = p.parse_args()
    if a.what == "make":
        make(a.dir)
    else:
        run(a.dir, [int(s) for s in a.streams.split(",")], a.new_tokens, a.threads, a.repeat, a.prompt_len)


if __name__ == "__main__":
    sys.exit(main())
