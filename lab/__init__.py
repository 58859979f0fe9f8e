"""Local lab: three Debian 12 servers (systemd-nspawn containers) on a private bridge, for testing the program.

    from lab import Lab
    lab = Lab()
    lab.up()
    lab.ssh("server1", ["sudo", "-n", "true"], check=True)

CLI: python -m lab --help. Needs root and the host packages in lab/host-packages.txt.
"""

from .config import CLIENT_ADDR, SERVERS, SUBNET, SWITCH_NS, VIP, Server
from .core import Lab, ServerStatus
from .util import LabError

__all__ = ["CLIENT_ADDR", "SERVERS", "SUBNET", "SWITCH_NS", "VIP", "Lab", "LabError", "Server", "ServerStatus"]
