#!/usr/bin/env bash
# Benchmark: brainml predictions/s through the plugin runtime's HTTP API (JSON in and out,
# tract on WORKERS threads, wrk with CONNECTIONS connections) against onnxruntime in-process
# (Python, session.run on WORKERS threads, one intra-op thread each) on the same model and the
# same inputs, in one run. For each model of plugins/brainml/testdata/ and each batch size
# (rows per call). Prints a Markdown table for docs/BENCHMARKS.md.
#   scripts/brainml/bench.sh [--duration 10] [--connections 8] [--workers 2] [--batches "1 64"]
#                            [--models "iris_forest tiny_cnn"] [--bin target/release/plugin-runtime]
# onnxruntime comes from BKG_BRAINML_PYTHON (a Python with onnxruntime and numpy), else a venv
# made here (.tools/venv-brainml, from PyPI).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10; CONNECTIONS=8; WORKERS=2; BATCHES="1 64"; MODELS="iris_forest tiny_cnn"; BIN=
while (($#)); do case "$1" in
  --duration) DURATION=$2; shift 2;; --connections) CONNECTIONS=$2; shift 2;;
  --workers) WORKERS=$2; shift 2;; --batches) BATCHES=$2; shift 2;;
  --models) MODELS=$2; shift 2;;
  --bin) BIN=$2; shift 2;;  # a plugin-runtime already built (with the brainml feature)
  *) echo "unknown argument $1" >&2; exit 2;; esac; done

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
PY=${BKG_BRAINML_PYTHON:-}
if [ -z "$PY" ]; then
  PY=.tools/venv-brainml/bin/python
  [ -x "$PY" ] || { python3 -m venv .tools/venv-brainml && "$PY" -m pip install -q onnxruntime numpy; }
fi
if [ -z "$BIN" ]; then
  # Only brainml compiled in: the release build needs neither Candle nor rustface.
  cargo build -q --release --locked -p bkg-plugin-runtime --bin plugin-runtime --no-default-features --features brainml
  BIN=${CARGO_TARGET_DIR:-target}/release/plugin-runtime
fi
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

rows=()
for model in $MODELS; do
  onnx="$PWD/plugins/brainml/testdata/$model.onnx" ref="$PWD/plugins/brainml/testdata/$model.reference.json"
  "$BIN" --plugin brainml --id "$model" --listen 127.0.0.1:0 --addr-file "$WORK/$model.addr" \
    --log-format text --max-queue 4096 \
    --config "{\"model\":{\"path\":\"$onnx\"},\"workers\":$WORKERS,\"queue_capacity\":1024}" \
    >"$WORK/$model.log" 2>&1 &
  pid=$!
  for _ in $(seq 400); do [ -s "$WORK/$model.addr" ] && curl -sf "http://$(cat "$WORK/$model.addr")/readyz" >/dev/null && break; sleep 0.05; done
  url="http://$(cat "$WORK/$model.addr")/v1/invoke/predict"
  for batch in $BATCHES; do
    # The payload: BATCH rows cut (cyclically) from the reference inputs, {shape, data}.
    "$PY" - "$ref" "$batch" >"$WORK/body.json" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1])); batch = int(sys.argv[2])
inputs = {}
for name, t in ref["inputs"].items():
    n, row = t["shape"][0], len(t["data"]) // t["shape"][0]
    data = [t["data"][(i % n) * row + j] for i in range(batch) for j in range(row)]
    inputs[name] = {"shape": [batch] + t["shape"][1:], "data": data}
print(json.dumps({"inputs": inputs}))
PY
    code=$(curl -s -o "$WORK/answer.json" -w '%{http_code}' -H 'content-type: application/json' --data-binary @"$WORK/body.json" "$url")
    [ "$code" = 200 ] || { echo "FAIL: $model batch $batch answered $code: $(cat "$WORK/answer.json")" >&2; exit 1; }
    cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/body.json"); wrk.body = f:read("*a"); f:close()
LUA
    wrk -t2 -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "$url" >/dev/null   # warm-up
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$url" >"$WORK/wrk.txt"
    if grep -q "Non-2xx" "$WORK/wrk.txt"; then echo "FAIL: non-2xx answers:" >&2; cat "$WORK/wrk.txt" >&2; exit 1; fi
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt"); p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
    ort=$("$PY" scripts/brainml/bench_ort.py "$onnx" "$ref" --batch "$batch" --threads "$WORKERS" --duration "$DURATION")
    read -r ort_calls ort_p50 ort_p99 ort_version < <("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f %.3fms %.3fms %s" % (d["calls_per_s"], d["p50_ms"], d["p99_ms"], d["onnxruntime"]))' "$ort")
    rows+=("| $model | $batch | $(printf '%.0f' "$rps") | $(awk -v r="$rps" -v b="$batch" 'BEGIN {printf "%.0f", r * b}') | $p50 / $p99 | $ort_calls | $((ort_calls * batch)) | $ort_p50 / $ort_p99 |")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

echo "brainml: $BIN (cargo build --release, brainml only, unless --bin) with workers=$WORKERS, wrk -t2 -c$CONNECTIONS -d${DURATION}s;"
echo "onnxruntime $ort_version in-process, $WORKERS Python threads × 1 intra-op thread, ${DURATION}s."
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before: $LOAD_BEFORE"
echo
echo "| model | rows/call | brainml calls/s | brainml predictions/s | brainml p50 / p99 | onnxruntime calls/s | onnxruntime predictions/s | onnxruntime p50 / p99 |"
echo "|---|---:|---:|---:|---|---:|---:|---|"
printf '%s\n' "${rows[@]}"
