"""A fresh lab, provisioned by the real engine the way a user meets it: preview, an `up` killed mid-way, the
documented recovery, then proof that no secret leaked anywhere while it happened."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.audit import leaks_in, process_lists, readable_files_with_secrets, stack_secrets
from lab.cluster import Cluster
from lab.core import Lab
from lab.engine import REPO, LabStack, kill_group
from tests.lifecycle.conftest import ENGINE_OUTPUT

pytestmark = [pytest.mark.phase("provision")]

# Kill the first `up` once this many resources (of ~120) are in the state: mid-way through the provisioning steps.
KILL_AFTER_RESOURCES = 50
HEALTHY_S = 300
# Command lines seen on the servers while the engine provisioned them (checked by the secrets test).
PROCESS_LINES: set[str] = set()


def test_preview_of_a_fresh_lab_plans_the_whole_cluster(stack: LabStack, report: dict[str, Any]) -> None:
    """The stack starts empty (fresh servers, fresh state); `preview --diff` plans every resource and shows the
    rendered files in clear, for review, while every secret input stays hidden."""
    assert stack.resource_count() == 0, "the lifecycle must start from a fresh lab (make lifecycle resets it)"
    run = stack.preview()
    ENGINE_OUTPUT.append(run.output)
    report["preview_s"] = round(run.seconds, 1)
    report["planned"] = run.changes
    assert run.changes.get("create", 0) >= 100, run.changes
    # Reviewable: pgpool.conf's content is in the diff in clear; the secret steps' stdin is hidden.
    # (The engine pads property names to the longest one of the resource: match any padding.)
    assert re.search(r'\n\s+stdin\s+: "# pgpool-II', run.output), "pgpool.conf is not shown in clear"
    assert re.search(r"\n\s+stdin\s+: \[secret\]", run.output), "no secret stdin is hidden"


def test_an_interrupted_up_is_recovered_by_the_documented_procedure(
    stack: LabStack, lab: Lab, cluster: Cluster, report: dict[str, Any]
) -> None:
    """Kill the CLI (and its plugins) mid-way through `up`; the README's procedure brings the cluster to healthy
    with no manual step on the servers."""
    stop = threading.Event()
    seen_in_state: list[int] = []

    def kill_mid_way(proc: subprocess.Popen[str]) -> None:
        # The file backend saves the state after every step: kill once ~50 of ~120 resources are in it.
        while not stop.is_set() and proc.poll() is None:
            count = stack.resources_in_checkpoint() or 0
            if count >= KILL_AFTER_RESOURCES:
                seen_in_state.append(count)
                kill_group(proc)
                return
            stop.wait(0.1)

    def on_start(proc: subprocess.Popen[str]) -> None:
        threading.Thread(target=kill_mid_way, args=(proc,), daemon=True).start()

    with process_lists(lab) as seen:
        try:
            killed = stack.up(check=False, on_start=on_start)
            stop.set()
            ENGINE_OUTPUT.append(killed.output)
            assert seen_in_state and killed.returncode != 0, "the first up was meant to be killed mid-way"
            report["torn_state_metadata_deleted"] = [p.name for p in stack.drop_torn_state_metadata()]
            pending = stack.export().get("deployment", {}).get("pending_operations") or []
            in_state = stack.resource_count()
            report["killed_with_resources_in_state"] = seen_in_state[0]
            report["in_state_after_kill"] = in_state
            report["pending_operations"] = len(pending)
            # The documented recovery (README, "An interrupted pulumi up"): release the dead CLI's lock, run up
            # again (every step is idempotent: the interrupted ones simply run again), drop the stale pending
            # records, and check that nothing is left to do.
            for step in (stack.cancel, stack.up, stack.refresh_clearing_pending_creates):
                run = step()
                ENGINE_OUTPUT.append(run.output)
                report[f"{step.__name__}_s"] = round(run.seconds, 1)
                if step == stack.up:
                    recover = run
                    report["recovering_up"] = run.changes
            assert not stack.export().get("deployment", {}).get("pending_operations")
            check = stack.preview(expect_no_changes=True)
            ENGINE_OUTPUT.append(check.output)
        finally:
            PROCESS_LINES.update(seen)
    t0 = time.monotonic()
    cluster.wait_healthy(HEALTHY_S, warmup=False)
    report["healthy_after_up_s"] = round(time.monotonic() - t0, 1)
    assert 0 < in_state < recover.changes.get("unchanged", 0) + recover.changes.get("created", 0)


def test_no_secret_in_state_output_process_list_or_readable_file(
    stack: LabStack, lab: Lab, report: dict[str, Any]
) -> None:
    """Every generated password and private key (and the admin's key) is absent from the exported state, the
    engine's output, the servers' process lists sampled during `up`, and every file others can read."""
    config = yaml.safe_load((REPO / "Pulumi.lab.yaml").read_text())["config"]
    admin_key = Path(config["pgpool-ha:existingHosts"]["sshPrivateKeyPath"]).read_text()
    secrets = stack_secrets(stack.export(show_secrets=True), extra=(admin_key,))
    # 4 configured-or-generated passwords + pgpool's key + the postgres ssh key + the admin key.
    assert len(secrets) >= 7, f"only {len(secrets)} secret values found in the stack"
    report["secret_values_checked"] = len(secrets)
    exported = stack.run("stack", "export", "--stack", stack.stack, echo=False).output
    assert not leaks_in(exported, secrets), "a secret is in clear in `pulumi stack export`"
    assert not leaks_in("\n".join(ENGINE_OUTPUT), secrets), "a secret is in the engine's output"
    assert PROCESS_LINES, "the process lists were not sampled"
    report["process_lines_sampled"] = len(PROCESS_LINES)
    assert not leaks_in("\n".join(PROCESS_LINES), secrets), "a secret was in a server's process list during up"
    for node in ("server1", "server2", "server3"):
        found = readable_files_with_secrets(lab, node, secrets)
        assert not found, f"{node}: files others can read hold a secret: {found}"


@pytest.mark.usefixtures("lab")  # skipped with the others where the lab cannot run (it reads their output)
def test_the_plugins_are_the_versions_the_sdks_request() -> None:
    """Built plugins and SDK packages agree: the engine never warned about a plugin version (nor downloaded one)."""
    output = "\n".join(ENGINE_OUTPUT)
    assert output, "no engine output was recorded"
    assert "is expected to have version" not in output
    assert "downloading plugin" not in output.lower()
