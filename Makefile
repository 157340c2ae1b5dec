# Two commands do everything (see README): `make demo` and `make test`.
# Each creates or refreshes the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: demo test bench lint format clean

# torch is pinned: 2.13.0 is the CPU build on this project's machines; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[all,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m adamupdate demo $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples
	$(PY) -m pytest --doctest-modules src/adamupdate tests

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

format: $(STAMP)
	$(PY) -m ruff format src tests bench examples
	$(PY) -m ruff check --fix src tests bench examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
