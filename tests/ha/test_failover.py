"""The HA drills (issue 4, a-k): short scenarios against the three real servers, each from a healthy cluster.

A bounded writer commits numbered rows through the VIP during c-g; afterwards every acknowledged row must exist.
With synchronous replication (stack option postgresql.synchronousReplication) that is asserted; with asynchronous
replication a loss is reported, not failed (it is the documented trade-off). Drill j proves zero loss with
synchronous replication by re-provisioning the lab (`pulumi up`) with the config of Pulumi.lab-sync.yaml for its
duration.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import Lab
from lab.cluster import (
    NO_LB,
    PGPOOL_UNIT,
    STACK_ENV,
    WRITES_TABLE,
    Cluster,
    Writer,
    WriterResult,
    address_of,
    connect,
    ensure_writes_table,
    missing_rows,
    node_of,
    pg_role,
    query,
    settings,
    try_query,
    vip_monitor,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)
from lab.engine import LabStack
from lab.util import wait_for

REPO = Path(__file__).resolve().parents[2]
# Bounds for one event, generous for the slower walkthrough profile (the tuned one takes a fraction of these).
FAILOVER_S = 120.0
VIP_S = 120.0
FOLLOW_S = 180.0


def others(node: str) -> list[str]:
    """The lab's other servers (three, or five while the cluster is scaled out)."""
    return [s.name for s in Lab().members() if s.name != node]


def wait_writer_success(w: Writer, after: float, timeout: float = 120) -> float:
    """Until the writer commits again after the event at `after` (after its first failure, if it failed);
    returns that commit's time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outage = w.result.outage(after)
        t = w.result.first_success_after(after) if outage is None else outage[1]
        if t is not None and t == t:  # NaN: failed, not back yet
            return t
        time.sleep(0.2)
    raise AssertionError(f"no write through the VIP succeeded within {timeout:.0f} s")


def synchronous_deployed(timeout: float = 60) -> bool:
    """Whether the primary runs with synchronous_standby_names set, asked through the VIP. Right after a fault pgpool
    may still be failing over and drop the connection: ask again until it answers (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = try_query(f"{NO_LB}SHOW synchronous_standby_names")
        if rows is not None:
            return bool(rows and rows[0][0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer through the VIP for {timeout:.0f} s")
        time.sleep(0.5)


def check_writes(res: WriterResult, report: dict[str, Any], t_event: float) -> None:
    """Every acknowledged row exists (asserted with synchronous replication; reported with asynchronous)."""
    missing = missing_rows(res)
    outage = res.outage(t_event)
    report["writes"] = res.summary()
    back = outage[1] if outage else res.first_success_after(t_event)
    report["write_back_s"] = round(back - t_event, 2) if back is not None else None
    report["write_outage_s"] = round(outage[1] - outage[0], 2) if outage else 0.0
    report["lost_acknowledged_writes"] = len(missing)
    sync = synchronous_deployed()
    report["replication"] = "synchronous" if sync else "asynchronous"
    assert res.acked, "the writer never committed a row"
    assert any(a.ok and a.start >= t_event for a in res.attempts), "no acknowledged write after the event"
    if sync:
        assert missing == [], f"synchronous replication lost acknowledged rows: {missing}"
    elif missing:
        print(f"asynchronous replication: {len(missing)} acknowledged rows lost: {missing[:20]}", file=sys.stderr)


def wait_follows(c: Cluster, standby: str, primary: str, timeout: float = FOLLOW_S) -> float:
    """standby is attached in pgpool and streams from primary (pg_stat_replication on the primary)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    s = settings()
    last = ""
    while time.monotonic() < deadline:
        rows = try_query(
            "SELECT application_name, state FROM pg_stat_replication",
            host=c_address(primary),
            port=s.pg_port,
        )
        nodes = {n.name: n for n in (pool_nodes() if rows is not None else [])}
        streaming = {r[0] for r in rows or [] if r[1] == "streaming"}
        n = nodes.get(standby)
        last = f"pg_stat_replication on {primary}: {sorted(streaming)}; pgpool: {n}"
        if standby in streaming and n is not None and n.up and n.role == "standby":
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"{standby} does not stream from {primary} after {timeout:.0f} s: {last}")


def c_address(node: str) -> str:
    return address_of(node)


# ------------------------------------------------------------------------------------------------------- a, b
def test_a_pool_nodes(healthy: Cluster) -> None:
    """show pool_nodes through VIP:9999: every node (3, or 5 scaled out) up, one primary, the others streaming."""
    nodes = pool_nodes()
    members = len(healthy.lab.members())
    assert len(nodes) == members
    assert all(n.up and n.pg_status == "up" for n in nodes), nodes
    assert [n.role for n in nodes].count("primary") == 1
    standbys = [n for n in nodes if n.role == "standby"]
    assert len(standbys) == members - 1
    assert all(n.replication_state == "streaming" for n in standbys), standbys


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


# ------------------------------------------------------------------------------------------------------- c
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


# ------------------------------------------------------------------------------------------------------- d
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


def healthy_pg_unit() -> str:
    return settings().pg_unit


# ------------------------------------------------------------------------------------------------------- e
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


# ------------------------------------------------------------------------------------------------------- f
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


# ------------------------------------------------------------------------------------------------------- g
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


# ------------------------------------------------------------------------------------------------------- h
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


# ------------------------------------------------------------------------------------------------------- k
def test_k_leader_dies_while_the_standbys_follow(healthy: Cluster, report: dict[str, Any]) -> None:
    """The watchdog leader runs on the primary's server: stop PostgreSQL there, and the moment a standby is promoted
    (pgpool's follow-primary step is running) power that server off. The survivors elect a leader that keeps
    serving: the remaining standby follows or is attached again, the dead server comes back by online recovery, and
    nothing restarts pgpool (issue 10's silent pgpool: a follow-primary lock left behind by the dead leader)."""
    c = healthy
    old = c.colocate_leader_and_primary()
    c.lab.stop_service(old, healthy_pg_unit())
    new = c.wait_for_primary(FAILOVER_S, not_on=old)
    t0 = time.monotonic()
    c.crash(old)
    c.wait_for_vip(VIP_S, not_on=old)
    report["vip_s"] = round(time.monotonic() - t0, 2)
    # The operator's path (README): power the server back on, attach or rebuild what is detached. restore() restarts
    # no pgpool; a pgpool that stops answering fails here, with its processes and log in the error.
    t1 = time.monotonic()
    c.restore(timeout=300)
    report["restored_s"] = round(time.monotonic() - t1, 2)
    nodes = pool_nodes()
    assert all(n.up for n in nodes) and [n.name for n in nodes if n.role == "primary"] == [new], nodes
    assert pg_role(old) == "standby"
    query("SELECT 1", timeout=5)  # a new session through the VIP is served


# ------------------------------------------------------------------------------------------------------- l
def test_l_open_sessions_answer_after_a_clean_stop_of_a_primary_that_is_not_the_first_node(
    healthy: Cluster, report: dict[str, Any]
) -> None:
    """A switchover stops the primary cleanly. When that primary is not pgpool's first node, pgpool keeps most client
    sessions ("Do not restart children because we are switching over", pgpool 4.3) with their sockets to the stopped
    server; failover.sh ends them, as pgpool itself does when the primary was its first node. Every session open
    through the VIP gets an answer to its next write within 1 s (without failover.sh's part, on the lab: some
    committed through the kept session, others waited 2-5 s for an error, twice in CI runs one never answered), and
    a new session writes."""
    c = healthy
    first = pool_nodes()[0].name
    old = c.wait_for_primary()
    if old == first:
        old = c.move_primary_off(first)
    ensure_writes_table()
    run = f"drill-l-{time.time_ns()}"
    sessions = [connect(application_name=f"drill-l-{i}") for i in range(8)]
    try:
        for i, conn in enumerate(sessions):
            conn.execute(f"INSERT INTO {WRITES_TABLE} (run, id) VALUES (%s, %s)", (run, i))
        t0 = time.monotonic()
        c.stop_primary_cleanly(old)
        new = c.wait_for_primary(FAILOVER_S, not_on=old)
        report["promoted_s"] = round(time.monotonic() - t0, 2)
        answers = first_answers(sessions, run, first_id=100, bound=10.0)
    finally:
        for conn in sessions:
            with contextlib.suppress(Exception):
                conn.close()
    report["first_node"], report["old_primary"], report["new_primary"] = first, old, new
    report["answers_s"] = sorted(round(a, 2) for a, _ in answers)
    report["answered_by"] = dict(Counter(outcome for _, outcome in answers))
    slow = [(round(a, 2), outcome) for a, outcome in answers if a > 1.0]
    assert not slow, f"open sessions answered a write only after more than 1 s: {slow}"
    query(f"{NO_LB}INSERT INTO {WRITES_TABLE} (run, id) VALUES (%s, %s)", (run, 999), timeout=5)


def first_answers(sessions: list[Any], run: str, first_id: int, bound: float) -> list[tuple[float, str]]:
    """One write on each open session, all at once: seconds until each answered, and how ("commit" or the error's
    first line); a write with no answer within `bound` counts as `bound` s, "no answer" (its session is closed)."""
    results: list[tuple[float, str]] = [(bound, "no answer")] * len(sessions)

    def write(i: int) -> None:
        t = time.monotonic()
        try:
            sessions[i].execute(f"INSERT INTO {WRITES_TABLE} (run, id) VALUES (%s, %s)", (run, first_id + i))
            results[i] = (time.monotonic() - t, "commit")
        except Exception as e:  # any answer counts: the session must not hang
            results[i] = (time.monotonic() - t, str(e).strip().splitlines()[0][:80])

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(len(sessions))]
    for th in threads:
        th.start()
    deadline = time.monotonic() + bound
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    return results


# ------------------------------------------------------------------------------------------------------- i
def test_i_load_balancing(healthy: Cluster, report: dict[str, Any]) -> None:
    """Read-only queries through the VIP reach the standbys."""
    primary = healthy.wait_for_primary()
    before = {n.name: n.select_cnt for n in pool_nodes()}
    hits: Counter[str] = Counter()
    # pgpool reaches its own node by name, which Debian maps to 127.0.1.1: that is the VIP holder's node.
    (holder,) = healthy.lab.vip_holders()
    for _ in range(30):
        addr = query("SELECT host(inet_server_addr())")[0][0]
        hits[holder if addr.startswith("127.") else node_of(addr)] += 1
    after = {n.name: n.select_cnt for n in pool_nodes()}
    report["sessions_per_node"] = dict(hits)
    report["select_cnt_delta"] = {k: after[k] - before.get(k, 0) for k in after}
    standbys = others(primary)
    assert any(hits[n] for n in standbys), f"no read reached a standby: {dict(hits)}"
    assert any(after[n] > before.get(n, 0) for n in standbys)


# ------------------------------------------------------------------------------------------------------- j
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


@pytest.mark.parametrize("fault", ["stop-postgresql", "power-loss", "partition"])
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
