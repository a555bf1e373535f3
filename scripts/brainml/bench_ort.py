#!/usr/bin/env python3
"""onnxruntime in-process on a brainml test model: the reference for scripts/brainml/bench.sh.

    bench_ort.py MODEL.onnx REFERENCE.json --batch 1 --threads 2 --duration 10

Runs `session.run` in THREADS Python threads (onnxruntime releases the GIL while it runs;
one intra-op thread each, as brainml's workers each run one request on one thread) for
DURATION seconds on a batch of BATCH rows cut from the reference inputs, and prints one JSON
line: calls/s, predictions/s (rows), p50/p99 of one call in ms.
"""

import argparse
import json
import threading
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("reference")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--duration", type=float, default=10)
    a = p.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    ref = json.load(open(a.reference))
    feeds = {}
    for name, t in ref["inputs"].items():
        x = np.array(t["data"], dtype=np.float32).reshape(t["shape"])
        reps = -(-a.batch // x.shape[0])
        feeds[name] = np.concatenate([x] * reps)[: a.batch]
    for _ in range(100):
        session.run(None, feeds)

    stop = time.perf_counter() + a.duration
    latencies: list[list[float]] = [[] for _ in range(a.threads)]

    def loop(out: list[float]) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            session.run(None, feeds)
            out.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(lat,)) for lat in latencies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    all_lat = np.array([x for lat in latencies for x in lat])
    calls = len(all_lat)
    print(json.dumps({
        "calls_per_s": calls / elapsed,
        "predictions_per_s": calls * a.batch / elapsed,
        "p50_ms": float(np.percentile(all_lat, 50) * 1e3),
        "p99_ms": float(np.percentile(all_lat, 99) * 1e3),
        "onnxruntime": ort.__version__,
    }))


if __name__ == "__main__":
    main()
