# Two commands matter: `make run` (whole pipeline, once, with a summary) and `make dev` (the Dagster UI).
# Everything else is here for CI and contributors. Only python3 (>= 3.11) is needed beforehand.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v -e '/target/' -e '/logs/')
STATE_DIR ?= $(CURDIR)/.state
DAYS ?= 7
# pip prints a line per package for some mirror configurations; they are noise, not errors.
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }

export PATH := $(BIN):$(PATH)

.PHONY: help run dev serve-readonly stop test test-fast test-production bench-production faults drills check bench alert-drill prometheus lint docs manifest clean install rollback-marts

help:
	@echo "make run     materialize the whole pipeline for the last $(DAYS) days (DAYS=n to change) and print a summary"
	@echo "make dev     Dagster UI + daemon on http://127.0.0.1:3000 (DAGSTER_PORT) with the demo source on :8765 (SHOP_DEMO_PORT), supervised; make stop ends it"
	@echo "make test    the whole test suite (what CI runs) but the drills and the production profile's"
	@echo "make test-fast   the tests not marked slow (no dbt builds, stacks, Prometheus, PostgreSQL or browser): a quick check"
	@echo "make test-production   the production profile: throwaway PostgreSQL, DuckLake, webserver + daemon + code server, 14-day backfill"
	@echo "make faults  the fault-injection tests alone (they are part of make test)"
	@echo "make drills  every runbook followed step by step against a real make dev with its alert's fault injected"
	@echo "make check   CI gate: materialize a sample, run every asset check, fail on any ERROR (JUnit XML in test-artifacts/)"
	@echo "make serve-readonly   the UI in read-only mode on http://127.0.0.1:3001"
	@echo "make bench   benchmarks at 1x and 10x scale -> bench/results.json, alert latency -> bench/alert_drill.json"
	@echo "make alert-drill   a two-minute outage rehearsal with the real daemon: watch alerts and recoveries arrive"
	@echo "make prometheus    a local Prometheus on http://127.0.0.1:9090 scraping make dev's metrics, with the alert rules"
	@echo "make docs    regenerate the alert channel table (docs/operations.md) and settings (.env.example) from the channel modules"
	@echo "make clean   remove all local state (.state/) and the dbt build artifacts"

install: $(INSTALLED)

$(INSTALLED): requirements.lock pyproject.toml
	@echo "==> creating $(VENV) and installing the locked dependencies"
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock 2>&1 | $(QUIET_PIP)
	@# An editable install (offline: setuptools comes from the lock) puts the package on the path in place and
	@# the console scripts of pyproject.toml ([project.scripts]: `oncall`) in $(BIN). Older venvs had a .pth.
	rm -f $(VENV)/lib/python*/site-packages/pipeline_project.pth
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -e . 2>&1 | $(QUIET_PIP)
	@touch $@

manifest: $(MANIFEST)

$(MANIFEST): $(INSTALLED) $(DBT_SOURCES)
	@echo "==> parsing the dbt project"
	PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.dev.environment

run: $(MANIFEST)
	PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.dev.run --days $(DAYS)

dev: $(MANIFEST)
	PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.dev.stack

serve-readonly: $(MANIFEST)
	PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.dev.stack --read-only

stop: $(INSTALLED)
	@PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.dev.stack --stop

test: $(MANIFEST)
	$(BIN)/python -m pytest --ignore=tests/drills --ignore=tests/production

# The quick lane: every test not marked `slow` (pyproject.toml lists the markers), two pytest workers per core:
# these tests spend about half their time waiting on loopback servers and child processes.
test-fast: $(MANIFEST)
	$(BIN)/python -m pytest -m "not slow" -n $$(( 2 * $$(nproc) )) --ignore=tests/drills --ignore=tests/production

# The runbooks followed step by step against a real make dev with each alert kind's fault injected.
drills: $(MANIFEST)
	$(BIN)/python -m pytest tests/drills -p no:cacheprovider

# The production profile (docs/deploy.md): a throwaway PostgreSQL cluster from Debian's binaries on a free
# loopback port, DuckLake, the deploy/ processes; no service on the machine is assumed.
test-production: $(MANIFEST)
	$(BIN)/python -m pytest tests/production

# The same, with the 14-day backfill run first one run at a time: the speed-up of the second concurrent run
# (test-artifacts/production-backfill.json).
bench-production: $(MANIFEST)
	PRODUCTION_MEASURE_SERIAL=1 $(BIN)/python -m pytest tests/production/test_stack.py -s

# Data rollback of the production profile (runbook: docs/deploy.md, "Rolling back"): restore the marts as of a time (the bad
# run's start) or a DuckLake snapshot, with the deployment's PIPELINE_PROFILE and PIPELINE_DUCKLAKE_* settings.
rollback-marts: $(INSTALLED)
	@test -n "$(AS_OF)$(SNAPSHOT)" || { echo "usage: make rollback-marts AS_OF=<ISO time> | SNAPSHOT=<id>"; exit 2; }
	$(BIN)/python -m pipeline_project.lake.rollback marts $(if $(SNAPSHOT),--to-snapshot $(SNAPSHOT),--as-of $(AS_OF))

faults: $(MANIFEST)
	$(BIN)/python -m pytest tests/faults

check: $(MANIFEST)
	$(BIN)/python -m pipeline_project.dev.gate

bench: $(MANIFEST)
	$(BIN)/python -m pipeline_project.dev.bench
	@# At the production interval (30 s), so the latency is what a deployment sees.
	$(BIN)/python -m pipeline_project.dev.alert_drill --interval 30 --report bench/alert_drill.json
	@# One scrape of the metrics exporter after 90 days of history -> bench/metrics_scrape.json.
	$(BIN)/python -m pipeline_project.dev.metrics_bench --days 90

alert-drill: $(INSTALLED)
	$(BIN)/python -m pipeline_project.dev.alert_drill

prometheus: $(INSTALLED)
	PIPELINE_STATE_DIR=$(STATE_DIR) $(BIN)/python -m pipeline_project.observability.prometheus_server

lint: $(INSTALLED)
	$(BIN)/ruff check pipeline_project tests

# The alert channel table in docs/operations.md and the channel block of .env.example, from the channel registry.
docs: $(INSTALLED)
	$(BIN)/python -m pipeline_project.dev.channel_docs

clean:
	rm -rf $(STATE_DIR) dbt_project/target dbt_project/logs test-artifacts
