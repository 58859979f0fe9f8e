"""The cluster's secrets as plain values, for rendering.

Inside Pulumi these arrive as secret Outputs and are only unwrapped inside `.apply`, so whatever is rendered from
them stays secret. The render command and reviewers get `placeholders()`: same shape, no real value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ClusterSecrets:
    postgres_password: str
    replication_password: str
    pgpool_password: str
    pcp_password: str
    # Key pgpool uses to decrypt AES entries (pool_passwd, *_password settings): the content of ~postgres/.pgpoolkey.
    pgpool_key: str
    # Shared key of pgpool's watchdog (wd_authkey): a node that does not know it cannot join or vote.
    watchdog_key: str
    # SSH key pair of the postgres OS user on every node (failover, follow-primary and online recovery use it).
    postgres_ssh_private_key: str
    postgres_ssh_public_key: str

    @classmethod
    def placeholders(cls) -> ClusterSecrets:
        values = {f.name: f"<secret:{f.name}>" for f in fields(cls)}
        values["postgres_ssh_public_key"] = "ssh-ed25519 <secret:postgres_ssh_public_key> postgres@pgha"
        return cls(**values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
