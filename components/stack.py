"""Stack configuration read straight from Pulumi.yaml and Pulumi.<stack>.yaml, for tools that run without the
engine (the render command, the lab). The Pulumi program reads the same keys through pulumi.Config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import PROJECT, ClusterConfig, ConfigError, parse_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def declared_keys(project_dir: Path = PROJECT_DIR) -> dict[str, dict[str, Any]]:
    """The config block of Pulumi.yaml, keyed by the bare key name."""
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())
    return {key.split(":", 1)[1]: decl for key, decl in project["config"].items()}


def is_unset(value: Any) -> bool:
    """Pulumi.yaml declares optional keys with an empty default: empty means 'use the program's default'."""
    return value is None or value == "" or value == [] or value == {}


def plain_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset keys; keep the rest as they are (secure values stay wrapped, so parse_config can refuse
    nothing that was encrypted and everything that was not)."""
    return {key: value for key, value in values.items() if not is_unset(value)}


def stack_file_values(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The bare keys of Pulumi.<stack>.yaml; secure values come back as {'secure': ...}."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError(f"no stack file {path.name} in {project_dir}")
    document = yaml.safe_load(path.read_text()) or {}
    values: dict[str, Any] = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, bare = key.partition(":")
        if namespace != PROJECT:
            continue
        values[bare] = value
    return values


def load_stack_config(stack: str, project_dir: Path = PROJECT_DIR) -> ClusterConfig:
    """ClusterConfig of a stack, from its file: the same validation the Pulumi program runs."""
    values = stack_file_values(stack, project_dir)
    known = declared_keys(project_dir)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            "invalid stack configuration:\n  "
            + "\n  ".join(f"{PROJECT}:{key}: not a key this program reads (see Pulumi.yaml)" for key in unknown)
        )
    plain = {k: v for k, v in plain_values(values).items() if not (isinstance(v, dict) and "secure" in v)}
    return parse_config(plain)


def secret_keys_set(stack: str, project_dir: Path = PROJECT_DIR) -> set[str]:
    """Keys the stack file sets as encrypted (secure) values."""
    return {
        key
        for key, value in stack_file_values(stack, project_dir).items()
        if isinstance(value, dict) and "secure" in value
    }
