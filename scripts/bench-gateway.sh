#!/usr/bin/env bash
# Benchmark: echo invoke in three configurations, same wrk load, one run:
#   1. through the gateway (API key auth, rate limiting at a limit not hit, JSON Schema
#      validation, metrics, request ids and W3C trace context on),
#   2. directly against the runtime,
#   3. through nginx (Debian) proxying to the same runtime (keep-alive upstream): the reference
#      for what any reverse proxy costs.
# The three alternate, ROUNDS times, so a slow minute of the shared VM hits all of them; the
# summary takes medians. Each run also reports the CPU time the proxy and the runtime spent per
# request (/proc/PID/stat), which varies far less than req/s on a shared machine.
# Plus the runtime's cold start (spawn → /readyz 200). Prints Markdown tables.
#   scripts/bench-gateway.sh [--duration 10] [--connections 32] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; CONNECTIONS=32; THREADS=2; ROUNDS=3
while (($#)); do case "$1" in
  --duration) DURATION=$2; shift 2;; --connections) CONNECTIONS=$2; shift 2;;
  --rounds) ROUNDS=$2; shift 2;;
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
BKG_PID=$!
for _ in $(seq 200); do grep -q "echo ready at" "$WORK/up.log" && break; sleep 0.05; done
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)
RUNTIME=$(curl -s -H "Authorization: Bearer $KEY" "$GATEWAY/api/plugins/echo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')
RUNTIME_PID=$(pgrep -P "$BKG_PID" -f plugin-runtime | head -1)

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
NGINX_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/readyz" && break; sleep 0.05; done
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

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

cpu_ticks() { # PID... → utime+stime summed
  local sum=0 p
  for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $sum
}

run() { # name url script duration proxy-pids → one line of results in $WORK/results
  local name=$1 url=$2 script=$3 duration=$4; shift 4
  local proxy0 runtime0 proxy1 runtime1
  proxy0=$(cpu_ticks "$@"); runtime0=$(cpu_ticks "$RUNTIME_PID")
  wrk -t$THREADS -c$CONNECTIONS -d${duration}s --latency -s "$script" "$url" >"$WORK/$name.txt"
  proxy1=$(cpu_ticks "$@"); runtime1=$(cpu_ticks "$RUNTIME_PID")
  echo "$name $((proxy1 - proxy0)) $((runtime1 - runtime0)) $(getconf CLK_TCK) $WORK/$name.txt" >>"$WORK/results"
}

# Warm-up (connections, caches, the JIT-less first calls), not recorded.
for path in gateway nginx direct; do
  case $path in
    gateway) run warm "$GATEWAY/api/plugins/echo/invoke" "$WORK/gateway.lua" 2 "$BKG_PID";;
    nginx) run warm "http://127.0.0.1:$NGINX_PORT/v1/invoke/echo" "$WORK/direct.lua" 2 $NGINX_WORKERS;;
    direct) run warm "$RUNTIME/v1/invoke/echo" "$WORK/direct.lua" 2;;
  esac
done
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  run "gateway-$round" "$GATEWAY/api/plugins/echo/invoke" "$WORK/gateway.lua" "$DURATION" "$BKG_PID"
  run "nginx-$round" "http://127.0.0.1:$NGINX_PORT/v1/invoke/echo" "$WORK/direct.lua" "$DURATION" $NGINX_WORKERS
  run "direct-$round" "$RUNTIME/v1/invoke/echo" "$WORK/direct.lua" "$DURATION"
done

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

python3 - "$WORK/results" <<'PY'
import re, statistics, sys

def latency_ms(text, p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

runs = {}
for line in open(sys.argv[1]):
    name, proxy_ticks, runtime_ticks, hz, path = line.split()
    text = open(path).read()
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    kind, round_ = name.rsplit("-", 1)
    us = lambda ticks: int(ticks) / int(hz) * 1e6 / requests
    runs.setdefault(kind, []).append({
        "round": int(round_),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50": latency_ms(text, 50), "p99": latency_ms(text, 99),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "proxy_us": us(proxy_ticks), "runtime_us": us(runtime_ticks),
    })

label = {"gateway": "gateway → runtime", "nginx": "nginx → runtime", "direct": "runtime directly"}
print("| round | path | req/s | p50 ms | p99 ms | proxy CPU µs/req | runtime CPU µs/req | non-2xx |")
print("|---|---|---|---|---|---|---|---|")
for r in sorted({x["round"] for v in runs.values() for x in v}):
    for kind in ("gateway", "nginx", "direct"):
        x = next(x for x in runs[kind] if x["round"] == r)
        proxy = "" if kind == "direct" else f"{x['proxy_us']:.1f}"
        print(f"| {r} | {label[kind]} | {x['rps']:,.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {proxy} | {x['runtime_us']:.1f} | {x['non2xx']} |")

med = lambda kind, key: statistics.median(x[key] for x in runs[kind])
print()
print("| path (median of rounds) | req/s | p50 ms | p99 ms | proxy CPU µs/req | runtime CPU µs/req |")
print("|---|---|---|---|---|---|")
for kind in ("gateway", "nginx", "direct"):
    proxy = "" if kind == "direct" else f"{med(kind, 'proxy_us'):.1f}"
    print(f"| {label[kind]} | {med(kind, 'rps'):,.0f} | {med(kind, 'p50'):.3f} | {med(kind, 'p99'):.3f} | {proxy} | {med(kind, 'runtime_us'):.1f} |")
ratios = [g["rps"] / n["rps"] for g, n in zip(runs["gateway"], runs["nginx"])]
added = med("gateway", "p99") - med("direct", "p99")
print()
print(f"gateway / nginx req/s: {med('gateway', 'rps') / med('nginx', 'rps'):.2f}x "
      f"(per round {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.8x); "
      f"gateway added p99 over direct: {added:.3f} ms (target <= 1 ms); "
      f"nginx added p99: {med('nginx', 'p99') - med('direct', 'p99'):.3f} ms")
print(f"proxy CPU per request: gateway {med('gateway', 'proxy_us'):.1f} µs, nginx (all workers) "
      f"{med('nginx', 'proxy_us'):.1f} µs")
bad = sum(x["non2xx"] for v in runs.values() for x in v)
if bad:
    sys.exit(f"{bad} answers were not 2xx: the figures above do not measure echo invokes")
PY
echo
echo "runtime cold start (spawn → /readyz 200), median of 10: ${cold} ms"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s × $ROUNDS rounds; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before: $LOAD_BEFORE"
