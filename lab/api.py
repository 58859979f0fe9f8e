"""The lab API: the verbs the drills and the Cluster use, whatever the servers are.

Two back-ends implement it: the systemd-nspawn containers (lab.core.Lab, the default) and the libvirt VMs of the VM
lab (lab.vm.backend.VmLab). Which one runs is chosen by ONE setting, read here only: the environment variable
PGHA_LAB = container | vm.

    from lab.api import current_lab
    lab = current_lab()
    lab.stop_service("server1", "postgresql@15-main")
    lab.vip_holders()
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from components.config import ClusterConfig

LAB_ENV = "PGHA_LAB"
LabKind = Literal["container", "vm"]
KINDS: tuple[LabKind, ...] = ("container", "vm")

# A str runs under a shell on the server; a sequence is one argv.
Command = str | Sequence[str]


# What a root command on a server starts from, on either back-end: nothing of the caller's environment.
SERVER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_ENV = ("env", "-i", f"PATH={SERVER_PATH}", "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root")


def command_argv(cmd: Command) -> list[str]:
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


class LabNode(Protocol):
    """One server of the lab, as the drills see it."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...


@dataclass
class ServerStatus:
    name: str
    running: bool
    state: str  # systemctl is-system-running inside (containers), the domain's state (VMs), or "stopped"
    address: str
    addresses: list[str] = field(default_factory=list)  # IPv4 on enp0s8 (prefix included), VIP too
    cable_up: bool = False  # False: partitioned (switch port down, or split from some servers) or no network
    vip: bool = False
    memory_mib: float | None = None
    init_pid: int | None = None


class LabBackend(Protocol):
    """Three (or more) Debian 12 servers on one L2 segment, with a client namespace that reaches them."""

    kind: LabKind
    client_ns: str  # network namespace where every client (ssh, psql, the drills) runs

    # ------------------------------------------------------------------- the stack deployed on these servers
    @property
    def stack(self) -> str:
        """Name of the stack file (Pulumi.<stack>.yaml) describing the cluster on these servers."""
        ...

    def stack_config(self) -> ClusterConfig:
        """The stack's validated config, as the program sees it."""
        ...

    def stack_outputs(self) -> dict[str, Any]:
        """The deployed stack's outputs, secrets shown (the postgres password is in connectionString)."""
        ...

    @property
    def report_file(self) -> Path:
        """Where a test session's measurements are written (JSON)."""
        ...

    def problem(self) -> str | None:
        """Why the drills cannot run against this lab from this process, or None."""
        ...

    # ---------------------------------------------------------------------------------------------- lifecycle
    def up(self) -> None: ...

    def down(self) -> None: ...

    # ----------------------------------------------------------------------------------------------- commands
    def exec(
        self,
        node: str,
        cmd: Command,
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd as root on the server."""
        ...

    def ssh(
        self,
        node: str,
        cmd: Command,
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd on the server as the admin user over ssh, from the client namespace."""
        ...

    # ------------------------------------------------------------------------------------------------- faults
    def crash(self, node: str) -> None:
        """Silent power loss: no FIN, no ARP, no VIP from it afterwards."""
        ...

    def start(self, node: str) -> None:
        """Boot a stopped or crashed server and wait until ssh answers."""
        ...

    def stop(self, node: str) -> None:
        """Clean poweroff; it stays off."""
        ...

    def reboot(self, node: str) -> None:
        """Clean reboot from inside; waits until it is back."""
        ...

    def partition(self, node: str) -> None:
        """Cable pull: the server's port on the lab's switch goes down (the server keeps running)."""
        ...

    def split(self, node: str, peers: list[str]) -> None:
        """Partial partition: the switch drops every frame between node and peers."""
        ...

    def heal(self, node: str) -> None:
        """Undo partition and split."""
        ...

    def stop_service(self, node: str, unit: str) -> None: ...

    def start_service(self, node: str, unit: str) -> None: ...

    # ---------------------------------------------------------------------------------------------- questions
    def members(self) -> Sequence[LabNode]:
        """The database servers of the lab (three, or five while scaled out)."""
        ...

    def is_running(self, node: str) -> bool: ...

    def status(self) -> list[ServerStatus]: ...

    def vip_holders(self) -> list[str]:
        """Names of the servers whose enp0s8 holds the VIP (normally zero or one)."""
        ...

    def address_of(self, node: str) -> str: ...

    def node_of(self, address: str) -> str | None:
        """The server a cluster address (or a name) belongs to."""
        ...


def lab_kind() -> LabKind:
    """The back-end chosen for this process: $PGHA_LAB, container by default."""
    kind = os.environ.get(LAB_ENV, "container") or "container"
    if kind not in KINDS:
        raise ValueError(f"{LAB_ENV}={kind!r}: expected one of {', '.join(KINDS)}")
    return kind  # type: ignore[return-value]


@functools.cache
def current_lab() -> LabBackend:
    """The lab this process works on (one instance per process)."""
    if lab_kind() == "vm":
        from .vm.backend import VmLab  # late: the container lab does not need libvirt's side

        return VmLab()
    from .core import Lab

    return Lab()
