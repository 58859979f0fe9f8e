"""Two nodes added to `nodes` join as streaming standbys and drills a, b, d pass at five nodes, then a list that
moves a node is refused before anything is written and removing the two leaves no slot behind."""

from __future__ import annotations

import time
from typing import Any

import pytest

import tests.ha.test_failover as failover_drills
import tests.ha.test_pool_nodes as pool_nodes_drills
import tests.ha.test_watchdog as watchdog_drills
from lab.cluster import (
    PGPOOL_UNIT,
    Cluster,
    address_of,
    primary_node,
    query,
)
from lab.cluster import settings as lab_settings
from lab.core import Lab
from lab.engine import LabStack
from tests.lifecycle.conftest import ENGINE_OUTPUT
from tests.lifecycle.day2 import (
    CONFIG_NOW,
    NODES,
    _report_and_check_writes,
    _up_while_writing,
)

pytestmark = [pytest.mark.phase("scaling"), pytest.mark.slow]


# Scale 3 -> 5 -> 3: two entries added to `nodes`, then removed (from the end: pgpool's backend ids are positions).
ADDED = ("server4", "server5")
THREE = [{"name": n, "address": address_of(n)} for n in NODES]
FIVE = [*THREE, *({"name": n, "address": address_of(n)} for n in ADDED)]
# What a change of the member list touches on the nodes that stay: the files that list the nodes, the membership
# and attach steps, the restart of pgpool (new backends and watchdog members), the fence (its script lists the
# nodes), known hosts, and the first primary's bootstrap / the standbys' clone steps (they name the other nodes; on a
# member they do nothing), pgha-metrics (it lists the nodes); on the backup repository host, what lists the nodes
# (stanza, ssh, pgha-restore, Prometheus's targets). Never a PostgreSQL restart, a
# switchover or a password step.
MEMBERSHIP_STEPS = {f"{n}-{step}" for n in NODES for step in (
    "membership-check", "cluster-member", "cluster-attach", "pgpool-service", "fence-service", "ssh-known-hosts",
    "file-etc-hosts", "file-etc-pgpool2-pgpoolconf", "file-etc-pgpool2-pgpool_localconf",
    "file-etc-pgpool2-scripts-escalationsh", "file-etc-pgpool2-scripts-failoversh",
    "file-usr-local-lib-pgha-pg-make-standby", "file-usr-local-lib-pgha-pg-start-guard",
    "file-usr-local-lib-pgha-pgha-apply-restart", "file-usr-local-lib-pgha-pgha-fence",
    "file-usr-local-lib-pgha-pgha-follow", "file-usr-local-lib-pgha-pgha-members",
    "file-usr-local-lib-pgha-pgha-passwords", "file-var-lib-postgresql-15-main-pgpool_remote_start",
    "file-var-lib-postgresql-15-main-recovery_1st_stage", "file-var-lib-postgresql-ssh-config",
    "file-usr-local-lib-pgha-pgha-metrics", "monitoring-services",
)} | {"server1-primary-bootstrap", "server2-standby-clone", "server3-standby-clone"} | {
    # The backup repository host: the files that name the database nodes (stanza, ssh, pgha-restore) and their keys.
    f"backup-{step}" for step in (
        "file-etc-hosts", "file-etc-pgbackrest-pgbackrestconf", "file-home-pgbackrest-ssh-config",
        "file-usr-local-sbin-pgha-restore", "ssh-known-hosts", "file-etc-prometheus-prometheusyml",
        "monitoring-services",
    )
}  # fmt: skip


def _slots_on(primary: str) -> dict[str, bool]:
    out = query(
        "SELECT slot_name, active FROM pg_replication_slots", host=address_of(primary), port=lab_settings().pg_port
    )
    return {name: active for name, active in out}


def _scale_under_a_writer(stack: LabStack, nodes: list[dict[str, str]], report: dict[str, Any]) -> tuple[Any, Any]:
    run, result = _up_while_writing(stack, {**CONFIG_NOW, "nodes": nodes})
    _report_and_check_writes(report, run, result)
    return run, result


def test_scale_out_to_five_nodes_by_config(stack: LabStack, cluster: Cluster, report: dict[str, Any]) -> None:
    """Two nodes added to `nodes`: `up` provisions them as streaming standbys, every pgpool knows five backends and
    five watchdog members (quorum 3), while a writer commits through the VIP; then drills a, b and d pass at 5."""
    cluster.restore(warmup=False)
    for node in ADDED:
        cluster.lab_verb("add", node)
    planned = stack.plan(overrides={**CONFIG_NOW, "nodes": FIVE})
    created = {ref for ref, op in planned.items() if op == "create"}
    updated = {ref for ref, op in planned.items() if op == "update"}
    assert planned.keys() == created | updated, planned  # nothing deleted or replaced
    assert all(ref.startswith(("server4-", "server5-", "cluster-server4", "cluster-server5")) for ref in created)
    assert updated == MEMBERSHIP_STEPS, sorted(updated ^ MEMBERSHIP_STEPS)
    _scale_under_a_writer(stack, FIVE, report)
    cluster.wait_healthy(180, warmup=False)  # five backends up, one primary, four streaming, 1 LEADER + 4 STANDBY
    primary = primary_node()
    assert primary is not None
    slots = _slots_on(primary)
    report["slots_on_primary"] = sorted(slots)
    assert {n for n in (*NODES, *ADDED) if n != primary} <= {k for k, active in slots.items() if active}, slots
    wd = cluster.watchdog_info()
    report["watchdog"] = f"{wd.total} members, {wd.quorum_required} for quorum, {wd.quorum_state}"
    assert wd.total == 5 and wd.quorum_required == 3, report["watchdog"]
    again = stack.preview(overrides={**CONFIG_NOW, "nodes": FIVE}, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)


def test_drills_a_b_and_a_failover_pass_at_five_nodes(cluster: Cluster, report: dict[str, Any]) -> None:
    assert len(cluster.lab.members()) == 5, "the scale-out test did not leave five servers"
    cluster.restore()
    pool_nodes_drills.test_a_pool_nodes(cluster)
    watchdog_drills.test_b_watchdog(cluster)
    drill_d: dict[str, Any] = {}
    failover_drills.test_d_stop_postgresql_on_primary(cluster, drill_d)
    report.update({f"d_{k}": v for k, v in drill_d.items()})
    t0 = time.monotonic()
    cluster.restore(warmup=False)  # the old primary back as a standby (online recovery), five healthy again
    report["restore_s"] = round(time.monotonic() - t0, 1)


def test_scale_in_to_three_nodes_by_config(stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]) -> None:
    """The two entries removed again: the remaining pgpools restart with three backends, the removed nodes' pgpool
    and PostgreSQL stop and their slots go from the primary (no WAL held for them); writes go on through the VIP."""
    cluster.restore(warmup=False)
    # A list that moves nodes (pgpool's backend ids are positions) is refused on every node before anything is
    # written: the same five nodes with the last two swapped.
    conf = "md5sum /etc/pgpool2/pgpool.conf /etc/hosts /etc/postgresql/15/main/conf.d/pgha.conf"
    before = {n: lab.exec(n, conf).stdout for n in (*NODES, *ADDED)}
    refused = stack.up(overrides={**CONFIG_NOW, "nodes": [*THREE, FIVE[4], FIVE[3]]}, check=False)
    ENGINE_OUTPUT.append(refused.output)
    assert refused.returncode != 0, refused.output[-3000:]
    message = "failed: nodes: server4 would move from position 3 to 4"
    assert refused.output.count(message) >= 5, refused.output[-3000:]  # every member refused it
    assert {n: lab.exec(n, conf).stdout for n in (*NODES, *ADDED)} == before, "a refused change wrote files"
    again = stack.preview(overrides={**CONFIG_NOW, "nodes": FIVE}, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)
    primary = primary_node()
    # Which node the five-node failover promoted depends on what the drills before it left behind. A primary on a
    # node the scale-in removes is switched over first, as docs/changes.md tells the operator to.
    for _ in ADDED:
        if primary in NODES:
            break
        report.setdefault("primary_switched_off", []).append(primary)
        primary = cluster.move_primary_off(str(primary))
    assert primary in NODES, f"the primary is {primary}, which the scale-in removes (docs/changes.md: switch first)"
    planned = stack.plan(overrides={**CONFIG_NOW, "nodes": THREE})
    deleted = {ref for ref, op in planned.items() if op == "delete"}
    updated = {ref for ref, op in planned.items() if op == "update"}
    assert planned.keys() == deleted | updated, planned
    assert all(ref.startswith(("server4-", "server5-", "cluster-server4", "cluster-server5")) for ref in deleted)
    assert updated == MEMBERSHIP_STEPS, sorted(updated ^ MEMBERSHIP_STEPS)
    run, _ = _scale_under_a_writer(stack, THREE, report)
    assert "server4 left the cluster" in run.output and "server5 left the cluster" in run.output, run.output[-3000:]
    for node in ADDED:
        assert not cluster.service_active(node, PGPOOL_UNIT), f"pgpool still runs on {node}"
        assert not cluster.service_active(node, lab_settings().pg_unit), f"PostgreSQL still runs on {node}"
    slots = _slots_on(primary)
    report["slots_on_primary"] = sorted(slots)
    assert set(slots) == {n for n in NODES if n != primary}, f"slots left on {primary}: {slots}"
    for node in ADDED:
        cluster.lab_verb("remove", node)
    cluster.wait_healthy(180, warmup=False)
    again = stack.preview(overrides={**CONFIG_NOW, "nodes": THREE}, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)
