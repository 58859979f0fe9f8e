"""The lab network: a bridge in its own switch namespace and one namespace per server.

Nothing is ever created in the root namespace: every link is created with `ip -n <namespace>`, so neither the
bridge nor any 10.213.8.x address or route can leak to the host's uplink.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .config import (
    ALL_SERVERS,
    BRIDGE,
    CLIENT_ADDR,
    CLIENT_BR_PORT,
    CLIENT_IF,
    NETNS_ETC,
    PREFIX,
    SERVER_IF,
    SWITCH_NS,
    Server,
)
from .util import log, run

NETNS_DIR = Path("/run/netns")
# The product's kernel settings (net.* only: they belong to a network namespace). nspawn keeps /proc/sys read-only
# inside the container, so the lab applies them to each server's namespace from outside, as a container host would;
# the product's kernel-settings step then finds them in force (on VMs it sets them itself).
PRODUCT_SYSCTL = Path(__file__).resolve().parents[1] / "templates" / "etc" / "sysctl.d" / "60-pgha.conf.j2"


def product_net_sysctls() -> dict[str, str]:
    from components.render import parse_settings  # the product's own `name = value` reader

    return {k: v for k, v in parse_settings(PRODUCT_SYSCTL.read_text()).items() if k.startswith("net.")}


def ns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def link_exists(ns: str, dev: str) -> bool:
    return run(["ip", "-n", ns, "link", "show", "dev", dev], check=False).returncode == 0


def ip(ns: str, *args: str, check: bool = True) -> str:
    return run(["ip", "-n", ns, *args], check=check).stdout


def ensure_ns(ns: str) -> None:
    if not ns_exists(ns):
        run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")


def ensure_switch() -> None:
    ensure_ns(SWITCH_NS)
    if not link_exists(SWITCH_NS, BRIDGE):
        ip(SWITCH_NS, "link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0")
    ip(SWITCH_NS, "link", "set", BRIDGE, "up")
    # The clients' port: one veth end on the bridge, the other holds the client address.
    if not link_exists(SWITCH_NS, CLIENT_IF):
        ip(SWITCH_NS, "link", "add", "name", CLIENT_IF, "type", "veth", "peer", "name", CLIENT_BR_PORT)
    ip(SWITCH_NS, "link", "set", CLIENT_BR_PORT, "master", BRIDGE, "up")
    ip(SWITCH_NS, "link", "set", CLIENT_IF, "up")
    ip(SWITCH_NS, "addr", "replace", f"{CLIENT_ADDR}/{PREFIX}", "dev", CLIENT_IF)
    write_switch_hosts()


def write_switch_hosts() -> None:
    """/etc/hosts seen by `ip netns exec pghalab-sw ...`, so clients can use server names."""
    NETNS_ETC.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback", f"{CLIENT_ADDR}\tlabclient"]
    lines += [f"{s.address}\t{s.name}" for s in ALL_SERVERS]
    (NETNS_ETC / "hosts").write_text("\n".join(lines) + "\n")


def ensure_server_net(s: Server, *, cable_up: bool) -> None:
    """Namespace, veth pair (switch end on the bridge, server end enp0s8 with fixed MAC) and the fixed address.

    cable_up=True also sets the switch end up (heals a partition); otherwise a newly created cable is set up and an
    existing one is left as it is.
    """
    ensure_ns(s.netns)
    for key, value in product_net_sysctls().items():
        run(["ip", "netns", "exec", s.netns, "sysctl", "-q", "-w", f"{key}={value}"])
    created = False
    if not link_exists(s.netns, SERVER_IF):
        if link_exists(SWITCH_NS, s.switch_port):
            ip(SWITCH_NS, "link", "del", s.switch_port)
        ip(SWITCH_NS, "link", "add", "name", s.switch_port, "type", "veth", "peer", "name", SERVER_IF, "netns", s.netns)
        created = True
    ip(s.netns, "link", "set", SERVER_IF, "address", s.mac)
    ip(SWITCH_NS, "link", "set", s.switch_port, "master", BRIDGE)
    if created or cable_up:
        ip(SWITCH_NS, "link", "set", s.switch_port, "up")
    link_up(s)


def link_up(s: Server) -> None:
    ip(s.netns, "link", "set", SERVER_IF, "up")
    ip(s.netns, "addr", "replace", f"{s.address}/{PREFIX}", "dev", SERVER_IF)


def link_dead(s: Server) -> None:
    """A powered-off server: its NIC answers nothing and holds no address (not even the VIP)."""
    if ns_exists(s.netns) and link_exists(s.netns, SERVER_IF):
        ip(s.netns, "link", "set", SERVER_IF, "down")
        ip(s.netns, "addr", "flush", "dev", SERVER_IF)


def set_cable(s: Server, up: bool) -> None:
    ip(SWITCH_NS, "link", "set", s.switch_port, "up" if up else "down")


# A partial partition: the switch drops every frame between a server and some of the others (a broken link
# between two racks, say), while its links to the rest stay up. One at a time; `heal` removes it.
SPLIT_TABLE = "pgha_lab_split"


def split(s: Server, peers: list[Server]) -> None:
    """Drop every frame (ARP included) the switch would forward between s and each of peers, both ways."""
    drop_between(SWITCH_NS, s.switch_port, [p.switch_port for p in peers])


def split_ports() -> set[str]:
    """Switch ports of the servers a split involves (empty: none)."""
    return ports_split_in(SWITCH_NS)


def heal_split() -> None:
    remove_split(SWITCH_NS)


# The same nftables bridge table serves every lab whose switch is a Linux bridge in a namespace of ours (the VM
# lab's bridge carries the VMs' tap devices where this one carries veth ends).
def drop_between(ns: str, port: str, peer_ports: list[str]) -> None:
    """In namespace ns, the bridge drops every frame between port and each of peer_ports, both ways."""
    rules = "".join(
        f'\t\tiifname "{a}" oifname "{b}" drop\n' for peer in peer_ports for a, b in ((port, peer), (peer, port))
    )
    script = (
        f"table bridge {SPLIT_TABLE}\ndelete table bridge {SPLIT_TABLE}\n"
        f"table bridge {SPLIT_TABLE} {{\n\tchain forward {{\n"
        f"\t\ttype filter hook forward priority 0; policy accept;\n{rules}\t}}\n}}\n"
    )
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)


def ports_split_in(ns: str) -> set[str]:
    """Bridge ports in namespace ns that a split involves (empty: none)."""
    if not ns_exists(ns):
        return set()
    out = run(["ip", "netns", "exec", ns, "nft", "list", "table", "bridge", SPLIT_TABLE], check=False)
    if out.returncode != 0:
        return set()
    words = out.stdout.replace('"', " ").split()
    return {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("iifname", "oifname")}


def remove_split(ns: str) -> None:
    if ns_exists(ns):
        run(["ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", SPLIT_TABLE], check=False)


def link_is_up(ns: str, dev: str) -> bool:
    """The link's administrative state (UP flag) in namespace ns; False when it does not exist."""
    if not ns_exists(ns) or not link_exists(ns, dev):
        return False
    out = ip(ns, "-o", "link", "show", "dev", dev)
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
    return "UP" in flags


def in_namespace(name: str) -> bool:
    """This process runs inside the named network namespace (ip netns exec NAME ...)."""
    try:
        mine, named = os.stat("/proc/self/ns/net"), os.stat(NETNS_DIR / name)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def cable_is_up(s: Server) -> bool:
    return link_is_up(SWITCH_NS, s.switch_port)


def addresses(s: Server) -> list[str]:
    """IPv4 addresses (with prefix and label) on the server's enp0s8, read from its namespace."""
    if not ns_exists(s.netns) or not link_exists(s.netns, SERVER_IF):
        return []
    return inet_addresses(ip(s.netns, "-4", "-o", "addr", "show", "dev", SERVER_IF))


def inet_addresses(ip_o_addr: str) -> list[str]:
    """The IPv4 addresses (with prefix) in the output of `ip -4 -o addr show`."""
    result = []
    for line in ip_o_addr.splitlines():
        parts = line.split()
        if "inet" in parts:
            result.append(parts[parts.index("inet") + 1])
    return result


def remove_server_net(s: Server) -> None:
    """The server's namespace and cable (a server removed from the lab)."""
    if ns_exists(SWITCH_NS) and link_exists(SWITCH_NS, s.switch_port):
        ip(SWITCH_NS, "link", "del", s.switch_port)
    if ns_exists(s.netns):
        run(["ip", "netns", "del", s.netns])


def teardown() -> None:
    for s in ALL_SERVERS:
        if ns_exists(s.netns):
            run(["ip", "netns", "del", s.netns])
    if ns_exists(SWITCH_NS):
        run(["ip", "netns", "del", SWITCH_NS])
    if NETNS_ETC.exists():
        for f in NETNS_ETC.iterdir():
            f.unlink()
        NETNS_ETC.rmdir()
        with contextlib.suppress(OSError):  # /etc/netns itself, if nothing else uses it
            NETNS_ETC.parent.rmdir()
    log.debug("net: namespaces removed")
