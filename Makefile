# `make demo` and `make test` each set up .venv on first use (torch pinned for dev/CI only).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-transformers test-compat lint bench clean

$(BIN)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/onevision demo

# Everything, transformers' own common test suites (tests/transformers_common) included.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# transformers' common model, config, image and video processor tests against our classes; the first run
# fetches the installed version's sdist from the package registry (see tests/transformers_common/conftest.py).
test-transformers: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests/transformers_common

# The oldest supported transformers (CI tests the latest through `make test`).
test-compat:
	$(PYTHON) -m venv .venv-transformers457
	.venv-transformers457/bin/python -m pip install --quiet -r requirements-dev.txt 'transformers==4.57.*'
	.venv-transformers457/bin/python -m pip install --quiet -e '.[dev]'
	.venv-transformers457/bin/python -m pytest -q -p no:cacheprovider

lint: $(BIN)/.installed
	$(BIN)/ruff check onevision_encoder tests benchmarks
	$(BIN)/ruff format --check onevision_encoder tests benchmarks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_attention.py

clean:
	rm -rf $(VENV) .venv-transformers457 build *.egg-info onevision-demo
