"""The vmlab stack: what this machine adds to Pulumi.vmlab.yaml, and the engine driven with it.

Per machine, the lab adds the admin user's public key, its private key (a secret, encrypted by the engine with the
stack's passphrase provider) and the mirror's public signing key to the engine's copy of the stack file
(lab.engine.LabStack overrides). The repo file never holds them.
"""

from __future__ import annotations

import os
from typing import Any

from components.config import ClusterConfig, parse_config
from components.stack import plain_values, stack_file_values

from ..engine import LabStack
from ..util import run
from . import settings as s


def ensure_ssh_key() -> None:
    if s.SSH_KEY.is_file():
        return
    s.SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(s.SSH_KEY.parent, 0o700)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pghavm-admin", "-f", str(s.SSH_KEY)])


def public_overrides() -> dict[str, Any]:
    """Non-secret per-machine values: admin public key, mirror signing key (once the mirror exists)."""
    ensure_ssh_key()
    out: dict[str, Any] = {"sshPublicKeys": [s.SSH_KEY.with_suffix(".pub").read_text().strip()]}
    if s.MIRROR_KEY.is_file():
        out["packageMirror"] = {"publicKey": s.MIRROR_KEY.read_text()}
    return out


def cluster_config() -> ClusterConfig:
    """The stack's validated config as the program will see it (without the secrets)."""
    values = plain_values(stack_file_values(s.STACK))
    for key, value in public_overrides().items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return parse_config(values)


def lab_stack() -> LabStack:
    return LabStack(s.STACK, directory=s.PULUMI_DIR)


def overrides(stack: LabStack) -> dict[str, Any]:
    """Everything the engine's copy of the stack file needs: public values plus the encrypted private key."""
    public = public_overrides()
    stack.ensure(s.STACK, public)
    # Kept as an override: the copy of the stack file is rewritten from the repo file before each command.
    return {**public, "sshPrivateKey": stack.encrypt("sshPrivateKey", s.SSH_KEY.read_text())}
