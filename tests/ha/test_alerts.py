"""Alert drills: a fault on the lab makes its alert fire in Prometheus (on the backup repository host,
asked through its HTTP API from the lab namespace), and the heal resolves it. No fixed sleep: each wait polls the
API, bounded, and the measured delays are reported.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from lab.cluster import Cluster, address_of, query, settings
from lab.config import REPOSITORY_SERVER
from tests.ha.drills import HEARTBEAT

pytestmark = [pytest.mark.phase("drills")]

PROMETHEUS = f"http://{REPOSITORY_SERVER.address}:9090"
# scrape 5 s + pgha-metrics 5 s + the rule's `for` 10 s + evaluation 5 s, with room for a busy 2-core host.
FIRE_BOUND_S = 60.0
RESOLVE_BOUND_S = 60.0


def firing(alertname: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/alerts", timeout=5) as answer:
        alerts = json.load(answer)["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def wait_until(condition: Any, bound: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        if condition():
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"{what}: not within {bound:.0f} s")


@pytest.mark.drill("m1")
def test_m1_a_stopped_standby_fires_not_streaming_and_resolves(healthy: Cluster, report: dict[str, Any]) -> None:
    c = healthy
    assert not firing("PgHaStandbyNotStreaming"), "the alert fires on a healthy cluster"
    primary = c.wait_for_primary()
    standby = next(s.name for s in c.lab.members() if s.name != primary)
    c.lab.stop_service(standby, settings().pg_unit)

    def fired() -> bool:
        return any(a["labels"].get("standby") == standby for a in firing("PgHaStandbyNotStreaming"))

    report["fired_s"] = round(wait_until(fired, FIRE_BOUND_S, f"PgHaStandbyNotStreaming for {standby}"), 1)
    c.lab.start_service(standby, settings().pg_unit)
    report["resolved_s"] = round(
        wait_until(lambda: not fired(), RESOLVE_BOUND_S, f"PgHaStandbyNotStreaming for {standby} resolved"), 1
    )
    report["standby"] = standby


ARCHIVE = "/var/lib/pgbackrest/archive"
# PostgreSQL retries a failed archive_command about once a minute, so the failure and the heal show at its next try:
# the bound is the rule's `for` (monitoring.archiveFailingSeconds) and two of those minutes.
ARCHIVE_RETRY_S = 120.0


@pytest.mark.drill("m2")
def test_m2_a_locked_repository_fires_archiving_failing_and_resolves(healthy: Cluster, report: dict[str, Any]) -> None:
    c = healthy
    assert not firing("PgHaArchivingFailing"), "the alert fires on a healthy cluster"
    repository = REPOSITORY_SERVER.name
    mode = c.lab.exec(repository, ["stat", "-c", "%a", ARCHIVE]).stdout.strip()
    assert mode, f"no {ARCHIVE} on {repository}"
    primary = c.wait_for_primary()
    direct = {"host": address_of(primary), "port": settings().pg_port}
    c.lab.exec(repository, ["chmod", "000", ARCHIVE], check=True)  # the repository refuses every new WAL segment
    try:
        query("CREATE TABLE IF NOT EXISTS alert_drill (at timestamptz DEFAULT now())")
        query("INSERT INTO alert_drill DEFAULT VALUES")
        query("SELECT pg_switch_wal()", **direct)  # a segment to archive now, not at archive_timeout
        bound = settings().archive_failing_s + ARCHIVE_RETRY_S
        report["fired_s"] = round(wait_until(lambda: bool(firing("PgHaArchivingFailing")), bound,
                                             "PgHaArchivingFailing"), 1)  # fmt: skip
    finally:
        c.lab.exec(repository, ["chmod", mode, ARCHIVE], check=True)
    report["resolved_s"] = round(
        wait_until(lambda: not firing("PgHaArchivingFailing"), ARCHIVE_RETRY_S * 2, "PgHaArchivingFailing resolved"), 1
    )
    c.archive_now()  # archiving works again: the next segment reaches the repository


@pytest.mark.drill("m3")
@HEARTBEAT
def test_m3_a_leader_cut_off_from_the_other_nodes_fires_quorum_lost_on_its_side(
    healthy: Cluster, report: dict[str, Any]
) -> None:
    """Cut the watchdog leader off from the other database nodes, not from the repository host: Prometheus still
    scrapes it and sees the isolated side lose its quorum (the majority keeps its own, elects a leader)."""
    c = healthy
    assert not firing("PgHaWatchdogQuorumLost"), "the alert fires on a healthy cluster"
    leader = c.wait_for_leader()
    # When the leader is also the primary, it is fenced and the majority promotes a standby (drill g); the next
    # drill's fixture rebuilds it. Here only the watchdog's quorum, as Prometheus sees it, is asserted.
    report["leader_was_primary"] = leader == c.wait_for_primary()
    peers = [s.name for s in c.lab.members() if s.name != leader]
    c.lab.split(leader, peers)
    try:

        def lost_on(nodes: list[str]) -> bool:
            return any(a["labels"].get("node") in nodes for a in firing("PgHaWatchdogQuorumLost"))

        report["fired_s"] = round(wait_until(lambda: lost_on([leader]), FIRE_BOUND_S,
                                             f"PgHaWatchdogQuorumLost on {leader}"), 1)  # fmt: skip
        assert not lost_on(peers), "the majority side lost its quorum too"
        report["majority_leader"] = c.wait_for_leader(not_on=leader)
    finally:
        c.lab.heal(leader)
    report["resolved_s"] = round(
        wait_until(lambda: not firing("PgHaWatchdogQuorumLost"), RESOLVE_BOUND_S, "PgHaWatchdogQuorumLost resolved"), 1
    )
    report["isolated"] = leader
