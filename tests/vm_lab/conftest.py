"""The VM lab's tests need its session (tests/vm_lab/session.py, loaded with `-p tests.vm_lab.session` by
`python -m lab.vm test`): without it they cannot run, and say how to run them."""

from __future__ import annotations

import sys

import pytest

from tests.labpolicy import cannot_run

if "tests.vm_lab.session" not in sys.modules:

    @pytest.fixture(scope="session")
    def vm_lab() -> None:
        cannot_run("the VM lab's checks run in its session: make test-vm-lab (python -m lab.vm test -- TESTS)")
