#!/usr/bin/env bash
# The crate graph follows the processes (docs/ARCHITECTURE.md): the runtime links no Kubernetes
# crate, the gateway does not depend on the operator's controller, an echo-only runtime builds
# without Candle, and bkg-wire stays serde-only. `cargo tree` over the lock file, no build.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
fail=0
tree() { cargo tree --locked --offline -e normal --prefix none "$@" | sed 's/ (.*//; s/ v[0-9].*//' | sort -u; }
refuse() { # WHAT PATTERN ARGS...: fail if the tree of ARGS has a crate matching PATTERN
  local what=$1 pattern=$2; shift 2
  local hits; hits="$(tree "$@" | grep -E "$pattern" || true)"
  if [ -n "$hits" ]; then
    echo "FAIL: $what: $(echo "$hits" | tr '\n' ' ')" >&2; fail=1
  else
    echo "ok: $what"
  fi
}
refuse "bkg-plugin-runtime links no kube or k8s-openapi" '^(kube|kube-.*|k8s-openapi)$' -p bkg-plugin-runtime
refuse "bkg-gateway does not depend on bkg-operator" '^bkg-operator$' -p bkg-gateway
refuse "an echo-only runtime (--no-default-features --features echo) has no Candle" '^(candle-.*|bkg-plugin-candle)$' \
  -p bkg-plugin-runtime --no-default-features --features echo
refuse "bkg-wire is serde only" '^(tokio|hyper|axum|kube|k8s-openapi|jsonschema|reqwest)$' -p bkg-wire --all-features
exit $fail
