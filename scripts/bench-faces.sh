#!/usr/bin/env bash
# Benchmark: face detection on rustface's own test image (test.png, 2 MB, the crate's example),
# at 1 and 8 concurrent clients, in one run:
#   reference  rustface's detector run directly in one process (examples/bench_detect.rs in
#              plugins/rustyface): decode, grey, detect per image, one detector per client thread;
#   runtime    POST /v1/invoke/face.detect on the plugin runtime, {"image": "<base64>"};
#   gateway    POST /api/plugins/rustyface/invoke?capability=face.detect through `bkg up` with a
#              key: the raw image/png body, and the same image as a multipart/form-data upload.
# Same parameters everywhere (config/plugins/rustyface.yaml: min face 20, score 2.0, pyramid 0.8,
# step 4); every answer is checked for the reference's face count first. Load: wrk (keep-alive,
# --latency), images/s = requests/s. The manifest's per-key rate limit (20/s) is taken out of
# the copy the benchmark runs and the gateway's default set out of reach, so the gateway is
# measured, not the limit.
#   scripts/bench-faces.sh [--duration 10] [--debug]
# --debug runs the debug builds instead (a check of this script, not figures to record).
# BKG_BIN=path/to/bkg uses that gateway binary instead of building one (say which in the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; PROFILE=release
while (($#)); do case "$1" in
  --duration) DURATION=$2; shift 2;;
  --debug) PROFILE=debug; shift;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
CARGO_PROFILE=(--release); [ "$PROFILE" = debug ] && CARGO_PROFILE=()

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
# The runtime with RustyFace only: the benchmark needs no Candle in its release build.
[ -n "${BKG_BIN:-}" ] || cargo build -q "${CARGO_PROFILE[@]}" --locked -p bkg
if [ "$PROFILE" = release ]; then
  cargo build -q --release --locked -p bkg-plugin-runtime --no-default-features --features rustyface
else # the e2e tests' runtime, as it is
  cargo build -q --locked -p bkg-plugin-runtime
fi
cargo build -q "${CARGO_PROFILE[@]}" --locked -p bkg-plugin-rustyface --example bench_detect
BIN=target/$PROFILE
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# rustface's package directory, offline, as the e2e test finds it.
HOST=$(rustc -vV | sed -n 's/^host: //p')
PNG=$(cargo metadata --format-version 1 --offline --filter-platform "$HOST" | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
p = next(p for p in meta["packages"] if p["name"] == "rustface")
print(os.path.join(os.path.dirname(p["manifest_path"]), "test.png"))')

WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=bkg_benchKey0123456789abcdefghijklmnopqrstu
mkdir -p "$WORK/plugins"
grep -v 'rateLimit:' config/plugins/rustyface.yaml >"$WORK/plugins/rustyface.yaml"

BKG_API_KEY=$KEY "${BKG_BIN:-$BIN/bkg}" up --port 0 --plugins "$WORK/plugins" --keys-file "$WORK/keys.yaml" \
  --runtime-bin "$BIN/plugin-runtime" --rate-limit-rps 1000000 --rate-limit-burst 1000000 \
  >"$WORK/up.log" 2>&1 &
for _ in $(seq 600); do grep -q "rustyface ready at" "$WORK/up.log" && break; sleep 0.05; done
grep -q "rustyface ready at" "$WORK/up.log" || { cat "$WORK/up.log"; exit 1; }
GATEWAY=$(grep -o 'listening on http://[0-9.:]*' "$WORK/up.log" | head -1 | cut -d' ' -f3)
RUNTIME=$(curl -s -H "Authorization: Bearer $KEY" "$GATEWAY/api/plugins/rustyface" | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')

# The three bodies and their wrk scripts (Lua strings hold bytes as they are).
BOUNDARY=bkgBenchBoundary7MA4YWxkTrZu0gW
python3 - "$PNG" "$WORK" "$BOUNDARY" <<'PY'
import base64, json, sys
png, work, b = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3]
open(f"{work}/runtime.body", "w").write(json.dumps({"image": base64.b64encode(png).decode()}))
open(f"{work}/raw.body", "wb").write(png)
open(f"{work}/form.body", "wb").write(
    f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="test.png"\r\n'
    f"Content-Type: image/png\r\n\r\n".encode() + png + f"\r\n--{b}--\r\n".encode())
PY
lua() { # name content-type [auth]
  local auth=""
  [ -z "${3:-}" ] || auth="wrk.headers[\"Authorization\"] = \"Bearer $KEY\""
  cat >"$WORK/$1.lua" <<LUA
local f = io.open("$WORK/$1.body", "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "$2"
$auth
LUA
}
lua runtime application/json
lua raw image/png auth
lua form "multipart/form-data; boundary=$BOUNDARY" auth
declare -A URL=(
  [runtime]="$RUNTIME/v1/invoke/face.detect"
  [raw]="$GATEWAY/api/plugins/rustyface/invoke?capability=face.detect"
  [form]="$GATEWAY/api/plugins/rustyface/invoke?capability=face.detect"
)

# Each path answers the reference's faces before it is timed.
REF=$("$BIN/examples/bench_detect" "$PNG" 1 0)
FACES=$(echo "$REF" | python3 -c 'import json,sys; print(json.load(sys.stdin)["faces"])')
for path in runtime raw form; do
  auth=(); [ "$path" = runtime ] || auth=(-H "Authorization: Bearer $KEY")
  ct=$(sed -n 's/^wrk.headers\["Content-Type"\] = "\(.*\)"$/\1/p' "$WORK/$path.lua")
  got=$(curl -sf "${auth[@]}" -H "Content-Type: $ct" --data-binary "@$WORK/$path.body" "${URL[$path]}" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["faces"]))')
  [ "$got" = "$FACES" ] || { echo "$path found $got faces, the reference $FACES" >&2; exit 1; }
done

: >"$WORK/results"
for clients in 1 8; do
  threads=$((clients < 2 ? clients : 2))
  echo "reference $clients $("$BIN/examples/bench_detect" "$PNG" "$clients" "$DURATION")" >>"$WORK/results"
  for path in runtime raw form; do
    wrk -t$threads -c$clients -d"${DURATION}s" --timeout 60s --latency -s "$WORK/$path.lua" "${URL[$path]}" >"$WORK/$path-$clients.txt"
    echo "$path $clients $WORK/$path-$clients.txt" >>"$WORK/results"
  done
done

python3 - "$WORK/results" "$FACES" <<'PY'
import json, re, sys

def wrk(path):
    text = open(path).read()
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        sys.exit(f"{path}: {m.group(1)} failed requests\n{text}")
    def ms(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    n = int(re.search(r"(\d+) requests in", text).group(1))
    return {"images_per_s": rps, "p50_ms": ms(50), "p99_ms": ms(99), "images": n}

names = {"reference": "rustface in-process (reference)", "runtime": "plugin runtime, JSON base64",
         "raw": "gateway, raw image/png", "form": "gateway, multipart/form-data"}
print(f"\n{sys.argv[2]} faces in each answer\n")
print("| path | clients | images/s | p50 ms | p99 ms | images |")
print("|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    kind, clients, rest = line.split(" ", 2)
    r = json.loads(rest) if kind == "reference" else wrk(rest.strip())
    print(f"| {names[kind]} | {clients} | {r['images_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['images']} |")
PY
echo
echo "profile: $PROFILE; load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
