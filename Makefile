# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps demo demo-check test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need (scripts/debian-packages.txt), installed when run as root.
system-deps:
	scripts/system-deps.sh

# Live: embedded broker + worker + chDB, generator feeding it, top-10 refreshing until Ctrl-C.
demo: install
	$(PY) -m streamproc demo

# Self-checking: 100k events through the pipeline, reconciled against the SQL oracle, one JSON line.
demo-check: install
	$(PY) -m streamproc demo --events 100000 --until-done

test: install system-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .streamproc .pytest_cache
