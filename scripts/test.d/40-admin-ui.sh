#!/usr/bin/env bash
# The admin UI: npm ci, production build, unit tests (ng test) and the browser e2e test against a
# real `bkg up` (target/debug/bkg, built by `make build` before this runs). Under ~3 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/ui.sh ci
