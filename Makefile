# Guard: set-up, test, demo and benchmark entry points.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo lint test bench bench-peers soak debian-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py guard/audit/_canon.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,local]'
	touch $(STAMP)

# Debian packages the tests and benchmarks use (rsyslog for the syslog sink test; nginx and wrk for bench).
debian-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in rsyslog rsyslog-relp nginx wrk redis-server chromium chromium-driver libnss3-tools; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	fi

demo: install
	$(BIN)/guard demo

# ruff (lint rules and formatting) on guard/ and tests/; mypy on guard/ (strict on the core modules): pyproject.toml.
lint: install
	$(BIN)/ruff check guard tests
	$(BIN)/ruff format --check guard tests
	$(BIN)/mypy

test: install debian-deps lint
	$(BIN)/python -m pytest tests

bench: install debian-deps
	$(BIN)/python -m tests.bench.run

bench-peers:
	test -x .bench-peers/litellm/bin/litellm || ( $(PY) -m venv .bench-peers/litellm && .bench-peers/litellm/bin/pip install -q 'litellm[proxy]' )

soak: install
	GUARD_SOAK_SECONDS=600 $(BIN)/python -m pytest tests/hardening -m soak -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
