#!/usr/bin/env bash
# Benchmark: echo invoke through the gateway vs directly against the runtime, same wrk load, same
# run; plus the runtime's cold start (spawn → /readyz 200). Prints a Markdown table.
#   scripts/bench-gateway.sh [--duration 10] [--connections 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; CONNECTIONS=32; THREADS=2
while (($#)); do case "$1" in
  --duration) DURATION=$2; shift 2;; --connections) CONNECTIONS=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release --locked -p bkg -p bkg-plugin-runtime
BIN=target/release
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=bkg_benchKey0123456789abcdefghijklmnopqrstu
mkdir -p "$WORK/plugins"
cp config/plugins/echo.yaml "$WORK/plugins/"

BKG_API_KEY=$KEY "$BIN/bkg" up --port 0 --plugins "$WORK/plugins" --keys-file "$WORK/keys.yaml" \
  >"$WORK/up.log" 2>&1 &
for _ in $(seq 200); do grep -q "echo ready at" "$WORK/up.log" && break; sleep 0.05; done
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)
RUNTIME=$(curl -s -H "Authorization: Bearer $KEY" "$GATEWAY/api/plugins/echo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')

cat >"$WORK/gateway.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"capability":"echo","payload":{"x":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
cat >"$WORK/direct.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"x":1}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # name url script
  wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s "$3" "$2" >"$WORK/$1.txt"
  python3 - "$WORK/$1.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def pct(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {pct(50):.3f} {pct(99):.3f} {non2xx.group(1) if non2xx else 0}")
PY
}
read -r g_rps g_p50 g_p99 g_err < <(run gateway "$GATEWAY/api/plugins/echo/invoke" "$WORK/gateway.lua")
read -r d_rps d_p50 d_p99 d_err < <(run direct "$RUNTIME/v1/invoke/echo" "$WORK/direct.lua")

# Cold start: spawn → /readyz answers 200, 10 runs.
starts=()
for i in $(seq 10); do
  rm -f "$WORK/addr"
  t0=$(date +%s%N)
  "$BIN/plugin-runtime" --plugin echo --listen 127.0.0.1:0 --addr-file "$WORK/addr" >/dev/null 2>&1 &
  pid=$!
  until [ -s "$WORK/addr" ] && curl -sf "http://$(cat "$WORK/addr")/readyz" >/dev/null; do sleep 0.001; done
  t1=$(date +%s%N)
  kill $pid; wait $pid 2>/dev/null || true
  starts+=($(( (t1 - t0) / 1000 )))
done
cold=$(printf '%s\n' "${starts[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}')

echo "| path | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
echo "| gateway → runtime (auth, validation, metrics) | $g_rps | $g_p50 | $g_p99 | $g_err |"
echo "| runtime directly | $d_rps | $d_p50 | $d_p99 | $d_err |"
python3 -c "print(f'| gateway added latency | | {$g_p50-$d_p50:.3f} | {$g_p99-$d_p99:.3f} | |')"
echo
echo "runtime cold start (spawn → /readyz 200), median of 10: ${cold} ms"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
