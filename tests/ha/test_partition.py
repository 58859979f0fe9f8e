"""Drill g: the leader and primary cut off from the network: never two VIP holders nor two primaries, the cut-off
primary fences itself, and after healing it rejoins as a standby.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.cluster import (
    Cluster,
    Writer,
    pg_role,
    settings,
    vip_monitor,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)
from lab.util import wait_for
from tests.ha.drills import (
    FAILOVER_S,
    HEARTBEAT,
    VIP_S,
    check_writes,
    others,
    wait_follows,
    wait_writer_success,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("g")
@HEARTBEAT
def test_g_partition_of_leader_and_primary(healthy: Cluster, report: dict[str, Any]) -> None:
    """Cable pull of the leader/primary: never two VIP holders nor two primaries accepting writes through the VIP;
    the cut-off primary fences itself (stops accepting writes, even from clients connected to it directly) within
    the fencing bound; after healing, one primary, and the old one rejoins as a standby by online recovery."""
    c = healthy
    s = settings()
    victim = c.colocate_leader_and_primary()
    assert c.accepts_local_writes(victim)
    with vip_monitor(c.lab) as samples, Writer(seconds=300) as w:
        time.sleep(2)
        t0 = time.monotonic()
        c.lab.partition(victim)
        if s.fencing:
            # The isolation time plus a probe round (1 s) and the stop of PostgreSQL (fast shutdown).
            bound = s.fence_isolation_s + 10
            wait_for(f"{victim} to fence itself", lambda: not c.accepts_local_writes(victim), bound, 0.5)
            report["fenced_s"] = round(time.monotonic() - t0, 2)
        holder = c.wait_for_vip(VIP_S, not_on=victim)
        report["vip_s"] = round(time.monotonic() - t0, 2)
        new = c.wait_for_primary(FAILOVER_S, not_on=victim)
        report["promoted_s"] = round(time.monotonic() - t0, 2)
        report["write_back_s"] = round(wait_writer_success(w, t0) - t0, 2)
        time.sleep(3)
        t_heal = time.monotonic()
        c.lab.heal(victim)
        # Watch the healed network for a while: the old leader must not take the VIP back, nor pgpool the old primary.
        time.sleep(max(15.0, s.wd_interval * 3))
        report["watched_after_heal_s"] = round(time.monotonic() - t_heal, 1)
    holders_seen = [h for _, h in samples]
    report["max_vip_holders"] = max(len(h) for h in holders_seen)
    assert holder in others(victim)
    assert report["max_vip_holders"] <= 1, "two servers held the VIP at once"
    # Writes acknowledged through the VIP came from the old primary, then from the new one: never back and forth.
    seq = w.result.servers_in_order()
    report["write_servers"] = seq
    assert seq in ([victim, new], [new], [victim]), f"writes went to {seq}"
    nodes = pool_nodes()
    primaries = [n.name for n in nodes if n.role == "primary" and n.up]
    assert primaries == [new], nodes
    assert not next(n for n in nodes if n.name == victim).up
    # Outside pgpool: the old primary must not be a primary any more (clients bypassing pgpool could write to it).
    report["old_primary_direct_role_after_heal"] = pg_role(victim)
    if s.fencing:
        assert report["old_primary_direct_role_after_heal"] == "down", "the cut-off primary was not fenced"
        assert not c.accepts_local_writes(victim)
        # The documented way back: online recovery makes it a standby of the new primary.
        report["rejoin_s"] = round(c.recover_node(victim), 2)
        report["streams_s"] = round(wait_follows(c, victim, new), 2)
        assert pg_role(victim) == "standby"
    check_writes(w.result, report, t0)
