"""Where things live on the servers: paths and names the rendered files and the provisioning steps share."""

from __future__ import annotations

from .config import ClusterConfig

SCRIPTS_DIR = "/etc/pgpool2/scripts"
LOCAL_CONF = "/etc/pgpool2/pgpool_local.conf"
SECRETS_CONF = "/etc/pgpool2/pgpool_secrets.conf"
# Empty at rest; during a password change it pauses pgpool's health checks (the passwords-hold step).
HOLD_CONF = "/etc/pgpool2/pgpool_hold.conf"
# The cluster members (name address) a node recorded at its last join (pgha-members; read by membership-check).
MEMBERS_STATE = "/var/lib/pgha/members"
# The backup repository host's pgBackRest user (owns the repository; ssh from the nodes' postgres user) and path.
REPOSITORY_USER = "pgbackrest"
REPOSITORY_PATH = "/var/lib/pgbackrest"
# Helper programs the steps run (templates/usr/local/lib/pgha/).
PASSWORDS = "/usr/local/lib/pgha/pgha-passwords"
MEMBERS = "/usr/local/lib/pgha/pgha-members"
APPLY_RESTART = "/usr/local/lib/pgha/pgha-apply-restart"
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


def slot_name(node_name: str) -> str:
    """Replication slot of a node: slot names allow [a-z0-9_] only."""
    return node_name.replace("-", "_")


def pg_unit(config: ClusterConfig) -> str:
    return f"postgresql@{config.postgresql.version}-main"


def member_marker(config: ClusterConfig) -> str:
    """Present once a node belongs to the cluster (never re-bootstrapped or re-cloned then)."""
    return f"/var/lib/postgresql/{config.postgresql.version}/pgha-member"


def pgha_conf(config: ClusterConfig) -> str:
    """The program's PostgreSQL settings file (templates/etc/postgresql/{pg_version}/main/conf.d/pgha.conf.j2)."""
    return f"{config.pg_config_directory}/conf.d/pgha.conf"


def standby_conf(config: ClusterConfig) -> str:
    return f"{config.pg_config_directory}/pgha-standby.conf"


# The monitoring services each kind of host runs, restarted when their files change.
DATABASE_MONITORING_UNITS = (
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "pgha-pgpool2-exporter",
    "pgha-metrics",
)
REPOSITORY_MONITORING_UNITS = ("prometheus-node-exporter", "prometheus", "prometheus-alertmanager", "pgha-metrics")
