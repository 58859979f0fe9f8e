"""The VM lab's lifecycle: host setup (packages, image, daemons, pool, mirror server), `pulumi up`, refresh +
preview, destroy, and down. Every engine command runs inside the lab namespace (SSH to the VMs only works there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from ..api import LAB_ENV
from ..engine import REPO
from ..net import in_namespace
from ..util import LabError, log
from . import host, image
from . import settings as s
from .stack import cluster_config, lab_stack, overrides

# Three VMs under TCG on a shared 2-core host: boot 3-8 min, package installs ~6 min; bounded all the same.
UP_TIMEOUT_S = 3600.0


def _in_netns() -> bool:
    return in_namespace(s.NETNS)


def in_netns(verb: str) -> None:
    """Run `python -m lab.vm VERB` inside the lab namespace (SSH to the VMs only works from there)."""
    cp = subprocess.run(host.ns(sys.executable, "-m", "lab.vm", verb), cwd=REPO, check=False)
    if cp.returncode != 0:
        raise LabError(f"python -m lab.vm {verb} (in namespace {s.NETNS}) failed with rc {cp.returncode}")


def setup_host() -> dict[str, float]:
    """Everything before the engine; returns the phases' durations."""
    from components.plan import provisioning_packages

    times: dict[str, float] = {}
    t0 = time.monotonic()
    host.install_packages()
    times["host_packages_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    image.ensure(provisioning_packages(cluster_config()))
    times["image_s"] = round(time.monotonic() - t0, 1)
    host.start_daemons()
    host.ensure_pool()
    host.start_mirror_server()
    return times


def up() -> dict[str, float]:
    """Host setup, then `pulumi up` inside the namespace; returns the phases' durations."""
    times = setup_host()
    t0 = time.monotonic()
    in_netns("provision")
    times["pulumi_up_s"] = round(time.monotonic() - t0, 1)
    return times


def provision() -> float:
    if not _in_netns():
        raise LabError(f"run inside the namespace: ip netns exec {s.NETNS} python -m lab.vm provision")
    stack = lab_stack()
    result = stack.up(s.STACK, overrides(stack), timeout=UP_TIMEOUT_S)
    log.info("engine: up in %.1f s: %s", result.seconds, result.changes)
    return result.seconds


def destroy() -> float:
    if not _in_netns():
        raise LabError(f"run inside the namespace: ip netns exec {s.NETNS} python -m lab.vm destroy")
    stack = lab_stack()
    if not stack.backend.exists() or not stack.exists():
        log.info("engine: no vmlab stack, nothing to destroy")
        return 0.0
    values = overrides(stack)
    stack.ensure(s.STACK, values)
    args = ["--stack", stack.stack, "--config-file", str(stack.config_file), "--non-interactive"]
    result = stack.run("destroy", "--yes", "--skip-preview", *args, timeout=UP_TIMEOUT_S)
    log.info("engine: destroy in %.1f s: %s", result.seconds, result.changes)
    return result.seconds


def settle() -> dict[str, float]:
    """refresh, then preview --expect-no-changes: the state the real provider reads back needs no update."""
    if not _in_netns():
        raise LabError(f"run inside the namespace: ip netns exec {s.NETNS} python -m lab.vm settle")
    stack = lab_stack()
    stack.ensure(s.STACK, overrides(stack))
    args = ["--stack", stack.stack, "--config-file", str(stack.config_file), "--non-interactive"]
    refreshed = stack.run("refresh", "--yes", "--skip-preview", *args, timeout=UP_TIMEOUT_S)
    log.info("engine: refresh in %.1f s: %s", refreshed.seconds, refreshed.changes)
    previewed = stack.run("preview", "--diff", "--expect-no-changes", *args, timeout=UP_TIMEOUT_S)
    log.info("engine: preview --expect-no-changes in %.1f s: %s", previewed.seconds, previewed.changes)
    return {"refresh_s": round(refreshed.seconds, 1), "preview_s": round(previewed.seconds, 1)}


def down(purge: bool) -> None:
    daemons_up = host.alive(s.LIBVIRTD_PID) is not None and host.netns_exists()
    if daemons_up:
        # The stack goes before the daemons do (its networks and domains are defined with autostart).
        try:
            in_netns("destroy")
        except LabError as e:
            log.error("down: %s; removing what is left directly", e)
        left = host.remove_libvirt_objects(f"{cluster_config().cluster_name}-")
        if left:
            log.warning("down: removed what the stack left: %s", ", ".join(left))
    host.stop_mirror_server()
    host.stop_daemons()
    lab_stack().forget()
    if purge:
        shutil.rmtree(s.IMAGE_DIR, ignore_errors=True)
        shutil.rmtree(s.GNUPG_HOME, ignore_errors=True)
        shutil.rmtree(s.POOL_DIR, ignore_errors=True)
    log.info("down: the VM lab is gone%s", " (image and mirror purged)" if purge else "")


def status() -> dict[str, object]:
    out: dict[str, object] = {
        "netns": host.netns_exists(),
        "libvirtd": host.alive(s.LIBVIRTD_PID) is not None,
        "virtlogd": host.alive(s.VIRTLOGD_PID) is not None,
        "mirror_server": host.alive(host.MIRROR_PID) is not None,
        "image": str(s.BASE_IMAGE) if s.BASE_IMAGE.is_file() else None,
    }
    if out["libvirtd"]:
        out["domains"] = host.virsh("list", "--all", "--name").split()
        out["networks"] = host.virsh("net-list", "--all", "--name").split()
    return out


def run_tests(pytest_args: Sequence[str]) -> int:
    """`make test-vm-lab`: a fresh lab's host side here (the image build needs the host's network), then pytest
    inside the lab namespace with the VM back-end (tests/vm_lab/session.py runs `pulumi up` and times it), then
    the lab goes, whatever happened. Returns pytest's exit code."""
    t_total = time.monotonic()
    down(purge=False)  # nothing of an earlier run
    s.LOG_DIR.mkdir(parents=True, exist_ok=True)
    s.HOST_TIMES.unlink(missing_ok=True)
    s.REPORT_FILE.unlink(missing_ok=True)
    rc = 1
    try:
        t0 = time.monotonic()
        times = setup_host()
        times["host_setup_s"] = round(time.monotonic() - t0 - times["image_s"] - times["host_packages_s"], 1)
        s.HOST_TIMES.write_text(json.dumps(times) + "\n")
        log.info("host phases: %s", times)
        env = {**os.environ, LAB_ENV: "vm", "VM_LAB_TESTS": "1"}
        pytest = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "tests.vm_lab.session"]
        rc = subprocess.run(host.ns(*pytest, *pytest_args), cwd=REPO, env=env, check=False).returncode
    finally:
        t0 = time.monotonic()
        down(purge=False)
        _add_to_report({"down_s": round(time.monotonic() - t0, 1), "total_s": round(time.monotonic() - t_total, 1)})
    return rc


def _add_to_report(phases: dict[str, float]) -> None:
    try:
        report = json.loads(s.REPORT_FILE.read_text())
    except (OSError, ValueError):
        report = {}
    report.setdefault("phases", {}).update(phases)
    s.REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    log.info("report: %s", s.REPORT_FILE)
