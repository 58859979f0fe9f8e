"""Where a secret must never be: the engine's state and output, the servers' process lists, files others can read.

The secret values come from the stack itself (`pulumi stack export --show-secrets`): every password the program
generated and every private key it holds. Searching is done with the values as fixed strings, fed on stdin (never as
arguments, which would put them in a process list while we look).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import SERVERS
from .core import Lab

# The engine's marker of a secret value in an exported deployment.
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
# Resource outputs that hold generated secret material.
SECRET_OUTPUTS = {
    "random:index/randomPassword:RandomPassword": ("result",),
    "tls:index/privateKey:PrivateKey": ("privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"),
}
# Directories a server's secrets could leak into (configs, homes, logs, scratch space).
SCAN_DIRS = (
    "/etc",
    "/var/lib/postgresql",
    "/var/lib/pgha",
    "/var/lib/pgpool",
    "/var/log",
    "/home",
    "/root",
    "/tmp",
    "/var/tmp",
    "/usr/local",
    "/run",
)


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
        return json.loads(value["plaintext"]) if "plaintext" in value else None
    return value


def needles(value: str) -> list[str]:
    """Fixed strings that identify a secret: the value itself, or for a key each long line of its body."""
    if "PRIVATE KEY" in value:
        return [line.strip() for line in value.splitlines() if len(line.strip()) >= 40 and "PRIVATE KEY" not in line]
    return [value] if len(value) >= 12 else []


def stack_secrets(export_with_secrets: dict[str, Any], extra: tuple[str, ...] = ()) -> list[str]:
    """Needles of every generated password and private key of the stack (+ extra values, e.g. the admin key)."""
    found: list[str] = []
    for resource in export_with_secrets.get("deployment", {}).get("resources") or []:
        keys = SECRET_OUTPUTS.get(resource.get("type", ""), ())
        outputs = resource.get("outputs") or {}
        for key in keys:
            value = _plain(outputs.get(key))
            if isinstance(value, str):
                found.extend(needles(value))
    for value in extra:
        found.extend(needles(value))
    return sorted(set(found))


def leaks_in(text: str, secrets: list[str]) -> list[str]:
    """Which secrets appear in text (reported by their first 4 characters only)."""
    return [f"{s[:4]}..." for s in secrets if s in text]


def readable_files_with_secrets(lab: Lab, node: str, secrets: list[str]) -> list[str]:
    """Files on node that others may read (o+r) and that contain any secret."""
    script = (
        f"find {' '.join(SCAN_DIRS)} -xdev -type f -perm -o+r -size -2M -print0 2>/dev/null"
        " | xargs -0 -r grep -lF -f /dev/stdin 2>/dev/null || true"
    )
    cp = lab.exec(node, ["/bin/bash", "-c", script], input="\n".join(secrets) + "\n", timeout=120)
    return [line for line in cp.stdout.splitlines() if line.strip()]


@contextmanager
def process_lists(lab: Lab, interval: float = 0.3, seconds: float = 900) -> Iterator[set[str]]:
    """Samples every running server's full process list (command lines) in the background; yields the set of
    distinct lines seen. Bounded by `seconds`."""
    seen: set[str] = set()
    stop = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            for s in SERVERS:
                if not lab.is_running(s.name):
                    continue
                cp = lab.exec(s.name, ["ps", "-eww", "-o", "args="], timeout=10)
                seen.update(line.strip() for line in cp.stdout.splitlines())
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="ps-sampler", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(30)
