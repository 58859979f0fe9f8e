"""Local lab: three Debian 12 servers on a private bridge, for testing the program. Two back-ends behind one API
(lab.api): systemd-nspawn containers (lab.core, the default) and libvirt VMs (lab.vm), chosen by $PGHA_LAB.

    from lab import Lab
    lab = Lab()
    lab.up()
    lab.ssh("server1", ["sudo", "-n", "true"], check=True)

CLI: python -m lab --help. Needs root and the host packages in lab/host-packages.txt.
"""

from .api import LabBackend, ServerStatus, current_lab
from .config import CLIENT_ADDR, SERVERS, SUBNET, SWITCH_NS, VIP, Server
from .core import Lab
from .util import LabError

__all__ = [
    "CLIENT_ADDR",
    "SERVERS",
    "SUBNET",
    "SWITCH_NS",
    "VIP",
    "Lab",
    "LabBackend",
    "LabError",
    "Server",
    "ServerStatus",
    "current_lab",
]
