"""Rendered server files: key settings, one pgpool.conf for all nodes, version-specific names, secrets kept apart."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from components.config import ClusterConfig, parse_config
from components.crypto import pgpool_aes
from components.render import (
    TEMPLATE_DIR,
    ServerFile,
    render_node_files,
    render_tree,
    server_path,
    template_paths,
)
from components.secrets import ClusterSecrets
from components.services import parse_settings, service_fingerprints
from components.stack import load_stack_config

# --- shared with test_scripts.py and test_plan.py: stacks and distinctive fake secrets ---

FAKE = ClusterSecrets(
    postgres_password="FakePostgresPw-7Q2x!'quote",
    replication_password="FakeReplPw-k93Ld:colon",
    pgpool_password="FakePgpoolPw-Z81mV",
    pcp_password="FakePcpPw-44PpQ",
    pgpool_key="FakePgpoolKey-Yt6bN0xW",
    watchdog_key="FakeWatchdogKey-Rr5uT1",
    postgres_ssh_private_key=(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nFakePrivateKeyBody-Hq3R\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    postgres_ssh_public_key="ssh-ed25519 AAAAFakePublicKeyBody-Jm2T postgres@pgha",
)
OTHER = ClusterSecrets(
    postgres_password="OtherPostgres",
    replication_password="OtherRepl",
    pgpool_password="OtherPgpool",
    pcp_password="OtherPcp",
    pgpool_key="OtherKey",
    watchdog_key="OtherWatchdogKey",
    postgres_ssh_private_key="OtherPrivate",
    postgres_ssh_public_key="ssh-ed25519 AAAAOther postgres@other",
)


def secret_values(secrets: ClusterSecrets = FAKE) -> list[str]:
    return [
        secrets.postgres_password,
        secrets.replication_password,
        secrets.pgpool_password,
        secrets.pcp_password,
        secrets.pgpool_key,
        secrets.watchdog_key,
        "FakePrivateKeyBody-Hq3R",
    ]


def stack(name: str) -> ClusterConfig:
    return load_stack_config(name)


def debian12(**overrides: Any) -> ClusterConfig:
    """A Debian 12 / PostgreSQL 15 / pgpool-II 4.3 stack of existing hosts."""
    raw: dict[str, Any] = {
        "mode": "existing",
        "osRelease": "debian-12",
        "packageSource": "distribution",
        "subnet": "10.9.0.0/24",
        "nodes": [
            {"name": "db-a", "address": "10.9.0.11"},
            {"name": "db-b", "address": "10.9.0.12"},
            {"name": "db-c", "address": "10.9.0.13"},
        ],
        "vip": "10.9.0.50",
        "vipInterface": "ens4",
        "postgresql": {"version": 15},
        "pgpool": {"version": "4.3"},
    }
    raw.update(overrides)
    return parse_config(raw)


def pgpool_version(version: str) -> ClusterConfig:
    return debian12(packageSource="preinstalled", pgpool={"version": version})


def files_of(config, node_index: int = 0, secrets: ClusterSecrets = FAKE) -> dict[str, ServerFile]:
    return {f.path: f for f in render_node_files(config, config.nodes[node_index], secrets)}


def pgpool_conf(config, node_index: int = 0) -> dict[str, str]:
    return parse_settings(files_of(config, node_index)["/etc/pgpool2/pgpool.conf"].content)


CONFIGS = {"dev": lambda: stack("dev"), "lab": lambda: stack("lab"), "debian12": debian12}


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return CONFIGS[request.param]()


def test_template_paths_map_to_server_paths_programmatically() -> None:
    config = debian12()
    paths = {server_path(t, config) for t in template_paths()}
    assert "/etc/pgpool2/pgpool.conf" in paths
    assert "/etc/postgresql/15/main/conf.d/pgha.conf" in paths
    assert "/var/lib/postgresql/15/main/recovery_1st_stage" in paths
    assert "/etc/systemd/system/postgresql@15-main.service.d/pgha-guard.conf" in paths
    assert not any("cloud-init" in t or t.startswith("partials/") for t in template_paths())
    for template in template_paths():
        assert (TEMPLATE_DIR / template).read_text().startswith("{#- pgha:"), template


def test_pgpool_conf_identical_on_every_node_node_id_distinct(config) -> None:
    confs = {files_of(config, i)["/etc/pgpool2/pgpool.conf"].content for i in range(len(config.nodes))}
    assert len(confs) == 1
    ids = [files_of(config, i)["/etc/pgpool2/pgpool_node_id"].content.strip() for i in range(len(config.nodes))]
    assert ids == [str(i) for i in range(len(config.nodes))]


def test_pgpool_conf_walkthrough_settings(config) -> None:
    s = pgpool_conf(config)
    t = config.pgpool.timing
    assert s["backend_clustering_mode"] == "'streaming_replication'"
    assert s["listen_addresses"] == "'*'" and s["port"] == "9999"
    assert s["pcp_port"] == "9898"
    for i, node in enumerate(config.nodes):
        assert s[f"backend_hostname{i}"] == f"'{node.name}'"
        assert s[f"backend_application_name{i}"] == f"'{node.name}'"
        assert s[f"backend_data_directory{i}"] == f"'/var/lib/postgresql/{config.postgresql.version}/main'"
        assert s[f"backend_flag{i}"] == "'ALLOW_TO_FAILOVER'"
        assert s[f"hostname{i}"] == f"'{node.name}'" and s[f"wd_port{i}"] == "9000" and s[f"pgpool_port{i}"] == "9999"
        assert s[f"heartbeat_hostname{i}"] == f"'{node.name}'" and s[f"heartbeat_port{i}"] == "9694"
        assert s[f"heartbeat_device{i}"] == "''"
    assert s["health_check_period"] == str(t.health_check_period)
    assert s["health_check_timeout"] == str(t.health_check_timeout)
    assert s["health_check_max_retries"] == str(t.health_check_max_retries)
    assert s["connect_timeout"] == str(t.connect_timeout_ms)
    assert s["wd_interval"] == str(t.wd_interval)
    assert s["wd_heartbeat_deadtime"] == str(t.wd_heartbeat_deadtime)
    assert s["sr_check_user"] == s["health_check_user"] == "'pgpool'"
    assert s["failover_command"] == "'/etc/pgpool2/scripts/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S'"
    assert s["follow_primary_command"] == "'/etc/pgpool2/scripts/follow_primary.sh %d %h %p %D %m %H %M %P %r %R'"
    assert s["wd_escalation_command"] == "'/etc/pgpool2/scripts/escalation.sh'"
    assert "sudo" not in s["failover_command"] + s["follow_primary_command"] + s["wd_escalation_command"]
    assert s["recovery_user"] == "'postgres'" and s["recovery_1st_stage_command"] == "'recovery_1st_stage'"
    assert s["enable_pool_hba"] == "on" and s["use_watchdog"] == "on"
    assert s["wd_lifecheck_method"] == "'heartbeat'"
    assert s["failover_when_quorum_exists"] == "on" and s["failover_require_consensus"] == "on"
    assert s["logging_collector"] == "on" and s["log_directory"] == "'/var/log/pgpool'"
    # Password settings live in the 0600 include, not in pgpool.conf.
    for key in ("health_check_password", "sr_check_password", "recovery_password"):
        assert key not in s
    assert s["include:'/etc/pgpool2/pgpool_secrets.conf'"]


def test_vip_commands_use_the_interface_and_the_subnet_prefix(config) -> None:
    s = pgpool_conf(config)
    dev, prefix = config.vip_interface, config.prefix_length
    assert s["if_up_cmd"] == f"'/usr/bin/sudo -n /usr/sbin/ip addr add $_IP_$/{prefix} dev {dev} label {dev}:0'"
    assert s["if_down_cmd"] == f"'/usr/bin/sudo -n /usr/sbin/ip addr del $_IP_$/{prefix} dev {dev}'"
    assert s["arping_cmd"] == f"'/usr/bin/sudo -n /usr/bin/arping -U $_IP_$ -w 1 -I {dev}'"
    sudoers = files_of(config)["/etc/sudoers.d/pgha-postgres"]
    assert sudoers.mode == "0440" and sudoers.validate == "visudo"
    assert f"/usr/sbin/ip addr add {config.vip}/{prefix} dev {dev} label {dev}\\:0" in sudoers.content
    assert f"/usr/bin/arping -U {config.vip} -w 1 -I {dev}" in sudoers.content
    assert "ALL=(ALL)" not in sudoers.content and "/bin/sh" not in sudoers.content


def test_version_specific_parameter_names() -> None:
    s43 = pgpool_conf(debian12())
    assert s43["delegate_IP"] == "'10.9.0.50'" and "delegate_ip" not in s43
    assert "socket_dir" in s43 and "logdir" in s43 and "work_dir" not in s43
    s44 = pgpool_conf(pgpool_version("4.4"))
    assert s44["delegate_ip"] == "'10.9.0.50'" and "delegate_IP" not in s44
    assert "unix_socket_directories" in s44 and "socket_dir" not in s44
    s47 = pgpool_conf(pgpool_version("4.7"))
    assert s47["work_dir"] == "'/var/lib/pgpool'" and "logdir" not in s47


def test_status_file_and_service_drop_in() -> None:
    config = debian12()
    assert pgpool_conf(config)["logdir"] == "'/var/lib/pgpool'"
    dropin = files_of(config)["/etc/systemd/system/pgpool2.service.d/pgha.conf"].content
    lines = dropin.splitlines()
    assert "ExecStart=" in lines and "ExecStart=/usr/sbin/pgpool -n" in lines
    assert not any(line.startswith("ExecStart=") and "-D" in line for line in lines)
    assert re.search(r"^TimeoutStopSec=\d+$", dropin, re.M)
    discard = debian12(pgpool={"version": "4.3", "discardStatusFile": True})
    assert (
        "ExecStart=/usr/sbin/pgpool -n -D"
        in files_of(discard)["/etc/systemd/system/pgpool2.service.d/pgha.conf"].content
    )


def test_distinct_watchdog_priority_with_tuned_profile() -> None:
    config = stack("lab")
    assert config.pgpool.timing.distinct_wd_priority
    prios = [files_of(config, i)["/etc/pgpool2/pgpool_local.conf"].content for i in range(3)]
    assert [p.strip().splitlines()[-1] for p in prios] == ["wd_priority = 3", "wd_priority = 2", "wd_priority = 1"]


def test_postgresql_config_complete_for_both_roles(config) -> None:
    files = files_of(config)
    v = config.postgresql.version
    s = parse_settings(files[f"/etc/postgresql/{v}/main/conf.d/pgha.conf"].content)
    assert s["wal_level"] == "replica" and s["hot_standby"] == "on" and s["wal_log_hints"] == "on"
    assert s["listen_addresses"] == "'*'"
    assert s["max_wal_senders"] == str(config.postgresql.max_wal_senders)
    assert s["max_replication_slots"] == str(config.postgresql.max_replication_slots)
    assert s["include_if_exists"] == f"'/etc/postgresql/{v}/main/pgha-standby.conf'"
    assert "archive_mode" in s
    hba = files[f"/etc/postgresql/{v}/main/pg_hba.conf"].content
    assert f"host    replication     repl            {config.subnet}" in hba
    assert "127.0.0.0/8" in hba
    assert "trust" not in hba.replace("# ", "") and " md5" not in hba
    rules = [line.split() for line in hba.splitlines() if line.startswith("host")]
    assert all(r[-1] == "scram-sha-256" for r in rules)
    assert all(r[3] in (str(config.subnet), "127.0.0.0/8", "::1/128") for r in rules)


def test_synchronous_replication_names_every_node() -> None:
    prod = stack("prod")
    s = parse_settings(files_of(prod)["/etc/postgresql/15/main/conf.d/pgha.conf"].content)
    assert s["synchronous_standby_names"] == '\'ANY 1 ("pg-a", "pg-b", "pg-c")\''
    assert (
        parse_settings(files_of(stack("dev"))["/etc/postgresql/15/main/conf.d/pgha.conf"].content)[
            "synchronous_standby_names"
        ]
        == "''"
    )


def test_secret_files_are_0600_and_marked_and_the_rest_hold_no_secret(config) -> None:
    files = files_of(config)
    for file in files.values():
        leaked = [value for value in secret_values() if value in file.content]
        if file.secret:
            assert file.mode == "0600", file.path
        else:
            assert not leaked, (file.path, leaked)
            other = files_of(config, 0, OTHER)[file.path]
            assert other.content == file.content, f"{file.path} depends on the secrets but is not marked secret"
    for path in (
        "/etc/pgpool2/pool_passwd",
        "/etc/pgpool2/pcp.conf",
        "/etc/pgpool2/pgpool_secrets.conf",
        "/var/lib/postgresql/.pgpass",
        "/var/lib/postgresql/.pcppass",
        "/var/lib/postgresql/.pgpoolkey",
        "/var/lib/postgresql/.ssh/id_ed25519",
    ):
        assert files[path].secret and files[path].mode == "0600" and files[path].owner == "postgres"


def test_pool_passwd_and_password_settings_are_pgpool_aes() -> None:
    files = files_of(debian12())
    key = FAKE.pgpool_key
    expected = pgpool_aes(FAKE.pgpool_password, key)
    assert f"pgpool:{expected}\n" in files["/etc/pgpool2/pool_passwd"].content
    secrets_conf = parse_settings(files["/etc/pgpool2/pgpool_secrets.conf"].content)
    assert secrets_conf["health_check_password"] == secrets_conf["sr_check_password"] == f"'{expected}'"
    assert secrets_conf["recovery_password"] == f"'{pgpool_aes(FAKE.postgres_password, key)}'"
    assert "AES" in files["/etc/pgpool2/pool_passwd"].content
    assert "scram-sha-256" in files["/etc/pgpool2/pool_hba.conf"].content


def test_pgpool_aes_matches_pg_enc() -> None:
    # `pg_enc -k <file holding "testkey\n"> testpassword` on Debian 12's pgpool2 4.3.5 printed this.
    assert pgpool_aes("testpassword", "testkey\n") == "AESLJXlZ8syvQ7duDNFxkUtyw=="
    assert pgpool_aes("testpassword", "testkey") == "AESLJXlZ8syvQ7duDNFxkUtyw=="


def test_data_directory_scripts_and_firewall(config) -> None:
    files = files_of(config)
    v = config.postgresql.version
    for name in ("recovery_1st_stage", "pgpool_remote_start"):
        f = files[f"/var/lib/postgresql/{v}/main/{name}"]
        assert f.mode == "0700" and f.owner == "postgres" and f.is_script
    nft = files["/etc/nftables.conf"]
    assert nft.validate == "nft"
    ports = re.search(r"elements = \{ ([^}]*) \}", nft.content)
    expected = [22, 5432, 9000, 9898, 9999]
    if config.monitoring_enabled:  # node_exporter, postgres_exporter, pgpool2_exporter, for Prometheus
        expected = sorted([*expected, 9100, 9187, 9719])
    assert ports and sorted(int(p) for p in ports[1].split(",")) == expected
    assert f"ip saddr {config.subnet} udp dport 9694 accept" in nft.content
    assert "policy drop" in nft.content


def test_firewall_can_be_turned_off_and_opens_pgpool_to_client_networks() -> None:
    off = debian12(firewall={"enabled": False})
    assert "/etc/nftables.conf" not in files_of(off)
    clients = debian12(firewall={"enabled": True, "clientNetworks": ["172.16.0.0/16"]})
    nft = files_of(clients)["/etc/nftables.conf"].content
    assert "ip saddr 172.16.0.0/16 tcp dport 9999 accept" in nft
    assert "172.16.0.0/16" in files_of(clients)["/etc/pgpool2/pool_hba.conf"].content


def test_reloadable_change_moves_only_the_reload_fingerprint() -> None:
    base = debian12(pgpool={"version": "4.3", "profile": "tuned"})
    tuned = base.pgpool.timing.model_copy(update={"health_check_period": 7})
    reload_cfg = base.model_copy(update={"pgpool": base.pgpool.model_copy(update={"tuning": tuned})})
    restart_cfg = base.model_copy(update={"pgpool": base.pgpool.model_copy(update={"num_init_children": 50})})

    def fps(config):
        return service_fingerprints(
            render_node_files(config, config.nodes[0], FAKE), "pgpool2", pgpool_version=config.pgpool.version
        )

    b, r, s = fps(base), fps(reload_cfg), fps(restart_cfg)
    assert b[0] == r[0] and b[1] != r[1]
    assert b[0] != s[0] and b[1] == s[1]


def test_render_tree_writes_every_node(tmp_path: Path) -> None:
    config = stack("dev")
    written = render_tree(config, ClusterSecrets.placeholders(), tmp_path)
    assert (tmp_path / "server2/etc/pgpool2/pgpool.conf").exists()
    assert (tmp_path / "server3/var/lib/postgresql/15/main/recovery_1st_stage").exists()
    per_host = [len(render_node_files(config, host, ClusterSecrets.placeholders())) for host in config.all_hosts]
    assert len(written) == sum(per_host) and len(per_host) == 4  # three nodes and the backup repository host
    assert (tmp_path / "backup/etc/pgbackrest/pgbackrest.conf").exists()
    key = tmp_path / "server1/var/lib/postgresql/.pgpoolkey"
    assert "<secret:pgpool_key>" in key.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_watchdog_key_is_a_secret_setting_whose_change_restarts_pgpool() -> None:
    """wd_authkey lives in the 0600 secrets include (never in pgpool.conf, shown in previews); pgpool reads it only
    at start, so a new key moves the restart fingerprint, while a new password moves only the reload one."""
    config = debian12(pgpool={"version": "4.3", "profile": "tuned"})
    files = files_of(config)
    secret_conf = files["/etc/pgpool2/pgpool_secrets.conf"]
    assert secret_conf.secret and secret_conf.mode == "0600"
    assert f"wd_authkey = '{FAKE.watchdog_key}'" in secret_conf.content
    assert "wd_authkey" not in files["/etc/pgpool2/pgpool.conf"].content

    def fps(secrets: ClusterSecrets) -> tuple[str, str]:
        return service_fingerprints(
            render_node_files(config, config.nodes[0], secrets),
            "pgpool2",
            pgpool_version=config.pgpool.version,
            secret=True,
        )

    base = fps(FAKE)
    new_key = fps(dataclasses.replace(FAKE, watchdog_key="AnotherWatchdogKey"))
    new_password = fps(dataclasses.replace(FAKE, pgpool_password="AnotherPgpoolPw"))
    assert new_key[0] != base[0] and new_key[1] == base[1]
    assert new_password[0] == base[0] and new_password[1] != base[1]


def test_scram_verifier_matches_rfc_7677() -> None:
    """RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil"): the server signature and the client proof
    computed from our verifier's keys are the RFC's, so PostgreSQL accepts "pencil" against the verifier."""
    import base64
    import hashlib
    import hmac

    from components.crypto import scram_sha256_verifier

    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256_verifier("pencil", salt)
    head, keys = verifier.split("$", 1)[1].split("$")
    assert (
        verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$") and head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    )
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    server_signature = hmac.new(server_key, auth, "sha256").digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    # The client's proof from the RFC, checked the way the server checks it: H(proof XOR signature) == StoredKey.
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.new(stored_key, auth, "sha256").digest(), strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


@pytest.mark.parametrize("version", ["4.3", "4.4", "4.5", "4.6", "4.7"])
def test_every_rendered_pgpool_parameter_exists_in_that_release(version: str) -> None:
    """pgpool-II logs an unknown parameter and goes on without it: every name the program writes must be one that
    release's source defines (data/pgpool-contexts.json; backend_*N and the node lists are arrays)."""
    import json

    from components.services import DATA_DIR

    known = json.loads((DATA_DIR / "pgpool-contexts.json").read_text())["contexts"][version]
    config = debian12() if version == "4.3" else pgpool_version(version)
    written = [
        name
        for file in ("/etc/pgpool2/pgpool.conf", "/etc/pgpool2/pgpool_local.conf", "/etc/pgpool2/pgpool_secrets.conf")
        for name in parse_settings(files_of(config)[file].content)
        if not name.startswith("include:")
    ]
    assert len(written) > 60
    unknown = [name for name in written if name.lower() not in known and name.rstrip("0123456789").lower() not in known]
    assert unknown == [], f"pgpool-II {version} has no parameter {unknown}"


@pytest.mark.parametrize(
    ("version", "setting", "reloads"),
    [
        ("4.3", "child_life_time", False),  # INIT in pgpool's source, whatever its docs said
        ("4.3", "connection_life_time", False),
        ("4.3", "log_rotation_age", False),
        ("4.6", "log_rotation_age", True),  # made reloadable in 4.6.0
        ("4.3", "health_check_period", True),
        ("4.6", "log_min_messages", True),
        ("4.3", "num_init_children", False),
        ("4.3", "backend_weight1", True),
        ("4.3", "backend_hostname1", False),  # an existing backend's address: restart (pgpool's docs)
        ("4.3", "wd_authkey", False),  # RELOAD in the parser, read by the watchdog at start
        ("4.3", "hostname1", False),  # a watchdog node list: its array is RELOAD in the parser, held to a restart
        ("4.3", "sr_check_period", True),
        ("4.3", "no_such_setting", False),
    ],
)
def test_reload_or_restart_follows_the_release_source(version: str, setting: str, reloads: bool) -> None:
    from components.services import pgpool_reloadable

    assert pgpool_reloadable(setting, version) is reloads
