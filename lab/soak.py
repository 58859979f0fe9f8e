"""`make soak`: random faults, one at a time, under load, for a bounded time; prints ONE JSON object.

    ip netns exec pghalab-sw .venv/bin/python -m lab.soak [--duration 1800] [--stack lab-fast] [--seed N]
                                                          [--no-synchronous]

The lab stack is first brought to the config of --stack with `pulumi up` (the real engine), with synchronous
replication on unless --no-synchronous: the issue's "0 acknowledged rows lost" holds only for synchronous commits
(an asynchronous primary that loses power may take its last acknowledged commits with it, by design). Then, until the
duration is used up: a writer commits numbered rows through the VIP the whole time (new connection after any error,
1 s connect timeout), a read load (pgbench -S through the VIP in 20 s rounds) runs beside it, and every cycle
injects one fault from the lab's verbs on a random node: crash (power loss), stop-postgresql, stop-pgpool, partition
(cable pull) or reboot. The cluster recovers by the product's own mechanisms (failover, follow_primary, fencing);
after each fault the operator step docs/failure-modes.md documents is run: heal/start what the fault took away, then
`pcp_attach_node` for a standby that streams again and online recovery (`pcp_recovery_node`) for one that does not
(lab.cluster.Cluster.restore, which restarts no pgpool: one that stops answering ends the soak as a failure).
Figures:

- outage per fault: writes through the VIP failing -> committing again (0 when none failed), median and max per kind;
- acknowledged rows lost: acknowledged by a COMMIT, missing at the end (must be 0 with synchronous replication);
- spurious failovers: the primary changed although the fault did not touch the primary's node, or changed between
  faults (must be 0);
- the end state: one primary, every standby streaming, 3 nodes up in pgpool.
Every loop is bounded by the duration plus per-step timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

from . import SERVERS
from .bench import BENCH_DB, ensure_bench_database
from .cluster import (
    PGPOOL_UNIT,
    STACK_ENV,
    Cluster,
    Writer,
    missing_rows,
    pool_nodes_retry,
    settings,
    stats,
)
from .core import Lab
from .util import LabError, log

FAULTS = ("crash", "stop-postgresql", "stop-pgpool", "partition", "reboot")
HOLD_S = 20.0  # how long a fault stays before the operator heals it (a partition longer than the fence's isolation)
RECOVER_S = 420.0


def say(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


class ReadLoad:
    """pgbench -S through the VIP in short rounds (pgbench aborts a client on a failover: the next round reconnects),
    until stop() or the deadline."""

    def __init__(self, deadline: float, clients: int = 2) -> None:
        self.deadline, self.clients = deadline, clients
        self.rounds = self.failed_rounds = 0
        self.transactions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="read-load", daemon=True)

    def _loop(self) -> None:
        s = settings()
        env = {**os.environ, "PGPASSWORD": s.password, "PGCONNECT_TIMEOUT": "2"}
        while not self._stop.is_set() and time.monotonic() < self.deadline - 5:
            seconds = int(min(20, self.deadline - time.monotonic() - 2))
            cp = subprocess.run(
                ["pgbench", "-n", "-S", "-h", s.vip, "-p", str(s.pgpool_port), "-U", s.user, "-c", str(self.clients),
                 "-T", str(max(1, seconds)), BENCH_DB],
                env=env, capture_output=True, text=True, timeout=seconds + 30, check=False,
            )  # fmt: skip
            self.rounds += 1
            done = [line for line in cp.stdout.splitlines() if "number of transactions actually processed" in line]
            if done:
                self.transactions += int(done[0].split(":")[1].split("/")[0].strip())
            if cp.returncode != 0:
                self.failed_rounds += 1
                self._stop.wait(1)

    def start(self) -> ReadLoad:
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=60)
        return {"rounds": self.rounds, "rounds_with_errors": self.failed_rounds, "transactions": self.transactions}


def inject(c: Cluster, fault: str, node: str) -> None:
    unit = settings().pg_unit
    match fault:
        case "crash":
            c.crash(node)
        case "stop-postgresql":
            c.lab.stop_service(node, unit)
        case "stop-pgpool":
            c.lab.stop_service(node, PGPOOL_UNIT)
        case "partition":
            c.lab.partition(node)
        case "reboot":
            c.lab.reboot(node)


def heal(c: Cluster, fault: str, node: str) -> None:
    """Undo what the fault took away (the operator's first step); restore() does the rest."""
    if fault == "partition":
        c.lab.heal(node)
    elif fault == "crash":
        c.start(node)


def soak(duration: float, seed: int, synchronous: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    c = Cluster(Lab())
    c.restore()
    ensure_bench_database(c, 5)
    c.restore()
    t_start = time.monotonic()
    deadline = t_start + duration
    outages: dict[str, list[float]] = {f: [] for f in FAULTS}
    events: list[dict[str, Any]] = []
    spurious = 0
    reads = ReadLoad(deadline).start()
    writer = Writer(seconds=duration + 60, max_rows=10_000_000, interval=0.05)
    try:
        with writer as w:
            while time.monotonic() < deadline - 60:  # room for one more fault and its recovery
                primary_before = c.wait_for_primary(120)
                time.sleep(rng.uniform(5, 15))
                # Between faults the primary must not move (a spurious failover of an idle, healthy cluster).
                primary_now = c.wait_for_primary(120)
                if primary_now != primary_before:
                    spurious += 1
                    say(f"SPURIOUS failover between faults: {primary_before} -> {primary_now}")
                fault, node = rng.choice(FAULTS), rng.choice(SERVERS).name
                t0 = time.monotonic()
                inject(c, fault, node)
                say(f"{fault} on {node} ({'primary' if node == primary_now else 'standby'})")
                try:
                    took = w.wait_outage(t0, 180, quiet=HOLD_S)
                except LabError as e:
                    raise LabError(f"{fault} on {node}: {e}") from None
                time.sleep(max(0.0, t0 + HOLD_S - time.monotonic()))  # the fault holds before the operator heals
                outages[fault].append(took)
                heal(c, fault, node)
                t_heal = time.monotonic()
                c.restore(RECOVER_S)
                primary_after = c.wait_for_primary(60)
                touched_primary = node == primary_now and fault != "stop-pgpool"
                if primary_after != primary_now and not touched_primary:
                    spurious += 1
                    say(f"SPURIOUS failover: {fault} on standby {node} moved the primary to {primary_after}")
                events.append(
                    {
                        "at_s": round(t0 - t_start, 1),
                        "fault": fault,
                        "node": node,
                        "was_primary": node == primary_now,
                        "outage_s": round(took, 2),
                        "recovered_s": round(time.monotonic() - t_heal, 1),
                        "primary_after": primary_after,
                    }
                )
                say(f"  outage {took:.2f} s, healthy again {time.monotonic() - t_heal:.1f} s after the heal")
    finally:
        read_figures = reads.stop()
    c.restore(RECOVER_S)
    lost = missing_rows(w.result)
    nodes = pool_nodes_retry(60)
    return {
        "duration_s": round(time.monotonic() - t_start, 1),
        "seed": seed,
        "stack": settings().stack,
        "synchronous_replication": synchronous,
        "faults_injected": len(events),
        "faults_by_kind": {f: len(v) for f, v in outages.items()},
        "outage_s": {f: stats(v) for f, v in outages.items() if v},
        "outage_all_s": stats([e["outage_s"] for e in events]),
        "writes": w.result.summary(),
        "acknowledged_rows_lost": len(lost),
        "spurious_failovers": spurious,
        "read_load": read_figures,
        "end_state": [
            {"node": n.name, "status": n.status, "role": n.role, "replication": n.replication_state} for n in nodes
        ],
        "events": events,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.soak", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", "1800")))
    p.add_argument("--stack", default=os.environ.get("SOAK_STACK", "lab-fast"))
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--synchronous", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    from .engine import LabStack

    os.environ[STACK_ENV] = args.stack
    say(f"pulumi up with the config of {args.stack}, synchronous replication {'on' if args.synchronous else 'off'}")
    overrides = {"postgresql": {"synchronousReplication": args.synchronous}}
    LabStack(echo=False).up(args.stack, overrides=overrides, timeout=900)
    try:
        result = soak(args.duration, args.seed, args.synchronous)
    except LabError as e:
        print(json.dumps({"error": str(e)}))
        log.error("%s", e)
        return 1
    print(json.dumps(result, indent=2))
    # Lost rows fail the soak only when commits were synchronous (see the module's docstring).
    ok = (result["acknowledged_rows_lost"] == 0 or not args.synchronous) and result["spurious_failovers"] == 0
    end = result["end_state"]
    ends_healthy = (
        all(n["status"] == "up" for n in end)
        and sum(n["role"] == "primary" for n in end) == 1
        and all(n["replication"] == "streaming" for n in end if n["role"] != "primary")
    )
    return 0 if ok and ends_healthy else 1


if __name__ == "__main__":
    sys.exit(main())
