"""Rewrite the generated parts of docs/*.md: the configuration reference and the measured figures.

    .venv/bin/python scripts/docs_generate.py           # rewrite docs/*.md in place (`make docs`)
    .venv/bin/python scripts/docs_generate.py --check   # exit 1, naming the pages, if a page differs from its sources

A generated part sits between two marker comments; everything outside them is written by hand:

    <!-- generated: KIND [ARG...] -->
    ...rewritten by this script...
    <!-- end generated -->

KINDs:
    config                     every key of Pulumi.yaml: type, default, description
    config-fields              the fields of the object-valued keys, from components/config.py (the validating models)
    report FILE [PREFIX...]    docs/figures/FILE, a lab test session's measurements ({test name: {key: value}}, as
                               tests/labpolicy.py print_report writes them): one row per measurement, only the tests
                               whose names start with one of the PREFIXes when given
    bench-faults FILE          docs/figures/FILE, the JSON object `make bench` prints: write outage per profile/fault
    bench-throughput FILE      the same file: pgbench through pgpool vs the primary directly, per profile
    bench-provisioning FILE    the same file: `pulumi up` from empty, no-op `up`, acknowledged rows lost, the machine
    flat FILE                  docs/figures/FILE, any JSON object (e.g. `make soak`'s): one row per leaf value
    times FILE [N]             docs/figures/FILE, a lab session's times ({"phases": {..}, "tests": {..}}, as
                               tests/conftest.py writes them): seconds per phase and the total, then the N slowest
                               tests (default 10)

Figures come only from files under docs/figures/ that a run wrote (copied there unchanged). A missing file gives a
line saying that no figures file is committed yet, never a figure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
PROJECT = "pgpool-ha"

MARKER = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
OPENING = re.compile(r"<!-- generated: ")
CLOSING = re.compile(r"<!-- end generated -->")


class DocsError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------------- tables
def text_of(value: Any) -> str:
    """A value as the run file has it: numbers as written, lists joined with ' / ', dicts as key=value."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " / ".join(text_of(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={text_of(v)}" for k, v in value.items()) if value else "-"
    return str(value)


def cell(value: Any) -> str:
    """One table cell; '|' and newlines escaped."""
    return text_of(value).replace("|", "\\|").replace("\n", " ")


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def missing(name: str, how: str) -> str:
    return f"No figures file is committed yet (`docs/figures/{name}`: {how}).\n"


def load(name: str, figures: Path) -> Any | None:
    path = figures / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DocsError(f"docs/figures/{name}: not JSON ({e})") from None


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Leaves of nested dicts as (dotted key, value); lists stay one value."""
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


# ------------------------------------------------------------------------------------------------------ figures
HOW = {
    "lifecycle-report.json": "copy $LAB_DIR/lifecycle-report.json from a `make lifecycle` or `make test` run",
    "drills-report.json": "copy $LAB_DIR/drills-report.json from a `make drills`, `make lifecycle` or `make test` run",
    "lifecycle-times.json": "copy $LAB_DIR/lifecycle-times.json from a `make lifecycle` or `make test` run",
    "bench.json": "save the JSON object `make bench` prints",
    "soak.json": "save the JSON object `make soak` prints",
    "vm-lab-times.json": "copy /var/lib/pgha-vmlab/log/times.json from a `make test-vm-lab` run",
}


def how(name: str) -> str:
    return HOW.get(name, "copy the file a run wrote")


def report(args: list[str], figures: Path) -> str:
    if not args:
        raise DocsError("report needs a file name")
    name, prefixes = args[0], tuple(args[1:])
    data = load(name, figures)
    if data is None:
        return missing(name, how(name))
    if not isinstance(data, dict):
        raise DocsError(f"docs/figures/{name}: expected an object of tests")
    rows: list[list[Any]] = []
    for test, values in data.items():
        if prefixes and not test.startswith(prefixes):
            continue
        for key, value in flatten(values) if isinstance(values, dict) else [("", values)]:
            rows.append([f"`{test}`", key or "-", value])
    if not rows:
        wanted = ", ".join(f"{p}*" for p in prefixes)
        return f"`docs/figures/{name}` holds no measurements of {wanted}.\n"
    return table(["test", "measurement", "value"], rows)


def bench(kind: str, args: list[str], figures: Path) -> str:
    if len(args) != 1:
        raise DocsError(f"{kind} needs one file name")
    name = args[0]
    data = load(name, figures)
    if data is None:
        return missing(name, how(name))
    profiles: dict[str, Any] = data.get("profiles", {})
    note = f"From `docs/figures/{name}`"
    if data.get("error"):
        note += f"; the run stopped early: {data['error']}"
    note += ".\n\n"
    if kind == "bench-faults":
        faults: list[str] = []
        for r in profiles.values():
            faults += [f for f in r.get("faults", {}) if f not in faults]
        rows = []
        for profile, r in profiles.items():
            sync = "synchronous" if r.get("synchronous_replication") else "asynchronous"
            for f in faults:
                x = r.get("faults", {}).get(f)
                if x is None:
                    continue
                gap = x.get("longest_gap_s") or {}
                multi = x.get("multi_host") or {}
                rows.append([profile, sync, f"`{f}`", x.get("n"), x.get("median"), x.get("max"), x.get("values"),
                             gap.get("median"), gap.get("max"), multi.get("median", "-"), multi.get("max", "-"),
                             x.get("lost")])  # fmt: skip
        head = ["profile", "replication", "fault", "runs", "outage median s", "outage max s", "outages s",
                "longest gap median s", "longest gap max s", "multi-host outage median s", "multi-host max s",
                "rows lost"]  # fmt: skip
        return note + table(head, rows)
    if kind == "bench-throughput":
        rows = []
        for profile, r in profiles.items():
            tp = r.get("throughput", {})
            for mode in ("read_write", "select_only", "connect_per_transaction"):
                if mode in tp:
                    m = tp[mode]
                    rows.append([profile, f"`{mode}`", m.get("tps_direct"), m.get("tps_pgpool"), m.get("ratio")])
        pgb: dict[str, Any] = next(
            (r["throughput"]["pgbench"] for r in profiles.values() if "pgbench" in r.get("throughput", {})), {}
        )
        if pgb:
            note = note[:-3] + f"; pgbench {text_of(pgb)}.\n\n"
        return note + table(["profile", "mode", "tps direct", "tps through pgpool", "ratio"], rows)
    if kind == "bench-provisioning":
        keys = [
            "provision_s",
            "provision_apply_s",
            "healthy_s",
            "noop_s",
            "fresh_servers_s",
            "lost_acknowledged_writes",
        ]
        rows = [[p, *(r.get(k) for k in keys)] for p, r in profiles.items()]
        machine = data.get("machine")
        tail = f"\nMachine: {text_of(machine)}.\n" if machine else ""
        return note + table(["profile", *[f"`{k}`" for k in keys]], rows) + tail
    raise DocsError(f"unknown kind {kind}")


def flat(args: list[str], figures: Path) -> str:
    if len(args) != 1:
        raise DocsError("flat needs one file name")
    name = args[0]
    data = load(name, figures)
    if data is None:
        return missing(name, how(name))
    return f"From `docs/figures/{name}`.\n\n" + table(["measurement", "value"], [[k, v] for k, v in flatten(data)])


def times(args: list[str], figures: Path) -> str:
    if len(args) not in (1, 2) or (len(args) == 2 and not args[1].isdigit()):
        raise DocsError("times needs a file name and, optionally, how many tests")
    name, slowest = args[0], int(args[1]) if len(args) == 2 else 10
    data = load(name, figures)
    if data is None:
        return missing(name, how(name))
    phases, tests = data.get("phases"), data.get("tests")
    if not isinstance(phases, dict) or not isinstance(tests, dict):
        raise DocsError(f"docs/figures/{name}: expected the objects 'phases' and 'tests'")
    rows = [[phase, f"{seconds:.0f}"] for phase, seconds in phases.items()]
    rows.append(["**total**", f"**{sum(phases.values()):.0f}** ({sum(phases.values()) / 60:.1f} min)"])
    ranked = sorted(tests.items(), key=lambda kv: kv[1], reverse=True)[:slowest]
    return (
        f"From `docs/figures/{name}`.\n\n"
        + table(["phase", "seconds"], rows)
        + f"\nThe {len(ranked)} slowest tests (setup, call and teardown):\n\n"
        + table(["test", "seconds"], [[f"`{node.split('::')[-1]}`", f"{sec:.0f}"] for node, sec in ranked])
    )


# ------------------------------------------------------------------------------------------------ configuration
def pulumi_config(root: Path) -> dict[str, Any]:
    doc = yaml.safe_load((root / "Pulumi.yaml").read_text())
    config: dict[str, Any] = doc.get("config") or {}
    return config


def yaml_type(spec: dict[str, Any]) -> str:
    if "type" in spec:
        t = str(spec["type"])
        if t == "array" and isinstance(spec.get("items"), dict) and "type" in spec["items"]:
            return f"array of {spec['items']['type']}"
        return t
    default = spec.get("default")
    return "array" if isinstance(default, list) else "object" if isinstance(default, dict) else "-"


def config_table(root: Path) -> str:
    secret = re.compile(r"(Password|PrivateKey)$")
    rows = []
    for key, spec in pulumi_config(root).items():
        short = key.split(":", 1)[1] if ":" in key else key
        default = spec.get("default")
        shown = "not set" if default in ("", [], {}, None) else f"`{default}`"
        name = f"`{short}`" + (" (secret)" if secret.search(short) else "")
        rows.append([name, yaml_type(spec), shown, str(spec.get("description", "")).strip()])
    return table(["key", "type", "default", "description"], rows)


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(inner) + (" (optional)" if type(None) in args else "")
    if origin in (tuple, list):
        if args and typing.get_origin(args[0]) is tuple and len(typing.get_args(args[0])) == 2:
            key, value = typing.get_args(args[0])  # pairs: written as a mapping in the stack file
            return f"map of {type_name(key)} to {type_name(value)}"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {type_name(args[0])} -> {type_name(args[1])}" if args else "map"
    if models(annotation):
        return "object"
    if isinstance(annotation, type):
        return {
            "IPv4Address": "IPv4 address",
            "IPv4Network": "IPv4 network (CIDR)",
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def constraints(field: Any) -> str:
    out = []
    for m in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
                           ("max_length", "length <="), ("pattern", "matches")):  # fmt: skip
            if getattr(m, attr, None) is not None:
                out.append(f"{sign} `{getattr(m, attr)}`" if attr == "pattern" else f"{sign} {getattr(m, attr)}")
    return ", ".join(out)


def default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    d = field.default
    if d is None or d == () or d == {}:
        return "not set"
    if hasattr(d, "model_dump"):
        return "see its fields"
    if isinstance(d, tuple):
        return ", ".join(f"`{x}`" for x in d)
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    return f"`{d}`"


def models(annotation: Any) -> list[type]:
    """The pydantic models an annotation refers to (Optional[M], tuple[M, ...], M)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in models(a)]


def config_fields() -> str:
    sys.path.insert(0, str(REPO))
    from components.config import ClusterConfig

    sections = []
    seen: set[type] = set()

    def walk(path: str, model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        rows, nested = [], []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            alias = field.alias or name
            rows.append([f"`{alias}`", type_name(field.annotation), default_text(field), constraints(field)])
            nested += [(f"{path}.{alias}", m) for m in models(field.annotation)]
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        sections.append(f"#### `{path}`\n\n" + (f"{doc}\n\n" if doc else "") +
                        table(["field", "type", "default", "constraint"], rows))  # fmt: skip
        for p, m in nested:
            walk(p, m)

    for name, field in ClusterConfig.model_fields.items():
        for m in models(field.annotation):
            walk(field.alias or name, m)
    return "\n".join(sections)


# ---------------------------------------------------------------------------------------------------- the pages
def render(spec: str, figures: Path, root: Path) -> str:
    kind, *args = spec.split()
    if kind == "config":
        return config_table(root)
    if kind == "config-fields":
        return config_fields()
    if kind == "report":
        return report(args, figures)
    if kind.startswith("bench-"):
        return bench(kind, args, figures)
    if kind == "flat":
        return flat(args, figures)
    if kind == "times":
        return times(args, figures)
    raise DocsError(f"unknown generated kind {kind!r}")


def regenerate(text: str, figures: Path = FIGURES, root: Path = REPO) -> str:
    if len(OPENING.findall(text)) != len(CLOSING.findall(text)) or len(MARKER.findall(text)) != len(
        OPENING.findall(text)
    ):
        raise DocsError("unbalanced generated markers")

    def one(m: re.Match[str]) -> str:
        return m.group(1) + "\n" + render(m.group("spec"), figures, root) + "\n" + m.group(4)

    return MARKER.sub(one, text)


def pages(docs: Path = DOCS) -> list[Path]:
    return sorted(docs.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/docs_generate.py", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page differs from its sources")
    args = p.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        try:
            new = regenerate(text)
        except DocsError as e:
            print(f"{page.relative_to(REPO)}: {e}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new)
    for page in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {page.relative_to(REPO)}")
    if args.check and stale:
        print("run `make docs` and commit the pages", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
