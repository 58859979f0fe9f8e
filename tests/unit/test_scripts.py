"""Every shell script that lands on a server passes shellcheck and bash -n; the step commands too."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from components.config import PackageMirror
from components.plan import provisioning_plan
from components.render import render_node_files

from .test_render import FAKE, debian12, pgpool_version, stack

SHELLCHECK = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "shellcheck")
CONFIGS = {
    "dev": lambda: stack("dev"),
    "lab": lambda: stack("lab"),
    "debian12": debian12,
    "pgpool47": lambda: pgpool_version("4.7"),
}


def scripts(config):
    """A standby's scripts, and the backup repository host's when the stack has one."""
    hosts = [config.nodes[1], *config.all_hosts[len(config.nodes) :]]
    return [f for host in hosts for f in render_node_files(config, host, FAKE) if f.is_script]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scripts_pass_shellcheck_and_bash_n(name: str, tmp_path: Path) -> None:
    found = scripts(CONFIGS[name]())
    names = {Path(f.path).name for f in found}
    assert {"failover.sh", "follow_primary.sh", "pgha-follow", "escalation.sh", "recovery_1st_stage"} <= names
    assert "pgha-apply-restart" in names
    assert "pgpool_remote_start" in names
    for file in found:
        target = tmp_path / Path(file.path).name
        target.write_text(file.content)
        assert subprocess.run(["bash", "-n", str(target)], capture_output=True).returncode == 0, file.path
        result = subprocess.run([SHELLCHECK, "-s", "bash", str(target)], capture_output=True, text=True)
        assert result.returncode == 0, f"{file.path}\n{result.stdout}"


def test_scripts_are_bash_never_sudo_sh() -> None:
    for file in scripts(debian12()):
        assert file.content.startswith("#!/bin/bash\n"), file.path
        assert "sudo sh" not in file.content and "pg_ctl -D" not in file.content
        assert "/var/lib/pgsql" not in file.content and "/etc/pgpool-II" not in file.content


def test_debian_layout_in_scripts() -> None:
    by_name = {Path(f.path).name: f.content for f in scripts(debian12())}
    assert "pg_ctlcluster $PGVERSION main promote" in by_name["failover.sh"]
    assert "pg_rewind" in by_name["pg-make-standby"] and "pg_basebackup" in by_name["pg-make-standby"]
    assert "pg-make-standby rewind" in by_name["pgha-follow"]
    # Online recovery: a full rebuild, from the backup repository for a large database, else pg_basebackup.
    assert "pg-make-standby rebuild" in by_name["recovery_1st_stage"]
    assert '"${size:-0}" -ge "$REBUILD_FROM_REPOSITORY_BYTES" ]; then MODE=repository' in by_name["pg-make-standby"]
    assert "--delta --type=standby" in by_name["pg-make-standby"]
    assert (
        '"ALTER SYSTEM RESET restore_command" -c "ALTER SYSTEM RESET recovery_target_timeline"'
        in by_name["pg-make-standby"]
    )
    assert "systemctl start $PG_UNIT" in by_name["pgpool_remote_start"]
    assert "ip addr del $VIP/$VIP_PREFIX dev $VIP_DEVICE" in by_name["escalation.sh"]
    assert "PGVERSION=15" in by_name["failover.sh"] and "NODES=(db-a db-b db-c)" in by_name["failover.sh"]


MIRROR = {
    "url": "http://10.213.17.1:8081/",
    "suite": "./",
    "publicKey": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ'x\n-----END PGP PUBLIC KEY BLOCK-----\n",
}


@pytest.mark.parametrize("mirror", [False, True])
def test_step_commands_pass_shellcheck(tmp_path: Path, mirror: bool) -> None:
    config = stack("lab")
    if mirror:  # with a mirror, and with pinned package versions (the upgrade path of the packages step)
        pg = config.postgresql.model_copy(update={"package_version": "15.20-0+deb12u1"})
        pgpool = config.pgpool.model_copy(update={"package_version": "4.3.5-1+deb12u1"})
        config = config.model_copy(
            update={"package_mirror": PackageMirror.model_validate(MIRROR), "postgresql": pg, "pgpool": pgpool}
        )
    for step in provisioning_plan(config):
        if step.name.startswith("file-") and step.name != "file-etc-hosts":
            continue  # every file step runs the same put-file script (checked through file-etc-pgpool2-...)
        for command in filter(None, (step.create, step.update, step.delete)):
            words = shlex.split(command)
            assert words[:4] == ["sudo", "-n", "/bin/bash", "-c"], step.ref
            target = tmp_path / "step.sh"
            target.write_text("#!/bin/bash\n" + words[4])
            result = subprocess.run([SHELLCHECK, "-s", "bash", str(target)], capture_output=True, text=True)
            assert result.returncode == 0, f"{step.ref}\n{result.stdout}"


def test_follow_primary_returns_at_once_and_the_worker_runs_on(tmp_path: Path) -> None:
    """pgpool holds its follow-primary lock (here and on every standby pgpool) while follow_primary_command runs;
    the launcher must return at once and leave the work to a detached worker that gets every argument."""
    by_name = {Path(f.path).name: f.content for f in scripts(debian12())}
    done = tmp_path / "worker-done"
    worker = tmp_path / "worker"
    worker.write_text(f'#!/bin/bash\nsleep 2\necho "args: $*" > {done}\n')
    worker.chmod(0o755)
    log_file = tmp_path / "follow.log"
    launcher = tmp_path / "follow_primary.sh"
    launcher.write_text(
        by_name["follow_primary.sh"]
        .replace("worker=/usr/local/lib/pgha/pgha-follow", f"worker={worker}")
        .replace("log_file=/var/log/postgresql/pgha-follow.log", f"log_file={log_file}")
    )
    args = ["2", "db-c", "5432", "/data", "0", "db-b", "0", "0", "5432", "/data"]
    t0 = time.monotonic()
    cp = subprocess.run(["bash", str(launcher), *args], capture_output=True, text=True, timeout=10)
    returned = time.monotonic() - t0
    assert cp.returncode == 0, cp.stderr
    assert returned < 1.0, f"follow_primary.sh waited {returned:.1f} s for its worker"
    assert not done.exists()  # the worker still runs
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text() == f"args: {' '.join(args)}\n"
    assert "follow work for db-c started" in cp.stdout
