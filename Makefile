# odoo-upgrade-operator — every install step lives here or in scripts/, never by hand.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CACHE_DIR ?= $(HOME)/.cache/odoo-upgrade-operator
export ODOO_UPGRADE_CACHE := $(CACHE_DIR)

.PHONY: help venv sysdeps controlplane lint unit integration e2e test demo cluster cluster-down chaos bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP) ## create .venv with the package and its test extras

sysdeps: ## install the system tools tests and benchmarks use (curl, jq, OpenSSH client, PostgreSQL)
	bash scripts/install-system-deps.sh

controlplane: ## build etcd, kube-apiserver, kube-controller-manager, helm (cached in ~/.cache/odoo-upgrade-operator)
	bash scripts/build-controlplane.sh
	bash scripts/build-helm.sh >/dev/null

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy

unit: $(STAMP) ## unit tests only
	$(VPY) -m pytest tests/unit

integration: $(STAMP) sysdeps ## integration tests against the emulator on loopback
	$(VPY) -m pytest tests/integration

e2e: $(STAMP) sysdeps controlplane ## e2e tests on the local control plane
	$(VPY) -m pytest tests/e2e

test: $(STAMP) sysdeps controlplane lint ## install what is needed and run the whole suite (two streams at once: scripts/run-tests.sh)
	VPY=$(VPY) bash scripts/run-tests.sh

demo: $(STAMP) sysdeps controlplane ## the whole story: control plane, PostgreSQL, emulator, operator, a live database to a restored upgraded one (DEMO_KEEP=1 leaves it running)
	bash scripts/demo.sh

cluster: $(STAMP) controlplane ## start the local control plane and PostgreSQL in the background (.cluster/kubeconfig)
	$(VPY) -m tests.harness.cluster up

cluster-down: ## stop the local control plane started by `make cluster`
	@if [ -x $(VPY) ]; then $(VPY) -m tests.harness.cluster down; fi

chaos: $(STAMP) sysdeps controlplane ## the full fault suite; regenerates docs/RELIABILITY.md
	CHAOS_FULL=1 $(VPY) -m pytest tests/chaos $(wildcard tests/e2e/test_bad_input_*.py tests/e2e/test_secret_hygiene_*.py)

bench: $(STAMP) sysdeps ## transfer benchmark vs curl and OpenSSH sftp
	$(VPY) bench/transfer.py

clean: cluster-down ## remove local state (not the cached control-plane binaries)
	rm -rf .cluster .demo .mypy_cache .ruff_cache .pytest_cache .test-logs
