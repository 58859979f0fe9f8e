"""The lab's engine driver and secret audit, without the engine: config copies, output parsing, secret needles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.audit import SECRET_SIG, leaks_in, needles, stack_secrets
from lab.engine import REPO, Engine, EngineError, EngineRun, LabStack, ProgressFilter
from lab.engine import main as engine_main

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


# ---------------------------------------------------------------------------------------------------- --progress
# A constructed `pulumi up --yes --skip-preview --diff` of the lab in the diff display (NO_COLOR, non-interactive),
# the format scripts/build-engine.sh's CLI prints (pkg/backend/display/diff.go): each step as it starts, with its
# URN and its inputs (the rendered files in clear, secrets as [secret]), outputs after it, the summary at the end.
URN = "urn:pulumi:lab::pgpool-ha::pgpool-ha:cluster:PostgresCluster$command:remote:Command::"


def _diff_step(name: str, op: str = "create", symbol: str = "+") -> list[str]:
    return [
        f"      {symbol} command:remote:Command: ({op})",
        f"          [urn={URN}{name}]",
        "          [provider=urn:pulumi:lab::pgpool-ha::pulumi:providers:command::default_1_2_1::04da6b54]",
        "          connection: {",
        '              host      : "10.213.8.11"',
        "              privateKey: [secret]",
        "          }",
        '          create    : "sudo /usr/local/sbin/pgha-apply /etc/pgpool2/pgpool.conf"',
        "          stdin     : \"# pgpool-II configuration: listen_addresses = '*'\"",
        "@ updating....",
    ]


def _up_output(steps: int, failure: list[str] | None = None) -> list[str]:
    lines = [
        "Updating (lab):",
        "  + pulumi:pulumi:Stack: (create)",
        "      [urn=urn:pulumi:lab::pgpool-ha::pulumi:pulumi:Stack::pgpool-ha-lab]",
    ]
    for i in range(steps):
        lines += _diff_step(f"server{i % 3 + 1}-step{i}")
        lines += ["          --outputs:--", f'          stdout    : "changed: step{i}"']
    if failure is not None:
        lines += failure
        lines += [
            "error: update failed",
            "Resources:",
            f"    + {steps} created",
            "    1 errored",
            "",
            "Duration: 41s",
            "",
        ]
        return lines
    lines += [
        "  pulumi:pulumi:Stack: (create)",
        "      --outputs:--",
        '      vip: "10.213.8.100"',
        "Resources:",
        f"    + {steps} created",
        "",
        "Duration: 1m35s",
        "",
    ]
    return lines


def _filtered(lines: list[str], **kw: Any) -> tuple[ProgressFilter, list[str]]:
    progress = ProgressFilter("up", 0.0, **kw)
    shown: list[str] = []
    for i, line in enumerate(lines):
        shown += progress.feed(line + "\n", i * 0.05)
    return progress, shown


def test_progress_of_a_whole_up_is_a_few_lines_with_counts_and_the_summary() -> None:
    output = _up_output(233)
    progress, shown = _filtered(output)
    shown += progress.finish(0, 95.0, Path("/lab/pulumi/logs/up.log"))
    assert len(output) > 2500 and len(shown) <= 20, shown  # the full output stays in the log
    assert shown[0] == "engine: up progress at 15 s: 25 steps started (25 create); last started: server1-step24"
    assert shown[-5:] == [
        "engine: up done in 95 s: 233 steps (233 create)",
        "Resources:",
        "    + 233 created",
        "Duration: 1m35s",
        "engine: full engine output (diff included): /lab/pulumi/logs/up.log",
    ]
    assert not any("pgpool-II configuration" in line or "[secret]" in line for line in shown)


def test_a_failing_step_shows_its_error_and_the_head_of_its_output() -> None:
    command_output = [f"pgha-apply: line {n}" for n in range(100)]
    failure = [
        'error: Process exited with status 1: running "sudo /usr/local/sbin/pgha-apply /etc/pgpool2/pgpool.conf":',
        "pgha-apply: refusing: max_connections lower than on the primary (100 < 200)",
        *command_output,
    ]
    progress, shown = _filtered(_up_output(30, failure))
    shown += progress.finish(255, 41.0, Path("/lab/up.log"))
    start = shown.index("engine: ERROR:")
    assert shown[start + 1].startswith('    error: Process exited with status 1: running "sudo /usr/local/sbin/pgha')
    assert shown[start + 2] == "    pgha-apply: refusing: max_connections lower than on the primary (100 < 200)"
    assert shown[start + 40] == "    pgha-apply: line 37"  # ERROR_LINES_SHOWN lines of the block
    assert shown[start + 41] == "    ... 62 more line(s) of this error in the log"
    assert not any("update failed" in line or "Traceback" in line for line in shown)  # the engine's noise
    assert "engine: up FAILED (rc 255) after 41 s: 30 steps (30 create)" in shown
    assert shown[-1] == "engine: full engine output (diff included): /lab/up.log"


def test_the_progress_display_names_the_failing_resource() -> None:
    # `pulumi up` without --diff: one line per state change, then a Diagnostics section per resource.
    output = [
        "Updating (lab):",
        " +  pulumi:pulumi:Stack pgpool-ha-lab creating (0s)",
        "@ updating....",
        *[f" +  command:remote:Command server1-step{i} creating (0s)" for i in range(3)],
        *[f" +  command:remote:Command server1-step{i} created (2s)" for i in range(2)],
        " +  command:remote:Command server1-step2 creating (1s) error: Process exited with status 1",
        " +  command:remote:Command server1-step2 **creating failed** error: Process exited with status 1",
        " +  pulumi:pulumi:Stack pgpool-ha-lab running error: update failed",
        "Diagnostics:",
        "  command:remote:Command (server1-step2):",
        '    error: Process exited with status 1: running "sudo pgha-apply":',
        "    pgha-apply: refusing: a newer PostgreSQL package is held",
        "",
        "  pulumi:pulumi:Stack (pgpool-ha-lab):",
        "    warning: using pulumi-language-python from $PATH",
        "    error: update failed",
        "",
        "Resources:",
        "    + 2 created",
        "",
        "Duration: 9s",
    ]
    progress, shown = _filtered(output, every=1)
    shown += progress.finish(255, 9.0, None)
    assert "engine: up progress at 0 s: 1 steps started (1 create); last started: server1-step0" in shown
    error = shown.index("engine: ERROR command:remote:Command (server1-step2):")
    assert shown[error + 1 : error + 3] == [
        '    error: Process exited with status 1: running "sudo pgha-apply":',
        "    pgha-apply: refusing: a newer PostgreSQL package is held",
    ]
    assert "engine: up FAILED (rc 255) after 9 s: 3 steps (3 create), 2 done; failed: server1-step2" in shown
    assert "engine: 1 warning(s), in the log" in shown


def test_a_quiet_engine_still_gets_a_line_naming_the_last_step() -> None:
    progress, _ = _filtered(_up_output(3)[:20])
    assert progress.tick(10.0) == []
    assert progress.tick(31.0) == [
        "engine: up still working at 31 s: 2 steps started (2 create); last started: server2-step1"
    ]
    assert progress.tick(40.0) == []  # one line per quiet period


def _fake_pulumi(tmp_path: Path, lines: list[str], rc: int) -> Engine:
    output = tmp_path / "output.txt"
    output.write_text("\n".join(lines) + "\n")
    cli = tmp_path / "fake-pulumi"
    cli.write_text(f"#!/bin/bash\ncat {output}\nexit {rc}\n")
    cli.chmod(0o755)
    return Engine(cli, tmp_path / "home")


def test_progress_run_prints_the_progress_and_logs_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _up_output(60)
    monkeypatch.setattr(Engine, "locate", classmethod(lambda cls: _fake_pulumi(tmp_path, lines, 0)))
    run = LabStack("lab", directory=tmp_path / "pulumi", echo=False, progress=True).run("up", "--diff")
    shown = capsys.readouterr().out.splitlines()
    assert run.log is not None and run.log.parent == tmp_path / "pulumi" / "logs"
    assert run.log.read_text() == run.output == "\n".join(lines) + "\n"  # the log and the caller get it all
    assert run.log.stat().st_mode & 0o777 == 0o600
    assert shown[0] == f"engine: pulumi up of stack lab; full output: {run.log}"
    assert [line for line in shown if "progress at" in line][1].startswith("engine: up progress at ")
    assert "    + 60 created" in shown and len(shown) < 15
    assert run.changes == {"created": 60}


def test_a_failed_progress_run_raises_with_the_log_not_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _up_output(5, ["error: Process exited with status 1: pgha-apply: refusing"])
    monkeypatch.setattr(Engine, "locate", classmethod(lambda cls: _fake_pulumi(tmp_path, lines, 255)))
    with pytest.raises(EngineError) as raised:
        LabStack("lab", directory=tmp_path / "pulumi", echo=False, progress=True).run("up")
    assert str(raised.value).startswith("pulumi up failed (rc 255); full output: ")
    assert "    error: Process exited with status 1: pgha-apply: refusing" in capsys.readouterr().out


def test_echo_still_streams_everything_and_writes_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the lifecycle tests use (LabStack(echo=True)): the whole output on stdout and in memory, as before.
    lines = _up_output(5)
    monkeypatch.setattr(Engine, "locate", classmethod(lambda cls: _fake_pulumi(tmp_path, lines, 0)))
    run = LabStack("lab", directory=tmp_path / "pulumi", echo=True).run("up")
    assert capsys.readouterr().out == run.output == "\n".join(lines) + "\n"
    assert run.log is None and not (tmp_path / "pulumi" / "logs").exists()


def test_a_refused_stack_config_shows_the_message_and_no_traceback() -> None:
    # The program's refusals are pulumi.RunError: the engine prints the message at column 0, its lines indented.
    refusal = [
        "error: invalid stack configuration:",
        "  pgpool-ha:monitoring.pgpoolExporterBinary: no file .tools/bin/pgpool2_exporter on this machine",
    ]
    progress, shown = _filtered(["Updating (lab):", *refusal, "Resources:", "", "Duration: 3s"])
    shown += progress.finish(255, 3.0, None)
    assert shown[:3] == ["engine: ERROR:", "    error: invalid stack configuration:", "    " + refusal[1]]
    assert shown[3] == "engine: up FAILED (rc 255) after 3 s: before any step"


def test_the_command_line_reports_an_engine_error_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_engine(cls: type[Engine]) -> Engine:
        raise EngineError("no pulumi CLI at .tools/bin/pulumi: run `make engine` (scripts/build-engine.sh) first")

    monkeypatch.setattr("lab.engine.lab_dir", lambda: tmp_path)
    monkeypatch.setattr(Engine, "locate", classmethod(no_engine))
    assert engine_main(["up", "--progress"]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err
        == "engine: error: no pulumi CLI at .tools/bin/pulumi: run `make engine` (scripts/build-engine.sh) first\n"
    )


def test_stacks_with_resources_reads_every_checkpoint_of_the_backend(tmp_path: Path) -> None:
    """What `lab up` asks before it calls the servers' cluster orphaned: any stack still describing resources."""
    from lab.engine import PROJECT, stacks_with_resources

    stacks = tmp_path / "backend" / ".pulumi" / "stacks" / PROJECT
    assert stacks_with_resources(tmp_path) == []  # no backend at all
    stacks.mkdir(parents=True)
    (stacks / "lab.json").write_text(json.dumps({"checkpoint": {"latest": {"resources": []}}}))  # destroyed
    (stacks / "lab-fast.json").write_text(json.dumps({"checkpoint": {"latest": {}}}))  # never updated
    assert stacks_with_resources(tmp_path) == []
    (stacks / "lab-fast.json").write_text(json.dumps({"checkpoint": {"latest": {"resources": [{"urn": "x"}]}}}))
    assert stacks_with_resources(tmp_path) == ["lab-fast"]
    (stacks / "lab.json").write_text("{torn")  # unreadable: counted, so no lab is reset under a live stack
    assert sorted(stacks_with_resources(tmp_path)) == ["lab", "lab-fast"]
