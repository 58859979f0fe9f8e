"""Drill l: sessions open through the VIP get an answer within 1 s after a clean stop of a primary that is not
pgpool's first node.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any

import pytest

from lab.cluster import (
    NO_LB,
    WRITES_TABLE,
    Cluster,
    connect,
    ensure_writes_table,
    query,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)
from tests.ha.drills import (
    FAILOVER_S,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("l")
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
