# build-swarm: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PORTAGE_OVERRIDE_EPREFIX := /
BENCH ?= all

.PHONY: test demo bench reliability lint typecheck unit venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m mypy
	$(PY) -m ruff check .

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

demo: $(STAMP)
	$(PY) -m demo

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH)

reliability: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,reliability]'
	$(PY) -m bench.reliability

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
