"""The provisioning as data: an ordered list of Steps, each one idempotent shell command run over SSH.

Consumed by the Pulumi component (components/database.py: one remote.Command per Step), and by the render command
for review. Rules every step follows:
- the command runs as the admin user and escalates with `sudo -n`;
- no secret in a command string: secret content (files, SQL with passwords) comes on stdin;
- idempotent, with state checks (a node that already belongs to the cluster is never re-bootstrapped or re-cloned,
  whichever node is primary now) and one final line `changed: ...` / `unchanged: ...`;
- one step per file, so a changed setting touches that file's step and the service step only.

Reload vs restart: the pgpool-service step's command embeds fingerprints of pgpool's restart-only and reloadable
settings (components.services.service_fingerprints). When pgpool.conf changes, the command string changes, so Pulumi
runs `update` (no `triggers`, which would replace the resource and run its delete = stop pgpool). On the server the
step compares the fingerprints with the ones it applied last (/var/lib/pgha/pgpool.applied) and restarts, reloads,
or does nothing (a step the engine runs again after an interrupted `up` gets the same decision). Secret files are
handled the same way by the pgpool-secrets step, whose fingerprints come on stdin (a secret) instead of in the command.

Every step's bash program is a template, templates/steps/<step>.sh.j2 (the generic writers put-file, put-block and
install-upload too), rendered with the names every template sees (components.templating.shared_values). This module
builds the step graph: one function per concern, composed by provisioning_plan. Each host's rendered files and
fingerprints come from components.render once (cluster_facts).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .config import ClusterConfig, Node
from .crypto import scram_salt, scram_sha256_verifier
from .paths import (
    APPLY_RESTART,
    DATABASE_MONITORING_UNITS,
    MONITORING_VALUES,
    REPOSITORY_MONITORING_UNITS,
    REPOSITORY_PATH,
    REPOSITORY_USER,
    pgha_conf,
)
from .render import HostFacts, ServerFile, cluster_facts
from .secrets import ClusterSecrets
from .templating import step_program


@dataclass(frozen=True)
class Upload:
    """A file of the machine running Pulumi that a step installs: the Pulumi component copies it over SFTP (a
    CopyToRemote resource, re-copied when its content changes) to `staged`, relative to the SSH user's home; the
    step's command checks its sha256 and installs it."""

    source: str  # path on the machine running Pulumi
    staged: str  # relative to the SSH user's home


@dataclass(frozen=True)
class Step:
    node: str  # node name it runs on
    name: str  # unique within the node; the Pulumi resource will be f"{node}-{name}"
    create: str  # full command line run over SSH by the admin user's shell (NO secret ever inside)
    update: str | None = None  # run instead of create when the step's inputs change (None: run create again)
    delete: str | None = None  # run on `pulumi destroy`
    stdin: Callable[[ClusterSecrets], str] | None = None  # content piped to the command (files, passwords)
    secret: bool = False  # stdin is derived from secrets: Pulumi wraps it as a secret, render shows placeholders
    after: tuple[str, ...] = ()  # dependencies, as "node/name"
    upload: Upload | None = None  # a local file copied to the node before the command runs
    # Managed paths and units whose drift (components.drift, found by `pulumi refresh`) runs this step's update again.
    drift_keys: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.node}/{self.name}"


def _sudo_script(name: str, script: str, *args: str) -> str:
    """`sudo -n bash -c '<script>' <name> <args>`: the script is code, never data; args are plain words."""
    body = "set -euo pipefail\n" + script.strip() + "\n"
    return " ".join(["sudo -n /bin/bash -c", shlex.quote(body), shlex.quote(f"pgha-{name}"), *map(shlex.quote, args)])


def _command(config: ClusterConfig, step: str, *args: str, name: str | None = None, **values: object) -> str:
    """The command that runs templates/steps/<step>.sh.j2 (as `pgha-<name>`, the step's name unless given)."""
    return _sudo_script(name or step.removesuffix(".delete"), step_program(step, config, **values), *args)


def provisioning_packages(config: ClusterConfig) -> list[str]:
    """Every package the packages step makes sure is installed (a package mirror must carry them and their
    dependencies)."""
    pg = config.postgresql.version
    packages = [
        f"postgresql-{pg}",
        f"postgresql-client-{pg}",
        "pgpool2",
        "libpgpool2",
        f"postgresql-{pg}-pgpool2",
        "iputils-arping",
        "sudo",
        "openssh-server",
        "openssh-client",
        "iproute2",
    ]
    if config.firewall.enabled:
        packages.append("nftables")
    if config.backup is not None:
        packages.append("pgbackrest")
    if config.monitoring_enabled:
        packages += ["prometheus-node-exporter", "prometheus-postgres-exporter"]
    return packages


def repository_packages(config: ClusterConfig) -> list[str]:
    """What the backup repository host needs: pgBackRest and ssh (no PostgreSQL server)."""
    packages = ["pgbackrest", "openssh-server", "openssh-client", *(["nftables"] if config.firewall.enabled else [])]
    if config.monitoring_enabled:
        packages += ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
    return packages


def pinned_packages(config: ClusterConfig) -> list[str]:
    """`package=version` for every package whose exact version the stack config pins (postgresql / pgpool)."""
    pg = config.postgresql.version
    pins = []
    if config.postgresql.package_version:
        pins += [f"{p}={config.postgresql.package_version}" for p in (f"postgresql-{pg}", f"postgresql-client-{pg}")]
    if config.pgpool.package_version:
        pins += [f"{p}={config.pgpool.package_version}" for p in ("pgpool2", "libpgpool2", f"postgresql-{pg}-pgpool2")]
    return pins


def _packages_command(config: ClusterConfig, role: str) -> str:
    """A database node's packages (and pinned versions), or the repository host's (role "repository")."""
    if role == "repository":
        packages, pins = repository_packages(config), []
    else:
        packages, pins = provisioning_packages(config), pinned_packages(config)
    return _command(config, "packages", role=role, packages=packages, pins=pins)


def _file_step_name(path: str) -> str:
    slug = path.strip("/").replace("/", "-").replace("@", "-").replace(".", "")
    return f"file-{slug}"


def drift_observe_command(config: ClusterConfig) -> str:
    """What `pulumi refresh` runs on every host (components.drift): the manifest compared with the server."""
    return _command(config, "drift-observe")


def put_file_command(config: ClusterConfig, file: ServerFile) -> str:
    if file.kind == "block":
        return _command(config, "put-block", file.path)
    notify = ""
    if file.service == "pgpool2" and file.apply != "none":
        # pgpool-service applies a rewritten file even when the settings' fingerprints did not change (a repair).
        notify = "pgpool-restart" if file.apply == "restart" else "pgpool-reload"
    return _command(config, "put-file", file.path, file.mode, f"{file.owner}:{file.group}", file.validate or "", notify)


def _file_step(config: ClusterConfig, facts: HostFacts, file: ServerFile, after: Sequence[str]) -> Step:
    return Step(
        facts.host.name,
        _file_step_name(file.path),
        put_file_command(config, file),
        stdin=facts.content(file.path),
        secret=file.secret,
        after=tuple(after),
        drift_keys=(file.path,) if file.kind == "file" else (),
    )


def _applied_by(facts: HostFacts, service: str) -> tuple[str, ...]:
    """The managed files whose change `service`'s step applies (reload or restart): a repaired one runs it again."""
    return tuple(f.path for f in facts.files if f.service == service and f.apply != "none" and f.kind == "file")


def _roles_sql(config: ClusterConfig) -> Callable[[ClusterSecrets], str]:
    """The roles and their passwords, as SCRAM verifiers (the plain text never reaches the server)."""
    pg = config.postgresql

    def sql(secrets: ClusterSecrets) -> str:
        def verifier(role: str, password: str) -> str:
            return scram_sha256_verifier(password, scram_salt(secrets.pgpool_key, role))

        verifiers = {
            "replication": verifier(pg.replication_user, secrets.replication_password),
            "check": verifier(pg.check_user, secrets.pgpool_password),
            "recovery": verifier(pg.recovery_user, secrets.postgres_password),
        }
        return step_program("roles.sql", config, verifiers=verifiers)

    return sql


def _secret_fingerprints(facts: HostFacts) -> Callable[[ClusterSecrets], str]:
    """pgpool's (restart, reload) fingerprints of its secret files, for a step's stdin."""
    fingerprints = facts.secret_fingerprints(("pgpool2",))

    def stdin(secrets: ClusterSecrets) -> str:
        restart, reload = fingerprints(secrets)[0]
        return f"{restart} {reload}\n"

    return stdin


@dataclass
class _Graph:
    """The steps so far and the groups of refs later steps wait for."""

    config: ClusterConfig
    facts: dict[str, HostFacts]
    steps: list[Step] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # phase 0: nothing is written before they pass
    files: dict[str, list[str]] = field(default_factory=dict)  # per node: its files, host keys, firewall, kernel
    repository: list[str] = field(default_factory=list)  # the repository host's setup
    ready: list[str] = field(default_factory=list)  # PostgreSQL in its role on every node
    rolled: list[str] = field(default_factory=list)  # the last steps of the roll-out so far

    def add(self, *steps: Step) -> list[str]:
        self.steps += steps
        return [step.ref for step in steps]


# --- phase 0: checks before anything is written ------------------------------------------------------------------
def _checks(graph: _Graph) -> None:
    """Packages, then a change to `nodes` or to a hot-standby setting checked on every node that is already a member
    before any node writes anything (every directories step, and so every file, waits for every check). The
    hot-standby check's create (the stack's first `up` on that node) also refuses a cluster the stack did not make;
    postgresql-trial starts the PostgreSQL configuration this up would write in a scratch cluster."""
    config = graph.config
    hot_standby = graph.facts[config.nodes[0].name].hot_standby
    for node in config.nodes:
        n = node.name

        def hot_standby_check(first_up: bool, node: Node = node) -> str:
            return _command(config, "hot-standby-check", hot_standby=hot_standby, first_up=first_up, node=node)

        graph.add(Step(n, "packages", _packages_command(config, "database")))
        graph.checks += graph.add(
            Step(n, "membership-check", _command(config, "membership-check"), after=(f"{n}/packages",)),
            Step(n, "hot-standby-check", hot_standby_check(first_up=True), update=hot_standby_check(first_up=False),
                 after=(f"{n}/packages",)),
        )  # fmt: skip
    # The trial, the slowest check, waits for every node's quick ones: an up they refuse never runs it, so the state
    # keeps the trial of the configuration last written, and the next up with that configuration has nothing to redo.
    quick_checks = tuple(graph.checks)
    for node in config.nodes:
        graph.checks += graph.add(
            Step(node.name, "postgresql-trial", _command(config, "postgresql-trial"),
                 stdin=graph.facts[node.name].content(pgha_conf(config)), after=quick_checks),
        )  # fmt: skip


def _host_keys_and_firewall(graph: _Graph, host: Node, scanned: Sequence[Node], after: Sequence[str]) -> list[str]:
    """Pinned ssh host keys of `scanned` (for postgres, or the repository's user), and the firewall rules."""
    config, h = graph.config, host.name
    repository = config.backup is not None and host == config.backup.host
    user = REPOSITORY_USER if repository else "postgres"
    known_hosts = f"/home/{REPOSITORY_USER}/.ssh/known_hosts" if repository else "/var/lib/postgresql/.ssh/known_hosts"
    hosts_ref = f"{h}/{_file_step_name('/etc/hosts')}"
    fw_after = [f"{h}/packages"]
    if config.firewall.enabled:
        fw_after.append(f"{h}/{_file_step_name('/etc/nftables.conf')}")
    return graph.add(
        Step(h, "ssh-known-hosts", _command(config, "ssh-known-hosts", name="known-hosts", hosts=scanned,
                                            known_hosts=known_hosts, owner=user),
             after=(hosts_ref, *after)),
        Step(h, "firewall", _command(config, "firewall"), after=tuple(fw_after),
             drift_keys=("/etc/nftables.conf",) if config.firewall.enabled else ()),
    )  # fmt: skip


def _repository_host(graph: _Graph) -> None:
    """The repository host's packages, user, files, pinned host keys and firewall (no database node needed). Like
    every node's, its directories step (and so every file) waits for the nodes' phase-0 checks: a refused change
    writes nothing anywhere."""
    config = graph.config
    assert config.backup is not None
    host = config.backup.host
    r, user = host.name, REPOSITORY_USER
    directories = [
        "/var/lib/pgha:0755:root:root",
        *(f"{d}:{m}:{user}:{user}" for d, m in ((f"/home/{user}", "0750"), (f"/home/{user}/.ssh", "0700"))),
        *(f"{d}:0750:{user}:{user}" for d in (REPOSITORY_PATH, "/var/log/pgbackrest", "/var/spool/pgbackrest")),
    ]
    graph.add(
        Step(r, "packages", _packages_command(config, "repository")),
        Step(r, "directories", _command(config, "directories", role="repository", directories=directories),
             after=(f"{r}/packages", *graph.checks)),
    )  # fmt: skip
    facts = graph.facts[r]
    graph.repository += graph.add(*(_file_step(config, facts, file, [f"{r}/directories"]) for file in facts.files))
    # After each node's first command: a new VM's sshd answers by then.
    nodes_up = [f"{n.name}/packages" for n in config.nodes]
    graph.repository += _host_keys_and_firewall(graph, host, config.nodes, nodes_up)


def _node_directories(config: ClusterConfig) -> list[str]:
    dirs = [
        "/var/lib/pgha:0755:root:root",
        "/var/log/pgpool:0750:postgres:postgres",
        "/var/lib/pgpool:0700:postgres:postgres",
        "/var/lib/postgresql/.ssh:0700:postgres:postgres",
        "/etc/pgpool2/scripts:0750:root:postgres",
        "/usr/local/lib/pgha:0755:root:root",
        "/etc/systemd/system/pgpool2.service.d:0755:root:root",
        f"/etc/systemd/system/postgresql@{config.postgresql.version}-main.service.d:0755:root:root",
    ]
    if config.backup is not None:  # pgBackRest's log and the async archive's spool, written by archive_command
        dirs += ["/var/log/pgbackrest:0750:postgres:postgres", "/var/spool/pgbackrest:0750:postgres:postgres"]
    return dirs


# --- phase 1: every node's files (except those in the data directory), host keys, firewall, PostgreSQL configured
def _node_files(graph: _Graph, node: Node) -> None:
    config, n = graph.config, node.name
    facts = graph.facts[n]
    data_dir = config.pg_data_directory + "/"
    graph.add(Step(n, "directories", _command(config, "directories", role="database",
                                              directories=_node_directories(config)),
                   after=(f"{n}/packages", *graph.checks)))  # fmt: skip
    graph.files[n] = []
    pg_refs = []
    for file in facts.files:
        if file.path.startswith(data_dir):
            continue
        after = [f"{n}/directories", *([f"{n}/packages"] if file.path == "/etc/nftables.conf" else [])]
        [ref] = graph.add(_file_step(config, facts, file, after))
        graph.files[n].append(ref)
        if file.service == "postgresql" or file.path.startswith(("/var/lib/postgresql/.", "/usr/local/lib/pgha/")):
            pg_refs.append(ref)
    hosts_ref = f"{n}/{_file_step_name('/etc/hosts')}"
    # The repository host's key too, once its sshd has answered (its first command).
    repository_up = [f"{config.backup.host.name}/packages"] if config.backup is not None else []
    graph.files[n] += _host_keys_and_firewall(graph, node, config.all_hosts, repository_up)
    sysctl_ref = f"{n}/{_file_step_name('/etc/sysctl.d/60-pgha.conf')}"
    graph.files[n] += graph.add(Step(n, "kernel-settings", _command(config, "kernel-settings"), after=(sysctl_ref,),
                                     drift_keys=("/etc/sysctl.d/60-pgha.conf",)))  # fmt: skip
    restart, reload = facts.fingerprints["postgresql"]
    graph.add(Step(n, "postgresql-config", _command(config, "postgresql-config", fingerprint=f"{restart}-{reload}"),
                   after=(*pg_refs, hosts_ref), drift_keys=_applied_by(facts, "postgresql")))  # fmt: skip


# --- phase 2 and 3: the data ---------------------------------------------------------------------------------------
def _data(graph: _Graph) -> None:
    """The first primary (once), then the standbys from whichever node is primary; then the online-recovery scripts
    in every data directory (after the clone replaced it)."""
    config = graph.config
    primary = config.primary_node
    graph.ready = graph.add(
        Step(primary.name, "primary-bootstrap",
             _command(config, "primary-bootstrap", node=primary),
             stdin=_roles_sql(config), secret=True, after=(f"{primary.name}/postgresql-config",))
    )  # fmt: skip
    [bootstrap] = graph.ready
    for node in config.standby_nodes:
        n = node.name
        graph.ready += graph.add(
            Step(n, "standby-clone", _command(config, "standby-clone", node=node),
                 after=(f"{n}/postgresql-config", bootstrap, f"{n}/ssh-known-hosts"))
        )  # fmt: skip
    data_dir = config.pg_data_directory + "/"
    for node in config.nodes:
        own = bootstrap if node == primary else f"{node.name}/standby-clone"
        facts = graph.facts[node.name]
        in_data = [file for file in facts.files if file.path.startswith(data_dir)]
        graph.files[node.name] += graph.add(*(_file_step(config, facts, file, [own]) for file in in_data))


# --- membership and the pgpool roll-out -------------------------------------------------------------------------
def _membership(graph: _Graph) -> list[str]:
    """templates/usr/local/lib/pgha/pgha-members: the command lists the nodes, so a change to `nodes` runs it on every
    node before any pgpool restarts: it refuses when the primary is not among them, and stops the pgpools of removed
    nodes. Its delete, on a removed node (run after every update): stop PostgreSQL, drop the slot."""
    config = graph.config
    names = [n.name for n in config.nodes]
    return graph.add(
        *(
            Step(n, "cluster-member", _command(config, "cluster-member"),
                 delete=_command(config, "cluster-member.delete", name="cluster-leave"),
                 after=(*graph.files[n], *graph.ready, f"{n}/postgresql-config"))
            for n in names
        )
    )  # fmt: skip


def _pgpool_rollout(graph: _Graph, members: list[str]) -> None:
    """pgpool on every node, once all its files are in place and PostgreSQL is ready on all nodes. One node after the
    other (Pulumi would otherwise restart every pgpool at once and leave no VIP holder for a while). Then the new
    backends attached once every pgpool knows them (pgha-members attach; the command lists the nodes)."""
    config = graph.config
    previous = members
    vip = f"{config.vip}/{config.prefix_length}"
    for node in config.nodes:
        n = node.name
        restart_fp, reload_fp = graph.facts[n].fingerprints["pgpool2"]
        if config.pgpool.package_version:  # a new pgpool package: the same rolling restart as a restart-only setting
            restart_fp = f"{restart_fp}-{config.pgpool.package_version}"
        previous = graph.add(
            Step(n, "pgpool-service", _command(config, "pgpool-service", restart_fp, reload_fp),
                 delete=_command(config, "pgpool-service.delete", vip, config.vip_interface, name="pgpool-stop"),
                 after=(*graph.files[n], *graph.ready, *previous),
                 drift_keys=("pgpool2", *_applied_by(graph.facts[n], "pgpool2")))
        )  # fmt: skip
    attach = graph.add(
        *(
            Step(n.name, "cluster-attach", _command(config, "cluster-attach"), after=tuple(previous))
            for n in config.nodes
        )
    )
    graph.rolled = [*previous, *attach]


def _fencing(graph: _Graph) -> None:
    """Fencing of an isolated primary: once PostgreSQL runs in its role on every node."""
    config = graph.config
    wanted = "on" if config.fencing.enabled else "off"
    for node in config.nodes:
        n = node.name
        fingerprint, _ = graph.facts[n].fingerprints["pgha-fence"]
        graph.add(
            Step(n, "fence-service", _command(config, "fence-service", fingerprint, wanted),
                 delete=_command(config, "fence-service.delete", name="fence-stop"),
                 after=(*graph.files[n], *graph.ready))
        )  # fmt: skip


def _rolling_restart(graph: _Graph) -> None:
    """Restart-only PostgreSQL settings on a running cluster: the standbys one after the other, then the primary's
    switchover (templates/usr/local/lib/pgha/pgha-apply-restart). The commands carry those settings' values, so a
    change to one of them (and only then) runs these steps, and the preview shows which."""
    config = graph.config
    restart_only = graph.facts[config.nodes[0].name].restart_only  # identical on every node
    switchover = "on" if config.postgresql.switchover_on_restart else "off"
    apply_refs = [f"{n.name}/{_file_step_name(APPLY_RESTART)}" for n in config.nodes]
    previous = [*graph.rolled, *(f"{n.name}/postgresql-config" for n in config.nodes), *apply_refs]
    for phase, step_name in (("standbys", "postgresql-restart"), ("primary", "postgresql-switchover")):
        for node in config.nodes:
            command = _command(config, step_name, phase, switchover, restart_only=restart_only)
            previous = graph.add(Step(node.name, step_name, command, after=tuple(previous)))
    graph.rolled = previous


# --- backups, password rotation, monitoring ----------------------------------------------------------------------
def _backups(graph: _Graph) -> None:
    """Once every node runs with its archive settings (restarted if they changed), the stanza exists and archiving
    works, then the schedule. The repository keeps its backups when the stack is destroyed."""
    config = graph.config
    if config.backup is None:
        return
    r = config.backup.host.name
    schedule_fp, _ = graph.facts[r].fingerprints["pgha-backup"]
    [stanza] = graph.add(
        Step(r, "backup-stanza", _command(config, "backup-stanza"), after=(*graph.repository, *graph.rolled))
    )
    graph.add(
        Step(r, "backup-schedule", _command(config, "backup-schedule", schedule_fp),
             delete=_command(config, "backup-schedule.delete", name="backup-schedule-stop"), after=(stanza,))
    )  # fmt: skip


def _password_rotation(graph: _Graph) -> None:
    """Password changes, whichever node is primary now: health checks pause on every pgpool, the primary sets the new
    passwords, then every pgpool reloads them (once every running PostgreSQL takes them) and resumes its checks."""
    config = graph.config
    holds = [
        Step(n.name, "passwords-hold", _command(config, "passwords-hold"),
             stdin=_secret_fingerprints(graph.facts[n.name]), secret=True, after=tuple(graph.rolled))
        for n in config.nodes
    ]  # fmt: skip
    roles = [
        Step(n.name, "passwords-roles", _command(config, "passwords-roles"), stdin=_roles_sql(config), secret=True,
             after=tuple(h.ref for h in holds))
        for n in config.nodes
    ]  # fmt: skip
    graph.add(*holds, *roles)
    graph.add(
        *(
            Step(n.name, "pgpool-secrets", _command(config, "pgpool-secrets"),
                 stdin=_secret_fingerprints(graph.facts[n.name]), secret=True,
                 after=(f"{n.name}/pgpool-service", *(r.ref for r in roles)))
            for n in config.nodes
        )
    )  # fmt: skip


def _monitoring_step(config: ClusterConfig, facts: HostFacts, units: tuple[str, ...], after: Sequence[str]) -> Step:
    """The monitoring services of a host, restarted when their files change (the secret ones' fingerprint travels on
    stdin, as a secret: postgres_exporter's password)."""
    specs = [f"{unit}={facts.fingerprints[unit][0]}" for unit in units]
    with_secrets = any(f.secret and f.service in units for f in facts.files)
    fingerprints = facts.secret_fingerprints(units)

    def secret_fingerprint(secrets: ClusterSecrets) -> str:
        return " ".join(restart for restart, _ in fingerprints(secrets)) + "\n"

    return Step(
        facts.host.name,
        "monitoring-services",
        _command(config, "monitoring-services", "stdin" if with_secrets else "-", *specs),
        delete=_command(config, "monitoring-services.delete", *units, name="monitoring-stop"),
        stdin=secret_fingerprint if with_secrets else None,
        secret=with_secrets,
        after=tuple(after),
    )


def _sha256_of(path: str) -> Callable[[ClusterSecrets], str]:
    def digest(_secrets: ClusterSecrets) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() + "\n"

    return digest


def _upload_step(
    config: ClusterConfig, host: Node, name: str, source: str, dst: str, mode: str, unit: str | None, after: str
) -> Step:
    """Install a file of the machine running Pulumi at `dst` (root-owned), restarting `unit` when it changed."""
    staged = f"pgha-uploads/{PurePosixPath(source).name}"
    return Step(
        host.name,
        name,
        _command(config, "install-upload", staged, dst, mode, unit or "-"),
        stdin=_sha256_of(source),
        after=(after,),
        upload=Upload(source=source, staged=staged),
    )


def _monitoring(graph: _Graph) -> None:
    """Exporters and pgha-metrics on every node (the check user's password comes with the files), and Prometheus,
    Alertmanager on the repository host. pgpool2_exporter and the Grafana dashboard are files of the machine running
    Pulumi (monitoring.*)."""
    config = graph.config
    if not config.monitoring_enabled or config.backup is None:
        return
    monitoring = config.monitoring
    for node in config.nodes:
        n = node.name
        [exporter] = graph.add(
            _upload_step(config, node, "pgpool2-exporter-binary", monitoring.pgpool_exporter_binary,
                         str(MONITORING_VALUES["pgpool_exporter_binary"]), "0755", "pgha-pgpool2-exporter",
                         f"{n}/directories")
        )  # fmt: skip
        # After a password change reached the roles (pgpool-secrets).
        waits = (*graph.files[n], *graph.ready, f"{n}/pgpool-secrets", exporter)
        graph.add(_monitoring_step(config, graph.facts[n], DATABASE_MONITORING_UNITS, waits))
    host = config.backup.host
    graph.add(
        _upload_step(config, host, "grafana-dashboard", monitoring.grafana_dashboard,
                     str(MONITORING_VALUES["grafana_dashboard_file"]), "0644", None, f"{host.name}/directories"),
        _monitoring_step(config, graph.facts[host.name], REPOSITORY_MONITORING_UNITS, graph.repository),
    )  # fmt: skip


def provisioning_plan(config: ClusterConfig) -> list[Step]:
    """Every step for every node, in a valid dependency order."""
    graph = _Graph(config, cluster_facts(config))
    _checks(graph)
    if config.backup is not None:  # the repository host: set up alongside the nodes, no database needed
        _repository_host(graph)
    for node in config.nodes:
        _node_files(graph, node)
    _data(graph)
    _pgpool_rollout(graph, _membership(graph))
    _fencing(graph)
    _rolling_restart(graph)
    _backups(graph)
    _password_rotation(graph)
    _monitoring(graph)
    _check_order(graph.steps)
    return graph.steps


def _check_order(steps: list[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.ref in seen:
            raise ValueError(f"duplicate step {step.ref}")
        missing = [ref for ref in step.after if ref not in seen]
        if missing:
            raise ValueError(f"step {step.ref} runs before {missing}")
        seen.add(step.ref)


def plan_digest(steps: list[Step]) -> str:
    """Stable digest of the plan's commands (for tests and logs)."""
    return hashlib.sha256("\n".join(f"{s.ref} {s.create}" for s in steps).encode()).hexdigest()[:16]
