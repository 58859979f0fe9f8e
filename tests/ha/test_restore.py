"""Restore drills (issue 11): the cluster comes back from the pgBackRest repository on the lab's fourth server with
the product's own procedure (`sudo pgha-restore` on the repository host, over ssh as the admin user).

r1, point in time: rows committed before a timestamp are back, exactly; the ones after it (and the table's DROP) are
not. r2, every node's data directory lost: everything archived is back. Both end with a healthy cluster: one primary,
every standby streaming, pgpool counting every node up, writes through the VIP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.cluster import Cluster, address_of, query, settings

pytestmark = [pytest.mark.phase("drills"), pytest.mark.slow]

TABLE = "restore_drill"


def direct(c: Cluster) -> dict[str, Any]:
    """Connection arguments of the primary's PostgreSQL itself (pgpool may load-balance a SELECT to a standby)."""
    return {"host": address_of(c.wait_for_primary()), "port": settings().pg_port}


def assert_healthy_and_writable(c: Cluster, report: dict[str, Any]) -> None:
    c.wait_healthy(240, warmup=False)
    primary = c.wait_for_primary()
    standbys = c.streaming_standbys(primary)
    assert standbys == {s.name for s in c.lab.members()} - {primary}, f"streaming from {primary}: {standbys}"
    query("CREATE TABLE IF NOT EXISTS restore_drill_after (at timestamptz DEFAULT now())")
    query("INSERT INTO restore_drill_after DEFAULT VALUES")
    report["after"] = {"primary": primary, "standbys": sorted(standbys)}


@pytest.mark.drill("r1")
def test_r1_point_in_time_restore(healthy: Cluster, report: dict[str, Any]) -> None:
    """Write 50 rows, note the time, write 20 more, drop the table; restore to the noted time: exactly the 50."""
    c = healthy
    on_primary = direct(c)
    query(f"DROP TABLE IF EXISTS {TABLE}", **on_primary)
    query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    for i in range(1, 51):  # one commit each, through the VIP as an application would
        query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
    time.sleep(0.5)
    target = str(query("SELECT clock_timestamp()::text", **on_primary)[0][0])
    time.sleep(0.5)
    for i in range(51, 71):
        query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
    query(f"DROP TABLE {TABLE}")
    report["archived_segment"] = c.archive_now()

    took, out = c.restore_from_backup("--time", target)
    report["restore_total_s"] = round(took, 1)
    report["pgha_restore"] = [line for line in out.splitlines() if "restored and promoted" in line or "done in" in line]

    rows = query(f"SELECT id FROM {TABLE} ORDER BY id")
    assert [r[0] for r in rows] == list(range(1, 51)), f"restored rows: {[r[0] for r in rows]}"
    assert_healthy_and_writable(c, report)


@pytest.mark.drill("r2")
def test_r2_every_data_directory_lost(healthy: Cluster, report: dict[str, Any]) -> None:
    """Rows written and archived, then PostgreSQL's data directory deleted on every node: `pgha-restore --latest`
    brings every archived row back."""
    c = healthy
    query(f"DROP TABLE IF EXISTS {TABLE}", **direct(c))
    query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
    for i in range(1, 31):
        query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
    report["archived_segment"] = c.archive_now()

    s = settings()
    data = f"/var/lib/postgresql/{s.pg_version}/main"
    for node in c.lab.members():
        cp = c.lab.exec(node.name, f"systemctl stop {s.pg_unit} && rm -rf {data} && echo gone", timeout=120)
        assert cp.returncode == 0 and "gone" in cp.stdout, f"{node.name}: {cp.stdout}{cp.stderr}"

    took, out = c.restore_from_backup("--latest")
    report["restore_total_s"] = round(took, 1)
    report["pgha_restore"] = [line for line in out.splitlines() if "restored and promoted" in line or "done in" in line]

    rows = query(f"SELECT id FROM {TABLE} ORDER BY id")
    assert [r[0] for r in rows] == list(range(1, 31)), f"restored rows: {[r[0] for r in rows]}"
    assert_healthy_and_writable(c, report)


@pytest.mark.drill("r3")
def test_r3_after_a_failover_the_old_primary_is_rebuilt_from_the_repository(
    healthy: Cluster, report: dict[str, Any]
) -> None:
    """The primary stops (pgpool fails over: a new timeline) and its data directory is lost; the product's
    `pg-make-standby repository` rebuilds it from the repository (pgBackRest delta restore aimed at the new primary's
    timeline, WAL from the archive until it streams; what online recovery runs for databases of at least
    backup.rebuildFromRepositoryGib), then it is attached again. It keeps no restore_command (a promotion must not
    wait for the repository host) and holds the rows written before and after the failover."""
    c = healthy
    s = settings()
    old = c.wait_for_primary()
    query(f"DROP TABLE IF EXISTS {TABLE}", **direct(c))
    query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
    for i in range(1, 11):
        query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
    c.stop_primary_cleanly(old)
    new = c.wait_for_primary(120, not_on=old)
    c.wait_writable(60)
    for i in range(11, 21):
        query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))

    data = f"/var/lib/postgresql/{s.pg_version}/main"
    logs = "/var/log/pgbackrest/*-restore.log"
    seen = c.lab.exec(old, f"cat {logs} 2>/dev/null | wc -l").stdout.strip() or "0"
    cp = c.lab.exec(old, f"rm -rf {data} && echo gone", timeout=60)
    assert cp.returncode == 0 and "gone" in cp.stdout, f"{old}: {cp.stdout}{cp.stderr}"
    t0 = time.monotonic()
    rc, out = c.as_postgres(old, f"/usr/local/lib/pgha/pg-make-standby repository {old} {new} {s.pg_port} start", 400)
    report["rebuild_s"] = round(time.monotonic() - t0, 1)
    report["pg_make_standby"] = [line for line in out.splitlines() if "pg-make-standby" in line]
    assert rc == 0, out[-2000:]
    assert "falling back" not in out, f"not rebuilt from the repository:\n{out[-2000:]}"
    restore_log = c.lab.exec(old, f"cat {logs} | tail -n +{int(seen) + 1}").stdout
    assert "restore command end: completed successfully" in restore_log, f"no pgBackRest restore:\n{restore_log}"
    auto_conf = c.lab.exec(old, f"cat {data}/postgresql.auto.conf").stdout
    # Nor the timeline the restore aimed at: it would keep the standby from following the next failover.
    assert "restore_command" not in auto_conf and "recovery_target_timeline" not in auto_conf, auto_conf

    c.attach_node(old)
    c.wait_healthy(240, warmup=False)
    assert old in c.streaming_standbys(c.wait_for_primary()), f"{old} does not stream"
    rows = query(f"SELECT count(*) FROM {TABLE}", host=address_of(old), port=s.pg_port)
    assert rows[0][0] == 20, f"{old} has {rows[0][0]} of the 20 rows"
    report["old_primary"], report["new_primary"] = old, new
