#!/usr/bin/env bash
# Benchmark: activation latency from zero replicas on `bkg up` (release build). For each plugin
# (echo, and Candle on CPU with all-MiniLM-L6-v2 from the offline HF cache), TRIALS times: wait
# until the autoscaler took the plugin to zero (no process left), send one invoke, and time it
# from the request sent to the answer received: the gateway holds it, asks the supervisor for a
# replica, the runtime starts (Candle loads its model) and the held call is released. Also the
# same invoke on a warm replica, the reference. Prints a Markdown table (p50/p99/max).
#   scripts/bench-activation.sh [--trials 20]
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=20
while (($#)); do case "$1" in
  --trials) TRIALS=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
source scripts/env.sh
cargo build -q --release --locked -p bkg -p bkg-plugin-runtime
BIN=target/release
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=bkg_benchKey0123456789abcdefghijklmnopqrstu
mkdir -p "$WORK/plugins"
# The sample manifests, autoscaled 0..1, to zero one second after their last invoke.
SCALING='  scaling: {minReplicas: 0, maxReplicas: 1, scaleDownDelaySeconds: 0, scaleToZeroAfterSeconds: 1, activationTimeoutSeconds: 60}'
for p in echo candle; do
  sed "s/^  replicas: 1\$/$SCALING/" "config/plugins/$p.yaml" >"$WORK/plugins/$p.yaml"
  grep -q 'scaling:' "$WORK/plugins/$p.yaml"
done
BKG_API_KEY=$KEY "$BIN/bkg" up --port 0 --plugins "$WORK/plugins" --keys-file "$WORK/keys.yaml" \
  --rate-limit-rps 1000000 --rate-limit-burst 1000000 >"$WORK/up.log" 2>&1 &
for _ in $(seq 200); do grep -q 'listening on http' "$WORK/up.log" && break; sleep 0.05; done
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)

python3 - "$GATEWAY" "$KEY" "$TRIALS" <<'EOF'
import json, sys, time, urllib.request

gateway, key, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {
    "echo": {"capability": "echo", "payload": {"hello": "world"}},
    "candle": {"capability": "model.infer", "payload": {"input": "a cold start"}},
}

def get(path):
    req = urllib.request.Request(gateway + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)

def invoke(plugin):
    body = json.dumps(calls[plugin]).encode()
    req = urllib.request.Request(
        f"{gateway}/api/plugins/{plugin}/invoke", data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - started) * 1000

def at_zero(plugin, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = get(f"/api/plugins/{plugin}")
        if p["replicas"] == 0 and not p["instances"]:
            return
        time.sleep(0.02)
    raise SystemExit(f"{plugin} never went back to zero")

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

print(f"Activation from zero replicas, {trials} trials each (ms, request sent → answer received)\n")
print("| plugin | from zero p50 | p99 | max | warm replica p50 |")
print("|---|---:|---:|---:|---:|")
for plugin in calls:
    cold = []
    for _ in range(trials):
        at_zero(plugin)
        cold.append(invoke(plugin))
    warm = [invoke(plugin) for _ in range(trials)]
    print(f"| {plugin} | {pct(cold, .5):.1f} | {pct(cold, .99):.1f} | {max(cold):.1f} | {pct(warm, .5):.2f} |")
EOF
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
