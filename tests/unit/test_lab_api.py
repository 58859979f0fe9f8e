"""The lab API (lab.api): one setting picks the back-end; both back-ends offer every verb. No root, no lab."""

from __future__ import annotations

import inspect

import pytest

from lab.api import LAB_ENV, LabBackend, command_argv, lab_kind
from lab.core import Lab
from lab.vm.backend import VmLab, agent_ipv4


def protocol_members() -> set[str]:
    return {n for n in dir(LabBackend) if not n.startswith("_")} | set(LabBackend.__annotations__)


@pytest.mark.parametrize("backend", [Lab, VmLab])
def test_each_backend_offers_every_verb_of_the_api(backend: type) -> None:
    missing = sorted(n for n in protocol_members() if not hasattr(backend, n))
    assert missing == []
    for name in ("exec", "ssh", "split", "stop_service"):
        api = list(inspect.signature(getattr(LabBackend, name)).parameters)
        assert list(inspect.signature(getattr(backend, name)).parameters)[: len(api)] == api, name


def test_the_backend_is_chosen_by_one_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAB_ENV, raising=False)
    assert lab_kind() == "container"
    monkeypatch.setenv(LAB_ENV, "vm")
    assert lab_kind() == "vm"
    monkeypatch.setenv(LAB_ENV, "qemu")
    with pytest.raises(ValueError, match="container, vm"):
        lab_kind()


def test_a_str_command_runs_under_a_shell_a_list_as_is() -> None:
    assert command_argv("a && b") == ["/bin/sh", "-c", "a && b"]
    assert command_argv(["systemctl", "stop", "x"]) == ["systemctl", "stop", "x"]


def test_guest_agent_addresses_include_the_vip_on_the_second_line() -> None:
    out = (
        " enp0s8     52:54:00:aa:bb:01    ipv4         10.213.16.11/24\n"
        " -          -                    ipv4         10.213.16.100/24\n"
        " -          -                    ipv6         fe80::5054:ff:feaa:bb01/64\n"
    )
    assert agent_ipv4(out) == ["10.213.16.11/24", "10.213.16.100/24"]
