# Task runner. `make demo` brings the local lab up and provisions it; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY      := .venv/bin/python
LAB_NS  := pghalab-sw
IN_LAB  := ip netns exec $(LAB_NS)
STACK   ?= lab

.PHONY: help setup host-deps test test-unit test-lab lint render lab-up lab-down lab-reset lab-provision \
        lab-destroy lab-status lab-backup-restore demo drills bench soak engine pgpool2-exporter test-lab-infra lifecycle \
        changes actionlint

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

.venv/.synced: pyproject.toml uv.lock
	command -v uv >/dev/null || python3 -m pip install --quiet 'uv==0.13.9'
	uv sync --frozen
	touch $@

setup: .venv/.synced ## Python environment (.venv) from the lock file

host-deps: ## Debian packages the lab and its clients need (root)
	@missing=$$(xargs -a lab/host-packages.txt -n1 sh -c 'dpkg -s "$$0" >/dev/null 2>&1 || echo "$$0"'); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "host packages: all installed"; fi

lint: setup actionlint ## ruff, mypy, shellcheck, actionlint (workflows)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/shellcheck scripts/*.sh .ci/run
	$(PY) -m components shellcheck --stack dev --stack lab --stack prod
	PATH=$(CURDIR)/.venv/bin:$$PATH .tools/bin/actionlint

actionlint: ## actionlint (pinned) into .tools/bin: `go install` through the Go module proxy, no engine build
	bash scripts/install-actionlint.sh

engine: pgpool2-exporter ## pulumi CLI, language host, the 4 provider plugins, pgpool2_exporter into .tools
	bash scripts/build-engine.sh

pgpool2-exporter: ## pgpool2_exporter + upstream's Grafana dashboard (uploaded by `pulumi up`) into .tools (idempotent)
	bash scripts/build-pgpool2-exporter.sh

.tools/bin/promtool:
	bash scripts/promtool.sh $@

test-unit: setup .tools/bin/promtool pgpool2-exporter ## Unit tests (promtool from Debian's package): no root, under a minute
	.venv/bin/pytest -q tests/unit

render: setup ## Files each server gets, for review: make render STACK=dev -> render/dev/
	$(PY) -m components render --stack $(STACK) --out render/$(STACK)

lab-up: setup host-deps ## Three Debian 12 servers as systemd-nspawn containers (idempotent)
	$(PY) -m lab up

lab-down: setup ## Stop the lab and remove every trace of it
	$(PY) -m lab down

lab-reset: setup ## Fresh servers (new overlays)
	$(PY) -m lab reset

lab-provision: lab-up engine ## `pulumi up` of the lab stack (inside the lab namespace): progress here, all output to a log
	$(IN_LAB) $(PY) -m lab.engine up --progress

lab-destroy: setup ## `pulumi destroy` of the lab stack: no pgpool, no VIP, servers kept
	$(IN_LAB) $(PY) -m lab.engine destroy

lab-status: setup ## pool_nodes and watchdog as seen through the VIP
	$(IN_LAB) $(PY) -m lab.cluster status

TIME ?=
lab-backup-restore: setup ## Restore the lab cluster from its backups: TIME='2026-11-27 03:12:45+00' or TIME=latest
	@[ -n "$(TIME)" ] || { echo "TIME='YYYY-MM-DD HH:MM:SS+00' (point in time) or TIME=latest" >&2; exit 2; }
	$(IN_LAB) $(PY) -m lab.cluster restore-backup $(if $(filter latest,$(TIME)),--latest,--time "$(TIME)")

demo: lab-provision lab-status ## The main job: lab up, cluster provisioned, status printed
	@echo "demo: done. Next: make drills (the HA drills), make lab-status, make lab-destroy, make lab-down"

# Drills (and any pytest selection) by marker: make drills MARKS='drill_g or drill_h'; MARKS='phase_drills and not slow'
# leaves the restores out (tests/ha/conftest.py lists the markers).
MARKS ?= phase_drills
drills: setup ## HA drills against the provisioned lab (exit 0 only if all pass); MARKS='drill_g' for one
	$(IN_LAB) .venv/bin/pytest -q -p no:cacheprovider -m '$(MARKS)' tests/ha

bench: setup ## Recovery times and throughput per pgpool profile: prints one JSON object and a table
	@$(IN_LAB) $(PY) -m lab.bench

DURATION ?= 1800
soak: setup ## Random faults under load for DURATION s (default 1800) on the fast profile: prints one JSON object
	@$(IN_LAB) $(PY) -m lab.soak --duration $(DURATION)

test-lab-infra: setup host-deps ## The lab itself: up, ssh, VIP, crash, partition, reboot, clean teardown
	.venv/bin/pytest -q -m lab_infra tests/lab_infra

lifecycle: setup host-deps engine ## Fresh lab: preview, interrupted up + recovery, drills, no-op, changes, destroy
	$(PY) -m lab reset
	$(IN_LAB) .venv/bin/pytest -q -p no:cacheprovider -m lifecycle tests/lifecycle tests/ha

changes: setup host-deps engine ## Fresh lab: provision, then the day-2 changes under a writer (no drills; in lifecycle)
	$(PY) -m lab reset
	$(IN_LAB) .venv/bin/pytest -q -p no:cacheprovider -m 'lifecycle and not phase_drills' tests/lifecycle

test: test-unit test-lab-infra lint lifecycle ## Every test: unit, the lab, lint, the engine's lifecycle with the drills

# The VM lab (libvirt + QEMU TCG in a namespace, see docs/vm-lab.md). Not in `make test`: under TCG it takes
# 40 minutes or more (docs/vm-lab.md).
include lab/vm/vm.mk

.PHONY: docs
docs: setup ## Rewrite docs/'s generated parts: configuration from Pulumi.yaml, figures from docs/figures/*.json
	$(PY) scripts/docs_generate.py
