"""Cluster verbs for the provisioned lab: what pgpool and PostgreSQL say, waits, recovery, and a bounded writer.

Used by the HA drills (tests/ha) and the benchmark (lab.bench), on either back-end of the lab API (lab.api): every
server question goes through it. SQL clients connect from the process's own network namespace: run them inside the
lab's client namespace (`ip netns exec pghalab-sw ...`, the VM lab's `pghavm`). pcp commands run on a server (the
back-end's exec, as postgres, with its ~/.pcppass), so they need no pcp port from here.

    python -m lab.cluster status     # pool_nodes + watchdog, as seen through the VIP
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import shlex
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from .api import LabBackend, current_lab
from .config import STACK_ENV as STACK_ENV  # the drills switch stacks with it
from .util import LabError, log, wait_for

PG_UNIT = "postgresql@15-main"
PGPOOL_UNIT = "pgpool2"
WRITES_TABLE = "pgha_drill_rows"
# pgpool sends a query starting with this comment to the primary, never to a standby (no load balancing).
NO_LB = "/*NO LOAD BALANCE*/ "


# --------------------------------------------------------------------------------------------- settings, credentials
@dataclass(frozen=True)
class Settings:
    """What a client needs to know about the provisioned cluster (from the stack file and the stack's outputs)."""

    stack: str
    vip: str
    pgpool_port: int
    pg_port: int
    pcp_port: int
    pcp_user: str
    pg_version: int
    user: str
    password: str
    dbname: str = "postgres"
    synchronous_replication: bool = False
    wd_interval: int = 10
    fencing: bool = True
    fence_isolation_s: int = 30
    repository_host: str | None = None  # the backup repository host (pgBackRest), if the stack has one
    archive_failing_s: int = 120  # PgHaArchivingFailing's `for` (monitoring.archiveFailingSeconds)

    @property
    def pg_unit(self) -> str:
        return f"postgresql@{self.pg_version}-main"


def current_stack() -> str:
    return current_lab().stack


def stack_password() -> str:
    """The postgres password, from the lab stack's outputs (the engine's state): the lab keeps no copy of its own."""
    from urllib.parse import unquote, urlsplit

    from .engine import EngineError

    try:
        outputs = current_lab().stack_outputs()
    except EngineError as e:
        raise LabError(f"the lab stack has no outputs (make lab-provision): {e}") from e
    url = outputs.get("connectionString")
    password = urlsplit(url).password if isinstance(url, str) else None
    if not password:
        raise LabError("the lab stack's connectionString output holds no password (make lab-provision)")
    return unquote(password)


def settings(stack: str | None = None) -> Settings:
    """Settings of the lab's stack (the container lab: $PGHA_STACK, else lab)."""
    return _settings(stack or current_stack())


@functools.cache
def _settings(stack: str) -> Settings:
    lab = current_lab()
    if stack == lab.stack:
        cfg = lab.stack_config()
    else:
        from components.stack import load_stack_config  # the program's own config reader and defaults

        cfg = load_stack_config(stack)
    password = stack_password()
    return Settings(
        stack=stack,
        vip=str(cfg.vip),
        pgpool_port=cfg.pgpool.port,
        pg_port=cfg.postgresql.port,
        pcp_port=cfg.pgpool.pcp_port,
        pcp_user=cfg.pgpool.pcp_user,
        pg_version=cfg.postgresql.version,
        user=cfg.postgresql.recovery_user,
        password=password,
        synchronous_replication=cfg.postgresql.synchronous_replication,
        wd_interval=cfg.pgpool.timing.wd_interval,
        fencing=cfg.fencing.enabled,
        fence_isolation_s=cfg.fence_isolation_seconds,
        repository_host=cfg.backup.host.name if cfg.backup else None,
        archive_failing_s=cfg.monitoring.archive_failing_seconds,
    )


def forget_settings() -> None:
    """Read the stack's config and outputs again at the next settings() (after an `up` changed the password)."""
    _settings.cache_clear()


def address_of(node: str) -> str:
    return current_lab().address_of(node)


def node_of(address: str) -> str | None:
    return current_lab().node_of(address)


# ------------------------------------------------------------------------------------------------------- SQL access
def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    timeout: float = 2.0,
    application_name: str = "pgha-lab",
    autocommit: bool = True,
    conninfo: str | None = None,
) -> psycopg.Connection[Any]:
    """A new connection (VIP:9999 by default) with short timeouts: a dead peer fails fast instead of hanging.
    conninfo (libpq keywords): the hosts and timeouts are its own (a multi-host string), user and password ours."""
    s = settings()
    if conninfo is not None:
        return psycopg.connect(
            conninfo,
            user=s.user,
            password=s.password,
            dbname=s.dbname,
            application_name=application_name,
            autocommit=autocommit,
        )
    return psycopg.connect(
        host=host or s.vip,
        port=port or s.pgpool_port,
        user=s.user,
        password=s.password,
        dbname=s.dbname,
        connect_timeout=max(1, round(timeout)),
        application_name=application_name,
        # Bound every network wait: unacknowledged data after 3 s, or a silent peer (keepalives), ends the session.
        tcp_user_timeout=3000,
        keepalives=1,
        keepalives_idle=2,
        keepalives_interval=1,
        keepalives_count=2,
        autocommit=autocommit,
    )


def query(
    sql: str,
    params: Sequence[Any] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    timeout: float = 2.0,
) -> list[tuple[Any, ...]]:
    with connect(host, port, timeout=timeout) as conn, conn.cursor() as cur:
        cur.execute(sql, params)  # type: ignore[call-overload]
        return list(cur.fetchall()) if cur.description else []


def try_query(sql: str, params: Sequence[Any] | None = None, **kw: Any) -> list[tuple[Any, ...]] | None:
    try:
        return query(sql, params, **kw)
    except psycopg.Error:
        return None


def login_error(host: str, port: int, user: str, password: str, *, replication: bool = False) -> str | None:
    """Why the server at host:port does not let `user` in with `password`; None when it does (authentication
    happens at connect)."""
    params = {"host": host, "port": str(port), "user": user, "password": password, "dbname": "postgres"}
    if replication:
        params["replication"] = "true"
    try:
        conn = psycopg.connect(make_conninfo(**params), connect_timeout=3)
    except psycopg.Error as e:
        return " ".join(str(e).split())[:300] or type(e).__name__
    conn.close()
    return None


def pg_role(node: str, timeout: float = 2.0) -> str:
    """'primary', 'standby' or 'down', asked of the node's PostgreSQL directly (not through pgpool)."""
    s = settings()
    rows = try_query("SELECT pg_is_in_recovery()", host=address_of(node), port=s.pg_port, timeout=timeout)
    if not rows:
        return "down"
    return "standby" if rows[0][0] else "primary"


# ----------------------------------------------------------------------------------------------------- pool_nodes
@dataclass(frozen=True)
class PoolNode:
    node_id: int
    hostname: str
    port: int
    status: str  # pgpool's view: up, waiting, down, quarantine, unused
    pg_status: str  # live
    role: str  # pgpool's view: primary / standby
    pg_role: str  # live
    select_cnt: int
    load_balance_node: bool
    replication_delay: str
    replication_state: str
    replication_sync_state: str
    last_status_change: str

    @property
    def up(self) -> bool:
        return self.status in ("up", "waiting")

    @property
    def name(self) -> str:
        return node_of(self.hostname) or self.hostname


def pool_nodes(host: str | None = None, timeout: float = 3.0) -> list[PoolNode]:
    """`show pool_nodes` through the VIP (or one pgpool's address)."""
    with connect(host, timeout=timeout) as conn, conn.cursor() as cur:
        cur.execute("SHOW pool_nodes")
        cols = [d.name for d in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return [
        PoolNode(
            node_id=int(r["node_id"]),
            hostname=r["hostname"],
            port=int(r["port"]),
            status=r["status"],
            pg_status=r.get("pg_status", ""),
            role=r["role"],
            pg_role=r.get("pg_role", ""),
            select_cnt=int(r.get("select_cnt") or 0),
            load_balance_node=r.get("load_balance_node") == "true",
            replication_delay=str(r.get("replication_delay", "")),
            replication_state=r.get("replication_state", "") or "",
            replication_sync_state=r.get("replication_sync_state", "") or "",
            last_status_change=r.get("last_status_change", ""),
        )
        for r in rows
    ]


def pool_nodes_retry(timeout: float = 30) -> list[PoolNode]:
    """pool_nodes, riding out pgpool restarting its children after a failover or failback (bounded)."""
    return wait_for("show pool_nodes through the VIP", try_pool_nodes, timeout, 0.5)  # type: ignore[no-any-return]


def try_pool_nodes(host: str | None = None) -> list[PoolNode] | None:
    try:
        return pool_nodes(host)
    except psycopg.Error:
        return None


def primary_node(host: str | None = None) -> str | None:
    """The node pgpool (through the VIP) uses as primary, if it is up and really is a primary."""
    nodes = try_pool_nodes(host)
    if not nodes:
        return None
    primaries = [n for n in nodes if n.up and n.role == "primary" and n.pg_role == "primary"]
    return primaries[0].name if len(primaries) == 1 else None


def node_id(node: str, nodes: list[PoolNode] | None = None) -> int:
    for n in nodes or pool_nodes():
        if n.name == node:
            return n.node_id
    # pgpool numbers backends in the stack's node order: server1 = 0.
    return [m.name for m in current_lab().members()].index(node)


# ----------------------------------------------------------------------------------------------------- watchdog
@dataclass(frozen=True)
class WatchdogNode:
    name: str
    host: str
    pgpool_port: int
    wd_port: int
    priority: int
    state: int
    state_name: str
    membership: str

    @property
    def node(self) -> str:
        return node_of(self.host) or self.host


@dataclass(frozen=True)
class WatchdogInfo:
    total: int
    remote: int
    member_remote: int
    quorum_required: int
    quorum_state: str
    escalated: bool
    leader_name: str
    leader_host: str
    nodes: list[WatchdogNode]
    seen_from: str

    @property
    def leader(self) -> str | None:
        return node_of(self.leader_host)

    def in_state(self, state_name: str) -> list[str]:
        return [n.node for n in self.nodes if n.state_name == state_name]


def parse_watchdog_info(text: str, seen_from: str = "") -> WatchdogInfo:
    """Parse `pcp_watchdog_info -v` (4.3 layout: 'Key : value' lines, a cluster block, then one block per node)."""
    cluster: dict[str, str] = {}
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Node Name":
            blocks.append({})
        (blocks[-1] if blocks else cluster)[key] = value
    if not blocks or "Total Nodes" not in cluster:
        raise LabError(f"unexpected pcp_watchdog_info output: {text.strip()[:400]!r}")

    def num(d: dict[str, str], key: str) -> int:
        try:
            return int(d.get(key, "-1").split()[0])
        except (ValueError, IndexError):
            return -1

    return WatchdogInfo(
        total=num(cluster, "Total Nodes"),
        remote=num(cluster, "Remote Nodes"),
        member_remote=num(cluster, "Member Remote Nodes"),
        quorum_required=num(cluster, "Nodes required for quorum"),
        quorum_state=cluster.get("Quorum state", ""),
        escalated=cluster.get("Local node escalation", "") == "YES",
        leader_name=cluster.get("Leader Node Name", ""),
        leader_host=cluster.get("Leader Host Name", ""),
        nodes=[
            WatchdogNode(
                name=b.get("Node Name", ""),
                host=b.get("Host Name", ""),
                pgpool_port=num(b, "Pgpool port"),
                wd_port=num(b, "Watchdog port"),
                priority=num(b, "Node priority"),
                state=num(b, "Status"),
                state_name=b.get("Status Name", ""),
                membership=b.get("Membership Status", ""),
            )
            for b in blocks
        ],
        seen_from=seen_from,
    )


class Cluster:
    """The provisioned cluster on the lab: questions (pool_nodes, watchdog) and verbs (recover, restore)."""

    def __init__(self, lab: LabBackend | None = None) -> None:
        self.lab = lab or current_lab()

    def lab_verb(self, verb: str, *args: str) -> None:
        """A lab verb by its CLI name (add, remove, mirror ...): the back-end runs it where it must run."""
        getattr(self.lab, verb.replace("-", "_"))(*args)

    def crash(self, node: str) -> None:
        self.lab.crash(node)

    def start(self, node: str) -> None:
        self.lab.start(node)

    # -------------------------------------------------------------------------------------------- inside a server
    def as_postgres(self, node: str, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """Run a shell command as postgres inside node (its ~/.pgpass and ~/.pcppass apply). (rc, stdout+stderr)"""
        script = f"export PCPPASSFILE=/var/lib/postgresql/.pcppass PGPASSFILE=/var/lib/postgresql/.pgpass; {cmd}"
        cp = self.lab.exec(node, ["runuser", "-u", "postgres", "--", "/bin/sh", "-c", script], timeout=timeout)
        return cp.returncode, (cp.stdout or "") + (cp.stderr or "")

    def pcp(self, node: str, command: str, args: str = "", timeout: float = 30) -> tuple[int, str]:
        s = settings()
        return self.as_postgres(node, f"{command} -w -h localhost -p {s.pcp_port} -U {s.pcp_user} {args}", timeout)

    def accepts_local_writes(self, node: str) -> bool:
        """Would a client connected to node's PostgreSQL directly (here: its own socket) get a write committed?"""
        sql = "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool"
        rc, out = self.as_postgres(node, f"psql -XAtq -p {settings().pg_port} -d postgres -c {shlex.quote(sql)}", 15)
        return rc == 0 and out.strip() == "f"

    def service_active(self, node: str, unit: str) -> bool:
        if not self.lab.is_running(node):
            return False
        return self.lab.exec(node, ["systemctl", "is-active", "--quiet", unit], timeout=15).returncode == 0

    def live_nodes(self) -> list[str]:
        """Running servers whose pgpool is active, the current watchdog leader (VIP holder) first."""
        holders = self.lab.vip_holders()
        order = holders + [s.name for s in self.lab.members() if s.name not in holders]
        return [n for n in order if self.lab.is_running(n) and self.service_active(n, PGPOOL_UNIT)]

    def watchdog_info(self, node: str | None = None) -> WatchdogInfo:
        """pcp_watchdog_info -v run inside node (default: the VIP holder, else any server whose pgpool runs)."""
        candidates = [node] if node else self.live_nodes()
        if not candidates:
            raise LabError("no running pgpool to ask for pcp_watchdog_info")
        errors = []
        for n in candidates:
            rc, out = self.pcp(n, "pcp_watchdog_info", "-v", timeout=20)
            if rc == 0:
                return parse_watchdog_info(out, seen_from=n)
            errors.append(f"{n}: rc {rc}: {out.strip()[:200]}")
        raise LabError("pcp_watchdog_info failed: " + "; ".join(errors))

    def try_watchdog_info(self, node: str | None = None) -> WatchdogInfo | None:
        try:
            return self.watchdog_info(node)
        except LabError:
            return None

    def pgpool_uptime(self, node: str) -> float | None:
        """Seconds since this node's pgpool main process started (None: not running)."""
        if not self.lab.is_running(node):
            return None
        cp = self.lab.exec(
            node,
            'pid=$(cat /var/run/postgresql/pgpool.pid 2>/dev/null) && ps -o etimes= -p "$pid"',
            timeout=15,
        )
        try:
            return float(cp.stdout.strip())
        except ValueError:
            return None

    def warmup_s(self) -> float:
        """Heartbeat lifecheck starts wd_interval x 10 s after pgpool starts: a fault before that is seen late."""
        return settings().wd_interval * 10 + 3

    # -------------------------------------------------------------------------------------------------- health
    def health_problems(self, *, warmup: bool = True) -> list[str]:
        """Everything that keeps the cluster from being healthy (empty list: healthy). warmup=False: do not wait
        for the watchdog's heartbeat lifecheck to start (the cluster serves, but a fault would be seen late)."""
        problems: list[str] = []
        for st in self.lab.status():
            if not st.running:
                problems.append(f"{st.name} is not running")
            elif not st.cable_up:
                problems.append(f"{st.name} is partitioned")
        if problems:
            return problems
        nodes = try_pool_nodes()
        if nodes is None:
            return [f"no answer from pgpool at {settings().vip}:{settings().pgpool_port}"]
        members = self.lab.members()
        if len(nodes) != len(members):
            problems.append(f"pool_nodes lists {len(nodes)} nodes, the lab has {len(members)} servers")
        down = [n.name for n in nodes if not n.up or n.pg_status != "up"]
        if down:
            problems.append(f"backends not up: {', '.join(down)}")
        primaries = [n.name for n in nodes if n.role == "primary"]
        live_primaries = [n.name for n in nodes if n.pg_role == "primary"]
        if len(primaries) != 1 or primaries != live_primaries:
            problems.append(f"primary (pgpool view) {primaries}, live primaries {live_primaries}")
        not_streaming = [n.name for n in nodes if n.role == "standby" and n.replication_state != "streaming"]
        if not_streaming:
            problems.append(f"standbys not streaming: {', '.join(not_streaming)}")
        wd = self.try_watchdog_info()
        if wd is None:
            problems.append("pcp_watchdog_info failed")
        else:
            standbys = len(members) - 1
            if (
                len(wd.nodes) != len(members)
                or len(wd.in_state("LEADER")) != 1
                or len(wd.in_state("STANDBY")) != standbys
            ):
                problems.append("watchdog: " + ", ".join(f"{n.node} {n.state_name}" for n in wd.nodes))
            holders = self.lab.vip_holders()
            if wd.leader is None or holders != [wd.leader]:
                problems.append(f"watchdog leader {wd.leader}, VIP holders {holders}")
        for s in members if warmup else ():
            up = self.pgpool_uptime(s.name)
            if up is None:
                problems.append(f"pgpool not running on {s.name}")
            elif up < self.warmup_s():
                problems.append(f"pgpool on {s.name} in heartbeat warm-up ({up:.0f}/{self.warmup_s():.0f} s)")
        return problems

    def wait_healthy(self, timeout: float = 240, *, warmup: bool = True) -> None:
        """Every lab server a backend, up; one primary, the others streaming; one LEADER holding the VIP, the other
        watchdog members STANDBY; warm-up over."""
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = self.health_problems(warmup=warmup)
            if not problems:
                return
            time.sleep(2)
        raise LabError(f"cluster not healthy after {timeout:.0f} s: {'; '.join(problems)}")

    def wait_for_primary(self, timeout: float = 60, *, not_on: str | None = None) -> str:
        """The primary through the VIP (optionally: one other than not_on); returns its node name."""

        def probe() -> str | None:
            p = primary_node()
            return p if p and p != not_on else None

        return wait_for(f"a primary{f' other than {not_on}' if not_on else ''} through the VIP", probe, timeout, 0.5)

    def wait_for_vip(self, timeout: float = 60, *, not_on: str | None = None) -> str:
        """Exactly one server holds the VIP (optionally: not not_on) and pgpool answers there; returns its name."""

        def probe() -> str | None:
            holders = self.lab.vip_holders()
            if len(holders) != 1 or holders[0] == not_on:
                return None
            return holders[0] if try_query("SELECT 1", timeout=1) else None

        return wait_for(f"the VIP to answer{f' off {not_on}' if not_on else ''}", probe, timeout, 0.3)

    def wait_for_leader(self, timeout: float = 60, *, not_on: str | None = None) -> str:
        """The watchdog has a leader (not not_on) that holds the VIP; returns its name."""

        def probe() -> str | None:
            wd = self.try_watchdog_info()
            if wd is None or wd.leader is None or wd.leader == not_on:
                return None
            return wd.leader if self.lab.vip_holders() == [wd.leader] else None

        return wait_for("a watchdog leader holding the VIP", probe, timeout, 1.0)

    def wait_writable(self, timeout: float = 60) -> float:
        """Until a write through the VIP commits; returns seconds waited."""
        t0 = time.monotonic()
        ensure_writes_table()

        def probe() -> bool:
            return (
                try_query(f"INSERT INTO {WRITES_TABLE} (run, id) VALUES ('probe', %s)", (time.time_ns(),), timeout=1)
                is not None
            )

        wait_for("a write through the VIP", probe, timeout, 0.3)
        return time.monotonic() - t0

    # ------------------------------------------------------------------------------------------------ recovery
    def recover_node(self, node: str, timeout: float = 300) -> float:
        """pcp_recovery_node: rebuild node as a streaming standby of the current primary and attach it. Seconds."""
        nodes = pool_nodes_retry()
        nid = node_id(node, nodes)
        if any(n.node_id == nid and n.up for n in nodes):
            # Online recovery only takes a detached node.
            leader = self.live_nodes()[0]
            self.pcp(leader, "pcp_detach_node", f"-n {nid}")
        t0 = time.monotonic()
        errors = []
        for via in self.live_nodes():
            rc, out = self.pcp(via, "pcp_recovery_node", f"-n {nid}", timeout=timeout)
            if rc == 0:
                log.info("recovered %s (node %d) via %s in %.1f s", node, nid, via, time.monotonic() - t0)
                return time.monotonic() - t0
            errors.append(f"via {via}: rc {rc}: {out.strip()[-300:]}")
            if time.monotonic() - t0 > timeout:
                break
        raise LabError(f"pcp_recovery_node -n {nid} ({node}) failed: " + "; ".join(errors))

    def stop_primary_cleanly(self, node: str) -> None:
        """What a switchover does to the primary (pgha-apply-restart): a checkpoint, then a clean stop."""
        rc, out = self.as_postgres(node, f"psql -XAtq -p {settings().pg_port} -c CHECKPOINT")
        if rc != 0:
            raise LabError(f"CHECKPOINT on {node} failed: {out.strip()[-300:]}")
        self.lab.stop_service(node, settings().pg_unit)

    def move_primary_off(self, node: str, timeout: float = 300) -> str:
        """The primary moves away from node (clean stop, pgpool fails over, node rebuilt as a standby by online
        recovery); returns the new primary."""
        self.stop_primary_cleanly(node)
        new = self.wait_for_primary(min(timeout, 120), not_on=node)
        self.recover_node(node, timeout)
        self.wait_healthy(timeout, warmup=False)
        return new

    def streaming_standbys(self, primary: str) -> set[str]:
        """application_name of the standbys streaming from primary (its pg_stat_replication, asked directly)."""
        rows = try_query(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            host=address_of(primary),
            port=settings().pg_port,
        )
        return {str(r[0]) for r in rows or []}

    # ------------------------------------------------------------------------------------ backups (pgBackRest)
    def archive_now(self, timeout: float = 120) -> str:
        """Close the primary's current WAL segment and wait until the repository has it (archive_command
        succeeded); returns the segment's name."""
        primary = self.wait_for_primary()
        host, port = address_of(primary), settings().pg_port
        segment = str(query("SELECT pg_walfile_name(pg_switch_wal())", host=host, port=port)[0][0])

        def archived() -> bool:
            last = query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", host=host, port=port)
            return str(last[0][0]) >= segment

        wait_for(f"WAL segment {segment} archived from {primary}", archived, timeout)
        return segment

    def restore_from_backup(self, *args: str, timeout: float = 900) -> tuple[float, str]:
        """The documented restore: `sudo pgha-restore ARGS` on the repository host, over ssh as the admin user.
        Returns (seconds, its output); raises with the output when it fails."""
        t0 = time.monotonic()
        restore = ["sudo", "-n", "/usr/local/sbin/pgha-restore", *args]
        repository = settings().repository_host
        if repository is None:
            raise LabError(f"stack {settings().stack} has no backup repository host (backup.host)")
        cp = self.lab.ssh(repository, restore, timeout=timeout)
        took = time.monotonic() - t0
        out = (cp.stdout or "") + (cp.stderr or "")
        if cp.returncode != 0:
            raise LabError(f"pgha-restore {' '.join(args)} failed (rc {cp.returncode}, {took:.1f} s):\n{out[-3000:]}")
        return took, out

    def attach_node(self, node: str) -> None:
        nid = node_id(node, pool_nodes_retry())
        rc, out = self.pcp(self.live_nodes()[0], "pcp_attach_node", f"-n {nid}")
        if rc != 0:
            raise LabError(f"pcp_attach_node -n {nid} ({node}) failed: rc {rc}: {out.strip()[-300:]}")

    def restore(self, timeout: float = 420, *, warmup: bool = True) -> None:
        """Bring the cluster back to healthy from whatever a drill left: start crashed servers, heal cables, start
        services, attach standbys that stream, rebuild the others (online recovery). Bounded by timeout."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(5.0, deadline - time.monotonic())

        if not self.health_problems(warmup=warmup):
            return
        for st in self.lab.status():
            if not st.running:
                self.start(st.name)
            if not st.cable_up:
                self.lab.heal(st.name)
        unit = settings().pg_unit
        for s in self.lab.members():
            if not self.service_active(s.name, PGPOOL_UNIT):
                self.lab.exec(s.name, ["systemctl", "reset-failed", PGPOOL_UNIT], timeout=15)
                self.lab.exec(s.name, ["systemctl", "start", PGPOOL_UNIT], timeout=60)
            if not self.service_active(s.name, unit):
                # The start guard refuses a stale old primary: that one is rebuilt by online recovery below.
                self.lab.exec(s.name, ["systemctl", "reset-failed", unit], timeout=15)
                self.lab.exec(s.name, ["systemctl", "start", unit], timeout=60)
        try:
            self.wait_for_vip(min(120, left()))
        except LabError as e:
            raise self.silent_pgpool(e) from None
        primary = self.wait_for_primary(min(180, left()))
        grace = time.monotonic() + 20  # a standby that was just re-pointed needs a moment to stream
        while time.monotonic() < deadline:
            streaming = self.streaming_standbys(primary)
            todo: list[tuple[str, str]] = []
            waiting = False
            try:
                nodes = pool_nodes_retry(min(120, left()))
            except LabError as e:
                raise self.silent_pgpool(e) from None
            for n in nodes:
                if n.name == primary:
                    continue
                live = pg_role(n.name)
                if live == "standby" and n.name in streaming:
                    if not n.up:
                        todo.append(("attach", n.name))
                elif live == "standby" and time.monotonic() < grace:
                    waiting = True
                else:
                    todo.append(("recover", n.name))
            for verb, name in todo:
                log.info("restore: %s %s", verb, name)
                if verb == "attach":
                    self.attach_node(name)
                else:
                    self.recover_node(name, timeout=min(300, left()))
            if not todo and not waiting:
                break
            time.sleep(0 if todo else 2)
        self.wait_healthy(left(), warmup=warmup)

    def silent_pgpool(self, error: LabError) -> LabError:
        """A cluster whose pgpool stops answering is a failed drill (the silent pgpool of docs/failure-modes.md):
        nothing here restarts it. Logs what each pgpool is doing and returns the error to raise."""
        evidence = self.pgpool_diagnostics()
        return LabError(f"restore: pgpool does not answer ({error}); its state:\n{evidence[-6000:]}")

    def pgpool_diagnostics(self) -> str:
        """What each pgpool is doing (for a pgpool that stops answering): its processes with their kernel wait
        channel, pcp_proc_info, the last log lines. Logged and returned; nothing is restarted."""
        parts = []
        for s in self.lab.members():
            if not self.lab.is_running(s.name):
                continue
            ps = self.lab.exec(s.name, ["ps", "-o", "pid,stat,wchan:24,etime,args", "-C", "pgpool"], timeout=15)
            _, procs = self.pcp(s.name, "pcp_proc_info", "-a", timeout=15)
            newest_log = 'tail -n 60 "$(ls -t /var/log/pgpool/*.log | head -n 1)"'  # logging_collector's files
            pgpool_log = self.lab.exec(s.name, ["/bin/sh", "-c", newest_log], timeout=15)
            parts.append(
                f"--- {s.name}: pgpool processes (main first)\n{ps.stdout[:3000]}\n--- pcp_proc_info\n{procs[-1500:]}"
                f"\n--- pgpool log\n{pgpool_log.stdout[-4000:]}"
            )
        text = "\n".join(parts)
        log.error("pgpool diagnostics:\n%s", text)
        return text

    def switch_leader_to(self, node: str, timeout: float = 180) -> None:
        """Make node the watchdog leader (VIP holder): stop pgpool on the other nodes until node leads (alone, no
        quorum, no VIP), then start them again: they join as standbys and node escalates. Bounded."""
        deadline = time.monotonic() + timeout
        if self.watchdog_info().leader == node and self.lab.vip_holders() == [node]:
            return
        rest = [s.name for s in self.lab.members() if s.name != node]
        try:
            for other in rest:
                self.lab.stop_service(other, PGPOOL_UNIT)
            wait_for(
                f"{node} to lead the watchdog alone",
                lambda: (wd := self.try_watchdog_info(node)) is not None and wd.leader == node,
                max(5.0, deadline - time.monotonic()),
                1.0,
            )
        finally:
            for other in rest:
                self.lab.exec(other, ["systemctl", "start", PGPOOL_UNIT], timeout=60)
        wait_for(
            f"{node} to hold the VIP",
            lambda: self.lab.vip_holders() == [node],
            max(5.0, deadline - time.monotonic()),
            0.5,
        )

    def colocate_leader_and_primary(self, timeout: float = 300) -> str:
        """Arrange that one server holds both the primary and the VIP; returns it. The cluster is healthy after."""
        primary = self.wait_for_primary(30)
        if self.watchdog_info().leader != primary:
            self.switch_leader_to(primary, timeout=timeout / 2)
            self.wait_healthy(timeout / 2)
        return primary


# ------------------------------------------------------------------------------------------------------- writer
def ensure_writes_table(timeout: float = 60) -> None:
    sql = (
        f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (run text NOT NULL, id bigint NOT NULL, "
        "at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        # The committing server's own name (inet_server_addr() is 127.0.1.1 when pgpool reaches its own node).
        "server text DEFAULT trim(both E'\\n ' FROM pg_read_file('/etc/hostname')), "
        "PRIMARY KEY (run, id))"
    )
    wait_for("the writes table", lambda: try_query(sql, timeout=2) is not None, timeout, 0.5)


@dataclass(frozen=True)
class Attempt:
    id: int
    start: float  # time.monotonic()
    end: float
    ok: bool
    server: str | None = None  # node whose PostgreSQL committed the row
    error: str = ""


@dataclass
class WriterResult:
    run: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acked(self) -> list[int]:
        return [a.id for a in self.attempts if a.ok]

    @property
    def failures(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    def servers_in_order(self) -> list[str]:
        """Nodes that committed acknowledged rows, in order, consecutive repeats collapsed."""
        seq: list[str] = []
        for a in self.attempts:
            if a.ok and a.server and (not seq or seq[-1] != a.server):
                seq.append(a.server)
        return seq

    def outage(self, after: float) -> tuple[float, float] | None:
        """(first failed attempt start, first later success end) after monotonic time `after`; None: no outage."""
        fail = next((a for a in self.attempts if a.start >= after and not a.ok), None)
        if fail is None:
            return None
        ok = next((a for a in self.attempts if a.start > fail.start and a.ok), None)
        return (fail.start, ok.end if ok else float("nan"))

    def longest_gap(self, after: float, until: float) -> float:
        """Longest time without a commit between `after` and `until` (monotonic): an outage, or a write that hung
        without failing."""
        ends = [after] + [a.end for a in self.attempts if a.ok and after < a.end <= until] + [until]
        return max(b - a for a, b in itertools.pairwise(ends))

    def first_success_after(self, t: float) -> float | None:
        ok = next((a for a in self.attempts if a.start >= t and a.ok), None)
        return ok.end if ok else None

    def summary(self) -> dict[str, Any]:
        return {
            "attempts": len(self.attempts),
            "acked": len(self.acked),
            "failed": len(self.failures),
            "servers": self.servers_in_order(),
        }


class Writer:
    """Commits numbered rows through the VIP, one new row per attempt, reconnecting after any error (short connect
    timeout). Records every attempt; a row counts as acknowledged only when its COMMIT returned. Bounded: stops by
    itself after `seconds` or `max_rows` attempts, or on stop()."""

    def __init__(
        self,
        *,
        seconds: float = 300,
        max_rows: int = 100_000,
        interval: float = 0.05,
        host: str | None = None,
        port: int | None = None,
        conninfo: str | None = None,
    ) -> None:
        self.seconds = seconds
        self.conninfo = conninfo
        self.max_rows = max_rows
        self.interval = interval
        self.host, self.port = host, port
        self.result = WriterResult(run=uuid.uuid4().hex[:12])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._in_flight: tuple[int, float] | None = None  # (id, start) of the attempt waiting for an answer

    def start(self) -> Writer:
        ensure_writes_table()
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.seconds
        next_id = 0
        sql = f"INSERT INTO {WRITES_TABLE} (run, id) VALUES (%s, %s) RETURNING server"
        while not self._stop.is_set() and time.monotonic() < deadline and next_id < self.max_rows:
            next_id += 1
            t0 = time.monotonic()
            self._in_flight = (next_id, t0)
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(
                        self.host, self.port, timeout=1, application_name="pgha-writer", conninfo=self.conninfo
                    )
                row = self._conn.execute(sql, (self.result.run, next_id)).fetchone()
                server = node_of(str(row[0])) if row and row[0] else None
                self.result.attempts.append(Attempt(next_id, t0, time.monotonic(), True, server))
                self._stop.wait(self.interval)
            except psycopg.Error as e:
                self.result.attempts.append(Attempt(next_id, t0, time.monotonic(), False, error=str(e).strip()[:200]))
                self._close()
                self._stop.wait(0.1)
            except Exception as e:  # not a database error: the writer itself broke; say so in its last attempt
                self.result.attempts.append(Attempt(next_id, t0, time.monotonic(), False, error=f"writer: {e!r}"))
                break
            finally:
                self._in_flight = None
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def wait_outage(self, after: float, timeout: float, quiet: float) -> float:
        """Seconds the writes failed after the event at monotonic time `after` (first failure -> next commit),
        waiting up to `timeout` for them to come back; 0.0 when none failed within `quiet` seconds of the event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outage = self.result.outage(after)
            if outage is not None and outage[1] == outage[1]:  # NaN: failed, not back yet
                return outage[1] - outage[0]
            if outage is None and time.monotonic() - after > quiet:
                return 0.0
            time.sleep(0.2)
        raise LabError(f"writes through the VIP did not come back within {timeout:.0f} s")

    def stop(self, timeout: float = 15) -> WriterResult:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("writer still blocked %.0f s after stop: abandoning its connection", timeout)
            in_flight = self._in_flight
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=3)
            self._thread.join(5)
            if self._thread.is_alive() and in_flight is not None:
                # A write that never returned is a failed one (and the last one): a hung session must not pass
                # for a run whose every recorded write worked.
                row, began = in_flight
                waited = time.monotonic() - began
                self.result.attempts.append(
                    Attempt(row, began, time.monotonic(), False, error=f"no answer in {waited:.0f} s")
                )
        return self.result

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def missing_rows(result: WriterResult, timeout: float = 60) -> list[int]:
    """Acknowledged ids of this run that the current primary does not have (asked through the VIP, no LB)."""
    rows = wait_for(
        "the written rows through the VIP",
        lambda: try_query(f"{NO_LB}SELECT id FROM {WRITES_TABLE} WHERE run = %s", (result.run,), timeout=2),
        timeout,
        1.0,
    )
    present = {int(r[0]) for r in rows}
    return sorted(set(result.acked) - present)


@contextlib.contextmanager
def vip_monitor(
    lab: LabBackend, interval: float = 0.1, seconds: float = 600
) -> Iterator[list[tuple[float, list[str]]]]:
    """Samples the VIP holders in the background; yields the list of (time, holders) samples. Bounded."""
    samples: list[tuple[float, list[str]]] = []
    stop = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                samples.append((time.monotonic(), lab.vip_holders()))
            stop.wait(interval)

    t = threading.Thread(target=loop, name="vip-monitor", daemon=True)
    t.start()
    try:
        yield samples
    finally:
        stop.set()
        t.join(5)


def stats(values: Sequence[float]) -> dict[str, Any]:
    vals = [round(v, 2) for v in values if v == v]  # drop NaN
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "values": []}
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), 2),
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


# --------------------------------------------------------------------------------------------------------- CLI
def print_status(cluster: Cluster) -> int:
    s = settings()
    rc = 0
    print(f"pool_nodes through {s.vip}:{s.pgpool_port} (stack {s.stack}):")
    try:
        nodes = pool_nodes()
        print(f"  {'id':>2} {'host':8} {'status':8} {'pg':5} {'role':8} {'pg_role':8} {'sel':>6} {'lb':3} replication")
        for n in nodes:
            repl = f"{n.replication_state} {n.replication_sync_state}".strip() or "-"
            print(
                f"  {n.node_id:>2} {n.hostname:8} {n.status:8} {n.pg_status:5} {n.role:8} {n.pg_role:8} "
                f"{n.select_cnt:>6} {'yes' if n.load_balance_node else 'no':3} {repl}"
            )
    except psycopg.Error as e:
        print(f"  no answer: {str(e).strip()}")
        rc = 1
    try:
        wd = cluster.watchdog_info()
        print(f"watchdog (asked on {wd.seen_from}): {wd.total} nodes, quorum {wd.quorum_state}, leader {wd.leader}")
        for w in wd.nodes:
            print(f"  {w.node:8} {w.state_name:8} priority {w.priority:>2}  {w.membership}")
    except LabError as e:
        print(f"watchdog: {e}")
        rc = 1
    holders = cluster.lab.vip_holders()
    print(f"VIP {s.vip} held by: {', '.join(holders) or 'nobody'}")
    return rc


def main(argv: list[str] | None = None) -> int:
    import logging

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="lab.cluster: %(message)s")
    cluster = Cluster()
    try:
        match args:
            case ["status"] | []:
                return print_status(cluster)
            case ["health"]:
                problems = cluster.health_problems()
                print("healthy" if not problems else "\n".join(problems))
                return 0 if not problems else 1
            case ["wait-healthy", *rest]:
                cluster.wait_healthy(float(rest[0]) if rest else 300)
                return 0
            case ["restore"]:
                cluster.restore()
                return 0
            case ["recover", node]:
                cluster.recover_node(node)
                return 0
            case ["restore-backup", *restore_args] if restore_args:
                took, out = cluster.restore_from_backup(*restore_args)
                print(out, end="")
                print(f"lab.cluster: pgha-restore took {took:.1f} s")
                return 0
            case _:
                print(
                    "usage: python -m lab.cluster status|health|wait-healthy [S]|restore|recover NODE"
                    "|restore-backup --time T|--latest",
                    file=sys.stderr,
                )
                return 2
    except LabError as e:
        print(f"lab.cluster: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
