"""Every shell script that lands on a server passes shellcheck and bash -n; the step commands too."""

from __future__ import annotations

import shlex
import subprocess
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
    return [f for f in render_node_files(config, config.nodes[1], FAKE) if f.is_script]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scripts_pass_shellcheck_and_bash_n(name: str, tmp_path: Path) -> None:
    found = scripts(CONFIGS[name]())
    names = {Path(f.path).name for f in found}
    assert {"failover.sh", "follow_primary.sh", "escalation.sh", "recovery_1st_stage", "pgpool_remote_start"} <= names
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
    assert "pg-make-standby rewind" in by_name["follow_primary.sh"]
    assert "pg-make-standby basebackup" in by_name["recovery_1st_stage"]
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
    if mirror:
        config = config.model_copy(update={"package_mirror": PackageMirror.model_validate(MIRROR)})
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
