"""Digests of everything the program sends to servers, per shipped stack: every rendered file (path, mode, owner,
content) and every step of the plan (name, order, commands, stdin, secrecy, dependencies, upload).

A refactoring of components/ must leave these byte-identical: a step's name is its Pulumi resource name and its
command is the resource's input, so any difference would update or replace resources on every existing stack.
`python -m tests.unit.plan_reference --write` records the digests in tests/unit/reference/plan-digests.json;
test_plan_reference.py compares the current code with them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from components.config import ClusterConfig, parse_config
from components.plan import provisioning_plan
from components.render import render_node_files
from components.secrets import ClusterSecrets
from components.stack import PROJECT_DIR, load_stack_config, plain_values, stack_file_values

REFERENCE = Path(__file__).parent / "reference" / "plan-digests.json"

# Fixed values so that stdin contents (SQL with verifiers, AES entries) are reproducible.
SECRETS = ClusterSecrets(
    postgres_password="RefPostgresPw-1'q",
    replication_password="RefReplPw-2:c",
    pgpool_password="RefPgpoolPw-3",
    pcp_password="RefPcpPw-4",
    pgpool_key="RefPgpoolKey-5",
    watchdog_key="RefWatchdogKey-6",
    postgres_ssh_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nRefKey-7\n-----END OPENSSH PRIVATE KEY-----\n",
    postgres_ssh_public_key="ssh-ed25519 RefPub-8 postgres@pgha",
)


# What the VM lab adds to its stack file per machine (lab/vm/stack.py), fixed here.
MACHINE_VALUES = {"vmlab": {"sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRefAdminKey admin@pgha"]}}


def stack_config(stack: str) -> ClusterConfig:
    if stack not in MACHINE_VALUES:
        return load_stack_config(stack)
    values = {
        k: v for k, v in plain_values(stack_file_values(stack)).items() if not isinstance(v, dict) or "secure" not in v
    }
    return parse_config({**values, **MACHINE_VALUES[stack]})


def shipped_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))


def _sha(text: str) -> str:
    # The checkout's own path (default upload sources) is not part of what the program sends.
    return hashlib.sha256(text.replace(str(PROJECT_DIR), "<project>").encode()).hexdigest()


def stack_digests(stack: str) -> dict[str, object]:
    config = stack_config(stack)
    files: dict[str, str] = {}
    for host in config.all_hosts:
        for file in render_node_files(config, host, SECRETS):
            record = [file.path, file.mode, file.owner, file.group, file.kind, file.validate or "", file.content]
            files[f"{host.name}:{file.path}"] = _sha(json.dumps(record))
    steps: list[str] = []
    for step in provisioning_plan(config):
        if step.stdin is None:
            stdin = None
        elif step.upload is not None:
            # The stdin of an upload is the sha256 of a build artefact, not of the program: record its presence.
            stdin = "<sha256 of the uploaded file>"
        else:
            stdin = step.stdin(SECRETS)
        upload = None if step.upload is None else [step.upload.source, step.upload.staged]
        record = [step.ref, step.create, step.update, step.delete, stdin, step.secret, list(step.after), upload]
        steps.append(f"{step.ref} {_sha(json.dumps(record))}")
    return {
        "files": _sha(json.dumps(sorted(files.items()))),
        "plan": _sha("\n".join(steps)),
        "file_digests": dict(sorted(files.items())),
        "step_digests": steps,
    }


def all_digests() -> dict[str, object]:
    return {stack: stack_digests(stack) for stack in shipped_stacks()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.unit.plan_reference")
    parser.add_argument("--write", action="store_true", help=f"record the current digests in {REFERENCE}")
    args = parser.parse_args(argv)
    digests = all_digests()
    if args.write:
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
        print(f"wrote {REFERENCE} ({len(digests)} stacks)")
        return 0
    reference = json.loads(REFERENCE.read_text())
    same = reference == digests
    print("identical" if same else "differs")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
