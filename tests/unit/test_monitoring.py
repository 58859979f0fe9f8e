"""Monitoring: the rendered Prometheus config and alert rules pass promtool, and each alert fires on the series
that describe its fault, after its `for`, and not before (promtool test rules)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import ClusterConfig
from components.render import render_node_files

from .test_render import FAKE, debian12, stack

PROMTOOL = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "promtool"


@pytest.fixture(scope="module")
def promtool() -> Path:
    if not PROMTOOL.exists():
        reason = f"{PROMTOOL} missing: `make test-unit` extracts it (scripts/promtool.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return PROMTOOL


def repository_files(config: ClusterConfig) -> dict[str, str]:
    assert config.backup is not None
    return {f.path: f.content for f in render_node_files(config, config.backup.host, FAKE)}


def write_rules(tmp_path: Path, config: ClusterConfig) -> Path:
    rules = tmp_path / "pgha-rules.yml"
    rules.write_text(repository_files(config)["/etc/prometheus/pgha-rules.yml"])
    return rules


def run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_rules_and_config_pass_promtool_check(promtool: Path, tmp_path: Path) -> None:
    config = stack("lab")
    rules = write_rules(tmp_path, config)
    checked = run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "13 rules found" in checked.stdout
    prometheus = repository_files(config)["/etc/prometheus/prometheus.yml"]
    conf = tmp_path / "prometheus.yml"
    conf.write_text(prometheus.replace("/etc/prometheus/pgha-rules.yml", str(rules)))
    checked = run(promtool, "check", "config", str(conf), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scrape = yaml.safe_load(prometheus)["scrape_configs"]
    targets = {job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]] for job in scrape}
    assert targets["node"] == [f"10.213.8.{i}:9100" for i in (11, 12, 13, 19)]  # every node and the repository
    assert targets["postgres"] == [f"10.213.8.{i}:9187" for i in (11, 12, 13)]


def alert(name: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": lab} for lab in labels]}


def critical(**labels: str) -> dict[str, str]:
    return {"severity": "critical", **labels}


def warning(**labels: str) -> dict[str, str]:
    return {"severity": "warning", **labels}


def test_every_alert_fires_on_its_fault_and_only_after_its_delay(promtool: Path, tmp_path: Path) -> None:
    config = debian12(backup={"host": {"name": "db-backup", "address": "10.9.0.19"}}, monitoring={"detachedMinutes": 3})
    # Expressions, delays and labels are under test here; the annotations' templates pass `promtool check rules`.
    rules = yaml.safe_load(write_rules(tmp_path, config).read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "pgha-rules.yml").write_text(yaml.safe_dump(rules))
    p1 = {"node": "db-a", "job": "node", "instance": "10.9.0.11:9100"}
    p2 = {"node": "db-b", "job": "node", "instance": "10.9.0.12:9100"}
    p3 = {"node": "db-c", "job": "node", "instance": "10.9.0.13:9100"}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{inner}}}", "values": values}

    tests = [
        {  # a standby stops streaming (seen from the primary) at 20 s: firing 10 s later, not before
            "interval": "5s",
            "input_series": [
                series("pgha_standby_streaming", {**p1, "standby": "db-b"}, "1 1 1 1 0x20"),
                series("pgha_standby_streaming", {**p1, "standby": "db-c"}, "1x24"),
            ],
            "alert_rule_test": [
                alert("PgHaStandbyNotStreaming", "25s"),
                alert("PgHaStandbyNotStreaming", "35s", critical(**p1, standby="db-b")),
            ],
        },
        {  # the isolated leader loses quorum; one VIP holder, then none, then two
            "interval": "5s",
            "input_series": [
                series("pgha_watchdog_quorum", p1, "1 0x20"),
                series("pgha_watchdog_quorum", p2, "1x20"),
                series("pgha_vip_held", p1, "1 1 1 1 1 1 0 0 0 0 0 0 1 1 1 1 1 1 1 1"),
                series("pgha_vip_held", p2, "0 0 0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1"),
            ],
            "alert_rule_test": [
                alert("PgHaWatchdogQuorumLost", "5s"),
                alert("PgHaWatchdogQuorumLost", "20s", critical(**p1)),
                alert("PgHaNoVipHolder", "40s"),
                alert("PgHaNoVipHolder", "50s", critical()),
                alert("PgHaSeveralVipHolders", "65s"),
                alert("PgHaSeveralVipHolders", "80s", critical()),
            ],
        },
        {  # pgpool sees no primary for 30 s; later two primaries
            "interval": "5s",
            "input_series": [
                series("pgha_pgpool_up", p2, "1x30"),
                series("pgha_pgpool_primaries", p2, "1 0x12 1 2x10"),
            ],
            "alert_rule_test": [
                alert("PgHaNoPrimary", "20s"),
                alert("PgHaNoPrimary", "40s", critical(**p2)),
                alert("PgHaSeveralPrimaries", "90s", critical(**p2)),
            ],
        },
        {  # a backend detached for more than monitoring.detachedMinutes (3)
            "interval": "30s",
            "input_series": [series("pgha_pgpool_node_detached", {**p3, "backend": "db-b"}, "0 1x10")],
            "alert_rule_test": [
                alert("PgHaNodeDetached", "2m"),
                alert("PgHaNodeDetached", "4m", warning(**p3, backend="db-b")),
            ],
        },
        {  # archiving fails, WAL piles up, a standby lags, the disk fills, an exporter is down
            "interval": "1m",
            "input_series": [
                series("pgha_archive_failing", p1, "0 1x10"),
                series("pgha_archive_ready_files", p1, "0 40x10"),
                series("pgha_replication_lag_seconds", p2, "0 90x5"),
                series("node_filesystem_avail_bytes", {**p3, "mountpoint": "/", "fstype": "ext4"}, "50 5x10"),
                series("node_filesystem_size_bytes", {**p3, "mountpoint": "/", "fstype": "ext4"}, "100x10"),
                series("up", {**p2, "job": "postgres", "instance": "10.9.0.12:9187"}, "1 0x5"),
            ],
            "alert_rule_test": [
                alert("PgHaArchivingFailing", "1m"),
                alert("PgHaArchivingFailing", "4m", critical(**p1)),
                alert("PgHaArchivingLagging", "7m", warning(**p1)),
                alert("PgHaReplicationLag", "3m", warning(**p2)),
                alert("PgHaDiskFilling", "7m", warning(**p3, mountpoint="/", fstype="ext4")),
                alert("PgHaTargetDown", "3m", warning(**{**p2, "job": "postgres", "instance": "10.9.0.12:9187"})),
            ],
        },
        {  # the last backup finished at 0; 30 h later it is too old
            "interval": "10m",
            "input_series": [
                series("pgha_backup_last_completed_timestamp_seconds", {"node": "db-backup", "type": "full"}, "0x200"),
                series("pgha_backup_info_ok", {"node": "db-backup"}, "1x200"),
            ],
            "alert_rule_test": [alert("PgHaBackupTooOld", "29h"), alert("PgHaBackupTooOld", "31h", warning())],
        },
    ]
    # Seconds-long faults evaluated every 5 s; the day-long backup age every 10 min (same rules, faster run).
    (tmp_path / "fast.test.yml").write_text(
        yaml.safe_dump({"rule_files": ["pgha-rules.yml"], "evaluation_interval": "5s", "tests": tests[:-1]})
    )
    (tmp_path / "slow.test.yml").write_text(
        yaml.safe_dump({"rule_files": ["pgha-rules.yml"], "evaluation_interval": "10m", "tests": tests[-1:]})
    )
    tested = run(promtool, "test", "rules", "fast.test.yml", "slow.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == 2, tested.stdout


def test_monitoring_needs_the_repository_host() -> None:
    from components.config import ConfigError

    with pytest.raises(ConfigError, match=r"monitoring\.enabled: Prometheus and Alertmanager run on the backup"):
        debian12(monitoring={"enabled": True})
    assert not debian12().monitoring_enabled  # no backup host: no monitoring, no exporter packages
    quiet = debian12(backup={"host": {"name": "db-backup", "address": "10.9.0.19"}}, monitoring={"enabled": False})
    assert quiet.backup is not None and not quiet.monitoring_enabled


@pytest.mark.parametrize(("seconds", "rendered"), [(120, "2m"), (30, "30s"), (90, "90s"), (600, "10m")])
def test_the_archiving_alert_waits_the_configured_time(tmp_path: Path, seconds: int, rendered: str) -> None:
    config = debian12(
        backup={"host": {"name": "db-backup", "address": "10.9.0.19"}},
        monitoring={"archiveFailingSeconds": seconds},
    )
    rules = yaml.safe_load(write_rules(tmp_path, config).read_text())
    by_name = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert by_name["PgHaArchivingFailing"]["for"] == rendered


def test_an_archiving_delay_out_of_bounds_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="archiveFailingSeconds"):
        debian12(
            backup={"host": {"name": "db-backup", "address": "10.9.0.19"}}, monitoring={"archiveFailingSeconds": 5}
        )
