# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-replay bench-kafka clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orderguard demo

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Both benchmarks (about 40 minutes on a 2-core VM); figures in benchmarks/results/.
bench: bench-replay bench-kafka

bench-replay: $(STAMP)
	$(BIN)/python -m benchmarks.replay_bench

# Quix Streams (the peer) pins older confluent-kafka and pydantic-settings: its own venv.
QUIX_VENV := benchmarks/.data/quix-venv
$(QUIX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $@

bench-kafka: $(STAMP) $(QUIX_VENV)/.installed
	$(BIN)/python -m benchmarks.kafka_bench

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
