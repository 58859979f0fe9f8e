"""The lab stack's life with the real engine: `make lifecycle` runs, in this order, in one pytest session

    tests/lifecycle/test_1_provision.py   fresh lab: preview --diff, an interrupted up, the recovering up, secrets
    tests/lab                             the HA drills a-k
    tests/lifecycle/test_2_day2.py        no-op up, refresh, a reloadable and a restart-only change, destroy

inside the lab's switch namespace (clients and `pulumi up` reach the servers from there). In CI a lab that cannot
run fails loudly; elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import SWITCH_NS, Lab
from lab.cluster import Cluster
from lab.config import lab_dir
from lab.engine import Engine, EngineError, LabStack
from tests.labpolicy import cannot_run, in_namespace, lab_host_problem, print_report, report_entry

REPORT: dict[str, Any] = {}
# Everything the engine printed in this session, checked for secrets at the end of each file.
ENGINE_OUTPUT: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Lab:
    problem = lab_host_problem()
    if problem is None and not in_namespace(SWITCH_NS):
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
    return report_entry(REPORT, request)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    print_report(terminalreporter, "lifecycle measurements (seconds)", REPORT, lab_dir() / "lifecycle-report.json")
