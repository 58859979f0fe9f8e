"""When a lab test cannot run: in CI it fails loudly; on a developer's machine it is skipped with the reason."""

from __future__ import annotations

import os
import shutil

import pytest


def lab_host_problem() -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "mmdebstrap", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make host-deps)"
    return None


def cannot_run(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"lab test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
