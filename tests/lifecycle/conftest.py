"""The lab stack's life with the real engine: `make lifecycle` runs, in this order, in one pytest session

    tests/lifecycle/test_1_provision.py   fresh lab: preview --diff, an interrupted up, the recovering up, secrets
    tests/lab                             the HA drills a-j
    tests/lifecycle/test_2_day2.py        no-op up, refresh, a reloadable and a restart-only change, destroy

inside the lab's switch namespace (clients and `pulumi up` reach the servers from there). In CI a lab that cannot
run fails loudly; elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lab import SWITCH_NS, Lab
from lab.cluster import Cluster
from lab.config import lab_dir
from lab.engine import Engine, EngineError, LabStack
from tests.labpolicy import cannot_run, lab_host_problem

REPORT: dict[str, Any] = {}
# Everything the engine printed in this session, checked for secrets at the end of each file.
ENGINE_OUTPUT: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.lab)


def _in_switch_namespace() -> bool:
    try:
        return os.stat(f"/run/netns/{SWITCH_NS}").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


@pytest.fixture(scope="session")
def lab() -> Lab:
    problem = lab_host_problem()
    if problem is None and not _in_switch_namespace():
        problem = f"run inside the lab namespace: ip netns exec {SWITCH_NS} .venv/bin/pytest tests/lifecycle"
    if problem is None:
        try:
            Engine.locate()
        except EngineError as e:
            problem = str(e)
    lab = Lab()
    if problem is None and not all(lab.is_running(n) for n in ("server1", "server2", "server3")):
        problem = "the lab is down (make lab-up)"
    if problem:
        cannot_run(problem)
    return lab


@pytest.fixture(scope="session")
def stack(lab: Lab) -> LabStack:
    return LabStack(echo=True)


@pytest.fixture(scope="session")
def cluster(lab: Lab) -> Cluster:
    return Cluster(lab)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    REPORT[request.node.name] = entry
    return entry


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("lifecycle measurements (seconds)")
    for name, values in REPORT.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, default=str)}")
    try:
        path = lab_dir() / "lifecycle-report.json"
        path.write_text(json.dumps(REPORT, indent=2, default=str) + "\n")
        terminalreporter.write_line(f"written to {path}")
    except OSError:
        pass
