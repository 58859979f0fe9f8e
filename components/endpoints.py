"""The connection strings the stack exports: one through the VIP, and one that lists every node's pgpool for clients
that should not wait for the VIP to move."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from .config import ClusterConfig

# libpq settings of the multi-host string, and why. A client tries the hosts in order and keeps the first that
# accepts the session; each pgpool sends every write to the primary, so any live one serves.
# No target_session_attrs=read-write: pgpool-II 4.3.5 reports in_hot_standby=on at login when a standby's startup
# answer is the one it passes on (measured on the lab: every session through every pgpool), so libpq would refuse
# every pgpool as read-only although each one sends writes to the primary.
MULTI_HOST_OPTIONS = {
    # Seconds per host: a powered-off node's address does not answer at all; 2 s before the next host is tried.
    "connect_timeout": "2",
    # A session on a node that dies gets no RST: unacknowledged data for 3 s, or 2 s of silence and two lost
    # keepalive probes 1 s apart, end it so the client reconnects to the next host.
    "tcp_user_timeout": "3000",
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
}


def vip_uri(config: ClusterConfig, user: str, password: str, dbname: str = "postgres") -> str:
    """postgresql://user:password@VIP:port/dbname (user and password percent-encoded)."""
    return f"postgresql://{_userinfo(user, password)}@{config.pgpool_endpoint}/{quote(dbname, safe='')}"


def multi_host_uri(config: ClusterConfig, user: str, password: str, dbname: str = "postgres") -> str:
    """Every database node's pgpool, in the order of `nodes`, with the options of MULTI_HOST_OPTIONS."""
    hosts = ",".join(f"{node.address}:{config.pgpool.port}" for node in config.nodes)
    return f"postgresql://{_userinfo(user, password)}@{hosts}/{quote(dbname, safe='')}?{urlencode(MULTI_HOST_OPTIONS)}"


def _userinfo(user: str, password: str) -> str:
    return f"{quote(user, safe='')}:{quote(password, safe='')}"
