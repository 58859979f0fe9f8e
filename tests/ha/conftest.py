"""HA drills against the provisioned lab. Run inside the lab's switch namespace:

    ip netns exec pghalab-sw .venv/bin/pytest -m phase_drills tests/ha        (make drills)

Each file is one behaviour; each drill keeps its letter as a marker, `@pytest.mark.drill("d")`, which
tests/conftest.py turns into `drill_d` for `pytest -m`:

    test_alerts.py          m1, m2, m3   an alert fires in Prometheus on a fault and resolves on the heal
    test_pool_nodes.py      a            every node up in pgpool, one primary, the others streaming
    test_watchdog.py        b, c         one watchdog leader holding the VIP; a new one when its pgpool stops
    test_failover.py        d, e, f, h, k  the primary lost: promotion, online recovery, power loss, reboot, leader dies
    test_partition.py       g            the leader/primary cut off: no split brain, fencing, rejoin
    test_sessions.py        l            open sessions answer after a clean stop of the primary
    test_load_balancing.py  i            reads reach the standbys
    test_synchronous.py     j            no acknowledged write lost with synchronous replication (re-provisions)
    test_restore.py         r1, r2, r3   restores from the pgBackRest repository (slow)

    ip netns exec pghalab-sw .venv/bin/pytest -m drill_g tests/ha                 one drill
    ip netns exec pghalab-sw .venv/bin/pytest -m "drill_d or drill_e" tests/ha    several
    ip netns exec pghalab-sw .venv/bin/pytest -m "phase_drills and not slow" tests/ha   without the restores

Whatever the selection, they run in the order of DRILL_ORDER (tests/conftest.py). In CI (CI set) a lab that cannot
run fails every drill loudly; elsewhere the drills are skipped with the reason. Each drill starts from a healthy
cluster (Cluster.restore), so any one of them can run alone. Measured times go to the terminal summary and to
$LAB_DIR/drills-report.json (the `report` fixture, tests/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lab import LabBackend, LabError, current_lab
from lab.cluster import Cluster, settings, try_pool_nodes
from tests.labpolicy import REPORTS, cannot_run

RESTORE_TIMEOUT = 480.0


def lab_problem(lab: LabBackend) -> str | None:
    """Why the drills cannot run here, or None."""
    problem = lab.problem()  # the back-end's own: host, client namespace, servers down
    if problem:
        return problem
    try:
        settings()
    except (LabError, ValueError) as e:
        return f"the cluster is not provisioned (make lab-provision): {e}"
    if try_pool_nodes() is None and not any(lab.is_running(s.name) for s in lab.members()):
        return "no pgpool answers and no server runs"
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The drills' cluster: it must be provisioned already (in a lifecycle session, by the provision phase). Not
    tests/lifecycle's `cluster`, which serves a lab before its first `up`."""
    lab = current_lab()  # the back-end $PGHA_LAB chooses (lab.api): the containers unless it says vm
    problem = lab_problem(lab)
    if problem:
        cannot_run(problem)
    c = Cluster(lab)
    yield c


@pytest.fixture
def healthy(request: pytest.FixtureRequest, cluster: Cluster) -> Cluster:
    """Each drill starts from a healthy cluster, whatever the previous one left behind. A drill whose fault is silent
    to the watchdog (marked `heartbeat`: power loss, partition) also waits until every pgpool's heartbeat lifecheck
    has started (wd_interval x 10 s after pgpool starts), or the fault would be seen late; the others need not."""
    t0 = time.monotonic()
    cluster.restore(timeout=RESTORE_TIMEOUT, warmup=request.node.get_closest_marker("heartbeat") is not None)
    took = time.monotonic() - t0
    if took > 1:
        REPORTS["drills"].setdefault("_restore_s", []).append(round(took, 1))
    return cluster
