"""cloud-init seed for each VM: a pure function of the typed config (no Pulumi), so it is testable on its own."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .config import ClusterConfig, Node
from .templating import environment


def node_mac(cluster_name: str, node_name: str, nic: str) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, unique per cluster, node and NIC."""
    digest = hashlib.sha256(f"{cluster_name}/{node_name}/{nic}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


@dataclass(frozen=True)
class CloudInitSeed:
    user_data: str
    network_config: str
    meta_data: str
    cluster_mac: str
    egress_mac: str


def render_seed(config: ClusterConfig, node: Node) -> CloudInitSeed:
    cluster_mac = node_mac(config.cluster_name, node.name, "cluster")
    egress_mac = node_mac(config.cluster_name, node.name, "egress")
    context = {
        "node": node,
        "cluster_name": config.cluster_name,
        "admin_user": config.admin_user,
        "ssh_public_keys": config.ssh_public_keys,
        "cluster_interface": config.vip_interface,
        "cluster_mac": cluster_mac,
        "egress_mac": egress_mac,
        "prefix_length": config.prefix_length,
        "package_mirror": config.package_mirror,
    }
    return CloudInitSeed(
        user_data=environment().get_template("cloud-init/user-data.j2").render(context),
        network_config=environment().get_template("cloud-init/network-config.j2").render(context),
        meta_data=f"instance-id: {config.cluster_name}-{node.name}\nlocal-hostname: {node.name}\n",
        cluster_mac=cluster_mac,
        egress_mac=egress_mac,
    )
