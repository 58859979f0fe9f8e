"""Drill j: zero loss with synchronous replication, proven by re-provisioning the lab (`pulumi up`) with the config
of Pulumi.lab-sync.yaml for its duration, then putting it back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.cluster import (
    STACK_ENV,
    Cluster,
    Writer,
)
from lab.engine import LabStack
from lab.util import wait_for
from tests.ha.drills import (
    FAILOVER_S,
    FOLLOW_S,
    HEARTBEAT,
    check_writes,
    healthy_pg_unit,
    synchronous_deployed,
    wait_writer_success,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.fixture(scope="module")
def sync_stack(cluster: Cluster) -> Iterator[Cluster]:
    """The lab re-provisioned with synchronous replication (stack lab-sync) for one drill, then put back."""
    previous = os.environ.get(STACK_ENV, "lab")
    cluster.restore()
    switched = not synchronous_deployed()
    if switched:
        apply_stack("lab-sync")
    os.environ[STACK_ENV] = "lab-sync"
    try:
        cluster.restore()
        assert synchronous_deployed()
        yield cluster
    finally:
        os.environ[STACK_ENV] = previous
        if switched:
            cluster.restore()
            apply_stack(previous)


def apply_stack(stack: str) -> None:
    """`pulumi up` of the lab stack with the config of Pulumi.<stack>.yaml (the engine, as a user runs it)."""
    LabStack(echo=False).up(stack)


@pytest.mark.drill("j")
@pytest.mark.parametrize(
    "fault",
    ["stop-postgresql", pytest.param("power-loss", marks=HEARTBEAT), pytest.param("partition", marks=HEARTBEAT)],
)
def test_j_no_acknowledged_write_lost_with_synchronous_replication(
    sync_stack: Cluster, healthy: Cluster, report: dict[str, Any], fault: str
) -> None:
    """Synchronous replication: after losing the primary every acknowledged row exists."""
    c = healthy
    victim = c.colocate_leader_and_primary() if fault != "stop-postgresql" else c.wait_for_primary()
    with Writer(seconds=300, interval=0.01) as w:
        time.sleep(3)
        t0 = time.monotonic()
        if fault == "stop-postgresql":
            c.lab.stop_service(victim, healthy_pg_unit())
        elif fault == "power-loss":
            c.crash(victim)
        else:
            c.lab.partition(victim)
        c.wait_for_primary(FAILOVER_S, not_on=victim)
        report["write_back_s"] = round(wait_writer_success(w, t0) - t0, 2)
        # The new primary commits alone until a standby follows it (failover.sh), then ANY 1 is back
        # (follow_primary.sh): bounded by the follow.
        wait_for("synchronous replication restored on the new primary", synchronous_deployed, FOLLOW_S, 0.5)
        report["synchronous_again_s"] = round(time.monotonic() - t0, 2)
        time.sleep(3)
    check_writes(w.result, report, t0)
    assert report["lost_acknowledged_writes"] == 0
