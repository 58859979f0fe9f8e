"""Failover drills d, e, f, h, k: the primary lost (PostgreSQL stopped, the server powered off or rebooted, the
watchdog leader dying while the standbys follow): a standby is promoted, service resumes through the VIP, the old
primary comes back as a standby, never as a second primary.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.cluster import (
    Cluster,
    Writer,
    pg_role,
    query,
    vip_monitor,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)
from tests.ha.drills import (
    FAILOVER_S,
    HEARTBEAT,
    VIP_S,
    check_writes,
    healthy_pg_unit,
    others,
    wait_follows,
    wait_writer_success,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("d")
def test_d_stop_postgresql_on_primary(healthy: Cluster, report: dict[str, Any]) -> None:
    """Stop PostgreSQL on the primary: a standby is promoted, the other streams from it, writes succeed."""
    c = healthy
    old = c.wait_for_primary()
    with Writer(seconds=300) as w:
        time.sleep(2)
        t0 = time.monotonic()
        c.lab.stop_service(old, healthy_pg_unit())
        new = c.wait_for_primary(FAILOVER_S, not_on=old)
        report["promoted_s"] = round(time.monotonic() - t0, 2)
        report["write_back_s"] = round(wait_writer_success(w, t0) - t0, 2)
        for other in (n for n in others(old) if n != new):  # one at 3 nodes, three at 5
            report["other_follows_s"] = round(time.monotonic() - t0 + wait_follows(c, other, new), 2)
        time.sleep(2)
    assert new in others(old)
    assert pg_role(new) == "primary"
    assert pg_role(old) == "down"
    check_writes(w.result, report, t0)


@pytest.mark.drill("e")
def test_e_online_recovery_of_old_primary(healthy: Cluster, report: dict[str, Any]) -> None:
    """pcp_recovery_node brings the failed old primary back as a streaming standby; 3 nodes up again."""
    c = healthy
    old = c.wait_for_primary()
    c.lab.stop_service(old, healthy_pg_unit())
    new = c.wait_for_primary(FAILOVER_S, not_on=old)
    assert next(n for n in pool_nodes() if n.name == old).status == "down"
    report["recovery_s"] = round(c.recover_node(old), 2)
    report["streams_s"] = round(wait_follows(c, old, new), 2)
    assert pg_role(old) == "standby"
    nodes = pool_nodes()
    assert all(n.up for n in nodes) and len(nodes) == 3
    assert [n.name for n in nodes if n.role == "primary"] == [new]


@pytest.mark.drill("f")
@HEARTBEAT
def test_f_power_loss_of_primary_and_vip_holder(healthy: Cluster, report: dict[str, Any]) -> None:
    """Power loss of the server holding both the primary and the VIP: service resumes on the survivors."""
    c = healthy
    victim = c.colocate_leader_and_primary()
    with vip_monitor(c.lab) as samples, Writer(seconds=300) as w:
        time.sleep(2)
        t0 = time.monotonic()
        c.crash(victim)
        holder = c.wait_for_vip(VIP_S, not_on=victim)
        report["vip_s"] = round(time.monotonic() - t0, 2)
        new = c.wait_for_primary(FAILOVER_S, not_on=victim)
        report["promoted_s"] = round(time.monotonic() - t0, 2)
        report["write_back_s"] = round(wait_writer_success(w, t0) - t0, 2)
        time.sleep(2)
    assert holder in others(victim) and new in others(victim)
    # The surviving standby must follow the new primary (else the cluster runs without a replica).
    survivor = next(n for n in others(victim) if n != new)
    report["survivor_follows_s"] = round(wait_follows(c, survivor, new, timeout=60), 2)
    assert max(len(h) for _, h in samples) <= 1, "two servers held the VIP at once"
    check_writes(w.result, report, t0)


@pytest.mark.drill("h")
def test_h_reboot_of_former_primary(healthy: Cluster, report: dict[str, Any]) -> None:
    """A former primary that reboots does not come back as a second primary."""
    c = healthy
    old = c.wait_for_primary()
    c.lab.stop_service(old, healthy_pg_unit())
    new = c.wait_for_primary(FAILOVER_S, not_on=old)
    t0 = time.monotonic()
    c.lab.reboot(old)
    report["reboot_s"] = round(time.monotonic() - t0, 2)
    # Give PostgreSQL's unit time to settle (it starts at boot, the guard decides).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = c.lab.exec(old, ["systemctl", "is-active", healthy_pg_unit()], timeout=15).stdout.strip()
        if state not in ("activating", "reloading"):
            break
        time.sleep(1)
    report["pg_unit_after_reboot"] = state
    assert pg_role(old) != "primary", f"{old} came back as a primary"
    c.wait_for_vip(VIP_S)  # the rebooted server may have been the watchdog leader
    nodes = pool_nodes()
    assert [n.name for n in nodes if n.role == "primary" and n.up] == [new]
    assert [n.name for n in nodes if n.pg_role == "primary"] == [new]


@pytest.mark.drill("k")
@HEARTBEAT
def test_k_leader_dies_while_the_standbys_follow(healthy: Cluster, report: dict[str, Any]) -> None:
    """The watchdog leader runs on the primary's server: stop PostgreSQL there, and the moment a standby is promoted
    (pgpool's follow-primary step is running) power that server off. The survivors elect a leader that keeps
    serving: the remaining standby follows or is attached again, the dead server comes back by online recovery, and
    nothing restarts pgpool (the silent pgpool of docs/failure-modes.md: a follow-primary lock left behind by the
    dead leader)."""
    c = healthy
    old = c.colocate_leader_and_primary()
    c.lab.stop_service(old, healthy_pg_unit())
    new = c.wait_for_primary(FAILOVER_S, not_on=old)
    t0 = time.monotonic()
    c.crash(old)
    c.wait_for_vip(VIP_S, not_on=old)
    report["vip_s"] = round(time.monotonic() - t0, 2)
    # The operator's path (docs/failure-modes.md): power the server back on, attach or rebuild what is detached.
    # restore() restarts no pgpool; a pgpool that stops answering fails here, with its processes and log in the error.
    t1 = time.monotonic()
    c.restore(timeout=300)
    report["restored_s"] = round(time.monotonic() - t1, 2)
    nodes = pool_nodes()
    assert all(n.up for n in nodes) and [n.name for n in nodes if n.role == "primary"] == [new], nodes
    assert pg_role(old) == "standby"
    query("SELECT 1", timeout=5)  # a new session through the VIP is served
