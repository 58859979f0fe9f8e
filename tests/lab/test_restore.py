"""Restore drills (issue 11): the cluster comes back from the pgBackRest repository on the lab's fourth server with
the product's own procedure (`sudo pgha-restore` on the repository host, over ssh as the admin user).

r1, point in time: rows committed before a timestamp are back, exactly; the ones after it (and the table's DROP) are
not. r2, every node's data directory lost: everything archived is back. Both end with a healthy cluster: one primary,
every standby streaming, pgpool counting every node up, writes through the VIP.
"""

from __future__ import annotations

import time
from typing import Any

from lab.cluster import Cluster, address_of, query, settings

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
