"""The VM lab's test session (a pytest plugin: `-p tests.vm_lab.session`, as `python -m lab.vm test` loads it).

Before the first test: `pulumi up` of the vmlab stack (inside the lab namespace, where pytest runs), timing the
boot (first ssh answer per VM) and the provisioning after it. Then the tests given on the command line run with the
VM back-end of the lab API ($PGHA_LAB=vm): the VM-specific checks of this folder and the HA drills themselves. At
the end, the phases and the drills' figures (the same `report` entries the container lab's drills record) go to the
terminal and to /var/lib/pgha-vmlab/vm-lab-report.json.

VM_LAB_REUSE=1: against a lab `make vm-lab-up` left running (no `pulumi up` here):

    VM_LAB_REUSE=1 VM_LAB_TESTS=1 PGHA_LAB=vm ip netns exec pghavm .venv/bin/python -m pytest -q -s \
        -p tests.vm_lab.session tests/vm_lab/test_vm_infra.py
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.api import current_lab, lab_kind
from lab.util import LabError
from lab.vm import settings as s
from lab.vm.backend import KNOWN_HOSTS, VmLab
from tests.labpolicy import REPORTS, cannot_run, print_report

REPO = Path(__file__).resolve().parents[2]
PROVISION_TIMEOUT_S = 3600.0
PHASES: dict[str, float] = {}


def phase(name: str, seconds: float) -> None:
    """One measured phase of the run, printed at once (the run is long) and kept for the report."""
    PHASES[name] = round(seconds, 1)
    print(f"\nvm-lab phase {name}: {seconds:.1f} s", flush=True)
    # As they come: a run that dies half-way still leaves its phases (and docs/vm-lab.md reads this file).
    s.LOG_DIR.mkdir(parents=True, exist_ok=True)
    (s.LOG_DIR / "times.json").write_text(json.dumps(PHASES, indent=2) + "\n")


def vm_lab_problem() -> str | None:
    if os.environ.get("VM_LAB_TESTS") != "1" and not os.environ.get("CI"):
        return "VM lab test: set VM_LAB_TESTS=1 (make test-vm-lab builds the VM lab, runs pulumi up/destroy)"
    if lab_kind() != "vm":
        return "the VM lab's session needs PGHA_LAB=vm (make test-vm-lab sets it)"
    return current_lab().problem() if os.environ.get("VM_LAB_REUSE") == "1" else None


def answers_ssh(lab: VmLab, node: str) -> bool:
    try:
        return lab.ssh(node, "true", timeout=45).returncode == 0
    except LabError:  # timed out: still booting
        return False


def provision_timing_boot(lab: VmLab) -> None:
    """`python -m lab.vm provision`; meanwhile, the first successful ssh per VM is its boot time."""
    booted: dict[str, float] = {}
    t0 = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "lab.vm", "provision"], cwd=REPO)
    try:
        while up.poll() is None and len(booted) < len(lab.members()):
            for node in lab.members():
                if node.name not in booted and lab.is_running(node.name) and answers_ssh(lab, node.name):
                    booted[node.name] = time.monotonic() - t0
            time.sleep(3)
        rc = up.wait(timeout=max(60.0, PROVISION_TIMEOUT_S - (time.monotonic() - t0)))
    finally:
        if up.poll() is None:
            up.kill()
    if rc != 0:
        pytest.fail(f"pulumi up of the vmlab stack failed (rc {rc})", pytrace=False)
    last_boot = max(booted.values(), default=float("nan"))
    phase("boot_all_ssh", last_boot)
    phase("pulumi_up", time.monotonic() - t0)
    phase("provisioning_after_boot", time.monotonic() - t0 - max(booted.values(), default=0.0))


@pytest.fixture(scope="session", autouse=True)
def vm_lab() -> Iterator[VmLab]:
    """The provisioned VM lab, for every test of the session (autouse: before the drills' own fixtures)."""
    problem = vm_lab_problem()
    if problem:
        cannot_run(problem)
    lab = current_lab()
    assert isinstance(lab, VmLab)
    with contextlib.suppress(OSError, ValueError):  # no host phases when the lab was up already (VM_LAB_REUSE)
        PHASES.update(json.loads(s.HOST_TIMES.read_text()))
    if os.environ.get("VM_LAB_REUSE") != "1":
        KNOWN_HOSTS.unlink(missing_ok=True)  # fresh VMs, new host keys
        provision_timing_boot(lab)
    problem = lab.problem()
    if problem:
        pytest.fail(f"the VM lab is not usable after pulumi up: {problem}", pytrace=False)
    yield lab


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After tests/conftest.py's order (which puts tests without a lifecycle phase first): destroy goes last."""
    items.sort(key=lambda item: Path(str(item.path)).name == "test_vm_teardown.py")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PHASES:
        return
    report = {"phases": PHASES, "drills": REPORTS["drills"]}
    print_report(terminalreporter, "VM lab phases and drill figures (seconds)", report, s.REPORT_FILE)
