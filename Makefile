# Set-up and everyday commands. Every target installs the project into .venv first
# (idempotent: pip runs again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 comes from the machine's local CPU wheel folder when there is one.
FIND_LINKS := $(if $(wildcard /opt/wheels/*.whl),--find-links /opt/wheels)

.PHONY: install train test test-fast lint validate gate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(FIND_LINKS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: install  ## the main job: tiny model on the shipped corpus
	$(BIN)/python scripts/train.py

test: install  ## the whole test suite
	$(BIN)/python -m pytest

test-fast: install  ## everything but the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: install
	$(BIN)/python -m diplostance validate annotations/

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
