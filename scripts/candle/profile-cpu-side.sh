#!/usr/bin/env bash
# Issue 15: the CPU-side work per sentence of the Candle runtime over HTTP (tokenization, JSON,
# HTTP, batching) next to the forward pass, from a `perf` profile of the runtime under wrk load
# (one short sentence per POST /v1/invoke/model.infer, all-MiniLM-L6-v2). On a GPU the forward
# leaves the CPU and what is left here is what keeps the GPU waiting.
#
#   scripts/candle/profile-cpu-side.sh [RUNTIME...]   # each binary in turn; default: this tree's release build
#
# For each binary: sentences/s, the runtime's CPU time per sentence (utime + stime from /proc),
# and that time split by what the profile's samples were in (self time per symbol, grouped by
# crate: see CATEGORIES below). Prints a table and one JSON line per binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
DTYPE="${DTYPE:-bf16}"
INPUTS=plugins/candle/testdata/bench_inputs.json
MODEL_DIR="${BKG_TEST_MINILM_DIR:-$PWD/.tools/all-MiniLM-L6-v2}"
[ -f "$MODEL_DIR/model.safetensors" ] || { echo "no model at $MODEL_DIR: run scripts/setup.sh" >&2; exit 1; }
for tool in wrk perf; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$([ $tool = perf ] && echo linux-perf || echo wrk)" >/dev/null; }
done
if [ $# -eq 0 ]; then
  cargo build -q --release --locked -p bkg-plugin-runtime
  set -- "${CARGO_TARGET_DIR:-target}/release/plugin-runtime"
fi
WORK=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

python3 - "$INPUTS" "$WORK" <<'PY'
import json, sys
sets = json.load(open(sys.argv[1]))
with open(f"{sys.argv[2]}/short.lua", "w") as f:
    f.write("return {\n")
    for text in sets["short"]:
        f.write("  [==[" + json.dumps({"input": text}) + "]==],\n")
    f.write("}\n")
PY
cat >"$WORK/load.lua" <<'LUA'
local bodies = dofile(os.getenv("BKG_BODIES"))
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/v1/invoke/model.infer", nil, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format('RESULT %d %.1f %d\n', summary.requests, summary.duration / 1e6, errors))
end
LUA

# CPU seconds (user + system) the process has used.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), runtime threads=$THREADS, wrk -t1 -c$CONNECTIONS -d${DURATION}s, dtype=$DTYPE, short set, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
for runtime in "$@"; do
  config=$(printf '{"model":{"path":"%s"},"dtype":"%s","batching":true,"max_batch_size":32,"max_wait_ms":2}' "$MODEL_DIR" "$DTYPE")
  rm -f "$WORK/addr"
  RAYON_NUM_THREADS="$THREADS" "$runtime" --plugin candle --id candle --listen 127.0.0.1:0 \
    --addr-file "$WORK/addr" --config "$config" --max-concurrency 256 --log-format text \
    >"$WORK/runtime.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [ -s "$WORK/addr" ] && curl -fs -o /dev/null "http://$(cat "$WORK/addr")/readyz" && break
    sleep 0.05
  done
  url="http://$(cat "$WORK/addr")"
  curl -fs -o /dev/null "$url/readyz" || { cat "$WORK/runtime.log" >&2; exit 1; }
  bytes=$(curl -fs -H 'content-type: application/json' -d '{"input":"A man is eating food."}' "$url/v1/invoke/model.infer" | wc -c)
  BKG_BODIES="$WORK/short.lua" wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/load.lua" "$url" >/dev/null
  before=$(cpu_s "$pid")
  perf record -q -F 1999 -p "$pid" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  perf_pid=$!
  read -r requests seconds errors < <(BKG_BODIES="$WORK/short.lua" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/load.lua" "$url" | sed -n 's/^RESULT //p')
  after=$(cpu_s "$pid")
  wait "$perf_pid" || true
  perf report -q -i "$WORK/perf.data" --no-children --sort sym --stdio 2>/dev/null >"$WORK/report.txt" || true
  python3 - "$runtime" "$requests" "$seconds" "$errors" "$before" "$after" "$bytes" "$WORK/report.txt" <<'PY'
import json, re, sys
runtime, requests, seconds, errors, before, after, body_bytes, report = sys.argv[1:]
requests, seconds, cpu = int(requests), float(seconds), float(after) - float(before)
# What a symbol's self time counts as; the first pattern that matches wins.
CATEGORIES = [
    ("tokenization", r"tokenizers::|fancy_regex|regex|aho_corasick|unicode_normali|unicode_categor|onig|esaxx|tokenize::"),
    ("JSON", r"serde_json|serde::|ryu::|zmij|itoa::|schema::|base64|RawValue"),
    ("forward", r"gemm|candle|kernels::|layers::|models::|pooling::|engine::|half::|matmul|bf16|f16|avx512"),
    ("kernel: network, scheduling, syscalls", r"\[k\]"),
    ("HTTP + runtime", r"hyper|tokio|axum|tower|h2::|http::|mio::|bytes::|bkg_plugin_runtime|epoll|syscall"),
    ("allocator + copies", r"malloc|free|memcpy|memmove|memset|realloc|_int_|calloc|alloc::"),
    ("batching + threads", r"batcher|rayon|crossbeam|sched_yield|futex|std::sync|parking"),
]
shares = {name: 0.0 for name, _ in CATEGORIES}
shares["other"] = 0.0
top = []
for line in open(report):
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, sym = float(m.group(1)), m.group(2).strip()
    top.append((pct, sym))
    for name, pattern in CATEGORIES:
        if re.search(pattern, sym):
            shares[name] += pct
            break
    else:
        shares["other"] += pct
total = sum(shares.values()) or 1.0
per_sentence_us = cpu / max(requests, 1) * 1e6
out = {
    "runtime": runtime, "sentences_per_s": round(requests / seconds, 1), "errors": int(errors),
    "answer_bytes": int(body_bytes), "cpu_us_per_sentence": round(per_sentence_us, 1),
    "split_us_per_sentence": {k: round(per_sentence_us * v / total, 1) for k, v in shares.items()},
}
print(f"\n## {runtime}\n")
print(f"{out['sentences_per_s']} sentences/s, {errors} errors, one answer {body_bytes} bytes, "
      f"runtime CPU {per_sentence_us:.0f} µs per sentence\n")
print("| work | share of samples | µs per sentence |\n|---|---|---|")
for k, v in sorted(shares.items(), key=lambda kv: -kv[1]):
    print(f"| {k} | {100 * v / total:.1f} % | {per_sentence_us * v / total:.1f} |")
print("\nTop symbols outside the forward pass:")
forward = re.compile(CATEGORIES[2][1])
for pct, sym in [t for t in top if not forward.search(t[1])][:12]:
    print(f"  {pct:5.2f} %  {sym[:110]}")
print("RESULT " + json.dumps(out))
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
echo "# end loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
