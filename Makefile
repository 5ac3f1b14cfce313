# Set-up and everyday commands. Every target installs the project into .venv first
# (idempotent: pip runs again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 comes from the machine's local CPU wheel folder when there is one.
FIND_LINKS := $(if $(wildcard /opt/wheels/*.whl),--find-links /opt/wheels)

.PHONY: install train test test-fast lint validate gate clean labelstudio labelstudio-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(FIND_LINKS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Label Studio gets its own environment: its pins (Django, numpy<2.3 through opencv) clash with the
# project's. The project only reads and writes its files; diplostance/labelstudio/client.py runs here.
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO := label-studio==1.23.2
LS_PORT ?= 8080
LS_DATA ?= labelstudio-data
LS_ENV := LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false

# Also an empty, migrated database (template/) that the server test copies instead of migrating anew.
$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet '$(LABEL_STUDIO)'
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

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
