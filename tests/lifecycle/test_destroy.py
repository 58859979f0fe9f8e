"""`destroy` leaves no pgpool and no VIP, and a second `destroy` has nothing to do."""

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
