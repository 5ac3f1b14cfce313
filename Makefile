# Set-up and everyday commands. Every target installs the project into .venv first
# (idempotent: pip runs again only when pyproject.toml or the lock file changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 comes from the machine's local CPU wheel folder when there is one.
FIND_LINKS := $(if $(wildcard /opt/wheels/*.whl),--find-links /opt/wheels)

# Every install goes through a committed lock file (requirements/*.lock, one per Python minor
# version, made by `make lock`): pip may install nothing that the lock does not pin, so a release
# anywhere below our direct dependencies cannot change a clean machine's environment.
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LOCK := requirements/project-py$(PYVER).lock
LS_LOCK := requirements/labelstudio-py$(PYVER).lock
LOCKED_PYTHONS := 3.11 3.12

.PHONY: install train test test-fast lint validate gate clean labelstudio labelstudio-env lock

requirements/%.lock:
	@echo "no lock file $@ for Python $(PYVER) (locked: $(LOCKED_PYTHONS)); run 'make lock' with that Python" >&2; exit 1

# pip and setuptools come from the lock too; the project is built without build isolation so that
# its build backend is the locked setuptools, not whatever PyPI serves today.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip setuptools
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) $(FIND_LINKS) --no-build-isolation -e ".[dev]"
	$(BIN)/python -m pip check
	$(BIN)/python tools/check_lock.py $(LOCK)
	touch $(STAMP)

install: $(STAMP)

# Label Studio gets its own environment: its pins (Django, numpy<2.3 through opencv) clash with the
# project's. The project only reads and writes its files; diplostance/labelstudio/client.py runs here.
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LS_PORT ?= 8080
LS_DATA ?= labelstudio-data
LS_ENV := LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false

# Also an empty, migrated database (template/) that the server test copies instead of migrating anew.
$(LS_STAMP): $(LS_LOCK)
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --constraint $(LS_LOCK) pip
	$(LS_VENV)/bin/python -m pip install --quiet --constraint $(LS_LOCK) -r requirements/labelstudio.in
	$(LS_VENV)/bin/python tools/check_lock.py $(LS_LOCK)
	rm -rf $(LS_VENV)/template
	$(LS_ENV) $(LS_VENV)/bin/label-studio init --data-dir $(LS_VENV)/template --quiet > $(LS_VENV)/template.log 2>&1
	touch $(LS_STAMP)

labelstudio-env: $(LS_STAMP)

labelstudio: labelstudio-env  ## start Label Studio on http://localhost:$(LS_PORT) (its data in $(LS_DATA)/)
	$(LS_ENV) $(LS_VENV)/bin/label-studio start --no-browser --port $(LS_PORT) --data-dir $(LS_DATA)

train: install  ## the main job: tiny model on the shipped corpus
	$(BIN)/python scripts/train.py

PYTEST_ARGS ?=  # e.g. make test PYTEST_ARGS="--durations=25" (as .ci/run does)

test: install labelstudio-env  ## the whole test suite (with a real Label Studio server)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  ## everything but the slow end-to-end tests and the Ray runtime tests
	$(BIN)/python -m pytest -m "not slow and not ray and not labelstudio" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: install
	$(BIN)/python -m diplostance validate annotations/

gate: install  ## the model-quality gate: retrain the gated models, compare with benchmarks/quality_baseline.json
	$(BIN)/python scripts/quality_gate.py

# Refresh every lock file (both environments, every locked Python) from pyproject.toml and
# requirements/*.in with uv (pinned in the dev extra), resolving for Linux x86_64. The rule: refresh,
# run the fresh-clone CI (CI=true bash .ci/run in a new clone), commit the locks with the change.
UV_COMPILE := $(BIN)/uv pip compile --quiet --python-platform x86_64-manylinux_2_28 --annotation-style line --custom-compile-command "make lock"
lock: install
	for v in $(LOCKED_PYTHONS); do \
	  $(UV_COMPILE) --python-version $$v pyproject.toml requirements/build.in --extra dev \
	    --output-file requirements/project-py$$v.lock || exit 1; \
	  $(UV_COMPILE) --python-version $$v requirements/labelstudio.in requirements/build.in \
	    --output-file requirements/labelstudio-py$$v.lock || exit 1; \
	done

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
