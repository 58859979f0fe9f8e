"""`make bench`: recovery times and throughput of the lab cluster, for the default (walkthrough) and the tuned
pgpool profile, measured in one run from fresh servers. Prints ONE JSON object on stdout (progress on stderr).

    ip netns exec pghalab-sw .venv/bin/python -m lab.bench [--rto-n 3] [--vip-n 3] [--pgbench-s 15]

Per profile (the config of its stack file, applied to the lab stack): Lab().reset() (fresh servers, empty stack), then
- provision_s: `pulumi up` from fresh servers until the cluster serves (3 backends up, one primary, 2 standbys
  streaming, a LEADER holding the VIP); provision_apply_s is `up` alone; healthy_s adds the heartbeat warm-up;
- noop_s: `pulumi up` again, nothing to change;
- tps_direct / tps_pgpool / tps_ratio: pgbench (TPC-B, same clients and duration) on the primary's port 5432 and
  through VIP:9999, alternating, median of the rounds;
- rto_primary_s: the primary's postmaster is killed (kill -9); a writer that commits a row every 50 ms through the
  VIP (new connection after any error, 1 s connect timeout) sees: first failed write -> next committed write;
- vip_move_s: pgpool on the watchdog leader is stopped; until a new connection through the VIP answers;
- lost_acknowledged_writes: acknowledged rows of those writers missing afterwards.
The lab is left provisioned with the last profile (tuned = stack lab).
"""

from __future__ import annotations

import argparse
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

from .cluster import (
    PGPOOL_UNIT,
    STACK_ENV,
    Cluster,
    Writer,
    missing_rows,
    outer_ancestor,
    settings,
    stats,
)
from .config import SERVER_BY_NAME, SWITCH_NS
from .core import Lab
from .util import LabError, log

REPO = Path(__file__).resolve().parent.parent
PROFILES = {"walkthrough": "lab-walkthrough", "tuned": "lab"}


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


def provision(stack: str, timeout: float = 900) -> float:
    """`pulumi up` of the lab stack with the config of Pulumi.<stack>.yaml; its wall time."""
    from .engine import EngineError, LabStack

    try:
        run = LabStack(echo=False).up(stack, timeout=timeout)
    except EngineError as e:
        raise LabError(f"pulumi up with the config of stack {stack} failed: {e}") from e
    say(f"pulumi up (config {stack}): {run.seconds:.1f} s ({run.changes})")
    return run.seconds


def pgbench(host: str, port: int, seconds: int, clients: int) -> float:
    s = settings()
    env = {**os.environ, "PGPASSWORD": s.password, "PGCONNECT_TIMEOUT": "5"}
    cp = subprocess.run(
        ["pgbench", "-n", "-h", host, "-p", str(port), "-U", s.user, "-c", str(clients), "-j", str(min(clients, 2)),
         "-T", str(seconds), s.dbname],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )  # fmt: skip
    m = re.search(r"tps = ([\d.]+) \((?:without|excluding)", cp.stdout)
    if cp.returncode != 0 or not m:
        raise LabError(f"pgbench on {host}:{port} failed (rc {cp.returncode}): {(cp.stdout + cp.stderr)[-800:]}")
    return float(m.group(1))


def throughput(c: Cluster, seconds: int, clients: int, rounds: int) -> dict[str, Any]:
    s = settings()
    primary = c.wait_for_primary(60)
    addr = SERVER_BY_NAME[primary].address
    env = {**os.environ, "PGPASSWORD": s.password}
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", "10", "-h", addr, "-p", str(s.pg_port), "-U", s.user, s.dbname],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    c.wait_healthy(120)
    direct: list[float] = []
    pooled: list[float] = []
    for _ in range(rounds):
        direct.append(pgbench(addr, s.pg_port, seconds, clients))
        pooled.append(pgbench(s.vip, s.pgpool_port, seconds, clients))
    d, p = stats(direct), stats(pooled)
    say(f"tps direct {d['values']} pgpool {p['values']}")
    return {
        "tps_direct": d["median"],
        "tps_pgpool": p["median"],
        "tps_ratio": round(p["median"] / d["median"], 3) if d["median"] else None,
        "pgbench": {
            "clients": clients,
            "threads": min(clients, 2),
            "seconds": seconds,
            "scale": 10,
            "rounds": rounds,
            "direct": d,
            "pgpool": p,
        },
    }


def rto_primary(c: Cluster, n: int) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    values: list[float] = []
    lost = 0
    runs = []
    s = settings()
    for i in range(n):
        c.restore(warmup=False)
        primary = c.wait_for_primary(60)
        with Writer(seconds=240) as w:
            time.sleep(3)
            t0 = time.monotonic()
            c.lab.exec(
                primary,
                f"kill -9 $(head -1 /var/lib/postgresql/{s.pg_version}/main/postmaster.pid)",
                check=True,
                timeout=15,
            )
            new = c.wait_for_primary(180, not_on=primary)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and w.result.first_success_after(t0) is None:
                time.sleep(0.2)
            time.sleep(1)
        outage = w.result.outage(t0)
        rto = (outage[1] - outage[0]) if outage else 0.0
        missing = missing_rows(w.result)
        lost += len(missing)
        values.append(rto)
        runs.append({"killed": primary, "promoted": new, "rto_s": round(rto, 2), "lost": len(missing)})
        say(f"rto_primary #{i + 1}: {primary} killed, {new} promoted, write fails -> succeeds {rto:.2f} s")
    return stats(values), lost, runs


def vip_move(c: Cluster, n: int) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    values: list[float] = []
    lost = 0
    runs = []
    for i in range(n):
        c.restore(warmup=False)
        leader = c.wait_for_leader(60)
        with Writer(seconds=240) as w:
            time.sleep(2)
            t0 = time.monotonic()
            c.lab.stop_service(leader, PGPOOL_UNIT)
            holder = c.wait_for_vip(180, not_on=leader)
            took = time.monotonic() - t0
            time.sleep(1)
        missing = missing_rows(w.result)
        lost += len(missing)
        values.append(took)
        runs.append({"stopped_on": leader, "new_holder": holder, "vip_move_s": round(took, 2), "lost": len(missing)})
        say(f"vip_move #{i + 1}: pgpool stopped on {leader}, VIP answers on {holder} after {took:.2f} s")
        c.lab.start_service(leader, PGPOOL_UNIT)
    return stats(values), lost, runs


def bench_profile(profile: str, stack: str, args: argparse.Namespace) -> dict[str, Any]:
    """One profile, on servers the parent just reset; runs inside the (new) switch namespace."""
    os.environ[STACK_ENV] = stack
    c = Cluster(Lab())
    t0 = time.monotonic()
    apply_s = provision(stack)
    t = settings(stack)  # after `up`: the credentials are the stack's outputs
    c.wait_healthy(600, warmup=False)
    provision_s = time.monotonic() - t0
    c.wait_healthy(600)
    healthy_s = time.monotonic() - t0
    say(f"{profile}: provisioned in {provision_s:.1f} s (healthy incl. heartbeat warm-up {healthy_s:.1f} s)")
    noop_s = provision(stack)
    result: dict[str, Any] = {
        "stack": stack,
        "synchronous_replication": t.synchronous_replication,
        "provision_s": round(provision_s, 1),
        "provision_apply_s": round(apply_s, 1),
        "healthy_s": round(healthy_s, 1),
        "noop_s": round(noop_s, 1),
    }
    result.update(throughput(c, args.pgbench_s, args.clients, args.rounds))
    rto, lost_rto, rto_runs = rto_primary(c, args.rto_n)
    vip, lost_vip, vip_runs = vip_move(c, args.vip_n)
    result.update(
        {
            "rto_primary_s": rto,
            "vip_move_s": vip,
            "lost_acknowledged_writes": lost_rto + lost_vip,
            "runs": {"rto_primary": rto_runs, "vip_move": vip_runs},
        }
    )
    c.restore(warmup=False)
    return result


def outer(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run argv in the host's namespaces: `lab reset` recreates the switch namespace this process may sit in."""
    host = outer_ancestor()
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="walkthrough,tuned", help="comma-separated: walkthrough, tuned")
    p.add_argument("--rto-n", type=int, default=3)
    p.add_argument("--vip-n", type=int, default=3)
    p.add_argument("--pgbench-s", type=int, default=15)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one profile, print its JSON
    args = p.parse_args(argv)
    args.passthrough = [
        f"--rto-n={args.rto_n}",
        f"--vip-n={args.vip_n}",
        f"--pgbench-s={args.pgbench_s}",
        f"--clients={args.clients}",
        f"--rounds={args.rounds}",
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
            "rto_primary_s": "kill -9 of the primary's postmaster; writer through the VIP (row every 50 ms, new "
            "connection after an error, 1 s connect timeout): first failed write -> next committed write",
            "vip_move_s": "systemctl stop pgpool2 on the watchdog leader -> a new connection through the VIP answers",
            "provision_s": "`pulumi up` on fresh servers (empty stack) -> cluster serves (before heartbeat warm-up)",
            "tps": "pgbench TPC-B from the lab's switch namespace, same clients/duration, direct vs VIP:9999",
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
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
