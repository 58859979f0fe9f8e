"""Checks across config keys, run by parse_config on the typed config before any resource exists.

Each check returns message lines `<key>: <what is wrong>`, naming the config key to change (parse_config prefixes
the project). A value that is only wrong together with another one (two services on one port, a pool larger than
PostgreSQL's connection limit) is refused here, as is a value only an outside parser can judge (PostgreSQL's
settings, systemd's calendar expressions).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass

from . import pg_settings
from .config import ClusterConfig
from .paths import MONITORING_VALUES

SSH_PORT = 22
# PostgreSQL's built-in defaults (the same from 12 to 18), for a major without settings data: Debian's
# pg_createcluster keeps max_connections = 100 in postgresql.conf, and conf.d/pgha.conf sets neither.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_SUPERUSER_RESERVED_CONNECTIONS = 3
CALENDAR_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Listener:
    """A port a service listens on, and the config key that sets it (None: fixed by the program)."""

    service: str
    port: int
    key: str | None


def database_listeners(config: ClusterConfig) -> list[Listener]:
    """What listens on a database node: pgpool.conf, conf.d/pgha.conf and the exporters' files set these ports."""
    pgpool = config.pgpool
    listeners = [
        _ssh(config),
        Listener("PostgreSQL", config.postgresql.port, "postgresql.port"),
        Listener("pgpool", pgpool.port, "pgpool.port"),
        Listener("pgpool's PCP", pgpool.pcp_port, "pgpool.pcpPort"),
    ]
    if pgpool.use_watchdog:
        # The heartbeat is UDP, the rest TCP: a shared number could work, but is a typo far more often than a plan.
        listeners += [
            Listener("pgpool's watchdog", pgpool.wd_port, "pgpool.wdPort"),
            Listener("pgpool's heartbeat", pgpool.heartbeat_port, "pgpool.heartbeatPort"),
        ]
    if config.monitoring_enabled:
        listeners += [
            _fixed("node_exporter", "node_exporter_port"),
            _fixed("postgres_exporter", "postgres_exporter_port"),
            _fixed("pgpool2_exporter", "pgpool_exporter_port"),
        ]
    return listeners


def repository_listeners(config: ClusterConfig) -> list[Listener]:
    """What listens on the backup repository host."""
    listeners = [_ssh(config)]
    if config.monitoring_enabled:
        listeners += [
            _fixed("node_exporter", "node_exporter_port"),
            _fixed("Prometheus", "prometheus_port"),
            _fixed("Alertmanager", "alertmanager_port"),
        ]
    return listeners


def _ssh(config: ClusterConfig) -> Listener:
    # libvirt VMs run sshd on 22; existing hosts on the port provisioning connects to.
    if config.mode == "existing":
        return Listener("ssh", config.existing_hosts.ssh_port, "existingHosts.sshPort")
    return Listener("ssh", SSH_PORT, None)


def _fixed(service: str, value_name: str) -> Listener:
    port = MONITORING_VALUES[value_name]
    assert isinstance(port, int)
    return Listener(service, port, None)


def port_errors(config: ClusterConfig) -> list[str]:
    """Every service on a host needs a port of its own."""
    roles = [("the database nodes", database_listeners(config))]
    if config.backup is not None:
        roles.append(("the backup repository host", repository_listeners(config)))
    errors: list[str] = []
    for where, listeners in roles:
        by_port: dict[int, list[Listener]] = defaultdict(list)
        for listener in listeners:
            by_port[listener.port].append(listener)
        for port, sharing in sorted(by_port.items()):
            if len(sharing) < 2:
                continue
            configurable = [listener for listener in sharing if listener.key is not None]
            blamed = configurable[-1] if configurable else sharing[-1]
            others = ", ".join(_describe(listener) for listener in sharing if listener is not blamed)
            errors.append(
                f"{blamed.key or 'nodes'}: port {port} for {blamed.service} is also the port of {others} on {where}; "
                "every service on a host needs a port of its own"
            )
    return errors


def _describe(listener: Listener) -> str:
    return f"{listener.service} ({listener.key})" if listener.key else f"{listener.service} (fixed)"


def program_connections(config: ClusterConfig) -> list[tuple[str, int]]:
    """Connections the cluster's own machinery opens to one backend besides pgpool's client pool, counted from what
    the templates configure. Each takes a regular slot (the replication senders have their own, max_wal_senders)."""
    nodes = len(config.nodes)
    connections = [
        (f"pgpool's health check (one per pgpool, {nodes})", nodes),
        (f"pgpool's streaming-replication check (one per pgpool, {nodes})", nodes),
        ("online recovery (pcp_recovery_node)", 1),
    ]
    if config.monitoring_enabled:
        # pgpool2_exporter logs in through pgpool: it takes a pgpool child, not a backend slot of its own.
        connections += [("postgres_exporter", 1), ("pgha-metrics", 1)]
    if config.backup is not None:
        connections.append(("pgBackRest's backup", 1))
    return connections


def _integer_parameter(config: ClusterConfig, name: str, fallback: int) -> int:
    """A PostgreSQL integer setting as the nodes will run it: postgresql.parameters, else PostgreSQL's default."""
    settings = pg_settings.settings_for(config.postgresql.version)
    setting = settings.get(name) if settings else None
    for given, value in config.postgresql.parameters:
        if given.lower() == name and setting is not None:
            number = pg_settings.numeric_value(setting, pg_settings.as_text(value))
            if number is not None:
                return int(number)
    if setting is not None and setting.default is not None:
        return int(setting.default)
    return fallback


def pool_errors(config: ClusterConfig) -> list[str]:
    """pgpool's pool must fit into the connections PostgreSQL lets non-superusers open.

    pgpool's documentation (num_init_children, max_pool) states the worst case: every child caches up to max_pool
    connections per backend, one per distinct user/database pair, so
        num_init_children * max_pool <= max_connections - superuser_reserved_connections
    guarantees no refusal whatever the clients' pairs are. The program's defaults (32 * 4 = 128 against 100 - 3)
    already exceed that bound, and so do the stacks shipped with it, which is safe as long as clients use few
    pairs; what is refused here is a pool that cannot work at all: one connection per child, which every child
    holds while serving a client, plus the program's own connections (program_connections), must fit.
    """
    max_connections = _integer_parameter(config, "max_connections", DEFAULT_MAX_CONNECTIONS)
    reserved = _integer_parameter(config, "superuser_reserved_connections", DEFAULT_SUPERUSER_RESERVED_CONNECTIONS)
    if reserved >= max_connections:
        return [
            f"postgresql.parameters.superuser_reserved_connections: {reserved} is not less than max_connections "
            f"({max_connections}); PostgreSQL refuses to start"
        ]
    children = config.pgpool.num_init_children
    own = program_connections(config)
    needed = children + sum(count for _, count in own)
    available = max_connections - reserved
    if needed <= available:
        return []
    return [
        f"pgpool.numInitChildren: {children} children need {needed} connections to each PostgreSQL with the "
        f"program's own ({', '.join(f'{what}: {count}' for what, count in own)}), more than the {available} "
        f"max_connections ({max_connections}) - superuser_reserved_connections ({reserved}) allows; lower "
        "numInitChildren or raise postgresql.parameters.max_connections (pgpool's documented bound for any "
        f"client mix is numInitChildren * maxPool = {children * config.pgpool.max_pool} <= {available})"
    ]


def parameter_errors(config: ClusterConfig) -> list[str]:
    """postgresql.parameters checked against PostgreSQL's own definition of each setting for the configured major."""
    parameters = config.postgresql.parameters
    if not parameters:
        return []
    major = config.postgresql.version
    settings = pg_settings.settings_for(major)
    if settings is None:
        return [
            f"postgresql.parameters: no settings data for PostgreSQL {major} to check them against; generate "
            f"components/data/postgresql-{major}-settings.json with scripts/pg_settings_data.py {major} (see its "
            "header), or leave postgresql.parameters unset"
        ]
    errors: list[str] = []
    for name, value in parameters:
        setting = settings.get(name.lower())
        if setting is None:
            if "." not in name:  # an extension's setting (placeholder): PostgreSQL takes any value for it
                errors.append(
                    f"postgresql.parameters.{name}: not a PostgreSQL {major} setting (an extension's setting has a "
                    "dot in its name, e.g. pg_stat_statements.max)"
                )
            continue
        problem = pg_settings.value_problem(setting, value, major)
        if problem is not None:
            errors.append(f"postgresql.parameters.{name}: {problem}")
    return errors


# The subset of systemd.time(7)'s calendar syntax checked when systemd-analyze is not on this machine:
# a shorthand (daily, weekly, ...), or [weekdays] [date] [time] with *, lists (,), ranges (..) and repetitions (/).
_SHORTHANDS = frozenset(
    {"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually", "quarterly", "semiannually"}
)
_DAY = r"(mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_WEEKDAYS = re.compile(rf"^{_DAY}(\.\.{_DAY})?(,{_DAY}(\.\.{_DAY})?)*$", re.IGNORECASE)
_FIELD = r"(\*|[0-9]+(\.\.[0-9]+)?)(/[0-9]+)?(,([0-9]+(\.\.[0-9]+)?)(/[0-9]+)?)*"
_DATE = re.compile(rf"^({_FIELD}-)?{_FIELD}-{_FIELD}$")
_TIME = re.compile(rf"^{_FIELD}:{_FIELD}(:{_FIELD}(\.[0-9]+)?)?$")


def _subset_calendar_ok(expression: str) -> bool:
    words = expression.split()
    if len(words) == 1 and words[0].lower() in _SHORTHANDS:
        return True
    if words and _WEEKDAYS.match(words[0]):
        words = words[1:]
    if words and _DATE.match(words[0]):
        words = words[1:]
    if words and _TIME.match(words[0]):
        words = words[1:]
    return not words and bool(expression.strip())


@functools.cache
def calendar_problem(expression: str) -> str | None:
    """Why systemd would not take `expression` as OnCalendar=, or None. systemd-analyze decides when it is on this
    machine (Debian has it); otherwise the documented subset above does, and the message says so."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if _subset_calendar_ok(expression):
            return None
        return (
            f"{expression!r} is not a calendar expression of the subset checked here (systemd-analyze is not on "
            "this machine): a shorthand such as daily, or [weekdays] [year-month-day] [hour:minute[:second]], "
            "e.g. 'Sun *-*-* 01:00:00'"
        )
    try:
        result = subprocess.run(
            [analyze, "calendar", "--", expression],
            capture_output=True,
            text=True,
            timeout=CALENDAR_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{expression!r}: systemd-analyze calendar did not answer within {CALENDAR_TIMEOUT_SECONDS} s"
    if result.returncode != 0:
        return f"{expression!r} is not a systemd calendar expression (systemd-analyze calendar refuses it)"
    if "Next elapse: never" in result.stdout:
        return f"{expression!r} never elapses (systemd-analyze calendar finds no next time): no backup would run"
    return None


def schedule_errors(config: ClusterConfig) -> list[str]:
    if config.backup is None:
        return []
    schedules = {"backup.fullSchedule": config.backup.full_schedule, "backup.diffSchedule": config.backup.diff_schedule}
    return [f"{key}: {problem}" for key, value in schedules.items() if (problem := calendar_problem(value)) is not None]


def cross_key_errors(config: ClusterConfig) -> list[str]:
    return [*port_errors(config), *parameter_errors(config), *pool_errors(config), *schedule_errors(config)]
