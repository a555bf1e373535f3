#!/usr/bin/env bash
# Benchmark: a keyless connection flood against `bkg up` started under `ulimit -n 1024` (soft and
# hard, so the gateway cannot raise it). The client holds N idle connections (half of them with
# half a request head) and, while it holds them, times /healthz and a keyed echo invoke on fresh
# connections. Reports what the gateway kept, what it shed, its RSS before, during and after, and
# whether it logged "Too many open files". Prints a Markdown table.
#   scripts/bench-flood.sh [--connections 10000] [--fd-limit 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=10000; FD_LIMIT=1024
while (($#)); do case "$1" in
  --connections) CONNECTIONS=$2; shift 2;; --fd-limit) FD_LIMIT=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done

[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release --locked -p bkg -p bkg-plugin-runtime
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=bkg_benchKey0123456789abcdefghijklmnopqrstu
mkdir -p "$WORK/plugins"
cp config/plugins/echo.yaml "$WORK/plugins/"

( ulimit -n "$FD_LIMIT"; BKG_API_KEY=$KEY exec "$BIN/bkg" up --port 0 --metrics-listen 127.0.0.1:0 --plugins "$WORK/plugins" \
    --keys-file "$WORK/keys.yaml" >"$WORK/up.log" 2>&1 ) &
BKG_PID=$!
for _ in $(seq 200); do grep -q "echo ready at" "$WORK/up.log" && break; sleep 0.05; done
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)
METRICS=$(grep -o 'metrics on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)   # /metrics: its own listener
# The client needs more descriptors than it opens.
ulimit -n $((CONNECTIONS + 1024)) 2>/dev/null || true

python3 - "$GATEWAY" "$KEY" "$BKG_PID" "$CONNECTIONS" "$METRICS" <<'PY'
import asyncio, json, re, sys, time, urllib.request

gateway, key, pid, n, metrics = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host, port = gateway.removeprefix("http://").split(":")

def rss():
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) // 1024

def metric(name):
    text = urllib.request.urlopen(f"{metrics}/metrics", timeout=60).read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")

def timed(req):
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        status = r.status
    return status, (time.perf_counter() - t) * 1000

def probes():
    health = timed(f"{gateway}/healthz")
    invoke = timed(urllib.request.Request(
        f"{gateway}/api/plugins/echo/invoke", method="POST",
        data=json.dumps({"capability": "echo", "payload": {"x": 1}}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}))
    return health, invoke

async def main():
    for _ in range(200):
        probes()
    before = rss()
    writers, opened, failed = [], 0, 0
    t0 = time.perf_counter()
    for i in range(n):
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except Exception:
            failed += 1
            continue
        if i % 2:
            w.write(b"POST /api/plugins/echo/invoke HTTP/1.1\r\nhost: x\r\nx-slow: ")
        writers.append(w)
        opened += 1
    await asyncio.sleep(1)
    held = metric("bkg_gateway_connections")
    during = rss()
    results = await asyncio.get_running_loop().run_in_executor(None, lambda: [probes() for _ in range(20)])
    evicted = metric("bkg_gateway_connections_evicted_total")
    closed = sum(1 for w in writers if w.transport.is_closing() or w.is_closing())
    for w in writers:
        w.close()
    await asyncio.sleep(3)
    after = rss()
    hs = sorted(r[0][1] for r in results); iv = sorted(r[1][1] for r in results)
    ok = all(r[0][0] == 200 and r[1][0] == 200 for r in results)
    print(f"| flood connections opened by the client | {opened} (refused or timed out: {failed}) |")
    print(f"| connections the gateway held (bkg_gateway_connections) | {held:.0f} |")
    print(f"| idle connections closed for room (evicted_total) | {evicted:.0f} |")
    print(f"| 20 × /healthz during the flood, median / max | {hs[10]:.1f} ms / {hs[-1]:.1f} ms |")
    print(f"| 20 × keyed echo invoke during the flood, median / max | {iv[10]:.1f} ms / {iv[-1]:.1f} ms |")
    print(f"| every probe answered 200 | {ok} |")
    print(f"| gateway RSS before / during / 3 s after closing | {before} / {during} / {after} MiB |")

asyncio.run(main())
PY
echo "| 'Too many open files' in the gateway's log | $(grep -c 'Too many open files' "$WORK/up.log" || true) |"
echo "| gateway open-files limit | $(grep -o 'nofile=[0-9]*' "$WORK/up.log" | head -1) |"
