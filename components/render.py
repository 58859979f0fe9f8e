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
Directories `partials/` (Jinja includes) and `cloud-init/` (VM seed, not a server file) are not server files.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .config import ClusterConfig, Node
from .secrets import ClusterSecrets

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
NOT_SERVER_FILES = ("partials", "cloud-init")
SCRIPTS_DIR = "/etc/pgpool2/scripts"
LOCAL_CONF = "/etc/pgpool2/pgpool_local.conf"
SECRETS_CONF = "/etc/pgpool2/pgpool_secrets.conf"
# Empty at rest; during a password change it pauses pgpool's health checks (components.plan, passwords-hold).
HOLD_CONF = "/etc/pgpool2/pgpool_hold.conf"
# The cluster members (name address) a node recorded at its last join (pgha-members; read by membership-check).
MEMBERS_STATE = "/var/lib/pgha/members"
# The backup repository host's pgBackRest user (owns the repository; ssh from the nodes' postgres user) and path.
REPOSITORY_USER = "pgbackrest"
REPOSITORY_PATH = "/var/lib/pgbackrest"
# Monitoring (monitoring.*): the ports the firewall opens to the cluster subnet, node_exporter's textfile directory.
MONITORING_VALUES: dict[str, object] = {
    "node_exporter_port": 9100,
    "postgres_exporter_port": 9187,
    "prometheus_port": 9090,
    "alertmanager_port": 9093,
    "textfile_directory": "/var/lib/prometheus/node-exporter",
    "postgres_exporter_password_file": "/etc/prometheus/pgha-postgres-exporter.pass",
    "pgpool_exporter_port": 9719,
    "pgpool_exporter_binary": "/usr/local/bin/pgpool2_exporter",
    "pgpool_exporter_pgpass_file": "/etc/prometheus/pgha-pgpool2-exporter.pgpass",
    "grafana_dashboard_file": "/usr/local/share/pgha/grafana/pgpool2.json",
}
_META = re.compile(r"^\{#-?\s*pgha:(?P<meta>[^#]*)-?#\}")
_PLACEHOLDER = re.compile(r"^<secret:(?P<name>[a-z_]+)>$")

# pgpool-II parameters a reload (SIGHUP) applies; every other parameter needs a restart. Unknown parameters count
# as restart-only: when in doubt, restart. From pgpool-II's docs ("This parameter can be changed by reloading").
PGPOOL_RELOADABLE = frozenset(
    {
        "log_destination",
        "log_line_prefix",
        "log_error_verbosity",
        "client_min_messages",
        "log_min_messages",
        "log_connections",
        "log_disconnections",
        "log_hostname",
        "log_statement",
        "log_per_node_statement",
        "log_client_messages",
        "log_standby_delay",
        "log_directory",
        "log_filename",
        "log_truncate_on_rotation",
        "log_rotation_age",
        "log_rotation_size",
        "authentication_timeout",
        "allow_clear_text_frontend_auth",
        "enable_pool_hba",
        "child_life_time",
        "child_max_connections",
        "connection_life_time",
        "client_idle_limit",
        "ignore_leading_white_space",
        "statement_level_load_balance",
        "disable_load_balance_on_write",
        "sr_check_period",
        "sr_check_user",
        "sr_check_password",
        "sr_check_database",
        "delay_threshold",
        "health_check_period",
        "health_check_timeout",
        "health_check_user",
        "health_check_password",
        "health_check_database",
        "health_check_max_retries",
        "health_check_retry_delay",
        "connect_timeout",
        "failover_command",
        "follow_primary_command",
        "failover_on_backend_error",
        "failover_on_backend_shutdown",
        "search_primary_node_timeout",
        "detach_false_primary",
        "auto_failback",
        "auto_failback_interval",
        "recovery_user",
        "recovery_password",
        "recovery_1st_stage_command",
        "recovery_2nd_stage_command",
        "recovery_timeout",
        "client_idle_limit_in_recovery",
    }
)
# backend_* settings per node: weight, data directory and application name reload; hostname/port/flag restart.
_PGPOOL_RELOADABLE_INDEXED = ("backend_weight", "backend_data_directory", "backend_application_name")


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


def slot_name(node_name: str) -> str:
    """Replication slot of a node: slot names allow [a-z0-9_] only."""
    return node_name.replace("-", "_")


# --- pgpool-II's AES (src/utils/ssl_utils.c): EVP_BytesToKey(aes-256-cbc, sha1, no salt, key, 1 round) gives
# key and IV; AES-256-CBC with PKCS#7 padding; pool_passwd holds "AES" + base64. Byte-compatible with pg_enc
# (checked on Debian's 4.3.5). pgpool strips the trailing newline of .pgpoolkey.
def _bytes_to_key(password: bytes) -> tuple[bytes, bytes]:
    derived, block = b"", b""
    while len(derived) < 48:
        block = hashlib.sha1(block + password).digest()
        derived += block
    return derived[:32], derived[32:48]


def pgpool_aes(password: str, key: str) -> str:
    """The AES string pg_enc prints for `password` with the pgpool key `key`."""
    if _PLACEHOLDER.match(password):
        return f"AES<encrypted:{_PLACEHOLDER.match(password)['name']}>"  # type: ignore[index]
    aes_key, iv = _bytes_to_key(key.strip("\n").encode())
    padder = padding.PKCS7(128).padder()
    data = padder.update(password.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return "AES" + base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def pcp_md5(password: str) -> str:
    if _PLACEHOLDER.match(password):
        return f"<md5:{_PLACEHOLDER.match(password)['name']}>"  # type: ignore[index]
    return hashlib.md5(password.encode()).hexdigest()


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, PostgreSQL's rolpassword format).
    Given to ALTER ROLE ... PASSWORD, it is stored as is: the plain password never reaches the server, so a failing
    statement logged by PostgreSQL (log_min_error_statement) or shown in pg_stat_activity holds no password."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def scram_salt(key: str, role: str) -> bytes:
    """A per-role salt derived from the cluster's secret pgpool key: the same verifier on every run (no diff in a
    preview when nothing changed), not guessable without the key."""
    return hmac.new(key.encode(), f"pgha scram salt for {role}".encode(), "sha256").digest()[:16]


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


def pg_value(value: str | int | float | bool) -> str:
    """A postgresql.conf value: booleans as on/off, numbers bare, strings single-quoted ('' escapes a quote)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,
    )
    env.filters["pg_value"] = pg_value
    return env


def _shared_values(config: ClusterConfig, secrets: ClusterSecrets) -> dict[str, object]:
    """What every template sees, on a database node and on the backup repository host alike."""
    return {
        "config": config,
        "secrets": secrets,
        "pg_unit": f"postgresql@{config.postgresql.version}-main",
        "repository_user": REPOSITORY_USER,
        "repository_path": REPOSITORY_PATH,
        **MONITORING_VALUES,
    }


def context(config: ClusterConfig, node: Node, secrets: ClusterSecrets) -> dict[str, object]:
    index = config.nodes.index(node)
    timing = config.pgpool.timing
    vip, prefix, dev = config.vip, config.prefix_length, config.vip_interface
    key = secrets.pgpool_key
    passwords = ("postgres_password", "replication_password", "pgpool_password", "pcp_password")
    return {
        **_shared_values(config, secrets),
        "node": node,
        "role": "database",
        "node_index": index,
        "wd_priority": len(config.nodes) - index if timing.distinct_wd_priority else 1,
        "aes": {name: pgpool_aes(getattr(secrets, name), key) for name in passwords},
        "pgpass": {name: _pgpass_escape(getattr(secrets, name)) for name in passwords},
        "pcp_md5": pcp_md5(secrets.pcp_password),
        "scripts_dir": SCRIPTS_DIR,
        "local_conf": LOCAL_CONF,
        "secrets_conf": SECRETS_CONF,
        "hold_conf": HOLD_CONF,
        "members_state": MEMBERS_STATE,
        "standby_conf": f"{config.pg_config_directory}/pgha-standby.conf",
        "member_marker": f"/var/lib/postgresql/{config.postgresql.version}/pgha-member",
        "slot_name": slot_name,
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
    return {**_shared_values(config, secrets), "node": config.backup.host, "role": "repository"}


def _wanted(meta: dict[str, str], config: ClusterConfig, role: str) -> bool:
    if meta.get("role", "database") not in (role, "all"):
        return False
    if meta.get("when") == "firewall" and not config.firewall.enabled:
        return False
    if meta.get("when") == "monitoring" and not config.monitoring_enabled:
        return False
    return not (meta.get("when") == "backup" and config.backup is None)


def _render_files(config: ClusterConfig, values: dict[str, object], role: str) -> list[ServerFile]:
    env = _environment()
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


# --- what a change means for the running services ---
def parse_settings(content: str) -> dict[str, str]:
    """`name = value` lines of a pgpool.conf / postgresql.conf style file (comments and blanks skipped)."""
    settings: dict[str, str] = {}
    for raw in content.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        key = name if name != "include" else f"include:{value.strip()}"
        settings[key] = value.strip()
    return settings


# PostgreSQL settings of context 'postmaster' (they need a restart), as PostgreSQL 15 lists them
# (SELECT name FROM pg_settings WHERE context = 'postmaster'), plus later versions' additions. A setting of an
# extension (a dotted name) counts as restart-only: many are (pg_stat_statements.max), and the server decides anyway.
PG_RESTART_ONLY = frozenset(
    [
        "archive_mode",
        "autovacuum_freeze_max_age",
        "autovacuum_max_workers",
        "autovacuum_multixact_freeze_max_age",
        "bonjour",
        "bonjour_name",
        "cluster_name",
        "config_file",
        "data_directory",
        "data_sync_retry",
        "dynamic_shared_memory_type",
        "event_source",
        "external_pid_file",
        "hba_file",
        "hot_standby",
        "huge_page_size",
        "huge_pages",
        "ident_file",
        "ignore_invalid_pages",
        "jit_provider",
        "listen_addresses",
        "logging_collector",
        "max_connections",
        "max_files_per_process",
        "max_locks_per_transaction",
        "max_logical_replication_workers",
        "max_pred_locks_per_transaction",
        "max_prepared_transactions",
        "max_replication_slots",
        "max_wal_senders",
        "max_worker_processes",
        "min_dynamic_shared_memory",
        "old_snapshot_threshold",
        "port",
        "recovery_target",
        "recovery_target_action",
        "recovery_target_inclusive",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_timeline",
        "recovery_target_xid",
        "shared_buffers",
        "shared_memory_type",
        "shared_preload_libraries",
        "superuser_reserved_connections",
        "track_activity_query_size",
        "track_commit_timestamp",
        "unix_socket_directories",
        "unix_socket_group",
        "unix_socket_permissions",
        "wal_buffers",
        "wal_decode_buffer_size",
        "wal_level",
        "wal_log_hints",
        "reserved_connections",
        "commit_timestamp_buffers",
        "io_method",
        "io_max_concurrency",
        "max_notify_queue_pages",
        "multixact_member_buffers",
        "multixact_offset_buffers",
        "notify_buffers",
        "serializable_buffers",
        "subtransaction_buffers",
        "transaction_buffers",
        "autovacuum_worker_slots",
        "max_active_replication_origins",
    ]
)


def postgresql_restart_only(name: str) -> bool:
    return name in PG_RESTART_ONLY or "." in name


def pgpool_reloadable(name: str) -> bool:
    if name in PGPOOL_RELOADABLE:
        return True
    return any(name.startswith(prefix) and name[len(prefix) :].isdigit() for prefix in _PGPOOL_RELOADABLE_INDEXED)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def service_fingerprints(files: list[ServerFile], service: str, *, secret: bool = False) -> tuple[str, str]:
    """(restart, reload) fingerprints of the files of `service` (secret ones or non-secret ones).

    A `params` file is split per parameter: pgpool's restart-only settings go into the restart fingerprint, the rest
    into the reload one. Changing a reloadable setting thus changes only the reload fingerprint. (PostgreSQL's files
    are not split: its postgresql-config step takes both, and the rolling-restart steps list the restart-only values.)
    """
    restart: list[str] = []
    reload: list[str] = []
    for file in sorted(files, key=lambda f: f.path):
        if file.service != service or file.secret != secret:
            continue
        if file.apply == "params":
            for name, value in sorted(parse_settings(file.content).items()):
                target = reload if service == "pgpool2" and pgpool_reloadable(name) else restart
                target.append(f"{file.path}:{name}={value}")
        elif file.apply == "restart":
            restart.append(f"{file.path}:{file.content}")
        elif file.apply == "reload":
            reload.append(f"{file.path}:{file.content}")
    return _digest(restart), _digest(reload)
