"""What a change to a rendered file means for the running services: settings parsed, fingerprints of what a
restart or a reload applies. The tables (which settings a reload applies) are data: components/data/."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from .render import ServerFile

DATA_DIR = Path(__file__).resolve().parent / "data"
# pgpool-II parameter contexts (its CFGCXT_*) whose settings a reload (SIGHUP) applies; BOOT and INIT need a restart.
RELOAD_CONTEXTS = frozenset({"RELOAD", "SESSION", "PCP"})


@functools.cache
def _table(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DATA_DIR / f"{name}.yaml").read_text())
    return loaded


@functools.cache
def pgpool_reloadable_settings(version: str) -> frozenset[str]:
    """The parameters a reload applies in pgpool-II `version` (major.minor), from its source's contexts
    (data/pgpool-contexts.json, written by scripts/pgpool_contexts_data.py) less the watchdog's (data/pgpool.yaml)."""
    contexts: dict[str, dict[str, str]] = json.loads((DATA_DIR / "pgpool-contexts.json").read_text())["contexts"]
    if version not in contexts:
        raise ValueError(f"no parameter contexts recorded for pgpool-II {version} (scripts/pgpool_contexts_data.py)")
    held: set[str] = set(_table("pgpool")["restart_despite_context"])
    return frozenset(n for n, context in contexts[version].items() if context in RELOAD_CONTEXTS and n not in held)


@functools.cache
def postgresql_restart_only_settings() -> frozenset[str]:
    return frozenset(_table("postgresql")["restart_only"])


def hot_standby_minimums() -> dict[str, str]:
    """PostgreSQL's defaults of the settings a standby may not run lower than its primary (data/postgresql.yaml)."""
    return {name: str(value) for name, value in _table("postgresql")["hot_standby_minimums"].items()}


def parse_settings(content: str) -> dict[str, str]:
    """`name = value` lines of a pgpool.conf / postgresql.conf style file (comments and blanks skipped)."""
    settings: dict[str, str] = {}
    for raw in content.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        key = name if name != "include" else f"include:{value.strip()}"
        settings[key] = value.strip()
    return settings


def postgresql_restart_only(name: str) -> bool:
    return name in postgresql_restart_only_settings() or "." in name


def pgpool_reloadable(name: str, version: str) -> bool:
    """Does a reload apply `name` in pgpool-II `version`? An array's element (backend_weight1, hostname0) counts as
    its array; unknown names count as restart-only."""
    base = name.lower().rstrip("0123456789")
    if base != name.lower() and base.startswith("backend_"):
        return base in _table("pgpool")["reloadable_per_backend"]
    return base in pgpool_reloadable_settings(version)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def service_fingerprints(
    files: list[ServerFile], service: str, *, pgpool_version: str, secret: bool = False
) -> tuple[str, str]:
    """(restart, reload) fingerprints of the files of `service` (secret ones or non-secret ones).

    A `params` file is split per parameter: pgpool's restart-only settings go into the restart fingerprint, the rest
    into the reload one. Changing a reloadable setting thus changes only the reload fingerprint. (PostgreSQL's files
    are not split: its postgresql-config step takes both, and the rolling-restart steps list the restart-only values.)
    """
    restart: list[str] = []
    reload: list[str] = []
    for file in sorted(files, key=lambda f: f.path):
        if file.service != service or file.secret != secret:
            continue
        if file.apply == "params":
            for name, value in sorted(parse_settings(file.content).items()):
                target = reload if service == "pgpool2" and pgpool_reloadable(name, pgpool_version) else restart
                target.append(f"{file.path}:{name}={value}")
        elif file.apply == "restart":
            restart.append(f"{file.path}:{file.content}")
        elif file.apply == "reload":
            reload.append(f"{file.path}:{file.content}")
    return _digest(restart), _digest(reload)
