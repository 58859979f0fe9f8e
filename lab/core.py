"""The Lab: three Debian 12 servers as systemd-nspawn containers on one private L2 segment."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from . import net
from .api import ROOT_ENV, SERVER_PATH, Command, LabKind, ServerStatus, command_argv
from .config import (
    ADMIN_USER,
    ALL_SERVERS,
    LAB_SERVERS,
    PROPAGATE_DIR,
    SERVERS,
    SPARE_SERVERS,
    STACK_ENV,
    SWITCH_NS,
    VIP,
    Server,
    get_server,
    lab_dir,
)
from .image import BaseImage, recipe_hash
from .paths import CGROUP_HIERARCHIES, CGROUP_ROOT, CGROUP_SLICE, ServerPaths
from .sshclient import ssh_argv
from .util import LabError, log, run, wait_for

HOST_TOOLS = ("ip", "nsenter", "systemd-nspawn", "mmdebstrap", "ssh", "ssh-keygen", "mount", "umount")
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 45.0
REPO_ROOT = Path(__file__).resolve().parent.parent
P = ParamSpec("P")

if TYPE_CHECKING:
    from components.config import ClusterConfig


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _kill(pid: int | None, sig: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def host_cgroups_visible() -> bool:
    """False inside `ip netns exec` (how the drills run): its private mount namespace remounts /sys, which hides
    the host's cgroup mounts the lab needs to boot or kill a server."""
    return Path("/sys/fs/cgroup/systemd").is_dir()


def outer_ancestor() -> int | None:
    """PID of the nearest ancestor in another mount namespace that sees the host's cgroups (the shell that ran
    `ip netns exec`)."""
    try:
        mine = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None
    pid = os.getpid()
    for _ in range(64):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if pid <= 1:
                return None
            if os.readlink(f"/proc/{pid}/ns/mnt") != mine and Path(f"/proc/{pid}/root/sys/fs/cgroup/systemd").is_dir():
                return pid
        except (OSError, StopIteration, ValueError):
            return None
    return None


def run_in_host_namespaces(directory: Path, verb: str, *args: str, timeout: float = 600) -> None:
    """`python -m lab VERB ARGS` in the mount and network namespaces of the nearest ancestor outside this one."""
    what = " ".join((verb, *args))
    host = outer_ancestor()
    if host is None:
        raise LabError(f"cannot {what}: no /sys/fs/cgroup here and no ancestor process outside this mount ns")
    argv = [
        "nsenter",
        f"--mount=/proc/{host}/ns/mnt",
        f"--net=/proc/{host}/ns/net",
        f"--wd={REPO_ROOT}",
        "--",
        sys.executable,
        "-m",
        "lab",
        verb.replace("_", "-"),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LAB_DIR": str(directory)}
    cp = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if cp.returncode != 0:
        raise LabError(f"python -m lab {what} failed: {(cp.stdout + cp.stderr).strip()[-500:]}")


def from_host_namespaces(verb: Callable[Concatenate[Lab, P], None]) -> Callable[Concatenate[Lab, P], None]:
    """A verb that needs the host's cgroup mounts or network: run where they are when this process cannot see
    them (the drills call crash and start from inside the switch namespace)."""

    @functools.wraps(verb)
    def wrapper(self: Lab, *args: P.args, **kwargs: P.kwargs) -> None:
        if kwargs or host_cgroups_visible():
            verb(self, *args, **kwargs)
        else:
            run_in_host_namespaces(self.dir, verb.__name__, *(str(a) for a in args))

    return wrapper


def forget_stack_state(directory: Path) -> None:
    from .engine import LabStack  # late: `python -m lab.engine` must not be imported by the package first

    LabStack(directory=directory / "pulumi").forget()


def stacks_with_resources(directory: Path) -> list[str]:
    from .engine import stacks_with_resources as in_backend  # late, as above

    return in_backend(directory / "pulumi")


class Lab:
    """Three servers (server1..3), and up to two added ones (server4, server5), each in its own network namespace,
    wired to a bridge in namespace pghalab-sw. The container back-end of the lab API (lab.api.LabBackend)."""

    kind: LabKind = "container"
    client_ns: str = SWITCH_NS

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or lab_dir()
        self.image = BaseImage(self.dir)
        self.ssh_dir = self.dir / "ssh"
        self.key = self.ssh_dir / "admin_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._thread_lock = threading.RLock()

    # ----------------------------------------------------------------- helpers
    def paths(self, node: str | Server) -> ServerPaths:
        return ServerPaths(self.dir, node if isinstance(node, Server) else get_server(node))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One mutating verb at a time (across processes); re-entrant within this object."""
        with self._thread_lock:
            if self._lock_depth == 0:
                self.dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.dir / "lab.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("waiting for another lab command to finish (lock %s)", self.dir / "lab.lock")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, mounts, cgroups)")

    @staticmethod
    def check_host_tools() -> None:
        missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing host tools: {', '.join(missing)}; install the packages in lab/host-packages.txt")

    # --------------------------------------------------------- process state
    def supervisor_pid(self, node: str | Server) -> int | None:
        p = self.paths(node)
        pid = _read_pid(p.supervisor_pid)
        if pid is None or not _alive(pid):
            return None
        cmd = _cmdline(pid)
        return pid if "lab.supervisor" in cmd and p.server.name in cmd else None

    def nspawn_pid(self, node: str | Server) -> int | None:
        p = self.paths(node)
        pid = _read_pid(p.nspawn_pid)
        if pid is None or not _alive(pid):
            return None
        cmd = _cmdline(pid)
        ok = any(c.endswith("systemd-nspawn") for c in cmd) and f"--machine={p.server.name}" in cmd
        return pid if ok else None

    def init_pid(self, node: str | Server) -> int | None:
        """PID (host view) of the container's systemd, or None when the server is not running."""
        parent = self.nspawn_pid(node)
        if parent is None:
            return None
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            return None
        for c in children:
            if _alive(int(c)):
                return int(c)
        return None

    def is_running(self, node: str) -> bool:
        return self.init_pid(node) is not None

    def system_state(self, node: str | Server) -> str:
        if self.init_pid(node) is None:
            return "stopped"
        cp = self.exec(self.paths(node).server.name, ["systemctl", "is-system-running"], timeout=15)
        return cp.stdout.strip() or f"unknown (rc {cp.returncode}: {cp.stderr.strip()})"

    def failed_units(self, node: str) -> list[str]:
        cp = self.exec(node, ["systemctl", "list-units", "--failed", "--plain", "--no-legend"], timeout=15)
        return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]

    def memory_mib(self, node: str | Server) -> float | None:
        cg = self.paths(node).cgroups[CGROUP_HIERARCHIES.index("memory")]
        try:
            return int((cg / "memory.usage_in_bytes").read_text()) / 2**20
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------- commands
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
        """Run cmd as root inside the server (all its namespaces), no network needed. A str runs under /bin/sh -c."""
        pid = self.init_pid(node)
        if pid is None:
            raise LabError(f"{node} is not running")
        env = list(ROOT_ENV)
        if not capture and os.environ.get("TERM"):
            env.append(f"TERM={os.environ['TERM']}")
        argv = ["nsenter", "-t", str(pid), "-a", "-r", "-w", "--", *env, *command_argv(cmd)]
        return self._run(argv, check=check, capture=capture, timeout=timeout, input=input)

    def ssh_argv(self, node: str, *, tty: bool = False) -> list[str]:
        """ssh as admin with the lab key and pinned host keys; run it inside the switch namespace (see client())."""
        s = get_server(node)
        extra = ("-t",) if tty else ()
        return ssh_argv(self.key, self.known_hosts, f"{ADMIN_USER}@{s.address}", extra=extra)

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
        """Run cmd on the server as admin over ssh from the switch namespace. A list is shell-quoted."""
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = [*self.ssh_argv(node, tty=not capture and not remote and sys.stdin.isatty())]
        if remote:
            argv += ["--", remote]
        return self.client(argv, check=check, capture=capture, timeout=timeout, input=input)

    def client(
        self,
        cmd: Sequence[str],
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run any command in the switch namespace (address 10.213.8.2, no route out of the lab)."""
        if not net.ns_exists(SWITCH_NS):
            raise LabError(f"namespace {SWITCH_NS} does not exist: the lab is down (python -m lab up)")
        return self._run(
            ["ip", "netns", "exec", SWITCH_NS, *cmd], check=check, capture=capture, timeout=timeout, input=input
        )

    @staticmethod
    def _run(
        argv: list[str], *, check: bool, capture: bool, timeout: float | None, input: str | None
    ) -> subprocess.CompletedProcess[str]:
        if capture or input is not None:
            return run(argv, check=check, capture=capture, timeout=timeout, input=input)
        # Interactive: inherit stdin/stdout/stderr.
        try:
            cp = subprocess.run(argv, check=False, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"timed out after {timeout} s: {shlex.join(argv)}") from e
        if check and cp.returncode != 0:
            raise LabError(f"command failed (rc {cp.returncode}): {shlex.join(argv)}")
        return cp

    # ---------------------------------------------------------------- image
    def build_image(self, *, force: bool = False) -> bool:
        """Build the base image if it is missing or its recipe changed (or force). True if it was built."""
        self._require_root()
        with self._locked():
            return self.image.ensure(in_use=self._any_mounted(), force=force)

    def ensure_ssh_key(self) -> None:
        if self.key.exists() and self.key.with_suffix(".pub").exists():
            return
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgha-lab-admin", "-f", str(self.key)])
        log.info("ssh: generated lab client key %s", self.key)

    # -------------------------------------------------------------- overlays
    def _any_mounted(self) -> bool:
        return any(os.path.ismount(self.paths(s).merged) for s in ALL_SERVERS)

    def _mount_overlay(self, s: Server, *, fresh: bool) -> None:
        p = self.paths(s)
        stamp = p.root / "base.stamp"
        if os.path.ismount(p.merged):
            return
        if not fresh and (not p.upper.is_dir() or not stamp.is_file() or stamp.read_text().strip() != recipe_hash()):
            fresh = True  # nothing to keep, or it was made from another base image
        if fresh:
            for d in (p.upper, p.work, p.merged):
                if d.exists():
                    shutil.rmtree(d)
            p.console_log.unlink(missing_ok=True)
        for d in (p.upper, p.work, p.merged):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.image.dir},upperdir={p.upper},workdir={p.work}"
        run(["mount", "-t", "overlay", f"pgha-lab-{s.name}", "-o", opts, str(p.merged)])
        if fresh:
            self._personalize(s)
            stamp.write_text(recipe_hash() + "\n")

    def _personalize(self, s: Server) -> None:
        """What the installer or cloud image would give this machine: name, machine-id, host keys, admin's key."""
        root = self.paths(s).merged
        (root / "etc/hostname").write_text(f"{s.name}\n")
        hosts = (root / "etc/hosts").read_text()
        # Debian's installer maps the machine's own name to 127.0.1.1; nothing else is added.
        (root / "etc/hosts").write_text(
            hosts.replace("127.0.0.1\tlocalhost\n", f"127.0.0.1\tlocalhost\n127.0.1.1\t{s.name}\n", 1)
        )
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        run(["ssh-keygen", "-A", "-f", str(root)])
        uid = gid = None
        for line in (root / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == ADMIN_USER:
                uid, gid = int(f[2]), int(f[3])
        if uid is None or gid is None:
            raise LabError(f"user {ADMIN_USER} missing from the base image: rebuild it (python -m lab image --force)")
        ssh_dir = root / "home" / ADMIN_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        ak = ssh_dir / "authorized_keys"
        ak.write_text(self.key.with_suffix(".pub").read_text())
        ak.chmod(0o600)
        for path in (ssh_dir, ak):
            os.chown(path, uid, gid)

    def _umount_overlay(self, s: Server) -> None:
        merged = self.paths(s).merged
        for _ in range(20):
            if not os.path.ismount(merged):
                return
            if run(["umount", str(merged)], check=False).returncode != 0:
                time.sleep(0.25)
        if os.path.ismount(merged):
            log.warning("%s: overlay busy, detaching it lazily", s.name)
            run(["umount", "-l", str(merged)])

    def write_known_hosts(self) -> None:
        lines = []
        for s in ALL_SERVERS:
            ssh_etc = self.paths(s).merged / "etc/ssh"
            for kt in HOST_KEY_TYPES:
                pub = ssh_etc / f"ssh_host_{kt}_key.pub"
                if pub.exists():
                    keytype, key = pub.read_text().split()[:2]
                    lines.append(f"{s.name},{s.address} {keytype} {key}")
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        self.known_hosts.write_text("\n".join(lines) + "\n")

    # --------------------------------------------------------------- cgroups
    def _cgroup_pids(self, s: Server) -> list[int]:
        pids: set[int] = set()
        for cg in self.paths(s).cgroups:
            if cg.is_dir():
                for dirpath, _dirs, _files in os.walk(cg):
                    with contextlib.suppress(OSError):
                        pids.update(int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split())
        pids.discard(os.getpid())
        return sorted(pids)

    def _clear_cgroups(self, s: Server, *, remove: bool) -> None:
        """Kill whatever is left in the server's cgroups, then remove nspawn's sub-cgroups (and ours if remove)."""
        pids = self._cgroup_pids(s)
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        if pids:
            log.warning("%s: killed %d leftover processes in its cgroups", s.name, len(pids))
            wait_for(f"{s.name}'s cgroups to empty", lambda: not self._cgroup_pids(s), 10)
        for cg in self.paths(s).cgroups:
            if not cg.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(cg, topdown=False):
                if remove or Path(dirpath) != cg:
                    os.rmdir(dirpath)

    def _make_cgroups(self, s: Server) -> None:
        self._clear_cgroups(s, remove=False)
        for cg in self.paths(s).cgroups:
            cg.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ lifecycle
    def _spawn(self, s: Server) -> None:
        """Start the server's supervisor (which boots the container); does not wait for the boot."""
        p = self.paths(s)
        if self.supervisor_pid(s) is not None:
            # Between two boots of a reboot, or still shutting down: let it settle.
            wait_for(
                f"{s.name}'s previous supervisor to finish",
                lambda: self.supervisor_pid(s) is None or self.is_running(s.name),
                30,
            )
            if self.is_running(s.name):
                return
        self._make_cgroups(s)
        shutil.rmtree(PROPAGATE_DIR / s.name, ignore_errors=True)
        p.run.mkdir(parents=True, exist_ok=True)
        p.stop_flag.unlink(missing_ok=True)
        env = {
            "PATH": os.environ.get("PATH", SERVER_PATH),
            "LAB_DIR": str(self.dir),
            "PYTHONPATH": str(REPO_ROOT),
            "LANG": "C.UTF-8",
        }
        with open(p.console_log, "ab") as out:
            cp = subprocess.run(
                [sys.executable, "-m", "lab.supervisor", s.name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
                timeout=30,
                check=False,
            )
        if cp.returncode != 0:
            raise LabError(f"{s.name}: supervisor failed to start (rc {cp.returncode}); see {p.console_log}")

    def _wait_ready(self, s: Server, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait until systemd inside says running/degraded and (if its cable is in) sshd answers. Returns state."""
        deadline = time.monotonic() + timeout
        log_hint = f"; see {self.paths(s).console_log}"

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        def booted() -> bool:
            if self.supervisor_pid(s) is None and not self.is_running(s.name):
                raise LabError(f"{s.name} stopped while booting{log_hint}")
            return self.is_running(s.name)

        wait_for(f"{s.name}'s container to start{log_hint}", booted, left())

        def state() -> str | None:
            st = self.system_state(s)
            return st if st in ("running", "degraded") else None

        st = wait_for(f"{s.name}: systemctl is-system-running = running{log_hint}", state, left(), interval=0.3)
        if st == "degraded":
            log.warning("%s: degraded, failed units: %s", s.name, ", ".join(self.failed_units(s.name)) or "?")
        if net.cable_is_up(s):
            wait_for(
                f"sshd on {s.name} ({s.address}) from {SWITCH_NS}",
                lambda: self.ssh(s.name, "true", timeout=15).returncode == 0,
                left(),
                interval=0.5,
            )
        else:
            log.info("%s: cable is out (partitioned), not waiting for ssh", s.name)
        return st

    def _stop(self, s: Server, timeout: float = STOP_TIMEOUT) -> None:
        """Clean poweroff (SIGTERM to nspawn); after timeout, power loss. Leaves the network and overlay alone."""
        p = self.paths(s)
        if p.run.is_dir():
            p.stop_flag.touch()
        _kill(self.nspawn_pid(s), signal.SIGTERM)

        def gone() -> bool:
            return self.supervisor_pid(s) is None and self.nspawn_pid(s) is None

        try:
            wait_for(f"{s.name} to power off", gone, timeout, interval=0.2)
        except LabError:
            log.warning("%s: no clean poweroff within %.0f s, killing it", s.name, timeout)
            _kill(self.init_pid(s), signal.SIGKILL)
            _kill(self.nspawn_pid(s), signal.SIGKILL)
            _kill(self.supervisor_pid(s), signal.SIGKILL)
            wait_for(f"{s.name} to die", gone, 15)
        self._clear_cgroups(s, remove=False)
        shutil.rmtree(PROPAGATE_DIR / s.name, ignore_errors=True)

    def orphaned_cluster(self) -> str | None:
        """What the servers hold of a cluster that no stack of the lab describes (left by `pulumi destroy`, which
        keeps PostgreSQL and its data), or None."""
        from components.paths import MEMBERS_STATE  # the product's own path

        if stacks_with_resources(self.dir):
            return None
        holding = [
            s.name for s in LAB_SERVERS if self.exec(s.name, ["test", "-s", MEMBERS_STATE], timeout=15).returncode == 0
        ]
        if not holding:
            return None
        return f"{', '.join(holding)} hold a cluster ({MEMBERS_STATE}) that no stack of the lab describes"

    def _healthy(self, s: Server) -> bool:
        return (
            self.is_running(s.name)
            and self.system_state(s) in ("running", "degraded")
            and net.cable_is_up(s)
            and f"{s.address}/24" in net.addresses(s)
            and self.ssh(s.name, "true", timeout=15).returncode == 0
        )

    def _parallel(self, fn: Callable[[Server], object], servers: Sequence[Server]) -> None:
        errors: list[BaseException] = []

        def target(s: Server) -> None:
            try:
                fn(s)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=target, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise LabError("; ".join(str(e) for e in errors))

    def _lab_present(self) -> bool:
        return (
            net.ns_exists(SWITCH_NS)
            or any(net.ns_exists(s.netns) for s in ALL_SERVERS)
            or self._any_mounted()
            or any(self.supervisor_pid(s) is not None for s in ALL_SERVERS)
        )

    # ------------------------------------------------------------------ verbs
    def up(self, *, keep: bool = False) -> None:
        """Bring the lab up. From a lab that is down: FRESH servers (new overlays) unless keep=True.

        If the lab is (partly) up, repair it instead: recreate missing network pieces, re-plug cables, boot
        stopped servers on their existing overlays. Does nothing if every server is already healthy.
        """
        self._require_root()
        self.check_host_tools()
        t0 = time.monotonic()
        with self._locked():
            present = self._lab_present()
            if present and net.ns_exists(SWITCH_NS) and all(self._healthy(s) for s in LAB_SERVERS):
                orphaned = self.orphaned_cluster()
                if orphaned is None:
                    log.info("up: lab already up and healthy, nothing to do")
                    return
                # A new stack refuses a cluster it did not create (the hot-standby check's first run); in the lab
                # nothing of it is worth keeping, so `make demo` after `make test` starts from fresh servers.
                log.info("up: %s: fresh servers", orphaned)
                self.reset()
                return
            self.image.ensure(in_use=self._any_mounted())
            self.ensure_ssh_key()
            fresh = not present and not keep
            if fresh:
                # The stack's state described the old servers: a new one starts empty (remote commands cannot
                # notice that a server was rebuilt, so a stale state would make `up` skip the provisioning).
                forget_stack_state(self.dir)
            net.ensure_switch()
            for s in LAB_SERVERS:
                net.ensure_server_net(s, cable_up=True)
                self._mount_overlay(s, fresh=fresh)
            self.write_known_hosts()
            todo = [s for s in LAB_SERVERS if not self.is_running(s.name)]
            for s in todo:
                self._spawn(s)
            states = {}
            for s in LAB_SERVERS:
                states[s.name] = self._wait_ready(s)
            what = "fresh" if fresh else "repaired" if present else "kept"
            summary = ", ".join(f"{n} {st}" for n, st in states.items())
            log.info("up: lab %s in %.1f s (booted %d): %s", what, time.monotonic() - t0, len(todo), summary)

    def down(self, *, purge: bool = False) -> None:
        """Power every server off and remove namespaces, mounts, cgroups and runtime files (purge: overlays too)."""
        self._require_root()
        t0 = time.monotonic()
        with self._locked():
            self._parallel(self._stop, ALL_SERVERS)
            for s in ALL_SERVERS:
                self._clear_cgroups(s, remove=True)
                self._umount_overlay(s)
            for s in SPARE_SERVERS:  # added servers do not outlive the lab (`up` brings the three back)
                shutil.rmtree(self.paths(s).root, ignore_errors=True)
            for h in CGROUP_HIERARCHIES:
                with contextlib.suppress(FileNotFoundError):
                    (CGROUP_ROOT / h / CGROUP_SLICE).rmdir()
            net.teardown()
            shutil.rmtree(self.dir / "run", ignore_errors=True)
            if purge:
                shutil.rmtree(self.dir / "servers", ignore_errors=True)
                forget_stack_state(self.dir)
            log.info("down: lab down in %.1f s%s", time.monotonic() - t0, " (overlays purged)" if purge else "")

    def reset(self) -> None:
        """Fresh servers: down, then up with new overlays."""
        with self._locked():
            self.down()
            self.up()

    @from_host_namespaces
    def start(self, node: str) -> None:
        """Boot a stopped or crashed server (its overlay is kept), re-adding its fixed address."""
        self._require_root()
        s = get_server(node)
        t0 = time.monotonic()
        with self._locked():
            if self.is_running(node):
                log.info("start: %s is already running", node)
                return
            st = self._boot(s, cable_up=False)
            log.info("start: %s booted (%s) in %.1f s", node, st, time.monotonic() - t0)

    def _boot(self, s: Server, *, cable_up: bool) -> str:
        """Network, overlay (kept if it exists, else fresh), known hosts; boot unless running; wait until ready."""
        self.ensure_ssh_key()
        net.ensure_switch()
        net.ensure_server_net(s, cable_up=cable_up)
        self._mount_overlay(s, fresh=False)  # no overlay yet (a server being added): a fresh one
        self.write_known_hosts()
        if not self.is_running(s.name):
            self._spawn(s)
        return self._wait_ready(s)

    @from_host_namespaces
    def stop(self, node: str) -> None:
        """Clean poweroff of one server (it stays off: no reboot), then its NIC goes dark like a crashed one."""
        self._require_root()
        s = get_server(node)
        with self._locked():
            self._stop(s)
            net.link_dead(s)
            log.info("stop: %s powered off, link down, addresses flushed", node)

    @from_host_namespaces
    def crash(self, node: str) -> None:
        """Power loss: its link goes down and loses its addresses (and the VIP), then its init is SIGKILLed."""
        self._require_root()
        s = get_server(node)
        with self._locked():
            p = self.paths(s)
            pid = self.init_pid(s)
            if p.run.is_dir():
                p.stop_flag.touch()
            held = [a for a in net.addresses(s) if a.startswith(f"{VIP}/")]
            # The link first: a server losing power sends nothing more. Killed with its link up, its kernel closed
            # every socket with a FIN or RST that told the peers (and the watchdog) at once, faster than a real crash.
            net.link_dead(s)
            _kill(pid, signal.SIGKILL)
            wait_for(
                f"{node}'s supervisor to exit after the crash",
                lambda: self.supervisor_pid(s) is None and self.nspawn_pid(s) is None,
                20,
            )
            self._clear_cgroups(s, remove=False)
            shutil.rmtree(PROPAGATE_DIR / node, ignore_errors=True)
            was = f"init pid {pid} killed" if pid else "was not running"
            log.info("crash: %s %s, link down, addresses flushed%s", node, was, " (it held the VIP)" if held else "")

    def reboot(self, node: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Clean reboot from inside (systemctl reboot); the supervisor boots it again. Waits until it is ready."""
        self._require_root()
        s = get_server(node)
        t0 = time.monotonic()
        with self._locked():
            old = self.init_pid(s)
            if old is None:
                raise LabError(f"{node} is not running")
            self.exec(node, ["systemctl", "reboot"], timeout=30)
            wait_for(f"{node} to boot again", lambda: self.init_pid(s) not in (None, old), timeout, interval=0.2)
            st = self._wait_ready(s, timeout)
            log.info("reboot: %s rebooted (%s) in %.1f s", node, st, time.monotonic() - t0)

    def partition(self, node: str) -> None:
        """Cable pull: the server's port on the switch goes down (the server itself keeps running)."""
        s = get_server(node)
        self._require_switch()
        net.set_cable(s, up=False)
        log.info("partition: %s cut off (switch port %s down)", node, s.switch_port)

    def split(self, node: str, peers: list[str]) -> None:
        """Partial partition: the switch drops everything between node and peers; its other links stay up (e.g.
        the database nodes lose the node while the repository host, Prometheus, still reaches it)."""
        s = get_server(node)
        self._require_switch()
        net.split(s, [get_server(p) for p in peers])
        log.info("split: %s cut off from %s (other links up)", node, ", ".join(peers))

    def heal(self, node: str) -> None:
        s = get_server(node)
        self._require_switch()
        net.set_cable(s, up=True)
        if s.switch_port in net.split_ports():
            net.heal_split()
        log.info("heal: %s reconnected (switch port %s up, no split)", node, s.switch_port)

    def stop_service(self, node: str, unit: str) -> None:
        self.exec(node, ["systemctl", "stop", unit], check=True)
        log.info("stop-service: %s stopped on %s", unit, node)

    def start_service(self, node: str, unit: str) -> None:
        self.exec(node, ["systemctl", "start", unit], check=True)
        log.info("start-service: %s started on %s", unit, node)

    def vip_holders(self) -> list[str]:
        """Names of the servers whose enp0s8 holds the VIP (normally zero or one)."""
        return [s.name for s in self.members() if any(a.startswith(f"{VIP}/") for a in net.addresses(s))]

    @from_host_namespaces
    def mirror(self) -> None:
        """The signed apt repository of the newest PostgreSQL packages (built in the host namespaces)."""
        from . import mirror  # late: the image module's apt queries are only needed here

        built = mirror.build(self.dir)
        log.info("mirror: %s holds %s", built.directory, ", ".join(f"{p} {v}" for p, v in built.versions.items()))

    # ---------------------------------------------------------------- the lab API's questions
    @property
    def stack(self) -> str:
        """The stack file whose config the lab stack runs ($PGHA_STACK, else lab: drill j applies lab-sync)."""
        return os.environ.get(STACK_ENV, "lab")

    def stack_config(self) -> ClusterConfig:
        from components.stack import load_stack_config  # the program's own config reader and defaults

        return load_stack_config(self.stack)

    def stack_outputs(self) -> dict[str, Any]:
        from .engine import LabStack  # late: `python -m lab.engine` must not be imported by the package first

        return LabStack(directory=self.dir / "pulumi", echo=False).outputs(show_secrets=True)

    @property
    def report_file(self) -> Path:
        return self.dir / "drills-report.json"

    def problem(self) -> str | None:
        if os.geteuid() != 0:
            return "the lab needs root (network namespaces, overlay mounts, systemd-nspawn)"
        missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
        if missing:
            return f"missing host tools: {', '.join(missing)} (make host-deps)"
        if not net.in_namespace(SWITCH_NS):
            return f"run inside the lab namespace: ip netns exec {SWITCH_NS} .venv/bin/pytest ..."
        if not any(self.is_running(s.name) for s in SERVERS):
            return "the lab is down (make lab-up) and not provisioned (make lab-provision)"
        return None

    def address_of(self, node: str) -> str:
        return get_server(node).address

    def node_of(self, address: str) -> str | None:
        return next((s.name for s in ALL_SERVERS if address in (s.address, s.name)), None)

    def members(self) -> list[Server]:
        """The lab's servers: the three, plus the added ones (server4, server5) while they exist."""
        return [*SERVERS, *(s for s in SPARE_SERVERS if self.paths(s).root.is_dir())]

    @from_host_namespaces
    def add(self, node: str) -> None:
        """A new, empty server (server4 or server5) on the lab's switch: fresh overlay, booted, ssh answering."""
        self._require_root()
        s = get_server(node)
        if s not in SPARE_SERVERS:
            raise LabError(
                f"add: {node} is one of the lab's three servers; add takes {', '.join(x.name for x in SPARE_SERVERS)}"
            )
        t0 = time.monotonic()
        with self._locked():
            self._require_switch()
            if self.paths(s).root.is_dir() and self._healthy(s):
                log.info("add: %s is already in the lab and healthy", node)
                return
            st = self._boot(s, cable_up=True)
            log.info("add: %s booted (%s) in %.1f s", node, st, time.monotonic() - t0)

    @from_host_namespaces
    def remove(self, node: str) -> None:
        """Power an added server off and delete it: overlay, namespace, cable (the opposite of add)."""
        self._require_root()
        s = get_server(node)
        if s not in SPARE_SERVERS:
            raise LabError(f"remove: {node} is one of the lab's three servers (use stop or down)")
        with self._locked():
            self._stop(s)
            self._clear_cgroups(s, remove=True)
            self._umount_overlay(s)
            net.remove_server_net(s)
            shutil.rmtree(self.paths(s).root, ignore_errors=True)
            self.write_known_hosts()
            log.info("remove: %s powered off and deleted", node)

    def status(self) -> list[ServerStatus]:
        result = []
        split = net.split_ports()
        for s in self.members():
            addrs = net.addresses(s)
            pid = self.init_pid(s)
            result.append(
                ServerStatus(
                    name=s.name,
                    running=pid is not None,
                    state=self.system_state(s) if pid is not None else "stopped",
                    address=s.address,
                    addresses=addrs,
                    cable_up=net.cable_is_up(s) and s.switch_port not in split,
                    vip=any(a.startswith(f"{VIP}/") for a in addrs),
                    memory_mib=self.memory_mib(s) if pid is not None else None,
                    init_pid=pid,
                )
            )
        return result

    def _require_switch(self) -> None:
        self._require_root()
        if not net.ns_exists(SWITCH_NS):
            raise LabError(f"namespace {SWITCH_NS} does not exist: the lab is down (python -m lab up)")
