"""The stack's configuration as one typed, validated object.

Everything the program and the templates need comes from `ClusterConfig`, built once from the raw stack
configuration (Pulumi config, or a Pulumi.<stack>.yaml read from disk by the render command and the lab).
Every check runs in parse_config, before any resource exists: the models' own here, the ones across keys (ports,
pool size, PostgreSQL settings, schedules) in components/validation.py. Every error names the config key that is
wrong.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "pgpool-ha"

# Linux refuses interface names longer than 15 bytes (IFNAMSIZ - 1), empty, "." / "..", or with "/",
# ":" (alias syntax) or white space.
_IFNAME = re.compile(r"^(?!\.{1,2}$)[^/:\s]{1,15}$")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PG_PARAMETER = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
# libvirt's URI form: driver[+transport]://[user@][host][:port]/[path][?parameters] (qemu:///system, qemu+ssh://...).
_LIBVIRT_URI = re.compile(r"^[a-z][a-z0-9]*(\+[a-z0-9]+)?://[^\s/]*/\S*$")
# A user name useradd and cloud-init take (Debian's default NAME_REGEX, at most 32 characters).
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A libvirt object name (storage pool, network): no white space or '/'.
_LIBVIRT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Settings conf.d/pgha.conf sets and the failover machinery relies on: not overridable through postgresql.parameters.
MANAGED_PG_SETTINGS = frozenset(
    {
        "listen_addresses",
        "port",
        "password_encryption",
        "wal_level",
        "hot_standby",
        "hot_standby_feedback",
        "wal_log_hints",
        "max_wal_senders",
        "max_replication_slots",
        "wal_keep_size",
        "max_slot_wal_keep_size",
        "synchronous_standby_names",
        "synchronous_commit",
        "archive_mode",
        "archive_command",
        "primary_conninfo",
        "primary_slot_name",
        "recovery_target_timeline",
        "include",
        "include_if_exists",
        "include_dir",
        "data_directory",
        "hba_file",
        "ident_file",
        "config_file",
    }
)
_SSH_KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}

# What each package source ships, as (PostgreSQL major, pgpool-II major.minor) pairs. PGDG carries only the newest
# pgpool-II; Debian 12 ships 4.3 (built for PostgreSQL 15); Ubuntu 24.04 ships 4.3 for PostgreSQL 16.
PGDG_PGPOOL = "4.7"
DISTRIBUTION_SHIPS: dict[str, tuple[int, str]] = {
    "debian-12": (15, "4.3"),
    "ubuntu-24.04": (16, "4.3"),
    "ubuntu-22.04": (14, "4.1"),
}
SUPPORTED_PGPOOL = ("4.3", "4.4", "4.5", "4.6", "4.7")
MIN_MEMORY_MIB = 1024
MIN_DISK_GIB = 8
PASSWORD_KEYS = ("postgresPassword", "replicationPassword", "pgpoolPassword", "pcpPassword")


# A Debian version without an epoch: upstream version, then an optional revision (policy 5.6.12's characters).
_DEB_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$")


def _debian_version(value: str) -> str:
    if not _DEB_VERSION.match(value):
        raise ValueError(f"{value!r} is not a Debian package version (e.g. 15.20-0+deb12u1, 4.3.5-1+deb12u1)")
    return value


DebianVersion = Annotated[str, AfterValidator(_debian_version)]


def _libvirt_uri(value: str) -> str:
    if not _LIBVIRT_URI.match(value):
        raise ValueError(f"{value!r} is not a libvirt URI (driver[+transport]://[host]/path, e.g. qemu:///system)")
    return value


def _user_name(value: str) -> str:
    if not _USER_NAME.match(value):
        raise ValueError(f"{value!r} is not a user name (lowercase letters, digits, '_', '-', at most 32)")
    return value


class ConfigError(ValueError):
    """Bad stack configuration. The message names every offending key."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


class Node(_Model):
    """One server: a database node (PostgreSQL, pgpool-II and its watchdog), or the backup repository host."""

    name: str
    address: ipaddress.IPv4Address
    # Where the provisioning SSH connects (existing hosts may be reached on another address than the cluster one).
    ssh_host: str | None = None
    # libvirt mode: the hypervisor this node's VM lives on (one URI per node spreads the VMs over hosts).
    libvirt_uri: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_hostname(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not a valid host name (lowercase letters, digits, '-', max 63)")
        return value

    @field_validator("libvirt_uri")
    @classmethod
    def _node_uri(cls, value: str | None) -> str | None:
        return None if value is None else _libvirt_uri(value)

    @field_validator("ssh_host")
    @classmethod
    def _ssh_host(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9.:_-]{1,253}$", value):
            raise ValueError(f"{value!r} is not a host name or address provisioning can connect to")
        return value

    @property
    def connect_host(self) -> str:
        return self.ssh_host or str(self.address)


class EgressNetwork(_Model):
    """NAT network for package installs, separate from the cluster network."""

    name: str = "pgha-egress"
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.150.0/24")


class PackageMirror(_Model):
    """A local apt repository the servers install from instead of the distribution's (air-gapped networks)."""

    url: str
    # A suite (bookworm) with components, or a flat repository's directory ("./") without.
    suite: str
    components: tuple[str, ...] = ()
    # ASCII-armored public key the repository is signed with; without it the servers' keyring must trust it.
    public_key: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("suite")
    @classmethod
    def _suite(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._/-]+$", value):
            raise ValueError(f"{value!r} is not a suite name or a flat repository's directory")
        return value

    @field_validator("components")
    @classmethod
    def _components(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9._-]+$", name):
                raise ValueError(f"{name!r} is not a component name")
        return value

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not (
            text.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            and text.endswith("-----END PGP PUBLIC KEY BLOCK-----")
        ):
            raise ValueError("not an ASCII-armored OpenPGP public key block")
        return text + "\n"

    @model_validator(mode="after")
    def _flat_or_components(self) -> PackageMirror:
        flat = self.suite.endswith("/")
        if flat and self.components:
            raise ValueError(f"suite {self.suite!r} is a flat repository: it takes no components")
        if not flat and not self.components:
            raise ValueError(f"suite {self.suite!r} needs components (e.g. [main]); a flat repository ends in '/'")
        return self

    @property
    def keyring(self) -> str | None:
        return "/etc/apt/keyrings/pgha-mirror.asc" if self.public_key else None

    @property
    def source_line(self) -> str:
        """The one-line apt source for /etc/apt/sources.list.d/pgha-mirror.list."""
        options = f"[signed-by={self.keyring}] " if self.keyring else ""
        return " ".join(["deb", f"{options}{self.url}", self.suite, *self.components]).replace("  ", " ")


class Libvirt(_Model):
    uri: str = "qemu:///system"
    pool: str = "default"
    base_image: str = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    vcpu: int = Field(default=2, ge=1)
    memory_mib: int = 2048
    disk_gib: int = 20
    domain_type: Literal["kvm", "qemu"] = "kvm"
    # QEMU without KVM (domainType qemu) translates guest code into a cache of 1 GiB by default; a smaller one
    # (e.g. 128) cuts each VM's memory by ~0.9 GB at no measurable boot-time cost. None: QEMU's default.
    tcg_cache_mib: int | None = Field(default=None, ge=16, le=4096)
    network_name: str = "pgha-cluster"
    # An isolated libvirt network only connects VMs on one hypervisor. With VMs on several hypervisors the cluster
    # network must be a host bridge that exists on each of them (attached to one L2 segment): name it here.
    cluster_bridge: str | None = None
    egress: EgressNetwork = EgressNetwork()

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _libvirt_uri(value)

    @field_validator("base_image")
    @classmethod
    def _base_image(cls, value: str) -> str:
        if not re.match(r"^(https?://\S+|/\S+)$", value):
            raise ValueError(f"{value!r} is neither an http(s) URL nor an absolute path of a cloud image")
        return value

    @field_validator("pool", "network_name", "cluster_bridge")
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        if value is not None and not _LIBVIRT_NAME.match(value):
            raise ValueError(f"{value!r} is not a libvirt name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("memory_mib")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value < MIN_MEMORY_MIB:
            raise ValueError(f"{value} MiB is below the minimum of {MIN_MEMORY_MIB} MiB for PostgreSQL + pgpool")
        return value

    @field_validator("disk_gib")
    @classmethod
    def _disk(cls, value: int) -> int:
        if value < MIN_DISK_GIB:
            raise ValueError(f"{value} GiB is below the minimum of {MIN_DISK_GIB} GiB")
        return value


class ExistingHosts(_Model):
    """Servers that already exist: the program provisions them over SSH and creates no VM."""

    ssh_user: str = "admin"
    # Path to the private key on the machine running Pulumi; or set the secret key `sshPrivateKey` instead.
    ssh_private_key_path: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, value: str) -> str:
        return _user_name(value)

    @field_validator("ssh_private_key_path")
    @classmethod
    def _key_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\n" in value):
            raise ValueError(f"{value!r} is not a file path")
        return value


class PostgreSQL(_Model):
    version: int = Field(default=15, ge=12, le=18)
    port: int = Field(default=5432, ge=1, le=65535)
    synchronous_replication: bool = False
    max_wal_senders: int = Field(default=10, ge=3)
    max_replication_slots: int = Field(default=10, ge=3)
    wal_keep_size_mb: int = Field(default=1024, ge=0)
    replication_user: str = "repl"
    # pgpool's health-check / streaming-check user (gets pg_monitor).
    check_user: str = "pgpool"
    # pgpool's online-recovery user: must be a superuser (pgpool_recovery functions).
    recovery_user: str = "postgres"
    # Site settings appended to the managed ones (e.g. shared_buffers, max_connections, work_mem). Settings the
    # cluster depends on (replication, port, standby settings) are managed above and refused here.
    # Held as (name, value) pairs in the stack's order: the config objects are frozen and hashable.
    parameters: tuple[tuple[str, str | int | float | bool], ...] = ()
    # A restart-only setting (pg_settings.pending_restart) changed on a running cluster: `up` restarts the standbys
    # one at a time (detached from pgpool meanwhile) either way; with this on it then switches the primary over to a
    # standby (clean stop first: nothing acknowledged is lost), which takes a failover's write outage (seconds).
    # Off: the primary keeps its old values and every `up` says a switchover is pending until it is turned on once.
    switchover_on_restart: bool = False
    # The exact Debian version of postgresql-N and postgresql-client-N (e.g. 15.20-0+deb12u1). Unset: whatever is
    # installed stays. Changing it upgrades (or downgrades) the packages on every node without restarting anything,
    # then the rolling restart above applies the new binaries: standbys one at a time, then the switchover.
    package_version: DebianVersion | None = None

    @model_validator(mode="after")
    def _package_version_matches(self) -> PostgreSQL:
        if self.package_version is not None and not self.package_version.startswith(f"{self.version}."):
            raise ValueError(
                f"packageVersion {self.package_version!r} is not a PostgreSQL {self.version} version "
                f"(it must start with '{self.version}.'; a major upgrade is not a package upgrade)"
            )
        return self

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters_mapping(cls, value: object) -> object:
        if isinstance(value, dict):
            return tuple(value.items())
        if value is None:
            return ()
        if isinstance(value, tuple):
            return value
        raise ValueError("a mapping of PostgreSQL setting names to values, e.g. {shared_buffers: 256MB}")

    @field_validator("parameters")
    @classmethod
    def _parameters(
        cls, value: tuple[tuple[str, str | int | float | bool], ...]
    ) -> tuple[tuple[str, str | int | float | bool], ...]:
        for name, setting in value:
            if not _PG_PARAMETER.match(name):
                raise ValueError(f"{name!r} is not a PostgreSQL setting name (lowercase letters, digits, '_', '.')")
            if name in MANAGED_PG_SETTINGS:
                raise ValueError(f"{name!r} is managed by the program; it cannot be set in parameters")
            if isinstance(setting, str) and ("\n" in setting or "\r" in setting):
                raise ValueError(f"{name}: a value cannot span lines")
        return value


class PgpoolTuning(_Model):
    """Failure-detection timing. Defaults are the walkthrough's; `profile: tuned` in the stack picks faster ones."""

    health_check_period: int = Field(default=5, ge=1)
    health_check_timeout: int = Field(default=30, ge=1)
    health_check_max_retries: int = Field(default=3, ge=0)
    health_check_retry_delay: int = Field(default=1, ge=0)
    connect_timeout_ms: int = Field(default=10000, ge=100)
    wd_interval: int = Field(default=10, ge=1)
    wd_heartbeat_keepalive: int = Field(default=2, ge=1)
    wd_heartbeat_deadtime: int = Field(default=30, ge=1)
    # Distinct watchdog priorities (first node highest) avoid leader-election rounds after a leader is lost.
    distinct_wd_priority: bool = False

    @model_validator(mode="after")
    def _deadtime_after_keepalive(self) -> PgpoolTuning:
        if self.wd_heartbeat_deadtime <= self.wd_heartbeat_keepalive:
            raise ValueError("wdHeartbeatDeadtime must be longer than wdHeartbeatKeepalive")
        return self


PROFILES: dict[str, PgpoolTuning] = {
    "walkthrough": PgpoolTuning(),
    "tuned": PgpoolTuning(
        health_check_period=1,
        health_check_timeout=2,
        health_check_max_retries=1,
        health_check_retry_delay=1,
        connect_timeout_ms=1000,
        wd_interval=2,
        wd_heartbeat_keepalive=1,
        wd_heartbeat_deadtime=3,
        distinct_wd_priority=True,
    ),
    # Measured on a rig of this kind (pgpool-on-debian.md): primary loss 0.7-0.8 s, crashed leader 4.4-4.6 s, no
    # spurious failover idle or under ~1000 tps. One missed health check (1 s) fails a backend over: for a LAN with
    # a quiet network only; `tuned` stays the default until `fast` has proven itself in the soak.
    "fast": PgpoolTuning(
        health_check_period=1,
        health_check_timeout=1,
        health_check_max_retries=0,
        health_check_retry_delay=1,
        connect_timeout_ms=1000,
        wd_interval=1,
        wd_heartbeat_keepalive=1,
        wd_heartbeat_deadtime=2,
        distinct_wd_priority=True,
    ),
}


class Pgpool(_Model):
    version: str = "4.3"
    port: int = Field(default=9999, ge=1, le=65535)
    pcp_port: int = Field(default=9898, ge=1, le=65535)
    wd_port: int = Field(default=9000, ge=1, le=65535)
    heartbeat_port: int = Field(default=9694, ge=1, le=65535)
    use_watchdog: bool = True
    load_balance: bool = True
    # pgpool_status remembers which backends were detached. Discarding it at start (-D) can bring a stale old
    # primary back into service (pgpool's docs warn of split-brain), so the safe default keeps it.
    discard_status_file: bool = False
    profile: Literal["walkthrough", "tuned", "fast"] = "walkthrough"
    tuning: PgpoolTuning | None = None
    num_init_children: int = Field(default=32, ge=1)
    max_pool: int = Field(default=4, ge=1)
    log_min_messages: Literal["debug1", "info", "notice", "warning", "error", "log"] = "warning"
    pcp_user: str = "pgpool"
    # The exact Debian version of pgpool2, libpgpool2 and postgresql-N-pgpool2 (e.g. 4.3.5-1+deb12u1); unset: as
    # installed. A change installs it on every node, then the pgpools restart one after another.
    package_version: DebianVersion | None = None

    @model_validator(mode="after")
    def _package_version_matches(self) -> Pgpool:
        if self.package_version is not None and not self.package_version.startswith(f"{self.version}."):
            raise ValueError(f"packageVersion {self.package_version!r} is not a pgpool-II {self.version} version")
        return self

    @field_validator("version")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value not in SUPPORTED_PGPOOL:
            raise ValueError(f"pgpool-II {value!r} is not supported; use one of {', '.join(SUPPORTED_PGPOOL)}")
        return value

    @property
    def timing(self) -> PgpoolTuning:
        """The tuning in force: explicit `tuning` wins over the named profile."""
        return self.tuning or PROFILES[self.profile]

    @property
    def detection_seconds(self) -> int:
        """About how long pgpool takes to declare a backend dead: one period plus every health-check try."""
        t = self.timing
        return t.health_check_period + t.health_check_timeout * (t.health_check_max_retries + 1)

    @property
    def major(self) -> tuple[int, int]:
        major, minor = self.version.split(".")
        return int(major), int(minor)


class Firewall(_Model):
    enabled: bool = True
    # Extra source networks allowed to reach pgpool (clients); the cluster subnet is always allowed.
    client_networks: tuple[ipaddress.IPv4Network, ...] = ()


class Fencing(_Model):
    """A primary cut off from the majority of the nodes stops its PostgreSQL (pgha-fence.service on every node), so
    that clients connected to it directly cannot write once the majority has promoted another node."""

    enabled: bool = True
    # Seconds without reaching a majority before the primary is stopped. Default: pgpool's own detection time,
    # clamped to 3-30 s (fast 3, tuned 5, walkthrough 30): about when the majority may promote, and a network blip
    # shorter than that does not stop the primary.
    isolation_seconds: int | None = Field(default=None, ge=1, le=600)


# A systemd calendar expression (OnCalendar=); systemd-analyze calendar has the final word on the server.
_CALENDAR = re.compile(r"^[A-Za-z0-9 ,.:*/~+-]{1,100}$")
# A pgBackRest size (archive-push-queue-max): a number and an optional unit.
_SIZE = re.compile(r"^[0-9]+(KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)?$")


class Backup(_Model):
    """pgBackRest: a repository host of its own (not a database node) that takes full and differential backups of
    whichever node is primary on a schedule, and receives every node's WAL (archive_command), for point-in-time
    restores (pgha-restore on the repository host)."""

    host: Node
    # Full backups kept (older ones expire with the WAL only they needed); differential backups are kept per full.
    retention_full: int = Field(default=2, ge=1, le=100)
    # systemd OnCalendar expressions, on the repository host's clock.
    full_schedule: str = "Sun *-*-* 01:00:00"
    diff_schedule: str = "Mon..Sat *-*-* 01:00:00"
    # WAL waiting to reach the repository beyond this is dropped (archive-push reports success, the backup chain has
    # a gap, `pgbackrest check` and the log say so) instead of filling the primary's disk and stopping it.
    archive_push_queue_max: str = "4GiB"
    # A standby rebuilt in full (online recovery, or a failed pg_rewind) is restored from the repository (delta
    # restore + archive: only differing files travel, the primary is not read) when the cluster's databases total at
    # least this many GiB; below it pg_basebackup from the primary is faster (40 MB on the lab: 3.3 s vs 14.8 s).
    # 0: always from the repository.
    rebuild_from_repository_gib: float = Field(default=5, ge=0)
    # libvirt mode: the repository VM (smaller than a database node, larger disk).
    memory_mib: int = Field(default=1024, ge=512)
    disk_gib: int = Field(default=40, ge=MIN_DISK_GIB)

    @field_validator("full_schedule", "diff_schedule")
    @classmethod
    def _calendar(cls, value: str) -> str:
        if not _CALENDAR.match(value):
            raise ValueError(f"{value!r} is not a systemd calendar expression (e.g. 'Sun *-*-* 01:00:00')")
        return value

    @field_validator("archive_push_queue_max")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.match(value):
            raise ValueError(f"{value!r} is not a size (e.g. 4GiB, 512MiB)")
        return value


class Monitoring(_Model):
    """Prometheus and Alertmanager on the backup repository host, node_exporter and postgres_exporter (Debian's
    packages) on every node, and pgha-metrics (the cluster's own facts: streaming standbys, VIP holder, watchdog
    quorum, pgpool's view, archiving, last backup) through node_exporter's textfile collector."""

    # None: on when the stack has a backup repository host (where Prometheus runs), off otherwise.
    enabled: bool | None = None
    scrape_interval_seconds: int = Field(default=5, ge=1, le=300)
    retention_days: int = Field(default=15, ge=1, le=3650)
    # Alert thresholds.
    replication_lag_seconds: int = Field(default=30, ge=1)
    detached_minutes: int = Field(default=5, ge=1)
    # How long archive_command must keep failing before PgHaArchivingFailing fires. Shorter pages sooner on a
    # repository outage; PostgreSQL retries a failed segment about once a minute, so a single slow push rarely trips it.
    archive_failing_seconds: int = Field(default=120, ge=10, le=3600)
    backup_max_age_hours: int = Field(default=30, ge=1)
    disk_free_percent: int = Field(default=10, ge=1, le=90)
    # Where Alertmanager sends alerts (a webhook receiver); unset: they are visible in Alertmanager and Prometheus.
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # On the machine running Pulumi (relative paths: from the project directory), uploaded by `pulumi up`: the
    # pgpool2_exporter binary every node runs, and upstream's Grafana dashboard for it, put on the repository host
    # for users to import. `make engine` (scripts/build-pgpool2-exporter.sh) builds both from the pinned sources.
    pgpool_exporter_binary: str = Field(default=".tools/bin/pgpool2_exporter", min_length=1)
    grafana_dashboard: str = Field(default=".tools/share/pgpool2_exporter/pgpool2.json", min_length=1)


IPv4Range = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+$")]


class ClusterConfig(_Model):
    """The whole stack configuration. Field names are the config keys in camelCase."""

    cluster_name: str = "pgha"
    mode: Literal["libvirt", "existing"] = "libvirt"
    os_release: Literal["debian-12", "ubuntu-24.04", "ubuntu-22.04"] = "debian-12"
    nodes: tuple[Node, ...] = (
        Node(name="server1", address=ipaddress.IPv4Address("192.168.137.11")),
        Node(name="server2", address=ipaddress.IPv4Address("192.168.137.12")),
        Node(name="server3", address=ipaddress.IPv4Address("192.168.137.13")),
    )
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.137.0/24")
    gateway: ipaddress.IPv4Address | None = None
    dhcp_range: IPv4Range | None = None
    vip: ipaddress.IPv4Address = ipaddress.IPv4Address("192.168.137.150")
    vip_interface: str = "enp0s8"
    admin_user: str = "admin"
    ssh_public_keys: tuple[str, ...] = ()
    package_source: Literal["distribution", "pgdg", "preinstalled"] = "distribution"
    package_mirror: PackageMirror | None = None
    libvirt: Libvirt = Libvirt()
    existing_hosts: ExistingHosts = ExistingHosts()
    postgresql: PostgreSQL = PostgreSQL()
    pgpool: Pgpool = Pgpool()
    firewall: Firewall = Firewall()
    fencing: Fencing = Fencing()
    # None: no backups, no WAL archiving (stack files shipped with the project set it: new stacks have backups).
    backup: Backup | None = None
    monitoring: Monitoring = Monitoring()

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r}: use lowercase letters, digits and '-'")
        return value

    @field_validator("vip_interface")
    @classmethod
    def _ifname(cls, value: str) -> str:
        if not _IFNAME.match(value):
            raise ValueError(f"{value!r} is not an interface name Linux accepts (1-15 chars, no '/', ':' or space)")
        return value

    @field_validator("admin_user")
    @classmethod
    def _admin_user(cls, value: str) -> str:
        return _user_name(value)

    @field_validator("ssh_public_keys")
    @classmethod
    def _ssh_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for index, key in enumerate(keys):
            _check_public_key(key, index)
        return keys

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        errors: list[str] = []
        net = self.subnet
        names = [n.name for n in self.nodes]
        addresses = [n.address for n in self.nodes]
        if len(self.nodes) < 3:
            errors.append(f"nodes: {len(self.nodes)} node(s); a highly available cluster needs at least 3")
        elif self.pgpool.use_watchdog and len(self.nodes) % 2 == 0:
            errors.append(f"nodes: {len(self.nodes)} nodes; the watchdog needs an odd count for a quorum")
        for dup in sorted({n for n in names if names.count(n) > 1}):
            errors.append(f"nodes: duplicate node name {dup!r}")
        for address in sorted({a for a in addresses if addresses.count(a) > 1}):
            errors.append(f"nodes: duplicate node address {address}")
        for index, node in enumerate(self.nodes):
            if node.address not in net:
                errors.append(f"nodes[{index}].address: {node.address} ({node.name}) is outside subnet {net}")
            elif node.address in (net.network_address, net.broadcast_address):
                errors.append(f"nodes[{index}].address: {node.address} is the network or broadcast address")
        gateway = self.gateway_address
        if gateway not in net:
            errors.append(f"gateway: {gateway} is outside subnet {net}")
        if gateway in addresses:
            errors.append(f"gateway: {gateway} is also a node's address")
        vip = self.vip
        if vip not in net:
            errors.append(f"vip: {vip} is outside subnet {net}; the watchdog can only bring it up on {net}")
        elif vip == net.network_address:
            errors.append(f"vip: {vip} is the network address of {net}")
        elif vip == net.broadcast_address:
            errors.append(f"vip: {vip} is the broadcast address of {net}")
        elif vip == gateway:
            errors.append(f"vip: {vip} is the gateway address")
        for node in self.nodes:
            if vip == node.address:
                errors.append(f"vip: {vip} is node {node.name}'s address")
        if self.dhcp_range is not None:
            start, end = self.dhcp_bounds
            if start not in net or end not in net or start > end:
                errors.append(f"dhcpRange: {self.dhcp_range} is not an ordered range inside {net}")
            elif start <= vip <= end:
                errors.append(f"vip: {vip} is inside dhcpRange {self.dhcp_range}; DHCP could hand it out")
            for node in self.nodes:
                if start <= node.address <= end:
                    errors.append(f"dhcpRange: includes node {node.name}'s static address {node.address}")
        if net.overlaps(self.libvirt.egress.subnet) and self.mode == "libvirt":
            errors.append(f"libvirt.egress.subnet: {self.libvirt.egress.subnet} overlaps subnet {net}")
        errors.extend(self._package_errors())
        if self.package_mirror is not None and self.package_source != "distribution":
            errors.append(
                f"packageMirror: only used with packageSource 'distribution' (packageSource is '{self.package_source}')"
            )
        if self.libvirt.tcg_cache_mib is not None and self.libvirt.domain_type != "qemu":
            errors.append("libvirt.tcgCacheMib: only meaningful with libvirt.domainType 'qemu' (no KVM)")
        if self.mode == "libvirt" and len(self.hypervisor_uris) > 1 and not self.libvirt.cluster_bridge:
            errors.append(
                "libvirt.clusterBridge: nodes sit on several hypervisors (nodes[].libvirtUri); an isolated libvirt "
                "network cannot join them: name the host bridge of the shared cluster segment"
            )
        if self.mode == "libvirt" and not self.ssh_public_keys:
            errors.append("sshPublicKeys: mode 'libvirt' needs at least one key for the admin user of the new VMs")
        if self.backup is not None:
            errors.extend(self._backup_errors())
        elif self.monitoring.enabled:
            errors.append(
                "monitoring.enabled: Prometheus and Alertmanager run on the backup repository host: set backup.host"
            )
        if self.mode == "existing" and any(n.libvirt_uri for n in self.nodes):
            errors.append("nodes[].libvirtUri: only meaningful with mode 'libvirt'")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def _backup_errors(self) -> list[str]:
        assert self.backup is not None
        host, net, errors = self.backup.host, self.subnet, []
        if host.address not in net:
            errors.append(f"backup.host.address: {host.address} ({host.name}) is outside subnet {net}")
        elif host.address in (net.network_address, net.broadcast_address):
            errors.append(f"backup.host.address: {host.address} is the network or broadcast address")
        for node in self.nodes:
            if host.name == node.name:
                errors.append(f"backup.host.name: {host.name!r} is also a database node's name")
            if host.address == node.address:
                errors.append(f"backup.host.address: {host.address} is also node {node.name}'s address")
        if host.address == self.vip:
            errors.append(f"backup.host.address: {host.address} is the vip")
        if host.address == self.gateway_address:
            errors.append(f"backup.host.address: {host.address} is the gateway address")
        if self.dhcp_range is not None:
            start, end = self.dhcp_bounds
            if start <= host.address <= end:
                errors.append(f"dhcpRange: includes the backup host's static address {host.address}")
        if self.mode == "existing" and host.libvirt_uri:
            errors.append("backup.host.libvirtUri: only meaningful with mode 'libvirt'")
        return errors

    def _package_errors(self) -> list[str]:
        pg, pgpool = self.postgresql.version, self.pgpool.version
        if self.package_source == "pgdg" and pgpool != PGDG_PGPOOL:
            return [
                f"pgpool.version: pgpool-II {pgpool} with packageSource 'pgdg': the PGDG repository carries only "
                f"pgpool-II {PGDG_PGPOOL}; use packageSource 'distribution' ({self.os_release}) or version "
                f"{PGDG_PGPOOL}"
            ]
        if self.package_source == "distribution":
            ships_pg, ships_pgpool = DISTRIBUTION_SHIPS[self.os_release]
            if (pg, pgpool) != (ships_pg, ships_pgpool):
                return [
                    f"postgresql.version/pgpool.version: {self.os_release} ships PostgreSQL {ships_pg} with "
                    f"pgpool-II {ships_pgpool}, not PostgreSQL {pg} with pgpool-II {pgpool} "
                    f"(osRelease, packageSource)"
                ]
        if self.pgpool.major < (4, 2):
            return [f"pgpool.version: {pgpool} lacks the 4.2+ settings the program renders"]
        return []

    # Derived values used by components and templates.
    @property
    def gateway_address(self) -> ipaddress.IPv4Address:
        return self.gateway or next(self.subnet.hosts())

    @property
    def dhcp_bounds(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        assert self.dhcp_range is not None
        start, end = self.dhcp_range.split("-")
        return ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)

    def hypervisor_uri(self, node: Node) -> str:
        return node.libvirt_uri or self.libvirt.uri

    @property
    def hypervisor_uris(self) -> tuple[str, ...]:
        """Distinct hypervisor URIs in node order: one libvirt provider each."""
        return tuple(dict.fromkeys(self.hypervisor_uri(n) for n in self.all_hosts))

    @property
    def prefix_length(self) -> int:
        return self.subnet.prefixlen

    @property
    def fence_isolation_seconds(self) -> int:
        explicit = self.fencing.isolation_seconds
        return explicit if explicit is not None else max(3, min(30, self.pgpool.detection_seconds))

    @property
    def repository_host(self) -> Node | None:
        """The pgBackRest repository host, when backups are configured."""
        return self.backup.host if self.backup is not None else None

    @property
    def all_hosts(self) -> tuple[Node, ...]:
        """Every server provisioning reaches: the database nodes, then the repository host."""
        return (*self.nodes, *((self.backup.host,) if self.backup is not None else ()))

    @property
    def monitoring_enabled(self) -> bool:
        return self.backup is not None and self.monitoring.enabled is not False

    @property
    def stanza(self) -> str:
        """pgBackRest's name for this cluster's backups and WAL."""
        return self.cluster_name

    @property
    def primary_node(self) -> Node:
        """The node bootstrapped as the first primary; any node can be primary later."""
        return self.nodes[0]

    @property
    def standby_nodes(self) -> tuple[Node, ...]:
        return self.nodes[1:]

    @property
    def pg_data_directory(self) -> str:
        return f"/var/lib/postgresql/{self.postgresql.version}/main"

    @property
    def pg_config_directory(self) -> str:
        return f"/etc/postgresql/{self.postgresql.version}/main"

    @property
    def pg_bin_directory(self) -> str:
        return f"/usr/lib/postgresql/{self.postgresql.version}/bin"

    @property
    def pgpool_endpoint(self) -> str:
        return f"{self.vip}:{self.pgpool.port}"


def _check_public_key(key: str, index: int) -> None:
    parts = key.split()
    where = f"sshPublicKeys[{index}]"
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        raise ValueError(f"{where}: not an OpenSSH public key (expected '<type> <base64> [comment]')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{where}: the key body is not valid base64") from exc
    # The blob starts with the length-prefixed key type; it must repeat the declared type.
    declared = parts[0].encode()
    if len(blob) < 4 + len(declared) or blob[4 : 4 + len(declared)] != declared:
        raise ValueError(f"{where}: the key body does not match its type {parts[0]}")


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isprintable() and part.strip() == part and part:
            text += ("." if text else "") + to_camel(part)
        else:  # a key name a user could not have meant: quoted, so that the message stays one readable line
            text += f"[{part!r}]"
    return text


def parse_config(raw: Mapping[str, Any]) -> ClusterConfig:
    """Validate raw stack config (keys without the project prefix) into a ClusterConfig, or raise ConfigError.

    `raw` holds the plain (non-secret) values only: a password key found here was given in clear text.
    """
    lines = [
        f"{PROJECT}:{key}: given in clear text; set it with `pulumi config set --secret {key}` "
        "or leave it out to have a random one generated"
        for key in (*PASSWORD_KEYS, "sshPrivateKey")
        if key in raw
    ]
    data = {k: v for k, v in raw.items() if k not in PASSWORD_KEYS and k != "sshPrivateKey"}
    config: ClusterConfig | None
    try:
        config = ClusterConfig.model_validate(data)
    except ValidationError as exc:
        config = None
        for error in exc.errors():
            key = _location(tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if key:
                lines.append(f"{PROJECT}:{key}: {message}")
            else:  # whole-config checks already start each line with the key they are about
                lines.extend(f"{PROJECT}:{line}" for line in message.splitlines())
    if config is not None:
        # Imported here: the checks read components.paths, which imports this module.
        from .validation import cross_key_errors

        lines.extend(f"{PROJECT}:{line}" for line in cross_key_errors(config))
    if lines or config is None:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines))
    return config
