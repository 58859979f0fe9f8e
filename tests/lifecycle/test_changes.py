"""After the drills: what a user does with a running cluster. `up` again changes nothing; refresh finds no drift;
a reloadable pgpool setting reloads, a restart-only one restarts the pgpools one after another while writes go on;
a restart-only PostgreSQL setting restarts the standbys one at a time and switches the primary over, losing nothing."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from lab.cluster import (
    Cluster,
    missing_rows,
    primary_node,
)
from lab.core import Lab
from lab.engine import LabStack
from tests.lifecycle.conftest import ENGINE_OUTPUT
from tests.lifecycle.day2 import (
    NODES,
    PG_RESTART_STEPS,
    PGPOOL_CONF_STEPS,
    RELOADABLE,
    RESTART_ONLY,
    RESTART_ONLY_PG,
    _longest_gap_between_successes,
    _report_and_check_writes,
    _up_under_a_writer,
    _up_while_writing,
)

pytestmark = [pytest.mark.phase("changes")]


def test_a_second_up_changes_nothing(stack: LabStack, cluster: Cluster, report: dict[str, Any]) -> None:
    cluster.restore(warmup=False)
    check = stack.preview(expect_no_changes=True)
    ENGINE_OUTPUT.append(check.output)
    run = stack.up()
    ENGINE_OUTPUT.append(run.output)
    report["noop_up_s"] = round(run.seconds, 1)
    report["noop_up"] = run.changes
    assert set(run.changes) == {"unchanged"}, run.changes


def test_refresh_finds_no_drift(stack: LabStack, report: dict[str, Any]) -> None:
    """The nightly drift workflow runs exactly this: refresh, then a preview that must plan nothing."""
    refresh = stack.refresh()
    ENGINE_OUTPUT.append(refresh.output)
    report["refresh_s"] = round(refresh.seconds, 1)
    check = stack.preview(expect_no_changes=True)
    ENGINE_OUTPUT.append(check.output)


def test_drift_on_the_servers_is_named_by_a_refreshed_preview_and_repaired_by_up_refresh(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    """Changes by hand on three nodes: a rule appended to pool_hba.conf, a managed script deleted, .pgpass made
    world-readable, pgpool stopped on a standby and disabled on the primary. A plain preview sees nothing (it asks no
    server); `preview --refresh` names each, and plans exactly the steps that repair them; `up --refresh` repairs
    them while a writer commits through the VIP (no failed write, no failover); the next `preview --refresh` is
    clean."""
    cluster.restore(warmup=False)
    primary = primary_node()
    assert primary is not None
    holder = cluster.wait_for_vip(60)
    standbys = [n for n in NODES if n != primary]
    stopped = next(n for n in standbys if n != holder)  # stopping the VIP holder's pgpool would move the VIP
    edited = next(n for n in standbys if n != stopped)
    hba, script, pgpass = (
        "/etc/pgpool2/pool_hba.conf",
        "/usr/local/lib/pgha/pgha-passwords",
        "/var/lib/postgresql/.pgpass",
    )
    lab.exec(edited, f"echo 'host all all 0.0.0.0/0 trust' >>{hba}", check=True)
    lab.exec(primary, f"rm -f {script} && chmod 0644 {pgpass} && systemctl disable --quiet pgpool2", check=True)
    lab.exec(stopped, "systemctl stop pgpool2", check=True)
    drifted = {
        f"{edited}-file-etc-pgpool2-pool_hbaconf",
        f"{edited}-pgpool-service",
        f"{primary}-file-usr-local-lib-pgha-pgha-passwords",
        f"{primary}-file-var-lib-postgresql-pgpass",
        f"{primary}-pgpool-service",
        f"{stopped}-pgpool-service",
    }
    try:
        plain = stack.plan()
        assert plain == {}, f"a plain preview asked the servers: {plain}"
        t0 = time.monotonic()
        shown = stack.preview(refresh=True)
        report["preview_refresh_s"] = round(time.monotonic() - t0, 1)
        ENGINE_OUTPUT.append(shown.output)
        for named in (f"{hba}: \"content differs\"", f"{script}: \"missing\"", "mode 644, the program set 600",
                      "inactive, the program started it", "disabled, the program enabled it"):  # fmt: skip
            assert named in shown.output, f"{named!r} not in the refreshed preview:\n{shown.output[-4000:]}"
        planned = stack.plan(refresh=True)
        assert planned == dict.fromkeys(drifted, "update"), planned
        run, result = _up_while_writing(stack, {}, cluster, refresh=True)
    finally:  # whatever failed above, the later tests get the servers the stack describes
        lab.exec(edited, f"sed -i '/0.0.0.0\\/0 trust/d' {hba}")
        lab.exec(primary, "systemctl enable --quiet pgpool2")
        lab.exec(stopped, "systemctl start pgpool2")
    _report_and_check_writes(report, run, result, primary_before=primary, primary_after=primary_node())
    assert not result.failures, f"writes failed during the repair: {[a.error for a in result.failures][:5]}"
    assert primary_node() == primary, "the repair failed the primary over"
    assert "trust" not in lab.exec(edited, f"cat {hba}").stdout
    assert lab.exec(primary, f"stat -c %a {pgpass}; test -x {script} && echo present").stdout.split() == [
        "600",
        "present",
    ]
    assert lab.exec(primary, "systemctl is-enabled pgpool2").stdout.strip() == "enabled"
    assert lab.exec(stopped, "systemctl is-active pgpool2").stdout.strip() == "active"
    assert "reloaded (a file it reads was rewritten)" in run.output, run.output[-4000:]
    clean = stack.preview(refresh=True, expect_no_changes=True)
    ENGINE_OUTPUT.append(clean.output)
    cluster.wait_healthy(120, warmup=False)


def _pgpool_uptimes(cluster: Cluster) -> dict[str, float]:
    uptimes = {n: cluster.pgpool_uptime(n) for n in NODES}
    missing = [n for n, u in uptimes.items() if u is None]
    assert not missing, f"pgpool is not running on {missing}"
    return {n: float(u) for n, u in uptimes.items() if u is not None}


def test_a_reloadable_pgpool_setting_reloads_without_failover(
    stack: LabStack, cluster: Cluster, report: dict[str, Any]
) -> None:
    cluster.restore(warmup=False)
    planned = stack.plan(overrides=RELOADABLE)
    assert planned == dict.fromkeys(PGPOOL_CONF_STEPS, "update"), planned
    primary = primary_node()
    before = _pgpool_uptimes(cluster)
    t0 = time.monotonic()
    run = stack.up(overrides=RELOADABLE)
    ENGINE_OUTPUT.append(run.output)
    elapsed = time.monotonic() - t0
    after = _pgpool_uptimes(cluster)
    report["up_s"] = round(run.seconds, 1)
    report["up"] = run.changes
    assert run.changes.get("updated") == len(PGPOOL_CONF_STEPS), run.changes
    # No restart: every pgpool has been running since before the up.
    restarted = [n for n in NODES if after[n] < before[n] + elapsed - 2]
    assert not restarted, f"pgpool restarted on {restarted} for a reloadable setting"
    assert primary_node() == primary, "the primary changed"
    assert "notice" in cluster.lab.exec("server1", "grep -E '^log_min_messages' /etc/pgpool2/pgpool.conf").stdout


def test_a_restart_only_pgpool_setting_restarts_them_one_after_another(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    run, result, primary = _up_under_a_writer(stack, cluster, RESTART_ONLY, PGPOOL_CONF_STEPS)
    uptimes = _pgpool_uptimes(cluster)
    starts = sorted(time.monotonic() - u for u in uptimes.values())
    gaps = [b.start - a.end for a, b in zip(result.attempts, result.attempts[1:], strict=False)]
    longest_ok_gap = _longest_gap_between_successes(result.attempts)
    report.update(
        {
            "up_s": round(run.seconds, 1),
            "up": run.changes,
            **result.summary(),
            "longest_write_gap_s": round(longest_ok_gap, 2),
            "largest_attempt_gap_s": round(max(gaps, default=0.0), 2),
        }
    )
    assert all(u < run.seconds + 5 for u in uptimes.values()), f"not every pgpool restarted: uptimes {uptimes}"
    # One after another: no two pgpools (re)started within the same second.
    assert all(b - a >= 1 for a, b in itertools.pairwise(starts)), f"pgpools restarted together: {starts}"
    assert primary_node() == primary, "a pgpool restart changed the primary"
    lost = missing_rows(result)
    report["lost_acknowledged_writes"] = len(lost)
    assert not lost, f"acknowledged rows lost: {lost[:10]}"
    assert result.acked and result.attempts[-1].ok, "writes through the VIP did not work after the restarts"
    assert "40" in lab.exec("server1", "grep -E '^num_init_children' /etc/pgpool2/pgpool.conf").stdout


def test_a_restart_only_postgresql_setting_restarts_the_standbys_then_switches_over(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    run, result, primary = _up_under_a_writer(stack, cluster, RESTART_ONLY_PG, PG_RESTART_STEPS)
    _report_and_check_writes(report, run, result, primary_before=primary, primary_after=primary_node())
    show = "SHOW max_connections", "SELECT count(*) FROM pg_settings WHERE pending_restart"
    psql = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", show[0], "-c", show[1]]
    in_force = {n: tuple(lab.exec(n, psql).stdout.split()) for n in NODES}
    assert in_force == dict.fromkeys(NODES, ("120", "0")), f"max_connections / settings pending: {in_force}"
    assert report["primary_after"] not in (None, primary), "the primary did not switch over"
    assert "switched over to" in run.output, run.output[-3000:]
    cluster.wait_healthy(120, warmup=False)
    # The same config again: nothing to do (the steps' commands did not change; the servers agree).
    again = stack.preview(overrides=RESTART_ONLY_PG, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)
    # Lowering it again is refused on every node before anything is written: a standby cannot start with less than
    # its primary (found live: a standby restarted with 120 under a primary at 130 aborted its recovery).
    conf = "md5sum /etc/postgresql/15/main/conf.d/pgha.conf"
    before = {n: lab.exec(n, conf).stdout for n in NODES}
    lowered = {**RESTART_ONLY_PG, "postgresql": {"parameters": {"max_connections": 110}}}
    refused = stack.up(overrides=lowered, check=False)
    ENGINE_OUTPUT.append(refused.output)
    assert refused.returncode != 0, refused.output[-3000:]
    message = f"postgresql.parameters.max_connections=110 (the primary, {report['primary_after']}, runs 120)"
    assert refused.output.count(message) >= 3, refused.output[-3000:]  # every node refused it
    assert {n: lab.exec(n, conf).stdout for n in NODES} == before, "a refused change wrote files"
    cluster.wait_healthy(60, warmup=False)


def test_a_setting_postgresql_refuses_at_start_fails_before_any_file_or_service_changes(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    """A value the config checks accept (a string list) but that PostgreSQL refuses when it starts: a library in
    shared_preload_libraries that is not installed. The scratch-cluster trial on every node stops the `up` with
    PostgreSQL's own message; no file changes, no PostgreSQL restarts, the primary stays."""
    primary = primary_node()
    started = "SELECT pg_postmaster_start_time()"
    psql = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", started]
    conf = "md5sum /etc/postgresql/15/main/conf.d/pgha.conf"
    before = {n: (lab.exec(n, conf).stdout, lab.exec(n, psql).stdout) for n in NODES}
    parameters = {"max_connections": 120, "shared_preload_libraries": "pgha_not_installed"}
    refused = stack.up(overrides={**RESTART_ONLY_PG, "postgresql": {"parameters": parameters}}, check=False)
    ENGINE_OUTPUT.append(refused.output)
    report["refused_up_s"] = round(refused.seconds, 1)
    assert refused.returncode != 0, refused.output[-3000:]
    message = 'does not start with the configuration this up would write: could not access file "pgha_not_installed"'
    assert refused.output.count(message) >= len(NODES), refused.output[-3000:]  # every node's trial
    assert "postgresql.parameters.shared_preload_libraries" in refused.output, refused.output[-3000:]
    after = {n: (lab.exec(n, conf).stdout, lab.exec(n, psql).stdout) for n in NODES}
    assert after == before, "a refused change wrote a file or restarted PostgreSQL"
    assert primary_node() == primary, "the primary changed"
    assert lab.exec(NODES[0], "ls -d /tmp/pgha-trial.* 2>/dev/null || true").stdout == "", "a trial left its cluster"
