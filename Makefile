# Trade Eligibility — developer entry points. `make test` and `make demo` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help
SWIFT ?= swift
export PATH := $(if $(wildcard /opt/swift/usr/bin),/opt/swift/usr/bin:,)$(PATH)

.PHONY: help deps build release test test-cluster cluster-pass unit-test dev-up dev-down demo bench clean

help:
	@echo "make demo      run the whole pipeline on real recorded market data (no Docker needed)"
	@echo "make test      install and start what the tests need, then run every test"
	@echo "make dev-up    start Redis, PostgreSQL, the Kafka dev broker and Triton locally; writes .dev/env"
	@echo "make dev-down  stop what dev-up started"
	@echo "make bench     run the benchmark suite (results in bench/results/)"
	@echo "make format    format the Swift sources (.swift-format); make test checks it first"
	@echo "make up/down   docker compose stack (see deploy/README.md)"

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	scripts/build-release.sh

dev-up: deps
	@scripts/dev-up.sh

dev-down:
	@scripts/dev-down.sh

# Builds everything (executables too: integration tests run the real binaries), starts the local
# servers and runs the whole suite against them. Integration tests fail, never skip, when a server is missing.
# train-venv: matplotlib for the test of `te model --plot`, lightgbm for the served-LightGBM check (TritonTests).
test: deps train-venv
	@$(MAKE) --no-print-directory format-check
	$(SWIFT) build --build-tests
	@DEV_REDIS_CLUSTER=1 scripts/dev-up.sh
	set -a; source .dev/env; set +a; \
	  export TE_BIN_DIR="$$($(SWIFT) build --show-bin-path)"; \
	  $(SWIFT) test --skip-build --no-parallel
	@$(MAKE) --no-print-directory cluster-pass
	@FUZZ_SECONDS=15 FUZZ_SEED=1 scripts/fuzz.sh
	@TE_BIN_DIR="$$($(SWIFT) build --show-bin-path)" scripts/check-openapi.sh
	@python3 deploy/triton/check_label.py "$$($(SWIFT) build --show-bin-path)/te"
	@scripts/check-deploy.sh
	@TE_BIN_DIR="$$($(SWIFT) build --show-bin-path)" scripts/demo.sh --short

# The pipeline and gateway suites again with REDIS_URL naming the 3-master cluster of dev-up (LivePipeline
# then runs each pipeline on a private cluster, STREAM_SHARDS >= 2: a stage refuses S = 1 on a cluster).
# Part of `make test`; `make test-cluster` runs this pass alone.
CLUSTER_PASS_SUITES = RecordingPipelineTests|GatewayIntegrationTests
cluster-pass:
	set -a; source .dev/env; set +a; export REDIS_URL="$$REDIS_CLUSTER_URL"; \
	  export TE_BIN_DIR="$$($(SWIFT) build --show-bin-path)"; \
	  $(SWIFT) test --skip-build --no-parallel --filter '$(CLUSTER_PASS_SUITES)'
test-cluster: deps
	$(SWIFT) build --build-tests
	@DEV_REDIS_CLUSTER=1 scripts/dev-up.sh
	@$(MAKE) --no-print-directory cluster-pass

demo:
	@scripts/demo.sh

bench: deps
	@scripts/bench.sh

clean:
	rm -rf .build

-include mk/*.mk
