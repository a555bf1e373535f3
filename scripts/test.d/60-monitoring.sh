#!/usr/bin/env bash
# Dashboards and alert rules against real data: promtool checks and unit-tests the rules, then a
# real Prometheus (Debian package) scrapes the local stack (gateway, echo and Candle runtimes)
# and a `bkg operator`, while the stack serves successes, a schema refusal, a plugin error, a 429
# and Candle embeddings; monitoring_check.py then evaluates every dashboard and rule expression
# through Prometheus's HTTP API.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
source scripts/test.d/lib.sh
BKG="${BKG_BIN:-${CARGO_TARGET_DIR:-target}/debug/bkg}"
RULES=charts/bkg/files/alerts.rules.yaml
DASHBOARDS=charts/bkg/files/dashboards
for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
[ -x "$BKG" ] || { echo "$BKG missing: run cargo build --workspace --locked" >&2; exit 1; }

promtool check rules "$RULES"
promtool test rules scripts/test.d/fixtures/monitoring-alerts.test.yaml
python3 "$DASHBOARDS/generate.py" --check
echo "ok: dashboards match generate.py"
[ "$(readlink config/dashboards)" = ../charts/bkg/files/dashboards ] && [ -f config/dashboards/bkg-overview.json ] \
  || { echo "FAIL: config/dashboards must be a relative symlink to ../charts/bkg/files/dashboards" >&2; exit 1; }

tmp="$(mktemp -d)"; stack=""; prom=""; operator=""
stop() {  # SIGTERM, then SIGKILL after 5 s (the operator may sit in a connect backoff)
  local p="$1"
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in $prom $operator $stack; do stop "$p"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The local stack: echo (with a tiny limit on `fail`, so a 429 is counted), Candle embeddings
# and Candle generating with a tiny Llama (llm: the token series).
key="bkg_monitoringCheck$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
mkdir -p "$tmp/plugins"
cp config/plugins/candle.yaml "$tmp/plugins/"
llm_manifest "$tmp/plugins/llm.yaml"
echo_with_fail_limit "$tmp/plugins/echo.yaml"
# echo is autoscaled from zero (at most one replica, so Prometheus keeps scraping the same
# runtime): its first invoke is held and activates it, which fills the scaling series.
sed -i 's/^  replicas: 1$/  scaling: {minReplicas: 0, maxReplicas: 1, scaleToZeroAfterSeconds: 3600}/' "$tmp/plugins/echo.yaml"
grep -q 'scaling:' "$tmp/plugins/echo.yaml" || { echo "FAIL: echo.yaml has no scaling" >&2; exit 1; }
port="$(free_port)"; mport="$(free_port)"   # the gateway's /metrics has its own listener
BKG_API_KEY="$key" "$BKG" up --port "$port" --metrics-listen "127.0.0.1:$mport" \
  --plugins "$tmp/plugins" --keys-file "$tmp/keys.yaml" >"$tmp/up.log" 2>&1 &
stack=$!
url="http://127.0.0.1:$port"
api() { curl -sS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }

# The operator's real /metrics: it cannot reconcile without an API server, so it points at a
# closed port and serves its series (at zero) while its watches back off.
printf '%s\n' 'apiVersion: v1' 'kind: Config' \
  'clusters: [{name: none, cluster: {server: "http://127.0.0.1:1"}}]' \
  'users: [{name: none, user: {token: none}}]' \
  'contexts: [{name: none, context: {cluster: none, user: none}}]' \
  'current-context: none' >"$tmp/kubeconfig"
oport="$(free_port)"
KUBECONFIG="$tmp/kubeconfig" "$BKG" operator --metrics-addr "127.0.0.1:$oport" --leader-elect false \
  >"$tmp/operator.log" 2>&1 &
operator=$!

for _ in $(seq 300); do curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break; sleep 0.1; done
code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/echo/invoke" -d '{"capability":"echo","payload":{"wake":1}}')"
[ "$code" = 200 ] || { cat "$tmp/up.log" >&2; echo "FAIL: the invoke that activates echo from zero answered $code" >&2; exit 1; }
for id in echo candle llm; do
  for _ in $(seq 300); do
    api "$url/api/plugins/$id" 2>/dev/null | grep -q '"status":"running"' && break
    sleep 0.1
  done
  api "$url/api/plugins/$id" | grep -q '"status":"running"' \
    || { cat "$tmp/up.log" >&2; echo "FAIL: $id did not start" >&2; exit 1; }
done
curl -fsS -o /dev/null "http://127.0.0.1:$oport/metrics" \
  || { cat "$tmp/operator.log" >&2; echo "FAIL: the operator serves no /metrics" >&2; exit 1; }
runtimes="$(for id in echo candle llm; do
  api "$url/api/plugins/$id" | python3 -c 'import json,sys
for i in json.load(sys.stdin)["instances"]: print(i["endpoint"].split("://", 1)[1])'
done)"

# A Prometheus scraping gateway, operator and every runtime each second, with the rules loaded.
# The runtimes get no extra target labels: the queries must find the plugin id themselves.
pport="$(free_port)"
python3 - "$tmp/prometheus.yml" "$mport" "$oport" "$PWD/$RULES" $runtimes <<'PY'
import json, sys
path, gateway, operator, rules, *runtimes = sys.argv[1:]
config = {
    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
    "rule_files": [rules],
    "scrape_configs": [
        {"job_name": "bkg-gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway}"]}]},
        {"job_name": "bkg-operator", "static_configs": [{"targets": [f"127.0.0.1:{operator}"]}]},
        {"job_name": "bkg-plugins", "static_configs": [{"targets": runtimes}]},
    ],
}
open(path, "w").write(json.dumps(config, indent=2))  # JSON is YAML
PY
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom=$!
purl="http://127.0.0.1:$pport"
targets=$(( $(wc -w <<<"$runtimes") + 2 ))
up_targets() {
  curl -fsS "$purl/api/v1/query" --data-urlencode 'query=count(up == 1)' 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null \
    || echo 0
}
for _ in $(seq 100); do [ "$(up_targets)" = "$targets" ] && break; sleep 0.2; done
[ "$(up_targets)" = "$targets" ] \
  || { cat "$tmp/prometheus.log" >&2; echo "FAIL: Prometheus does not scrape all $targets targets" >&2; exit 1; }
echo "ok: Prometheus scrapes the gateway, the operator and $((targets - 2)) runtimes"

# Two identical rounds of traffic with scrapes in between: the first creates the series, the
# second moves them, so rates and quantiles have something to show.
traffic() {
  local code body
  for i in $(seq 20); do
    api -o /dev/null "$url/api/plugins/echo/invoke" -d "{\"capability\":\"echo\",\"payload\":{\"i\":$i}}"
  done
  for ms in 5 20 50; do
    api -o /dev/null "$url/api/plugins/echo/invoke" -d "{\"capability\":\"sleep\",\"payload\":{\"ms\":$ms}}"
  done
  code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/echo/invoke" -d '{"capability":"sleep","payload":{}}')"
  [ "$code" = 400 ] || { echo "FAIL: schema refusal answered $code, not 400" >&2; exit 1; }
  code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/echo/invoke" -d '{"capability":"fail","payload":{}}')"
  [ "$code" = 500 ] || { echo "FAIL: echo fail answered $code, not 500" >&2; exit 1; }
  code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/echo/invoke" -d '{"capability":"fail","payload":{}}')"
  [ "$code" = 429 ] || { echo "FAIL: the rate-limited call answered $code, not 429" >&2; exit 1; }
  for body in '"one sentence"' '["a short sentence","another one","and a third"]'; do
    for _ in 1 2 3; do
      code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/candle/invoke" \
        -d "{\"capability\":\"model.infer\",\"payload\":{\"input\":$body}}")"
      [ "$code" = 200 ] || { echo "FAIL: candle model.infer answered $code" >&2; exit 1; }
    done
  done
  code="$(api -o /dev/null -w '%{http_code}' "$url/api/plugins/candle/invoke" -d '{"capability":"embeddings","payload":{"input":"hello"}}')"
  [ "$code" = 200 ] || { echo "FAIL: candle embeddings answered $code" >&2; exit 1; }
  llm_chat_stream; llm_chat_stream
}
# Waits until Prometheus holds what was sent before the call: every target scraped twice since
# (the targets API may show a scrape just before its samples are stored; a target's next scrape
# starts only once they are). The 60 s deadline only turns a hang into a failure.
scraped() {
  python3 - "$purl" <<'PY' || { cat "$tmp/prometheus.log" >&2; exit 1; }
import json, re, sys, time, urllib.request
from datetime import datetime

url = sys.argv[1]
deadline = time.time() + 60

def seconds(stamp):  # RFC 3339 with up to nanoseconds, as Go writes it
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not m:
        return 0.0
    zone = "+00:00" if m[3] == "Z" else m[3]
    whole = datetime.fromisoformat(m[1] + zone).timestamp()
    return whole + float("0." + (m[2] or "0"))

def scraped_after(since):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as r:
                targets = json.load(r)["data"]["activeTargets"]
        except OSError:
            targets = []
        if targets and all(t["health"] == "up" and seconds(t["lastScrape"]) > since for t in targets):
            return
        time.sleep(0.1)
    sys.exit("FAIL: Prometheus did not scrape every target within 60 s")

scraped_after(time.time())
scraped_after(time.time())
PY
}
traffic
scraped
traffic
scraped

python3 scripts/test.d/monitoring_check.py --prometheus "$purl" --dashboards "$DASHBOARDS" \
  --rules "$RULES" --doc docs/MONITORING.md ${BKG_MONITORING_VERBOSE:+--verbose}
