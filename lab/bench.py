"""`make bench`: recovery times and throughput of the lab cluster per pgpool profile (walkthrough, tuned, fast),
measured in one run from fresh servers. Prints ONE JSON object on stdout (progress on stderr) and a table on stderr.

    ip netns exec pghalab-sw .venv/bin/python -m lab.bench [--profiles walkthrough,tuned,fast] [--runs 5]

Per profile (the config of its stack file, applied to the lab stack): Lab().reset() (fresh servers, empty stack), then
- provision_s: `pulumi up` from fresh servers until the cluster serves (3 backends up, one primary, 2 standbys
  streaming, a LEADER holding the VIP); provision_apply_s is `up` alone; healthy_s adds the heartbeat warm-up;
- noop_s: `pulumi up` again, nothing to change;
- throughput, pgbench through VIP:9999 vs the primary's 5432 directly, same clients and duration, alternating,
  median of the rounds (scram-sha-256 auth on both paths): read_write (TPC-B), select_only (-S), and
  connect_per_transaction (-C, select-only: a new connection per transaction);
- faults, each --runs times from a healthy cluster, with a writer committing a row every 50 ms through the VIP (new
  connection after any error, 1 s connect timeout); the figure is its outage: first failed write -> next committed
  write (0 when no write failed):
  primary_postgres_loss: kill -9 of the primary's postmaster;
  vip_holder_crash: power loss of the watchdog leader (VIP holder), which is a standby;
  vip_holder_and_primary_crash: power loss of the server that is both leader and primary;
  standby_crash: power loss of a standby that is not the leader (writes must not fail);
  standby_partition: cable pull of a standby that is not the leader, healed after the measurement;
  besides the outage, longest_gap_s: the longest time without a commit in the 20 s after the fault (a write that
  hangs without failing counts there); for vip_holder_crash and vip_holder_and_primary_crash, multi_host: the outage
  of a second writer at the same time on the exported connectionStringMultiHost (every node's pgpool, the victim's
  first, with its timeouts);
- lost_acknowledged_writes: acknowledged rows of those writers missing afterwards.
With --synchronous every profile runs with synchronous replication (the same bounds as
asynchronous + 1 s, 0 acknowledged rows lost). The lab is left provisioned with the last profile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from components.endpoints import MULTI_HOST_OPTIONS

from . import SERVERS
from .cluster import (
    STACK_ENV,
    Cluster,
    Writer,
    address_of,
    connect,
    missing_rows,
    settings,
    stats,
)
from .config import SERVER_BY_NAME, SWITCH_NS
from .core import Lab, outer_ancestor
from .util import LabError, log

REPO = Path(__file__).resolve().parent.parent
PROFILES = {"walkthrough": "lab-walkthrough", "tuned": "lab", "fast": "lab-fast"}
# pgpool never caches backend connections to the postgres, template0/1 and regression databases (its docs,
# connection_cache): pgbench through pgpool into `postgres` opened three backend connections per session. Clients use
# a database of their own; so does the bench.
BENCH_DB = "bench"
FAULTS = (
    "primary_postgres_loss",
    "vip_holder_crash",
    "vip_holder_and_primary_crash",
    "standby_crash",
    "standby_partition",
)
GAP_WINDOW_S = 20.0
# Faults whose clients see the VIP move: a second writer on the exported multi-host string (victim first) runs beside
# the VIP's writer, so both outages come from the same fault.
MULTI_HOST_FAULTS = ("vip_holder_crash", "vip_holder_and_primary_crash")


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "memory_mib": total_kib // 1024,
        "cpu": cpu,
        "kernel": platform.release(),
        "servers": "3 systemd-nspawn containers (Debian 12, PostgreSQL 15, pgpool-II 4.3.5)",
    }


def provision(stack: str, synchronous: bool = False, timeout: float = 900) -> float:
    """`pulumi up` of the lab stack with the config of Pulumi.<stack>.yaml (synchronous replication turned on when
    asked); its wall time."""
    from .engine import EngineError, LabStack

    overrides = {"postgresql": {"synchronousReplication": True}} if synchronous else None
    try:
        run = LabStack(echo=False).up(stack, overrides=overrides, timeout=timeout)
    except EngineError as e:
        raise LabError(f"pulumi up with the config of stack {stack} failed: {e}") from e
    say(f"pulumi up (config {stack}): {run.seconds:.1f} s ({run.changes})")
    return run.seconds


def pgbench(host: str, port: int, seconds: int, clients: int, extra: tuple[str, ...] = ()) -> float:
    s = settings()
    env = {**os.environ, "PGPASSWORD": s.password, "PGCONNECT_TIMEOUT": "5"}
    cp = subprocess.run(
        ["pgbench", "-n", *extra, "-h", host, "-p", str(port), "-U", s.user, "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(seconds), BENCH_DB],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )  # fmt: skip
    # With -C pgbench reports only the rate including the reconnections (which is what -C measures).
    m = re.search(r"tps = ([\d.]+) \((?:without|excluding|including reconnection)", cp.stdout)
    if cp.returncode != 0 or not m:
        raise LabError(f"pgbench on {host}:{port} failed (rc {cp.returncode}): {(cp.stdout + cp.stderr)[-800:]}")
    return float(m.group(1))


def ensure_bench_database(c: Cluster, scale: int) -> str:
    """Database BENCH_DB on the primary, initialised by pgbench at `scale`; returns the primary's address."""
    s = settings()
    addr = SERVER_BY_NAME[c.wait_for_primary(60)].address
    with connect(host=addr, port=s.pg_port, timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "-h", addr, "-p", str(s.pg_port), "-U", s.user, BENCH_DB],
        env={**os.environ, "PGPASSWORD": s.password},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return addr


def throughput(c: Cluster, seconds: int, clients: int, rounds: int) -> dict[str, Any]:
    s = settings()
    addr = ensure_bench_database(c, 10)
    c.wait_healthy(120)
    out: dict[str, Any] = {"pgbench": {"clients": clients, "threads": min(clients, 2), "seconds": seconds,
                                       "scale": 10, "rounds": rounds}}  # fmt: skip
    modes = {"read_write": (), "select_only": ("-S",), "connect_per_transaction": ("-S", "-C")}
    for mode, extra in modes.items():
        direct: list[float] = []
        pooled: list[float] = []
        for _ in range(rounds):
            direct.append(pgbench(addr, s.pg_port, seconds, clients, extra))
            pooled.append(pgbench(s.vip, s.pgpool_port, seconds, clients, extra))
        d, p = stats(direct), stats(pooled)
        say(f"tps {mode}: direct {d['values']} pgpool {p['values']}")
        out[mode] = {
            "tps_direct": d["median"],
            "tps_pgpool": p["median"],
            "ratio": round(p["median"] / d["median"], 3) if d["median"] else None,
            "direct": d,
            "pgpool": p,
        }
    return out


def arrange(c: Cluster, fault: str) -> str:
    """From a healthy cluster, arrange who the fault hits (before the writer starts); returns the victim."""
    primary = c.wait_for_primary(60)
    if fault == "primary_postgres_loss":
        return primary
    if fault == "vip_holder_and_primary_crash":
        return c.colocate_leader_and_primary()
    leader = c.wait_for_leader(60)
    if fault in ("standby_crash", "standby_partition"):
        return next(x.name for x in SERVERS if x.name not in (primary, leader))
    if leader == primary:
        c.switch_leader_to(next(x.name for x in SERVERS if x.name != primary))
        c.wait_healthy(240)  # with the heartbeat warm-up: a crash right after pgpool restarts is detected late
        leader = c.wait_for_leader(60)
    return leader


def strike(c: Cluster, fault: str, victim: str) -> None:
    if fault == "primary_postgres_loss":
        pid_file = f"/var/lib/postgresql/{settings().pg_version}/main/postmaster.pid"
        c.lab.exec(victim, f"kill -9 $(head -1 {pid_file})", check=True, timeout=15)
    elif fault == "standby_partition":
        c.lab.partition(victim)
    else:
        c.crash(victim)


def multi_host_conninfo(victim: str) -> str:
    """The exported multi-host string's hosts and options (components.endpoints), the victim's pgpool first: the
    writer starts on the node the fault hits, as the VIP's writer does."""
    port = settings().pgpool_port
    order = [victim, *(x.name for x in SERVERS if x.name != victim)]
    hosts = {"host": ",".join(address_of(n) for n in order), "port": ",".join([str(port)] * len(order))}
    return make_conninfo(**hosts, **MULTI_HOST_OPTIONS)


def measure_fault(c: Cluster, fault: str, n: int) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    values: list[float] = []
    gaps: list[float] = []
    multi_values: list[float] = []
    lost = 0
    runs = []
    for i in range(n):
        c.restore()  # healthy, heartbeat warmed up
        victim = arrange(c, fault)
        side_by_side = fault in MULTI_HOST_FAULTS
        with contextlib.ExitStack() as writers:
            w = writers.enter_context(Writer(seconds=240))
            m = None
            if side_by_side:
                m = writers.enter_context(Writer(seconds=240, conninfo=multi_host_conninfo(victim)))
            time.sleep(3)
            t0 = time.monotonic()
            strike(c, fault, victim)
            try:
                took = w.wait_outage(t0, 180, quiet=10)
                multi_took = m.wait_outage(t0, 180, quiet=10) if m is not None else None
            except LabError as e:
                raise LabError(f"{fault} #{i + 1}: {e}") from None
            time.sleep(max(1.0, t0 + GAP_WINDOW_S - time.monotonic()))
        gap = w.result.longest_gap(t0, t0 + GAP_WINDOW_S)
        if fault == "standby_partition":
            c.lab.heal(victim)
        missing = missing_rows(w.result) + (missing_rows(m.result) if m is not None else [])
        lost += len(missing)
        values.append(took)
        gaps.append(gap)
        run: dict[str, Any] = {
            "victim": victim,
            "outage_s": round(took, 2),
            "longest_gap_s": round(gap, 2),
            "lost": len(missing),
        }
        line = f"{fault} #{i + 1}: {victim} hit, write fails -> succeeds {took:.2f} s, longest gap {gap:.2f} s"
        if m is not None and multi_took is not None:
            multi_values.append(multi_took)
            run["multi_host_outage_s"] = round(multi_took, 2)
            run["multi_host_longest_gap_s"] = round(m.result.longest_gap(t0, t0 + GAP_WINDOW_S), 2)
            line += f"; multi-host client {multi_took:.2f} s"
        runs.append(run)
        say(line)
    figures: dict[str, Any] = {**stats(values), "longest_gap_s": stats(gaps)}
    if multi_values:
        figures["multi_host"] = stats(multi_values)
    return figures, lost, runs


def bench_profile(profile: str, stack: str, args: argparse.Namespace) -> dict[str, Any]:
    """One profile, on servers the parent just reset; runs inside the (new) switch namespace."""
    os.environ[STACK_ENV] = stack
    c = Cluster(Lab())
    t0 = time.monotonic()
    apply_s = provision(stack, args.synchronous)
    t = settings(stack)  # after `up`: the credentials are the stack's outputs
    c.wait_healthy(600, warmup=False)
    provision_s = time.monotonic() - t0
    c.wait_healthy(600)
    healthy_s = time.monotonic() - t0
    say(f"{profile}: provisioned in {provision_s:.1f} s (healthy incl. heartbeat warm-up {healthy_s:.1f} s)")
    noop_s = provision(stack, args.synchronous)
    result: dict[str, Any] = {
        "stack": stack,
        "synchronous_replication": args.synchronous or t.synchronous_replication,
        "provision_s": round(provision_s, 1),
        "provision_apply_s": round(apply_s, 1),
        "healthy_s": round(healthy_s, 1),
        "noop_s": round(noop_s, 1),
    }
    result["throughput"] = throughput(c, args.pgbench_s, args.clients, args.rounds)
    result["faults"] = {}
    lost_total = 0
    for fault in args.faults:
        figures, lost, runs = measure_fault(c, fault, args.runs)
        result["faults"][fault] = {**figures, "lost": lost, "runs": runs}
        lost_total += lost
    result["lost_acknowledged_writes"] = lost_total
    c.restore(warmup=False)
    return result


def outer(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run argv in the host's namespaces: `lab reset` recreates the switch namespace this process may sit in."""
    host = outer_ancestor()
    if host is None and not Path("/sys/fs/cgroup/systemd").is_dir():
        # Started detached (its shell gone, reparented to init): `lab reset` would run in `ip netns exec`'s mount
        # namespace, fail on the missing cgroup mount and leave stale /run/netns entries behind.
        raise LabError(
            "no ancestor process in the host's namespaces: run the bench from a shell that stays alive "
            "(make bench, or nohup bash -c 'ip netns exec pghalab-sw .venv/bin/python -m lab.bench ...')"
        )
    prefix = ["nsenter", f"--mount=/proc/{host}/ns/mnt", f"--net=/proc/{host}/ns/net", f"--wd={REPO}", "--"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*(prefix if host else []), *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout
    )


def run_profile(profile: str, args: argparse.Namespace) -> dict[str, Any]:
    say(f"profile {profile} (stack {PROFILES[profile]}): fresh servers (lab reset)")
    t0 = time.monotonic()
    cp = outer([sys.executable, "-m", "lab", "reset"], 600)
    if cp.returncode != 0:
        raise LabError("lab reset failed")
    reset_s = time.monotonic() - t0
    child = [sys.executable, "-m", "lab.bench", "--one", profile, *args.passthrough]
    cp = outer(["ip", "netns", "exec", SWITCH_NS, *child], 1800)
    try:
        result: dict[str, Any] = json.loads(cp.stdout)
    except json.JSONDecodeError as e:
        raise LabError(f"profile {profile}: no JSON from the measuring process (rc {cp.returncode})") from e
    result["fresh_servers_s"] = round(reset_s, 1)
    return result


def table(profiles: dict[str, Any]) -> str:
    """The per-profile summary: each fault's median [max] outage, throughput ratios, losses."""
    faults = [f for f in FAULTS if any(f in r.get("faults", {}) for r in profiles.values())]
    head = ["profile", *faults, "rw", "select", "-C", "lost"]
    rows = [head]
    for name, r in profiles.items():
        if "faults" not in r:
            rows.append([name, *(["-"] * (len(head) - 1))])
            continue
        cells = [f"{r['faults'][f]['median']} [{r['faults'][f]['max']}]" if f in r["faults"] else "-" for f in faults]
        tp = r["throughput"]
        ratios = [f"{tp[m]['ratio']}x" for m in ("read_write", "select_only", "connect_per_transaction")]
        rows.append([name, *cells, *ratios, str(r["lost_acknowledged_writes"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return "bench: seconds of write outage, median [max]; pgpool/direct tps ratios\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="walkthrough,tuned,fast", help="comma-separated: walkthrough, tuned, fast")
    p.add_argument("--runs", type=int, default=5, help="runs of each fault per profile")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, default all: {', '.join(FAULTS)}")
    p.add_argument("--pgbench-s", type=int, default=15)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--synchronous",
        action="store_true",
        help="every profile with synchronous replication (ANY 1): failover bounds and rows lost under it",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one profile, print its JSON
    args = p.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if unknown := [f for f in args.faults if f not in FAULTS]:
        p.error(f"unknown fault(s) {', '.join(unknown)}; expected {', '.join(FAULTS)}")
    args.passthrough = [
        f"--runs={args.runs}",
        f"--faults={','.join(args.faults)}",
        f"--pgbench-s={args.pgbench_s}",
        f"--clients={args.clients}",
        f"--rounds={args.rounds}",
        *(["--synchronous"] if args.synchronous else []),
    ]
    logging.basicConfig(level=logging.WARNING, format="lab: %(message)s")
    log.setLevel(logging.WARNING)
    if args.one:
        try:
            print(json.dumps(bench_profile(args.one, PROFILES[args.one], args)))
            return 0
        except (LabError, subprocess.SubprocessError) as e:
            print(json.dumps({"error": str(e)}))
            return 1
    started = time.monotonic()
    out: dict[str, Any] = {
        "benchmark": "pgpool-ha lab",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "method": {
            "faults": "writer through the VIP (row every 50 ms, new connection after an error, 1 s connect timeout): "
            "first failed write -> next committed write; primary_postgres_loss = kill -9 of the postmaster, "
            "vip_holder_crash = power loss of the leader (a standby), vip_holder_and_primary_crash = power loss of "
            "the server holding both, standby_crash / standby_partition = power loss / cable pull of a standby that "
            "is not the leader; longest_gap_s = longest time without a commit in the 20 s after the fault; "
            "multi_host = a second writer at the same time on the multi-host string (the victim's pgpool first)",
            "provision_s": "`pulumi up` on fresh servers (empty stack) -> cluster serves (before heartbeat warm-up)",
            "throughput": "pgbench from the lab's switch namespace, same clients/duration, direct 5432 vs VIP:9999: "
            "TPC-B, -S, -S -C",
        },
        "profiles": {},
    }
    try:
        for profile in [x.strip() for x in args.profiles.split(",") if x.strip()]:
            if profile not in PROFILES:
                raise LabError(f"unknown profile {profile!r}; expected {', '.join(PROFILES)}")
            out["profiles"][profile] = run_profile(profile, args)
    except (LabError, subprocess.SubprocessError) as e:
        out["error"] = str(e)
    out["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out, indent=2))
    print(table(out["profiles"]), file=sys.stderr)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
