"""The cluster's credentials as Pulumi secrets: configured ones, or generated (pulumi-random, pulumi-tls)."""

from __future__ import annotations

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from .pulumi_config import optional_secret
from .secrets import ClusterSecrets

PKG = "pgha"


class Credentials(pulumi.ComponentResource):
    """Passwords, pgpool's AES key and the postgres user's SSH key pair. Everything here is secret."""

    postgres_password: pulumi.Output[str]
    values: pulumi.Output[ClusterSecrets]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:secrets:Credentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def password(key: str, resource: str) -> pulumi.Output[str]:
            configured = optional_secret(key)
            if configured is not None:
                return pulumi.Output.secret(configured)
            # Letters and digits only: the value lands in .pgpass/.pcppass, where ':' and '\\' are syntax.
            generated = random.RandomPassword(f"{name}-{resource}", length=32, special=False, opts=child)
            return pulumi.Output.secret(generated.result)

        self.postgres_password = password("postgresPassword", "postgres")
        replication = password("replicationPassword", "replication")
        pgpool = password("pgpoolPassword", "pgpool")
        pcp = password("pcpPassword", "pcp")
        pgpool_key: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomPassword(f"{name}-pgpoolkey", length=48, special=False, opts=child).result
        )
        watchdog_key: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomPassword(f"{name}-watchdogkey", length=32, special=False, opts=child).result
        )
        ssh_key = tls.PrivateKey(f"{name}-postgres-ssh", algorithm="ED25519", opts=child)
        self.values = pulumi.Output.secret(
            pulumi.Output.all(
                self.postgres_password,
                replication,
                pgpool,
                pcp,
                pgpool_key,
                watchdog_key,
                ssh_key.private_key_openssh,
                ssh_key.public_key_openssh,
            ).apply(lambda v: ClusterSecrets(*v))
        )
        self.register_outputs({})
