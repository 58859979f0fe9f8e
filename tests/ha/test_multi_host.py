"""Drill n: the exported multi-host connection string (connectionStringMultiHost) writes through the next node's
pgpool when the first listed node's pgpool is stopped, with psql and with psycopg.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lab.cluster import (
    NO_LB,
    PGPOOL_UNIT,
    WRITES_TABLE,
    Cluster,
    address_of,
    ensure_writes_table,
    try_query,
)
from lab.util import wait_for
from tests.ha.drills import VIP_S

pytestmark = [pytest.mark.phase("drills")]


def _psql(uri: str, sql: str) -> tuple[str, str]:
    """(libpq's connected host, the statement's output) from psql with the string's settings; the password goes
    through the environment, never the command line."""
    settings = conninfo_to_dict(uri)
    password = str(settings.pop("password"))
    out = subprocess.run(
        ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql, "-c", r"\conninfo", make_conninfo("", **settings)],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    *answer, conninfo = out.strip().splitlines()  # `You are connected to ... on host "H" at port "P".`
    return conninfo.split('on host "')[1].split('"')[0], "\n".join(answer)


@pytest.mark.drill("n")
def test_n_the_multi_host_string_writes_through_the_next_pgpool_when_the_first_is_stopped(
    healthy: Cluster, report: dict[str, Any]
) -> None:
    c = healthy
    uri = str(c.lab.stack_outputs()["connectionStringMultiHost"])
    listed = str(conninfo_to_dict(uri)["host"]).split(",")
    members = [m.name for m in c.lab.members()]
    assert listed == [address_of(n) for n in members], f"the string lists {listed}, the cluster has {members}"
    ensure_writes_table()
    run = uuid.uuid4().hex[:12]
    insert = f"INSERT INTO {WRITES_TABLE} (run, id) VALUES ('{run}', %d) RETURNING id"
    host, out = _psql(uri, insert % 1)
    assert (host, out) == (listed[0], "1"), "with every pgpool up, the first listed one serves"
    first = members[0]
    c.lab.stop_service(first, PGPOOL_UNIT)
    try:
        t0 = time.monotonic()
        host, out = _psql(uri, insert % 2)
        report["psql_connect_and_write_s"] = round(time.monotonic() - t0, 2)
        assert (host, out) == (listed[1], "2"), f"psql did not write through {listed[1]}: {host} {out}"
        t0 = time.monotonic()
        with psycopg.connect(uri, autocommit=True) as conn:
            row = conn.execute(insert.replace("%d", "%s"), (3,)).fetchone()
            report["psycopg_connect_and_write_s"] = round(time.monotonic() - t0, 2)
            assert (conn.info.host, row) == (listed[1], (3,)), f"psycopg wrote through {conn.info.host}: {row}"
    finally:
        c.lab.start_service(first, PGPOOL_UNIT)
    # Through the VIP, which moved if the stopped pgpool held it.
    written = wait_for(
        "the rows through the VIP",
        lambda: try_query(f"{NO_LB}SELECT id FROM {WRITES_TABLE} WHERE run = %s ORDER BY id", (run,)),
        VIP_S,
        1.0,
    )
    assert [r[0] for r in written] == [1, 2, 3]
