# The one entry point for building, testing and (later) running the demo.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Tools installed by rustup and the Go distribution, for shells that have not sourced them.
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: help setup lint test bench crds demo image

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what the tests use (cached outside the repo; idempotent)
	hack/setup.sh

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test: setup lint ## Everything: set-up, lint, unit and integration tests on a real API server and emulators
	cargo test

bench: setup ## Benchmarks (release build) on the local API server and emulators; prints BENCH lines
	cargo bench --bench export
	cargo bench --bench healing

demo: setup ## The main job: a local pipeline whose stalled batch and incomplete phase get healed
	hack/demo.sh

image: setup ## The controller image as an OCI tarball (static binary, crane; no Docker needed)
	hack/image.sh

crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	cargo run --quiet -- crds
	cargo run --quiet -- crds --dir charts/pipeline-healer/crds
