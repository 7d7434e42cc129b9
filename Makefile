# `make demo` and `make test` each set up .venv on first use (torch pinned for dev/CI only), `make test-oldest`
# .venv-oldest, `make test-lmms-eval` .venv-lmms-eval.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OLDEST := .venv-oldest
LMMS_EVAL := .venv-lmms-eval

.PHONY: demo test test-transformers test-oldest test-lmms-eval lint bench clean docs docs-serve

$(BIN)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'  # docs: tests/test_docs_site.py builds the site
	# The reference of our codec frontend's contract test. Without its dependencies: they are ours (av, numpy,
	# pillow, torch) but for opencv-python, which would shadow opencv-python-headless.
	$(BIN)/python -m pip install --quiet --no-deps lmms-video-utils==0.1.0
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
	$(OLDEST)/bin/python -m pip install --quiet --no-deps lmms-video-utils==0.1.0
	touch $@

test-oldest: $(OLDEST)/bin/.installed
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider

# lmms-eval's own environment (docs/integrations.md, lmms-eval): it needs filelock<4, and pins av<16, which our av>=17.1
# excludes, so it goes in without its dependencies and then gets them all but av (pip check reports that one).
$(LMMS_EVAL)/bin/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(LMMS_EVAL)
	$(LMMS_EVAL)/bin/python -m pip install --quiet --upgrade pip
	$(LMMS_EVAL)/bin/python -m pip install --quiet --no-deps lmms-eval==0.7.3
	$(LMMS_EVAL)/bin/python -c "from importlib.metadata import requires; \
		print('\n'.join(r for r in requires('lmms_eval') if 'extra ==' not in r and r.split('<')[0] != 'av'))" \
		> $(LMMS_EVAL)/lmms-eval-requirements.txt
	$(LMMS_EVAL)/bin/python -m pip install --quiet -r requirements-dev.txt -r $(LMMS_EVAL)/lmms-eval-requirements.txt \
		-e '.[dev]' 'filelock<4'
	touch $@

# The plugin end to end, and our codec selection on the av this environment gets.
test-lmms-eval: $(LMMS_EVAL)/bin/.installed
	$(LMMS_EVAL)/bin/python -m pytest -q -p no:cacheprovider tests/test_lmms_eval.py tests/test_codec.py

lint: $(BIN)/.installed
	$(BIN)/ruff check onevision_encoder tests benchmarks examples docs/hooks
	$(BIN)/ruff format --check onevision_encoder tests benchmarks examples docs/hooks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_attention.py

# The documentation site (mkdocs.yml, docs/, the `docs` extra): `make docs` builds it into site/ and fails on any
# warning, broken link or missing anchor; `make docs-serve` serves it at http://127.0.0.1:8000 as you edit.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) $(OLDEST) $(LMMS_EVAL) build *.egg-info onevision-demo
