"""The one Jinja environment every template is rendered with (server files, the VM seed aside, and the provisioning
steps' programs), and the names all of them see."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path, PurePosixPath

import jinja2

from . import paths
from .config import ClusterConfig
from .paths import (
    HOLD_CONF,
    LOCAL_CONF,
    MEMBERS_STATE,
    MONITORING_VALUES,
    REPOSITORY_PATH,
    REPOSITORY_USER,
    SCRIPTS_DIR,
    SECRETS_CONF,
    slot_name,
)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


def pg_value(value: str | int | float | bool) -> str:
    """A postgresql.conf value: booleans as on/off, numbers bare, strings single-quoted ('' escapes a quote)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """One Jinja environment for every template: undefined names are errors, files keep their last newline."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,
    )
    env.filters["pg_value"] = pg_value
    env.filters["shell_quote"] = shlex.quote  # a plain word for bash, whatever it holds
    env.filters["dirname"] = lambda path: str(PurePosixPath(path).parent)
    return env


def shared_values(config: ClusterConfig) -> dict[str, object]:
    """The names every template sees (server files on any host and the steps' programs alike): no secret among them."""
    return {
        "config": config,
        "pg_unit": paths.pg_unit(config),
        "member_marker": paths.member_marker(config),
        "standby_conf": paths.standby_conf(config),
        "scripts_dir": SCRIPTS_DIR,
        "local_conf": LOCAL_CONF,
        "secrets_conf": SECRETS_CONF,
        "hold_conf": HOLD_CONF,
        "members_state": MEMBERS_STATE,
        "passwords": paths.PASSWORDS,
        "members": paths.MEMBERS,
        "apply_restart": paths.APPLY_RESTART,
        "slot_name": slot_name,
        "repository_user": REPOSITORY_USER,
        "repository_path": REPOSITORY_PATH,
        **MONITORING_VALUES,
    }


def step_program(step: str, config: ClusterConfig, **values: object) -> str:
    """What a provisioning step runs: templates/steps/<step>.sh.j2 (its bash program; `<step>.delete`: the one its
    delete runs), or templates/steps/<name>.j2 when `step` names its kind (roles.sql: a step's stdin)."""
    name = step if step.endswith(".sql") else f"{step}.sh"
    return environment().get_template(f"steps/{name}.j2").render({**shared_values(config), **values})
