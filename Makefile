# bkg: two commands for people (`make up`, `make test`); the rest are their parts.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# `make up` honours BKG_PORT / BKG_PLUGINS as `bkg up` does; PORT= / PLUGINS= win over them.
PORT ?= $(or $(BKG_PORT),43119)
PLUGINS ?= $(or $(BKG_PLUGINS),config/plugins)

.PHONY: help up test deps deps-run deps-test build build-release lint unit e2e test-cluster checks check-cuda crd config-schemas bench-gateway bench-flood bench-faces bench-brainml

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}' \
	  | sed -e 's|$$(PORT)|$(PORT)|g' -e 's|$$(PLUGINS)|$(PLUGINS)|g'

deps: ## Install what `make up` and `make test` need (idempotent)
	@scripts/setup.sh all

deps-run: ## Install only what running needs: the sample model (`make up` runs this)
	@scripts/setup.sh run

deps-test: ## Install the test tooling (chromium, prometheus, helm, schemathesis, …)
	@scripts/setup.sh test

# The binary lives where cargo puts it: CARGO_TARGET_DIR or build.target-dir when set.
TARGET_DIR = $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

up: deps-run build-release ## Build and run the local stack on http://127.0.0.1:$(PORT) from $(PLUGINS)
	@if [ -f admin-ui/package.json ] && [ ! -f admin-ui/dist/admin-ui/browser/index.html ]; then scripts/ui.sh build; fi
	@source scripts/env.sh; exec "$(or $(TARGET_DIR),target)/release/bkg" up --port $(PORT) --plugins $(PLUGINS)

test: deps lint build unit e2e checks ## Every test: format, lints, unit, integration and end-to-end
	@echo "make test: all checks passed"

lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

build: ## Debug build of every binary (the e2e tests run them)
	$(CARGO) build --workspace --locked

build-release:
	$(CARGO) build --release --locked -p bkg -p bkg-plugin-runtime

unit: ## Unit and integration tests of every crate
	@source scripts/env.sh; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --locked --exclude bkg-e2e --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --locked --exclude bkg-e2e --no-fail-fast; \
	fi

e2e: build ## End-to-end tests against the real binaries on loopback
	@source scripts/env.sh; $(CARGO) test --locked -p bkg-e2e -- --test-threads 2

test-cluster: build ## The cluster e2e (needs kind/k3d and BKG_E2E_RUNTIME_IMAGE; e2e/README.md)
	@source scripts/env.sh; $(CARGO) test --locked -p bkg-e2e --test cluster -- --ignored --nocapture

checks: build ## Tool-based checks: every script in scripts/test.d (each must be executable)
	@source scripts/env.sh; for t in scripts/test.d/[0-9]*.sh; do \
	  [ -x "$$t" ] || { echo "FAIL: $$t is not executable (chmod +x it): it would be skipped" >&2; exit 1; }; \
	  echo "== $$t"; "$$t"; \
	done

check-cuda: ## The cuda runtime built and linked for sm_80/89/90 (stub libs, no GPU), SASS checked, clippy
	@scripts/check-cuda.sh

crd: ## Regenerate crds/ (and the Helm chart's copy) from the Rust types
	$(CARGO) run -q -p bkg -- crd > crds/plugins.bkg.rs.yaml
	cp crds/plugins.bkg.rs.yaml charts/bkg/files/crds/plugins.bkg.rs.yaml

config-schemas: ## Regenerate plugins/*/config.schema.json from the plugins' config types
	for p in echo candle rustyface brainml; do \
	  $(CARGO) run -q --locked -p bkg-plugin-runtime -- --plugin $$p --config-schema > plugins/$$p/config.schema.json; \
	done

bench-gateway: ## Echo through the gateway vs directly against the runtime (wrk)
	@scripts/bench-gateway.sh

bench-activation: ## Activation latency from zero replicas, echo and Candle (p50/p99 of 20)
	@scripts/bench-activation.sh

bench-faces: ## Face detection (RustyFace) images/s and p50/p99 at 1 and 8 clients: in-process rustface, runtime, gateway
	@scripts/bench-faces.sh

bench-brainml: ## brainml predictions/s through the runtime vs onnxruntime in-process, same models
	@scripts/brainml/bench.sh

bench-flood: ## 10,000 keyless idle connections against bkg up at ulimit -n 1024
	@scripts/bench-flood.sh
