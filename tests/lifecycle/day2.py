"""What the day-2 tests share (tests/lifecycle/test_changes.py ... test_destroy.py, in that order in one session):
the config changes made so far, which later `up`s must keep, and `up` under a writer through the VIP.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from lab.cluster import (
    Cluster,
    Writer,
    missing_rows,
    primary_node,
    query,
)
from lab.engine import LabStack
from tests.lifecycle.conftest import ENGINE_OUTPUT

NODES = ("server1", "server2", "server3")
# A reloadable pgpool setting (pgpool reloads it) and a restart-only one (needs a pgpool restart).
RELOADABLE = {"pgpool": {"logMinMessages": "notice"}}
RESTART_ONLY = {"pgpool": {"logMinMessages": "notice", "numInitChildren": 40}}
# The steps such a change must touch: each node's pgpool.conf and the service step that applies it.
PGPOOL_CONF_STEPS = {f"{n}-{step}" for n in NODES for step in ("file-etc-pgpool2-pgpoolconf", "pgpool-service")}
# A restart-only PostgreSQL setting (on top of the pgpool change above, which stays): the checks (hot-standby, the
# scratch-cluster trial), the conf.d file, the reload step, then the standbys' rolling restart and the primary's
# switchover (Pulumi.lab.yaml: switchoverOnRestart on).
RESTART_ONLY_PG = {**RESTART_ONLY, "postgresql": {"parameters": {"max_connections": 120}}}
PG_RESTART_STEPS = {
    f"{n}-{step}"
    for n in NODES
    for step in ("hot-standby-check", "postgresql-trial", "file-etc-postgresql-15-main-confd-pghaconf",
                 "postgresql-config", "postgresql-restart", "postgresql-switchover")
}  # fmt: skip


# The config changes made so far that later `up`s must keep (else they would revert them).
CONFIG_NOW: dict[str, Any] = dict(RESTART_ONLY_PG)


def _up_under_a_writer(
    stack: LabStack, cluster: Cluster, overrides: dict[str, Any], steps: set[str]
) -> tuple[Any, Any, str | None]:
    """Preview lists exactly `steps` as updates; then `up` while a writer commits through the VIP every 20 ms.
    Returns the engine run (its duration: run.seconds), the writer's result and the primary before."""
    cluster.restore(warmup=False)
    planned = stack.plan(overrides=overrides)
    assert planned == dict.fromkeys(steps, "update"), planned
    primary = primary_node()
    run, result = _up_while_writing(stack, overrides, cluster)
    return run, result, primary


def _up_while_writing(
    stack: LabStack, overrides: dict[str, Any], cluster: Cluster | None = None, *, refresh: bool = False
) -> tuple[Any, Any]:
    """`up` (with refresh: `up --refresh`) while a writer commits a numbered row through the VIP every 20 ms on one
    open session (bounded); with a cluster, the writer also waits for the VIP to answer after the up."""
    with Writer(seconds=900, interval=0.02) as writer:
        time.sleep(2)
        run = stack.up(overrides=overrides, refresh=refresh)
        ENGINE_OUTPUT.append(run.output)
        if cluster is not None:
            cluster.wait_for_vip(60)
        time.sleep(3)
    return run, writer.result


def _report_and_check_writes(report: dict[str, Any], run: Any, result: Any, **extra: Any) -> None:
    """The change's figures into the report; then nothing acknowledged lost and writes working at the end."""
    report.update(
        {
            "up_s": round(run.seconds, 1),
            "up": run.changes,
            **result.summary(),
            "longest_write_gap_s": round(_longest_gap_between_successes(result.attempts), 2),
            **extra,
        }
    )
    lost = missing_rows(result)
    report["lost_acknowledged_writes"] = len(lost)
    assert not lost, f"acknowledged rows lost: {lost[:10]}"
    # A session that never answers fails the change: failover.sh ends the sessions pgpool keeps when the failed primary
    # is not its first node (docs/changes.md, "Sessions across a switchover"); without it, some runs hung here.
    hung = [a for a in result.failures if a.error.startswith("no answer in")]
    report["hung_session_writes"] = len(hung)
    assert result.acked, "no write was acknowledged"
    assert not hung, f"the writer's session got no answer: {[a.error for a in hung]}"
    assert result.attempts[-1].ok, f"the last write failed: {result.attempts[-1].error}"
    assert query("SELECT 1") == [(1,)], "a new session through the VIP does not work after the change"


def _longest_gap_between_successes(attempts: list[Any]) -> float:
    """Longest time between two commits, or from the last commit to the end of a last write that failed or hung."""
    ends = [a.end for a in attempts if a.ok]
    if attempts and not attempts[-1].ok and ends:
        ends.append(attempts[-1].end)
    return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)
