"""When a lab test cannot run: in CI it fails loudly; on a developer's machine it is skipped with the reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# The lab tests' measurements by report file: a drill's (drills-report.json), the others' (lifecycle-report.json).
REPORTS: dict[str, dict[str, Any]] = {"drills": {}, "lifecycle": {}}


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


def in_namespace(name: str) -> bool:
    """This process runs inside the named network namespace (ip netns exec NAME ...)."""
    try:
        return os.stat(f"/run/netns/{name}").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def print_report(terminalreporter: Any, title: str, report: dict[str, Any], path: Path) -> None:
    """Measurements of a lab test session: to the terminal summary and to a JSON file beside the lab."""
    if not report:
        return
    terminalreporter.section(title)
    for name, values in report.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, default=str)}")
    try:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        terminalreporter.write_line(f"written to {path}")
    except OSError:
        pass


def report_entry(report: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fresh dict in `report` under the running test's name: the test puts its measurements there."""
    entry: dict[str, Any] = {}
    report[request.node.name] = entry
    return entry
