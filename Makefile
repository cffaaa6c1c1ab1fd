# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps demo demo-check test audit constraints bench clean

# constraints.txt pins every transitive dependency to the versions the suite last passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
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

test: install system-deps audit
	$(PY) -m pytest -q

# Known vulnerabilities in the installed dependencies (pip-audit); exceptions in scripts/audit-ignore.txt.
audit: install
	$(PY) scripts/audit.py

# After changing a dependency in pyproject.toml: re-pin the whole tree (then run make test).
constraints: install
	(echo "# Every installed package, pinned: written by make constraints, used by make install."; \
	 $(PY) -m pip freeze --exclude-editable) > constraints.txt

# Throughput, CPU, memory, freshness and scale-out against the baselines (~10 min on 2 cores);
# writes benchmarks/results/<date>.json and latest.json. Quix Streams, a peer measured for comparison,
# goes in a virtualenv of its own (the project does not depend on it); BENCH_ARGS passes options.
QUIX_VENV := benchmarks/.venv-quix
bench: install
	@test -x $(QUIX_VENV)/bin/python -a -f $(QUIX_VENV)/.installed || \
	  ($(PYTHON) -m venv $(QUIX_VENV) && $(QUIX_VENV)/bin/pip install --quiet quixstreams==3.28.1 && \
	   touch $(QUIX_VENV)/.installed) || echo "Quix Streams did not install: its row is left out"
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .streamproc .pytest_cache
