#!/usr/bin/env bash
# Issue 4 (b): sentences/s and p50/p99 of the Candle plugin through the plugin runtime's HTTP API
# (POST /v1/invoke/model.infer, one sentence per request) with CONNECTIONS concurrent clients,
# dynamic batching on and then off, on the same inputs (plugins/candle/testdata/bench_inputs.json,
# short and long sets), in one run. wrk drives the load from one thread of its own; the runtime
# gets THREADS inference threads. Prints one JSON line per measurement.
#
#   scripts/candle/bench-http.sh                      # THREADS=2 DURATION=10 CONNECTIONS=32 DTYPE=bf16
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
DTYPE="${DTYPE:-bf16}"
INPUTS=plugins/candle/testdata/bench_inputs.json
MODEL_DIR="${BKG_TEST_MINILM_DIR:-$PWD/.tools/all-MiniLM-L6-v2}"
[ -f "$MODEL_DIR/model.safetensors" ] || { echo "no model at $MODEL_DIR: run scripts/setup.sh" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release --locked -p bkg-plugin-runtime
RUNTIME="${CARGO_TARGET_DIR:-target}/release/plugin-runtime"
WORK=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# One Lua table of request bodies per input set; every wrk connection walks it in order.
python3 - "$INPUTS" "$WORK" <<'PY'
import json, sys
sets = json.load(open(sys.argv[1]))
for name in ("short", "long"):
    with open(f"{sys.argv[2]}/{name}.lua", "w") as f:
        f.write("return {\n")
        for text in sets[name]:
            body = json.dumps({"input": text})
            f.write("  [==[" + body + "]==],\n")
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
  io.write(string.format('RESULT {"requests":%d,"sentences_per_s":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,"errors":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end
LUA

echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), runtime threads=$THREADS, wrk -t1 -c$CONNECTIONS -d${DURATION}s, dtype=$DTYPE, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
for batching in true false; do
  config=$(printf '{"model":{"path":"%s"},"dtype":"%s","batching":%s,"max_batch_size":32,"max_wait_ms":2}' "$MODEL_DIR" "$DTYPE" "$batching")
  rm -f "$WORK/addr"
  RAYON_NUM_THREADS="$THREADS" "$RUNTIME" --plugin candle --id candle --listen 127.0.0.1:0 \
    --addr-file "$WORK/addr" --config "$config" --max-concurrency 256 --log-format text \
    >"$WORK/runtime.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [ -s "$WORK/addr" ] && curl -fs -o /dev/null "http://$(cat "$WORK/addr")/readyz" && break
    sleep 0.05
  done
  url="http://$(cat "$WORK/addr")"
  curl -fs -o /dev/null "$url/readyz" || { cat "$WORK/runtime.log" >&2; exit 1; }
  for set in short long; do
    # A short warm-up, then the measured run.
    BKG_BODIES="$WORK/$set.lua" wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/load.lua" "$url" >/dev/null
    result=$(BKG_BODIES="$WORK/$set.lua" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/load.lua" "$url" | sed -n 's/^RESULT //p')
    rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    echo "{\"contender\":\"candle-http\",\"dtype\":\"$DTYPE\",\"batching\":$batching,\"set\":\"$set\",\"connections\":$CONNECTIONS,\"peak_rss_kb\":$rss_kb,${result#\{}"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
echo "# end loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
