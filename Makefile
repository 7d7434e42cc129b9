# `make demo` and `make test` each set up .venv on first use (torch pinned for dev/CI only), `make test-oldest`
# .venv-oldest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OLDEST := .venv-oldest

.PHONY: demo test test-transformers test-oldest lint bench clean

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

# The oldest releases pyproject.toml allows (requirements-oldest.txt, kept equal to its lower bounds by
# tests/test_dependencies.py), beside the same torch; `make test` tests the newest that pip resolves.
$(OLDEST)/bin/.installed: pyproject.toml requirements-dev.txt requirements-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -r requirements-dev.txt -r requirements-oldest.txt -e '.[dev]'
	touch $@

test-oldest: $(OLDEST)/bin/.installed
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider

lint: $(BIN)/.installed
	$(BIN)/ruff check onevision_encoder tests benchmarks examples
	$(BIN)/ruff format --check onevision_encoder tests benchmarks examples

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_attention.py

clean:
	rm -rf $(VENV) $(OLDEST) build *.egg-info onevision-demo
