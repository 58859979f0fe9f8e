"""Drift: what a server holds that the program did not put there, seen by `pulumi refresh` and repaired by `up`.

pulumi-command's Command has no read, so `refresh` alone never looks at a server. One ServerDrift resource per host
does: its read (only `refresh`, `preview --refresh` and `up --refresh` call it; a plain `preview` or `up` contacts no
server for it) runs templates/steps/drift-observe.sh.j2 over SSH, which compares every file and unit the server's
manifest records (written by the steps that put them there) with the server as it is. Its outputs:

- `drift`: what differs now, per path or unit ("content differs", "mode 644, the program set 600", "missing",
  "inactive, the program started it"); never anything of a file's content, so secret files are named safely;
- `generations`: per path or unit, a counter raised by every read that finds it drifted.

A file's step, and the service step that applies the file, carry the generations of what they manage in their
update command (components.database): a drifted file is written again by its own step and applied by its service's
step (the same reload, restart and rolling rules as a change made through the stack). After the repair the next
read finds nothing and the counters stay, so a second `preview --refresh` is clean.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import paramiko
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

# Inputs whose change is an update of the resource (no server contact: the counters carry over).
INPUTS = ("node", "host", "port", "user", "private_key", "observe")
UNREACHABLE = "(server)"


def parse_observation(text: str) -> dict[str, str]:
    """drift-observe's lines, "<key>\\t<what differs>", into a mapping (the final "checked" line dropped)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, what = line.partition("\t")
        if sep and key != "checked":
            found[key] = what
    return found


def next_generations(previous: Mapping[str, int], drift: Mapping[str, str]) -> dict[str, int]:
    """Every key found drifted counts once more; the others keep their count (so a repaired key stays still)."""
    generations = {key: int(value) for key, value in previous.items()}
    for key in drift:
        if key != UNREACHABLE:
            generations[key] = generations.get(key, 0) + 1
    return generations


def _load_key(text: str) -> paramiko.PKey:
    errors = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as error:
            errors.append(f"{kind.__name__}: {error}")
    raise ValueError("the SSH private key is not an Ed25519, ECDSA or RSA key: " + "; ".join(errors))


def observe(props: Mapping[str, Any]) -> dict[str, str]:
    """Run drift-observe on the host; an unreachable host is reported as such (its counters do not move)."""
    client = paramiko.SSHClient()
    # Like the provisioning steps' connections (pulumi-command checks no host key): the same hosts, the same trust.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            str(props["host"]),
            port=int(props["port"]),
            username=str(props["user"]),
            pkey=_load_key(str(props["private_key"])),
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
        _, stdout, stderr = client.exec_command(str(props["observe"]), timeout=60)
        out = stdout.read().decode()
        status = stdout.channel.recv_exit_status()
        if status != 0:
            raise RuntimeError(f"drift-observe exited {status}: {stderr.read().decode().strip()[-500:]}")
        return parse_observation(out)
    except (OSError, paramiko.SSHException) as error:
        return {UNREACHABLE: f"not checked: {props['host']}:{props['port']} did not answer ({error})"}
    finally:
        client.close()


class _DriftProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"drift-{props['node']}", {**props, "drift": {}, "generations": {}})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in INPUTS if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], stables=["node"], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**news, "drift": olds.get("drift") or {}, "generations": olds.get("generations") or {}})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        drift = observe(props)
        generations = next_generations(props.get("generations") or {}, drift)
        return ReadResult(id_, {**props, "drift": drift, "generations": generations})


class ServerDrift(pulumi.dynamic.Resource):
    """The drift of one host's managed files and units (see the module's docstring)."""

    drift: pulumi.Output[dict[str, str]]
    generations: pulumi.Output[dict[str, int]]

    def __init__(
        self,
        name: str,
        *,
        node: str,
        host: str,
        port: int,
        user: str,
        private_key: pulumi.Input[str],
        observe: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "node": node,
            "host": host,
            "port": port,
            "user": user,
            "private_key": pulumi.Output.secret(private_key),
            "observe": observe,
            "drift": None,
            "generations": None,
        }
        # read() returns the key among its outputs in plain form: without this, a refresh would store it unencrypted.
        secret = pulumi.ResourceOptions(additional_secret_outputs=["private_key"])
        super().__init__(_DriftProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret))

    def generations_of(self, keys: tuple[str, ...]) -> pulumi.Output[list[int]]:
        """The counters of `keys`: they change only when a refresh found one of them drifted."""
        return self.generations.apply(lambda counts: [int((counts or {}).get(key, 0)) for key in keys])
