"""Base image: one Debian 12 root filesystem built with mmdebstrap, shared read-only by every server."""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from pathlib import Path

from .config import ADMIN_USER, APT_SOURCES, BASE_PACKAGES, SUITE
from .util import LabError, log, run

# Bump when the customisation below changes: it is part of the cache key.
IMAGE_RECIPE_VERSION = "1"

# Run by mmdebstrap after the packages are installed; "$1" is the root directory.
CUSTOMIZE_HOOKS: tuple[str, ...] = (
    # A fresh server gets its own host keys and machine-id (the lab writes them per server).
    'rm -f "$1"/etc/ssh/ssh_host_*',
    ': > "$1/etc/machine-id"',
    'rm -f "$1/var/lib/dbus/machine-id"',
    # No host-specific leftovers copied in by mmdebstrap.
    'rm -f "$1/etc/hostname" "$1/etc/resolv.conf"',
    'printf "127.0.0.1\\tlocalhost\\n::1\\t\\tlocalhost ip6-localhost ip6-loopback\\n'
    'ff02::1\\t\\tip6-allnodes\\nff02::2\\t\\tip6-allrouters\\n" > "$1/etc/hosts"',
    # A bounded stop: one stuck unit must not hold a shutdown for 90 s.
    'mkdir -p "$1/etc/systemd/system.conf.d"',
    'printf "[Manager]\\nDefaultTimeoutStopSec=20s\\n" > "$1/etc/systemd/system.conf.d/10-lab-timeouts.conf"',
    # The cloud-image style default user with passwordless sudo.
    f'chroot "$1" useradd --create-home --shell /bin/bash --user-group {ADMIN_USER}',
    f'printf "{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\\n" > "$1/etc/sudoers.d/90-{ADMIN_USER}"',
    f'chmod 0440 "$1/etc/sudoers.d/90-{ADMIN_USER}"',
    f'chroot "$1" visudo -c -q -f /etc/sudoers.d/90-{ADMIN_USER}',
    # Monitoring packages are preinstalled on every server but run only where provisioning enables them (exporters on
    # the database nodes, Prometheus and Alertmanager on the backup repository host): not at first boot.
    'chroot "$1" systemctl disable --quiet prometheus prometheus-alertmanager prometheus-node-exporter '
    "prometheus-postgres-exporter",
    # Keep the image small: apt lists and caches are not needed on a server image.
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
)


# Installed at the OLDEST version the host's apt sources offer (bookworm's point release, when bookworm-security
# carries a newer one): the lab's servers then have a real package upgrade to make (the lifecycle's upgrade test).
UPGRADABLE_PACKAGES = ("postgresql-15", "postgresql-client-15", "libpq5")


def package_versions(package: str) -> list[str]:
    """Versions of package the host's apt sources offer, newest first (`apt-cache madison`)."""
    if shutil.which("apt-cache") is None:
        return []
    out = run(["apt-cache", "madison", package], check=False).stdout
    versions = list(dict.fromkeys(line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2))
    return sorted(versions, key=functools.cmp_to_key(_debian_version_compare), reverse=True)


def _debian_version_compare(a: str, b: str) -> int:
    if a == b:
        return 0
    return -1 if run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0 else 1


@functools.cache
def image_packages() -> tuple[str, ...]:
    """BASE_PACKAGES (plus libpq5), each upgradable one pinned to its oldest version when apt offers several."""
    oldest = {p: f"{p}={v[-1]}" for p in UPGRADABLE_PACKAGES if len(v := package_versions(p)) > 1}
    return (*(oldest.pop(p, p) for p in BASE_PACKAGES), *oldest.values())


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(f"{SUITE}\n{IMAGE_RECIPE_VERSION}\n".encode())
    h.update("\n".join(sorted(image_packages())).encode())
    h.update(b"\n--hooks--\n")
    h.update("\n".join(CUSTOMIZE_HOOKS).encode())
    return h.hexdigest()


class BaseImage:
    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir / "base"
        self.stamp = lab_dir / "base.stamp"

    def is_current(self) -> bool:
        return (
            self.dir.is_dir()
            and (self.dir / "usr/lib/systemd/systemd").exists()
            and self.stamp.is_file()
            and self.stamp.read_text().strip() == recipe_hash()
        )

    def ensure(self, *, in_use: bool, force: bool = False) -> bool:
        """Build the base image unless a current one exists. Returns True if it was built."""
        if self.is_current() and not force:
            log.info("image: base %s is current (recipe %s), nothing to do", self.dir, recipe_hash()[:12])
            return False
        if in_use:
            raise LabError("the base image must be rebuilt but servers are using it: run `python -m lab down` first")
        if not APT_SOURCES.is_file():
            raise LabError(f"{APT_SOURCES} is missing: the base image is built from the host's Debian sources")
        if shutil.which("mmdebstrap") is None:
            raise LabError("mmdebstrap not found: install the packages in lab/host-packages.txt")
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.dir.with_name("base.new")
        old = self.dir.with_name("base.old")
        for d in (tmp, old):
            if d.exists():
                shutil.rmtree(d)
        argv = [
            "mmdebstrap",
            "--mode=root",
            "--variant=apt",
            "--format=directory",
            "--quiet",
            f"--include={','.join(image_packages())}",
        ]
        argv += [f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS]
        argv += [SUITE, str(tmp), str(APT_SOURCES)]
        t0 = time.monotonic()
        try:
            run(argv, timeout=1800)
        except LabError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.stamp.unlink(missing_ok=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        if old.exists():
            shutil.rmtree(old)
        self.stamp.write_text(recipe_hash() + "\n")
        size = run(["du", "-sm", str(self.dir)]).stdout.split()[0]
        log.info("image: built base %s in %.1f s (%s MiB)", self.dir, time.monotonic() - t0, size)
        return True
