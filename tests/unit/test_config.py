"""Bad stack input fails before anything is created, with a message naming the key."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from components.config import PROFILES, ClusterConfig, ConfigError, parse_config
from components.pg_settings import settings_for, value_problem
from components.stack import declared_keys, load_stack_config, stack_file_values

LAB_NODES = [
    {"name": "server1", "address": "10.213.8.11"},
    {"name": "server2", "address": "10.213.8.12"},
    {"name": "server3", "address": "10.213.8.13"},
]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQ1mAzHjPIbt9+FTrM1CUXRq51X36r2GE4ec8kPaL8t test"


def base(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"sshPublicKeys": [KEY]}
    raw.update(overrides)
    return raw


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        (base(vip="10.9.9.9"), "pgpool-ha:vip", "outside subnet 192.168.137.0/24"),
        (base(vip="192.168.137.12"), "pgpool-ha:vip", "node server2's address"),
        (base(vip="192.168.137.0"), "pgpool-ha:vip", "network address"),
        (base(vip="192.168.137.255"), "pgpool-ha:vip", "broadcast address"),
        (base(vip="192.168.137.1"), "pgpool-ha:vip", "gateway address"),
        (base(dhcpRange="192.168.137.100-192.168.137.200"), "pgpool-ha:vip", "inside dhcpRange"),
        (base(dhcpRange="192.168.137.10-192.168.137.20", vip="192.168.137.150"), "pgpool-ha:dhcpRange", "server1"),
        (
            base(
                nodes=[*LAB_NODES[:2], {"name": "server1", "address": "10.213.8.14"}],
                subnet="10.213.8.0/24",
                vip="10.213.8.100",
            ),
            "pgpool-ha:nodes",
            "duplicate node name 'server1'",
        ),
        (
            base(
                nodes=[*LAB_NODES[:2], {"name": "server3", "address": "10.213.8.12"}],
                subnet="10.213.8.0/24",
                vip="10.213.8.100",
            ),
            "pgpool-ha:nodes",
            "duplicate node address 10.213.8.12",
        ),
        (
            base(
                nodes=[*LAB_NODES[:2], {"name": "server3", "address": "10.9.8.13"}],
                subnet="10.213.8.0/24",
                vip="10.213.8.100",
            ),
            "pgpool-ha:nodes[2].address",
            "outside subnet",
        ),
        (base(nodes=LAB_NODES[:2], subnet="10.213.8.0/24", vip="10.213.8.100"), "pgpool-ha:nodes", "at least 3"),
        (
            base(
                nodes=[*LAB_NODES, {"name": "server4", "address": "10.213.8.14"}],
                subnet="10.213.8.0/24",
                vip="10.213.8.100",
            ),
            "pgpool-ha:nodes",
            "odd count",
        ),
        (base(vipInterface="enp0s8:0"), "pgpool-ha:vipInterface", "interface name"),
        (base(vipInterface="a-very-long-interface"), "pgpool-ha:vipInterface", "interface name"),
        (base(vipInterface="eth 0"), "pgpool-ha:vipInterface", "interface name"),
        (base(packageSource="pgdg"), "pgpool-ha:pgpool.version", "PGDG repository carries only pgpool-II 4.7"),
        (base(postgresql={"version": 16}), "pgpool-ha:postgresql.version/pgpool.version", "debian-12 ships"),
        (base(libvirt={"memoryMib": 512}), "pgpool-ha:libvirt.memoryMib", "below the minimum"),
        (base(libvirt={"diskGib": 4}), "pgpool-ha:libvirt.diskGib", "below the minimum"),
        (base(sshPublicKeys=["ssh-ed25519 not-base64!"]), "pgpool-ha:sshPublicKeys", "not valid base64"),
        (base(sshPublicKeys=["hello world"]), "pgpool-ha:sshPublicKeys", "not an OpenSSH public key"),
        (base(sshPublicKeys=["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAA"]), "pgpool-ha:sshPublicKeys", "does not match"),
        (base(sshPublicKeys=[]), "pgpool-ha:sshPublicKeys", "at least one key"),
        (base(postgresPassword="hunter2"), "pgpool-ha:postgresPassword", "clear text"),
        (base(pcpPassword="hunter2"), "pgpool-ha:pcpPassword", "--secret pcpPassword"),
        (base(pgpool={"version": "4.0"}), "pgpool-ha:pgpool.version", "not supported"),
        (base(pgpool={"prot": 9999}), "pgpool-ha:pgpool.prot", "Extra inputs are not permitted"),
        (base(subnet="10.0.0.0/33"), "pgpool-ha:subnet", ""),
        (base(nodes=[{"name": "Server_1", "address": "192.168.137.11"}]), "pgpool-ha:nodes[0].name", "host name"),
        (
            base(
                nodes=[
                    {**n, "libvirtUri": f"qemu+ssh://hv{i}/system"}
                    for i, n in enumerate([{"name": f"s{i}", "address": f"192.168.137.{11 + i}"} for i in range(3)])
                ]
            ),
            "pgpool-ha:libvirt.clusterBridge",
            "several hypervisors",
        ),
        (base(packageMirror={"url": "ftp://mirror/debian", "suite": "./"}), "pgpool-ha:packageMirror.url", "http"),
        (base(packageMirror={"url": "http://m/debian", "suite": "bookworm"}), "pgpool-ha:packageMirror", "components"),
        (
            base(packageMirror={"url": "http://m/", "suite": "./", "components": ["main"]}),
            "pgpool-ha:packageMirror",
            "flat repository",
        ),
        (
            base(packageMirror={"url": "http://m/", "suite": "./", "publicKey": "ssh-ed25519 AAAA"}),
            "pgpool-ha:packageMirror.publicKey",
            "OpenPGP",
        ),
        (
            base(packageSource="preinstalled", packageMirror={"url": "http://m/", "suite": "./"}),
            "pgpool-ha:packageMirror",
            "only used with packageSource 'distribution'",
        ),
        (base(postgresql={"parameters": {"wal_level": "logical"}}), "pgpool-ha:postgresql.parameters", "managed"),
        (base(postgresql={"parameters": {"Shared-Buffers": 1}}), "pgpool-ha:postgresql.parameters", "setting name"),
        (base(postgresql={"parameters": ["shared_buffers"]}), "pgpool-ha:postgresql.parameters", "a mapping"),
        (base(postgresql={"parameters": {"work_mem": "4MB\nport = 1"}}), "pgpool-ha:postgresql.parameters", "lines"),
        (base(postgresql={"packageVersion": "15.20;rm"}), "pgpool-ha:postgresql.packageVersion", "Debian package"),
        (base(postgresql={"packageVersion": "16.1-1"}), "pgpool-ha:postgresql", "packageVersion '16.1-1' is not"),
        (base(pgpool={"packageVersion": "4.4.2-1"}), "pgpool-ha:pgpool", "not a pgpool-II 4.3 version"),
        (base(libvirt={"tcgCacheMib": 128}), "pgpool-ha:libvirt.tcgCacheMib", "domainType 'qemu'"),
        (base(libvirt={"domainType": "qemu", "tcgCacheMib": 4}), "pgpool-ha:libvirt.tcgCacheMib", "16"),
    ],
)
def test_bad_input_names_the_key(raw: dict[str, Any], key: str, words: str) -> None:
    message = error_of(raw)
    assert f"{key}:" in message, message
    assert words in message, message


def test_problems_are_reported_together() -> None:
    message = error_of(base(postgresPassword="x", libvirt={"memoryMib": 10}, vipInterface="a:b"))
    assert "pgpool-ha:vipInterface:" in message
    assert "pgpool-ha:postgresPassword:" in message
    assert "pgpool-ha:libvirt.memoryMib:" in message
    cross = error_of(base(vip="10.9.9.9", sshPublicKeys=[]))
    assert "pgpool-ha:vip:" in cross and "pgpool-ha:sshPublicKeys:" in cross


def test_an_unreadable_key_name_is_quoted_and_the_refusal_stays_one_line_per_problem() -> None:
    # "\x1e" is a line boundary for str.splitlines(): unquoted, it split the refusal into a line naming no key.
    message = error_of(base(backup={"\x1e": None, " host": "x"}))
    lines = message.splitlines()[1:]
    assert "  pgpool-ha:backup['\\x1e']: Extra inputs are not permitted" in lines, lines
    assert "  pgpool-ha:backup[' host']: Extra inputs are not permitted" in lines, lines
    assert all(line.startswith("  pgpool-ha:backup") for line in lines), lines


def test_defaults_are_the_walkthrough_cluster_with_the_vip_inside_the_subnet() -> None:
    config = parse_config(base())
    assert [n.name for n in config.nodes] == ["server1", "server2", "server3"]
    assert config.vip in config.subnet
    assert config.vip_interface == "enp0s8"
    assert config.pgpool.timing == PROFILES["walkthrough"]
    assert config.pgpool.timing.health_check_period == 5 and config.pgpool.timing.wd_heartbeat_deadtime == 30


def test_tuned_profile_and_explicit_tuning() -> None:
    assert parse_config(base(pgpool={"profile": "tuned"})).pgpool.timing.health_check_period == 1
    custom = parse_config(base(pgpool={"tuning": {"healthCheckPeriod": 2}}))
    assert custom.pgpool.timing.health_check_period == 2
    with pytest.raises(ConfigError, match=r"pgpool-ha:pgpool.tuning: .*Deadtime must be longer"):
        parse_config(base(pgpool={"tuning": {"wdHeartbeatDeadtime": 1, "wdHeartbeatKeepalive": 2}}))


def test_every_model_field_is_declared_in_pulumi_yaml_with_the_same_default() -> None:
    declared = declared_keys()
    for name, field in ClusterConfig.model_fields.items():
        alias = field.alias or name
        assert alias in declared, f"Pulumi.yaml does not declare {alias}"
        assert declared[alias].get("description"), f"{alias} has no description"
        default = declared[alias].get("default")
        if default in ("", [], {}):
            continue  # "not set": the model's own default applies
        value = field.default
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv4Network):
            value = str(value)
        assert default == value, f"{alias}: Pulumi.yaml default {default!r} != program default {value!r}"
    for secret in ("postgresPassword", "replicationPassword", "pgpoolPassword", "pcpPassword", "sshPrivateKey"):
        assert declared[secret]["default"] == "", f"{secret} must be optional and never defaulted"


@pytest.mark.parametrize("stack", ["dev", "prod", "lab"])
def test_stack_files_are_valid_and_hold_no_clear_text_secret(stack: str) -> None:
    config = load_stack_config(stack)
    assert len(config.nodes) == 3
    for key, value in stack_file_values(stack).items():
        if key.endswith("Password") or key == "sshPrivateKey":
            assert isinstance(value, dict) and "secure" in value, f"{stack}: {key} is in clear text"


def test_vmlab_stack_with_the_keys_the_lab_adds() -> None:
    values = {k: v for k, v in stack_file_values("vmlab").items()}
    values["sshPublicKeys"] = [KEY]
    config = parse_config(values)
    assert config.libvirt.domain_type == "qemu" and config.libvirt.tcg_cache_mib == 128
    assert config.package_mirror is not None and config.package_mirror.source_line == "deb http://10.213.17.1:8081/ ./"
    suite = parse_config(base(packageMirror={"url": "https://mirror.example/debian", "suite": "bookworm",
                                             "components": ["main", "contrib"]}))  # fmt: skip
    assert suite.package_mirror is not None
    assert suite.package_mirror.source_line == "deb https://mirror.example/debian/ bookworm main contrib"


def test_stack_per_environment_same_program_other_config() -> None:
    dev, prod = load_stack_config("dev"), load_stack_config("prod")
    assert len(dev.hypervisor_uris) == 1
    assert len(prod.hypervisor_uris) == 4  # three database nodes and the backup repository, one hypervisor each
    assert prod.libvirt.memory_mib > dev.libvirt.memory_mib
    assert prod.postgresql.synchronous_replication and not dev.postgresql.synchronous_replication


def test_unknown_key_in_a_stack_file(tmp_path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((declared_keys.__globals__["PROJECT_DIR"] / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.typo.yaml").write_text("config:\n  pgpool-ha:vipp: 1.2.3.4\n")
    with pytest.raises(ConfigError, match=r"pgpool-ha:vipp: not a key this program reads"):
        load_stack_config("typo", tmp_path)


BACKUP_HOST = {"name": "backup", "address": "192.168.137.19"}


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        # Two services on one port of a host.
        (
            base(pgpool={"pcpPort": 5432}),
            "pgpool-ha:pgpool.pcpPort",
            "port 5432 for pgpool's PCP is also the port of PostgreSQL (postgresql.port)",
        ),
        (base(pgpool={"heartbeatPort": 9000}), "pgpool-ha:pgpool.heartbeatPort", "port 9000 for pgpool's heartbeat"),
        (
            base(backup={"host": BACKUP_HOST}, pgpool={"port": 9719}),
            "pgpool-ha:pgpool.port",
            "pgpool2_exporter (fixed) on the database nodes",
        ),
        (
            base(postgresql={"port": 22}),
            "pgpool-ha:postgresql.port",
            "port 22 for PostgreSQL is also the port of ssh (fixed)",
        ),
        (
            base(mode="existing", backup={"host": BACKUP_HOST}, existingHosts={"sshPort": 9090}),
            "pgpool-ha:existingHosts.sshPort",
            "port 9090 for ssh is also the port of Prometheus (fixed) on the backup repository host",
        ),
        # pgpool's pool against PostgreSQL's connection limit.
        (
            base(pgpool={"numInitChildren": 100}),
            "pgpool-ha:pgpool.numInitChildren",
            "100 children need 107 connections",
        ),
        (
            base(postgresql={"parameters": {"max_connections": 30}}),
            "pgpool-ha:pgpool.numInitChildren",
            "more than the 27 max_connections (30) - superuser_reserved_connections (3) allows",
        ),
        (
            base(postgresql={"parameters": {"max_connections": 10, "superuser_reserved_connections": 10}}),
            "pgpool-ha:postgresql.parameters.superuser_reserved_connections",
            "10 is not less than max_connections (10)",
        ),
        # Backup schedules, as systemd parses them.
        (
            base(backup={"host": BACKUP_HOST, "fullSchedule": "Sun *-*-* 25:00:00"}),
            "pgpool-ha:backup.fullSchedule",
            "'Sun *-*-* 25:00:00' is not a systemd calendar expression",
        ),
        (
            base(backup={"host": BACKUP_HOST, "diffSchedule": "2020-01-01"}),
            "pgpool-ha:backup.diffSchedule",
            "'2020-01-01' never elapses",
        ),
        (
            base(backup={"host": BACKUP_HOST, "diffSchedule": "--help"}),
            "pgpool-ha:backup.diffSchedule",
            "'--help' is not a systemd",
        ),
        # PostgreSQL settings, against PostgreSQL 15's own definitions.
        (
            base(postgresql={"parameters": {"work_mem": "5XB"}}),
            "pgpool-ha:postgresql.parameters.work_mem",
            "'5XB' is not a memory size; PostgreSQL 15 accepts an integer in kB or a value with B, kB, MB, GB, TB "
            "(64 .. 2147483647 kB)",
        ),
        (
            base(postgresql={"parameters": {"work_mem": "32kB"}}),
            "pgpool-ha:postgresql.parameters.work_mem",
            "'32kB' is 32 kB, out of range",
        ),
        (
            base(postgresql={"parameters": {"shared_buffers": "64kB"}}),
            "pgpool-ha:postgresql.parameters.shared_buffers",
            "'64kB' is 8 x 8kB, out of range; PostgreSQL 15 accepts an integer in blocks of 8kB",
        ),
        (
            base(postgresql={"parameters": {"statement_timeout": "5 fortnights"}}),
            "pgpool-ha:postgresql.parameters.statement_timeout",
            "is not a duration; PostgreSQL 15 accepts an integer in ms or a value with us, ms, s, min, h, d",
        ),
        (
            base(postgresql={"parameters": {"max_connections": "100MB"}}),
            "pgpool-ha:postgresql.parameters.max_connections",
            "'100MB' is not an integer; PostgreSQL 15 accepts an integer (1 .. 262143)",
        ),
        (
            base(postgresql={"parameters": {"random_page_cost": -1}}),
            "pgpool-ha:postgresql.parameters.random_page_cost",
            "-1 is -1, out of range; PostgreSQL 15 accepts a number (0 ..",
        ),
        (
            base(postgresql={"parameters": {"enable_seqscan": "maybe"}}),
            "pgpool-ha:postgresql.parameters.enable_seqscan",
            "'maybe' is not a boolean",
        ),
        (
            base(postgresql={"parameters": {"huge_pages": "sometimes"}}),
            "pgpool-ha:postgresql.parameters.huge_pages",
            "'sometimes' is not one of the values; PostgreSQL 15 accepts one of off, on, try (any case)",
        ),
        (
            base(postgresql={"parameters": {"work_mem": True}}),
            "pgpool-ha:postgresql.parameters.work_mem",
            "true (written as on) is not a memory size",
        ),
        (
            base(postgresql={"parameters": {"shared_buffer": "1GB"}}),
            "pgpool-ha:postgresql.parameters.shared_buffer",
            "not a PostgreSQL 15 setting",
        ),
        (
            base(postgresql={"parameters": {"wal_segment_size": 1024}}),
            "pgpool-ha:postgresql.parameters.wal_segment_size",
            "fixed when PostgreSQL 15 is built or the cluster is created",
        ),
        (
            base(osRelease="ubuntu-24.04", postgresql={"version": 16, "parameters": {"work_mem": "4MB"}}),
            "pgpool-ha:postgresql.parameters",
            "no settings data for PostgreSQL 16",
        ),
        # What a mode needs present, in a form it can use.
        (base(libvirt={"uri": ""}), "pgpool-ha:libvirt.uri", "'' is not a libvirt URI"),
        (
            base(libvirt={"baseImage": "debian.qcow2"}),
            "pgpool-ha:libvirt.baseImage",
            "neither an http(s) URL nor an absolute path",
        ),
        (base(libvirt={"pool": "my pool"}), "pgpool-ha:libvirt.pool", "not a libvirt name"),
        (base(adminUser="Admin User"), "pgpool-ha:adminUser", "not a user name"),
        (base(mode="existing", existingHosts={"sshUser": ""}), "pgpool-ha:existingHosts.sshUser", "not a user name"),
        (
            base(mode="existing", existingHosts={"sshPrivateKeyPath": " "}),
            "pgpool-ha:existingHosts.sshPrivateKeyPath",
            "not a file path",
        ),
        (
            base(
                nodes=[{**LAB_NODES[0], "libvirtUri": "hv-a"}, *LAB_NODES[1:]],
                subnet="10.213.8.0/24",
                vip="10.213.8.100",
            ),
            "pgpool-ha:nodes[0].libvirtUri",
            "not a libvirt URI",
        ),
    ],
)
def test_conflicting_or_unusable_values_name_the_key_and_value(raw: dict[str, Any], key: str, words: str) -> None:
    message = error_of(raw)
    assert f"{key}: " in message, message
    assert words in message, message


@pytest.mark.parametrize(
    "parameters",
    [
        {"shared_buffers": "128MB", "work_mem": "4MB", "effective_cache_size": "1.5GB", "maintenance_work_mem": 65536},
        {"statement_timeout": "5min", "idle_in_transaction_session_timeout": "1h", "vacuum_cost_delay": "2ms"},
        {"huge_pages": "YES", "constraint_exclusion": "Partition", "jit": False, "log_min_duration_statement": -1},
        {"random_page_cost": 1.1, "seq_page_cost": "1e0", "enable_seqscan": "of", "log_connections": "TRUE"},
        {"max_connections": 200, "superuser_reserved_connections": 5, "work_mem": "0x400", "temp_buffers": "8 MB"},
        {"pg_stat_statements.max": 10000, "shared_preload_libraries": "pg_stat_statements", "datestyle": "ISO, DMY"},
    ],
)
def test_values_postgresql_takes_are_accepted(parameters: dict[str, Any]) -> None:
    config = parse_config(base(postgresql={"parameters": parameters}))
    assert dict(config.postgresql.parameters) == parameters


@pytest.mark.parametrize("stack", ["dev", "prod", "lab", "lab-fast", "lab-sync", "lab-walkthrough"])
def test_every_shipped_stack_loads(stack: str) -> None:
    assert len(load_stack_config(stack).nodes) == 3


def test_the_calendar_subset_when_systemd_analyze_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from components import validation

    monkeypatch.setattr(validation.shutil, "which", lambda name: None)
    validation.calendar_problem.cache_clear()
    try:
        for good in ("Sun *-*-* 01:00:00", "Mon..Sat *-*-* 01:00:00", "daily", "*-*-1 03:30", "Mon,Wed 02:00"):
            assert validation.calendar_problem(good) is None, good
        problem = validation.calendar_problem("every sunday")
        assert problem is not None and "systemd-analyze is not on this machine" in problem
    finally:
        validation.calendar_problem.cache_clear()


POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.skipif(not (POSTGRES_15 / "postgres").is_file(), reason="needs PostgreSQL 15's binaries (postgresql-15)")
def test_the_value_check_agrees_with_postgresql_15() -> None:
    """The parser follows guc.c: ask the real server (`postgres -C name -c name=value` parses the value as a config
    line at start) about values of each type and unit, and compare."""
    with tempfile.TemporaryDirectory(prefix="pg15-values-") as work:
        _compare_with_postgresql_15(Path(work))


def _compare_with_postgresql_15(work: Path) -> None:
    # root runs the server as postgres (a directory of its own in /tmp: pytest's tmp_path is root's alone).
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(work, "postgres")
    data = work / "data"
    subprocess.run([*user, str(POSTGRES_15 / "initdb"), "-D", str(data)], capture_output=True, check=True, timeout=120)
    # One setting per type and unit, values at the edges of guc.c's parsing (a server start each: kept few).
    names = ["work_mem", "shared_buffers", "statement_timeout", "random_page_cost", "enable_seqscan", "huge_pages"]
    values = ["128MB", "5XB", "0x10", "1.5GB", "8 MB", "08", "1e3", "of", "YES"]
    settings = settings_for(15)
    assert settings is not None
    disagreements = []
    for name, value in itertools.product(names, values):
        probe = [*user, str(POSTGRES_15 / "postgres"), "-D", str(data), "-C", name, "-c", f"{name}={value}"]
        postgresql_takes = subprocess.run(probe, capture_output=True, check=False, timeout=60).returncode == 0
        we_take = value_problem(settings[name], value, 15) is None
        if postgresql_takes != we_take:
            disagreements.append((name, value, postgresql_takes))
    assert disagreements == []


@pytest.mark.parametrize("major", [15, 17])
def test_each_settings_file_comes_from_the_server_of_its_major(major: int) -> None:
    """The data is what scripts/pg_settings_data.py read from a real server of that major, not written by hand."""
    data = Path(__file__).resolve().parents[2] / "components" / "data"
    document = json.loads((data / f"postgresql-{major}-settings.json").read_text())
    assert document["generator"] == "scripts/pg_settings_data.py"
    assert document["generated_from"].startswith(f"postgres (PostgreSQL) {major}."), document["generated_from"]
    settings = settings_for(major)
    assert settings is not None and len(settings) > 300
    assert settings["max_connections"].context == "postmaster"


def pgdg_17(parameters: dict[str, Any]) -> dict[str, Any]:
    return base(packageSource="pgdg", postgresql={"version": 17, "parameters": parameters}, pgpool={"version": "4.7"})


def test_postgresql_17_parameters_are_checked_against_postgresql_17() -> None:
    # transaction_timeout and summarize_wal are new in PostgreSQL 17: taken for 17, refused for 15.
    new_in_17 = {"transaction_timeout": "30s", "summarize_wal": True}
    config = parse_config(pgdg_17(new_in_17))
    assert dict(config.postgresql.parameters) == new_in_17
    assert "postgresql.parameters.transaction_timeout: not a PostgreSQL 15 setting" in error_of(
        base(postgresql={"parameters": new_in_17})
    )
    # 17's own bounds and enums apply: a negative timeout and an unknown huge_pages value are refused.
    assert "postgresql.parameters.transaction_timeout" in error_of(pgdg_17({"transaction_timeout": -1}))
    assert "PostgreSQL 17 accepts" in error_of(pgdg_17({"huge_pages": "sometimes"}))
