"""New passwords in the stack config rotate everywhere, on whichever node is primary now, without failing a write."""

from __future__ import annotations

import secrets
import time
from typing import Any

import psycopg
import pytest

from lab.cluster import (
    Cluster,
    address_of,
    forget_settings,
    login_error,
    missing_rows,
    pool_nodes,
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
    RESTART_ONLY_PG,
    _longest_gap_between_successes,
    _up_while_writing,
)

pytestmark = [pytest.mark.phase("passwords")]


# The four passwords, set in the stack config (they were generated): each one's steps on every node, plus the first
# primary's bootstrap (its stdin holds the SQL; on a member it sets nothing).
PASSWORD_KEYS = {
    "postgresPassword": "postgres",
    "replicationPassword": "replication",
    "pgpoolPassword": "pgpool",
    "pcpPassword": "pcp",
}
ROTATION_STEPS = {f"{n}-{step}" for n in NODES for step in (
    "file-etc-pgpool2-pool_passwd", "file-etc-pgpool2-pgpool_secretsconf", "file-etc-pgpool2-pcpconf",
    "file-var-lib-postgresql-pgpass", "file-var-lib-postgresql-pcppass",
    "passwords-hold", "passwords-roles", "pgpool-secrets",
    # postgres_exporter and pgpool2_exporter log in as pgpool's check user: their password files, then their restart.
    "file-etc-prometheus-pgha-postgres-exporterpass", "file-etc-prometheus-pgha-pgpool2-exporterpgpass",
    "monitoring-services",
)} | {"server1-primary-bootstrap"}  # fmt: skip


def _generated_passwords(stack: LabStack) -> dict[str, str]:
    """The passwords pulumi-random generated for the stack (config key -> value), from the engine's state."""
    found: dict[str, str] = {}
    for resource in stack.export(show_secrets=True)["deployment"]["resources"]:
        if resource["type"] != "random:index/randomPassword:RandomPassword":
            continue
        for key, suffix in PASSWORD_KEYS.items():
            if resource["urn"].endswith(f"-{suffix}"):
                value = resource["outputs"]["result"]
                found[key] = value["plaintext"].strip('"') if isinstance(value, dict) else value
    assert found.keys() == PASSWORD_KEYS.keys(), found.keys()
    return found


def _logins(password: dict[str, str]) -> dict[str, str | None]:
    """Which roles log in with these passwords (None: it does, else why not): on every node directly, and the
    superuser through the VIP (PCP is checked on the servers)."""
    cfg = lab_settings()
    out: dict[str, str | None] = {}
    for n in NODES:
        host = address_of(n)
        out[f"{n}:postgres"] = login_error(host, cfg.pg_port, "postgres", password["postgresPassword"])
        out[f"{n}:pgpool"] = login_error(host, cfg.pg_port, "pgpool", password["pgpoolPassword"])
        out[f"{n}:repl"] = login_error(host, cfg.pg_port, "repl", password["replicationPassword"], replication=True)
    out["vip:postgres"] = login_error(cfg.vip, cfg.pgpool_port, "postgres", password["postgresPassword"])
    return out


def test_new_passwords_rotate_everywhere_on_the_current_primary_without_a_failed_write(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    """All four passwords change in one `up` (after the switchover above, the primary is not the first one): the
    roles change on the primary, pool_passwd, pgpool's settings, .pgpass and PCP on every node; pgpool's health
    checks pause meanwhile so nothing fails over; an open client session keeps writing throughout."""
    cluster.restore(warmup=False)
    old = _generated_passwords(stack)
    new = {key: "Rotated" + secrets.token_hex(12) for key in PASSWORD_KEYS}
    overrides = {**RESTART_ONLY_PG, **{key: stack.encrypt(key, value) for key, value in new.items()}}
    CONFIG_NOW.update(overrides)  # the later changes keep these passwords
    planned = stack.plan(overrides=overrides)
    # A configured password takes the place of the generated one, whose pulumi-random resource goes.
    generated = {f"credentials-{suffix}": "delete" for suffix in PASSWORD_KEYS.values()}
    assert planned == {**dict.fromkeys(ROTATION_STEPS, "update"), **generated}, planned
    primary = primary_node()
    before = {p.name: (p.status, p.last_status_change) for p in pool_nodes()}
    assert all(status == "up" for status, _ in before.values()), before
    run, result = _up_while_writing(stack, overrides)
    forget_settings()  # the lab's clients read the password from the stack's outputs: the new one now
    report.update(
        {
            "up_s": round(run.seconds, 1),
            "up": run.changes,
            **result.summary(),
            "longest_write_gap_s": round(_longest_gap_between_successes(result.attempts), 2),
            "primary": primary,
        }
    )
    lost = missing_rows(result)
    report["lost_acknowledged_writes"] = len(lost)
    assert not lost, f"acknowledged rows lost: {lost[:10]}"
    assert not result.failures, f"{len(result.failures)} writes failed, first: {result.failures[0].error}"
    # Nothing failed over or back: same primary, every backend up since before the change.
    try:
        after = {p.name: (p.status, p.last_status_change) for p in pool_nodes()}
    except psycopg.Error as error:  # once seen in CI (the VIP refused the new password for 30 s): say who refuses
        pgpools = {n: login_error(address_of(n), lab_settings().pgpool_port, "postgres", new["postgresPassword"])
                   for n in NODES}  # fmt: skip
        raise AssertionError(
            f"no answer through the VIP after the rotation: {error}; VIP held by {lab.vip_holders()}; logins with the "
            f"new password: {_logins(new)}; at each pgpool's own address: {pgpools}; the clients' password (from the "
            f"stack's outputs) is the new one: {lab_settings().password == new['postgresPassword']}"
        ) from error
    assert after == before, f"pgpool's backend states changed: {before} -> {after}"
    # Same primary. Right after the rotation one `show pool_nodes` through the VIP once answered nothing usable (a CI
    # run; its pool_nodes just before had the same states as before): ask again, bounded, and record what was seen.
    seen = [primary_node()]
    while seen[-1] != primary and len(seen) < 10:
        time.sleep(1)
        seen.append(primary_node())
    report["primary_checks"] = seen
    assert seen[-1] == primary, f"the primary is not {primary} any more: {seen}"
    # The new passwords work everywhere (a CI run once saw the VIP refuse the new one right after the up, reason not
    # recorded then: the check now waits up to 10 s and records what it saw), the old ones nowhere.
    tries: list[dict[str, str | None]] = []
    for _ in range(10):
        tries.append({k: v for k, v in _logins(new).items() if v is not None})
        if not tries[-1]:
            break
        time.sleep(1)
    report["new_password_login_retries"] = len(tries) - 1
    assert not tries[-1], f"new passwords refused: {tries}"
    if len(tries) > 1:
        print(f"new passwords refused at first, then accepted: {tries[:-1]}")
    refused_old = _logins(old)
    assert all(refused_old.values()), f"old passwords still accepted: {[k for k, v in refused_old.items() if not v]}"
    for n in NODES:
        rc, out = cluster.pcp(n, "pcp_node_count")  # ~postgres/.pcppass against pcp.conf: both new
        assert rc == 0 and out.strip() == "3", (n, rc, out)
        hold = lab.exec(n, ["stat", "-c", "%s", "/etc/pgpool2/pgpool_hold.conf"]).stdout.strip()
        assert hold == "0", f"health checks still paused on {n}"
        # The hold's safety timer went with it (pgha-passwords release stops it).
        timer = lab.exec(n, ["systemctl", "is-active", "pgha-hold-expiry.timer"]).stdout.strip()
        assert timer != "active", f"pgha-hold-expiry.timer still armed on {n}"
    cluster.wait_healthy(120, warmup=False)
    again = stack.preview(overrides=overrides, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)
    report["health_checks_during_hold"] = _health_checks_paused_by_the_hold(lab, "server3")


def _health_check_count(node: str) -> int:
    """Health checks this node's pgpool has run, over all backends (SHOW pool_health_check_stats)."""
    rows = query("SHOW pool_health_check_stats", host=address_of(node))
    return sum(int(row[6]) for row in rows)  # total_count


def _health_checks_paused_by_the_hold(lab: Lab, node: str) -> dict[str, int]:
    """What the rotation relies on: the hold file (health_check_period = 0, included last) pauses pgpool 4.3's
    health checks at a reload, and `pgha-passwords release` (what pgpool-secrets and the safety timer run) resumes
    them when the passwords agree. Counted over 6 s each way on one node."""
    hold = "/etc/pgpool2/pgpool_hold.conf"
    lab.exec(node, f"echo 'health_check_period = 0' >{hold} && systemctl reload pgpool2", check=True)
    try:
        time.sleep(2)
        first = _health_check_count(node)
        time.sleep(6)
        held = _health_check_count(node) - first
    finally:
        release = lab.exec(node, ["/usr/local/lib/pgha/pgha-passwords", "release", "10"])
    assert release.returncode == 0 and "health checks resumed" in release.stdout, release
    assert lab.exec(node, ["stat", "-c", "%s", hold]).stdout.strip() == "0"
    time.sleep(2)
    first = _health_check_count(node)
    time.sleep(6)
    resumed = _health_check_count(node) - first
    assert held == 0 and resumed > 0, f"health checks in 6 s: {held} held, {resumed} resumed"
    return {"held": held, "resumed": resumed}
