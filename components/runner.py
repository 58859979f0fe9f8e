"""Stand-in runner: executes provisioning_plan() over ssh, step by step, until the Pulumi engine is available.

Exactly the plan's create commands and stdin (no second copy of any step). Secrets come from a 0600 JSON file made
once at $LAB_DIR/secrets.json. Must run inside the lab's network namespace (the caller uses `ip netns exec`).
"""

from __future__ import annotations

import json
import os
import secrets as random
import string
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .config import ClusterConfig
from .plan import Step, provisioning_plan
from .secrets import ClusterSecrets

LAB_DIR = Path(os.environ.get("LAB_DIR", "/var/lib/pgha-lab"))
_ALPHABET = string.ascii_letters + string.digits


def _password(length: int = 32) -> str:
    return "".join(random.choice(_ALPHABET) for _ in range(length))


def generate_secrets(comment: str) -> ClusterSecrets:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return ClusterSecrets(
        postgres_password=_password(),
        replication_password=_password(),
        pgpool_password=_password(),
        pcp_password=_password(),
        pgpool_key=_password(48),
        postgres_ssh_private_key=private,
        postgres_ssh_public_key=f"{public} {comment}",
    )


def load_or_create_secrets(path: Path, comment: str) -> ClusterSecrets:
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise SystemExit(f"{path}: readable by others; chmod 600 it")
        return ClusterSecrets(**json.loads(path.read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    created = generate_secrets(comment)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(created), handle, indent=2)
    print(f"runner: new secrets in {path} (0600)")
    return created


def ssh_command(config: ClusterConfig, node_name: str, command: str) -> list[str]:
    node = next(n for n in config.nodes if n.name == node_name)
    hosts = config.existing_hosts
    if not hosts.ssh_private_key_path:
        raise SystemExit("existingHosts.sshPrivateKeyPath is not set: the runner needs a key file")
    return [
        "ssh",
        "-i",
        hosts.ssh_private_key_path,
        "-o",
        f"UserKnownHostsFile={LAB_DIR / 'ssh' / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-p",
        str(hosts.ssh_port),
        f"{hosts.ssh_user}@{node.connect_host}",
        command,
    ]


def run_step(config: ClusterConfig, step: Step, secrets: ClusterSecrets) -> tuple[int, str, str]:
    stdin = step.stdin(secrets) if step.stdin else None
    proc = subprocess.run(
        ssh_command(config, step.node, step.create),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def apply(config: ClusterConfig, secrets: ClusterSecrets) -> int:
    steps = provisioning_plan(config)
    started = time.monotonic()
    counts = {"changed": 0, "unchanged": 0}
    for index, step in enumerate(steps, 1):
        t0 = time.monotonic()
        code, out, err = run_step(config, step, secrets)
        lines = [line for line in out.splitlines() if line.strip()]
        summary = lines[-1] if lines else "(no output)"
        kind = summary.split(":", 1)[0]
        if kind in counts:
            counts[kind] += 1
        print(f"[{index:3}/{len(steps)}] {step.ref:40} {time.monotonic() - t0:6.1f}s  {summary}", flush=True)
        if code != 0:
            print(f"runner: step {step.ref} failed (exit {code})", file=sys.stderr)
            for line in (out + err).splitlines()[-40:]:
                print(f"    {line}", file=sys.stderr)
            return 1
    print(
        f"runner: {len(steps)} steps in {time.monotonic() - started:.1f}s: "
        f"{counts['changed']} changed, {counts['unchanged']} unchanged"
    )
    return 0
