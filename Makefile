# bkg: two commands for people (`make up`, `make test`); the rest are their parts.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PORT ?= 43119
PLUGINS ?= config/plugins

.PHONY: help up test deps build build-release lint unit e2e test-cluster checks check-cuda crd config-schemas bench-gateway bench-flood

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## Install what the build and tests need (idempotent)
	@scripts/setup.sh

up: deps build-release ## Build and run the local stack on http://127.0.0.1:$(PORT)
	@if [ -f admin-ui/package.json ] && [ ! -f admin-ui/dist/admin-ui/browser/index.html ]; then scripts/ui.sh build; fi
	@source scripts/env.sh; exec ./target/release/bkg up --port $(PORT) --plugins $(PLUGINS)

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
	for p in echo candle; do \
	  $(CARGO) run -q --locked -p bkg-plugin-runtime -- --plugin $$p --config-schema > plugins/$$p/config.schema.json; \
	done

bench-gateway: ## Echo through the gateway vs directly against the runtime (wrk)
	@scripts/bench-gateway.sh

bench-activation: ## Activation latency from zero replicas, echo and Candle (p50/p99 of 20)
	@scripts/bench-activation.sh

bench-flood: ## 10,000 keyless idle connections against bkg up at ulimit -n 1024
	@scripts/bench-flood.sh
