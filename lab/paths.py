"""Where each server's files, runtime state and cgroups live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Server

CGROUP_ROOT = Path("/sys/fs/cgroup")
# One cgroup per server in each of these hierarchies, so three --keep-unit containers never share one.
CGROUP_HIERARCHIES = ("systemd", "unified", "memory")
CGROUP_SLICE = "pgha-lab.slice"


@dataclass(frozen=True)
class ServerPaths:
    lab_dir: Path
    server: Server

    @property
    def root(self) -> Path:
        return self.lab_dir / "servers" / self.server.name

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def run(self) -> Path:
        return self.lab_dir / "run" / self.server.name

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def nspawn_pid(self) -> Path:
        return self.run / "nspawn.pid"

    @property
    def stop_flag(self) -> Path:
        return self.run / "stop"

    @property
    def cgroups(self) -> list[Path]:
        leaf = f"pgha-lab-{self.server.name}.scope"
        return [CGROUP_ROOT / h / CGROUP_SLICE / leaf for h in CGROUP_HIERARCHIES]
