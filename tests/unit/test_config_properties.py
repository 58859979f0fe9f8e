"""The config reader on random stack configs: every input is either refused with a ConfigError whose every line
names a key Pulumi.yaml declares, or accepted, and then it renders on every host and its plan passes the order
check. Configs are the shipped stacks' values, mutated with values of the declared keys, of other stacks, of the
models' fields and of PostgreSQL's settings, valid and not."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from components.config import ClusterConfig, ConfigError, parse_config
from components.pg_settings import settings_for
from components.plan import provisioning_plan
from components.render import render_node_files
from components.secrets import ClusterSecrets
from components.stack import PROJECT_DIR, declared_keys, plain_values, stack_file_values

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQ1mAzHjPIbt9+FTrM1CUXRq51X36r2GE4ec8kPaL8t test"
DECLARED = declared_keys()
STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
# The key a refusal names: `pgpool-ha:<key>: ...`, <key> starting with a declared key (then '.', '[' or '/').
REFUSAL = re.compile(r"^pgpool-ha:([A-Za-z]+)")


def _plain(stack: str) -> dict[str, Any]:
    values = {
        k: v for k, v in plain_values(stack_file_values(stack)).items() if not isinstance(v, dict) or "secure" not in v
    }
    values.setdefault("sshPublicKeys", [KEY])  # the VM lab adds its key per machine
    return values


SHIPPED = [_plain(stack) for stack in STACKS]


def _fields(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


# Nested objects by their top-level key, with the fields a mutation may set.
NESTED: dict[str, list[str]] = {}
for _name, _field in ClusterConfig.model_fields.items():
    _annotation = _field.annotation
    _types = [t for t in getattr(_annotation, "__args__", (_annotation,)) if isinstance(t, type)]
    for _type in _types:
        if issubclass(_type, BaseModel):
            NESTED[_field.alias or _name] = _fields(_type)

# Values seen in the shipped stacks per key and per nested field, so that mutations mix real values.
SEEN: dict[str, list[Any]] = {}
for _values in SHIPPED:
    for _key, _value in _values.items():
        SEEN.setdefault(_key, []).append(_value)
        if isinstance(_value, dict):
            for _inner, _inner_value in _value.items():
                SEEN.setdefault(f"{_key}.{_inner}", []).append(_inner_value)

PORTS = [22, 5432, 9000, 9090, 9093, 9100, 9187, 9694, 9719, 9898, 9999, 0, 65536]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=70000),
    st.sampled_from(PORTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "on", "4.3", "4.7", "15", "debian-12", "pgdg", "existing", "libvirt", "qemu", "tuned"]),
    st.sampled_from(["192.168.137.12", "192.168.137.0/24", "10.0.0.0/33", "Sun *-*-* 25:00:00", "daily", "--help"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
PG_SETTINGS = sorted(settings_for(15) or {})
PG_VALUES = st.one_of(
    st.sampled_from(["128MB", "5XB", "5min", "1h", "on", "off", "YES", "maybe", "0x10", "1.5GB", "-1", "8 MB", "try"]),
    st.integers(min_value=-10, max_value=10**10),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=1e6),
    st.booleans(),
)


@st.composite
def mutation(draw: st.DrawFn, values: dict[str, Any]) -> None:
    kind = draw(st.sampled_from(["top", "nested", "nested", "parameter", "delete", "secret"]))
    if kind == "top":
        key = draw(st.sampled_from(sorted(DECLARED)))
        values[key] = draw(st.one_of(st.sampled_from(SEEN.get(key, [None])), VALUES))
    elif kind == "nested":
        key = draw(st.sampled_from(sorted(NESTED)))
        field = draw(st.sampled_from(NESTED[key]))
        target = values.get(key)
        if not isinstance(target, dict):
            target = values[key] = {}
        seen = SEEN.get(f"{key}.{field}", [])
        target[field] = draw(st.one_of(st.sampled_from(seen), VALUES) if seen else VALUES)
    elif kind == "parameter":
        postgresql = values.setdefault("postgresql", {})
        if not isinstance(postgresql, dict):
            postgresql = values["postgresql"] = {}
        parameters = postgresql.setdefault("parameters", {})
        if isinstance(parameters, dict):
            parameters[draw(st.sampled_from(PG_SETTINGS))] = draw(PG_VALUES)
    elif kind == "delete" and values:
        values.pop(draw(st.sampled_from(sorted(values))))
    elif kind == "secret":
        values[draw(st.sampled_from(["postgresPassword", "pcpPassword", "sshPrivateKey"]))] = "in clear text"


@st.composite
def stack_configs(draw: st.DrawFn) -> dict[str, Any]:
    values = copy.deepcopy(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        draw(mutation(values))
    return values


def test_every_shipped_stack_is_a_starting_point() -> None:
    for values in SHIPPED:
        parse_config(values)


# In CI the examples are derived from the test itself (derandomize), so a run is repeatable; elsewhere each run
# explores new ones, and what a developer's run finds becomes a plain regression test in test_config.py.
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
@given(stack_configs())
def test_every_config_is_refused_by_name_or_renders_and_plans(values: dict[str, Any]) -> None:
    try:
        config = parse_config(values)
    except ConfigError as error:
        lines = str(error).splitlines()
        event("refused")
        assert lines[0] == "invalid stack configuration:" and len(lines) > 1, lines
        for line in lines[1:]:
            match = REFUSAL.match(line.strip())
            assert match is not None and match.group(1) in DECLARED, f"names no declared key: {line}"
        return
    event("accepted")
    secrets = ClusterSecrets.placeholders()
    for host in config.all_hosts:
        assert render_node_files(config, host, secrets), host.name
    assert provisioning_plan(config)


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_render_and_plan(stack: str) -> None:
    config = parse_config(_plain(stack))
    for host in config.all_hosts:
        assert render_node_files(config, host, ClusterSecrets.placeholders())
    assert provisioning_plan(config)
