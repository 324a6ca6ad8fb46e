# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-py312 lint bench bench-replay bench-compare bench-kafka bench-view bench-gateway clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orderguard demo

# promtool and prometheus for the ops tests: Debian's `prometheus` package, installed once
# if missing; `chromium` (headless) for the operator page's browser test, likewise. A policy-rc.d that denies service starts (unless one exists) keeps apt from
# starting the packaged Prometheus on :9090; the tests start their own on free ports.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: tools
tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
	  || ! command -v chromium >/dev/null; then \
	  echo "installing Debian's prometheus (promtool, prometheus) and chromium packages"; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; guard=1; fi; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null; rc=$$?; \
	  if [ -n "$$guard" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP) tools
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory test-py312
	$(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Python 3.11 and 3.12 are both supported: the unit tests also run under a 3.12 interpreter
# when the machine has one (on PATH, or pyenv's), in a venv of its own; none -> skipped.
# Each candidate must run: a pyenv shim on PATH fails when 3.12 is not pyenv's selected version.
PY312 ?= $(shell for p in $$(command -v python3.12) \
	$(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.12*/bin/python3.12); do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
	&& { echo "$$p"; break; }; done)
VENV312 := .venv312

$(VENV312)/.installed: pyproject.toml
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/pip install --quiet --upgrade pip
	$(VENV312)/bin/pip install --quiet -e '.[dev]'
	touch $@

ifeq ($(PY312),)
test-py312:
	@echo "no Python 3.12 interpreter (python3.12 on PATH or under pyenv): 3.12 unit tests skipped"
else
test-py312: $(VENV312)/.installed tools
	@echo "unit tests under $$($(VENV312)/bin/python --version) ($(PY312))"
	$(VENV312)/bin/python -m pytest tests/unit
endif

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# All four benchmarks (about 55 minutes on a 2-core VM); figures in benchmarks/results/.
bench: bench-replay bench-kafka bench-view bench-gateway

bench-replay: $(STAMP)
	$(BIN)/python -m benchmarks.replay_bench

# Issue 14: the tree before its changes vs this one, gc tuning, 1 vs 2 processes (~5 min).
bench-compare: $(STAMP)
	$(BIN)/python -m benchmarks.replay_bench --compare

# Quix Streams (the peer) pins older confluent-kafka and pydantic-settings: its own venv.
QUIX_VENV := benchmarks/.data/quix-venv
$(QUIX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $@

bench-kafka: $(STAMP) $(QUIX_VENV)/.installed
	$(BIN)/python -m benchmarks.kafka_bench

bench-view: $(STAMP)
	$(BIN)/python -m benchmarks.view_bench

# The load generator is wrk (Debian's package), installed once if missing.
bench-gateway: $(STAMP)
	@if ! command -v wrk >/dev/null; then \
	  echo "installing Debian's wrk (the gateway benchmark's load generator)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	fi
	$(BIN)/python -m benchmarks.gateway_bench

clean:
	rm -rf $(VENV) $(VENV312) out .pytest_cache .ruff_cache .hypothesis
