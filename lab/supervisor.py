"""Per-server supervisor: boots one container with systemd-nspawn and boots it again after a reboot from inside.

Started by the lab as `python -m lab.supervisor NAME` with LAB_DIR set. It forks once (the caller waits for the
intermediate process, so nothing is left as a zombie of the caller), joins the server's own cgroups, then runs
nspawn in a loop: exit code 133 (the container asked for a reboot) boots it again unless the lab wrote the stop
flag (deliberate crash or stop); any other exit ends the supervisor.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from types import FrameType

from .config import PROPAGATE_DIR, get_server, lab_dir
from .paths import ServerPaths

REBOOT_EXIT = 133
MAX_REBOOTS_PER_MINUTE = 10


def nspawn_argv(paths: ServerPaths) -> list[str]:
    s = paths.server
    return [
        "nsenter",
        f"--net=/run/netns/{s.netns}",
        "systemd-nspawn",
        "--boot",
        f"--directory={paths.merged}",
        f"--machine={s.name}",
        f"--hostname={s.name}",
        "--register=no",
        "--keep-unit",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]


def _say(msg: str) -> None:
    print(f"[lab-supervisor {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def supervise(name: str) -> int:
    paths = ServerPaths(lab_dir(), get_server(name))
    for cg in paths.cgroups:
        (cg / "cgroup.procs").write_text(f"{os.getpid()}\n")
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_term(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # nspawn turns this into a clean poweroff of the container

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    boots: list[float] = []
    rc = 0
    try:
        while True:
            shutil.rmtree(PROPAGATE_DIR / name, ignore_errors=True)
            boots = [t for t in boots if t > time.monotonic() - 60] + [time.monotonic()]
            if len(boots) > MAX_REBOOTS_PER_MINUTE:
                _say(f"{name}: more than {MAX_REBOOTS_PER_MINUTE} boots in a minute, giving up")
                return 1
            _say(f"{name}: booting")
            child = subprocess.Popen(nspawn_argv(paths), stdin=subprocess.DEVNULL)
            paths.nspawn_pid.write_text(f"{child.pid}\n")
            rc = child.wait()
            paths.nspawn_pid.unlink(missing_ok=True)
            _say(f"{name}: nspawn exited with {rc}")
            if rc != REBOOT_EXIT or stopping or paths.stop_flag.exists():
                return rc
    finally:
        paths.nspawn_pid.unlink(missing_ok=True)
        shutil.rmtree(PROPAGATE_DIR / name, ignore_errors=True)
        paths.supervisor_pid.unlink(missing_ok=True)
        _say(f"{name}: supervisor exits")


def main() -> None:
    name = sys.argv[1]
    paths = ServerPaths(lab_dir(), get_server(name))
    pid = os.fork()
    if pid > 0:
        paths.supervisor_pid.write_text(f"{pid}\n")
        os._exit(0)
    os.setsid()
    sys.exit(supervise(name))


if __name__ == "__main__":
    main()
