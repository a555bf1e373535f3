#!/usr/bin/env bash
# Kubernetes manifests: what `bkg render` prints for every sample Plugin validates against the
# Kubernetes 1.37 schemas in strict mode (rendering checks each spec.config against the schema
# its implementation publishes, so every Plugin under config/ passes that check too); the
# samples validate against the generated CRD schema; a manifest with an unknown field, or with a
# config its implementation refuses, is refused with a message naming the field.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
BKG="${BKG_BIN:-target/debug/bkg}"
K8S_VERSION=1.37.0
command -v kubernetes-validate >/dev/null || { echo "kubernetes-validate missing: run scripts/setup.sh" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

samples=(config/plugins/*.yaml config/samples/*.yaml)
# Every Plugin under config/ (any depth), not only the folders rendered below.
mapfile -t plugins < <(grep -rl --include='*.yaml' --include='*.yml' '^kind: Plugin' config | sort)

# 1. Rendered children, strict (unknown properties are errors).
"$BKG" render -f config/plugins -f config/samples >"$tmp/rendered.yaml"
kinds="$(grep -c '^kind:' "$tmp/rendered.yaml")"
kubernetes-validate --quiet --strict -k "$K8S_VERSION" "$tmp/rendered.yaml"
echo "ok: $kinds rendered objects from ${#samples[@]} samples pass kubernetes-validate --strict -k $K8S_VERSION"
"$BKG" render -n other-ns -f config/samples/gpu-candle.yaml | grep -q 'namespace: other-ns'
"$BKG" render "${plugins[@]/#/-f}" >/dev/null
echo "ok: ${#plugins[@]} Plugins under config/ pass their implementation's config schema"
grep -q 'nvidia.com/gpu: ' "$tmp/rendered.yaml"
# metric cpu renders an autoscaling/v2 HPA on the Deployment, and the strict check above saw it.
"$BKG" render -f config/samples/cpu-scaled-echo.yaml >"$tmp/hpa.yaml"
python3 - "$tmp/hpa.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
assert len(hpa) == 1 and hpa[0]["apiVersion"] == "autoscaling/v2", [d["kind"] for d in docs]
spec = hpa[0]["spec"]
assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "echo-cpu-scaled"}, spec
assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 5), spec
assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}, spec
assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120, spec
PY
grep -q '^kind: HorizontalPodAutoscaler' "$tmp/rendered.yaml" || { echo "FAIL: no HPA among the rendered samples" >&2; exit 1; }
echo "ok: metric cpu renders an autoscaling/v2 HorizontalPodAutoscaler (validated strictly above)"

# The strict check does refuse what Kubernetes would (guards against a silently lax validator).
sed '0,/^  replicas:/s//  replicaz:/' "$tmp/rendered.yaml" >"$tmp/broken.yaml"
if kubernetes-validate --quiet --strict -k "$K8S_VERSION" "$tmp/broken.yaml" >/dev/null 2>&1; then
  echo "FAIL: kubernetes-validate accepted an unknown field" >&2; exit 1
fi

# 2. The CRD itself, and the samples against its schema (structural: no undeclared fields).
kubernetes-validate --quiet --strict -k "$K8S_VERSION" crds/plugins.bkg.rs.yaml
python3 - crds/plugins.bkg.rs.yaml "${samples[@]}" <<'PY'
import sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

def undeclared(value, schema, path):
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            if path == "" and k in ("apiVersion", "kind", "metadata"):
                continue
            if props is not None and k in props:
                undeclared(v, props[k], p)
            elif isinstance(extra, dict):
                undeclared(v, extra, p)
            else:
                yield_errors.append(f"{p}: field not declared in the CRD schema")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            undeclared(item, schema["items"], f"{path}[{i}]")

failed = False
for f in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        yield_errors = []
        undeclared(doc, schema, "")
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
            yield_errors.append(f"{'.'.join(map(str, e.absolute_path))}: {e.message}")
        for e in yield_errors:
            print(f"FAIL {f}: {e}", file=sys.stderr)
        failed |= bool(yield_errors)
if failed:
    sys.exit(1)
print(f"ok: {len(sys.argv) - 2} sample manifests match the CRD schema")
PY

# 3. RBAC for operator and gateway: valid, and no wildcards.
kubernetes-validate --quiet --strict -k "$K8S_VERSION" config/rbac/*.yaml
if grep -nE '"\*"|\[\*\]|- \*' config/rbac/*.yaml; then
  echo "FAIL: wildcard in config/rbac" >&2; exit 1
fi
echo "ok: config/rbac is valid and has no wildcards"

# 4. A bad field is refused, and the message names it.
if "$BKG" render -f scripts/test.d/fixtures/bad-field.yaml >"$tmp/out" 2>"$tmp/err"; then
  echo "FAIL: bkg render accepted scripts/test.d/fixtures/bad-field.yaml" >&2; exit 1
fi
grep -q 'spec.replica: unknown field "replica"' "$tmp/err" || { echo "FAIL: message does not name spec.replica:" >&2; cat "$tmp/err" >&2; exit 1; }
echo "ok: a manifest with a bad field is refused naming spec.replica"

# 5. A config its implementation's schema refuses is refused, and the message names the field.
if "$BKG" render -f scripts/test.d/fixtures/bad-config.yaml >"$tmp/out" 2>"$tmp/err"; then
  echo "FAIL: bkg render accepted scripts/test.d/fixtures/bad-config.yaml" >&2; exit 1
fi
grep -q 'spec.config.dtype: "f64" is not one of' "$tmp/err" || { echo "FAIL: message does not name spec.config.dtype:" >&2; cat "$tmp/err" >&2; exit 1; }
echo "ok: a manifest with a bad config is refused naming spec.config.dtype"

# 6. Bad scaling is refused, and the message names the field.
for case in bad-scaling-bounds:spec.scaling.minReplicas bad-cpu-scaling:spec.resources.cpu; do
  fixture="scripts/test.d/fixtures/${case%%:*}.yaml" field="${case#*:}"
  if "$BKG" render -f "$fixture" >"$tmp/out" 2>"$tmp/err"; then
    echo "FAIL: bkg render accepted $fixture" >&2; exit 1
  fi
  grep -q "$field:" "$tmp/err" || { echo "FAIL: message does not name $field:" >&2; cat "$tmp/err" >&2; exit 1; }
done
echo "ok: bad scaling is refused naming spec.scaling.minReplicas and spec.resources.cpu"
