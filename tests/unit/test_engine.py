"""The lab's engine driver and secret audit, without the engine: config copies, output parsing, secret needles."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lab.audit import SECRET_SIG, leaks_in, needles, stack_secrets
from lab.engine import REPO, EngineRun, LabStack

UP_OUTPUT = """\
Updating (lab):
 ~  command:remote:Command server1-pgpool-service updated (2s)
Outputs:
    vip: "10.213.8.100"

Resources:
    + 3 created
    ~ 6 updated
    +-1 replaced
    10 changes. 111 unchanged

Duration: 12s
"""


def test_changes_reads_the_resources_summary() -> None:
    run = EngineRun(["pulumi", "up"], 0, UP_OUTPUT, 12.0)
    assert run.changes == {"created": 3, "updated": 6, "replaced": 1, "unchanged": 111}


def test_changes_when_nothing_changed() -> None:
    run = EngineRun(["pulumi", "up"], 0, "Resources:\n    120 unchanged\n\nDuration: 7s\n", 7.0)
    assert run.changes == {"unchanged": 120}


def test_changes_of_a_preview() -> None:
    run = EngineRun(["pulumi", "preview"], 0, "Resources:\n    + 120 to create\n\n", 5.0)
    assert run.changes == {"create": 120}


def test_config_copy_is_the_repo_file_plus_overrides_and_keeps_the_salt(tmp_path: Path) -> None:
    stack = LabStack("lab", directory=tmp_path)
    stack.write_config(salt="v1:abc")
    first = yaml.safe_load(stack.config_file.read_text())
    repo = yaml.safe_load((REPO / "Pulumi.lab.yaml").read_text())
    assert first == {"encryptionsalt": "v1:abc", "config": repo["config"]}
    # A later copy with overrides: nested objects are merged, the salt stays, the repo file is untouched.
    stack.write_config("lab-sync", {"pgpool": {"logMinMessages": "notice"}})
    second = yaml.safe_load(stack.config_file.read_text())
    assert second["encryptionsalt"] == "v1:abc"
    pgpool = second["config"]["pgpool-ha:pgpool"]
    assert pgpool["logMinMessages"] == "notice"
    assert pgpool["version"] == repo["config"]["pgpool-ha:pgpool"]["version"]
    assert second["config"]["pgpool-ha:postgresql"]["synchronousReplication"] is True
    assert yaml.safe_load((REPO / "Pulumi.lab.yaml").read_text()) == repo


def test_forget_keeps_the_passphrase(tmp_path: Path) -> None:
    stack = LabStack("lab", directory=tmp_path)
    stack._ensure_passphrase()
    (tmp_path / "backend" / ".pulumi").mkdir(parents=True)
    stack.write_config(salt="v1:abc")
    stack.forget()
    assert not (tmp_path / "backend").exists() and not stack.config_file.exists()
    assert stack.passphrase_file.stat().st_mode & 0o777 == 0o600


def _secret(value: str) -> dict[str, str]:
    return {SECRET_SIG[0]: SECRET_SIG[1], "plaintext": json.dumps(value)}


def test_stack_secrets_finds_generated_passwords_and_key_lines() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 70 + "\n" + "B" * 50 + "\n-----END OPENSSH PRIVATE KEY-----\n"
    export = {
        "deployment": {
            "resources": [
                {"type": "random:index/randomPassword:RandomPassword", "outputs": {"result": _secret("p" * 32)}},
                {"type": "tls:index/privateKey:PrivateKey", "outputs": {"privateKeyOpenssh": _secret(key)}},
                {"type": "command:remote:Command", "outputs": {"stdout": "changed: /etc/pgpool2/pgpool.conf"}},
            ]
        }
    }
    found = stack_secrets(export, extra=("admin-secret-value",))
    assert found == sorted(["p" * 32, "A" * 70, "B" * 50, "admin-secret-value"])
    assert leaks_in(f"xx {'B' * 50} yy", found) == ["BBBB..."]
    assert leaks_in("nothing here", found) == []


def test_short_values_are_not_needles() -> None:
    # A short value would match by chance everywhere; generated secrets are 32+ characters.
    assert needles("abc") == []
