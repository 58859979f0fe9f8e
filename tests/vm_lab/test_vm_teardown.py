"""Last of a VM lab run (make test-vm-lab): `pulumi destroy` of the vmlab stack leaves nothing in libvirt."""

from __future__ import annotations

import subprocess
import sys
import time

from lab.vm import host
from lab.vm import settings as s
from lab.vm.backend import VmLab
from tests.vm_lab.session import REPO, phase


def test_destroy_leaves_nothing(vm_lab: VmLab) -> None:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "lab.vm", "destroy"], cwd=REPO, check=True, timeout=1800)
    phase("destroy", time.monotonic() - t0)
    prefix = f"{vm_lab.stack_config().cluster_name}-"
    assert [d for d in host.virsh("list", "--all", "--name").split() if d.startswith(prefix)] == []
    assert [n for n in host.virsh("net-list", "--all", "--name").split() if n.startswith(prefix)] == []
    assert host.virsh("vol-list", s.POOL_NAME).strip() == ""
