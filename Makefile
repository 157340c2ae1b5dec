# Two commands do everything (see README): `make demo` and `make test`.
# `make test` (what CI runs) also builds the documentation and runs its examples: `make docs`.
# Each creates or refreshes the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: demo test docs bench lint format clean

# torch is pinned: 2.13.0 is the CPU build on this project's machines; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[all,test,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m adamupdate demo $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check src tests bench docs examples
	$(PY) -m ruff format --check src tests bench docs examples
	$(PY) -m mypy
	$(MAKE) --no-print-directory docs
	$(PY) -m pytest --doctest-modules src/adamupdate tests

# The HTML in docs/_build/html, warnings as errors; then the pages' examples (doctest builder,
# which reuses the parsed pages). Docstring examples are run by pytest above.
SPHINX := $(PY) -m sphinx -W --keep-going -q -d docs/_build/doctrees
docs: $(STAMP)
	$(SPHINX) -b html docs docs/_build/html
	$(SPHINX) -b doctest docs docs/_build/doctest

# The tests under the oldest versions pyproject.toml declares and the newest served, each in its
# own venv under ~/.cache/adamupdate-compat (COMPAT_DIR); ARGS=oldest or newest picks one. The
# first run downloads about 3 GB per venv (see .ci/compat).
.PHONY: test-compat
test-compat:
	bash .ci/compat $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

format: $(STAMP)
	$(PY) -m ruff format src tests bench docs examples
	$(PY) -m ruff check --fix src tests bench docs examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis docs/_build
