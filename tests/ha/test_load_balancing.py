"""Drill i: read-only queries through the VIP reach the standbys."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from lab.cluster import (
    Cluster,
    node_of,
    query,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)
from tests.ha.drills import (
    others,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("i")
def test_i_load_balancing(healthy: Cluster, report: dict[str, Any]) -> None:
    """Read-only queries through the VIP reach the standbys."""
    primary = healthy.wait_for_primary()
    before = {n.name: n.select_cnt for n in pool_nodes()}
    hits: Counter[str] = Counter()
    # pgpool reaches its own node by name, which Debian maps to 127.0.1.1: that is the VIP holder's node.
    (holder,) = healthy.lab.vip_holders()
    for _ in range(30):
        addr = query("SELECT host(inet_server_addr())")[0][0]
        hits[holder if addr.startswith("127.") else node_of(addr)] += 1
    after = {n.name: n.select_cnt for n in pool_nodes()}
    report["sessions_per_node"] = dict(hits)
    report["select_cnt_delta"] = {k: after[k] - before.get(k, 0) for k in after}
    standbys = others(primary)
    assert any(hits[n] for n in standbys), f"no read reached a standby: {dict(hits)}"
    assert any(after[n] > before.get(n, 0) for n in standbys)
