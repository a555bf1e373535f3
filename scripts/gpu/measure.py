#!/usr/bin/env python3
"""Issue 15's GPU figures from one run, on the machine with the GPU (scripts/gpu/README.md).

Measures, on the same GPU, the same inputs (plugins/candle/testdata/bench_inputs.json: 512 short
~19-token and 128 long ~120-token sentences) and all-MiniLM-L6-v2:

  start    the CUDA runtime from exec to /readyz 200, with an empty CUDA JIT cache and again
           with the cache it left (SASS for the GPU in the binary means the two should agree);
  runtime  the runtime over HTTP (POST /v1/invoke/model.infer), wrk with CLIENTS connections,
           one sentence per request and lists of 32, short and long, per dtype: sentences/s,
           p50/p99, GPU busy (nvidia-smi utilization.gpu sampled every 100 ms), CPU cores the
           runtime used (/proc utime+stime over the run);
  gateway  `bkg up` with the same runtime behind the gateway (POST /api/plugins/{id}/invoke with
           an API key), one sentence per request: the same figures, plus the gateway's cores;
  pytorch  sentence-transformers in-process (scripts/candle/bench_pytorch.py) on the same GPU,
           each dtype and batch size, the input lists repeated so one encode() runs long enough;
  accuracy the runtime's embeddings of 32 of the inputs, per dtype, against sentence-transformers
           in f32 on the same GPU: the lowest cosine.

Writes one JSON object per line to OUT/gpu.jsonl (and stdout), then a table to OUT/gpu.md.

  python3 scripts/gpu/measure.py --kit /tmp/bkg-gpu --out "$OUT"     # on the GPU machine
  python3 scripts/gpu/measure.py --cpu --out /tmp/gpu-dry            # a dry run here, on CPU
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INPUTS = os.path.join(REPO, "plugins/candle/testdata/bench_inputs.json")
KEY = "bkg_gpuBench0123456789abcdefghijklmnopqrstuv"
TICK = os.sysconf("SC_CLK_TCK")

LOAD_LUA = r"""
local bodies = dofile(os.getenv("BKG_BODIES"))
local i = math.random(#bodies)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BKG_KEY") then wrk.headers["Authorization"] = "Bearer " .. os.getenv("BKG_KEY") end
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, os.getenv("BKG_PATH"), nil, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format('RESULT {"requests":%d,"requests_per_s":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,"errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors, summary.errors.status))
end
"""


def emit(out, record):
    line = json.dumps(record)
    print(line, flush=True)
    with open(os.path.join(out, "gpu.jsonl"), "a") as f:
        f.write(line + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(url, timeout_s):
    """Polls url until it answers 200; returns the seconds it took, or raises."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total


class GpuSampler:
    """nvidia-smi's utilization.gpu (percent of time a kernel ran) every 100 ms, in a child."""

    def __init__(self, enabled):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples, self.proc, self.thread = [], None, None

    def __enter__(self):
        if self.enabled:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
                self.samples.append((util, mem))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(timeout=2)

    def summary(self):
        if not self.samples:
            return {"gpu_busy_pct": None}
        # The first and last samples straddle the run's edges.
        inner = self.samples[2:-2] or self.samples
        utils = [u for u, _ in inner]
        return {"gpu_busy_pct": round(sum(utils) / len(utils), 1),
                "gpu_mem_mib": max(m for _, m in self.samples)}


class Kit:
    """Where the binaries and the model are: the unpacked kit on the GPU machine, or this
    checkout's release build and scripts/setup.sh's MiniLM for a CPU dry run."""

    def __init__(self, args):
        if args.cpu:
            self.runtime = os.path.join(REPO, "target/release/plugin-runtime")
            self.bkg = os.path.join(REPO, "target/release/bkg")
            self.model = os.environ.get("BKG_TEST_MINILM_DIR", os.path.join(REPO, ".tools/all-MiniLM-L6-v2"))
            self.wrk = shutil.which("wrk")
            self.wrk_env = {}
        else:
            self.runtime = os.path.join(args.kit, "plugin-runtime")
            self.bkg = os.path.join(args.kit, "bkg")
            self.model = os.path.join(args.kit, "minilm-f16")
            self.wrk = os.path.join(args.kit, "wrk", "wrk")
            self.wrk_env = {"LD_LIBRARY_PATH": os.path.join(args.kit, "wrk")}
        for path in (self.runtime, self.bkg, self.wrk, os.path.join(self.model or "", "model.safetensors")):
            if not path or not os.path.exists(path):
                sys.exit(f"measure.py: missing {path}")


def bodies(work, inputs, per_request):
    """One Lua file per (set, sentences per request): the request bodies wrk walks."""
    paths = {}
    for name, texts in inputs.items():
        path = os.path.join(work, f"{name}-{per_request}.lua")
        with open(path, "w") as f:
            f.write("return {\n")
            if per_request == 1:
                groups = [t for t in texts]
            else:
                groups = [texts[i:i + per_request] for i in range(0, len(texts) - per_request + 1, per_request)]
            for g in groups:
                f.write("  [==[" + json.dumps({"input": g}) + "]==],\n")
            f.write("}\n")
        paths[name] = path
    return paths


def wrap_gateway(path):
    """The same bodies as gateway invokes: {"capability", "payload"}."""
    out = path.replace(".lua", "-gateway.lua")
    with open(path) as src, open(out, "w") as dst:
        for line in src:
            if line.startswith("  [==["):
                body = line[len("  [==["):line.rindex("]==]")]
                line = "  [==[" + json.dumps({"capability": "model.infer", "payload": json.loads(body)}) + "]==],\n"
            dst.write(line)
    return out


def load(kit, args, url, path, lua_bodies, key=None, duration=None):
    env = {**os.environ, **kit.wrk_env, "BKG_BODIES": lua_bodies, "BKG_PATH": path}
    if key:
        env["BKG_KEY"] = key
    threads = min(args.wrk_threads, args.clients)
    cmd = [kit.wrk, f"-t{threads}", f"-c{args.clients}", f"-d{duration or args.duration}s", "--timeout", "30s",
           "-s", args.lua, url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return json.loads(line[len("RESULT "):])


def measure(kit, args, url, path, lua_bodies, pids, key=None):
    load(kit, args, url, path, lua_bodies, key, duration=args.warmup)
    with GpuSampler(not args.cpu) as gpu:
        t0, c0 = time.perf_counter(), {k: cpu_ticks(v) for k, v in pids.items()}
        result = load(kit, args, url, path, lua_bodies, key)
        t1, c1 = time.perf_counter(), {k: cpu_ticks(v) for k, v in pids.items()}
    cores = {f"{k}_cores": round((c1[k] - c0[k]) / TICK / (t1 - t0), 2) for k in pids}
    return {**result, **gpu.summary(), **cores}


def candle_config(kit, args, dtype):
    return {"model": {"path": kit.model}, "device": "cpu" if args.cpu else "cuda", "dtype": dtype,
            "batching": True, "max_batch_size": args.max_batch_size, "max_batch_tokens": args.max_batch_tokens,
            "max_wait_ms": args.max_wait_ms, "queue_capacity": 16384}


def start_runtime(kit, args, work, dtype, env=None):
    addr_file = os.path.join(work, f"addr-{time.monotonic_ns()}")
    log = open(os.path.join(args.out, f"runtime-{dtype}.log"), "a")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [kit.runtime, "--plugin", "candle", "--id", "minilm", "--listen", "127.0.0.1:0", "--addr-file", addr_file,
         "--config", json.dumps(candle_config(kit, args, dtype)), "--max-concurrency", str(4 * args.clients),
         "--max-queue", str(4 * args.clients), "--log-format", "text"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    while not (os.path.exists(addr_file) and os.path.getsize(addr_file) > 0):
        if proc.poll() is not None:
            raise RuntimeError(f"runtime exited {proc.returncode}: see {log.name}")
        time.sleep(0.005)
    url = "http://" + open(addr_file).read().strip()
    ready(url + "/readyz", 300)
    return proc, url, time.perf_counter() - started


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_start(kit, args, work):
    """exec → /readyz 200 with an empty JIT cache (a fresh node), then twice with the cache."""
    cache = os.path.join(work, "cuda-cache")
    for attempt, label in enumerate(["empty JIT cache", "JIT cache kept", "JIT cache kept"]):
        if attempt == 0:
            shutil.rmtree(cache, ignore_errors=True)
        proc, url, seconds = start_runtime(kit, args, work, args.dtypes[0], {"CUDA_CACHE_PATH": cache})
        stop(proc)
        emit(args.out, {"what": "first start", "cache": label, "dtype": args.dtypes[0], "ready_s": round(seconds, 3)})


def sample_texts(inputs):
    return inputs["short"][:16] + inputs["long"][:16]


def runtime_runs(kit, args, work, sets, inputs):
    for dtype in args.dtypes:
        proc, url, _ = start_runtime(kit, args, work, dtype)
        try:
            body = json.dumps({"input": sample_texts(inputs)}).encode()
            req = urllib.request.Request(url + "/v1/invoke/model.infer", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                args.samples[dtype] = json.load(r)["embeddings"]
            for per_request in args.per_request:
                for name, lua_bodies in sets[per_request].items():
                    r = measure(kit, args, url, "/v1/invoke/model.infer", lua_bodies, {"runtime": [proc.pid]})
                    emit(args.out, {"what": "runtime over HTTP", "dtype": dtype, "set": name,
                                    "sentences_per_request": per_request, "clients": args.clients,
                                    "sentences_per_s": round(r["requests_per_s"] * per_request, 1), **r})
        finally:
            stop(proc)


def gateway_runs(kit, args, work, sets):
    dtype = args.dtypes[0]
    plugins = os.path.join(work, "plugins")
    os.makedirs(plugins, exist_ok=True)
    config = candle_config(kit, args, dtype)
    manifest = {
        "apiVersion": "bkg.rs/v1alpha1", "kind": "Plugin", "metadata": {"name": "minilm"},
        "spec": {"implementation": "candle", "replicas": 1, "config": config,
                 "resources": {"maxConcurrency": 4 * args.clients, "timeoutSeconds": 30}},
    }
    with open(os.path.join(plugins, "minilm.yaml"), "w") as f:
        json.dump(manifest, f)  # JSON is YAML
    port = free_port()
    log = open(os.path.join(args.out, "up.log"), "w")
    proc = subprocess.Popen(
        [kit.bkg, "up", "--port", str(port), "--plugins", plugins, "--keys-file", os.path.join(work, "keys.yaml"),
         "--runtime-bin", kit.runtime, "--rate-limit-rps", "10000000", "--rate-limit-burst", "10000000"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BKG_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while not _ready(url):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"bkg up did not serve minilm: see {log.name}")
            time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "plugin-runtime"], capture_output=True,
                                  text=True).stdout.split()
        pids = {"gateway": [proc.pid], "runtime": [int(p) for p in children]}
        for name, lua_bodies in sets[1].items():
            r = measure(kit, args, url, "/api/plugins/minilm/invoke", wrap_gateway(lua_bodies), pids, key=KEY)
            emit(args.out, {"what": "bkg up, gateway → runtime", "dtype": dtype, "set": name,
                            "sentences_per_request": 1, "clients": args.clients,
                            "sentences_per_s": r["requests_per_s"], **r})
    finally:
        stop(proc)


def _ready(url):
    """The gateway answers an invoke: the plugin's replica is up."""
    body = json.dumps({"capability": "model.infer", "payload": {"input": "ready?"}}).encode()
    req = urllib.request.Request(url + "/api/plugins/minilm/invoke", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def pytorch_runs(kit, args):
    try:
        import torch  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        emit(args.out, {"what": "pytorch", "skipped": f"not importable here: {e}"})
        return
    cmd = [sys.executable, os.path.join(REPO, "scripts/candle/bench_pytorch.py"), "--device",
           "cpu" if args.cpu else "cuda", "--dtypes", ",".join(args.torch_dtypes), "--batch-sizes",
           args.torch_batches, "--times", str(args.torch_times), "--repeat", "3"]
    env = {**os.environ, "BKG_TEST_MINILM_DIR": kit.model, "BKG_BENCH_THREADS": str(os.cpu_count())}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout
    for line in out.splitlines():
        emit(args.out, {"what": "pytorch + sentence-transformers, in-process", **json.loads(line)})


def accuracy(kit, args, inputs):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        emit(args.out, {"what": "accuracy", "skipped": f"not importable here: {e}"})
        return
    device = "cpu" if args.cpu else "cuda"
    model = SentenceTransformer(kit.model, device=device)  # the file's f16 weights, run in f32
    model = model.float()
    want = model.encode(sample_texts(inputs), convert_to_tensor=True).float().cpu()
    for dtype, got in args.samples.items():
        got = torch.tensor(got)
        cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
        emit(args.out, {"what": "accuracy", "dtype": dtype, "against": f"sentence-transformers f32 on {device}",
                        "texts": len(got), "min_cosine": round(cos.min().item(), 7)})


def table(out):
    rows = [json.loads(l) for l in open(os.path.join(out, "gpu.jsonl"))]
    lines = ["| what | dtype | set | per request | sentences/s | p50 ms | p99 ms | GPU busy % | cores | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "sentences_per_s" not in r:
            continue
        cores = " + ".join(f"{k[:-6]} {v}" for k, v in r.items() if k.endswith("_cores"))
        lines.append("| {} | {} | {} | {} | {:,.0f} | {} | {} | {} | {} | {} |".format(
            r["what"], r.get("dtype", ""), r.get("set", ""), r.get("sentences_per_request", r.get("mode", "")),
            r["sentences_per_s"], r.get("p50_ms", ""), r.get("p99_ms", ""), r.get("gpu_busy_pct", ""), cores,
            r.get("errors", "")))
    for r in rows:
        if r.get("what") == "accuracy" and "min_cosine" in r:
            lines.append(f"\naccuracy ({r['dtype']}, {r['texts']} texts, against {r['against']}): "
                         f"lowest cosine {r['min_cosine']}")
        if r.get("what") == "first start":
            lines.append(f"\nfirst start ({r['cache']}, {r['dtype']}): {r['ready_s']} s")
    with open(os.path.join(out, "gpu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", default="/tmp/bkg-gpu", help="the unpacked kit (scripts/gpu/pack.sh)")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/bkg-gpu-out"))
    p.add_argument("--cpu", action="store_true", help="dry run on this machine's CPU, short and small")
    p.add_argument("--clients", type=int, default=1024)
    p.add_argument("--wrk-threads", type=int, default=8)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dtypes", default="f16,bf16")
    p.add_argument("--per-request", default="1,32")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-batch-tokens", type=int, default=32768)
    p.add_argument("--max-wait-ms", type=int, default=2)
    p.add_argument("--torch-dtypes", default="f16,bf16,f32")
    p.add_argument("--torch-batches", default="32,256,1024")
    p.add_argument("--torch-times", type=int, default=8, help="the input lists repeated this often per encode()")
    p.add_argument("--only", default="start,runtime,gateway,pytorch,accuracy")
    args = p.parse_args()
    if args.cpu:
        args.clients, args.wrk_threads, args.duration, args.warmup = 32, 1, 2, 1
        args.dtypes, args.torch_dtypes, args.torch_batches, args.torch_times = "bf16", "f32", "32", 1
    args.dtypes = args.dtypes.split(",")
    args.torch_dtypes = args.torch_dtypes.split(",")
    args.per_request = [int(x) for x in args.per_request.split(",")]
    os.makedirs(args.out, exist_ok=True)
    kit = Kit(args)
    args.samples = {}
    with open(INPUTS) as f:
        inputs = {k: v for k, v in json.load(f).items() if k in ("short", "long")}
    work = tempfile.mkdtemp(prefix="bkg-gpu-")
    args.lua = os.path.join(work, "load.lua")
    with open(args.lua, "w") as f:
        f.write(LOAD_LUA)
    sets = {n: bodies(work, inputs, n) for n in args.per_request}
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "none"
    emit(args.out, {"what": "machine", "gpu": gpu, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                    "clients": args.clients, "duration_s": args.duration, "max_batch_size": args.max_batch_size,
                    "max_batch_tokens": args.max_batch_tokens, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    steps = args.only.split(",")
    for step, run in [("start", lambda: first_start(kit, args, work)),
                      ("runtime", lambda: runtime_runs(kit, args, work, sets, inputs)),
                      ("gateway", lambda: gateway_runs(kit, args, work, sets)),
                      ("pytorch", lambda: pytorch_runs(kit, args)),
                      ("accuracy", lambda: accuracy(kit, args, inputs))]:
        if step in steps:
            t = time.perf_counter()
            try:
                run()
            except Exception as e:  # one failed step must not cost the others' figures
                emit(args.out, {"what": step, "failed": repr(e)})
            print(f"# {step}: {time.perf_counter() - t:.0f} s", flush=True)
    table(args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
