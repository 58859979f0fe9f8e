"""The lab stack's life with the real engine: `make lifecycle` runs every test marked `lifecycle` in one pytest
session, in the order of tests/conftest.py's PHASES (provision, the drills of tests/ha, the day-2 changes, destroy):

    ip netns exec pghalab-sw .venv/bin/pytest -m lifecycle tests/lifecycle tests/ha

inside the lab's switch namespace (clients and `pulumi up` reach the servers from there); `make changes` is the same
without the drills (-m "lifecycle and not phase_drills"). In CI a lab that cannot run fails loudly; elsewhere the
tests are skipped with the reason.
"""

from __future__ import annotations

import pytest

from lab import SWITCH_NS, Lab
from lab.cluster import Cluster
from lab.engine import Engine, EngineError, LabStack
from tests.labpolicy import cannot_run, in_namespace, lab_host_problem

# Everything the engine printed during this pytest run, checked for secrets at the end of each file.
ENGINE_OUTPUT: list[str] = []


@pytest.fixture(scope="session")
def lab() -> Lab:
    problem = lab_host_problem()
    if problem is None and not in_namespace(SWITCH_NS):
        problem = (
            f"run inside the lab namespace: ip netns exec {SWITCH_NS} .venv/bin/pytest -m lifecycle tests/lifecycle"
        )
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
