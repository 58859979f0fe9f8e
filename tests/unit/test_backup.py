"""Backups (pgBackRest): the repository host's config, files and steps, WAL archiving on every node, pgha-restore."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.config import ClusterConfig, ConfigError, Monitoring, parse_config
from components.plan import provisioning_plan
from components.render import render_node_files
from components.services import parse_settings

from .test_render import FAKE, debian12, stack

BACKUP = {"host": {"name": "db-backup", "address": "10.9.0.19"}}


def with_backup(**backup: Any) -> ClusterConfig:
    return debian12(backup={**BACKUP, **backup})


def files(config: ClusterConfig, host_name: str) -> dict[str, str]:
    host = next(h for h in config.all_hosts if h.name == host_name)
    return {f.path: f.content for f in render_node_files(config, host, FAKE)}


@pytest.mark.parametrize(
    ("backup", "key", "words"),
    [
        ({"host": {"name": "db-backup", "address": "10.8.0.19"}}, "pgpool-ha:backup.host.address", "outside subnet"),
        ({"host": {"name": "db-a", "address": "10.9.0.19"}}, "pgpool-ha:backup.host.name", "database node's name"),
        ({"host": {"name": "db-backup", "address": "10.9.0.12"}}, "pgpool-ha:backup.host.address", "node db-b's"),
        ({"host": {"name": "db-backup", "address": "10.9.0.50"}}, "pgpool-ha:backup.host.address", "is the vip"),
        ({**BACKUP, "fullSchedule": "Sun; rm -rf /"}, "pgpool-ha:backup.fullSchedule", "calendar"),
        ({**BACKUP, "archivePushQueueMax": "lots"}, "pgpool-ha:backup.archivePushQueueMax", "not a size"),
        ({**BACKUP, "retentionFull": 0}, "pgpool-ha:backup.retentionFull", "greater than or equal to 1"),
        ({"address": "10.9.0.19"}, "pgpool-ha:backup.host", "Field required"),
        ({**BACKUP, "rebuildFromRepositoryGib": -1}, "pgpool-ha:backup.rebuildFromRepositoryGib", "greater than or"),
    ],
)
def test_bad_backup_config_names_the_key(backup: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        debian12(backup=backup)
    line = next(line for line in str(caught.value).splitlines() if line.strip().startswith(key))
    assert words in line


def test_no_backup_no_archiving_no_repository() -> None:
    config = debian12()
    assert config.backup is None and config.all_hosts == config.nodes
    node = files(config, "db-a")
    settings = parse_settings(node["/etc/postgresql/15/main/conf.d/pgha.conf"])
    assert settings["archive_mode"] == "off" and "archive_command" not in settings
    assert not any("pgbackrest" in path for path in node)
    assert "PGHA_POOL" not in node["/etc/sudoers.d/pgha-postgres"]
    assert not any(step.node not in {"db-a", "db-b", "db-c"} for step in provisioning_plan(config))


def test_every_node_archives_to_the_repository_whatever_its_role() -> None:
    config = with_backup()
    for name in ("db-a", "db-b", "db-c"):
        node = files(config, name)
        settings = parse_settings(node["/etc/postgresql/15/main/conf.d/pgha.conf"])
        assert settings["archive_mode"] == "on"
        assert settings["archive_command"] == "'pgbackrest --stanza=pgha archive-push %p'"
        conf = node["/etc/pgbackrest/pgbackrest.conf"]
        assert "repo1-host=db-backup\n" in conf and "repo1-host-user=pgbackrest\n" in conf
        assert "archive-push-queue-max=4GiB\n" in conf and "[pgha]\npg1-path=/var/lib/postgresql/15/main\n" in conf
        assert "10.9.0.19\tdb-backup" in node["/etc/hosts"]
        ssh = node["/var/lib/postgresql/.ssh/config"]
        assert "Host db-backup 10.9.0.19\n\tUser pgbackrest\n" in ssh
        assert "/usr/bin/systemctl stop pgpool2" in node["/etc/sudoers.d/pgha-postgres"]


def test_the_repository_host_names_every_node_and_gets_no_database_files() -> None:
    config = with_backup(retentionFull=3)
    repo = files(config, "db-backup")
    conf = repo["/etc/pgbackrest/pgbackrest.conf"]
    assert "repo1-path=/var/lib/pgbackrest\n" in conf and "repo1-retention-full=3\n" in conf
    for i, name in enumerate(("db-a", "db-b", "db-c"), start=1):
        assert f"pg{i}-host={name}\npg{i}-host-user=postgres\npg{i}-path=/var/lib/postgresql/15/main\n" in conf
    assert "repo1-host" not in conf
    assert not any(p.startswith(("/etc/pgpool2", "/etc/postgresql", "/var/lib/postgresql")) for p in repo)
    # ssh, and (monitoring on by default with a repository host) node_exporter, Prometheus, Alertmanager.
    assert "elements = { 22, 9100, 9090, 9093 }" in repo["/etc/nftables.conf"]
    assert "9694" not in repo["/etc/nftables.conf"] and "9999" not in repo["/etc/nftables.conf"]
    quiet = files(with_backup().model_copy(update={"monitoring": Monitoring(enabled=False)}), "db-backup")
    assert "elements = { 22 }" in quiet["/etc/nftables.conf"] and "/etc/prometheus/prometheus.yml" not in quiet
    assert repo["/home/pgbackrest/.ssh/authorized_keys"].strip() == FAKE.postgres_ssh_public_key
    timer = repo["/etc/systemd/system/pgha-backup-full.timer"]
    assert "OnCalendar=Sun *-*-* 01:00:00\n" in timer and "Unit=pgha-backup@full.service" in timer
    assert (
        "ExecStart=/usr/bin/pgbackrest --stanza=pgha --type=%i backup"
        in repo["/etc/systemd/system/pgha-backup@.service"]
    )
    assert "NODES=(db-a db-b db-c)" in repo["/usr/local/sbin/pgha-restore"]


def test_repository_steps_wait_for_what_they_use() -> None:
    steps = provisioning_plan(with_backup())
    order = {s.ref: i for i, s in enumerate(steps)}
    by_ref = {s.ref: s for s in steps}
    stanza = order["db-backup/backup-stanza"]
    # The stanza is created once every node runs with its archive settings (after the last restart step).
    for node in ("db-a", "db-b", "db-c"):
        for name in ("cluster-member", "postgresql-restart", "postgresql-switchover", "ssh-known-hosts"):
            assert order[f"{node}/{name}"] < stanza
        # Each node pins the repository's host key once the repository host answered.
        assert "db-backup/packages" in by_ref[f"{node}/ssh-known-hosts"].after
        assert f"{node}/packages" in by_ref["db-backup/ssh-known-hosts"].after
    # A change the nodes refuse (phase-0 checks) writes nothing on the repository host either (found in a lifecycle
    # run: a refused reorder of `nodes` had rewritten the repository's pgbackrest.conf).
    for node in ("db-a", "db-b", "db-c"):
        for check in ("membership-check", "hot-standby-check"):
            assert f"{node}/{check}" in by_ref["db-backup/directories"].after
    assert order["db-backup/backup-schedule"] > stanza
    assert by_ref["db-backup/backup-schedule"].delete is not None  # destroy stops the timers, keeps the backups
    secret_steps = {s.name for s in steps if s.node == "db-backup" and s.secret}
    assert secret_steps == {"file-home-pgbackrest-ssh-authorized_keys", "file-home-pgbackrest-ssh-id_ed25519"}


def test_a_schedule_change_touches_only_the_timer_and_the_schedule_step() -> None:
    before = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(with_backup())}
    after = {
        s.ref: (s.create, s.stdin(FAKE) if s.stdin else None)
        for s in provisioning_plan(with_backup(diffSchedule="*-*-* 03:00:00"))
    }
    changed = sorted(ref for ref in before if before[ref] != after[ref])
    assert changed == ["db-backup/backup-schedule", "db-backup/file-etc-systemd-system-pgha-backup-difftimer"]


def test_turning_backups_on_restarts_postgresql_one_node_at_a_time() -> None:
    """archive_mode needs a restart: the rolling restart and switchover steps carry it."""
    off = {s.ref: s.create for s in provisioning_plan(debian12())}
    on = {s.ref: s.create for s in provisioning_plan(with_backup())}
    for ref in ("db-a/postgresql-restart", "db-c/postgresql-switchover"):
        assert "archive_mode=off" in off[ref] and "archive_mode=on" in on[ref]


def _restore_script(tmp_path: Path) -> Path:
    script = tmp_path / "pgha-restore"
    script.write_text(files(with_backup(), "db-backup")["/usr/local/sbin/pgha-restore"])
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "2026-11-27 03:00:00+00", "--latest"], "exclude each other"),
        (["--time", "not a time"], "is not a time"),
        (["--latest", "--primary", "db-x"], "--primary db-x is not one of: db-a db-b db-c"),
        (["--bogus"], "unknown argument --bogus"),
    ],
)
def test_restore_refuses_bad_arguments_before_touching_anything(tmp_path: Path, args, message) -> None:
    result = subprocess.run([_restore_script(tmp_path), *args], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0
    assert message in result.stderr


def test_restore_without_a_target_prints_its_usage(tmp_path: Path) -> None:
    result = subprocess.run([_restore_script(tmp_path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert "pgha-restore --time" in result.stderr and "--latest" in result.stderr


def test_lab_stack_has_a_repository_host_outside_the_database_nodes() -> None:
    config = stack("lab")
    assert config.backup is not None
    assert config.backup.host.name == "backup" and str(config.backup.host.address) == "10.213.8.19"
    assert config.backup.host not in config.nodes


def test_backup_absent_from_raw_config_means_none() -> None:
    raw = {
        "mode": "existing",
        "subnet": "10.9.0.0/24",
        "nodes": [{"name": f"n{i}", "address": f"10.9.0.1{i}"} for i in range(3)],
        "vip": "10.9.0.50",
    }
    assert parse_config(raw).backup is None


def test_the_rebuild_threshold_reaches_the_scripts_in_bytes() -> None:
    settings = files(with_backup(rebuildFromRepositoryGib=2.5), "db-a")["/usr/local/lib/pgha/pg-make-standby"]
    assert f"REBUILD_FROM_REPOSITORY_BYTES={int(2.5 * 1024**3)}" in settings
    assert "STANZA=" in settings and "STANZA=\n" not in settings
    plain = {f.path: f.content for f in render_node_files(debian12(), debian12().nodes[0], FAKE)}
    assert "STANZA=\n" in plain["/usr/local/lib/pgha/pg-make-standby"]  # no repository: always pg_basebackup
