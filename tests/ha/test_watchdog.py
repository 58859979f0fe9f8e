"""Drills b, c: the watchdog agrees on one leader holding the VIP; when pgpool stops on the leader, another
node leads and holds the VIP, and clients through the VIP work again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.cluster import (
    PGPOOL_UNIT,
    Cluster,
    Writer,
    query,
)
from tests.ha.drills import (
    VIP_S,
    check_writes,
    wait_writer_success,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("b")
def test_b_watchdog(healthy: Cluster) -> None:
    """pcp_watchdog_info: every node a member (3, or 5), one LEADER holding the VIP, the others STANDBY."""
    wd = healthy.watchdog_info()
    members = healthy.lab.members()
    assert wd.total == len(members) and len(wd.nodes) == len(members)
    assert all(n.membership == "MEMBER" for n in wd.nodes), wd.nodes
    assert len(wd.in_state("LEADER")) == 1 and len(wd.in_state("STANDBY")) == len(members) - 1
    assert wd.leader is not None
    assert healthy.lab.vip_holders() == [wd.leader]
    # Every member sees the same leader.
    for s in members:
        assert healthy.watchdog_info(s.name).leader == wd.leader


@pytest.mark.drill("c")
def test_c_stop_pgpool_on_leader(healthy: Cluster, report: dict[str, Any]) -> None:
    """Stop pgpool on the leader: another node is LEADER holding the VIP; clients through the VIP work again."""
    c = healthy
    leader = c.watchdog_info().leader
    assert leader
    with Writer(seconds=300) as w:
        time.sleep(2)
        t0 = time.monotonic()
        c.lab.stop_service(leader, PGPOOL_UNIT)
        holder = c.wait_for_vip(VIP_S, not_on=leader)
        report["vip_s"] = round(time.monotonic() - t0, 2)
        new_leader = c.wait_for_leader(VIP_S, not_on=leader)
        report["leader_s"] = round(time.monotonic() - t0, 2)
        report["write_back_s"] = round(wait_writer_success(w, t0) - t0, 2)
        time.sleep(2)
    assert new_leader == holder != leader
    assert c.lab.vip_holders() == [new_leader]
    assert query("SELECT 1") == [(1,)]
    check_writes(w.result, report, t0)
