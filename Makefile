# MySocial backend. The two commands a new user needs:
#   make run    the whole system (embedded Kafka broker, processor, services)
#   make test   every check: ruff, mypy, rustfmt, clippy, buf lint, buf breaking against
#               main, the native core's tests, and every test tier (unit, integration, system)
# While working:
#   make test-unit  tests/unit only: no broker, under a minute
#   make fmt        formats everything (ruff: imports and format; cargo fmt; buf format)
# Everything else is installed on demand into ignored folders (.venv, .cache,
# node_modules); versions are pinned (constraints.txt, package-lock.json,
# kafka/pom.xml, GRPCURL_VERSION below).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .cache/bin
GRPCURL_VERSION := v1.9.3
GHZ_VERSION := v0.120.0
NATIVE_SRC := $(wildcard processor/native/src/*.rs) processor/native/Cargo.toml \
  processor/native/Cargo.lock processor/native/pyproject.toml processor/native/processor_native.pyi
PROTOS := $(wildcard protos/mysocial/v1/*.proto protos/mysocial/internal/v1/*.proto)
PYTEST_ARGS ?=
# What `buf breaking` compares the protos with: main's last commit (a fresh clone of main
# has it too). The event schemas are kept forever in `posts`, so no change may break them.
BUF_AGAINST ?= .git\#branch=main

.PHONY: run test test-unit check lint typecheck native-test buf-lint deps gen tools broker-fetch bench bench-smoke clean fmt buf-breaking

run: deps gen broker-fetch
	$(BIN)/python -m devtools.run

# Every tier: tests/unit, tests/integration, tests/system (pyproject.toml's testpaths).
test: check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tier alone: no broker, no servers (tests/conftest.py starts the broker only
# for tests that ask for it).
test-unit: deps gen
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Formats everything that has a formatter; `make lint` checks the same.
fmt: $(VENV)/.installed
	$(BIN)/ruff check --select I --fix --quiet .
	$(BIN)/ruff format --quiet .
	cargo fmt --manifest-path processor/native/Cargo.toml
	@if [ -x node_modules/.bin/buf ]; then npx --no-install buf format -w; \
	else echo "buf not installed (make tools): protos not formatted"; fi

check: deps gen tools broker-fetch lint typecheck buf-lint native-test buf-breaking

deps: $(VENV)/.installed $(VENV)/.native

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade -c constraints.txt pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# The processor's compiled core (Rust, PyO3; built by maturin with the locked crates).
$(VENV)/.native: $(VENV)/.installed $(NATIVE_SRC)
	CARGO_TARGET_DIR="$(abspath .cache/cargo-target)" \
	  $(BIN)/pip install -q -c constraints.txt ./processor/native
	@touch $@

gen: mysocial/v1/.generated

mysocial/v1/.generated: $(PROTOS) $(VENV)/.installed
	@rm -rf mysocial/v1 mysocial/internal && mkdir -p mysocial/v1 mysocial/internal/v1
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=. --grpc_python_out=. --mypy_out=quiet:. --mypy_grpc_out=quiet:. $(PROTOS)
	@touch mysocial/v1/__init__.py mysocial/internal/__init__.py mysocial/internal/v1/__init__.py $@

tools: node_modules/.installed $(TOOLS)/grpcurl $(TOOLS)/ghz

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(TOOLS)/grpcurl:
	GOBIN="$(abspath $(TOOLS))" GOFLAGS=-mod=mod go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(TOOLS)/ghz:
	GOBIN="$(abspath $(TOOLS))" go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

broker-fetch: deps
	$(BIN)/python -m mysocial.kafka.broker fetch >/dev/null

lint: deps gen
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/check_layout.py
	cargo fmt --check --manifest-path processor/native/Cargo.toml
	CARGO_TARGET_DIR="$(abspath .cache/cargo-target)" cargo clippy --quiet --locked \
	  --manifest-path processor/native/Cargo.toml -- -D warnings

typecheck: deps gen
	$(BIN)/mypy .

# The compiled core's own tests (wire decoder, event checks, trending arithmetic): built
# without maturin's extension-module feature, so the test binary links libpython.
native-test: $(VENV)/.installed
	CARGO_TARGET_DIR="$(abspath .cache/cargo-target)" PYO3_PYTHON="$(abspath $(BIN)/python)" \
	  cargo test --quiet --locked --manifest-path processor/native/Cargo.toml

buf-lint: node_modules/.installed
	npx --no-install buf lint

buf-breaking: node_modules/.installed
	npx --no-install buf breaking --against '$(BUF_AGAINST)'

# The benchmark suite (~15-20 min on 2 cores): bench/results/*.json, docs/BENCHMARKS.md.
bench: deps gen tools broker-fetch
	$(BIN)/python -m bench

# The same suite at tiny sizes, peers included (`make test` runs it without the peers, so
# the benchmark code cannot rot; building the peers on a fresh clone takes minutes).
bench-smoke: deps gen tools broker-fetch
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) mysocial/v1 mysocial/internal node_modules .mypy_cache .ruff_cache .pytest_cache
