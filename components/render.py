"""Every file provisioning puts on a server, rendered from templates/ without Pulumi.

The templates tree mirrors the server's file system: templates/etc/pgpool2/pgpool.conf.j2 lands at
/etc/pgpool2/pgpool.conf. A path segment may hold a placeholder ({pg_version}) filled from the config. Each template
starts with a Jinja comment holding its metadata:

    {#- pgha: mode=0600 owner=postgres group=postgres secret=true service=pgpool2 apply=reload -#}

mode/owner/group: what the file gets; secret: content derives from ClusterSecrets (0600 and hidden in Pulumi);
service + apply: which service a change concerns and how (none, reload, restart, or params: per parameter, for
pgpool.conf and PostgreSQL's conf.d); kind=block: the content is a marked block kept at the top of an existing file
(/etc/hosts); validate=visudo|nft: checked before it replaces the old file; when=firewall: only with the firewall on;
when=backup: only with backups configured; role=database (default), repository (the backup repository host only)
or all: which hosts get the file (templates see `role`).
Directories `partials/` (Jinja includes), `cloud-init/` (VM seed) and `steps/` (what the provisioning steps run,
components.plan) are not server files.

What the files mean for provisioning (fingerprints, restart-only and hot-standby values) is computed here once per
host (cluster_facts), from the knowledge in components.services.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import ClusterConfig, Node
from .crypto import pcp_md5, pgpool_aes
from .paths import (
    DATABASE_MONITORING_UNITS,
    MONITORING_VALUES,
    REPOSITORY_MONITORING_UNITS,
)
from .secrets import ClusterSecrets
from .services import hot_standby_minimums, parse_settings, postgresql_restart_only, service_fingerprints
from .templating import TEMPLATE_DIR, environment, shared_values

# Importable from here too: the lab reads settings with the product's own reader (lab/net.py), the Pulumi program
# takes the monitoring paths (__main__.py).
__all__ = [
    "MONITORING_VALUES",
    "TEMPLATE_DIR",
    "HostFacts",
    "ServerFile",
    "cluster_facts",
    "host_facts",
    "parse_settings",
    "render_node_files",
    "render_tree",
]

# Templates that are no server file: Jinja includes, the VM seed, the provisioning steps' programs.
NOT_SERVER_FILES = ("partials", "cloud-init", "steps")
_META = re.compile(r"^\{#-?\s*pgha:(?P<meta>[^#]*)-?#\}")


@dataclass(frozen=True)
class ServerFile:
    path: str
    content: str
    mode: str
    owner: str
    group: str
    secret: bool
    # What a change means for a running service: service None or apply "none": nothing to do.
    service: str | None = None
    apply: str = "none"  # none | reload | restart | params
    kind: str = "file"  # file | block (a marked block at the top of an existing file)
    validate: str | None = None  # visudo | nft
    daemon_reload: bool = False  # a systemd unit drop-in
    template: str = ""  # template path relative to templates/, for review and tests

    @property
    def is_script(self) -> bool:
        return self.content.startswith("#!/bin/bash")


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _path_values(config: ClusterConfig) -> dict[str, str]:
    return {"pg_version": str(config.postgresql.version)}


def server_path(template: str, config: ClusterConfig) -> str:
    """templates-relative template path -> absolute server path ('.j2' dropped, {placeholders} filled)."""
    path = template.removesuffix(".j2")
    return "/" + path.format(**_path_values(config))


def template_paths() -> list[str]:
    paths = []
    for path in sorted(TEMPLATE_DIR.rglob("*.j2")):
        relative = path.relative_to(TEMPLATE_DIR).as_posix()
        if relative.split("/", 1)[0] in NOT_SERVER_FILES:
            continue
        paths.append(relative)
    return paths


def _metadata(source: str, template: str) -> dict[str, str]:
    match = _META.match(source)
    if not match:
        raise ValueError(f"templates/{template}: first line must be a '{{#- pgha: ... -#}}' metadata comment")
    meta = {}
    for item in match["meta"].split():
        key, _, value = item.partition("=")
        meta[key] = value
    for key in ("mode", "owner", "group"):
        if key not in meta:
            raise ValueError(f"templates/{template}: metadata lacks {key}=")
    return meta


def context(config: ClusterConfig, node: Node, secrets: ClusterSecrets) -> dict[str, object]:
    index = config.nodes.index(node)
    timing = config.pgpool.timing
    vip, prefix, dev = config.vip, config.prefix_length, config.vip_interface
    key = secrets.pgpool_key
    passwords = ("postgres_password", "replication_password", "pgpool_password", "pcp_password")
    return {
        **shared_values(config),
        "secrets": secrets,
        "node": node,
        "role": "database",
        "node_index": index,
        "wd_priority": len(config.nodes) - index if timing.distinct_wd_priority else 1,
        "aes": {name: pgpool_aes(getattr(secrets, name), key) for name in passwords},
        "pgpass": {name: _pgpass_escape(getattr(secrets, name)) for name in passwords},
        "pcp_md5": pcp_md5(secrets.pcp_password),
        "if_up_cmd": f"/usr/bin/sudo -n /usr/sbin/ip addr add $_IP_$/{prefix} dev {dev} label {dev}:0",
        "if_down_cmd": f"/usr/bin/sudo -n /usr/sbin/ip addr del $_IP_$/{prefix} dev {dev}",
        "arping_cmd": f"/usr/bin/sudo -n /usr/bin/arping -U $_IP_$ -w 1 -I {dev}",
        "vip": vip,
        # Bounded (see pgpool.conf): long enough for a primary that is still starting (cold start of the cluster).
        "search_primary_node_timeout": 30,
    }


def repository_context(config: ClusterConfig, secrets: ClusterSecrets) -> dict[str, object]:
    """What a template rendered for the backup repository host sees (role == "repository")."""
    assert config.backup is not None
    return {**shared_values(config), "secrets": secrets, "node": config.backup.host, "role": "repository"}


def _wanted(meta: dict[str, str], config: ClusterConfig, role: str) -> bool:
    if meta.get("role", "database") not in (role, "all"):
        return False
    if meta.get("when") == "firewall" and not config.firewall.enabled:
        return False
    if meta.get("when") == "monitoring" and not config.monitoring_enabled:
        return False
    return not (meta.get("when") == "backup" and config.backup is None)


def _render_files(config: ClusterConfig, values: dict[str, object], role: str) -> list[ServerFile]:
    env = environment()
    files = []
    for template in template_paths():
        source = (TEMPLATE_DIR / template).read_text()
        meta = _metadata(source, template)
        if not _wanted(meta, config, role):
            continue
        content = env.get_template(template).render(values)
        files.append(
            ServerFile(
                path=server_path(template, config),
                content=content,
                mode=meta["mode"],
                owner=meta["owner"],
                group=meta["group"],
                secret=meta.get("secret") == "true",
                service=meta.get("service"),
                apply=meta.get("apply", "none"),
                kind=meta.get("kind", "file"),
                validate=meta.get("validate"),
                daemon_reload=meta.get("daemon_reload") == "true",
                template=template,
            )
        )
    return files


def render_node_files(config: ClusterConfig, node: Node, secrets: ClusterSecrets) -> list[ServerFile]:
    """Every file a host gets: a database node's, or the repository host's (templates with role=repository)."""
    if config.backup is not None and node == config.backup.host:
        return _render_files(config, repository_context(config, secrets), "repository")
    return _render_files(config, context(config, node, secrets), "database")


def render_tree(config: ClusterConfig, secrets: ClusterSecrets, out_dir: str | Path) -> list[Path]:
    """Write every node's files at <out>/<node>/<server path> (a block file holds just the managed block)."""
    written = []
    for node in config.all_hosts:
        for file in render_node_files(config, node, secrets):
            target = Path(out_dir) / node.name / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
            target.chmod(int(file.mode, 8) & 0o755 | 0o600)
            written.append(target)
    return written


@dataclass
class HostFacts:
    """What a host's rendered files mean for provisioning, computed once per host: the files (with placeholder
    secrets), each service's (restart, reload) fingerprints, the restart-only and hot-standby PostgreSQL values.
    Anything derived from the real secrets is a function of them (a step's stdin), rendered once per secrets."""

    config: ClusterConfig
    host: Node
    files: list[ServerFile]
    fingerprints: dict[str, tuple[str, str]]
    restart_only: list[str]  # `name=value` of every restart-only PostgreSQL setting
    hot_standby: dict[str, str]  # the settings a standby may not run lower than its primary
    _rendered: dict[ClusterSecrets, list[ServerFile]] = field(default_factory=dict, repr=False)

    def _with(self, secrets: ClusterSecrets) -> list[ServerFile]:
        if secrets not in self._rendered:
            self._rendered[secrets] = render_node_files(self.config, self.host, secrets)
        return self._rendered[secrets]

    def content(self, path: str) -> Callable[[ClusterSecrets], str]:
        """The file at `path` rendered with the real secrets."""

        def content(secrets: ClusterSecrets) -> str:
            return next(f.content for f in self._with(secrets) if f.path == path)

        return content

    def secret_fingerprints(self, services: tuple[str, ...]) -> Callable[[ClusterSecrets], list[tuple[str, str]]]:
        """(restart, reload) fingerprints of each service's secret files, rendered with the real secrets."""

        def fingerprints(secrets: ClusterSecrets) -> list[tuple[str, str]]:
            files = self._with(secrets)
            return [
                service_fingerprints(files, service, pgpool_version=self.config.pgpool.version, secret=True)
                for service in services
            ]

        return fingerprints


# Every service whose files a step fingerprints.
SERVICES = (
    "postgresql",
    "pgpool2",
    "pgha-fence",
    "pgha-backup",
    *DATABASE_MONITORING_UNITS,
    *REPOSITORY_MONITORING_UNITS,
)


def _postgresql_values(files: list[ServerFile]) -> tuple[list[str], dict[str, str]]:
    restart_only: list[str] = []
    hot_standby = hot_standby_minimums()
    for file in files:
        if file.service == "postgresql" and file.apply == "params":
            settings = sorted(parse_settings(file.content).items())
            restart_only += [f"{k}={v}" for k, v in settings if postgresql_restart_only(k)]
            hot_standby.update({k: v for k, v in settings if k in hot_standby})
    return restart_only, hot_standby


def host_facts(config: ClusterConfig, host: Node) -> HostFacts:
    files = render_node_files(config, host, ClusterSecrets.placeholders())
    restart_only, hot_standby = _postgresql_values(files)
    fingerprints = {
        service: service_fingerprints(files, service, pgpool_version=config.pgpool.version) for service in SERVICES
    }
    return HostFacts(config, host, files, fingerprints, restart_only, hot_standby)


def cluster_facts(config: ClusterConfig) -> dict[str, HostFacts]:
    """Every host's facts, by host name (the database nodes, then the repository host)."""
    return {host.name: host_facts(config, host) for host in config.all_hosts}
