"""Small helpers: logging, running commands, bounded waits."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger("lab")

T = TypeVar("T")


class LabError(RuntimeError):
    """Any lab failure with a message meant for humans."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise LabError with the command and its stderr."""
    try:
        cp = subprocess.run(
            list(argv),
            check=False,
            text=True,
            capture_output=capture,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout} s: {shlex.join(argv)}") from e
    except FileNotFoundError as e:
        raise LabError(f"command not found: {argv[0]} (install the packages in lab/host-packages.txt)") from e
    if check and cp.returncode != 0:
        err = (cp.stderr or "").strip() if capture else ""
        raise LabError(f"command failed (rc {cp.returncode}): {shlex.join(argv)}" + (f": {err}" if err else ""))
    return cp


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Call probe until it returns something other than None/False; raise LabError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
