"""The real lab, end to end. It takes the lab down at the end, so it runs only when asked: marked `lab_infra`, which
pyproject.toml's addopts deselect (-m "not lab_infra") unless -m names it, as `make test-lab-infra` does
(`pytest -m lab_infra tests/lab_infra`). In CI a machine that cannot run the lab fails the test instead of skipping
it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab import SERVERS, VIP, Lab
from lab.config import SWITCH_NS
from lab.net import product_net_sysctls
from tests.labpolicy import cannot_run, lab_host_problem

pytestmark = [pytest.mark.lab, pytest.mark.lab_infra]


def _root_ns_has_lab_addresses() -> bool:
    out = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True, check=True).stdout
    return "10.213.8." in out or "10.213.8." in routes


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    problem = lab_host_problem()
    if problem:
        cannot_run(problem)
    lab = Lab()
    # Fresh servers: a lab left provisioned (pgpool running, VIP held) would make these checks meaningless.
    lab.reset()
    yield lab
    lab.down()


def test_ssh_with_pinned_host_keys_and_sudo(lab: Lab) -> None:
    for s in SERVERS:
        cp = lab.ssh(s.name, "hostname && sudo -n true", check=True)
        assert cp.stdout.strip() == s.name


def test_servers_reach_each_other(lab: Lab) -> None:
    lab.ssh("server1", ["ping", "-c1", "-W2", "10.213.8.12"], check=True)
    lab.exec("server3", ["ping", "-c1", "-W2", "10.213.8.11"], check=True)


def test_servers_run_with_the_product_kernel_settings(lab: Lab) -> None:
    """nspawn keeps /proc/sys read-only: the lab sets the product's net.* settings in each server's namespace."""
    wanted = product_net_sysctls()
    assert wanted, "templates/etc/sysctl.d/60-pgha.conf has no net.* setting"
    for s in SERVERS:
        for key, value in wanted.items():
            assert lab.exec(s.name, ["sysctl", "-n", key], check=True).stdout.strip() == value, (s.name, key)


def test_vip_add_remove(lab: Lab) -> None:
    lab.exec("server2", f"ip addr add {VIP}/24 dev enp0s8 label enp0s8:0 && arping -U {VIP} -w 1 -I enp0s8", check=True)
    assert lab.vip_holders() == ["server2"]
    lab.client(["ping", "-c1", "-W2", VIP], check=True)
    lab.exec("server2", ["ip", "addr", "del", f"{VIP}/24", "dev", "enp0s8"], check=True)
    assert lab.vip_holders() == []


def test_crash_drops_vip_and_start_restores(lab: Lab) -> None:
    lab.exec("server1", ["ip", "addr", "add", f"{VIP}/24", "dev", "enp0s8", "label", "enp0s8:0"], check=True)
    lab.crash("server1")
    assert not lab.is_running("server1")
    assert lab.vip_holders() == []
    assert lab.client(["ping", "-c1", "-W1", "10.213.8.11"]).returncode != 0
    lab.start("server1")
    lab.ssh("server1", "true", check=True)


# Holds a TCP connection to server1's sshd from the switch namespace, and after the crash says what it received.
_SILENCE_PROBE = """
import socket, sys
s = socket.create_connection(("10.213.8.11", 22), timeout=5)
s.recv(64)  # the ssh banner: connected
print("ready", flush=True)
sys.stdin.readline()  # the crash happened
s.settimeout(2)
try:
    print("closed" if s.recv(1) == b"" else "data")
except TimeoutError:
    print("silent")
except ConnectionResetError:
    print("reset")
"""


def test_crash_is_silent(lab: Lab) -> None:
    """A power loss sends nothing: a peer's open connection sees neither FIN nor RST (it times out), as with a real
    server losing power. Killed with its link still up, a server's kernel closed its sockets and told every peer at
    once, which made crashes look faster to detect than they are."""
    probe = subprocess.Popen(
        ["ip", "netns", "exec", SWITCH_NS, sys.executable, "-c", _SILENCE_PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout is not None and probe.stdin is not None
        assert probe.stdout.readline().strip() == "ready"
        lab.crash("server1")
        probe.stdin.write("crashed\n")
        probe.stdin.flush()
        assert probe.stdout.readline().strip() == "silent"
    finally:
        probe.kill()
        probe.wait(10)
        lab.start("server1")
    lab.ssh("server1", "true", check=True)


def test_partition_and_heal(lab: Lab) -> None:
    lab.partition("server2")
    assert lab.exec("server1", ["ping", "-c1", "-W1", "10.213.8.12"]).returncode != 0
    lab.heal("server2")
    lab.exec("server1", ["ping", "-c1", "-W2", "10.213.8.12"], check=True)


def test_reboot(lab: Lab) -> None:
    before = lab.init_pid("server3")
    lab.reboot("server3")
    assert lab.init_pid("server3") not in (None, before)


def test_nothing_in_root_namespace(lab: Lab) -> None:
    assert not _root_ns_has_lab_addresses()
