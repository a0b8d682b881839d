# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine with python3.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/ultraforge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install demo test lint bench
install: $(BIN)/ultraforge

demo: install
	$(BIN)/ultraforge demo

# Two processes, whole files each (module fixtures such as the demo run once); then, alone, the
# few tests that measure throughput against a limit, which a busy second core would distort.
TEST_ENV := PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
test: install
	$(TEST_ENV) $(BIN)/pytest -q -n 2 --dist loadfile -m "not serial"
	$(TEST_ENV) $(BIN)/pytest -q -m serial

lint: install
	$(BIN)/ruff check flows tasks infra tests benchmarks

bench: install
	$(BIN)/python benchmarks/gateway_throughput.py
	$(BIN)/python benchmarks/gateway_overhead.py
	$(BIN)/python benchmarks/gateway_adaptive.py
	$(BIN)/python benchmarks/factory_throughput.py
	$(BIN)/python benchmarks/stage_overlap.py
	$(BIN)/python benchmarks/binarize_scale.py
	$(BIN)/python benchmarks/batch_route.py
	$(BIN)/python benchmarks/scale_out.py
