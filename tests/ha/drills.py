"""What the HA drills share: the bounds of one event, the check of the bounded writer's rows, waits on the
cluster. Each drill starts from a healthy cluster (the `healthy` fixture of tests/ha/conftest.py).

A bounded writer commits numbered rows through the VIP during c-g; afterwards every acknowledged row must exist.
With synchronous replication (stack option postgresql.synchronousReplication) that is asserted; with asynchronous
replication a loss is reported, not failed (it is the documented trade-off).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from lab import current_lab
from lab.cluster import (
    NO_LB,
    Cluster,
    Writer,
    WriterResult,
    address_of,
    missing_rows,
    settings,
    try_query,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)

# A drill whose fault the watchdog can only notice by its heartbeat (power loss, partition): the `healthy` fixture
# waits for every pgpool's heartbeat lifecheck to have started first.
HEARTBEAT = pytest.mark.heartbeat

# Bounds for one event, generous for the slower walkthrough profile (the tuned one takes a fraction of these).
FAILOVER_S = 120.0
VIP_S = 120.0
FOLLOW_S = 180.0


def others(node: str) -> list[str]:
    """The lab's other servers (three, or five while the cluster is scaled out)."""
    return [s.name for s in current_lab().members() if s.name != node]


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


def healthy_pg_unit() -> str:
    return settings().pg_unit
