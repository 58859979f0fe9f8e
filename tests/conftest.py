"""What every lab test session shares: the order of the lifecycle, the markers derived from it, the measurements.

The lab tests carry `phase(NAME)` (a module's `pytestmark`); one session of `make lifecycle` runs them in the order
of PHASES whatever the paths given, stable within a phase (a file's definition order; the drills in DRILL_ORDER):

    provision   tests/lifecycle/test_provision.py   fresh lab: preview --diff, an interrupted up, recovery, secrets
    drills      tests/ha/                           alerts m1-m3, HA drills a-l, restores r1-r3 (tests/ha/conftest.py)
    changes     tests/lifecycle/test_changes.py     no-op up, refresh, a reloadable and restart-only changes
    passwords   tests/lifecycle/test_passwords.py   rotated passwords
    scaling     tests/lifecycle/test_scaling.py     3 -> 5 -> 3 nodes (slow)
    upgrade     tests/lifecycle/test_upgrade.py     a PostgreSQL package upgrade
    destroy     tests/lifecycle/test_destroy.py     destroy, twice

Each such test also gets the markers `lab`, `lifecycle` and `phase_NAME`, and a `drill(LETTER)` test `drill_LETTER`,
so that `pytest -m` selects them: `-m lifecycle` (everything, in order), `-m "lifecycle and not phase_drills"` (the
engine's lifecycle without the drills), `-m phase_drills`, `-m drill_g`, `-m "lifecycle and not slow"` (without the
five-node scale tests and the restores). `lab_infra` (tests/lab_infra: it resets the lab and takes it down) is
deselected unless `-m` names it (pyproject.toml's addopts: -m "not lab_infra").

Measurements (the `report` fixture): a drill's to $LAB_DIR/drills-report.json, the others' to
$LAB_DIR/lifecycle-report.json, and both to the terminal summary. The time each phase and each lab test took (setup,
call and teardown) goes to the summary and to $LAB_DIR/lifecycle-times.json: where a run's minutes go.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from tests.labpolicy import REPORTS, print_report, report_entry

PHASES = ("provision", "drills", "changes", "passwords", "scaling", "upgrade", "destroy")
# The drills in the order they have always run (each starts from a healthy cluster, but what the previous ones left
# behind, and so the measured times, depend on it): the alerts, a-l with n after c (i and j last: j re-provisions the
# lab twice), then the restores.
DRILL_ORDER = ("m1", "m2", "m3", "a", "b", "c", "n", "d", "e", "f", "g", "h", "k", "l", "i", "j", "r1", "r2", "r3")


def phase_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("phase")
    if mark is None:
        return None
    if len(mark.args) != 1 or mark.args[0] not in PHASES:
        raise pytest.UsageError(f"{item.nodeid}: phase must be one of {PHASES}, not {mark.args}")
    return str(mark.args[0])


def drill_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("drill")
    if mark is None:
        return None
    if len(mark.args) != 1 or mark.args[0] not in DRILL_ORDER:
        raise pytest.UsageError(f"{item.nodeid}: drill must be one of {DRILL_ORDER}, not {mark.args}")
    return str(mark.args[0])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before -m deselects: the derived markers, then the lifecycle's order (stable: sorted() keeps the rest)."""

    def key(item: pytest.Item) -> tuple[int, int]:
        phase = phase_of(item)
        if phase is None:
            return (-1, 0)  # not a lifecycle test: order untouched, ahead of any lifecycle test
        drill = drill_of(item)
        return (PHASES.index(phase), DRILL_ORDER.index(drill) if drill else -1)

    for item in items:
        phase = phase_of(item)
        if phase is None:
            continue
        for name in ("lab", "lifecycle", f"phase_{phase}"):
            item.add_marker(name)
        drill = drill_of(item)
        if drill:
            item.add_marker(f"drill_{drill}")
    items[:] = sorted(items, key=key)


# Seconds per lab test (setup + call + teardown) and per phase, in the order they ran.
TEST_SECONDS: dict[str, float] = defaultdict(float)
PHASE_SECONDS: dict[str, float] = defaultdict(float)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    phase = next((m.removeprefix("phase_") for m in report.keywords if m.startswith("phase_")), None)
    if phase is None:
        return
    TEST_SECONDS[report.nodeid] += report.duration
    PHASE_SECONDS[phase] += report.duration


def print_times(terminalreporter: Any, path: Any) -> None:
    if not PHASE_SECONDS:
        return
    terminalreporter.section("lab test time per phase (seconds)")
    for phase, seconds in PHASE_SECONDS.items():
        terminalreporter.write_line(f"{phase}: {seconds:.1f}")
    terminalreporter.write_line(f"total: {sum(PHASE_SECONDS.values()):.1f}")
    slowest = sorted(TEST_SECONDS.items(), key=lambda kv: kv[1], reverse=True)[:10]
    terminalreporter.write_line("slowest: " + "; ".join(f"{node.split('::')[-1]} {sec:.1f}" for node, sec in slowest))
    times = {"phases": dict(PHASE_SECONDS), "tests": dict(TEST_SECONDS)}
    try:
        path.write_text(json.dumps(times, indent=2) + "\n")
        terminalreporter.write_line(f"written to {path}")
    except OSError:
        pass


@pytest.fixture
def report(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Measurements of the running test, shown in the summary and written to its phase's report file."""
    kind = "drills" if phase_of(request.node) == "drills" else "lifecycle"
    return report_entry(REPORTS[kind], request)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from lab.api import current_lab
    from lab.config import lab_dir

    drills_file = current_lab().report_file  # the back-end's: the VM lab's figures never overwrite the containers'
    print_report(terminalreporter, "drill measurements (seconds)", REPORTS["drills"], drills_file)
    print_report(
        terminalreporter, "lifecycle measurements (seconds)", REPORTS["lifecycle"], lab_dir() / "lifecycle-report.json"
    )
    print_times(terminalreporter, lab_dir() / "lifecycle-times.json")
