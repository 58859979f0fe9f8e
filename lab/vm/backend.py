"""The VM back-end of the lab API (lab.api.LabBackend): the vmlab stack's libvirt domains, reached from the lab
namespace `pghavm`.

Faults are the hypervisor's: crash = `virsh destroy` (power loss: no FIN, nothing more on the wire), start =
`virsh start`, stop = ACPI shutdown, partition = the VM's tap port on the libvirt bridge set down (the cable at the
switch), split = the container lab's nftables bridge table, on this bridge. Commands run over ssh as the admin user
(root through sudo). Addresses come from the guest agent, which needs no network: a partitioned VM's VIP is seen.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import net
from ..api import ROOT_ENV, Command, LabKind, ServerStatus, command_argv
from ..sshclient import ssh_argv
from ..util import LabError, log, run, wait_for
from . import host, lifecycle
from . import settings as s
from .stack import cluster_config, lab_stack

if TYPE_CHECKING:
    from components.config import ClusterConfig

# Under TCG one VM answers ssh 54-61 s after `virsh start`; a provisioned one on a busy 2-core host takes longer.
BOOT_TIMEOUT = 900.0
STOP_TIMEOUT = 120.0
# A busy VM's sshd can miss the banner deadline under emulation: ssh's own failure (rc 255) is tried again.
SSH_TRIES = 3
KNOWN_HOSTS = s.STATE_DIR / "ssh" / "known_hosts"


@dataclass(frozen=True)
class VmNode:
    name: str
    address: str
    domain: str  # libvirt domain name (the program names it <clusterName>-<node>)


def agent_ipv4(domifaddr: str) -> list[str]:
    """IPv4 addresses (with prefix) in `virsh domifaddr --source agent` output."""
    out = []
    for line in domifaddr.splitlines():
        fields = line.split()
        if "ipv4" in fields[:-1]:
            out.append(fields[fields.index("ipv4") + 1])
    return out


class VmLab:
    """Three Debian 12 VMs (server1..3 of Pulumi.vmlab.yaml) under the libvirtd in namespace pghavm."""

    kind: LabKind = "vm"
    client_ns: str = s.NETNS

    @functools.cached_property
    def _config(self) -> ClusterConfig:
        return cluster_config()

    # ------------------------------------------------------------------------- the stack on these servers
    @property
    def stack(self) -> str:
        return s.STACK

    def stack_config(self) -> ClusterConfig:
        return cluster_config()

    def stack_outputs(self) -> dict[str, Any]:
        return lab_stack().outputs(show_secrets=True)

    @property
    def report_file(self) -> Path:
        return s.STATE_DIR / "drills-report.json"

    def problem(self) -> str | None:
        if os.geteuid() != 0:
            return "the VM lab needs root (libvirt's socket, the lab namespace)"
        if shutil.which("virsh") is None:
            return "virsh is not installed (make vm-lab-up installs lab/vm/host-packages.txt)"
        if not net.in_namespace(s.NETNS):
            return f"run inside the VM lab's namespace: ip netns exec {s.NETNS} .venv/bin/pytest ..."
        if host.alive(s.LIBVIRTD_PID) is None:
            return "libvirtd is not running: the VM lab is down (make vm-lab-up)"
        if not any(self.is_running(n.name) for n in self.members()):
            return "no VM of the lab runs (make vm-lab-up)"
        return None

    # ------------------------------------------------------------------------------------------ lifecycle
    def up(self) -> None:
        log.info("vm lab up: %s", lifecycle.up())

    def down(self) -> None:
        lifecycle.down(purge=False)

    # ------------------------------------------------------------------------------------------- commands
    def _node(self, name: str) -> VmNode:
        for n in self.members():
            if n.name == name:
                return n
        raise ValueError(f"unknown node {name!r}; expected one of {', '.join(n.name for n in self.members())}")

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
        """cmd as the admin user over ssh from the lab namespace (host keys pinned at first contact)."""
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = ssh_argv(
            s.SSH_KEY, KNOWN_HOSTS, f"{self._config.admin_user}@{self._node(node).address}", pin="accept-new",
            connect_timeout=10,
        )  # fmt: skip
        argv = [*(argv if net.in_namespace(s.NETNS) else host.ns(*argv)), "--", remote]
        for _ in range(SSH_TRIES):
            cp = run(argv, check=False, capture=capture, timeout=timeout, input=input)
            if cp.returncode != 255 or not (self.is_running(node) and self._cable_up(node)):
                break
            time.sleep(3)
        if check and cp.returncode != 0:
            err = (cp.stderr or "").strip()[-500:] if capture else ""
            raise LabError(f"ssh {node} {remote!r} failed (rc {cp.returncode}){': ' + err if err else ''}")
        return cp

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
        """cmd as root (sudo, a clean environment) over the admin's ssh. A str runs under /bin/sh -c."""
        if not self.is_running(node):
            raise LabError(f"{node} is not running")
        remote = shlex.join(["sudo", "-n", *ROOT_ENV, *command_argv(cmd)])
        return self.ssh(node, remote, check=check, capture=capture, timeout=timeout, input=input)

    # --------------------------------------------------------------------------------------------- faults
    def crash(self, node: str) -> None:
        held = self.vip_holders() == [node]
        host.virsh("destroy", self._node(node).domain)
        log.info("crash: %s powered off (virsh destroy)%s", node, " (it held the VIP)" if held else "")

    def start(self, node: str) -> None:
        t0 = time.monotonic()
        if not self.is_running(node):
            host.virsh("start", self._node(node).domain)
        self._wait_ssh(node, BOOT_TIMEOUT)
        log.info("start: %s booted in %.1f s", node, time.monotonic() - t0)

    def stop(self, node: str) -> None:
        dom = self._node(node).domain
        if self.is_running(node):
            host.virsh("shutdown", dom)
        try:
            wait_for(f"{node} to power off", lambda: not self.is_running(node), STOP_TIMEOUT, 2)
        except LabError:
            log.warning("%s: no clean poweroff within %.0f s, powering it off", node, STOP_TIMEOUT)
            host.virsh("destroy", dom, check=False)
        log.info("stop: %s powered off", node)

    def reboot(self, node: str) -> None:
        t0 = time.monotonic()
        old = self.exec(node, ["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()
        with contextlib.suppress(LabError):  # the connection may drop before ssh returns
            self.exec(node, ["systemctl", "reboot"], timeout=30)

        def booted_again() -> bool:
            try:
                cp = self.exec(node, ["cat", "/proc/sys/kernel/random/boot_id"], timeout=30)
            except LabError:  # powered off between two boots
                return False
            return cp.returncode == 0 and cp.stdout.strip() not in ("", old)

        wait_for(f"{node} to boot again", booted_again, BOOT_TIMEOUT, 5)
        log.info("reboot: %s rebooted in %.1f s", node, time.monotonic() - t0)

    def partition(self, node: str) -> None:
        net.ip(s.NETNS, "link", "set", self._tap(node), "down")
        log.info("partition: %s cut off (its tap port on the bridge down)", node)

    def split(self, node: str, peers: list[str]) -> None:
        net.drop_between(s.NETNS, self._tap(node), [self._tap(p) for p in peers])
        log.info("split: %s cut off from %s (other links up)", node, ", ".join(peers))

    def heal(self, node: str) -> None:
        tap = self._tap(node)
        net.ip(s.NETNS, "link", "set", tap, "up")
        if tap in net.ports_split_in(s.NETNS):
            net.remove_split(s.NETNS)
        log.info("heal: %s reconnected (tap %s up, no split)", node, tap)

    def stop_service(self, node: str, unit: str) -> None:
        self.exec(node, ["systemctl", "stop", unit], check=True, timeout=180)
        log.info("stop-service: %s stopped on %s", unit, node)

    def start_service(self, node: str, unit: str) -> None:
        self.exec(node, ["systemctl", "start", unit], check=True, timeout=180)
        log.info("start-service: %s started on %s", unit, node)

    # ------------------------------------------------------------------------------------------ questions
    def members(self) -> list[VmNode]:
        name = self._config.cluster_name
        return [VmNode(n.name, str(n.address), f"{name}-{n.name}") for n in self._config.nodes]

    def is_running(self, node: str) -> bool:
        return host.virsh("domstate", self._node(node).domain, check=False).strip() == "running"

    def status(self) -> list[ServerStatus]:
        split = net.ports_split_in(s.NETNS)
        out = []
        for n in self.members():
            state = host.virsh("domstate", n.domain, check=False).strip() or "undefined"
            running = state == "running"
            addrs = self._addresses(n.name) if running else []
            cable = running and self._cable_up(n.name) and self._tap(n.name) not in split
            vip = any(a.startswith(f"{self._config.vip}/") for a in addrs)
            out.append(ServerStatus(n.name, running, state, n.address, addrs, cable, vip))
        return out

    def vip_holders(self) -> list[str]:
        running = [n.name for n in self.members() if self.is_running(n.name)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            found = dict(zip(running, pool.map(self._addresses, running), strict=True))
        return [n for n in running if any(a.startswith(f"{self._config.vip}/") for a in found[n])]

    def address_of(self, node: str) -> str:
        return self._node(node).address

    def node_of(self, address: str) -> str | None:
        return next((n.name for n in self.members() if address in (n.address, n.name)), None)

    # ------------------------------------------------------------------------------------------- helpers
    def _addresses(self, node: str) -> list[str]:
        """IPv4 on the cluster NIC, from the guest agent; over ssh when the agent does not answer."""
        iface = self._config.vip_interface
        domain = self._node(node).domain
        cp = run(
            ["virsh", "-q", "-c", s.LIBVIRT_URI, "domifaddr", domain, "--source", "agent", "--interface", iface],
            check=False,
            timeout=30,
        )
        if cp.returncode == 0:
            return agent_ipv4(cp.stdout)
        cp = self.ssh(node, f"ip -4 -o addr show dev {iface}", timeout=30)
        return net.inet_addresses(cp.stdout) if cp.returncode == 0 else []

    def _tap(self, node: str) -> str:
        """The VM's tap device on the cluster network's bridge (a new one at every boot)."""
        network = self._config.libvirt.network_name
        for line in host.virsh("domiflist", self._node(node).domain).splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[2] == network:
                return fields[0]
        raise LabError(f"{node}: no interface on network {network} (is it running?)")

    def _cable_up(self, node: str) -> bool:
        try:
            return net.link_is_up(s.NETNS, self._tap(node))
        except LabError:
            return False

    def _up(self, node: str) -> bool:
        return self.is_running(node) and self._cable_up(node)

    def _wait_ssh(self, node: str, timeout: float) -> None:
        wait_for(
            f"ssh on {node} ({self._node(node).address})",
            lambda: self._up(node) and self.ssh(node, "true", timeout=45).returncode == 0,
            timeout,
            3,
        )
