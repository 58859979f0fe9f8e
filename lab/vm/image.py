"""The guest image and the package mirror, built together and cached under /var/lib/pgha-vmlab/image.

The image behaves like the distribution's generic cloud image: a BIOS/GRUB disk-bootable qcow2 with cloud-init
(NoCloud), qemu-guest-agent and sshd; PostgreSQL and pgpool-II are NOT in it. In the same mmdebstrap run, apt inside
the image downloads exactly what provisioning installs (components.plan.provisioning_packages) with every
dependency the image lacks: that is the mirror, a flat apt repository signed with a key made here.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from ..util import LabError, log, run
from . import settings as s

# Bump when the recipe below changes in a way the hashed text does not show.
RECIPE_VERSION = "1"
ROOT_LABEL = "pghavm-root"
DISK_SIZE = "3G"
PART_OFFSET = 1024 * 1024  # the one partition starts at 1 MiB; GRUB's core.img lives in the gap before it
IMAGE_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "cloud-init",
    "cloud-guest-utils",
    "e2fsprogs",
    "qemu-guest-agent",
    "initramfs-tools",
    "linux-image-amd64",
    "python3",
    "sudo",
    "netbase",
    "procps",
    "iputils-ping",
    "locales",
    "ca-certificates",
)
GRUB_MODULES = (
    *("biosdisk", "part_msdos", "ext2", "search", "search_label", "normal"),
    *("linux", "serial", "terminal", "configfile", "echo", "test"),
)


def _hooks(packages: list[str], mirror_out: Path) -> list[str]:
    grub_cfg = (
        "serial --unit=0 --speed=115200\\nterminal_input serial console\\nterminal_output serial console\\n"
        "set timeout=0\\n"
        f"search --no-floppy --label {ROOT_LABEL} --set=root\\n"
        "menuentry debian {\\n"
        f"  linux /boot/$k root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200\\n"
        "  initrd /boot/$i\\n}\\n"
    )
    pkgs = " ".join(shlex.quote(p) for p in packages)
    return [
        f'echo "LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1" > "$1/etc/fstab"',
        # cloud-init ends in error without a locale.
        'echo "en_US.UTF-8 UTF-8" >> "$1/etc/locale.gen"; chroot "$1" locale-gen >/dev/null',
        'echo LANG=en_US.UTF-8 > "$1/etc/default/locale"',
        # 19 s of boot under emulation, for nothing on a fresh VM.
        'ln -sf /dev/null "$1/etc/systemd/system/e2scrub_reap.service"',
        'printf "datasource_list: [ NoCloud, None ]\\nssh_genkeytypes: [ed25519, ecdsa]\\n"'
        ' > "$1/etc/cloud/cloud.cfg.d/90-pghavm-image.cfg"',
        # GRUB: modules and config inside the file system (no loop mount needed later).
        'mkdir -p "$1/boot/grub/i386-pc"; cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst'
        ' "$1/boot/grub/i386-pc/"',
        'k=$(cd "$1/boot" && ls vmlinuz-* | head -n1); i=$(cd "$1/boot" && ls initrd.img-* | head -n1);'
        f' printf "{grub_cfg}" > "$1/boot/grub/grub.cfg"',
        # The mirror: what provisioning installs, resolved against this very image, with the same apt defaults.
        # (The cache is emptied first: it still holds the image's own packages.)
        f'chroot "$1" apt-get clean; chroot "$1" apt-get -q -y --download-only install {pkgs} >/dev/null',
        f"mkdir -p {shlex.quote(str(mirror_out))}; "
        f'cp "$1"/var/cache/apt/archives/*.deb {shlex.quote(str(mirror_out))}/',
        # A generic image: no host keys, machine-id, host name, apt lists or caches of the build.
        'chroot "$1" apt-get clean; rm -rf "$1"/var/lib/apt/lists/*',
        'rm -f "$1"/etc/ssh/ssh_host_* "$1/etc/hostname" "$1/var/lib/dbus/machine-id"; : > "$1/etc/machine-id"',
    ]


def recipe_hash(packages: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}\n{s.SUITE}\n{DISK_SIZE}\n".encode())
    h.update("\n".join((*IMAGE_PACKAGES, "--", *sorted(packages), "--", *s.DEBIAN_SOURCES)).encode())
    h.update("\n".join(_hooks(packages, Path("/out"))).encode())
    return h.hexdigest()


def _stamp() -> Path:
    return s.IMAGE_DIR / "recipe"


def is_current(packages: list[str]) -> bool:
    return (
        s.BASE_IMAGE.is_file()
        and (s.MIRROR_DIR / "InRelease").is_file()
        and s.MIRROR_KEY.is_file()
        and _stamp().is_file()
        and _stamp().read_text().strip() == recipe_hash(packages)
    )


def ensure(packages: list[str], *, force: bool = False) -> float:
    """Build image + mirror unless current; returns the seconds spent (0 when cached)."""
    if is_current(packages) and not force:
        log.info("image: %s and mirror are current (recipe %s)", s.BASE_IMAGE, recipe_hash(packages)[:12])
        return 0.0
    for tool in ("mmdebstrap", "sfdisk", "grub-mkimage", "qemu-img", "apt-ftparchive", "gpg"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found: run `make vm-lab-up` (it installs lab/vm/host-packages.txt)")
    t0 = time.monotonic()
    s.STATE_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(s.STATE_DIR, 0o711)  # QEMU (libvirt-qemu) must traverse to the pool; secrets live in 0700 subdirs
    new = s.IMAGE_DIR.with_name("image.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    work = Path(tempfile.mkdtemp(prefix="pghavm-build.", dir=s.STATE_DIR))
    try:
        rootfs = work / "rootfs"
        mirror = new / "mirror"
        argv = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            "--quiet",
            f"--include={','.join(IMAGE_PACKAGES)}",
            *[f"--customize-hook={hook}" for hook in _hooks(packages, mirror)],
            s.SUITE,
            str(rootfs),
            *s.DEBIAN_SOURCES,
        ]
        run(argv, timeout=2400)
        t_root = time.monotonic() - t0
        _make_disk(rootfs, work, new / "base.qcow2")
        _sign_mirror(mirror, new / "mirror-key.asc")
        (new / "recipe").write_text(recipe_hash(packages) + "\n")
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    finally:
        _remove_build_dir(work)
    old = s.IMAGE_DIR.with_name("image.old")
    shutil.rmtree(old, ignore_errors=True)
    if s.IMAGE_DIR.exists():
        s.IMAGE_DIR.rename(old)
    new.rename(s.IMAGE_DIR)
    shutil.rmtree(old, ignore_errors=True)
    debs = len(list(s.MIRROR_DIR.glob("*.deb")))
    seconds = time.monotonic() - t0
    log.info("image: built in %.0f s (root file system %.0f s); mirror of %d packages", seconds, t_root, debs)
    return seconds


def _remove_build_dir(work: Path) -> None:
    """Remove the build directory, unless something is still mounted below it (an interrupted mmdebstrap leaves
    /proc, /sys and /dev mounted in the root file system: deleting through them would hit the host's)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    busy = [m for m in mounts if m == str(work) or m.startswith(f"{work}/")]
    if busy:
        log.error("image: %s left in place, still mounted: %s", work, " ".join(busy))
        return
    shutil.rmtree(work, ignore_errors=True)


def _make_disk(rootfs: Path, work: Path, out: Path) -> None:
    """One MBR partition at 1 MiB holding an ext4 filled from rootfs, GRUB in the MBR and the post-MBR gap."""
    raw = work / "disk.raw"
    run(["truncate", "-s", DISK_SIZE, str(raw)])
    run(["sfdisk", "--quiet", str(raw)], input=f"start={PART_OFFSET // 512}, type=83, bootable\n")
    size_bytes = raw.stat().st_size - PART_OFFSET
    run(
        [
            "mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-E", f"offset={PART_OFFSET}", "-d", str(rootfs),
            str(raw), f"{size_bytes // 1024}k",
        ],
        timeout=600,
    )  # fmt: skip
    core = work / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES])
    if core.stat().st_size > PART_OFFSET - 512:
        raise LabError(f"GRUB core image of {core.stat().st_size} bytes does not fit before the partition")
    run(["dd", "if=/usr/lib/grub/i386-pc/boot.img", f"of={raw}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    run(["dd", f"if={core}", f"of={raw}", "bs=512", "seek=1", "conv=notrunc", "status=none"])
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)], timeout=600)


def _sign_mirror(mirror: Path, public_key: Path) -> None:
    """Flat repository: Packages, Release and an InRelease signed with the lab's own key."""
    gnupg = s.GNUPG_HOME
    gnupg.mkdir(parents=True, exist_ok=True)
    os.chmod(gnupg, 0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--quiet"]
    uid = "pgha vmlab mirror <vmlab@pgha.invalid>"
    if run([*gpg, "--list-secret-keys", uid], check=False).returncode != 0:
        run([*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"])
    listing = _in_dir(mirror, ["apt-ftparchive", "packages", "."])
    (mirror / "Packages").write_text(listing)
    run(["gzip", "-9", "-k", "-f", str(mirror / "Packages")])
    release = _in_dir(mirror, ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=pghavm", "release", "."])
    (mirror / "Release").write_text(release)
    run([*gpg, "--yes", "--local-user", uid, "--clearsign", "-o", str(mirror / "InRelease"), str(mirror / "Release")])
    public_key.write_text(run([*gpg, "--armor", "--export", uid]).stdout)


def _in_dir(directory: Path, argv: list[str]) -> str:
    return run(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(directory), *argv], timeout=300).stdout
