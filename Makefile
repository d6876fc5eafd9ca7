# Quick start: `make demo` (creates .venv, installs, runs the demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test install install-dev lint sysdeps clean wheel-check

# python-magic (used by AugLy) needs the system library libmagic.
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1'; then \
	  echo "installing libmagic1 (needed by python-magic/AugLy)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libmagic1; \
	  else echo "please install libmagic1 (Debian/Ubuntu: sudo apt-get install libmagic1)"; exit 1; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp files re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python sysdeps
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python sysdeps
	$(BIN)/pip install -q -e ".[dev,bench]"
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/icd demo --out $(DEMO_OUT)

test: install-dev
	$(BIN)/python -m pytest

# Build the wheel, install it into a fresh venv outside the checkout, run `icd demo --check-components` there.
wheel-check: install-dev
	PYTHON=$(PYTHON) bash .ci/wheel_check

lint: install-dev
	$(BIN)/ruff check matcher detectors bench tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build dist
