"""Lab contract and pure helpers: no root, no containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.__main__ import build_parser
from lab.config import ALL_SERVERS, BASE_PACKAGES, SERVERS, SPARE_SERVERS, get_server
from lab.image import recipe_hash
from lab.paths import ServerPaths
from lab.supervisor import nspawn_argv


def test_fixed_addresses_macs_and_namespaces() -> None:
    assert [(s.name, s.netns, s.address, s.mac) for s in SERVERS] == [
        ("server1", "pghalab-s1", "10.213.8.11", "52:54:00:d8:08:0b"),
        ("server2", "pghalab-s2", "10.213.8.12", "52:54:00:d8:08:0c"),
        ("server3", "pghalab-s3", "10.213.8.13", "52:54:00:d8:08:0d"),
    ]
    # The two the lab adds for scaling 3 -> 5 follow the same pattern on the same subnet.
    assert [(s.name, s.address, s.mac) for s in SPARE_SERVERS] == [
        ("server4", "10.213.8.14", "52:54:00:d8:08:0e"),
        ("server5", "10.213.8.15", "52:54:00:d8:08:0f"),
    ]
    assert all(len(s.switch_port) <= 15 for s in ALL_SERVERS)  # Linux interface name limit


def test_unknown_node_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="server1, server2, server3, backup, server4, server5"):
        get_server("server6")


def test_recipe_hash_is_stable_and_covers_packages() -> None:
    assert recipe_hash() == recipe_hash()
    assert {"pgpool2", "postgresql-15-pgpool2", "openssh-server", "iputils-arping"} <= set(BASE_PACKAGES)


def test_nspawn_command_line() -> None:
    p = ServerPaths(Path("/x"), get_server("server2"))
    argv = nspawn_argv(p)
    assert argv[:3] == ["nsenter", "--net=/run/netns/pghalab-s2", "systemd-nspawn"]
    for flag in (
        "--boot",
        "--directory=/x/servers/server2/merged",
        "--machine=server2",
        "--hostname=server2",
        "--register=no",
        "--keep-unit",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ):
        assert flag in argv
    assert not any(a.startswith("--network") for a in argv)


def test_cgroups_are_per_server() -> None:
    cgs = {str(cg) for s in SERVERS for cg in ServerPaths(Path("/x"), s).cgroups}
    assert len(cgs) == 9


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["up"], "up"),
        (["down", "--purge"], "down"),
        (["ssh", "server1", "--", "sudo", "-n", "true"], "ssh"),
        (["exec", "server3", "--", "ip", "-br", "a"], "exec"),
        (["client", "--", "psql", "-h", "10.213.8.100"], "client"),
        (["stop-service", "server2", "pgpool2"], "stop-service"),
    ],
)
def test_cli_parses(argv: list[str], verb: str) -> None:
    assert build_parser().parse_args(argv).verb == verb


def test_writer_longest_gap_counts_outages_and_hung_writes() -> None:
    from lab.cluster import Attempt, WriterResult

    r = WriterResult(run="t")
    r.attempts = [
        Attempt(1, 0.0, 0.1, True),
        Attempt(2, 0.2, 0.3, True),
        Attempt(3, 0.4, 1.4, False),  # failed: the gap runs on
        Attempt(4, 1.5, 2.0, True),  # 2.0 - 0.3 = 1.7 s without a commit
        Attempt(5, 2.1, 5.0, True),  # hung, then committed: 3.0 s since the commit before, the longest gap
        Attempt(6, 5.1, 5.2, True),
    ]
    assert r.longest_gap(0.25, 6.0) == pytest.approx(3.0)
    assert r.longest_gap(0.25, 4.0) == pytest.approx(2.0)  # from the last commit before `until` to `until`
    assert r.outage(0.25) == (0.4, 2.0)
