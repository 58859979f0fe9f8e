"""python -m lab COMMAND ...: the lab's command line (each verb is a Lab method)."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import SERVER_BY_NAME, SPARE_SERVERS, SWITCH_NS, VIP
from .core import Lab
from .util import LabError

NODES = list(SERVER_BY_NAME)


def _rest(args: list[str]) -> list[str]:
    return args[1:] if args[:1] == ["--"] else args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab",
        description=f"Three Debian 12 servers (server1..3) as nspawn containers, two more on demand (server4..5); "
        f"clients run in netns {SWITCH_NS}.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    img = sub.add_parser("image", help="build the base image if missing or its package list changed")
    img.add_argument("--force", action="store_true", help="rebuild even if current (lab must be down)")
    up = sub.add_parser("up", help="bring the lab up (fresh servers if it was down); repair it if partly up")
    up.add_argument("--keep", action="store_true", help="reuse the overlays left by a previous `down`")
    down = sub.add_parser("down", help="power off and remove namespaces, mounts, cgroups (overlays kept)")
    down.add_argument("--purge", action="store_true", help="also delete the servers' overlays")
    sub.add_parser("reset", help="down + up: fresh servers")
    sub.add_parser("status", help="per server: running, systemd state, addresses, cable, VIP, memory")
    for verb, hlp in (
        ("ssh", "run CMD as admin over ssh from the switch namespace (no CMD: login shell)"),
        ("exec", "run CMD as root inside the server via nsenter (no CMD: bash)"),
    ):
        sp = sub.add_parser(verb, help=hlp)
        sp.add_argument("node", choices=NODES)
        sp.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ...")
    cl = sub.add_parser("client", help="run CMD in the switch namespace (ssh, psql, pytest, pulumi ...)")
    cl.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ...")
    for verb, hlp in (
        ("crash", "power loss: SIGKILL its init, link down, addresses (VIP) flushed"),
        ("start", "boot a stopped/crashed server, re-adding its fixed address"),
        ("stop", "clean poweroff of one server (stays off)"),
        ("partition", "cable pull: its switch port goes down"),
        ("heal", "plug the cable back in (and undo a split)"),
        ("reboot", "clean reboot from inside; waits until it is back"),
    ):
        sp = sub.add_parser(verb, help=hlp)
        sp.add_argument("node", choices=NODES)
    sp = sub.add_parser("split", help="partial partition: the switch drops everything between NODE and PEERS")
    sp.add_argument("node", choices=NODES)
    sp.add_argument("peers", nargs="+", choices=NODES)
    sub.add_parser("mirror", help="build the signed apt repository of the newest PostgreSQL packages (lab/mirror.py)")
    spares = [s.name for s in SPARE_SERVERS]
    sp = sub.add_parser("add", help="add a fresh server (server4, server5) to the running lab")
    sp.add_argument("node", choices=spares)
    sp = sub.add_parser("remove", help="power off and delete an added server")
    sp.add_argument("node", choices=spares)
    for verb in ("stop-service", "start-service"):
        sp = sub.add_parser(verb, help=f"systemctl {verb.split('-')[0]} UNIT inside NODE")
        sp.add_argument("node", choices=NODES)
        sp.add_argument("unit")
    return p


def print_status(lab: Lab) -> None:
    rows = lab.status()
    print(f"{'node':8} {'running':7} {'state':11} {'cable':5} {'mem MiB':>7}  addresses")
    for r in rows:
        mem = f"{r.memory_mib:.0f}" if r.memory_mib is not None else "-"
        cable = "in" if r.cable_up else "OUT"
        addrs = " ".join(r.addresses) or "-"
        print(f"{r.name:8} {'yes' if r.running else 'no':7} {r.state:11} {cable:5} {mem:>7}  {addrs}")
    holders = [r.name for r in rows if r.vip]
    print(
        f"VIP {VIP}: {', '.join(holders) if holders else 'nobody'}"
        + ("  (MORE THAN ONE HOLDER!)" if len(holders) > 1 else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="lab: %(message)s")
    lab = Lab()
    try:
        match args.verb:
            case "image":
                lab.build_image(force=args.force)
            case "up":
                lab.up(keep=args.keep)
            case "down":
                lab.down(purge=args.purge)
            case "reset":
                lab.reset()
            case "status":
                print_status(lab)
            case "ssh":
                # Like ssh itself: the words are joined with spaces and the remote shell parses them.
                return lab.ssh(args.node, " ".join(_rest(args.cmd)), capture=False, timeout=None).returncode
            case "exec":
                cmd = _rest(args.cmd) or ["bash", "-l"]
                return lab.exec(args.node, cmd, capture=False, timeout=None).returncode
            case "client":
                cmd = _rest(args.cmd)
                if not cmd:
                    raise LabError("client needs a command: python -m lab client -- CMD ...")
                return lab.client(cmd, capture=False).returncode
            case "crash":
                lab.crash(args.node)
            case "start":
                lab.start(args.node)
            case "stop":
                lab.stop(args.node)
            case "partition":
                lab.partition(args.node)
            case "heal":
                lab.heal(args.node)
            case "split":
                lab.split(args.node, args.peers)
            case "reboot":
                lab.reboot(args.node)
            case "mirror":
                lab.mirror()
            case "add":
                lab.add(args.node)
            case "remove":
                lab.remove(args.node)
            case "stop-service":
                lab.stop_service(args.node, args.unit)
            case "start-service":
                lab.start_service(args.node, args.unit)
    except LabError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
