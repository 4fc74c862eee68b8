# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(SETUP_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip 'maturin>=1.7,<2'
	touch $@

.PHONY: build
build: $(SETUP_STAMP) ## build the Rust extension (release) and install tidal with its test tools into .venv
	maturin develop --release --quiet --extras test,dev

.PHONY: demo
demo: build ## serve the example models, drive load, print the latency/throughput table
	$(VENV)/bin/tidal demo

.PHONY: test
test: build ## lint, cargo test (with the loom model check and each benchmark run once), then pytest against real servers on 127.0.0.1
	$(MAKE) --no-print-directory style
	cargo test --quiet
	cargo test --quiet --benches
	$(MAKE) --no-print-directory loom
	$(VENV)/bin/pytest

.PHONY: loom
loom: ## check every interleaving of the queue's admission gate (loom)
	RUSTFLAGS="--cfg tidal_loom" CARGO_TARGET_DIR=target/loom cargo test --quiet --lib gate

.PHONY: lint
lint: build style ## ruff, cargo fmt --check and cargo clippy

# The checks alone, for `test`, which has built already.
.PHONY: style
style:
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	cargo fmt --check
	cargo clippy --all-targets --features python -- -D warnings

.PHONY: bench
bench: build ## micro-benchmarks (codec, one request through the core) and the load generator's self-test
	$(VENV)/bin/pytest benchmarks --benchmark-only --benchmark-columns=min,median,max,rounds
	$(VENV)/bin/tidal bench --self-test --duration 5

.PHONY: protos
protos: build ## regenerate the Python stubs in python/tidal/_proto from proto/
	$(PYTHON) -m tidal._protogen

.PHONY: clean
clean: ## remove build outputs and the virtual environment
	rm -rf $(VENV) target
