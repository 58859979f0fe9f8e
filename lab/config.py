"""Fixed lab contract: names, addresses and paths other code depends on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.213.8.0/24"
PREFIX = 24
CLIENT_ADDR = "10.213.8.2"
VIP = "10.213.8.100"
SWITCH_NS = "pghalab-sw"
# Which stack file's config the lab stack runs (drill j switches it to lab-sync for its duration).
STACK_ENV = "PGHA_STACK"
BRIDGE = "br0"
CLIENT_IF = "labclient"
CLIENT_BR_PORT = "labclient-br"
SERVER_IF = "enp0s8"
ADMIN_USER = "admin"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SUITE = "bookworm"
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
NETNS_ETC = Path("/etc/netns") / SWITCH_NS

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "sudo",
    "iproute2",
    "iputils-ping",
    "iputils-arping",
    "netcat-openbsd",
    "procps",
    "ca-certificates",
    "python3",
    "postgresql-15",
    "postgresql-client-15",
    "pgpool2",
    "postgresql-15-pgpool2",
    "nftables",
    "pgbackrest",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "less",
)


@dataclass(frozen=True)
class Server:
    name: str
    index: int

    @property
    def netns(self) -> str:
        return f"pghalab-s{self.index}"

    @property
    def address(self) -> str:
        return f"10.213.8.{10 + self.index}"

    @property
    def mac(self) -> str:
        return f"52:54:00:d8:08:{10 + self.index:02x}"

    @property
    def switch_port(self) -> str:
        """Name of the server's veth end inside the switch namespace (the "cable")."""
        return f"sw-{self.name}"


# The lab's cluster: three servers, always there while the lab is up.
SERVERS: tuple[Server, ...] = tuple(Server(f"server{i}", i) for i in (1, 2, 3))
# Two more the lab can add and remove (`python -m lab add server4`), for scaling the cluster 3 -> 5 -> 3.
SPARE_SERVERS: tuple[Server, ...] = tuple(Server(f"server{i}", i) for i in (4, 5))
# The backup repository host (pgBackRest; the lab stack's `backup.host`): always there while the lab is up, never a
# database node.
REPOSITORY_SERVER = Server("backup", 9)
# What `up` brings up: the three database servers and the repository host.
LAB_SERVERS: tuple[Server, ...] = (*SERVERS, REPOSITORY_SERVER)
ALL_SERVERS: tuple[Server, ...] = LAB_SERVERS + SPARE_SERVERS
SERVER_BY_NAME: dict[str, Server] = {s.name: s for s in ALL_SERVERS}


def lab_dir() -> Path:
    return Path(os.environ.get("LAB_DIR", "/var/lib/pgha-lab"))


def get_server(name: str) -> Server:
    try:
        return SERVER_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown node {name!r}; expected one of {', '.join(SERVER_BY_NAME)}") from None
