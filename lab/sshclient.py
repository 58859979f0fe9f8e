"""The admin's ssh command line, shared by both lab back-ends: key only, no agent, pinned host keys, no prompt."""

from __future__ import annotations

from pathlib import Path


def ssh_argv(
    key: Path,
    known_hosts: Path,
    destination: str,
    *,
    pin: str = "yes",
    connect_timeout: int = 5,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """ssh to destination (user@address). pin: StrictHostKeyChecking (yes: the lab wrote the host keys; accept-new:
    the first answer is kept, for machines whose keys only cloud-init knows)."""
    options = {
        "IdentitiesOnly": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": pin,
        "BatchMode": "yes",
        "ConnectTimeout": str(connect_timeout),
        "LogLevel": "ERROR",
    }
    argv = ["ssh", "-i", str(key)]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, *extra, destination]
