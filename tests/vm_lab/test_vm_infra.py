"""What only the VM lab can check: the VMs the real libvirt provider created (NIC renamed and addressed by MAC,
kernel settings set by the product itself, packages from the lab's mirror) and `pulumi refresh` + preview showing
no change. The HA drills run on these VMs too, through the lab API (make test-vm-lab); `test_vm_teardown.py` runs
last: destroy must leave nothing in libvirt.
"""

from __future__ import annotations

import subprocess
import sys
import time

from components.cloudinit import render_seed
from lab.vm.backend import VmLab
from tests.vm_lab.session import REPO, phase


def test_enp0s8_has_the_static_address_matched_by_mac(vm_lab: VmLab) -> None:
    config = vm_lab.stack_config()
    for node in config.nodes:
        mac = render_seed(config, node).cluster_mac
        cmd = f"cat /sys/class/net/{config.vip_interface}/address; ip -4 -o addr show dev {config.vip_interface}"
        out = vm_lab.ssh(node.name, cmd, check=True).stdout
        assert out.splitlines()[0].strip() == mac, out
        assert f" {node.address}/{config.prefix_length} " in out, out


def test_the_product_set_its_kernel_settings(vm_lab: VmLab) -> None:
    """On a VM /proc/sys is writable: the kernel-settings step itself set what /etc/sysctl.d/60-pgha.conf says
    (in the container lab the lab sets it from outside)."""
    for node in vm_lab.members():
        out = vm_lab.ssh(node.name, "cat /proc/sys/net/ipv4/tcp_retries2 /etc/sysctl.d/60-pgha.conf", check=True)
        assert out.stdout.splitlines()[0].strip() == "5", (node.name, out.stdout)
        assert "net.ipv4.tcp_retries2 = 5" in out.stdout, (node.name, out.stdout)


def test_packages_came_from_the_mirror_with_the_configured_version(vm_lab: VmLab) -> None:
    cmd = "cat /etc/apt/sources.list.d/pgha-mirror.list; dpkg-query -W -f='${Version}' pgpool2"
    out = vm_lab.ssh("server1", cmd, check=True).stdout
    assert "http://10.213.17.1:8081/" in out and "\n4.3." in out, out


def test_refresh_then_preview_expects_no_changes(vm_lab: VmLab) -> None:
    """What the real libvirt provider reads back (domains, volumes, networks, cloud-init disks) and the commands'
    state need no update: `pulumi refresh`, then `pulumi preview --expect-no-changes` (exit 0 only with no diff)."""
    t0 = time.monotonic()
    cp = subprocess.run(
        [sys.executable, "-m", "lab.vm", "settle"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    sys.stdout.write(cp.stderr[-4000:])
    assert cp.returncode == 0, f"refresh + preview --expect-no-changes failed (rc {cp.returncode}): {cp.stderr[-3000:]}"
    phase("refresh_and_preview", time.monotonic() - t0)
