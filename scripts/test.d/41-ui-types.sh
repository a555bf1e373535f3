#!/usr/bin/env bash
# The admin UI's API types against the gateway (target/debug/bkg, or $BKG_BIN): regenerates
# admin-ui/src/app/core/api.schema.json (`bkg openapi`) and api.d.ts (openapi-typescript) into a
# temporary folder and fails if the committed files differ. Fix: scripts/ui.sh gen-types, then
# commit both files. Seconds (npm ci first if admin-ui/node_modules is missing or stale).
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
exec scripts/ui.sh check-types
