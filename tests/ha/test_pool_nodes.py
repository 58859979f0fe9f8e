"""Drill a: pgpool, asked through the VIP, sees every node up, one primary, the others streaming."""

from __future__ import annotations

import pytest

from lab.cluster import (
    Cluster,
)
from lab.cluster import (
    pool_nodes_retry as pool_nodes,
)

pytestmark = [pytest.mark.phase("drills")]


@pytest.mark.drill("a")
def test_a_pool_nodes(healthy: Cluster) -> None:
    """show pool_nodes through VIP:9999: every node (3, or 5 scaled out) up, one primary, the others streaming."""
    nodes = pool_nodes()
    members = len(healthy.lab.members())
    assert len(nodes) == members
    assert all(n.up and n.pg_status == "up" for n in nodes), nodes
    assert [n.role for n in nodes].count("primary") == 1
    standbys = [n for n in nodes if n.role == "standby"]
    assert len(standbys) == members - 1
    assert all(n.replication_state == "streaming" for n in standbys), standbys
