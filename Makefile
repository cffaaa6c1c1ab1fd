# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtualenv first.
# `make test-unit`: only the fast part, tests/unit (pytest -m "not integration"), in under a minute.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps demo demo-check test test-unit audit constraints bench clean

# constraints.txt pins every transitive dependency to the versions the suite last passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
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

# The suite runs in two processes, a test file each at a time (pytest-xdist, --dist loadfile keeps a file's
# module fixtures in one process): most integration tests wait on a broker, a worker or a browser, so two
# share two cores well. PYTEST_WORKERS=0 runs it in one process; --durations names the slowest tests.
PYTEST_WORKERS ?= 2

test: install system-deps audit
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

test-unit: install
	$(PY) -m pytest -q -m "not integration"

# Known vulnerabilities in the installed dependencies (pip-audit); exceptions in scripts/audit-ignore.txt.
audit: install
	$(PY) scripts/audit.py

# After changing a dependency in pyproject.toml: re-pin the whole tree (then run make test).
constraints: install
	(echo "# Every installed package, pinned: written by make constraints, used by make install."; \
	 $(PY) -m pip freeze --exclude-editable) > constraints.txt

# Every goal measured in one run (~35 min on 2 cores, most of it the soak, the peers and the boards'
# day of history): prints a table and the GOALS, writes benchmarks/results/<date>.json and latest.json.
# The peers measured for comparison (Quix Streams, Pathway, Bytewax) each go in a virtualenv of their own
# (the project depends on none of them); one that does not install is reported as not measured.
# BENCH_ARGS passes options (python -m benchmarks.run --help).
PEER_PKGS_quix    := quixstreams==3.28.1
PEER_PKGS_pathway := pathway==0.33.0
PEER_PKGS_bytewax := bytewax[kafka]==0.21.1 orjson
PEER_VENVS := $(foreach p,quix pathway bytewax,benchmarks/.venv-$(p)/.installed)

benchmarks/.venv-%/.installed:
	@($(PYTHON) -m venv benchmarks/.venv-$* && benchmarks/.venv-$*/bin/pip install --quiet $(PEER_PKGS_$*) && \
	  touch $@) || echo "$* did not install: it is reported as not measured"

bench: install
	@for v in $(PEER_VENVS); do $(MAKE) --no-print-directory $$v || true; done
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .streamproc .pytest_cache
