"""postgresql.parameters values checked the way PostgreSQL parses them, against what the server itself reports for
each setting (components/data/postgresql-<major>-settings.json, written from a real server's pg_settings by
scripts/pg_settings_data.py): its type, unit, bounds, enum values and context.

The parsing follows PostgreSQL's guc.c (parse_bool, parse_int, parse_real, convert_to_base_unit,
config_enum_lookup_by_name): a value is refused here exactly when the server would refuse the line at start.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

# Units PostgreSQL takes for a memory or time setting, largest first, in bytes / microseconds (guc.c's
# memory_unit_conversion_table and time_unit_conversion_table). Unit names are case-sensitive.
MEMORY_UNITS: dict[str, float] = {"TB": 1024.0**4, "GB": 1024.0**3, "MB": 1024.0**2, "kB": 1024.0, "B": 1.0}
TIME_UNITS: dict[str, float] = {"d": 86400e6, "h": 3600e6, "min": 60e6, "s": 1e6, "ms": 1e3, "us": 1.0}
# A setting's base unit as pg_settings names it, and its size in the units above.
BASE_UNITS: dict[str, tuple[dict[str, float], float]] = {
    "B": (MEMORY_UNITS, 1.0),
    "kB": (MEMORY_UNITS, 1024.0),
    "8kB": (MEMORY_UNITS, 8192.0),
    "MB": (MEMORY_UNITS, 1024.0**2),
    "us": (TIME_UNITS, 1.0),
    "ms": (TIME_UNITS, 1e3),
    "s": (TIME_UNITS, 1e6),
    "min": (TIME_UNITS, 60e6),
}
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BOOLEAN_WORDS = ("on", "off", "true", "false", "yes", "no", "1", "0")

# strtol(value, &end, 0): optional space and sign, then hex (0x), octal (leading 0) or decimal digits.
_C_INTEGER = re.compile(r"^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
# strtod: a decimal number with an optional exponent, or a hexadecimal one (0x10, 0x1.8p3); inf and nan are
# refused by PostgreSQL or by the bounds anyway.
_C_REAL = re.compile(r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_C_HEX_REAL = re.compile(r"^\s*[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Setting:
    name: str
    vartype: str
    context: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    default: float | None = None
    enumvals: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


@functools.cache
def settings_for(major: int) -> dict[str, Setting] | None:
    """The settings of a PostgreSQL major version by lowercase name, or None when no data was generated for it."""
    path = DATA_DIR / f"postgresql-{major}-settings.json"
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    return {
        name.lower(): Setting(
            name=name,
            vartype=entry["vartype"],
            context=entry["context"],
            unit=entry.get("unit"),
            minimum=entry.get("min"),
            maximum=entry.get("max"),
            default=entry.get("default"),
            enumvals=tuple(entry.get("enumvals", ())),
            aliases=tuple(entry.get("aliases", ())),
        )
        for name, entry in document["settings"].items()
    }


def as_text(value: str | int | float | bool) -> str:
    """The value PostgreSQL reads from the line the template writes (templating.pg_value): quotes are not part of it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def parse_bool(text: str) -> bool | None:
    """guc.c parse_bool: any case, a unique prefix of true/false/yes/no, on/off from two letters, 1, 0."""
    lowered = text.lower()
    if not lowered:
        return None
    for word, meaning in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if word.startswith(lowered) and lowered[0] == word[0]:
            return meaning
    if len(lowered) >= 2 and "on".startswith(lowered):
        return True
    if len(lowered) >= 2 and "off".startswith(lowered):
        return False
    return {"1": True, "0": False}.get(lowered)


def _number_and_unit(text: str, integer: bool) -> tuple[float, str] | None:
    """The number at the start of `text` (as strtol base 0, or strtod) and what follows it, without white space."""
    match = _C_INTEGER.match(text) if integer else None
    if match is not None and text[match.end() : match.end() + 1] not in (".", "e", "E"):
        sign, digits = match.groups()
        if digits.lower().startswith("0x"):
            number = float(int(digits, 16))
        elif digits.startswith("0") and len(digits) > 1:
            number = float(int(digits, 8))
        else:
            number = float(digits)
        end = match.end()
        number = -number if sign == "-" else number
    else:
        hexadecimal = _C_HEX_REAL.match(text)
        real = hexadecimal or _C_REAL.match(text)
        if real is None:
            return None
        literal = real.group(0).strip()
        number, end = (float.fromhex(literal) if hexadecimal else float(literal)), real.end()
    return number, text[end:].strip()


def _to_base_unit(number: float, unit: str, base: str) -> float | None:
    """convert_to_base_unit: the value in the setting's base unit, rounded to the next smaller unit given."""
    table, base_size = BASE_UNITS[base]
    if unit not in table:
        return None
    names = list(table)
    value = number * table[unit] / base_size
    index = names.index(unit)
    if index + 1 < len(names):
        smaller = table[names[index + 1]] / base_size
        value = round(value / smaller) * smaller
    return value


def _unit_words(setting: Setting) -> str:
    assert setting.unit is not None
    table, _ = BASE_UNITS[setting.unit]
    kind = "blocks of 8kB" if setting.unit == "8kB" else setting.unit
    return f"in {kind} or a value with {', '.join(reversed(table))}"


def _in_unit(number: float | None, unit: str | None) -> str:
    """A number in a setting's base unit as PostgreSQL's messages show it ('8kB' is a count of blocks)."""
    if unit is None:
        return _plain(number)
    return f"{_plain(number)} x 8kB" if unit == "8kB" else f"{_plain(number)} {unit}"


def accepted(setting: Setting, major: int) -> str:
    """What PostgreSQL takes for the setting, for messages."""
    prefix = f"PostgreSQL {major} accepts"
    if setting.vartype == "bool":
        return f"{prefix} a boolean: {', '.join(BOOLEAN_WORDS)} (any case, or a unique prefix)"
    if setting.vartype == "enum":
        return f"{prefix} one of {', '.join(setting.enumvals)} (any case)"
    if setting.vartype == "string":
        return f"{prefix} a string"
    noun = "an integer" if setting.vartype == "integer" else "a number"
    bounds = f"({_plain(setting.minimum)} .. {_in_unit(setting.maximum, setting.unit)})"
    if setting.unit:
        return f"{prefix} {noun} {_unit_words(setting)} {bounds}"
    return f"{prefix} {noun} {bounds}"


def _plain(number: float | None) -> str:
    if number is None:
        return "?"
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else repr(number)


def _kind(setting: Setting) -> str:
    if setting.unit in ("B", "kB", "8kB", "MB"):
        return "a memory size"
    if setting.unit is not None:
        return "a duration"
    return {"bool": "a boolean", "enum": "one of the values", "integer": "an integer", "real": "a number"}.get(
        setting.vartype, "a value"
    )


def numeric_value(setting: Setting, text: str) -> float | None:
    """An integer or real setting's value in its base unit, as PostgreSQL reads `text`; None when it refuses it."""
    integer = setting.vartype == "integer"
    parsed = _number_and_unit(text, integer)
    if parsed is None:
        return None
    number, unit = parsed
    if math.isnan(number) or math.isinf(number):
        return None
    if unit:
        if setting.unit is None:
            return None
        converted = _to_base_unit(number, unit, setting.unit)
        if converted is None:
            return None
        number = converted
    if integer:
        number = float(round(number))
        if not INT_MIN <= number <= INT_MAX:
            return None
    return number


def value_problem(setting: Setting, value: str | int | float | bool, major: int) -> str | None:
    """Why PostgreSQL `major` refuses `value` for the setting, or None when it takes it."""
    text = as_text(value)
    if isinstance(value, str):
        shown = repr(value)
    elif isinstance(value, bool):
        shown = f"{str(value).lower()} (written as {text})"
    else:
        shown = text
    if setting.context == "internal":
        return f"{setting.name} is fixed when PostgreSQL {major} is built or the cluster is created; it cannot be set"
    if setting.vartype == "bool":
        return None if parse_bool(text) is not None else f"{shown} is not a boolean; {accepted(setting, major)}"
    if setting.vartype == "enum":
        choices = {choice.lower() for choice in (*setting.enumvals, *setting.aliases)}
        if text.lower() in choices:
            return None
        return f"{shown} is not one of the values; {accepted(setting, major)}"
    if setting.vartype in ("integer", "real"):
        number = numeric_value(setting, text)
        if number is None:
            return f"{shown} is not {_kind(setting)}; {accepted(setting, major)}"
        low = setting.minimum if setting.minimum is not None else -math.inf
        high = setting.maximum if setting.maximum is not None else math.inf
        if not low <= number <= high:
            return f"{shown} is {_in_unit(number, setting.unit)}, out of range; {accepted(setting, major)}"
    return None
