#!/usr/bin/env bash
# Both /metrics endpoints pass `promtool check metrics` (Debian package prometheus): the
# gateway's and every runtime's (echo and Candle), after traffic that fills every series kind:
# successes, a schema refusal, a plugin error and a rate-limited call.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
source scripts/test.d/lib.sh
BKG="${BKG_BIN:-${CARGO_TARGET_DIR:-target}/debug/bkg}"
command -v promtool >/dev/null || { echo "promtool missing: run scripts/setup.sh" >&2; exit 1; }
tmp="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

key="bkg_metricsCheck$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
mkdir -p "$tmp/plugins"
# echo with a tiny limit on `fail`, so a 429 is counted.
echo_with_fail_limit "$tmp/plugins/echo.yaml"
cp config/plugins/candle.yaml "$tmp/plugins/"
llm_manifest "$tmp/plugins/llm.yaml"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"; mport="$(free_port)"
BKG_API_KEY="$key" "$BKG" up --port "$port" --metrics-listen "127.0.0.1:$mport" \
  --plugins "$tmp/plugins" --keys-file "$tmp/keys.yaml" >"$tmp/up.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
murl="http://127.0.0.1:$mport"   # the gateway's /metrics: its own listener, not the API port
api() { curl -sS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
for id in echo candle llm; do
  for _ in $(seq 300); do
    api "$url/api/plugins/$id" 2>/dev/null | grep -q '"status":"running"' && break
    sleep 0.1
  done
  api "$url/api/plugins/$id" | grep -q '"status":"running"' \
    || { cat "$tmp/up.log" >&2; echo "FAIL: $id did not start" >&2; exit 1; }
done

api -o /dev/null "$url/api/plugins/echo/invoke" -d '{"capability":"echo","payload":{"x":1}}'
api -o /dev/null "$url/api/plugins/echo/invoke" -d '{"capability":"sleep","payload":{}}'      # 400
api -o /dev/null "$url/api/plugins/echo/invoke" -d '{"capability":"fail","payload":{}}'       # 500
code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/echo/invoke" -d '{"capability":"fail","payload":{}}')"
[ "$code" = 429 ] || { echo "FAIL: expected 429 from the rate limit, got $code" >&2; exit 1; }
api -o /dev/null "$url/api/plugins/candle/invoke" -d '{"capability":"model.infer","payload":{"input":["a short sentence","another one"]}}'
llm_chat_stream   # the token, time-to-first-token and inter-token series

check() {
  local name="$1" endpoint="$2"
  curl -fsS "$endpoint/metrics" >"$tmp/metrics.txt"
  if ! promtool check metrics <"$tmp/metrics.txt"; then
    echo "FAIL: promtool check metrics on the $name ($endpoint/metrics)" >&2; exit 1
  fi
  echo "ok: promtool check metrics: $name, $(grep -c '^# TYPE' "$tmp/metrics.txt") families"
}
grep -q 'bkg_gateway_rate_limited_requests_total{plugin="echo",capability="fail"} 1' \
  <(curl -fsS "$murl/metrics") || { echo "FAIL: the 429 was not counted" >&2; exit 1; }
check gateway "$murl"
code="$(curl -sS -o "$tmp/api-metrics.txt" -w '%{http_code}' "$url/metrics")"
[ "$code" = 404 ] && ! grep -q key_id "$tmp/api-metrics.txt" \
  || { echo "FAIL: the API port answers /metrics ($code) without a key" >&2; exit 1; }
for id in echo candle llm; do
  endpoint="$(api "$url/api/plugins/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"][0]["endpoint"])')"
  check "$id runtime" "$endpoint"
done
