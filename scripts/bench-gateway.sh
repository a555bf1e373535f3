#!/usr/bin/env bash
# Benchmark: echo invoke in three configurations, same wrk load, one run:
#   1. through the gateway (API key auth, rate limiting at a limit not hit, JSON Schema
#      validation, metrics and trace spans on),
#   2. directly against the runtime,
#   3. through nginx (Debian) proxying to the same runtime (keep-alive upstream): the reference
#      for what any reverse proxy costs.
# Plus the runtime's cold start (spawn → /readyz 200). Prints a Markdown table.
#   scripts/bench-gateway.sh [--duration 10] [--connections 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; CONNECTIONS=32; THREADS=2
while (($#)); do case "$1" in
  --duration) DURATION=$2; shift 2;; --connections) CONNECTIONS=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done

for tool in wrk nginx; do
  command -v $tool >/dev/null || [ -x /usr/sbin/$tool ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build -q --release --locked -p bkg -p bkg-plugin-runtime
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BIN=target/release
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=bkg_benchKey0123456789abcdefghijklmnopqrstu
mkdir -p "$WORK/plugins"
cp config/plugins/echo.yaml "$WORK/plugins/"

BKG_API_KEY=$KEY "$BIN/bkg" up --port 0 --plugins "$WORK/plugins" --keys-file "$WORK/keys.yaml" \
  --rate-limit-rps 1000000 --rate-limit-burst 1000000 >"$WORK/up.log" 2>&1 &
for _ in $(seq 200); do grep -q "echo ready at" "$WORK/up.log" && break; sleep 0.05; done
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)
RUNTIME=$(curl -s -H "Authorization: Bearer $KEY" "$GATEWAY/api/plugins/echo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')

NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  upstream runtime { server ${RUNTIME#http://}; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://runtime;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/readyz" && break; sleep 0.05; done

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
read -r n_rps n_p50 n_p99 n_err < <(run nginx "http://127.0.0.1:$NGINX_PORT/v1/invoke/echo" "$WORK/direct.lua")

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
echo "| gateway → runtime (auth, rate limit, validation, metrics, trace ids) | $g_rps | $g_p50 | $g_p99 | $g_err |"
echo "| nginx → runtime (plain reverse proxy) | $n_rps | $n_p50 | $n_p99 | $n_err |"
echo "| runtime directly | $d_rps | $d_p50 | $d_p99 | $d_err |"
python3 -c "print(f'| gateway added latency over direct | | {$g_p50-$d_p50:.3f} | {$g_p99-$d_p99:.3f} | |')"
python3 -c "print(f'| nginx added latency over direct | | {$n_p50-$d_p50:.3f} | {$n_p99-$d_p99:.3f} | |')"
echo
python3 -c "print(f'gateway / nginx req/s: {$g_rps/$n_rps:.2f}x (target >= 0.8x); gateway added p99: {$g_p99-$d_p99:.3f} ms (target <= 1 ms)')"
echo
echo "runtime cold start (spawn → /readyz 200), median of 10: ${cold} ms"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before: $LOAD_BEFORE"
