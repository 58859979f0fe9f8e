"""Fixed VM-lab contract: names, addresses and paths other code depends on (must agree with Pulumi.vmlab.yaml)."""

from __future__ import annotations

from pathlib import Path

NETNS = "pghavm"
STACK = "vmlab"
STATE_DIR = Path("/var/lib/pgha-vmlab")
IMAGE_DIR = STATE_DIR / "image"  # cached between runs: base.qcow2 + the mirror built from the same recipe
BASE_IMAGE = IMAGE_DIR / "base.qcow2"
MIRROR_DIR = IMAGE_DIR / "mirror"  # flat apt repository (Packages, Release, InRelease, *.deb)
MIRROR_KEY = IMAGE_DIR / "mirror-key.asc"  # public key the repository is signed with
GNUPG_HOME = STATE_DIR / "gnupg"  # the mirror's signing key (private; 0700)
POOL_NAME = "pghavm"
POOL_DIR = STATE_DIR / "pool"
RUN_DIR = STATE_DIR / "run"
LOG_DIR = STATE_DIR / "log"
PULUMI_DIR = STATE_DIR / "pulumi"
# A test run's measurements: the host phases (written before pytest starts), then the whole report (phases and the
# drills' figures) written by the test session (tests/vm_lab/session.py).
HOST_TIMES = LOG_DIR / "host-times.json"
REPORT_FILE = STATE_DIR / "vm-lab-report.json"
SSH_KEY = STATE_DIR / "ssh" / "id_ed25519"  # the admin user's key (provisioning and the checks)
LIBVIRTD_PID = Path("/run/libvirtd.pid")
VIRTLOGD_PID = Path("/run/virtlogd.pid")
LIBVIRT_URI = "qemu:///system"
SUITE = "bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The mirror's HTTP server: inside the namespace only, reached by the VMs at the egress gateway.
MIRROR_PORT = 8081
MIRROR_LIFETIME_S = 4 * 3600  # the server stops by itself after this long, whatever happens to the lab
CLUSTER_SUBNET = "10.213.16.0/24"
EGRESS_SUBNET = "10.213.17.0/24"
EGRESS_GATEWAY = "10.213.17.1"
