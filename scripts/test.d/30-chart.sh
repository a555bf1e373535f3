#!/usr/bin/env bash
# The Helm chart (charts/bkg): lint and render with the default values and with
# charts/bkg/ci/*.yaml; every rendered object validates against the Kubernetes 1.37 schemas in
# strict mode, and the monitoring.coreos.com objects against prometheus-operator's own types; the
# rendered objects agree with the code (CRD, flags, labels, RBAC); the values schema refuses
# typos; the generated API key survives upgrades; checkov leaves no failed check, and every
# accepted exception carries its reason. Each check is shown to fail on a broken input too.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
BKG="${BKG_BIN:-target/debug/bkg}"
K8S_VERSION=1.37.0
CHART=charts/bkg
NS=bkg-system
NODE_CHART="$PWD/.tools/node-chart"
for tool in helm checkov kubernetes-validate node python3; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
[ -d "$NODE_CHART/node_modules/@kubernetes-models/prometheus-operator" ] \
  || { echo "$NODE_CHART missing: run scripts/setup.sh" >&2; exit 1; }
tmp="$(mktemp -d)"
fake_pid=""
cleanup() { [ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Helm never talks to a cluster here, except the fake API server of step 6.
export KUBECONFIG="$tmp/no-kubeconfig" HELM_CACHE_HOME="$tmp/helm-cache" HOME="$tmp/home"

# The monitoring files (files/alerts.rules.yaml, files/dashboards/*.json) belong to the monitoring
# work; when one is missing, the chart is checked from a copy with a placeholder in its place.
chart="$tmp/bkg"
cp -r "$CHART" "$chart"
if [ ! -f "$chart/files/alerts.rules.yaml" ]; then
  echo "note: files/alerts.rules.yaml missing; a placeholder stands in for it"
  printf 'groups:\n  - name: placeholder\n    rules:\n      - alert: Placeholder\n        expr: vector(0) > 1\n' \
    >"$chart/files/alerts.rules.yaml"
fi
if ! compgen -G "$chart/files/dashboards/*.json" >/dev/null; then
  echo "note: files/dashboards/*.json missing; a placeholder stands in for them"
  mkdir -p "$chart/files/dashboards"
  echo '{"title": "placeholder", "panels": []}' >"$chart/files/dashboards/placeholder.json"
fi

# 1. Lint and render: default values, every ci/ values file, and the variants the others miss.
variants=(--set operator.watchAllNamespaces=true --set crds.install=false
          --set apiKeys.existingSecret=my-keys --set apiKeys.existingSecretKey=keys
          --set operator.leaderElection.enabled=false --set networkPolicy.egress.enabled=false
          --set gateway.uiDir= --set otel.runtimeEndpoint=http://collector.o11y:4318
          --set 'networkPolicy.gatewayFrom[0].namespaceSelector.matchLabels.team=edge')
helm lint --strict "$chart" >/dev/null
helm template bkg "$chart" -n "$NS" >"$tmp/default.yaml"
renders=(default)
for values in "$CHART"/ci/*.yaml; do
  name="$(basename "$values" .yaml)"; name="${name%-values}"
  helm lint --strict "$chart" -f "$values" >/dev/null
  helm template "$name" "$chart" -n "$NS" -f "$values" >"$tmp/$name.yaml"
  renders+=("$name")
done
helm lint --strict "$chart" "${variants[@]}" >/dev/null
helm template variants "$chart" -n "$NS" "${variants[@]}" >"$tmp/variants.yaml"
renders+=(variants)
# The packaged chart (what .helmignore leaves) renders the same objects.
helm package "$chart" -d "$tmp/pkg" >/dev/null
helm template full "$tmp"/pkg/bkg-*.tgz -n "$NS" -f "$CHART/ci/full-values.yaml" >"$tmp/packaged.yaml"
[ "$(grep -c '^kind:' "$tmp/packaged.yaml")" = "$(grep -c '^kind:' "$tmp/full.yaml")" ] || fail "the packaged chart renders other objects"
echo "ok: helm lint --strict and helm template pass for: ${renders[*]} (and the packaged chart)"

# 2. Schemas: Kubernetes 1.37, strict, for the built-in kinds and the CRD; prometheus-operator's
#    types (runtime validators + TypeScript's excess-property check) for monitoring.coreos.com.
python3 - "$tmp" "${renders[@]}" <<'PY'
import json, sys, yaml
tmp, names = sys.argv[1], sys.argv[2:]
core, mon = [], []
for n in names:
    for d in yaml.safe_load_all(open(f"{tmp}/{n}.yaml")):
        if d:
            (mon if d["apiVersion"].startswith("monitoring.coreos.com/") else core).append(d)
yaml.safe_dump_all(core, open(f"{tmp}/core.yaml", "w"))
json.dump(mon, open(f"{tmp}/monitoring.json", "w"))
PY
core_count="$(grep -c '^kind:' "$tmp/core.yaml")"
kubernetes-validate --quiet --strict -k "$K8S_VERSION" "$tmp/core.yaml"
echo "ok: $core_count rendered Kubernetes objects pass kubernetes-validate --strict -k $K8S_VERSION"
sed '0,/^  revisionHistoryLimit:/s//  revisionHistoryLimt:/' "$tmp/core.yaml" >"$tmp/core-broken.yaml"
if kubernetes-validate --quiet --strict -k "$K8S_VERSION" "$tmp/core-broken.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted an unknown field"
fi
mkdir -p "$tmp/mon"
ln -s "$NODE_CHART/node_modules" "$tmp/mon/node_modules"
cat >"$tmp/mon/validate.mjs" <<'JS'
// monitoring.coreos.com/v1 objects (a JSON array) against @kubernetes-models/prometheus-operator,
// generated from prometheus-operator's Go API types: its runtime validators check types, required
// fields and formats; TypeScript's excess-property check on typed literals refuses unknown fields.
import { readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const dir = new URL(".", import.meta.url).pathname;
let failed = 0;
const ts = [];
objects.forEach((o, i) => {
  const name = `${o.kind}/${o.metadata?.name}`;
  const Model = o.apiVersion === "monitoring.coreos.com/v1" ? v1[o.kind] : undefined;
  if (!Model) { console.error(`FAIL ${name}: no schema for ${o.apiVersion}`); failed++; return; }
  try { new Model(o).validate(); } catch (e) { console.error(`FAIL ${name}: ${e.message}`); failed++; }
  ts.push(`import type { I${o.kind} as T${i} } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${o.kind}";`);
  ts.push(`export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`);
});
writeFileSync(`${dir}/objects.ts`, ts.join("\n") + "\n");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
try {
  execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022",
    "--module", "nodenext", "--moduleResolution", "nodenext", `${dir}/objects.ts`], { stdio: "pipe" });
} catch (e) { console.error(`FAIL unknown or mistyped fields:\n${e.stdout}`); failed++; }
if (failed) process.exit(1);
console.log(`ok: ${objects.length} monitoring.coreos.com/v1 objects (${[...new Set(objects.map((o) => o.kind))].join(", ")}) match prometheus-operator's types`);
JS
node "$tmp/mon/validate.mjs" "$tmp/monitoring.json"
python3 - "$tmp/monitoring.json" <<'PY'
import json, sys
objs = json.load(open(sys.argv[1]))
sm = next(o for o in objs if o["kind"] == "ServiceMonitor")
sm["spec"]["endpoints"][0]["intervall"] = "30s"
json.dump([sm], open(sys.argv[1].replace(".json", "-broken.json"), "w"))
PY
if node "$tmp/mon/validate.mjs" "$tmp/monitoring-broken.json" >/dev/null 2>&1; then
  fail "the prometheus-operator type check accepted an unknown field (spec.endpoints[0].intervall)"
fi

# 3. The chart agrees with the code: the CRD is the generated one, the env vars it sets are
#    flags of `bkg operator`/`bkg gateway`, the plugin NetworkPolicy selects the pods `bkg render`
#    builds, the RBAC rules are config/rbac's, the monitoring objects carry the monitoring files.
cmp -s crds/plugins.bkg.rs.yaml "$CHART/files/crds/plugins.bkg.rs.yaml" \
  || fail "$CHART/files/crds/plugins.bkg.rs.yaml differs from crds/plugins.bkg.rs.yaml: run make crd"
"$BKG" crd | cmp -s - crds/plugins.bkg.rs.yaml || fail "crds/plugins.bkg.rs.yaml is stale: run make crd"
"$BKG" operator --help >"$tmp/operator-help.txt"
"$BKG" gateway --help >"$tmp/gateway-help.txt"
"$BKG" render -f config/plugins/echo.yaml -f config/samples/gpu-candle.yaml -n "$NS" >"$tmp/plugin-children.yaml"
python3 - "$tmp" "$chart" <<'PY'
import base64, hashlib, json, re, sys, yaml
tmp, chart = sys.argv[1], sys.argv[2]
def load(name):
    return [d for d in yaml.safe_load_all(open(f"{tmp}/{name}.yaml")) if d]
def one(docs, kind, suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {len(found)} found"
    return found[0]
def check(cond, msg):
    if not cond:
        sys.exit(f"FAIL: {msg}")
default, full, variants = load("default"), load("full"), load("variants")

# CRD: the generated file, upgradable (templates/) and kept on uninstall; absent when turned off.
crd = one(default, "CustomResourceDefinition")
generated = yaml.safe_load(open("crds/plugins.bkg.rs.yaml"))
check(crd["spec"] == generated["spec"], "rendered CRD spec differs from crds/plugins.bkg.rs.yaml")
check(crd["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", "CRD lacks resource-policy keep")
check(not [d for d in variants if d["kind"] == "CustomResourceDefinition"], "crds.install=false still renders the CRD")

# Env vars: each BKG_*/POD_* variable set on a container is a flag of that command.
for docs in (default, full, variants):
    for comp in ("operator", "gateway"):
        dep = one(docs, "Deployment", f"-{comp}")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        check(c["args"][0] == comp, f"{comp} container does not run `bkg {comp}`")
        helps = set(re.findall(r"env: ([A-Z_]+)", open(f"{tmp}/{comp}-help.txt").read()))
        for e in c["env"]:
            if e["name"].startswith(("BKG_", "POD_")):
                check(e["name"] in helps, f"{comp}: {e['name']} is not a flag of `bkg {comp}`")
def env(docs, comp):
    c = one(docs, "Deployment", f"-{comp}")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}
op = env(default, "operator")
check(op["BKG_RUNTIME_IMAGE"] == "ghcr.io/bkg-rs/plugin-runtime:0.1.0", op["BKG_RUNTIME_IMAGE"])
check(op["BKG_RUNTIME_GPU_IMAGE"] == "ghcr.io/bkg-rs/plugin-runtime:0.1.0-cuda", op["BKG_RUNTIME_GPU_IMAGE"])
check(op["BKG_WATCH_NAMESPACE"] == "bkg-system" and op["BKG_LEADER_ELECT"] == "true", "operator namespace/leader env")
fop = env(full, "operator")
check(fop["BKG_RUNTIME_GPU_IMAGE"].startswith("registry.example.com/bkg/plugin-runtime:0.1.0-cuda@sha256:"), "GPU image value not wired")
check(fop["OTEL_EXPORTER_OTLP_ENDPOINT"] == env(full, "gateway")["OTEL_EXPORTER_OTLP_ENDPOINT"] != None, "OTLP endpoint not wired")
check("BKG_WATCH_NAMESPACE" not in env(variants, "operator"), "watchAllNamespaces still sets a namespace")
check(env(variants, "operator")["BKG_RUNTIME_OTLP_ENDPOINT"] == "http://collector.o11y:4318", "runtime OTLP endpoint not wired")
check("BKG_UI_DIR" not in env(variants, "gateway"), "gateway.uiDir='' still serves a UI")
check(fop["BKG_RUNTIME_IMAGE_PULL_SECRETS"] == "registry-credentials", "plugin pods do not get the pull secrets")
check("BKG_RUNTIME_IMAGE_PULL_SECRETS" not in op, "no pull secrets: none for plugin pods")

# Leader election: the Lease the operator is told to use is the one its Role may update.
for docs in (default, full):
    role = one(docs, "Role", "-leader-election")
    names = [n for r in role["rules"] for n in r.get("resourceNames", [])]
    check(names == [env(docs, "operator")["BKG_LEASE_NAME"]], f"Lease Role names {names}")
check(not [d for d in variants if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")],
      "leader election off still renders its Role")

# NetworkPolicy: selects the pods the operator builds (bkg render), on their container port,
# from the gateway pods only.
children = [d for d in yaml.safe_load_all(open(f"{tmp}/plugin-children.yaml")) if d]
pods = [d["spec"]["template"] for d in children if d["kind"] == "Deployment"]
for docs, ns in ((default, "bkg-system"), (full, "ml")):
    np = one(docs, "NetworkPolicy", "-plugins")
    check(np["metadata"]["namespace"] == ns, f"plugin NetworkPolicy in {np['metadata']['namespace']}, not {ns}")
    sel = np["spec"]["podSelector"]["matchLabels"]
    gw_labels = one(docs, "Deployment", "-gateway")["spec"]["template"]["metadata"]["labels"]
    for pod in pods:
        labels = pod["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sel.items()), f"plugin NetworkPolicy selector {sel} misses pod labels {labels}")
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        check([p["port"] for p in np["spec"]["ingress"][0]["ports"]] == [ports["http"]], "plugin NetworkPolicy: the gateway's port")
        for rule in np["spec"]["ingress"][1:]:
            check([p["port"] for p in rule["ports"]] == [ports["metrics"]], "metricsFrom must reach the metrics port only")
    peers = np["spec"]["ingress"][0]["from"]
    check(len(peers) == 1 and all(gw_labels.get(k) == v for k, v in peers[0]["podSelector"]["matchLabels"].items()),
          "only the gateway may reach the plugin protocol port")
    check(np["spec"]["policyTypes"] == ["Ingress"], "plugin NetworkPolicy types")
check(len(one(default, "NetworkPolicy", "-plugins")["spec"]["ingress"]) == 1, "no metricsFrom: no scrape rule")
check(len(one(full, "NetworkPolicy", "-plugins")["spec"]["ingress"]) == 2, "metricsFrom not allowed into plugins' metrics port")
check([e["port"] for e in one(full, "PodMonitor", "-plugins")["spec"]["podMetricsEndpoints"]] == ["metrics"],
      "the PodMonitor scrapes the runtimes' metrics port")
vfrom = one(variants, "NetworkPolicy", "-gateway")["spec"]["ingress"][0]["from"]
check(len(vfrom) == 2 and vfrom[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test",
      "a restricted gateway policy must still let the helm test pod in")
for name in ("-gateway", "-operator"):
    check("Egress" in one(default, "NetworkPolicy", name)["spec"]["policyTypes"], f"{name} egress not restricted")

# RBAC: the rules of config/rbac (least privilege, reviewed there), and no wildcards anywhere.
ref = {(d["kind"], d["metadata"]["name"]): d for f in ("operator", "gateway") for d in yaml.safe_load_all(open(f"config/rbac/{f}.yaml")) if d}
def rules(d):
    return [{k: v for k, v in r.items() if k != "resourceNames"} for r in d["rules"]]
for docs, kind in ((default, "Role"), (variants, "ClusterRole")):
    check(rules(one(docs, kind, "-operator")) == rules(ref["ClusterRole", "bkg-operator"]), f"operator {kind} rules differ from config/rbac")
check(rules(one(default, "Role", "-gateway")) == rules(ref["Role", "bkg-gateway"]), "gateway Role rules differ from config/rbac")
check(rules(one(default, "Role", "-leader-election")) == rules(ref["Role", "bkg-operator-leader-election"]), "Lease Role differs")
check(one(variants, "ClusterRole")["metadata"]["name"].startswith("bkg-system-"), "ClusterRole name lacks the namespace")
for docs in (default, full, variants):
    for d in docs:
        for r in d.get("rules", []):
            check("*" not in sum((r.get(k, []) for k in ("apiGroups", "resources", "verbs")), []), f"wildcard in {d['metadata']['name']}")

# Pods: restricted security, resources, probes (checkov checks these too; this names them).
for docs in (default, full):
    for d in docs:
        spec = d["spec"]["template"]["spec"] if d["kind"] == "Deployment" else d["spec"] if d["kind"] == "Pod" else None
        if spec is None:
            continue
        check(spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", d["metadata"]["name"])
        for c in spec["containers"]:
            sc = c["securityContext"]
            check(sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"], c["name"])
            check(c["resources"]["requests"] and c["resources"]["limits"], f"{c['name']} resources")
            if d["kind"] == "Deployment":
                check("livenessProbe" in c and "readinessProbe" in c, f"{c['name']} probes")
    for comp in ("operator", "gateway"):
        check(one(docs, "PodDisruptionBudget", f"-{comp}")["spec"]["maxUnavailable"] == 1, f"{comp} PDB")
gw = one(full, "Deployment", "-gateway")
check(gw["spec"]["replicas"] == 3 and one(full, "Deployment", "-operator")["spec"]["replicas"] == 2, "replica counts")
test = one(default, "Pod", "-test-health")
check(test["metadata"]["annotations"]["helm.sh/hook"] == "test" and "/healthz" in test["spec"]["containers"][0]["env"][0]["value"], "helm test pod")

# API keys: the generated file holds the hash of a `bkg apikey`-shaped key; the gateway mounts
# only the key file; an existing Secret is used as it is.
secret = one(default, "Secret", "-api-keys")
key = base64.b64decode(secret["data"]["admin-key"]).decode()
check(re.fullmatch(r"bkg_[0-9A-Za-z]{40}", key), f"generated key {key!r} is not bkg_ + 40 base62")
keyfile = yaml.safe_load(base64.b64decode(secret["data"]["keys.yaml"]))
check(keyfile["keys"] == [{"id": "admin", "hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(), "scopes": ["admin"]}], f"key file {keyfile}")
fkeys = yaml.safe_load(base64.b64decode(one(full, "Secret", "-api-keys")["data"]["keys.yaml"]))["keys"]
check([k["id"] for k in fkeys] == ["ops", "ci"], "extraKeys not in the key file")
vol = next(v for v in gw["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
check(vol["secret"]["items"] == [{"key": "keys.yaml", "path": "keys.yaml"}], "gateway mounts more than the key file")
check(not [d for d in variants if d["kind"] == "Secret"], "existingSecret still generates a Secret")
vvol = next(v for v in one(variants, "Deployment", "-gateway")["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
check(vvol["secret"]["secretName"] == "my-keys" and vvol["secret"]["items"][0]["key"] == "keys", "existingSecret not mounted")

# Ingress with TLS; monitoring objects carry the monitoring files.
ing = one(full, "Ingress")
check(ing["spec"]["ingressClassName"] == "nginx" and ing["spec"]["tls"][0]["secretName"] == "bkg-example-com-tls", "Ingress TLS")
check(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == gw["metadata"]["name"], "Ingress backend")
rule = one(full, "PrometheusRule")
check(rule["spec"]["groups"] == yaml.safe_load(open(f"{chart}/files/alerts.rules.yaml"))["groups"], "PrometheusRule groups differ from files/alerts.rules.yaml")
cm = one(full, "ConfigMap", "-dashboards")
import glob, os
files = sorted(os.path.basename(p) for p in glob.glob(f"{chart}/files/dashboards/*.json"))
check(sorted(cm["data"]) == files and cm["metadata"]["labels"]["grafana_dashboard"] == "1", "dashboards ConfigMap")
for f in files:
    check(json.loads(cm["data"][f]) == json.load(open(f"{chart}/files/dashboards/{f}")), f"dashboard {f} altered")
check(cm["metadata"]["namespace"] == "monitoring", "dashboards namespace")
kinds = sorted(d["kind"] for d in full if d["apiVersion"].startswith("monitoring.coreos.com/"))
check(kinds == ["PodMonitor", "PrometheusRule", "ServiceMonitor", "ServiceMonitor"], f"monitoring kinds {kinds}")
check(not [d for d in default if d["apiVersion"].startswith("monitoring.coreos.com/") or d["kind"] == "Ingress"], "monitoring/Ingress on by default")
print("ok: the chart agrees with the code (CRD, flags, plugin pod labels and port, RBAC, keys, monitoring files)")
PY
echo "ok: the chart's CRD equals crds/plugins.bkg.rs.yaml, which equals \`bkg crd\`"

# 4. values.schema.json refuses typos and wrong types, naming the field; the chart refuses
#    replicas without leader election.
refused() {  # refused <expected message> <helm args…>
  local want="$1"; shift
  if helm template t "$chart" "$@" >/dev/null 2>"$tmp/err"; then fail "helm accepted $*"; fi
  grep -qF -- "$want" "$tmp/err" || { cat "$tmp/err" >&2; fail "helm's error for $* does not say: $want"; }
}
refused "additional properties 'replicaz' not allowed" --set gateway.replicaz=3
refused "additional properties 'secretNam' not allowed" --set 'ingress.tls[0].secretNam=x' --set 'ingress.tls[0].hosts[0]=h'
refused "additional properties 'enable' not allowed" --set monitoring.serviceMonitor.enable=true
refused "at '/gateway/replicaCount'" --set gateway.replicaCount=two
refused "at '/images/control/pullPolicy'" --set images.control.pullPolicy=Sometimes
refused "at '/apiKeys/extraKeys/0/hash'" --set 'apiKeys.extraKeys[0].id=x' --set 'apiKeys.extraKeys[0].hash=plain' --set 'apiKeys.extraKeys[0].scopes[0]=read'
refused "needs operator.leaderElection.enabled" --set operator.replicaCount=2 --set operator.leaderElection.enabled=false
echo "ok: values.schema.json refuses 6 bad values, naming the field; 2 operators without a Lease are refused"

# 5. The generated key does not change on upgrade: render against a fake API server holding the
#    Secret (Helm's lookup reads it), with and without the plain key the user may have removed.
cat >"$tmp/fake-apiserver.py" <<'PY'
# Just enough of the Kubernetes API for `helm template --dry-run=server`: discovery, the one
# Secret it is given, empty lists and 404s for the rest, and create/patch echoed back.
import json, re, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
secret = json.load(open(sys.argv[2]))
GROUPS = {
    "v1": [("secrets", "Secret", True), ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
           ("configmaps", "ConfigMap", True), ("pods", "Pod", True)],
    "apps/v1": [("deployments", "Deployment", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True), ("ingresses", "Ingress", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
}
PLURALS = {r[0] for rs in GROUPS.values() for r in rs}
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in GROUPS if "/" in gv]})
        for gv, res in GROUPS.items():
            if path == ("/api/" if gv == "v1" else "/apis/") + gv:
                return self.reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": p, "singularName": k.lower(), "namespaced": n, "kind": k,
                     "verbs": ["get", "list", "create", "patch", "update", "delete"]} for p, k, n in res]})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
        if m and (m.group(1), m.group(2)) == (secret["metadata"]["namespace"], secret["metadata"]["name"]):
            return self.reply(200, secret)
        if path.rsplit("/", 1)[-1] in PLURALS:
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
    def echo(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self.reply(201, json.loads(body or b"{}"))
    do_POST = do_PATCH = do_PUT = echo
server = HTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
upgrade_render() {  # upgrade_render <existing secret json> <out>: the Secret helm would apply
  rm -f "$tmp/port"
  python3 "$tmp/fake-apiserver.py" "$tmp/port" "$1" & fake_pid=$!
  for _ in $(seq 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
  helm template bkg "$chart" -n "$NS" --dry-run=server --disable-openapi-validation \
    --kube-apiserver "http://127.0.0.1:$(cat "$tmp/port")" --show-only templates/apikeys-secret.yaml >"$2"
  kill "$fake_pid"; wait "$fake_pid" 2>/dev/null || true; fake_pid=""
}
python3 - "$tmp" <<'PY'
import base64, json, sys, yaml
tmp = sys.argv[1]
# The Secret as a first install left it (its generated key), and as it is once the user removed
# the plain copy.
first = next(d for d in yaml.safe_load_all(open(f"{tmp}/default.yaml")) if d and d["kind"] == "Secret")
first["metadata"].setdefault("annotations", {}).update({"meta.helm.sh/release-name": "bkg", "meta.helm.sh/release-namespace": "bkg-system"})
json.dump(first, open(f"{tmp}/secret-installed.json", "w"))
removed = json.loads(json.dumps(first))
del removed["data"]["admin-key"]
json.dump(removed, open(f"{tmp}/secret-key-removed.json", "w"))
PY
upgrade_render "$tmp/secret-installed.json" "$tmp/upgrade1.yaml"
upgrade_render "$tmp/secret-key-removed.json" "$tmp/upgrade2.yaml"
helm template bkg "$chart" -n "$NS" --show-only templates/apikeys-secret.yaml >"$tmp/fresh.yaml"
python3 - "$tmp" <<'PY'
import sys, yaml
tmp = sys.argv[1]
data = lambda f: next(d for d in yaml.safe_load_all(open(f"{tmp}/{f}")) if d and d["kind"] == "Secret")["data"]
installed, up1, up2, fresh = data("default.yaml"), data("upgrade1.yaml"), data("upgrade2.yaml"), data("fresh.yaml")
if up1 != installed:
    sys.exit("FAIL: an upgrade changed the generated API key Secret")
if up2 != {"keys.yaml": installed["keys.yaml"]}:
    sys.exit("FAIL: after the plain key was removed, an upgrade did not keep just the same key file")
if fresh["keys.yaml"] == installed["keys.yaml"]:
    sys.exit("FAIL: two fresh installs generated the same key (so the upgrade check proves nothing)")
print("ok: upgrades keep the generated API key (lookup against a fake API server); a fresh install makes a new one")
PY

# 6. NOTES.txt tells how to read the generated key.
helm install bkg "$chart" -n "$NS" --dry-run=client >"$tmp/notes.txt"
grep -qF "get secret bkg-api-keys -o jsonpath='{.data.admin-key}'" "$tmp/notes.txt" || fail "NOTES.txt does not tell how to read the key"
helm install bkg "$chart" -n "$NS" --dry-run=client --set apiKeys.existingSecret=my-keys >"$tmp/notes2.txt"
grep -qF "Secret my-keys" "$tmp/notes2.txt" || fail "NOTES.txt does not name the existing Secret"

# 7. checkov: no failed check; every skip is an annotation at the object with a reason. The
#    chart's own exceptions are listed in docs/HELM.md.
mkdir -p "$tmp/checkov"
for n in "${renders[@]}"; do cp "$tmp/$n.yaml" "$tmp/checkov/"; done
checkov_report() {  # checkov_report <dir> <json out>
  checkov -d "$1" --framework kubernetes --skip-download -o json >"$2" 2>"$tmp/checkov.err" || true
}
checkov_report "$tmp/checkov" "$tmp/checkov.json"
python3 - "$tmp/checkov.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report = report[0] if isinstance(report, list) else report
s, r = report["summary"], report["results"]
for c in r["failed_checks"]:
    print(f"FAIL checkov {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})", file=sys.stderr)
unexplained = [c for c in r["skipped_checks"] if len((c.get("check_result", {}).get("suppress_comment") or "").strip()) < 20]
for c in unexplained:
    print(f"FAIL checkov skip without a reason: {c['check_id']} on {c['resource']}", file=sys.stderr)
if s["parsing_errors"]:
    print(f"FAIL checkov could not parse: {r['parsing_errors']}", file=sys.stderr)
if s["failed"] or unexplained or s["parsing_errors"] or not s["passed"]:
    sys.exit(1)
by_id = {}
for c in r["skipped_checks"]:
    by_id.setdefault(c["check_id"], set()).add(c["resource"].split(".")[0])
skips = ", ".join(k + " on " + "/".join(sorted(v)) for k, v in sorted(by_id.items()))
print(f"ok: checkov on {s['resource_count']} objects: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped with reasons ({skips})")
PY
# …and it does fail a chart that gets a check wrong.
mkdir -p "$tmp/checkov-broken"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$tmp/default.yaml" >"$tmp/checkov-broken/default.yaml"
checkov_report "$tmp/checkov-broken" "$tmp/checkov-broken.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r=r[0] if isinstance(r,list) else r; sys.exit(0 if any(c["check_id"]=="CKV_K8S_22" for c in r["results"]["failed_checks"]) else 1)' \
  "$tmp/checkov-broken.json" || fail "checkov did not fail a writable root filesystem"
echo "ok: chart checks passed"
