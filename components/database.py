"""The database half: provisions PostgreSQL streaming replication and pgpool-II on the nodes over SSH.

The provisioning itself is data (components.plan): each Step becomes one pulumi_command remote.Command, with its
file contents and passwords on stdin, never in the command string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from .config import ClusterConfig, Node
from .drift import ServerDrift
from .plan import Step, drift_observe_command, provisioning_plan
from .secrets import ClusterSecrets

PKG = "pgha"


@dataclass(frozen=True)
class HostAccess:
    """How provisioning reaches one node over SSH."""

    node: Node
    host: str
    user: str
    port: int
    private_key: pulumi.Output[str]
    # Resources that must exist before the first command (the VM, in libvirt mode).
    ready: Sequence[pulumi.Resource] = ()


class DatabaseNode(pulumi.ComponentResource):
    """One server's provisioning commands."""

    def __init__(self, name: str, node: Node, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:database:DatabaseNode", name, {"address": str(node.address)}, opts)
        self.node = node
        self.commands: dict[str, command.remote.Command] = {}

    def finish(self) -> None:
        self.register_outputs({"steps": list(self.commands)})


class BackupRepository(pulumi.ComponentResource):
    """The backup repository host's provisioning commands: pgBackRest, its stanza and backup schedule."""

    def __init__(self, name: str, host: Node, stanza: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:backup:BackupRepository", name, {"address": str(host.address), "stanza": stanza}, opts)
        self.node = host
        self.commands: dict[str, command.remote.Command] = {}

    def finish(self) -> None:
        self.register_outputs({"steps": list(self.commands)})


class PostgresCluster(pulumi.ComponentResource):
    """PostgreSQL primary + streaming standbys and pgpool-II with watchdog and VIP on every node."""

    nodes: dict[str, DatabaseNode]
    repository: BackupRepository | None
    commands: dict[str, command.remote.Command]

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        hosts: Mapping[str, HostAccess],
        secrets: pulumi.Output[ClusterSecrets],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"{PKG}:database:PostgresCluster", name, None, opts)
        self.nodes = {
            node.name: DatabaseNode(f"{name}-{node.name}", node, opts=pulumi.ResourceOptions(parent=self))
            for node in config.nodes
        }
        self.repository = None
        owners: dict[str, DatabaseNode | BackupRepository] = dict(self.nodes)
        if config.backup is not None:
            self.repository = BackupRepository(
                f"{name}-{config.backup.host.name}",
                config.backup.host,
                config.stanza,
                opts=pulumi.ResourceOptions(parent=self),
            )
            owners[config.backup.host.name] = self.repository
        self.commands = {}
        # One per host: `pulumi refresh` asks it what differs from the server's manifest (components.drift).
        self.drift = {
            name: ServerDrift(
                f"{name}-drift",
                node=name,
                host=access.host,
                port=access.port,
                user=access.user,
                private_key=access.private_key,
                observe=drift_observe_command(config),
                opts=pulumi.ResourceOptions(parent=owners[name]),
            )
            for name, access in hosts.items()
            if name in owners
        }
        placeholders = ClusterSecrets.placeholders()
        for step in provisioning_plan(config):
            access = hosts[step.node]
            owner = owners[step.node]
            depends: list[pulumi.Resource] = [self.commands[ref] for ref in step.after]
            if not step.after:
                depends.extend(access.ready)
            connection = command.remote.ConnectionArgs(
                host=access.host,
                user=access.user,
                port=access.port,
                private_key=access.private_key,
                # New VMs take a while to boot and start sshd (3-8 min for three TCG guests on a 2-core host,
                # where 60 dials were nearly used up): keep dialling, bounded, instead of failing the update.
                dial_error_limit=120,
                per_dial_timeout=10,
            )
            if step.upload is not None:
                # Copied again only when the file's content changes; the step then installs it (sha256 checked).
                copy = command.remote.CopyToRemote(
                    f"{step.node}-{step.name}-copy",
                    connection=connection,
                    source=pulumi.FileAsset(step.upload.source),
                    remote_path=step.upload.staged,
                    opts=pulumi.ResourceOptions(parent=owner, depends_on=depends),
                )
                depends = [*depends, copy]
            self.commands[f"{step.node}/{step.name}"] = owner.commands[step.name] = command.remote.Command(
                f"{step.node}-{step.name}",
                connection=connection,
                create=step.create,
                update=self._update_command(step),
                delete=step.delete,
                stdin=_stdin(step, secrets, placeholders),
                # No step reads PULUMI_COMMAND_STDOUT; sshd (AcceptEnv) refuses it anyway and the engine warned on
                # every delete.
                add_previous_output_in_env=False,
                # Output of a step that handles secrets is neither streamed nor kept in clear in the state.
                logging=command.remote.Logging.NONE if step.secret else command.remote.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(
                    parent=owner,
                    depends_on=depends,
                    additional_secret_outputs=["stdout", "stderr"] if step.secret else None,
                    delete_before_replace=True,
                ),
            )
        for owner in owners.values():
            owner.finish()
        self.register_outputs({"steps": len(self.commands)})

    def _update_command(self, step: Step) -> pulumi.Input[str] | None:
        """The step's update command; for a step that manages drift keys, followed by a shell comment carrying the
        keys' drift counters. A refresh that found one drifted raises its counter, which changes the comment, so the
        step runs again (an update: pulumi-command would replace a step whose `triggers` change, running a
        service step's delete) and repairs what it manages."""
        if not step.drift_keys:
            return step.update
        command_text = step.update or step.create
        return (
            self.drift[step.node]
            .generations_of(step.drift_keys)
            .apply(lambda counts: f"{command_text}\n# drift counters: {' '.join(map(str, counts))}")
        )


def _stdin(
    step: Step, secrets: pulumi.Output[ClusterSecrets], placeholders: ClusterSecrets
) -> pulumi.Input[str] | None:
    if step.stdin is None:
        return None
    render = step.stdin
    if step.secret:
        return pulumi.Output.secret(secrets.apply(render))
    # Non-secret content (pgpool.conf, scripts...) is rendered without the secrets, so `pulumi preview --diff` shows
    # it in clear for review. The unit tests prove such content does not depend on any secret.
    return render(placeholders)
