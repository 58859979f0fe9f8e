"""The libvirt half: cluster and egress networks, and one VM per node (mode 'libvirt')."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from .cloudinit import render_seed
from .config import ClusterConfig, Node

PKG = "pgha"
GIB = 1024**3


def tcg_cache_xslt(cache_mib: int) -> str:
    """XSLT for the Domain's `xml.xslt`: adds <tcg><tb-cache> (libvirt >= 8.0) to the domain's <features>, the
    provider having no attribute for it. Identity transform otherwise."""
    return f"""<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*">
    <xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/features">
    <xsl:copy>
      <xsl:apply-templates select="node()|@*"/>
      <tcg><tb-cache unit="MiB">{cache_mib}</tb-cache></tcg>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
"""


@dataclass(frozen=True)
class HypervisorArgs:
    """What the network component needs to know about one hypervisor."""

    uri: str
    provider: libvirt.Provider


class ClusterNetwork(pulumi.ComponentResource):
    """The cluster network (static addresses, the VIP's subnet, no DHCP handing out the VIP) and the egress NAT
    network, on one hypervisor."""

    cluster: libvirt.Network
    egress: libvirt.Network

    def __init__(
        self, name: str, config: ClusterConfig, hypervisor: HypervisorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{PKG}:infra:ClusterNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=hypervisor.provider)
        bridge = config.libvirt.cluster_bridge
        if bridge:
            # Several hypervisors: the segment is a host bridge present on each; libvirt only attaches to it.
            self.cluster = libvirt.Network(
                f"{name}-cluster",
                name=config.libvirt.network_name,
                mode="bridge",
                bridge=bridge,
                autostart=True,
                opts=child,
            )
        else:
            # Isolated segment: the hypervisor holds the gateway address. libvirt's DHCP would serve the whole
            # subnet, VIP included, so it stays off: every node has a static address. (`dhcpRange` describes a
            # DHCP server that already runs on a bridged segment; the config check keeps the VIP out of it.)
            self.cluster = libvirt.Network(
                f"{name}-cluster",
                name=config.libvirt.network_name,
                mode="none",
                addresses=[str(config.subnet)],
                dhcp=libvirt.NetworkDhcpArgs(enabled=False),
                autostart=True,
                opts=child,
            )
        self.egress = libvirt.Network(
            f"{name}-egress",
            name=config.libvirt.egress.name,
            mode="nat",
            addresses=[str(config.libvirt.egress.subnet)],
            dhcp=libvirt.NetworkDhcpArgs(enabled=True),
            autostart=True,
            opts=child,
        )
        self.register_outputs({"cluster_network_id": self.cluster.id, "egress_network_id": self.egress.id})


class BaseImage(pulumi.ComponentResource):
    """The distribution's cloud image, imported once per storage pool and hypervisor."""

    volume: libvirt.Volume

    def __init__(
        self, name: str, config: ClusterConfig, provider: libvirt.Provider, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{PKG}:infra:BaseImage", name, None, opts)
        self.volume = libvirt.Volume(
            f"{name}-volume",
            name=f"{config.cluster_name}-base.qcow2",
            pool=config.libvirt.pool,
            source=config.libvirt.base_image,
            format="qcow2",
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.register_outputs({"volume_id": self.volume.id})


class VirtualMachine(pulumi.ComponentResource):
    """One server's VM (a database node, or the smaller backup repository host): copy-on-write root disk over the
    base image, cloud-init seed, domain with fixed MACs."""

    root_volume: libvirt.Volume
    seed: libvirt.CloudInitDisk
    domain: libvirt.Domain
    address: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        node: Node,
        network: ClusterNetwork,
        base_image: BaseImage,
        provider: libvirt.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"{PKG}:infra:VirtualMachine", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        vm_name = f"{config.cluster_name}-{node.name}"
        seed = render_seed(config, node)
        repository = config.backup is not None and node == config.backup.host
        memory_mib = config.backup.memory_mib if config.backup is not None and repository else config.libvirt.memory_mib
        disk_gib = config.backup.disk_gib if config.backup is not None and repository else config.libvirt.disk_gib
        self.root_volume = libvirt.Volume(
            f"{name}-root",
            name=f"{vm_name}-root.qcow2",
            pool=config.libvirt.pool,
            base_volume_id=base_image.volume.id,
            size=disk_gib * GIB,
            format="qcow2",
            opts=child,
        )
        self.seed = libvirt.CloudInitDisk(
            f"{name}-seed",
            name=f"{vm_name}-seed.iso",
            pool=config.libvirt.pool,
            user_data=seed.user_data,
            network_config=seed.network_config,
            meta_data=seed.meta_data,
            opts=child,
        )
        cache = config.libvirt.tcg_cache_mib
        self.domain = libvirt.Domain(
            f"{name}-domain",
            name=vm_name,
            type=config.libvirt.domain_type,
            vcpu=config.libvirt.vcpu,
            memory=memory_mib,
            autostart=True,
            # The guest agent's channel is in every domain the provider defines. qemu_agent=True would make the
            # provider ask the agent for addresses on every read, and fail the create while the VM still boots
            # ("Guest agent is not responding"); the nodes' addresses are static anyway.
            qemu_agent=False,
            xml=libvirt.DomainXmlArgs(xslt=tcg_cache_xslt(cache)) if cache is not None else None,
            cloudinit=self.seed.id,
            disks=[libvirt.DomainDiskArgs(volume_id=self.root_volume.id)],
            network_interfaces=[
                libvirt.DomainNetworkInterfaceArgs(
                    network_id=network.cluster.id, mac=seed.cluster_mac, hostname=node.name
                ),
                libvirt.DomainNetworkInterfaceArgs(network_id=network.egress.id, mac=seed.egress_mac),
            ],
            consoles=[
                libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial"),
            ],
            opts=child,
        )
        self.address = pulumi.Output.from_input(str(node.address))
        self.register_outputs({"domain_id": self.domain.id, "address": self.address})


class Infrastructure(pulumi.ComponentResource):
    """Everything libvirt creates: one provider, network and base image per hypervisor; one VM per node (and one
    for the backup repository host)."""

    machines: dict[str, VirtualMachine]

    def __init__(self, name: str, config: ClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:infra:Infrastructure", name, None, opts)
        providers: dict[str, libvirt.Provider] = {}
        networks: dict[str, ClusterNetwork] = {}
        images: dict[str, BaseImage] = {}
        for index, uri in enumerate(config.hypervisor_uris):
            suffix = f"hv{index}"
            provider = libvirt.Provider(f"{name}-{suffix}", uri=uri, opts=pulumi.ResourceOptions(parent=self))
            providers[uri] = provider
            networks[uri] = ClusterNetwork(
                f"{name}-{suffix}-net",
                config,
                HypervisorArgs(uri=uri, provider=provider),
                opts=pulumi.ResourceOptions(parent=self),
            )
            images[uri] = BaseImage(
                f"{name}-{suffix}-image", config, provider, opts=pulumi.ResourceOptions(parent=self)
            )
        self.machines = {}
        for node in config.all_hosts:
            uri = config.hypervisor_uri(node)
            self.machines[node.name] = VirtualMachine(
                f"{name}-{node.name}",
                config,
                node,
                networks[uri],
                images[uri],
                providers[uri],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"domains": {n: m.domain.id for n, m in self.machines.items()}})
