"""Bad stack input fails before anything is created, with a message naming the key."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from components.config import PROFILES, ClusterConfig, ConfigError, parse_config
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
