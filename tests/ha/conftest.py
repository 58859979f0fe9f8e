"""HA drills against the provisioned lab. Run inside the lab's switch namespace:

    ip netns exec pghalab-sw .venv/bin/pytest tests/lab        (make drills)

In CI (CI set) a lab that cannot run fails every drill loudly; elsewhere the drills are skipped with the reason.
Each drill starts from a healthy cluster (Cluster.restore), so any one of them can run alone (-k). Measured times go
to the terminal summary and to $LAB_DIR/drills-report.json.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import SERVERS, SWITCH_NS, Lab, LabError
from lab.cluster import Cluster, settings, try_pool_nodes
from lab.config import lab_dir
from tests.labpolicy import cannot_run, in_namespace, lab_host_problem, print_report, report_entry

RESTORE_TIMEOUT = 480.0
REPORT: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.lab)


def lab_problem(lab: Lab) -> str | None:
    """Why the drills cannot run here, or None."""
    problem = lab_host_problem()
    if problem:
        return problem
    if not in_namespace(SWITCH_NS):
        return f"the drills must run inside the lab namespace: ip netns exec {SWITCH_NS} .venv/bin/pytest tests/lab"
    down = [s.name for s in SERVERS if not lab.is_running(s.name)]
    if len(down) == len(SERVERS):
        return "the lab is down (make lab-up) and not provisioned (make lab-provision)"
    try:
        settings()
    except (LabError, ValueError) as e:
        return f"the cluster is not provisioned (make lab-provision): {e}"
    if try_pool_nodes() is None and not any(lab.is_running(s.name) for s in SERVERS):
        return "no pgpool answers and no server runs"
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    lab = Lab()
    problem = lab_problem(lab)
    if problem:
        cannot_run(problem)
    c = Cluster(lab)
    yield c


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    """Each drill starts from a healthy cluster, whatever the previous one left behind."""
    t0 = time.monotonic()
    cluster.restore(timeout=RESTORE_TIMEOUT)
    took = time.monotonic() - t0
    if took > 1:
        REPORT.setdefault("_restore_s", []).append(round(took, 1))
    return cluster


@pytest.fixture
def report(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Measurements of the running drill, shown in the summary."""
    return report_entry(REPORT, request)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    print_report(terminalreporter, "drill measurements (seconds)", REPORT, lab_dir() / "drills-report.json")
