"""Host side of the VM lab: packages, the namespace, libvirtd + virtlogd inside it, the storage pool, the mirror's
HTTP server. Nothing here touches the root namespace's network: every bridge, address, dnsmasq and iptables rule
of the libvirt networks lives in the namespace the daemons run in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..util import LabError, log, run, wait_for
from . import settings as s

PACKAGES_FILE = Path(__file__).resolve().parent / "host-packages.txt"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
POLICY_101 = "#!/bin/sh\n# pgha vmlab: no daemon starts in the root namespace during package installs\nexit 101\n"
DEFAULT_NET_AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")
MIRROR_PID = s.RUN_DIR / "mirror-http.pid"


def host_packages() -> list[str]:
    return [line.strip() for line in PACKAGES_FILE.read_text().splitlines() if line.strip()]


def install_packages() -> None:
    """Install missing host packages with policy-rc.d answering 101, so no daemon starts in the root namespace."""
    missing = [p for p in host_packages() if run(["dpkg", "-s", p], check=False).returncode != 0]
    if missing:
        previous = POLICY_RC_D.read_text() if POLICY_RC_D.exists() else None
        POLICY_RC_D.write_text(POLICY_101)
        POLICY_RC_D.chmod(0o755)
        try:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (
                ["apt-get", "-q", "update"],
                ["apt-get", "-q", "-y", "install", "--no-install-recommends", *missing],
            ):
                cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
                if cp.returncode != 0:
                    raise LabError(f"{' '.join(argv[:4])} failed: {cp.stderr.strip()[-2000:]}")
        finally:
            if previous is None:
                POLICY_RC_D.unlink(missing_ok=True)
            else:
                POLICY_RC_D.write_text(previous)
        log.info("host: installed %s", " ".join(missing))
    # libvirt's `default` network (192.168.122.0/24) must never come up.
    DEFAULT_NET_AUTOSTART.unlink(missing_ok=True)


def ns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", s.NETNS, *argv]


def virsh(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run(["virsh", "-q", "-c", s.LIBVIRT_URI, *args], check=check, timeout=timeout).stdout


def netns_exists() -> bool:
    return s.NETNS in run(["ip", "netns", "list"]).stdout.split()


def alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A pid file left over from another boot may name an unrelated process: check it is ours.
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    return pid if Path(exe).name in ("libvirtd", "virtlogd", "python3", "python3.11", "timeout") else None


def _daemon_netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


# Here /dev/kvm is root-only (no udev). libvirt probes QEMU's capabilities with privileges that open it (the probe
# reports KVM enabled) but checks its cache as the qemu user (libvirt-qemu cannot open it): the cache is then never
# valid and every API call re-probes QEMU (~4 s each under load; the provider makes over a hundred calls). In
# libvirtd's own mount namespace only, /dev/kvm is replaced by a node with Debian's usual root:kvm 0660, so the probe
# and the check agree. Domains are type 'qemu' (TCG) and never use it. Nothing changes outside that namespace.
_LIBVIRTD_KVM_NODE = """set -eu
if [ -c /dev/kvm ]; then
  d=$(mktemp -d /run/pghavm-kvm.XXXXXX)
  mount -t tmpfs -o size=16k,mode=0755 pghavm-kvm "$d"
  mknod -m 0660 "$d/kvm" c "$((0x$(stat -c %t /dev/kvm)))" "$((0x$(stat -c %T /dev/kvm)))"
  chgrp kvm "$d/kvm"
  mount --bind "$d/kvm" /dev/kvm
  umount -l "$d"
  rmdir "$d"
fi
exec libvirtd -d
"""


def start_daemons() -> None:
    if not netns_exists():
        run(["ip", "netns", "add", s.NETNS])
    run(ns("ip", "link", "set", "lo", "up"))
    s.LOG_DIR.mkdir(parents=True, exist_ok=True)
    own_ns = os.readlink("/proc/self/ns/net")
    for name, pidfile in (("virtlogd", s.VIRTLOGD_PID), ("libvirtd", s.LIBVIRTD_PID)):
        pid = alive(pidfile)
        if pid is not None:
            if _daemon_netns(pid) == own_ns:
                raise LabError(f"{name} (pid {pid}) runs in the root namespace: stop it, the lab never uses it")
            continue
        env = {**os.environ, "LIBVIRT_LOG_OUTPUTS": f"3:file:{s.LOG_DIR / (name + '.log')}"}
        # `ip netns exec` gives the daemon a private /sys without cgroup mounts: libvirt skips cgroups.
        argv = ns(name, "-d") if name == "virtlogd" else ns("unshare", "--mount", "--propagation", "private",
                                                            "/bin/sh", "-c", _LIBVIRTD_KVM_NODE, "sh")  # fmt: skip
        cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        if cp.returncode != 0:
            raise LabError(f"{name} did not start: {cp.stderr.strip()}")
    wait_for("libvirtd", lambda: run(["virsh", "-c", s.LIBVIRT_URI, "version"], check=False).returncode == 0, 60, 1)
    # The `default` network must not run (its definition may exist; it has no autostart link).
    if "default" in virsh("net-list", "--name").split():
        virsh("net-destroy", "default")
    log.info("host: libvirtd and virtlogd run in namespace %s", s.NETNS)


def ensure_pool() -> None:
    if run(["virsh", "-c", s.LIBVIRT_URI, "pool-info", s.POOL_NAME], check=False).returncode != 0:
        s.POOL_DIR.mkdir(parents=True, exist_ok=True)
        virsh("pool-define-as", s.POOL_NAME, "dir", "--target", str(s.POOL_DIR))
    if "running" not in virsh("pool-info", s.POOL_NAME):
        virsh("pool-start", s.POOL_NAME)


def start_mirror_server() -> None:
    """python3 -m http.server inside the namespace, bounded by `timeout`; VMs reach it at the egress gateway."""
    if alive(MIRROR_PID) is not None:
        return
    s.RUN_DIR.mkdir(parents=True, exist_ok=True)
    log_file = (s.LOG_DIR / "mirror-http.log").open("ab")
    proc = subprocess.Popen(
        ns(
            "timeout", str(s.MIRROR_LIFETIME_S), "python3", "-m", "http.server", "--bind", "0.0.0.0",
            "--directory", str(s.MIRROR_DIR), str(s.MIRROR_PORT),
        ),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )  # fmt: skip
    MIRROR_PID.write_text(f"{proc.pid}\n")
    wait_for(
        "the mirror's HTTP server",
        lambda: run(ns("python3", "-c", _PROBE, str(s.MIRROR_PORT)), check=False).returncode == 0,
        30,
        0.5,
    )
    log.info("host: package mirror served in %s on port %d (stops by itself after %d s)", s.NETNS,
             s.MIRROR_PORT, s.MIRROR_LIFETIME_S)  # fmt: skip


_PROBE = (
    "import sys, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/InRelease', timeout=2).read()"
)


def _kill(pidfile: Path, what: str, group: bool = False) -> None:
    pid = alive(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    try:
        if group:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    log.info("host: %s stopped", what)


def stop_mirror_server() -> None:
    _kill(MIRROR_PID, "mirror HTTP server", group=True)


def remove_libvirt_objects(prefix: str) -> list[str]:
    """Whatever the stack left (it should be nothing): domains, volumes, networks named with the lab's prefix."""
    left: list[str] = []
    for dom in virsh("list", "--all", "--name").split():
        if dom.startswith(prefix):
            virsh("destroy", dom, check=False)
            virsh("undefine", dom, "--nvram", check=False)
            left.append(f"domain {dom}")
    if run(["virsh", "-c", s.LIBVIRT_URI, "pool-info", s.POOL_NAME], check=False).returncode == 0:
        virsh("pool-refresh", s.POOL_NAME, check=False)
        for line in virsh("vol-list", s.POOL_NAME, check=False).splitlines():
            vol = line.split()[0] if line.split() else ""
            if vol:
                virsh("vol-delete", "--pool", s.POOL_NAME, vol, check=False)
                left.append(f"volume {vol}")
        virsh("pool-destroy", s.POOL_NAME, check=False)
        virsh("pool-undefine", s.POOL_NAME, check=False)
    for net in virsh("net-list", "--all", "--name").split():
        if net.startswith(prefix):
            virsh("net-destroy", net, check=False)
            virsh("net-undefine", net, check=False)
            left.append(f"network {net}")
    return left


def stop_daemons() -> None:
    _kill(s.LIBVIRTD_PID, "libvirtd")
    _kill(s.VIRTLOGD_PID, "virtlogd")
    if netns_exists():
        run(["ip", "netns", "del", s.NETNS])
