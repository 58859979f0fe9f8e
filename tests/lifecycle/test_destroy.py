"""`destroy` leaves no pgpool and no VIP, and a second `destroy` has nothing to do; what it keeps (PostgreSQL and its
data, on purpose) a new stack's first `up` refuses to take over, with one message and no traceback."""

from __future__ import annotations

from typing import Any

import pytest

from lab.audit import leaks_in, stack_secrets
from lab.cluster import (
    PGPOOL_UNIT,
    Cluster,
)
from lab.core import Lab
from lab.engine import LabStack
from tests.lifecycle.conftest import ENGINE_OUTPUT
from tests.lifecycle.day2 import (
    NODES,
)

pytestmark = [pytest.mark.phase("destroy")]


def test_destroy_leaves_no_pgpool_and_no_vip_and_a_second_destroy_does_nothing(
    stack: LabStack, cluster: Cluster, lab: Lab, report: dict[str, Any]
) -> None:
    secrets = stack_secrets(stack.export(show_secrets=True))
    run = stack.destroy()
    ENGINE_OUTPUT.append(run.output)
    report["destroy_s"] = round(run.seconds, 1)
    report["destroy"] = run.changes
    assert run.changes.get("deleted", 0) >= 100, run.changes
    assert stack.resource_count() == 0, "resources left in the stack after destroy"
    running = [n for n in NODES if cluster.service_active(n, PGPOOL_UNIT)]
    assert not running, f"pgpool still runs on {running}"
    assert not lab.vip_holders(), f"the VIP is still held by {lab.vip_holders()}"
    again = stack.destroy()
    ENGINE_OUTPUT.append(again.output)
    report["second_destroy_s"] = round(again.seconds, 1)
    assert not again.changes.get("deleted"), again.changes
    assert not leaks_in("\n".join(ENGINE_OUTPUT), secrets), "a secret is in the engine's output"


def test_a_new_stack_on_the_destroyed_stacks_servers_stops_before_any_change_with_one_message(
    stack: LabStack, lab: Lab, report: dict[str, Any]
) -> None:
    """The servers still hold the destroyed stack's cluster (PostgreSQL, its data, the recorded members). The next
    `up` (the stack's own config, as `make demo` runs it) stops before any file is written on any node, with one
    message that names what it found and the commands that clear it; no Python traceback around it. The lab itself
    sees the orphaned cluster (so `make lab-up` gives fresh servers before `make demo`)."""
    assert stack.resource_count() == 0, "run after the destroy test"
    orphaned = lab.orphaned_cluster()
    report["orphaned"] = orphaned
    assert orphaned is not None and "no stack of the lab describes" in orphaned, orphaned
    conf = "md5sum /etc/pgpool2/pgpool.conf /etc/postgresql/15/main/conf.d/pgha.conf /var/lib/pgha/members"
    before = {n: lab.exec(n, conf).stdout for n in NODES}
    refused = stack.up(check=False)
    ENGINE_OUTPUT.append(refused.output)
    report["refused_up_s"] = round(refused.seconds, 1)
    assert refused.returncode != 0, refused.output[-3000:]
    message = "holds a cluster this stack did not create"
    # The first refusal stops the up: a node whose check had not started yet is not asked, but none passes.
    assert any(f"{n} {message}" in refused.output for n in NODES), refused.output[-3000:]
    recorded = [resource["urn"] for resource in stack.export()["deployment"].get("resources") or []]
    assert not [urn for urn in recorded if urn.endswith("-hot-standby-check")], f"a node passed the check: {recorded}"
    assert "pg_dropcluster --stop 15 main" in refused.output, refused.output[-3000:]
    for noise in ("Traceback", "KeyboardInterrupt"):
        assert noise not in refused.output, refused.output[-6000:]
    assert {n: lab.exec(n, conf).stdout for n in NODES} == before, "a refused up wrote files"
    cleanup = stack.destroy()  # the packages and check steps the refused up recorded
    ENGINE_OUTPUT.append(cleanup.output)
    assert stack.resource_count() == 0, cleanup.changes
