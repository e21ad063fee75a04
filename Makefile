# The two commands a new user runs: `make demo` and `make test`.
# Each installs what it needs (a virtualenv with the project, system programs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist; a file's tests stay together, so a
# module's stack or web process starts once). `make test TEST_JOBS=0` runs in one.
TEST_JOBS ?= 2
XDIST = $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile)

.PHONY: test test-fast lint sysdeps demo-sysdeps venv demo lock clean

# The versions in constraints.txt, which the suite last passed with (`make lock` renews them).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# redis-server, kubectl and jq; the tests also drive the status board in headless Chromium.
sysdeps:
	@bash scripts/system-deps.sh chromium $$(command -v chromedriver >/dev/null || echo chromium-driver)

demo-sysdeps:
	@bash scripts/system-deps.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy --strict webhook worker sandbox
	$(BIN)/lint-imports

test: venv sysdeps lint
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

# During development: everything but the slow end-to-end tests.
test-fast: venv sysdeps
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The whole product on the sandbox cluster, one release cycle played, serving until Ctrl-C.
# `make demo ARGS=--once` plays the cycle and exits 0 only if every step went as expected.
ARGS ?=
demo: venv demo-sysdeps
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/python scripts/demo.py $(ARGS)

# constraints.txt renewed: the newest versions pyproject.toml's ranges allow, installed in
# a clean virtualenv and frozen (its comment lines kept). Run `make test` before committing it.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q -e "$$PWD[dev]"; \
	{ grep '^#' constraints.txt; "$$tmp/venv/bin/python" -m pip freeze --exclude-editable \
	  | grep -v '^bluegreen=='; } > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt; \
	git diff --stat -- constraints.txt || true

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
