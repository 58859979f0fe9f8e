"""Every shipped stack's rendered files and plan are byte-identical to the recorded reference (see plan_reference)."""

from __future__ import annotations

import json

import pytest

from .plan_reference import REFERENCE, shipped_stacks, stack_digests

RECORDED = json.loads(REFERENCE.read_text())


def test_every_shipped_stack_has_a_reference() -> None:
    assert sorted(RECORDED) == shipped_stacks()


@pytest.mark.parametrize("stack", shipped_stacks())
def test_rendered_files_and_plan_match_the_reference(stack: str) -> None:
    current = stack_digests(stack)
    recorded = RECORDED[stack]
    changed_files = sorted(
        name
        for name in set(current["file_digests"]) | set(recorded["file_digests"])  # type: ignore[operator]
        if current["file_digests"].get(name) != recorded["file_digests"].get(name)  # type: ignore[attr-defined]
    )
    assert changed_files == [], f"{stack}: files differ from the reference"
    changed_steps = [
        (old, new) for old, new in zip(recorded["step_digests"], current["step_digests"], strict=False) if old != new
    ]
    assert changed_steps == [], f"{stack}: steps differ from the reference"
    assert len(current["step_digests"]) == len(recorded["step_digests"])  # type: ignore[arg-type]
    assert current["plan"] == recorded["plan"]
    assert current["files"] == recorded["files"]
