"""A newer PostgreSQL package rolls through the standbys and a switchover, losing nothing."""

from __future__ import annotations

from typing import Any

import pytest

import lab.mirror as lab_mirror
from lab.cluster import (
    Cluster,
    primary_node,
)
from lab.core import Lab
from lab.engine import LabStack
from tests.lifecycle.conftest import ENGINE_OUTPUT
from tests.lifecycle.day2 import (
    CONFIG_NOW,
    NODES,
    _report_and_check_writes,
    _up_under_a_writer,
)

pytestmark = [pytest.mark.phase("upgrade")]


# A PostgreSQL minor upgrade: the packages step on every node, then the rolling restart and the switchover.
UPGRADE_STEPS = {
    f"{n}-{step}" for n in NODES for step in ("packages", "postgresql-restart", "postgresql-switchover")
} | {
    "backup-packages"  # the repository host gets the same package mirror (it installs nothing new)
}


def _server_versions(lab: Lab) -> dict[str, str]:
    show = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", "SHOW server_version"]
    return {n: lab.exec(n, show).stdout.strip() for n in NODES}


def test_a_postgresql_package_upgrade_rolls_through_the_standbys_then_switches_over(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    """postgresql.packageVersion set to the newer Debian version the site's package mirror (packageMirror) serves:
    `up` installs it on every node without restarting anything, restarts the standbys one at a time on the new
    binaries, then switches the primary over; every node runs the new version and nothing acknowledged is lost."""
    cluster.lab_verb("mirror")  # the newest PostgreSQL packages, signed; the lab image holds the oldest
    mirror = lab_mirror.load()
    newest = mirror.versions["postgresql-15"]
    before = _server_versions(lab)
    report["versions_before"] = sorted(set(before.values()))
    assert not any(newest.split("-")[0] in v for v in before.values()), f"already {newest}: {before}"
    overrides = {
        **CONFIG_NOW,
        "packageSource": "distribution",
        "packageMirror": mirror.stack_config(),
        "postgresql": {**CONFIG_NOW.get("postgresql", {}), "packageVersion": newest},
    }
    with lab_mirror.serving(mirror):
        run, result, primary = _up_under_a_writer(stack, cluster, overrides, UPGRADE_STEPS)
    CONFIG_NOW.update(overrides)
    after = _server_versions(lab)
    versions_after = sorted(set(after.values()))
    _report_and_check_writes(
        report, run, result, versions_after=versions_after, primary_before=primary, primary_after=primary_node()
    )
    assert all(f"Debian {newest})" in v for v in after.values()), f"not every node runs {newest}: {after}"
    assert report["primary_after"] not in (None, primary), "the primary did not switch over"
    for n in NODES:  # dpkg was kept from restarting services only for the upgrade's duration
        assert lab.exec(n, ["test", "-e", "/usr/sbin/policy-rc.d"]).returncode != 0, f"policy-rc.d left on {n}"
    cluster.wait_healthy(120, warmup=False)
    again = stack.preview(overrides=overrides, expect_no_changes=True)
    ENGINE_OUTPUT.append(again.output)
