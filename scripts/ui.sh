#!/usr/bin/env bash
# The admin UI (admin-ui/): install, build, test, run and benchmark it.
#
#   scripts/ui.sh install   npm ci from the committed package-lock.json (into admin-ui/node_modules)
#   scripts/ui.sh build     production build into admin-ui/dist/admin-ui/browser
#   scripts/ui.sh unit      component and store tests (ng test: Vitest + jsdom)
#   scripts/ui.sh e2e       browser test: Debian chromium + playwright-core against a real `bkg up`
#   scripts/ui.sh bench     bundle size and time to the first plugin card (see admin-ui/BENCH-NOTES.md)
#   scripts/ui.sh dev       run bkg up with the built UI, for a person (prints the URL and key)
#   scripts/ui.sh ci        install, build, unit, e2e: what `make test` runs (scripts/test.d/40-admin-ui.sh)
#   scripts/ui.sh gen-types    `bkg openapi` -> src/app/core/api.schema.json -> api.d.ts (openapi-typescript)
#   scripts/ui.sh check-types  fail if those two differ from what `bkg openapi` gives now (41-ui-types.sh)
#
# gen-types and check-types need target/debug/bkg (cargo build -p bkg; or set BKG_BIN).
# e2e, bench and dev need target/debug/bkg and target/debug/plugin-runtime
# (cargo build -p bkg -p bkg-plugin-runtime; or BKG_BIN, with plugin-runtime next to it) and
# /usr/bin/chromium (scripts/setup.sh installs it).
set -euo pipefail
SELF="$(realpath "$0")"
if [ -n "${BKG_BIN:-}" ]; then BKG_BIN="$(realpath -m "$BKG_BIN")"; export BKG_BIN; fi
cd "$(dirname "$0")/../admin-ui"
export NG_CLI_ANALYTICS=false NO_UPDATE_NOTIFIER=1 npm_config_fund=false npm_config_audit=false

step() { printf '\n== admin-ui: %s\n' "$*"; }

STAMP=node_modules/.package-lock.sha
install() {
  step "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  sha256sum package-lock.json | cut -c1-16 >"$STAMP"
}
# npm ci only when node_modules is missing or older than the lock file (bench, dev).
ensure() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha256sum package-lock.json | cut -c1-16)" ]; then return; fi
  install
}
build() { step "ng build (production)"; npx ng build --configuration production; }
unit() { step "ng test (Vitest + jsdom)"; npx ng test --watch=false; }
uidir_note() {
  local bin="${BKG_BIN:-../target/debug/bkg}"
  if [ -x "$bin" ] && ! "$bin" up --help | grep -q -- '--ui-dir'; then
    cat <<'NOTE'
!! NOTE: this bkg has no `up --ui-dir` yet (the gateway part is pending), so the e2e test serves
!!       the built UI from its own small static server that proxies /api and /ws to `bkg up`.
!!       Once `bkg up --ui-dir` lands, the same test runs against the gateway serving the UI.
NOTE
    return 1
  fi
}
e2e() {
  step "browser e2e (chromium + playwright-core, bkg up)"
  [ -x "${BKG_BIN:-../target/debug/bkg}" ] || { echo "${BKG_BIN:-target/debug/bkg} missing: cargo build -p bkg -p bkg-plugin-runtime" >&2; exit 1; }
  if uidir_note; then node e2e/run.mjs; else node e2e/run.mjs --static; fi
}

case "${1:-ci}" in
  install) install ;;
  build) ensure; build ;;
  unit|test) unit ;;
  e2e) e2e ;;
  bench) ensure; build; step "bench"; node e2e/bench.mjs ;;
  dev)
    ensure; [ -f dist/admin-ui/browser/index.html ] || build
    if uidir_note; then exec node e2e/stack.mjs; else exec node e2e/stack.mjs --static; fi ;;
  ci) install; build; unit; e2e ;;
  gen-types) ensure; step "API types from bkg openapi"; node tools/api-types.mjs ;;
  check-types) ensure; step "API types against bkg openapi"; node tools/api-types.mjs --check ;;
  *) sed -n '2,16p' "$SELF"; exit 2 ;;
esac
