# build-swarm: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PORTAGE_OVERRIDE_EPREFIX := /
BENCH ?= all

.PHONY: test demo bench reliability lint typecheck unit venv clean sysdeps

# What the real-portage tests and the demo (rsync, wget) and the browser tests (chromium) need
# from the system: installed with apt when missing and we are root, else one line says so.
SYSDEPS := rsync wget chromium

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@missing=""; for t in $(SYSDEPS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing$$missing with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "make: could not install$$missing: the tests that need them will fail"; \
	  else echo "make: missing$$missing (apt-get install$$missing): the tests that need them will fail"; fi; \
	fi

test: $(STAMP) sysdeps
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m mypy
	$(PY) -m ruff check .

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

demo: SYSDEPS := rsync wget
demo: $(STAMP) sysdeps
	$(PY) -m demo

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH)

reliability: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,reliability]'
	$(PY) -m bench.reliability

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
