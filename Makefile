# `make run` installs and serves the relay (SQLite by default); `make test` installs and runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check migrate simulator clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

migrate: $(VENV)/.runtime
	$(BIN)/flask --app wsgi db upgrade

run: $(VENV)/.runtime  # gunicorn's master brings the schema up to date itself
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(VENV)/.dev
	.ci/system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier: no apt, no PostgreSQL, no browser, no gunicorn; under a minute.
check: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not system" $(PYTEST_ARGS)

simulator: $(VENV)/.runtime
	$(BIN)/python -m tools.simulator --port 8090

clean:
	rm -rf $(VENV) instance .pytest_cache relay.egg-info
